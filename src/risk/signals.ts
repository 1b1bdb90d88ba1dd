/**
 * From what is known about earlier sign-ins (facts) and the attempt at hand to named signals the
 * rules look at. Pure, so the hub (facts from SQL) and the replay (facts from a recorded stream,
 * see MemoryHistory) derive signals the same way.
 */
import type { Location, Place } from './geo.ts';
import type { Signals } from './rules.ts';
import { assessTravel, type TravelSettings } from './travel.ts';

/** What the history says about one sign-in attempt's customer, source and network. */
export interface LoginFacts {
  failuresPerAccount: number;
  failuresPerSource: number;
  failuresPerRange: number;
  /**
   * Distinct accounts (customers, or unknown passkeys by credential id) with failed attempts from
   * the source / range in the window. Only failures count: many customers signing in successfully
   * behind one address (a carrier's or company's NAT) is not credential stuffing.
   */
  failedAccountsPerSource: number;
  failedAccountsPerRange: number;
  /** The customer signed in successfully before (at all). */
  signedInBefore: boolean;
  seenCountry: boolean;
  seenNetwork: boolean;
  seenCredential: boolean;
  /** The previous successful sign-in: when, from which country and place (for impossible travel). */
  lastSuccess:
    | { country: string | null; at: Date; ip?: string | undefined; place?: Place | undefined }
    | undefined;
  /** The passkey's backup state at its previous successful use. */
  lastBackedUp: boolean | undefined;
  travelDeclared: boolean;
  recoveryLoginDue: boolean;
}

export interface LoginAttempt {
  customerId: string;
  method: string;
  credentialId?: string | undefined;
  backedUp?: boolean | undefined;
  ip?: string | undefined;
  port?: number | undefined;
  userAgent?: string | undefined;
  /** The browser completed a sign-in for this customer before (known-device cookie). */
  knownDevice: boolean;
  deviceHash?: string | undefined;
  at?: Date | undefined;
}

export interface SignalSettings {
  homeCountry: string;
  hostingAsns: ReadonlySet<number>;
  travel: TravelSettings;
}

export function deriveLoginSignals(
  facts: LoginFacts,
  attempt: LoginAttempt,
  where: Location,
  s: SignalSettings,
): Signals {
  const at = attempt.at ?? new Date();
  const country = where.country;
  const abroad = country !== undefined && country !== s.homeCountry;
  const last = facts.lastSuccess;
  const travel = last && assessTravel(last, { place: where.place, at }, s.travel);
  return {
    country,
    asn: where.asn,
    locationUnknown: country === undefined,
    newDevice: !attempt.knownDevice,
    newCredential: attempt.credentialId !== undefined && !facts.seenCredential,
    // Only with history: a customer's very first sign-in is not "new" anywhere.
    newCountry: facts.signedInBefore && country !== undefined && !facts.seenCountry,
    newNetwork: facts.signedInBefore && where.asn !== undefined && !facts.seenNetwork,
    abroad,
    travelDeclared: facts.travelDeclared,
    // Unmeasured (absent) without both places or beyond the window: such a rule never matches.
    impossibleTravel: travel?.impossible,
    travelKm: travel?.km,
    travelHours: travel?.hours,
    travelSpeedKmh: travel?.speedKmh,
    hostingSource: where.asn !== undefined && s.hostingAsns.has(where.asn),
    failuresPerAccount: facts.failuresPerAccount,
    failuresPerSource: facts.failuresPerSource,
    failuresPerRange: facts.failuresPerRange,
    failedAccountsPerSource: facts.failedAccountsPerSource,
    failedAccountsPerRange: facts.failedAccountsPerRange,
    backupStateChanged:
      attempt.backedUp !== undefined &&
      facts.lastBackedUp !== undefined &&
      attempt.backedUp !== facts.lastBackedUp,
    firstLoginAfterRecovery: facts.recoveryLoginDue,
  };
}

/** One sign-in attempt as a replay or the in-memory history sees it. */
export interface HistoryEntry {
  at: Date;
  customerId: string | undefined;
  credentialId: string | undefined;
  result: 'success' | 'failure' | 'step_up' | 'blocked';
  source: string | undefined;
  sourceRange: string | undefined;
  country: string | undefined;
  asn: number | undefined;
  place?: Place | undefined;
  backedUp: boolean | undefined;
  deviceHash: string | undefined;
}

/**
 * The facts the hub's SQL computes, computed over a list held in memory: the replay CLI feeds a
 * recorded stream through it to test rules and thresholds offline.
 */
export class MemoryHistory {
  readonly entries: HistoryEntry[] = [];
  readonly travel: Array<{ customerId: string; country: string; from: Date; to: Date }> = [];
  readonly recoveryDue = new Set<string>();

  private readonly windowSeconds: number;

  constructor(windowSeconds: number) {
    this.windowSeconds = windowSeconds;
  }

  facts(e: Omit<HistoryEntry, 'result'>): LoginFacts {
    const since = e.at.getTime() - this.windowSeconds * 1000;
    const recent = this.entries.filter((x) => x.at.getTime() > since && x.at.getTime() <= e.at.getTime());
    const accountKey = (x: { customerId: string | undefined; credentialId: string | undefined }) =>
      x.customerId ?? `cred:${x.credentialId}`;
    const failures = recent.filter((x) => x.result === 'failure');
    const distinct = (xs: HistoryEntry[]) => new Set(xs.map(accountKey)).size;
    const mine = this.entries.filter((x) => x.customerId === e.customerId && x.result === 'success');
    const lastSuccess = mine.at(-1);
    const lastWithCred = [...mine].reverse().find((x) => x.credentialId === e.credentialId);
    return {
      failuresPerAccount: failures.filter((x) => e.customerId && x.customerId === e.customerId).length,
      failuresPerSource: failures.filter((x) => e.source && x.source === e.source).length,
      failuresPerRange: failures.filter((x) => e.sourceRange && x.sourceRange === e.sourceRange).length,
      failedAccountsPerSource: distinct(failures.filter((x) => e.source && x.source === e.source)),
      failedAccountsPerRange: distinct(
        failures.filter((x) => e.sourceRange && x.sourceRange === e.sourceRange),
      ),
      signedInBefore: mine.length > 0,
      seenCountry: mine.some((x) => x.country === e.country),
      seenNetwork: mine.some((x) => x.asn === e.asn),
      seenCredential: mine.some((x) => x.credentialId === e.credentialId),
      lastSuccess: lastSuccess
        ? { country: lastSuccess.country ?? null, at: lastSuccess.at, place: lastSuccess.place }
        : undefined,
      lastBackedUp: lastWithCred?.backedUp,
      travelDeclared: this.travel.some(
        (t) =>
          t.customerId === e.customerId &&
          t.country === e.country &&
          t.from.getTime() <= e.at.getTime() &&
          e.at.getTime() < t.to.getTime(),
      ),
      recoveryLoginDue: !!e.customerId && this.recoveryDue.has(e.customerId),
    };
  }

  knownDevice(customerId: string, deviceHash: string | undefined): boolean {
    return (
      deviceHash !== undefined &&
      this.entries.some(
        (x) => x.customerId === customerId && x.deviceHash === deviceHash && x.result === 'success',
      )
    );
  }

  add(e: HistoryEntry): void {
    this.entries.push(e);
    if (e.result === 'success' && e.customerId) this.recoveryDue.delete(e.customerId);
  }
}
