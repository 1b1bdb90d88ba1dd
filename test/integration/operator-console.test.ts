/**
 * The operator console over HTTPS: operators enroll and sign in with their own passkeys (software
 * authenticator), roles are enforced, forms need the session's CSRF token, and a freeze stops the
 * customer at once (sign-in refused, tokens dead at the read API, withdrawal policy denies, notice
 * queued, RISC account-disabled queued, audited) and is lifted only after the customer re-proofs
 * with eKYC (a second, real OpenID provider).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeLogin } from '../../conformance/lib/login.ts';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { addOperator, freezeCustomer } from '../../src/console/index.ts';
import { evaluatePolicy, loadPolicy } from '../../src/linking/index.ts';
import { addEmailChannel } from '../../src/notify/index.ts';
import { effectiveRiskLevel } from '../../src/risk/index.ts';
import { runCli } from '../support/cli.ts';
import { enrollDemoCustomer } from '../support/customer.ts';
import { insertCustomer } from '../support/db.ts';
import { type EkycProvider, jpAmlClaims, startEkycProvider } from '../support/ekycProvider.ts';
import { freePort, startTestHub, type TestHub } from '../support/hub.ts';
import { createEmulator, type PasskeyEmulator } from '../support/passkeyEmulator.ts';
import { demoRp, redeem, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let ekyc: EkycProvider;
let customerDevice: PasskeyEmulator;
let customerId: string;
const CALLBACK = '/proofing/ekyc/callback';

beforeAll(async () => {
  const port = await freePort();
  const issuer = `https://localhost:${port}`;
  ekyc = await startEkycProvider({ redirectUri: `${issuer}${CALLBACK}` });
  t = await startTestHub({
    port,
    issuer,
    proofing: {
      ekyc: {
        issuer: ekyc.issuer,
        clientId: ekyc.clientId,
        clientSecret: ekyc.clientSecret,
        caFile: ekyc.caPath,
      },
    },
  });
  customerId = t.hub.demo!.customerId;
  customerDevice = await enrollDemoCustomer(t);
  await t.hub.db.transaction((tx) =>
    addEmailChannel(tx, t.hub.authn.kek!, {
      customerId,
      address: 'taro@example.jp',
      actor: `customer:${customerId}`,
    }),
  );
});
afterAll(async () => {
  await t?.close();
  await ekyc?.close();
});

interface Operator {
  ua: UserAgent;
  csrf: string;
  device: PasskeyEmulator;
  ticket: string;
}

/** Adds an operator (as the CLI does), enrolls their passkey with the ticket and signs in. */
async function operator(name: string, role: 'viewer' | 'operator' | 'admin'): Promise<Operator> {
  const { ticket } = await addOperator(t.hub.db, { name, role, by: 'operator:setup' });
  const device = createEmulator();
  const ua = createUserAgent({ fetch: t.fetch });
  expect((await ua.get(`${t.issuer}/console/enroll`)).status).toBe(200);
  const options = await ua.postJson(`${t.issuer}/console/enroll/options`, { name, ticket });
  expect(options.status).toBe(200);
  const enrolled = await ua.postJson(
    `${t.issuer}/console/enroll/verify`,
    device.register(options.json(), t.issuer),
  );
  expect(enrolled.json()).toMatchObject({ registered: true, operator: name });
  return { ua, device, csrf: await signIn(ua, device), ticket };
}

async function signIn(ua: UserAgent, device: PasskeyEmulator): Promise<string> {
  const login = await ua.get(`${t.issuer}/console`);
  expect(login.text).toContain('id="passkey-login" data-endpoint="/console/login"');
  const options = await ua.postJson(`${t.issuer}/console/login/options`, {});
  const verify = await ua.postJson(
    `${t.issuer}/console/login/verify`,
    device.authenticate(options.json(), t.issuer),
  );
  expect(verify.status).toBe(200);
  const cookie = verify.headers.getSetCookie().find((c) => c.startsWith('kkh_console='));
  expect(cookie).toMatch(/; secure/i);
  expect(cookie).toMatch(/; httponly/i);
  expect(cookie).toMatch(/; samesite=strict/i);
  expect(cookie).toMatch(/; path=\/console/i);
  const page = await ua.get(`${t.issuer}/console`);
  expect(page.status).toBe(200);
  const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)?.[1];
  expect(csrf).toBeTruthy();
  return csrf!;
}

const status = async () =>
  (await t.hub.db.query<{ status: string }>('SELECT status FROM customers WHERE id = $1', [customerId]))
    .rows[0]!.status;

const auditOf = async (type: string) =>
  (
    await t.hub.db.query<{ actor: string; outcome: string; data: Record<string, unknown> }>(
      'SELECT actor, outcome, data FROM audit_events WHERE type = $1 AND customer_id = $2 ORDER BY id',
      [type, customerId],
    )
  ).rows;

let admin: Operator;
let staff: Operator;
let viewer: Operator;
let secondAdmin: Operator;

describe('operators', () => {
  it('enroll with a one-time ticket and sign in with their own passkey', async () => {
    admin = await operator('alice', 'admin');
    staff = await operator('olga', 'operator');
    viewer = await operator('victor', 'viewer');
    const page = await viewer.ua.get(`${t.issuer}/console`);
    expect(page.text).toContain('victor');
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    const logins = await t.hub.db.query<{ actor: string }>(
      "SELECT actor FROM audit_events WHERE type = 'console.login' AND outcome = 'success' ORDER BY id",
    );
    expect(logins.rows.map((r) => r.actor)).toEqual(['operator:alice', 'operator:olga', 'operator:victor']);
  });

  it('refuses a spent ticket, a wrong name for a ticket, and a customer passkey at the console', async () => {
    const spent = await admin.ua.postJson(`${t.issuer}/console/enroll/options`, {
      name: 'alice',
      ticket: admin.ticket,
    });
    expect(spent.status).toBe(400);
    expect(spent.json()).toMatchObject({ error_code: 'ERR_OPERATOR_TICKET' });
    const { ticket } = await addOperator(t.hub.db, { name: 'mallory', role: 'admin', by: 'operator:setup' });
    const ua = createUserAgent({ fetch: t.fetch });
    await ua.get(`${t.issuer}/console/enroll`);
    const wrong = await ua.postJson(`${t.issuer}/console/enroll/options`, { name: 'alice', ticket });
    expect(wrong.status).toBe(400);
    expect(wrong.json()).toMatchObject({ error_code: 'ERR_OPERATOR_TICKET' });
    await ua.get(`${t.issuer}/console`);
    const options = await ua.postJson(`${t.issuer}/console/login/options`, {});
    const verify = await ua.postJson(
      `${t.issuer}/console/login/verify`,
      customerDevice.authenticate(options.json(), t.issuer),
    );
    expect(verify.status).toBe(400);
    expect((await ua.get(`${t.issuer}/console`)).text).toContain('data-endpoint="/console/login"');
  });

  it('slows a source down after repeated ticket guesses, like customer sign-ins', async () => {
    const ua = createUserAgent({ fetch: t.fetch });
    await ua.get(`${t.issuer}/console/enroll`);
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++)
      statuses.push(
        (await ua.postJson(`${t.issuer}/console/enroll/options`, { name: 'alice', ticket: 'OPK-guess' }))
          .status,
      );
    // Three failures came before (spent ticket, wrong name, customer passkey); five are free.
    expect(statuses.slice(0, 3)).toEqual([400, 400, 400]);
    expect(statuses.at(-1)).toBe(429);
    // The rest of this file signs in from the same loopback address: start it afresh.
    await t.hub.db.query('DELETE FROM auth_source_failures');
  });

  it('a disabled operator is signed out at once', async () => {
    const temp = await operator('tom', 'viewer');
    const res = await admin.ua.postForm(`${t.issuer}/console/operators/disable`, {
      csrf: admin.csrf,
      name: 'tom',
    });
    expect(res.status).toBe(303);
    expect((await temp.ua.get(`${t.issuer}/console`)).text).toContain('data-endpoint="/console/login"');
    const list = await admin.ua.get(`${t.issuer}/console/operators`);
    expect(list.text).toMatch(/data-operator="tom"><td>tom<\/td><td>viewer<\/td><td>disabled/);
  });
});

describe('roles and CSRF', () => {
  it('a viewer reads but cannot freeze (403) or open admin pages', async () => {
    const view = await viewer.ua.get(`${t.issuer}/console/customers/${customerId}`);
    expect(view.status).toBe(200);
    expect(view.text).not.toContain('id="freeze-form"');
    const freeze = await viewer.ua.postForm(`${t.issuer}/console/customers/${customerId}/freeze`, {
      csrf: viewer.csrf,
      reason: 'test',
    });
    expect(freeze.status).toBe(403);
    expect(freeze.text).toContain('ERR_ROLE');
    expect(await status()).toBe('active');
    for (const p of ['/console/operators', '/console/policies', '/console/report'])
      expect((await viewer.ua.get(`${t.issuer}${p}`)).status).toBe(403);
    expect((await staff.ua.get(`${t.issuer}/console/policies`)).status).toBe(403);
  });

  it('refuses form posts without the session’s CSRF token, and without a session', async () => {
    for (const csrf of [undefined, 'forged', viewer.csrf]) {
      const res = await staff.ua.postForm(`${t.issuer}/console/customers/${customerId}/freeze`, {
        ...(csrf === undefined ? {} : { csrf }),
        reason: 'x',
      });
      expect(res.status).toBe(403);
      expect(res.text).toContain('ERR_CSRF');
    }
    const anonymous = createUserAgent({ fetch: t.fetch });
    const res = await anonymous.postForm(`${t.issuer}/console/customers/${customerId}/freeze`, {
      csrf: staff.csrf,
      reason: 'x',
    });
    expect(res.status).toBe(401);
    expect(await status()).toBe('active');
  });
});

describe('search and customer view', () => {
  it('finds the customer by number, id and kana prefix', async () => {
    const number = t.hub.demo!.customerNumber;
    const kana = (
      await t.hub.db.query<{ name_kana: string }>('SELECT name_kana FROM customers WHERE id = $1', [
        customerId,
      ])
    ).rows[0]!.name_kana;
    for (const q of [number, customerId, kana.replace(/\s/g, '').slice(0, 2)]) {
      const res = await viewer.ua.get(`${t.issuer}/console?q=${encodeURIComponent(q)}`);
      expect(res.text).toContain(`data-customer="${customerId}"`);
    }
    const none = await viewer.ua.get(`${t.issuer}/console?q=${encodeURIComponent('%')}`);
    expect(none.text).toContain('id="no-results"');
    const searched = await t.hub.db.query(
      "SELECT 1 FROM audit_events WHERE type = 'console.customer.searched' AND actor = 'operator:victor'",
    );
    expect(searched.rowCount).toBeGreaterThanOrEqual(3);
  });

  it('shows risk, sessions, passkeys, consents and limits', async () => {
    const page = await staff.ua.get(`${t.issuer}/console/customers/${customerId}`);
    expect(page.text).toContain('id="risk-level" data-level="LOW"');
    expect(page.text).toMatch(/<ul id="passkeys"><li data-credential="/);
    expect(page.text).toMatch(/<ul id="consents"><li data-grant="/);
    expect(page.text).toContain('data-limit="withdrawal_daily"');
    expect(page.text).toContain('id="freeze-form"');
    expect(await auditOf('console.customer.viewed')).not.toHaveLength(0);
  });

  it('shows admins the effective policies and the report, with CSV and JSON exports', async () => {
    const policies = await admin.ua.get(`${t.issuer}/console/policies`);
    expect(policies.text).toContain('id="withdrawal-policy"');
    expect(policies.text).toContain('id="risk-rules"');
    const report = await admin.ua.get(`${t.issuer}/console/report`);
    expect(report.text).toContain('data-measure="passkeyAdoption"');
    expect(report.text).toContain('<svg class="chart"');
    const csv = await admin.ua.get(`${t.issuer}/console/report?format=csv`);
    expect(csv.headers.get('content-type')).toContain('text/csv');
    expect(csv.text.split('\n')[0]).toBe('section,name,value,count,target,met');
    const json = await admin.ua.get(`${t.issuer}/console/report?format=json`);
    expect(json.json<{ customers: number }>().customers).toBeGreaterThan(0);
  });

  it('shows a level a peer raised beside the engine’s, and only an operator clears it', async () => {
    // As the signals consumer records a peer's risk-level-change HIGH (test/integration/signals-actions.test.ts).
    await t.hub.db.query(
      `INSERT INTO peer_risk_levels (customer_id, peer_id, level, reason, event_type, expires_at)
       VALUES ($1, 'bank-x', 'HIGH', 'peer:bank-x:risk-level-change',
               'https://schemas.openid.net/secevent/caep/event-type/risk-level-change', now() + interval '7 days')`,
      [customerId],
    );
    const page = await viewer.ua.get(`${t.issuer}/console/customers/${customerId}`);
    expect(page.text).toContain('id="risk-level" data-level="HIGH"');
    expect(page.text).toContain('id="risk-engine" data-level="LOW"');
    expect(page.text).toMatch(/<ul id="peer-risk"><li data-peer="bank-x" data-level="HIGH">/);
    expect(page.text).not.toContain('id="peer-risk-clear"');
    const refused = await viewer.ua.postForm(`${t.issuer}/console/customers/${customerId}/peer-risk/clear`, {
      csrf: viewer.csrf,
    });
    expect(refused.status).toBe(403);
    expect((await effectiveRiskLevel(t.hub.db, customerId)).level).toBe('HIGH');

    expect((await staff.ua.get(`${t.issuer}/console/customers/${customerId}`)).text).toContain(
      'id="peer-risk-clear"',
    );
    const cleared = await staff.ua.postForm(`${t.issuer}/console/customers/${customerId}/peer-risk/clear`, {
      csrf: staff.csrf,
    });
    expect(cleared.status).toBe(303);
    const after = await staff.ua.get(`${t.issuer}/console/customers/${customerId}`);
    expect(after.text).toContain('id="risk-level" data-level="LOW"');
    expect(after.text).not.toContain('id="peer-risk"');
    expect(await effectiveRiskLevel(t.hub.db, customerId)).toEqual({
      level: 'LOW',
      engine: 'LOW',
      peer: undefined,
    });
    expect(await auditOf('risk.peer.cleared')).toEqual([
      {
        actor: 'operator:olga',
        outcome: 'info',
        data: { by: 'operator:olga', cleared: [{ peer: 'bank-x', level: 'HIGH' }] },
      },
    ]);
    expect((await auditOf('console.customer.peer_risk_cleared')).map((a) => a.data)).toEqual([
      { cleared: 1 },
    ]);
    const row = await t.hub.db.query<{ ended_by: string }>(
      'SELECT ended_by FROM peer_risk_levels WHERE customer_id = $1',
      [customerId],
    );
    expect(row.rows).toEqual([{ ended_by: 'operator:olga' }]);
  });

  it('lets an operator end a peer’s stop on sweeps that outlived the peer’s risk level', async () => {
    // As applySweepSuspensions records a peer's suspend_sweeps; the peer level has ended meanwhile.
    await t.hub.db.query(
      "INSERT INTO sweep_peer_stops (customer_id, peer_id, event_type) VALUES ($1, 'bank-x', 'account-disabled')",
      [customerId],
    );
    const page = await staff.ua.get(`${t.issuer}/console/customers/${customerId}`);
    expect(page.text).not.toContain('id="peer-risk"');
    expect(page.text).toContain('data-peer-stop="yes"');
    expect(page.text).toContain('id="peer-risk-clear"');
    const cleared = await staff.ua.postForm(`${t.issuer}/console/customers/${customerId}/peer-risk/clear`, {
      csrf: staff.csrf,
    });
    expect(cleared.status).toBe(303);
    expect((await staff.ua.get(`${t.issuer}/console/customers/${customerId}`)).text).toContain(
      'data-peer-stop="no"',
    );
    const stop = await t.hub.db.query('SELECT cleared_by FROM sweep_peer_stops WHERE customer_id = $1', [
      customerId,
    ]);
    expect(stop.rows).toEqual([{ cleared_by: 'operator:olga' }]);
    expect((await auditOf('linking.sweeps.peer_stop_cleared')).map((a) => a.data)).toEqual([
      { by: 'operator:olga', peers: ['bank-x'] },
    ]);
  });

  it('issues a first enrollment ticket at once (onboarding), audited as the operator', async () => {
    const newcomer = await insertCustomer(t.hub.db);
    const res = await staff.ua.postForm(`${t.issuer}/console/customers/${newcomer}/enrollment-ticket`, {
      csrf: staff.csrf,
    });
    expect(res.status).toBe(200);
    expect(res.text).toMatch(/id="ticket-value">KKH-/);
    const issued = await t.hub.db.query<{ actor: string }>(
      "SELECT actor FROM audit_events WHERE type = 'enrollment.ticket.issued' AND customer_id = $1",
      [newcomer],
    );
    expect(issued.rows).toEqual([{ actor: 'operator:olga' }]);
  });

  it('needs a second operator, an admin, for a ticket when the customer already holds a passkey', async () => {
    const tickets = async () =>
      (
        await t.hub.db.query<{ issued_by: string }>(
          "SELECT actor AS issued_by FROM audit_events WHERE type = 'enrollment.ticket.issued' AND customer_id = $1 ORDER BY id",
          [customerId],
        )
      ).rows;
    const url = `${t.issuer}/console/customers/${customerId}/enrollment-ticket`;
    const earlier = (await tickets()).length;
    // A recovery ticket needs a reason.
    const bare = await staff.ua.postForm(url, { csrf: staff.csrf });
    expect(bare.status).toBe(400);
    expect(bare.text).toContain('ERR_REASON_REQUIRED');
    const filed = await staff.ua.postForm(url, { csrf: staff.csrf, reason: 'lost phone, proofed at branch' });
    expect(filed.status).toBe(303);
    expect(filed.text).not.toContain('KKH-');
    expect(await tickets()).toHaveLength(earlier);
    const [request] = (
      await t.hub.db.query<{ id: string; requested_by: string }>(
        "SELECT id, requested_by FROM console_requests WHERE customer_id = $1 AND kind = 'enrollment_ticket' AND status = 'pending'",
        [customerId],
      )
    ).rows;
    expect(request).toMatchObject({ requested_by: 'operator:olga' });
    expect((await staff.ua.get(`${t.issuer}/console/customers/${customerId}`)).text).toContain(
      `data-request="${request!.id}"`,
    );
    // The operator who filed it cannot carry it out (their role cannot approve at all).
    const own = await staff.ua.postForm(`${t.issuer}/console/requests/${request!.id}/approve`, {
      csrf: staff.csrf,
    });
    expect(own.status).toBe(403);
    expect(own.text).toContain('ERR_ROLE');
    // Two admins approve at once: exactly one carries it out and sees the ticket.
    secondAdmin = await operator('adam', 'admin');
    const second = secondAdmin;
    const list = await admin.ua.get(`${t.issuer}/console/requests`);
    expect(list.text).toContain(`/console/requests/${request!.id}/approve`);
    const answers = await Promise.all(
      [admin, second].map((a) =>
        a.ua.postForm(`${t.issuer}/console/requests/${request!.id}/approve`, { csrf: a.csrf }),
      ),
    );
    expect(answers.map((a) => a.status).sort()).toEqual([200, 404]);
    const shown = answers.find((a) => a.status === 200)!;
    expect(shown.text).toMatch(/id="ticket-value">KKH-/);
    const issuedBy = (await tickets()).slice(earlier).map((r) => r.issued_by);
    expect(issuedBy).toHaveLength(1);
    expect(['operator:alice', 'operator:adam']).toContain(issuedBy[0]);
    const approved = await auditOf('console.request.approved');
    expect(approved.at(-1)).toMatchObject({
      actor: issuedBy[0],
      data: { requestId: request!.id, kind: 'enrollment_ticket', requestedBy: 'operator:olga' },
    });
    // Decided once: approving or rejecting again finds no open request.
    const again = await admin.ua.postForm(`${t.issuer}/console/requests/${request!.id}/reject`, {
      csrf: admin.csrf,
    });
    expect(again.status).toBe(404);
    expect(again.text).toContain('ERR_REQUEST_UNKNOWN');
  });

  it('lets an open request expire, and an admin reject one', async () => {
    const url = `${t.issuer}/console/customers/${customerId}/enrollment-ticket`;
    expect((await staff.ua.postForm(url, { csrf: staff.csrf, reason: 'customer called in' })).status).toBe(
      303,
    );
    await t.hub.db.query(
      "UPDATE console_requests SET expires_at = now() - interval '1 second' WHERE customer_id = $1 AND status = 'pending'",
      [customerId],
    );
    const [stale] = (
      await t.hub.db.query<{ id: string }>(
        "SELECT id FROM console_requests WHERE customer_id = $1 AND status = 'pending'",
        [customerId],
      )
    ).rows;
    const late = await admin.ua.postForm(`${t.issuer}/console/requests/${stale!.id}/approve`, {
      csrf: admin.csrf,
    });
    expect(late.status).toBe(404);
    // A new request replaces the expired one; an admin rejects it; nothing is issued.
    expect((await staff.ua.postForm(url, { csrf: staff.csrf, reason: 'customer called again' })).status).toBe(
      303,
    );
    const rows = (
      await t.hub.db.query<{ id: string; status: string }>(
        'SELECT id, status FROM console_requests WHERE customer_id = $1 ORDER BY requested_at, id',
        [customerId],
      )
    ).rows;
    expect(rows.find((r) => r.id === stale!.id)?.status).toBe('expired');
    const open = rows.find((r) => r.status === 'pending')!;
    const before = (await auditOf('enrollment.ticket.issued')).length;
    expect(
      (await admin.ua.postForm(`${t.issuer}/console/requests/${open.id}/reject`, { csrf: admin.csrf }))
        .status,
    ).toBe(303);
    expect((await auditOf('enrollment.ticket.issued')).length).toBe(before);
    expect((await auditOf('console.request.rejected')).at(-1)).toMatchObject({ actor: 'operator:alice' });
  });

  it('shows admins the peers’ circuit breakers; dropping what one held closes it, audited', async () => {
    // A peer whose breaker opened, holding two SETs' actions (as the receiver leaves them).
    await t.hub.db.query(
      "INSERT INTO ssf_peer_breakers (peer_id, opened_at, opened_count) VALUES ('peer-flood', now(), 100)",
    );
    for (const jti of ['held-1', 'held-2'])
      await t.hub.db.query(
        `INSERT INTO ssf_held_sets (peer_id, jti, event_type, customer_id, event, actions)
         VALUES ('peer-flood', $1, 'https://schemas.openid.net/secevent/caep/event-type/session-revoked', $2, '{}', ARRAY['revoke_sessions'])`,
        [jti, customerId],
      );
    expect((await staff.ua.get(`${t.issuer}/console/breakers`)).status).toBe(403);
    const shown = await admin.ua.get(`${t.issuer}/console/breakers`);
    expect(shown.status).toBe(200);
    expect(shown.text).toContain('data-peer="peer-flood" data-held="2"');
    expect(shown.text).toContain('/console/breakers/peer-flood/drop');
    // Form posts need the session's CSRF token; a peer without a breaker and an unknown action are 404.
    expect((await admin.ua.postForm(`${t.issuer}/console/breakers/peer-flood/drop`, {})).status).toBe(403);
    const unknown = await admin.ua.postForm(`${t.issuer}/console/breakers/peer-none/drop`, {
      csrf: admin.csrf,
    });
    expect(unknown.status).toBe(404);
    expect(unknown.text).toContain('ERR_PEER_UNKNOWN');
    expect(
      (await admin.ua.postForm(`${t.issuer}/console/breakers/peer-flood/explode`, { csrf: admin.csrf }))
        .status,
    ).toBe(404);
    const dropped = await admin.ua.postForm(`${t.issuer}/console/breakers/peer-flood/drop`, {
      csrf: admin.csrf,
    });
    expect(dropped.status).toBe(303);
    const held = await t.hub.db.query<{ resolution: string; resolved_by: string }>(
      "SELECT resolution, resolved_by FROM ssf_held_sets WHERE peer_id = 'peer-flood' ORDER BY id",
    );
    expect(held.rows).toEqual([
      { resolution: 'dropped', resolved_by: 'operator:alice' },
      { resolution: 'dropped', resolved_by: 'operator:alice' },
    ]);
    const breaker = await t.hub.db.query<{ opened_at: Date | null; closed_by: string }>(
      "SELECT opened_at, closed_by FROM ssf_peer_breakers WHERE peer_id = 'peer-flood'",
    );
    expect(breaker.rows[0]).toEqual({ opened_at: null, closed_by: 'operator:alice' });
    const closed = await t.hub.db.query<{ actor: string }>(
      "SELECT actor FROM audit_events WHERE type = 'ssf.peer.circuit_closed' ORDER BY id DESC LIMIT 1",
    );
    expect(closed.rows[0]).toEqual({ actor: 'operator:alice' });
    const after = await admin.ua.get(`${t.issuer}/console/breakers`);
    expect(after.text).toContain('data-peer="peer-flood" data-held="0"');
    expect(after.text).not.toContain('/console/breakers/peer-flood/drop');
  });

  it('leaves a request open, approving nothing, when its ticket cannot be issued', async () => {
    const url = `${t.issuer}/console/customers/${customerId}/enrollment-ticket`;
    expect(
      (await staff.ua.postForm(url, { csrf: staff.csrf, reason: 'customer at the branch' })).status,
    ).toBe(303);
    const [open] = (
      await t.hub.db.query<{ id: string }>(
        "SELECT id FROM console_requests WHERE customer_id = $1 AND status = 'pending'",
        [customerId],
      )
    ).rows;
    const approvals = (await auditOf('console.request.approved')).length;
    const issued = (await auditOf('enrollment.ticket.issued')).length;
    // Between request and approval the customer's account stopped being active.
    await t.hub.db.query("UPDATE customers SET status = 'frozen' WHERE id = $1", [customerId]);
    try {
      const refused = await admin.ua.postForm(`${t.issuer}/console/requests/${open!.id}/approve`, {
        csrf: admin.csrf,
      });
      expect(refused.status).not.toBe(200);
      expect(refused.text).toContain('ERR_CUSTOMER_INACTIVE');
      expect(refused.text).not.toContain('KKH-');
      // Nothing was decided: the request is still open, no approval recorded, the refusal audited.
      const status = await t.hub.db.query<{ status: string; decided_by: string | null }>(
        'SELECT status, decided_by FROM console_requests WHERE id = $1',
        [open!.id],
      );
      expect(status.rows[0]).toEqual({ status: 'pending', decided_by: null });
      expect(await auditOf('console.request.approved')).toHaveLength(approvals);
      const after = await auditOf('enrollment.ticket.issued');
      expect(after).toHaveLength(issued + 1);
      expect(after.at(-1)).toMatchObject({ outcome: 'failure', data: { reason: 'ERR_CUSTOMER_INACTIVE' } });
    } finally {
      await t.hub.db.query("UPDATE customers SET status = 'active' WHERE id = $1", [customerId]);
    }
    // Active again, the same request is approved and issued in one step.
    const shown = await admin.ua.postForm(`${t.issuer}/console/requests/${open!.id}/approve`, {
      csrf: admin.csrf,
    });
    expect(shown.status).toBe(200);
    expect(shown.text).toMatch(/id="ticket-value">KKH-/);
    expect(await auditOf('console.request.approved')).toHaveLength(approvals + 1);
  });

  it('grants an MFA exemption only when an admin other than the requester approves; ends it at once', async () => {
    const exemptions = async () =>
      (
        await t.hub.db.query<{ granted_by: string; ended_by: string | null }>(
          'SELECT granted_by, ended_by FROM mfa_exemptions WHERE customer_id = $1 ORDER BY granted_at',
          [customerId],
        )
      ).rows;
    const pending = async () =>
      (
        await t.hub.db.query<{ id: string; requested_by: string }>(
          "SELECT id, requested_by FROM console_requests WHERE customer_id = $1 AND kind = 'exemption_grant' AND status = 'pending'",
          [customerId],
        )
      ).rows;
    const base = `${t.issuer}/console/customers/${customerId}/exemption`;
    const short = await staff.ua.postForm(`${base}/grant`, { csrf: staff.csrf, reason: 'no' });
    expect(short.status).toBe(400);
    expect(short.text).toContain('ERR_REASON_REQUIRED');
    expect(await pending()).toEqual([]);
    // An admin's own request: filed, but another admin must decide it.
    expect(
      (await admin.ua.postForm(`${base}/grant`, { csrf: admin.csrf, reason: 'no smartphone' })).status,
    ).toBe(303);
    const [mine] = await pending();
    const own = await admin.ua.postForm(`${t.issuer}/console/requests/${mine!.id}/approve`, {
      csrf: admin.csrf,
    });
    expect(own.status).toBe(403);
    expect(own.text).toContain('ERR_REQUEST_OWN');
    expect(await exemptions()).toEqual([]);
    // Rejecting one's own request is deciding it too: refused; another admin rejects it.
    const ownReject = await admin.ua.postForm(`${t.issuer}/console/requests/${mine!.id}/reject`, {
      csrf: admin.csrf,
    });
    expect(ownReject.status).toBe(403);
    expect(await pending()).toHaveLength(1);
    expect(
      (
        await secondAdmin.ua.postForm(`${t.issuer}/console/requests/${mine!.id}/reject`, {
          csrf: secondAdmin.csrf,
        })
      ).status,
    ).toBe(303);
    expect(await pending()).toEqual([]);
    // The operator asks; nothing is granted until an admin approves.
    expect(
      (await staff.ua.postForm(`${base}/grant`, { csrf: staff.csrf, reason: 'no smartphone' })).status,
    ).toBe(303);
    expect(await exemptions()).toEqual([]);
    const [asked] = await pending();
    expect(asked).toMatchObject({ requested_by: 'operator:olga' });
    const approved = await admin.ua.postForm(`${t.issuer}/console/requests/${asked!.id}/approve`, {
      csrf: admin.csrf,
    });
    expect(approved.status).toBe(303);
    expect(await exemptions()).toEqual([{ granted_by: 'operator:olga+operator:alice', ended_by: null }]);
    expect((await staff.ua.get(`${t.issuer}/console/customers/${customerId}`)).text).toContain(
      'id="exemption-end"',
    );
    // Ending protects the customer: one operator does it.
    expect((await staff.ua.postForm(`${base}/end`, { csrf: staff.csrf })).status).toBe(303);
    expect(await exemptions()).toEqual([
      { granted_by: 'operator:olga+operator:alice', ended_by: 'operator:olga' },
    ]);
  });
});

describe('freeze and unfreeze', () => {
  let token: { access: string; rp: Awaited<ReturnType<typeof demoRp>> };

  const readApi = async () =>
    client
      .fetchProtectedResource(
        token.rp.config,
        token.access,
        new URL(`${t.issuer}/api/v1/accounts`),
        'GET',
        undefined,
        undefined,
        { DPoP: token.rp.dpop },
      )
      .catch((err: unknown) => {
        if (err instanceof client.WWWAuthenticateChallengeError) return err.response;
        throw err;
      });

  const customerSignIn = async () => {
    const ua = createUserAgent({ fetch: t.fetch });
    await ua.get(`${t.issuer}/account`);
    const options = await ua.postJson(`${t.issuer}/account/login/options`, {});
    return ua.postJson(
      `${t.issuer}/account/login/verify`,
      customerDevice.authenticate(options.json(), t.issuer),
    );
  };

  const withdrawalDecision = async () => {
    const policy = loadPolicy(t.hub.config.linking.policyFile);
    return evaluatePolicy(policy, 'withdrawal', {
      acr: 'phr',
      authAgeSeconds: 10,
      detailsBound: true,
      destinationNameMatches: true,
      destinationRegistered: true,
      destinationInCoolOff: false,
      amount: 1000,
      overDailyCap: false,
      dailyTotal: 1000,
      newDevice: false,
      riskLevel: 'low',
      frozen: (await status()) === 'frozen',
      channelDisabled: false,
      exempted: false,
    }).decision;
  };

  beforeAll(async () => {
    const rp = await demoRp(t);
    const auth = await startAuthorization(rp, 'openid accounts');
    const callback = await completeLogin({
      fetch: t.fetch,
      authorizationUrl: auth.url,
      device: customerDevice,
    });
    const tokens = await redeem(rp, auth, callback);
    token = { access: tokens.access_token, rp };
  });

  it('a freeze whose notice cannot be written fails with that error and freezes nothing', async () => {
    await t.hub.db.exec(`
      CREATE FUNCTION test_fail_notice() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'injected notice failure'; END $$;
      CREATE TRIGGER test_fail_notice BEFORE INSERT ON notify_outbox FOR EACH ROW
        WHEN (NEW.kind = 'security_alert' AND NEW.customer_id = '${customerId}') EXECUTE FUNCTION test_fail_notice();`);
    try {
      const res = await staff.ua.postForm(`${t.issuer}/console/customers/${customerId}/freeze`, {
        csrf: staff.csrf,
        reason: 'phishing report',
        takeover: 'yes',
      });
      expect(res.status).toBe(500);
      // The notice's own error, not a later statement's "transaction is aborted".
      await expect(
        freezeCustomer(
          t.hub.db,
          { customerId, operator: 'olga', reason: 'phishing report', suspectedTakeover: true },
          {},
        ),
      ).rejects.toThrow('injected notice failure');
    } finally {
      await t.hub.db.exec(
        'DROP TRIGGER test_fail_notice ON notify_outbox; DROP FUNCTION test_fail_notice();',
      );
    }
    expect(await status()).toBe('active');
    expect((await readApi()).status).toBe(200);
    expect(await auditOf('console.customer.frozen')).toEqual([]);
    const left = await t.hub.db.query(
      `SELECT 1 FROM customer_freezes WHERE customer_id = $1
       UNION ALL SELECT 1 FROM ssf_events WHERE customer_id = $1 AND event_type LIKE '%/account-disabled'`,
      [customerId],
    );
    expect(left.rowCount).toBe(0);
    // The retry is the next test's freeze.
  });

  it('freezing stops sign-in, tokens and withdrawals at once, tells the customer and the peers', async () => {
    expect((await readApi()).status).toBe(200);
    expect(await withdrawalDecision()).toBe('allow');
    const res = await staff.ua.postForm(`${t.issuer}/console/customers/${customerId}/freeze`, {
      csrf: staff.csrf,
      reason: 'phishing report from the customer’s family',
      takeover: 'yes',
    });
    expect(res.status).toBe(303);
    expect(await status()).toBe('frozen');

    expect((await readApi()).status).toBe(401);
    const signIn = await customerSignIn();
    expect(signIn.status).toBe(400);
    expect(signIn.json()).toMatchObject({ error_code: 'ERR_CUSTOMER_INACTIVE' });
    expect(await withdrawalDecision()).toBe('deny');

    const notices = await t.hub.db.query<{ data: Record<string, unknown> }>(
      "SELECT data FROM notify_outbox WHERE customer_id = $1 AND kind = 'security_alert'",
      [customerId],
    );
    expect(notices.rows.map((r) => r.data.action)).toContain('account_frozen');
    const sets = await t.hub.db.query<{ event_type: string; payload: Record<string, unknown> }>(
      'SELECT event_type, payload FROM ssf_events WHERE customer_id = $1 ORDER BY id',
      [customerId],
    );
    const disabled = sets.rows.find((r) => r.event_type.endsWith('/risc/event-type/account-disabled'));
    expect(disabled?.payload).toMatchObject({ claims: { reason: 'hijacking' } });
    const page = await viewer.ua.get(`${t.issuer}/console/customers/${customerId}`);
    expect(page.text).toContain('id="customer-status">frozen');
    expect(page.text).toContain('data-kind="security_alert"');
    expect(page.text).toContain('id="frozen-since"');
    const [frozen] = await auditOf('console.customer.frozen');
    expect(frozen).toMatchObject({ actor: 'operator:olga', outcome: 'success' });
    expect(frozen!.data.sessions).toBeGreaterThan(0);

    const again = await staff.ua.postForm(`${t.issuer}/console/customers/${customerId}/freeze`, {
      csrf: staff.csrf,
      reason: 'twice',
    });
    expect(again.status).toBe(409);
  });

  it('refuses to unfreeze before the customer re-proofs, and unfreezes after an eKYC unlock', async () => {
    const early = await staff.ua.postForm(`${t.issuer}/console/customers/${customerId}/unfreeze`, {
      csrf: staff.csrf,
    });
    expect(early.status).toBe(409);
    expect(early.text).toContain('ERR_REPROOFING_REQUIRED');
    expect(await status()).toBe('frozen');
    expect((await auditOf('console.customer.unfrozen')).at(-1)).toMatchObject({
      outcome: 'failure',
      actor: 'operator:olga',
    });

    // The customer proves who they are with eKYC (purpose unlock); it does not unfreeze by itself.
    ekyc.person = {
      sub: 'ekyc-user-1',
      verified_claims: jpAmlClaims({
        family_name: '山田',
        given_name: '太郎',
        'family_name#ja-Kana-JP': 'ヤマダ',
        'given_name#ja-Kana-JP': 'タロウ',
        birthdate: '1980-04-01',
      }),
    };
    const dispatcher = new Agent({ connect: { ca: [t.caPem, ekyc.caPem] } });
    try {
      const ua = createUserAgent({
        fetch: ((url: string | URL, init?: RequestInit) =>
          undiciFetch(url, { ...(init as object), dispatcher })) as never,
      });
      const { response } = await ua.follow((await startAuthorization(await demoRp(t))).url);
      const uid = response.url.pathname.split('/').pop()!;
      const started = await ua.postForm(`${t.issuer}/interaction/${uid}/proofing/ekyc`, {
        customerNumber: t.hub.demo!.customerNumber,
        purpose: 'unlock',
      });
      expect(started.status).toBe(303);
      const { stoppedAt } = await ua.follow(new URL(started.location!), {
        stopAt: (u) => u.pathname === CALLBACK,
      });
      await ua.follow(stoppedAt!);
    } finally {
      await dispatcher.close();
    }
    expect(await status()).toBe('frozen');

    const res = await staff.ua.postForm(`${t.issuer}/console/customers/${customerId}/unfreeze`, {
      csrf: staff.csrf,
    });
    expect(res.status).toBe(303);
    expect(await status()).toBe('active');
    const done = (await auditOf('console.customer.unfrozen')).at(-1)!;
    expect(done).toMatchObject({
      outcome: 'success',
      actor: 'operator:olga',
      data: { method: 'ekyc', purpose: 'unlock' },
    });
    const kinds = await t.hub.db.query<{ kind: string }>(
      "SELECT kind FROM notify_outbox WHERE customer_id = $1 AND kind = 'account_unlocked'",
      [customerId],
    );
    expect(kinds.rowCount).toBeGreaterThan(0);
    const enabled = await t.hub.db.query(
      "SELECT 1 FROM ssf_events WHERE customer_id = $1 AND event_type LIKE '%/risc/event-type/account-enabled'",
      [customerId],
    );
    expect(enabled.rowCount).toBe(1);
    expect((await customerSignIn()).status).toBe(200);
    expect(await withdrawalDecision()).toBe('allow');
  });

  it('counts the freeze in the management report over time', async () => {
    const json = await admin.ua.get(`${t.issuer}/console/report?format=json`);
    const perDay = json.json<{ perDay: Array<{ freezes: number }> }>().perDay;
    expect(perDay.reduce((n, d) => n + d.freezes, 0)).toBe(1);
    const csv = await admin.ua.get(`${t.issuer}/console/report?format=csv`);
    expect(csv.text).toMatch(/^freezes,\d{4}-\d{2}-\d{2},1,,,$/m);
    expect((await admin.ua.get(`${t.issuer}/console/report`)).text).toContain('id="per-day"');
  });
});

describe('kakehashi operators (CLI)', () => {
  it('adds an operator with a role, prints the ticket once, lists and disables', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'kakehashi-operators-cli-'));
    const env = { PATH: process.env.PATH, KAKEHASHI_DATA: dataDir, LOG_LEVEL: 'silent' };
    try {
      const bad = await runCli(env, 'operators', 'add', 'zed', '--role', 'root');
      expect(bad.code).toBe(2);
      const added = await runCli(env, 'operators', 'add', 'zed', '--role', 'operator', '--operator', 'boss');
      expect(added.code).toBe(0);
      expect(added.stdout).toMatch(/^OPK-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}\n/);
      const listed = await runCli(env, 'operators', 'list');
      expect(listed.stdout).toMatch(/active\s+zed\s+operator\s+passkeys 0/);
      const disabled = await runCli(env, 'operators', 'disable', 'zed');
      expect(disabled.code).toBe(0);
      expect((await runCli(env, 'operators', 'list')).stdout).toMatch(/DISABLED\s+zed/);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
