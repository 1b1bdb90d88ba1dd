/**
 * The protective-settings report for management (JSDA IV.1.(3)): passkey adoption, reachability
 * for notifications, the exemption rate (解除率, FSA comments 76–79), and locks and failed
 * sign-ins over a period, each against its configured target.
 */
import { countSecurityEvents, type SecurityEventCounts } from '../audit/index.ts';
import { exemptionReport, passkeyAdoption } from '../authn/index.ts';
import type { Queryable } from '../db/index.ts';
import { notificationCoverage } from '../notify/index.ts';

export interface ReportTargets {
  /** Minimum share of customers with a usable passkey. */
  passkeyAdoption: number;
  /** Minimum share of customers with an active notification channel. */
  notificationCoverage: number;
  /** Maximum share of customers exempted from phishing-resistant MFA. */
  exemptionRate: number;
}

export const DEFAULT_REPORT_TARGETS: ReportTargets = {
  passkeyAdoption: 0.9,
  notificationCoverage: 0.95,
  exemptionRate: 0.05,
};

export interface ProtectiveSettingsReport {
  from: Date;
  to: Date;
  customers: number;
  measures: Array<{ name: keyof ReportTargets; value: number; target: number; met: boolean; count: number }>;
  events: SecurityEventCounts;
}

export async function protectiveSettingsReport(
  db: Queryable,
  period: { from: Date; to: Date },
  targets: ReportTargets = DEFAULT_REPORT_TARGETS,
): Promise<ProtectiveSettingsReport> {
  const [adoption, coverage, exemptions, events] = await Promise.all([
    passkeyAdoption(db),
    notificationCoverage(db),
    exemptionReport(db),
    countSecurityEvents(db, period.from, period.to),
  ]);
  return {
    ...period,
    customers: adoption.customers,
    measures: [
      {
        name: 'passkeyAdoption',
        value: adoption.rate,
        target: targets.passkeyAdoption,
        met: adoption.rate >= targets.passkeyAdoption,
        count: adoption.withPasskey,
      },
      {
        name: 'notificationCoverage',
        value: coverage.rate,
        target: targets.notificationCoverage,
        met: coverage.rate >= targets.notificationCoverage,
        count: coverage.reachable,
      },
      {
        name: 'exemptionRate',
        value: exemptions.rate,
        target: targets.exemptionRate,
        met: exemptions.rate <= targets.exemptionRate,
        count: exemptions.exempted,
      },
    ],
    events,
  };
}

const LABELS: Record<keyof ReportTargets, string> = {
  passkeyAdoption: 'passkey adoption (パスキー利用率)',
  notificationCoverage: 'reachable for notifications (通知登録率)',
  exemptionRate: 'exemption rate (解除率)',
};

/** Plain-text table for the CLI. */
export function formatReport(r: ProtectiveSettingsReport): string {
  const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
  const lines = [
    `protective settings, ${r.from.toISOString().slice(0, 10)} … ${r.to.toISOString().slice(0, 10)} — ${r.customers} customers`,
    ...r.measures.map(
      (m) =>
        `  ${LABELS[m.name].padEnd(40)} ${pct(m.value).padStart(8)}  (${m.count})  target ${m.name === 'exemptionRate' ? '≤' : '≥'} ${pct(m.target)}  ${m.met ? 'met' : 'NOT MET'}`,
    ),
    `  sign-ins ${r.events.signIns}, failed ${r.events.failures}, automatic locks ${r.events.locks}, refused while locked ${r.events.lockedRefusals}`,
  ];
  return lines.join('\n');
}
