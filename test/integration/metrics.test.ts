/**
 * Prometheus metrics at GET /metrics (loopback only): a real sign-in, token and API call show up in
 * the counters for authentications, risk decisions, token issuance and HTTP calls; an audit event
 * is counted only once its transaction commits.
 */
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { recordAudit } from '../../src/audit/index.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import type { PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, redeem, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let device: PasskeyEmulator;
beforeAll(async () => {
  t = await startTestHub();
  device = await enrollDemoCustomer(t);
});
afterAll(() => t?.close());

/** The value of one sample line (name with its exact label set), 0 when absent. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

const scrape = async () => {
  const res = await t.fetch(`${t.issuer}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return res.text();
};

describe('/metrics', () => {
  it('counts sign-ins, risk decisions, tokens and API calls', async () => {
    const before = await scrape();
    const rp = await demoRp(t);
    const auth = await startAuthorization(rp, 'openid accounts');
    const tokens = await redeem(
      rp,
      auth,
      await completeLogin({ fetch: t.fetch, authorizationUrl: auth.url, device }),
    );
    const api = await client.fetchProtectedResource(
      rp.config,
      tokens.access_token,
      new URL(`${t.issuer}/api/v1/accounts`),
      'GET',
      undefined,
      undefined,
      { DPoP: rp.dpop },
    );
    expect(api.status).toBe(200);
    const after = await scrape();
    const grew = (series: string) => sample(after, series) - sample(before, series);
    expect(grew('kakehashi_security_events_total{type="authn.passkey.login",outcome="success"}')).toBe(1);
    expect(grew('kakehashi_risk_decisions_total{kind="login",decision="allow"}')).toBe(1);
    expect(grew('kakehashi_tokens_issued_total{type="access_token"}')).toBeGreaterThanOrEqual(1);
    expect(grew('kakehashi_tokens_issued_total{type="authorization_code"}')).toBe(1);
    expect(grew('kakehashi_http_request_duration_seconds_count{area="api",status="2xx"}')).toBe(1);
    expect(after).toContain('kakehashi_process_cpu_seconds_total');
  });

  it('counts an audit event written in a transaction only once it commits, never after a rollback', async () => {
    const series = (outcome: string) =>
      `kakehashi_security_events_total{type="test.audit.transactional",outcome="${outcome}"}`;
    const event = (outcome: 'success' | 'failure') => ({ type: 'test.audit.transactional', outcome });
    const before = await scrape();
    let countedBeforeCommit = -1;
    await t.hub.db.transaction(async (tx) => {
      await recordAudit(tx, event('success'));
      // Written but not committed: not counted yet.
      countedBeforeCommit = sample(await scrape(), series('success')) - sample(before, series('success'));
    });
    await expect(
      t.hub.db.transaction(async (tx) => {
        await recordAudit(tx, event('failure'));
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    // Outside a transaction the statement commits by itself.
    await recordAudit(t.hub.db, event('success'));
    const after = await scrape();
    expect(countedBeforeCommit).toBe(0);
    expect(sample(after, series('success')) - sample(before, series('success'))).toBe(2);
    expect(sample(after, series('failure')) - sample(before, series('failure'))).toBe(0);
    const rows = await t.hub.db.query<{ outcome: string }>(
      "SELECT outcome FROM audit_events WHERE type = 'test.audit.transactional'",
    );
    expect(rows.rows.map((r) => r.outcome)).toEqual(['success', 'success']);
  });
});
