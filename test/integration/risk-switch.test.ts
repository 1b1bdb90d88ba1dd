/**
 * risk.enabled false (for measuring what detection costs, test/bench/risk-overhead.ts): sign-ins go
 * through with throttling only, nothing is assessed or recorded — and the hub says so at start, in
 * the log and the audit log, so that detection cannot be off in production unnoticed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPasskeyUser } from '../../conformance/lib/login.ts';
import { createUserAgent } from '../../conformance/lib/userAgent.ts';
import { issueEnrollmentTicket } from '../../src/authn/index.ts';
import { announceDetectionOff } from '../../src/risk/index.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { demoRp, startAuthorization } from '../support/rp.ts';

let t: TestHub;
beforeAll(async () => {
  t = await startTestHub({ risk: { enabled: false } });
});
afterAll(async () => {
  await t?.close();
});

const count = async (sql: string, params: unknown[] = []) =>
  (await t.hub.db.query<{ n: number }>(sql, params)).rows[0]!.n;

describe('risk detection switched off', () => {
  it('audits at start that detection is off, and warns in the log', async () => {
    expect(
      await count("SELECT count(*)::int AS n FROM audit_events WHERE type = 'risk.detection.disabled'"),
    ).toBe(1);
    const warnings: Array<{ obj: object; msg: string }> = [];
    const logger = { warn: (obj: object, msg: string) => warnings.push({ obj, msg }) };
    expect(await announceDetectionOff(t.hub.db, t.hub.config, logger)).toBe(true);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.msg).toMatch(/RISK DETECTION IS OFF/);
    expect(warnings[0]!.obj).toMatchObject({ key: 'risk.enabled' });
    // With detection on (the default) nothing is said.
    const on = { ...t.hub.config, risk: { ...t.hub.config.risk, enabled: true } };
    expect(await announceDetectionOff(t.hub.db, on, logger)).toBe(false);
    expect(warnings).toHaveLength(1);
  });

  it('lets sign-ins through without assessing or recording them', async () => {
    const { customerId, customerNumber } = t.hub.demo!;
    const ticket = await issueEnrollmentTicket(t.hub.authn, { customerId, issuedBy: 'operator:test' });
    const user = createPasskeyUser({ fetch: t.fetch, customerNumber, ticket: ticket.ticket });
    const rp = await demoRp(t);
    // Enrolment, then two sign-ins from fresh browsers (new devices: recorded when detection is on).
    for (let i = 0; i < 3; i++) {
      const callback = await user.login((await startAuthorization(rp)).url, {
        userAgent: createUserAgent({ fetch: t.fetch }),
      });
      expect(callback.searchParams.get('code')).toBeTruthy();
    }
    expect(await count('SELECT count(*)::int AS n FROM risk_events')).toBe(0);
    expect(await count('SELECT count(*)::int AS n FROM risk_levels')).toBe(0);
  });
});
