/**
 * The local FAPI 2.0 conformance plan: the checks of ../shared/conformance/fapi2-checklist.md
 * (groups "Discovery and happy path", "Authorization endpoint and PAR", "Token endpoint", "DPoP",
 * "Message signing plan", "Client registration", "mTLS (RFC 8705)" and "Transport"), run against a
 * live hub under every variant: client authentication {private_key_jwt, tls_client_auth,
 * self_signed_tls_client_auth} × sender constraint {DPoP, mTLS} × flow {openid, plain OAuth}, each
 * check where it applies (lib/types.ts). `run.ts` prints one table per variant; `fapi2.test.ts` runs
 * the same checks under vitest, one test per check and variant.
 */
import { authorizationChecks } from './checks/authorization.ts';
import { discoveryChecks } from './checks/discovery.ts';
import { dpopChecks } from './checks/dpop.ts';
import { messageSigningChecks } from './checks/messageSigning.ts';
import { mtlsChecks } from './checks/mtls.ts';
import { tokenChecks } from './checks/token.ts';
import { transportChecks } from './checks/transport.ts';
import { type CheckContext, createContext } from './lib/context.ts';
import { CheckNotApplicable } from './lib/expect.ts';
import { startLocalTarget, type Target } from './lib/target.ts';
import { appliesTo, type Check, usesMtls, VARIANTS, type Variant, variantTag } from './lib/types.ts';

export const FAPI2_CHECKS: readonly Check[] = [
  ...discoveryChecks,
  ...authorizationChecks,
  ...tokenChecks,
  ...dpopChecks,
  ...messageSigningChecks,
  ...mtlsChecks,
  ...transportChecks,
];

export const DEFAULT_VARIANT: Variant = {
  clientAuth: 'private_key_jwt',
  senderConstraint: 'dpop',
  flow: 'openid',
};

/** The variants a target can run: all of them on an in-process hub, private_key_jwt + DPoP elsewhere. */
export function variantsFor(targets: PlanTargets): Variant[] {
  return VARIANTS.filter((v) => !usesMtls(v) || (targets.main.mtls && targets.shortLifetimes.mtls));
}

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
 * A variant's checks, the context each runs in, and its preparations (expiry, code reuse): started
 * when the variant starts, one after the other in the background (each a login or a PAR, so the
 * customer never signs in many times at once), while the other checks of the variant run; the
 * prepared checks come last. A failed preparation is that check's failure, raised when its run awaits
 * it (the rejection is marked handled here so it cannot crash the run first).
 */
export interface VariantRun {
  variant: Variant;
  checks: Check[];
  contextFor: (check: Check) => CheckContext;
  /** Starts the preparations (once); what each prepared check's run gets. */
  start(): void;
  prepared(check: Check): Promise<unknown> | undefined;
}

export function variantRun(targets: PlanTargets, variant: Variant): VariantRun {
  const checks = planFor(variant);
  const contextFor = contextsFor(targets, variant);
  const prepared = new Map<Check, Promise<unknown>>();
  return {
    variant,
    checks,
    contextFor,
    start() {
      if (prepared.size) return;
      let chain: Promise<unknown> = Promise.resolve();
      for (const check of checks) {
        if (!check.prepare) continue;
        const p = chain.then(() => check.prepare!(contextFor(check)));
        p.catch(() => {});
        chain = p.catch(() => {});
        prepared.set(check, p);
      }
    },
    prepared: (check) => prepared.get(check),
  };
}

/** The variant's checks in running order: those with a preparation last (their waits overlap the others). */
export const runningOrder = (checks: Check[]) => [
  ...checks.filter((c) => !c.prepare),
  ...checks.filter((c) => c.prepare),
];

export interface VariantResult {
  variant: Variant;
  results: CheckResult[];
}

/** Runs the plan under each variant in turn. Results per variant in plan order. */
export async function runPlan(
  targets: PlanTargets,
  options: { variants?: readonly Variant[]; onResult?: (r: CheckResult, variant: Variant) => void } = {},
): Promise<VariantResult[]> {
  const out: VariantResult[] = [];
  for (const variant of options.variants ?? variantsFor(targets)) {
    const run = variantRun(targets, variant);
    run.start();
    const results = new Map<Check, CheckResult>();
    for (const check of runningOrder(run.checks)) {
      const r = await runCheck(check, run.contextFor(check), run.prepared(check));
      results.set(check, r);
      options.onResult?.(r, variant);
    }
    out.push({ variant, results: run.checks.map((c) => results.get(c)!) });
  }
  return out;
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));

/** One variant's pass/fail table, grouped as in the checklist, with the reason under each failure. */
export function formatTable(results: CheckResult[], variant: Variant = DEFAULT_VARIANT): string {
  const idWidth = Math.max(...results.map((r) => r.check.id.length), 2);
  const { passed, failed, notApplicable } = summary(results);
  const lines: string[] = [
    '',
    `######## variant ${variantTag(variant)}: ${passed} passed, ${failed} failed${notApplicable ? `, ${notApplicable} n/a` : ''} ########`,
  ];
  let group = '';
  for (const r of results) {
    if (r.check.group !== group) {
      group = r.check.group;
      lines.push(
        '',
        `== ${group} [${variantTag(variant)}] ==`,
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

/** Each failure as `variant-tag/check-id: reason` (ids are unique within a variant). */
export function failureLines(runs: VariantResult[]): string[] {
  return runs.flatMap(({ variant, results }) =>
    results
      .filter((r) => r.outcome === 'fail')
      .map((r) => `FAIL ${variantTag(variant)}/${r.check.id}: ${r.detail ?? ''}`),
  );
}

export function summary(results: CheckResult[]): { passed: number; failed: number; notApplicable: number } {
  return {
    passed: results.filter((r) => r.outcome === 'pass').length,
    failed: results.filter((r) => r.outcome === 'fail').length,
    notApplicable: results.filter((r) => r.outcome === 'n/a').length,
  };
}
