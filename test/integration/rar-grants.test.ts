/**
 * RFC 9396 consent (`account_information`) and FAPI Grant Management over real HTTPS: openid-client
 * as the demo aggregator (PAR, PKCE, DPoP, private_key_jwt), the customer signing in with a
 * passkey and ticking accounts, reads honouring data types and lookback, merge/replace/create,
 * and the grant management endpoint (query, revoke).
 */
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PasskeyUser } from '../../conformance/lib/login.ts';
import { createUserAgent, type UserAgent } from '../../conformance/lib/userAgent.ts';
import { markConsentRevoked, recordConsent, revokeConsent } from '../../src/consent/index.ts';
import { DEMO_INSTITUTION_ID } from '../../src/demo/seed.ts';
import { ingestDemoLedger } from '../../src/ledger/index.ts';
import { demoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import { type OpenApiValidator, openApiValidator } from '../support/openapi.ts';
import { demoRp, type Rp, redeem, registeredRp, startAuthorization } from '../support/rp.ts';

let t: TestHub;
let user: PasskeyUser;
let accounts: string[];
let oas: OpenApiValidator;
const ACC3 = 'acc_rar_third';
const DAY = 86_400_000;
const PRESENT = { 'x-fapi-customer-ip-address': '203.0.113.9' };

// biome-ignore lint/suspicious/noExplicitAny: JSON bodies
type Body = any;

interface Granted {
  rp: Rp;
  tokens: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers;
}

const details = (d: Record<string, unknown>) => JSON.stringify([{ type: 'account_information', ...d }]);

/** One authorization with the customer ticking `pick(offered)`. */
async function authorize(
  extra: Record<string, string>,
  pick: (offered: string[]) => string[] = (o) => o,
  scope = 'openid offline_access grant_management_query grant_management_revoke',
  rp?: Rp,
  userAgent?: UserAgent,
): Promise<Granted> {
  const party = rp ?? (await demoRp(t));
  const auth = await startAuthorization(party, scope, extra);
  const callback = await user.login(auth.url, { accounts: pick, ...(userAgent ? { userAgent } : {}) });
  const tokens = await redeem(party, auth, callback);
  return { rp: party, tokens };
}

/** A DPoP-protected call with openid-client; status and JSON body, checked against the OpenAPI document. */
async function call(g: Granted, path: string, method = 'GET'): Promise<{ status: number; body: Body }> {
  const result = await send(g, path, method);
  oas.check(method, `${t.issuer}${path}`, result.status, result.body);
  return result;
}

async function send(g: Granted, path: string, method: string): Promise<{ status: number; body: Body }> {
  const token = g.tokens.access_token;
  try {
    const res = await client.fetchProtectedResource(
      g.rp.config,
      token,
      new URL(`${t.issuer}${path}`),
      method,
      undefined,
      new Headers(PRESENT),
      { DPoP: g.rp.dpop },
    );
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  } catch (err) {
    const res = (err as { response?: Response }).response;
    if (!res) throw err;
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }
}

/** The PAR error for these parameters (it must fail). */
async function parError(extra: Record<string, string>): Promise<{ error: string; description: string }> {
  const rp = await demoRp(t);
  try {
    await startAuthorization(rp, 'openid', extra);
  } catch (err) {
    const e = err as { error?: string; error_description?: string };
    return { error: String(e.error), description: String(e.error_description) };
  }
  throw new Error('PAR accepted the request');
}

const consentRow = async (grantId: string) =>
  (
    await t.hub.db.query<{
      account_ids: string[];
      data_types: string[] | null;
      lookback_days: number | null;
      expires_at: Date;
      last_used_at: Date | null;
      revoked_by: string | null;
      revoke_reason: string | null;
    }>(
      'SELECT account_ids, data_types, lookback_days, expires_at, last_used_at, revoked_by, revoke_reason FROM consents WHERE grant_id = $1',
      [grantId],
    )
  ).rows[0]!;

beforeAll(async () => {
  t = await startTestHub();
  const customerId = t.hub.demo!.customerId;
  await t.hub.db.query(
    `INSERT INTO accounts (id, customer_id, institution_id, kind, tax_category, branch_code, account_number, nickname, opened_on)
     VALUES ($1, $2, $3, 'securities', 'general', '002', '5557777', '一般口座', '2025-02-03')`,
    [ACC3, customerId, DEMO_INSTITUTION_ID],
  );
  await ingestDemoLedger(t.hub.db, DEMO_INSTITUTION_ID, [ACC3]);
  accounts = (
    await t.hub.db.query<{ id: string }>(
      'SELECT id FROM accounts WHERE customer_id = $1 ORDER BY opened_on, id',
      [customerId],
    )
  ).rows.map((r) => r.id);
  user = demoCustomer(t);
  oas = openApiValidator(
    (await (await t.fetch(`${t.issuer}/api/openapi.json`)).json()) as Record<string, unknown>,
  );
});
afterAll(() => t?.close());

describe('discovery', () => {
  it('advertises the authorization details type and grant management', async () => {
    const meta = (await (await t.fetch(`${t.issuer}/.well-known/openid-configuration`)).json()) as Body;
    expect(meta.authorization_details_types_supported).toEqual([
      'account_information',
      'withdrawal',
      'withdrawal_account_change',
    ]);
    expect(meta.grant_management_endpoint).toBe(`${t.issuer}/grants`);
    expect(meta.grant_management_actions_supported).toEqual([
      'query',
      'revoke',
      'create',
      'merge',
      'replace',
    ]);
    expect(meta.grant_management_action_required).toBe(false);
    expect(meta.scopes_supported).toEqual(
      expect.arrayContaining(['grant_management_query', 'grant_management_revoke']),
    );
  });
});

describe('authorization_details at PAR', () => {
  it.each([
    [{ data_types: ['balances'], accounts: ['acc_x'] }, /chosen by the customer.*account_hints/],
    [{ data_types: ['balances', 'orders'] }, /data_types/],
    [{ data_types: [] }, /data_types/],
    [{ data_types: ['balances', 'balances'] }, /repeat/],
    [{ data_types: ['transactions'], transaction_lookback_days: 731 }, /transaction_lookback_days/],
    [{ data_types: ['balances'], transaction_lookback_days: 30 }, /needs the transactions data type/],
    [{ data_types: ['balances'], expires_at: new Date(Date.now() + 400 * DAY).toISOString() }, /expires_at/],
    [{ data_types: ['balances'], expires_at: new Date(Date.now() - DAY).toISOString() }, /expires_at/],
    [{ data_types: ['balances'], locations: ['https://elsewhere.example/api'] }, /locations/],
  ])('refuses %j', async (detail, why) => {
    const e = await parError({ authorization_details: details(detail) });
    expect(e.error).toBe('invalid_authorization_details');
    expect(e.description).toMatch(why);
  });

  it('refuses an unknown type, two details of the type, and JSON that is not an array', async () => {
    const unknown = await parError({
      authorization_details: JSON.stringify([{ type: 'payment_initiation' }]),
    });
    expect(unknown.error).toBe('invalid_authorization_details');
    const two = await parError({
      authorization_details: JSON.stringify([
        { type: 'account_information', data_types: ['balances'] },
        { type: 'account_information', data_types: ['holdings'] },
      ]),
    });
    expect(two).toMatchObject({ error: 'invalid_authorization_details', description: /at most 1/ });
    const notArray = await parError({ authorization_details: '{"type":"account_information"}' });
    expect(notArray.error).toBe('invalid_authorization_details');
  });

  it('lets only clients registered for it ask for account_information: the accounts scope or the type listed (security review)', async () => {
    const balances = { authorization_details: details({ data_types: ['balances'] }) };
    const refusal = async (rp: Rp) => {
      try {
        await startAuthorization(rp, 'openid', balances);
      } catch (err) {
        return err as { error?: string; error_description?: string };
      }
      return undefined;
    };
    // Registered without the accounts scope: the detail would reach what the scope does not.
    const narrow = await registeredRp(t, 'scope-narrow-pfm', { scope: 'openid offline_access' });
    expect(await refusal(narrow)).toMatchObject({
      error: 'invalid_authorization_details',
      error_description: expect.stringMatching(/account_information.*not allowed for this client/),
    });
    const stored = await t.hub.provider.Client.find('scope-narrow-pfm');
    expect(stored?.metadata().authorization_details_types).toEqual([]);
    // The accounts scope registered: the detail works, end to end.
    const wide = await registeredRp(t, 'scope-accounts-pfm', { scope: 'openid offline_access accounts' });
    const g = await authorize(balances, () => [accounts[0]!], 'openid', wide);
    expect(g.tokens.authorization_details).toEqual([
      expect.objectContaining({ type: 'account_information', accounts: [accounts[0]] }),
    ]);
    expect((await call(g, '/api/v1/balances')).status).toBe(200);
    // RFC 9396 §10: a registration that lists the type explicitly may use it whatever its scope.
    const typed = await registeredRp(t, 'typed-pfm', {
      scope: 'openid',
      authorization_details_types: ['account_information'],
    });
    expect(await refusal(typed)).toBeUndefined();
  });

  it('checks grant_management_action and grant_id', async () => {
    expect((await parError({ grant_management_action: 'update' })).error).toBe('invalid_request');
    expect((await parError({ grant_management_action: 'merge' })).error).toBe('invalid_request');
    expect((await parError({ grant_id: 'abc' })).error).toBe('invalid_request');
    expect((await parError({ grant_management_action: 'create', grant_id: 'abc' })).error).toBe(
      'invalid_request',
    );
    expect(
      (await parError({ grant_management_action: 'replace', grant_id: 'no-such-grant-000' })).error,
    ).toBe('invalid_grant_id');
  });
});

describe('consent with account_information', () => {
  let g: Granted;
  let grantId: string;
  beforeAll(async () => {
    g = await authorize(
      {
        authorization_details: details({
          data_types: ['transactions', 'balances'],
          transaction_lookback_days: 30,
          account_hints: [accounts[0]!, ACC3],
        }),
      },
      // The customer narrows: two of three accounts.
      () => [accounts[0]!, ACC3],
    );
    grantId = String(g.tokens.grant_id);
  });

  it('returns what was granted, with the grant_id, in the token response', async () => {
    expect(grantId).toMatch(/^[\w-]{20,}$/);
    expect(g.tokens.authorization_details).toEqual([
      {
        type: 'account_information',
        locations: [`${t.issuer}/api/v1`],
        data_types: ['balances', 'transactions'],
        transaction_lookback_days: 30,
        expires_at: expect.any(String),
        accounts: [accounts[0], ACC3],
      },
    ]);
    const row = await consentRow(grantId);
    expect(row).toMatchObject({
      account_ids: [accounts[0], ACC3],
      data_types: ['balances', 'transactions'],
      lookback_days: 30,
    });
    // No expiry asked: the grant's lifetime.
    expect(
      Math.abs(row.expires_at.getTime() - (Date.now() + t.hub.config.oidc.grantTtl * 1000)),
    ).toBeLessThan(60_000);
  });

  it('reads only the chosen accounts and data, within the lookback', async () => {
    const list = await call(g, '/api/v1/accounts');
    expect(list.status).toBe(200);
    expect(list.body.data.map((a: Body) => a.accountId).sort()).toEqual([accounts[0], ACC3].sort());
    expect((await call(g, `/api/v1/accounts/${accounts[1]}/balances`)).status).toBe(404);
    expect((await call(g, '/api/v1/balances')).status).toBe(200);

    const holdings = await call(g, '/api/v1/holdings');
    expect(holdings.status).toBe(403);
    expect(holdings.body.error.code).toBe('consent_insufficient');

    const tx = await call(g, `/api/v1/accounts/${ACC3}/transactions`);
    expect(tx.status).toBe(200);
    const start = Date.parse(tx.body.meta.firstAvailableDateTime);
    expect(Math.abs(start - (Date.now() - 30 * DAY))).toBeLessThan(60_000);
    for (const x of tx.body.data) expect(Date.parse(x.bookingDateTime)).toBeGreaterThanOrEqual(start);

    const before = new Date(Date.now() - 40 * DAY).toISOString();
    const old = await call(g, `/api/v1/transactions?toBookingDateTime=${encodeURIComponent(before)}`);
    expect(old.status).toBe(403);
    expect(old.body.error.code).toBe('consent_lookback_exceeded');
  });

  it('records when the consent was last used, at most once a minute', async () => {
    const first = (await consentRow(grantId)).last_used_at;
    expect(first).toBeInstanceOf(Date);
    expect(Date.now() - first!.getTime()).toBeLessThan(60_000);
    expect((await call(g, '/api/v1/balances')).status).toBe(200);
    expect((await consentRow(grantId)).last_used_at).toEqual(first);
    await t.hub.db.query(
      "UPDATE consents SET last_used_at = now() - interval '2 minutes' WHERE grant_id = $1",
      [grantId],
    );
    expect((await call(g, '/api/v1/balances')).status).toBe(200);
    expect(Date.now() - (await consentRow(grantId)).last_used_at!.getTime()).toBeLessThan(10_000);
  });

  it('answers a grant query to the owning client', async () => {
    const q = await call(g, `/grants/${grantId}`);
    expect(q.status).toBe(200);
    expect(q.body.authorization_details).toEqual(g.tokens.authorization_details);
    expect(q.body.scopes).toEqual(
      expect.arrayContaining([
        { scope: expect.stringContaining('openid') },
        { scope: 'grant_management_query grant_management_revoke', resource: [`${t.issuer}/api/v1`] },
      ]),
    );
    expect(q.body.expires_at).toEqual(expect.any(String));
    const unknown = await call(g, '/grants/unknown-grant-id');
    expect(unknown).toEqual({
      status: 404,
      body: { error: 'invalid_grant_id', error_description: 'no such grant' },
    });
  });

  it('needs the grant management scope and a DPoP-bound token', async () => {
    const narrow = await authorize(
      { authorization_details: details({ data_types: ['balances'] }) },
      (o) => [o[0]!],
      'openid',
    );
    const q = await call(narrow, `/grants/${narrow.tokens.grant_id}`);
    expect(q.status).toBe(403);
    expect(q.body.error).toBe('insufficient_scope');
    const d = await call(narrow, `/grants/${narrow.tokens.grant_id}`, 'DELETE');
    expect(d.status).toBe(403);
    const bearer = await t.fetch(`${t.issuer}/grants/${grantId}`, {
      headers: { authorization: `Bearer ${g.tokens.access_token}` },
    });
    expect(bearer.status).toBe(401);
    expect(((await bearer.json()) as Body).error).toBe('invalid_token');
    // The DPoP scheme: the token is DPoP-bound, so that is the challenge (as at the read API).
    expect(bearer.headers.get('www-authenticate')).toMatch(/^DPoP error="invalid_token"/);
    // A bad proof is refused and audited as the read API audits its own.
    const proof = await t.fetch(`${t.issuer}/grants/${grantId}`, {
      headers: { authorization: `DPoP ${g.tokens.access_token}`, dpop: 'eyJhbGciOiJFUzI1NiJ9.e30.AAAA' },
    });
    expect(proof.status).toBe(401);
    expect(((await proof.json()) as Body).error).toBe('invalid_token');
    const audited = await t.hub.db.query<{ client_id: string; customer_id: string; data: Body }>(
      "SELECT client_id, customer_id, data FROM audit_events WHERE type = 'grants.dpop.rejected' ORDER BY id DESC LIMIT 1",
    );
    expect(audited.rows[0]).toMatchObject({
      client_id: 'demo-aggregator',
      customer_id: t.hub.demo!.customerId,
      data: { path: `/grants/${grantId}` },
    });
  });
});

describe('grant management actions', () => {
  it('merge adds to the grant, replace swaps it, create makes a new one', async () => {
    const first = await authorize({ authorization_details: details({ data_types: ['balances'] }) }, () => [
      accounts[0]!,
    ]);
    const grantId = String(first.tokens.grant_id);
    expect((await call(first, '/api/v1/holdings')).status).toBe(403);

    const merged = await authorize(
      {
        grant_management_action: 'merge',
        grant_id: grantId,
        authorization_details: details({ data_types: ['holdings'] }),
      },
      () => [ACC3],
      undefined,
      first.rp,
    );
    expect(merged.tokens.grant_id).toBe(grantId);
    expect(merged.tokens.authorization_details).toEqual([
      expect.objectContaining({ data_types: ['balances', 'holdings'], accounts: [accounts[0], ACC3] }),
    ]);
    // The consent is the grant's: the earlier token now reads what was added, and a refresh says so.
    expect((await call(first, '/api/v1/holdings')).status).toBe(200);
    const refreshed = await client.refreshTokenGrant(
      first.rp.config,
      first.tokens.refresh_token!,
      undefined,
      {
        DPoP: first.rp.dpop,
      },
    );
    expect(refreshed.grant_id).toBe(grantId);
    expect(refreshed.authorization_details).toEqual(merged.tokens.authorization_details);
    expect((await consentRow(grantId)).account_ids).toEqual([accounts[0], ACC3]);

    const replaced = await authorize(
      {
        grant_management_action: 'replace',
        grant_id: grantId,
        authorization_details: details({ data_types: ['transactions'], transaction_lookback_days: 7 }),
      },
      () => [accounts[1]!],
      undefined,
      first.rp,
    );
    expect(replaced.tokens.grant_id).toBe(grantId);
    expect(replaced.tokens.authorization_details).toEqual([
      expect.objectContaining({
        data_types: ['transactions'],
        accounts: [accounts[1]],
        transaction_lookback_days: 7,
      }),
    ]);
    expect(await consentRow(grantId)).toMatchObject({
      account_ids: [accounts[1]],
      data_types: ['transactions'],
      lookback_days: 7,
    });
    expect((await call(first, '/api/v1/holdings')).status).toBe(403);
    expect((await call(replaced, `/api/v1/accounts/${accounts[0]}`)).status).toBe(404);

    const created = await authorize(
      { grant_management_action: 'create', authorization_details: details({ data_types: ['balances'] }) },
      () => [accounts[0]!],
      undefined,
      first.rp,
    );
    expect(created.tokens.grant_id).not.toBe(grantId);
    expect((await consentRow(grantId)).account_ids).toEqual([accounts[1]]);
  });

  it('a scope-only consent maps onto the same model', async () => {
    const g = await authorize(
      {},
      () => [accounts[0]!],
      'openid offline_access accounts grant_management_query',
    );
    const grantId = String(g.tokens.grant_id);
    expect(g.tokens.authorization_details).toBeUndefined();
    expect(await consentRow(grantId)).toMatchObject({
      account_ids: [accounts[0]],
      data_types: ['balances', 'holdings', 'transactions'],
      lookback_days: t.hub.config.api.transactionLookbackDays,
    });
    const q = await call(g, `/grants/${grantId}`);
    expect(q.status).toBe(200);
    expect(q.body.scopes).toEqual([{ scope: expect.stringContaining('accounts') }]);
    // A replace asks the customer again even though every scope is already granted.
    const replaced = await authorize(
      { grant_management_action: 'replace', grant_id: grantId },
      () => [ACC3],
      'openid accounts',
      g.rp,
    );
    expect(replaced.tokens.grant_id).toBe(grantId);
    expect((await consentRow(grantId)).account_ids).toEqual([ACC3]);
    const list = await call(g, '/api/v1/accounts');
    expect(list.body.data.map((a: Body) => a.accountId)).toEqual([ACC3]);
  });

  it('revocation by the client ends access and refresh at once, recorded with who and why', async () => {
    const g = await authorize({ authorization_details: details({ data_types: ['balances'] }) }, () => [
      accounts[0]!,
    ]);
    const grantId = String(g.tokens.grant_id);
    expect((await call(g, '/api/v1/balances')).status).toBe(200);
    const del = await call(g, `/grants/${grantId}`, 'DELETE');
    expect(del.status).toBe(204);
    expect((await call(g, '/api/v1/balances')).status).toBe(401);
    await expect(
      client.refreshTokenGrant(g.rp.config, g.tokens.refresh_token!, undefined, { DPoP: g.rp.dpop }),
    ).rejects.toMatchObject({ error: 'invalid_grant' });
    expect(await consentRow(grantId)).toMatchObject({
      revoked_by: 'client:demo-aggregator',
      revoke_reason: 'revoked by the client through the grant management endpoint',
    });
    const audit = await t.hub.db.query<{ actor: string; data: Body }>(
      "SELECT actor, data FROM audit_events WHERE type = 'consent.revoked' AND data ->> 'grantId' = $1",
      [grantId],
    );
    expect(audit.rows).toEqual([
      {
        actor: 'client:demo-aggregator',
        data: expect.objectContaining({
          by: 'client',
          reason: 'revoked by the client through the grant management endpoint',
        }),
      },
    ]);
    // Merging into an ended grant is refused with Grant Management's own error.
    const again = await parError({
      grant_management_action: 'merge',
      grant_id: grantId,
      authorization_details: details({ data_types: ['balances'] }),
    });
    expect(again.error).toBe('invalid_grant_id');
  });

  it('a revocation landing while a merge is decided stays revoked: no consent or grant comes back (security review)', async () => {
    const g = await authorize({ authorization_details: details({ data_types: ['balances'] }) }, () => [
      accounts[0]!,
    ]);
    const grantId = String(g.tokens.grant_id);
    const customerId = t.hub.demo!.customerId;
    // The customer revokes on the dashboard after the consent POST loaded the grant, just before the
    // merged grant is saved (the window between Grant.find and grant.save()).
    const Grant = t.hub.provider.Grant as unknown as { prototype: { save(): Promise<string>; jti?: string } };
    const save = Grant.prototype.save;
    let revokedInWindow = false;
    Grant.prototype.save = async function (this: { jti?: string }) {
      if (this.jti === grantId && !revokedInWindow) {
        revokedInWindow = true;
        await revokeConsent(t.hub.db, {
          grantId,
          customerId,
          by: { customer: true },
          reason: 'revoked on the dashboard',
          request: {},
        });
      }
      return save.call(this);
    };
    let refused: unknown;
    try {
      await authorize(
        {
          grant_management_action: 'merge',
          grant_id: grantId,
          authorization_details: details({ data_types: ['holdings'] }),
        },
        () => [ACC3],
        undefined,
        g.rp,
      );
    } catch (err) {
      refused = err;
    } finally {
      Grant.prototype.save = save;
    }
    expect(revokedInWindow).toBe(true);
    expect(refused).toMatchObject({ step: 'consent', status: 400 });
    expect((refused as { body: string }).body).toContain('invalid_grant_id');
    expect(await consentRow(grantId)).toMatchObject({
      account_ids: [accounts[0]],
      revoked_by: `customer:${customerId}`,
      revoke_reason: 'revoked on the dashboard',
    });
    expect(
      (
        await t.hub.db.query(
          'SELECT revoked_at FROM consents WHERE grant_id = $1 AND revoked_at IS NOT NULL',
          [grantId],
        )
      ).rowCount,
    ).toBe(1);
    const stored = await t.hub.db.query('SELECT 1 FROM oidc_payloads WHERE grant_id = $1 OR id = $1', [
      grantId,
    ]);
    expect(stored.rowCount).toBe(0);
    expect((await call(g, '/api/v1/balances')).status).toBe(401);
    await expect(
      client.refreshTokenGrant(g.rp.config, g.tokens.refresh_token!, undefined, { DPoP: g.rp.dpop }),
    ).rejects.toMatchObject({ error: 'invalid_grant' });
    const refusedAudit = await t.hub.db.query(
      "SELECT 1 FROM audit_events WHERE type = 'consent.extension_refused' AND data ->> 'grantId' = $1",
      [grantId],
    );
    expect(refusedAudit.rowCount).toBe(1);
  });

  it('a consent write waiting on a revocation in progress (pg_sleep before its commit) does not undo it', async () => {
    const g = await authorize({ authorization_details: details({ data_types: ['balances'] }) }, () => [
      accounts[0]!,
    ]);
    const grantId = String(g.tokens.grant_id);
    const customerId = t.hub.demo!.customerId;
    let revoking!: () => void;
    const started = new Promise<void>((resolve) => {
      revoking = resolve;
    });
    // The revocation holds the consent row (and, on PGlite, the database) and sleeps before it commits.
    const revocation = t.hub.db.transaction(async (tx) => {
      await markConsentRevoked(tx, {
        grantId,
        customerId,
        by: `customer:${customerId}`,
        reason: 'slow revoke',
      });
      revoking();
      await tx.query('SELECT pg_sleep(0.3)');
    });
    await started;
    const write = recordConsent(t.hub.db, {
      grantId,
      customerId,
      clientId: 'demo-aggregator',
      scopes: ['openid'],
      accountIds: [accounts[0]!, ACC3],
      dataTypes: ['balances', 'holdings'],
      lookbackDays: null,
      expiresAt: new Date(Date.now() + DAY),
    });
    // The handler is attached at once: the write may be refused before the revocation's promise settles.
    const refused = expect(write).rejects.toMatchObject({ code: 'ERR_CONSENT_REVOKED' });
    await revocation;
    await refused;
    expect(await consentRow(grantId)).toMatchObject({
      account_ids: [accounts[0]],
      revoked_by: `customer:${customerId}`,
      revoke_reason: 'slow revoke',
    });
  });

  it("recordConsent writes nothing for an account that is not one of the customer's open accounts", async () => {
    const customerId = t.hub.demo!.customerId;
    const other = `cus_rar_other_${Date.now()}`;
    const foreign = `acc_rar_foreign_${Date.now()}`;
    const closed = `acc_rar_closed_${Date.now()}`;
    await t.hub.db.query(
      `INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana)
       VALUES ($1, $2, $1, '他人', 'タニン')`,
      [other, DEMO_INSTITUTION_ID],
    );
    await t.hub.db.query(
      `INSERT INTO accounts (id, customer_id, institution_id, kind, tax_category, branch_code, account_number, nickname, opened_on, status)
       VALUES ($1, $2, $3, 'securities', 'specific', '001', '7654321', 'x', '2020-01-01', 'open'),
              ($4, $5, $3, 'securities', 'specific', '001', '7654322', 'y', '2020-01-01', 'closed')`,
      [foreign, other, DEMO_INSTITUTION_ID, closed, customerId],
    );
    const write = (grantId: string, accountIds: string[]) =>
      recordConsent(t.hub.db, {
        grantId,
        customerId,
        clientId: 'demo-aggregator',
        scopes: ['openid', 'accounts'],
        accountIds,
        dataTypes: ['balances'],
        lookbackDays: null,
        expiresAt: new Date(Date.now() + DAY),
      });
    for (const [grantId, ids] of [
      ['rar-foreign', [accounts[0]!, foreign]],
      ['rar-closed', [closed]],
    ] as const) {
      await expect(write(grantId, [...ids])).rejects.toMatchObject({ code: 'ERR_CONSENT_ACCOUNTS' });
      expect(await consentRow(grantId)).toBeUndefined();
    }
    // The same call with the customer's own open accounts (one of them twice) is written once each.
    await write('rar-own', [accounts[0]!, accounts[0]!, ACC3]);
    expect(await consentRow('rar-own')).toMatchObject({ account_ids: [accounts[0], ACC3] });
  });

  it("another client's grant is not found, cannot be revoked and cannot be merged into", async () => {
    const mine = await authorize({ authorization_details: details({ data_types: ['balances'] }) }, () => [
      accounts[0]!,
    ]);
    const grantId = String(mine.tokens.grant_id);
    const other = await registeredRp(t, 'other-aggregator', {
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'openid offline_access accounts grant_management_query grant_management_revoke',
    });
    const theirs = await authorize(
      { authorization_details: details({ data_types: ['balances'] }) },
      () => [accounts[0]!],
      undefined,
      other,
    );
    expect(theirs.tokens.grant_id).not.toBe(grantId);
    expect((await call(theirs, `/grants/${grantId}`)).body).toEqual({
      error: 'invalid_grant_id',
      error_description: 'no such grant',
    });
    expect((await call(theirs, `/grants/${grantId}`, 'DELETE')).status).toBe(404);
    expect((await call(mine, '/api/v1/balances')).status).toBe(200);
    const merge = await startAuthorization(other, 'openid', {
      grant_management_action: 'merge',
      grant_id: grantId,
      authorization_details: details({ data_types: ['balances'] }),
    }).then(
      () => undefined,
      (err: { error?: string }) => err.error,
    );
    expect(merge).toBe('invalid_grant_id');
  });

  it('a grant that ends while the customer is on the consent page is not revived', async () => {
    const browser = createUserAgent({ fetch: t.fetch });
    const g = await authorize(
      { authorization_details: details({ data_types: ['balances'] }) },
      () => [accounts[0]!],
      undefined,
      undefined,
      browser,
    );
    const grantId = String(g.tokens.grant_id);
    const auth = await startAuthorization(g.rp, 'openid', {
      grant_management_action: 'merge',
      grant_id: grantId,
      authorization_details: details({ data_types: ['holdings'] }),
    });
    // Signed in already: the browser lands on the consent page of the merge.
    const { response } = await browser.follow(auth.url);
    const uid = /^\/interaction\/([^/]+)$/.exec(response.url.pathname)?.[1];
    expect(response.text).toContain('id="grant-action" data-action="merge"');
    expect((await call(g, `/grants/${grantId}`, 'DELETE')).status).toBe(204);
    const decided = await browser.postForm(`${t.issuer}/interaction/${uid}/consent`, {
      decision: 'approve',
      account: accounts[0]!,
    });
    // Revoking the grant ended the interaction bound to it as well: an error page, nothing stored.
    expect(decided.status).toBe(400);
    expect(decided.text).toContain('id="error-code"');
    expect(await consentRow(grantId)).toMatchObject({ revoked_by: 'client:demo-aggregator' });
    expect(
      (await t.hub.db.query("SELECT 1 FROM oidc_payloads WHERE model = 'Grant' AND id = $1", [grantId]))
        .rowCount,
    ).toBe(0);
  });

  it('an access token for the read API does not outlive its consent', async () => {
    const expires = new Date(Date.now() + 400_000);
    const g = await authorize(
      { authorization_details: details({ data_types: ['balances'], expires_at: expires.toISOString() }) },
      () => [accounts[0]!],
    );
    expect(t.hub.config.oidc.accessTokenTtl).toBeGreaterThan(400);
    expect(g.tokens.expires_in).toBeLessThanOrEqual(400);
    expect(g.tokens.expires_in).toBeGreaterThan(380);
  });

  it('an expiry in the details ends the grant then', async () => {
    const expires = new Date(Date.now() + 3600_000);
    const g = await authorize(
      { authorization_details: details({ data_types: ['balances'], expires_at: expires.toISOString() }) },
      () => [accounts[0]!],
    );
    const grantId = String(g.tokens.grant_id);
    expect((await consentRow(grantId)).expires_at.getTime()).toBe(expires.getTime());
    const grantRow = await t.hub.db.query<{ expires_at: Date }>(
      "SELECT expires_at FROM oidc_payloads WHERE model = 'Grant' AND id = $1",
      [grantId],
    );
    expect(Math.abs(grantRow.rows[0]!.expires_at.getTime() - expires.getTime())).toBeLessThan(2000);
    await t.hub.db.query("UPDATE consents SET expires_at = now() - interval '1 second' WHERE grant_id = $1", [
      grantId,
    ]);
    const read = await call(g, '/api/v1/balances');
    expect(read.status).toBe(403);
    expect(read.body.error.code).toBe('consent_inactive');
  });
});
