/**
 * The local FAPI 2.0 conformance plan: the checks of ../shared/conformance/fapi2-checklist.md
 * (groups "Discovery and happy path", "Authorization endpoint and PAR", "Token endpoint", "DPoP",
 * "Message signing plan", and "Client registration"), for the private_key_jwt + DPoP variant, and the
 * mTLS variants and rows in group "mTLS (RFC 8705)", run against a live hub. `run.ts` prints the table;
 * `fapi2.test.ts` runs the same checks under vitest, one test per check.
 */
import { authorizationChecks } from './checks/authorization.ts';
import { discoveryChecks } from './checks/discovery.ts';
import { dpopChecks } from './checks/dpop.ts';
import { messageSigningChecks } from './checks/messageSigning.ts';
import { mtlsChecks } from './checks/mtls.ts';
import { tokenChecks } from './checks/token.ts';
import { type CheckContext, createContext } from './lib/context.ts';
import { CheckNotApplicable } from './lib/expect.ts';
import { startLocalTarget, type Target } from './lib/target.ts';
import { appliesTo, type Check, type Variant } from './lib/types.ts';

export const FAPI2_CHECKS: readonly Check[] = [
  ...discoveryChecks,
  ...authorizationChecks,
  ...tokenChecks,
  ...dpopChecks,
  ...messageSigningChecks,
  ...mtlsChecks,
];

export const DEFAULT_VARIANT: Variant = { clientAuth: 'private_key_jwt', senderConstraint: 'dpop' };

/**
 * Lifetimes of the second in-process hub, on which expiry is observed in seconds rather than a
 * minute. The main hub keeps the defaults (60 s codes), whose cap the configuration schema enforces.
 */
export const SHORT_LIFETIMES = { authorizationCodeTtl: 2, parTtl: 3 } as const;

export interface PlanTargets {
  main: Target;
  /** May be the main target (external hub): expiry checks then wait the real lifetimes out. */
  shortLifetimes: Target;
}

/** The checks for one variant, in plan order (ids are unique). */
export function planFor(variant: Variant = DEFAULT_VARIANT): Check[] {
  const seen = new Set<string>();
  for (const c of FAPI2_CHECKS) {
    if (seen.has(c.id)) throw new Error(`duplicate check id ${c.id}`);
    seen.add(c.id);
  }
  return FAPI2_CHECKS.filter((c) => appliesTo(c, variant));
}

/**
 * Two in-process hubs: the main one with issuer https://localhost (default port, so the
 * explicit-:443 htu checks apply), and one with short code / request_uri lifetimes.
 */
export async function startLocalTargets(): Promise<PlanTargets> {
  const [main, shortLifetimes] = await Promise.allSettled([
    startLocalTarget({ defaultPortIssuer: true }),
    startLocalTarget({ config: { oidc: SHORT_LIFETIMES } }),
  ]);
  if (main.status === 'rejected' || shortLifetimes.status === 'rejected') {
    if (main.status === 'fulfilled') await main.value.close();
    if (shortLifetimes.status === 'fulfilled') await shortLifetimes.value.close();
    throw main.status === 'rejected' ? main.reason : (shortLifetimes as PromiseRejectedResult).reason;
  }
  return { main: main.value, shortLifetimes: shortLifetimes.value };
}

export async function closeTargets(targets: PlanTargets | undefined): Promise<void> {
  if (!targets) return;
  await targets.main.close();
  if (targets.shortLifetimes !== targets.main) await targets.shortLifetimes.close();
}

/** One context per target, shared by the checks that run against it. */
export function contextsFor(
  targets: PlanTargets,
  variant: Variant = DEFAULT_VARIANT,
): (check: Check) => CheckContext {
  const main = createContext(targets.main, variant);
  const short =
    targets.shortLifetimes === targets.main ? main : createContext(targets.shortLifetimes, variant);
  return (check) => (check.hub === 'short-lifetimes' ? short : main);
}

export interface CheckResult {
  check: Check;
  outcome: 'pass' | 'fail' | 'n/a';
  ms: number;
  detail?: string;
}

export async function runCheck(
  check: Check,
  ctx: CheckContext,
  prepared?: Promise<unknown>,
): Promise<CheckResult> {
  const started = performance.now();
  try {
    await check.run(ctx, prepared === undefined ? undefined : await prepared);
    return { check, outcome: 'pass', ms: performance.now() - started };
  } catch (err) {
    const ms = performance.now() - started;
    if (err instanceof CheckNotApplicable) return { check, outcome: 'n/a', ms, detail: err.message };
    const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    return { check, outcome: 'fail', ms, detail };
  }
}

/**
 * Starts every check's `prepare` at once. A failed preparation is that check's failure, raised
 * when its run awaits it (the rejection is marked handled here so it cannot crash the run first).
 */
export function startPreparations(
  checks: Check[],
  contextFor: (check: Check) => CheckContext,
): Map<Check, Promise<unknown>> {
  const prepared = new Map<Check, Promise<unknown>>();
  for (const check of checks) {
    if (!check.prepare) continue;
    const p = check.prepare(contextFor(check));
    p.catch(() => {});
    prepared.set(check, p);
  }
  return prepared;
}

/** Runs the plan: checks with a preparation last (their waits overlap the others). Results in plan order. */
export async function runPlan(
  targets: PlanTargets,
  options: { variant?: Variant; onResult?: (r: CheckResult) => void } = {},
): Promise<CheckResult[]> {
  const checks = planFor(options.variant);
  const contextFor = contextsFor(targets, options.variant);
  const prepared = startPreparations(checks, contextFor);
  const results = new Map<Check, CheckResult>();
  for (const check of [...checks.filter((c) => !c.prepare), ...checks.filter((c) => c.prepare)]) {
    const r = await runCheck(check, contextFor(check), prepared.get(check));
    results.set(check, r);
    options.onResult?.(r);
  }
  return checks.map((c) => results.get(c)!);
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));

/** The pass/fail table, grouped as in the checklist, with the reason under each failure. */
export function formatTable(results: CheckResult[]): string {
  const idWidth = Math.max(...results.map((r) => r.check.id.length), 2);
  const lines: string[] = [];
  let group = '';
  for (const r of results) {
    if (r.check.group !== group) {
      group = r.check.group;
      lines.push(
        '',
        `== ${group} ==`,
        `${pad('result', 6)}  ${pad('id', idWidth)}  ${pad('expect', 6)}  ${pad('ms', 6)}  title`,
      );
    }
    const outcome = r.outcome === 'pass' ? 'PASS' : r.outcome === 'fail' ? 'FAIL' : 'n/a';
    lines.push(
      `${pad(outcome, 6)}  ${pad(r.check.id, idWidth)}  ${pad(r.check.expect, 6)}  ${pad(String(Math.round(r.ms)), 6)}  ${r.check.title}`,
    );
    if (r.detail) lines.push(`${' '.repeat(8)}↳ ${r.detail}`);
  }
  return lines.join('\n');
}

export function summary(results: CheckResult[]): { passed: number; failed: number; notApplicable: number } {
  return {
    passed: results.filter((r) => r.outcome === 'pass').length,
    failed: results.filter((r) => r.outcome === 'fail').length,
    notApplicable: results.filter((r) => r.outcome === 'n/a').length,
  };
}
