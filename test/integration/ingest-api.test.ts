/**
 * The institution ingestion endpoint over real HTTPS against a running hub: client-credentials
 * tokens obtained with openid-client 6 (private_key_jwt, DPoP) by the seeded demo institution and
 * by clients registered here, batches pushed and read back by an aggregator through /api/v1. Every
 * response is validated against the OpenAPI document the hub serves.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { institutionResource } from '../../src/api/index.ts';
import { DEMO_INSTITUTION_CLIENT_ID, DEMO_INSTITUTION_ID } from '../../src/demo/seed.ts';
import { registerPeerClient, ssfResource } from '../../src/signals/index.ts';
import { demoCustomer } from '../support/customer.ts';
import { startTestHub, type TestHub } from '../support/hub.ts';
import {
  type ClientKey,
  newKey,
  registerClient as registerClient_,
  type Token,
  tokenFor as tokenFor_,
} from '../support/institution.ts';
import { type OpenApiValidator, openApiValidator } from '../support/openapi.ts';
import { demoRp, redeem, startAuthorization } from '../support/rp.ts';

// biome-ignore lint/suspicious/noExplicitAny: response bodies are checked against the OpenAPI document
type Body = any;

let t: TestHub;
let oas: OpenApiValidator;
let endpoint: string;
let demoAccounts: string[];
let demoInstitution: ClientKey;
let institution: Token;
const OTHER_INSTITUTION = 'other-bank';
const OTHER_ACCOUNT = 'acc_other_bank_1';
const DAY = 86_400_000;
const iso = (ms: number) => new Date(ms).toISOString();
let seq = 0;
const key = () => `ingest-test-${++seq}-${randomUUID()}`;

const registerClient = (clientId: string, metadata: Record<string, unknown>) =>
  registerClient_(t, clientId, metadata);
const tokenFor = (c: ClientKey, parameters?: Record<string, string>, o?: { dpop?: boolean }) =>
  tokenFor_(t, c, parameters, o);

/** The error openid-client throws for a refused token request, as its OAuth error code. */
async function tokenError(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e as { error?: string; cause?: { error?: string } },
  );
  expect(err, 'the token request should have been refused').toBeDefined();
  return String(err?.error ?? err?.cause?.error);
}

interface Push {
  token?: Token | null;
  /** Instead of the token's: this Authorization header value. */
  authorization?: string;
  key?: string | null;
  body?: unknown;
  raw?: string | Uint8Array | ReadableStream;
  headers?: Record<string, string>;
  method?: string;
  proof?: string | null;
  scheme?: string;
}

/** One call to the ingestion endpoint; the response is validated against the OpenAPI document. */
async function push(o: Push = {}): Promise<{ res: Response; body: Body }> {
  const token = o.token === undefined ? institution : o.token;
  const method = o.method ?? 'POST';
  const headers: Record<string, string> = { 'content-type': 'application/json', ...o.headers };
  if (o.authorization) headers.authorization = o.authorization;
  else if (token) {
    headers.authorization = `${o.scheme ?? 'DPoP'} ${token.value}`;
    if (o.proof !== null) headers.dpop = o.proof ?? token.proof(method, endpoint);
  }
  if (o.key !== null) headers['idempotency-key'] = o.key ?? key();
  const res = await t.fetch(endpoint, {
    method,
    headers,
    ...(method === 'GET' ? {} : { body: (o.raw ?? JSON.stringify(o.body ?? {})) as BodyInit }),
    ...(o.raw instanceof ReadableStream ? { duplex: 'half' } : {}),
  } as RequestInit);
  const text = await res.text();
  const body = text ? JSON.parse(text) : undefined;
  oas.check('POST', endpoint, res.status, body);
  if (res.status >= 400) {
    expect(body.error.status).toBe(res.status);
    expect(body.meta.interactionId).toBe(res.headers.get('x-fapi-interaction-id'));
  }
  return { res, body };
}

async function count(table: string): Promise<number> {
  return (await t.hub.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0]!.n;
}

async function counts() {
  return {
    balances: await count('ledger_balances'),
    positions: await count('ledger_holdings'),
    transactions: await count('ledger_transactions'),
    ingestions: await count('ledger_ingestions'),
  };
}

const txn = (over: Record<string, unknown> = {}) => ({
  accountId: demoAccounts[0],
  externalId: `api-${++seq}`,
  bookedAt: iso(Date.now() - 2 * DAY),
  type: 'deposit',
  amount: '150000',
  currency: 'JPY',
  description: `API取込テスト ${seq}`,
  ...over,
});

async function auditRows(type: string) {
  return (
    await t.hub.db.query<{ outcome: string; client_id: string | null; data: Record<string, unknown> }>(
      'SELECT outcome, client_id, data FROM audit_events WHERE type = $1 ORDER BY id',
      [type],
    )
  ).rows;
}

beforeAll(async () => {
  t = await startTestHub({ signals: { peers: [{ id: 'bank', clientId: 'ssf-bank' }] } });
  endpoint = `${t.issuer}/api/institution/v1/batches`;
  oas = openApiValidator(
    (await (await t.fetch(`${t.issuer}/api/openapi.json`)).json()) as Record<string, unknown>,
  );
  demoAccounts = (
    await t.hub.db.query<{ id: string }>(
      'SELECT id FROM accounts WHERE customer_id = $1 ORDER BY opened_on',
      [t.hub.demo!.customerId],
    )
  ).rows.map((r) => r.id);
  await t.hub.db.query(
    "INSERT INTO institutions (id, kind, name_ja, name_en) VALUES ($1, 'bank', 'ほか銀行', 'Other Bank')",
    [OTHER_INSTITUTION],
  );
  await t.hub.db.query(
    `INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana) VALUES ('cus_other_bank', $1, '1', '佐藤 花子', 'サトウ ハナコ')`,
    [OTHER_INSTITUTION],
  );
  await t.hub.db.query(
    `INSERT INTO accounts (id, customer_id, institution_id, kind, tax_category, branch_code, account_number, nickname, opened_on)
     VALUES ($1, 'cus_other_bank', $2, 'deposit', NULL, '100', '7777777', '普通預金', '2020-01-06')`,
    [OTHER_ACCOUNT, OTHER_INSTITUTION],
  );
  const file = JSON.parse(readFileSync(t.hub.demo!.institutionClientFile, 'utf8')) as {
    client_id: string;
    institution_id: string;
    resource: string;
    private_jwk: JsonWebKey & { kid: string };
  };
  expect(file).toMatchObject({
    client_id: DEMO_INSTITUTION_CLIENT_ID,
    institution_id: DEMO_INSTITUTION_ID,
    resource: institutionResource(t.issuer),
  });
  demoInstitution = { clientId: file.client_id, kid: file.private_jwk.kid, privateJwk: file.private_jwk };
  institution = await tokenFor(demoInstitution);
});
afterAll(() => t?.close());

describe('institution tokens', () => {
  it('issues the demo institution a DPoP-bound token for the institution resource', async () => {
    expect(institution.type.toLowerCase()).toBe('dpop');
    expect(institution.scope).toBe('institution:ingest');
    const stored = await t.hub.provider.ClientCredentials.find(institution.value);
    expect(stored?.aud).toBe(institutionResource(t.issuer));
    expect(stored?.jkt).toBeTruthy();
    // Naming the resource explicitly gives the same.
    const named = await tokenFor(demoInstitution, {
      scope: 'institution:ingest',
      resource: institutionResource(t.issuer),
    });
    expect((await t.hub.provider.ClientCredentials.find(named.value))?.aud).toBe(
      institutionResource(t.issuer),
    );
  });

  it('gives institution:ingest only to clients whose metadata names an institution', async () => {
    const plain = await registerClient('cc-no-institution', { scope: 'institution:ingest' });
    expect(await tokenError(tokenFor(plain))).toBe('invalid_target');
    expect(
      await tokenError(
        tokenFor(plain, { scope: 'institution:ingest', resource: institutionResource(t.issuer) }),
      ),
    ).toBe('invalid_target');
    // An institution's client that does not list the scope does not get it either.
    const unlisted = await registerClient('cc-unlisted', { institution_id: OTHER_INSTITUTION });
    expect(await tokenError(tokenFor(unlisted))).toBe('invalid_target');
  });

  it('refuses institution_id metadata that is malformed or on a client with other grants', async () => {
    await registerClient('cc-bad-id', { institution_id: 'not an id!', scope: 'institution:ingest' });
    await expect(t.hub.provider.Client.find('cc-bad-id')).rejects.toMatchObject({
      error_description: expect.stringMatching(/institution_id/),
    });
    await registerClient('cc-aggregator-too', {
      institution_id: OTHER_INSTITUTION,
      scope: 'institution:ingest',
      grant_types: ['client_credentials', 'authorization_code'],
      response_types: ['code'],
      redirect_uris: ['https://example.com/cb'],
    });
    await expect(t.hub.provider.Client.find('cc-aggregator-too')).rejects.toMatchObject({
      error_description: expect.stringMatching(/client_credentials grant only/),
    });
    await registerClient('cc-number-id', { institution_id: 42, scope: 'institution:ingest' });
    await expect(t.hub.provider.Client.find('cc-number-id')).rejects.toMatchObject({
      error_description: expect.stringMatching(/institution_id/),
    });
  });

  it('leaves SSF peers their SSF tokens, which the ingestion endpoint refuses', async () => {
    const k = newKey();
    await registerPeerClient(t.hub.db, { clientId: 'ssf-bank', jwks: { keys: [k.publicJwk] } });
    const peer: ClientKey = { clientId: 'ssf-bank', kid: k.kid, privateJwk: k.privateJwk };
    // No resource named: the peer gets the SSF resource, as before institutions existed.
    const ssf = await tokenFor(peer, { scope: 'ssf.manage' });
    expect(ssf.scope).toBe('ssf.manage');
    expect((await t.hub.provider.ClientCredentials.find(ssf.value))?.aud).toBe(ssfResource(t.issuer));
    // A peer is no institution: asking for institution:ingest is refused.
    expect(await tokenError(tokenFor(peer))).toBe('invalid_target');
    const { res, body } = await push({ token: ssf, body: { transactions: [txn()] } });
    expect(res.status).toBe(401);
    expect(body.error.code).toBe('invalid_token');
    expect(res.headers.get('www-authenticate')).toMatch(/^DPoP error="invalid_token"/);
  });
});

describe('pushing batches', () => {
  it('stores a new batch (201), which an aggregator then reads through /api/v1', async () => {
    const before = await counts();
    const batch = {
      balances: [
        {
          accountId: demoAccounts[0],
          currency: 'JPY',
          cash: '987654.5',
          buyingPower: '900000',
          withdrawable: '800000',
          asOf: iso(Date.now() - 60_000),
        },
      ],
      transactions: [
        txn({ description: 'API取込 入金' }),
        txn({ type: 'fee', amount: '330', description: 'API取込 手数料' }),
      ],
    };
    // The institution as a real client: openid-client makes the DPoP proof.
    const res = await client.fetchProtectedResource(
      institution.config,
      institution.value,
      new URL(endpoint),
      'POST',
      JSON.stringify(batch),
      new Headers({ 'content-type': 'application/json', 'idempotency-key': 'happy-path-1' }),
      { DPoP: institution.dpop },
    );
    const body: Body = await res.json();
    oas.check('POST', endpoint, res.status, body);
    expect(res.status).toBe(201);
    expect(res.headers.get('idempotent-replayed')).toBeNull();
    expect(res.headers.get('x-fapi-interaction-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(body).toMatchObject({
      institutionId: DEMO_INSTITUTION_ID,
      idempotencyKey: 'happy-path-1',
      balances: { received: 1, applied: 1, stale: 0 },
      transactions: { received: 2, inserted: 2, updated: 0 },
    });
    expect(await counts()).toEqual({
      ...before,
      transactions: before.transactions + 2,
      ingestions: before.ingestions + 1,
    });
    const audit = await auditRows('api.ingest.accepted');
    expect(audit.at(-1)).toMatchObject({
      outcome: 'success',
      client_id: DEMO_INSTITUTION_CLIENT_ID,
      data: {
        institutionId: DEMO_INSTITUTION_ID,
        batchId: body.batchId,
        received: { balances: 1, transactions: 2 },
        transactions: { received: 2, inserted: 2, updated: 0 },
      },
    });
    expect(JSON.stringify(audit.at(-1))).not.toMatch(/API取込|987654/);

    // The customer consents to the demo aggregator; it reads what was just pushed.
    const _customerId = t.hub.demo!.customerId;
    const user = demoCustomer(t);
    const rp = await demoRp(t);
    const auth = await startAuthorization(rp, 'openid accounts');
    const callback = await user.login(auth.url, { accounts: (offered) => offered });
    const tokens = await redeem(rp, auth, callback);
    const read = async (path: string) => {
      const url = new URL(`${t.issuer}${path}`);
      const r = await client.fetchProtectedResource(
        rp.config,
        tokens.access_token,
        url,
        'GET',
        undefined,
        new Headers({ 'x-fapi-customer-ip-address': '203.0.113.9' }),
        { DPoP: rp.dpop },
      );
      const b: Body = await r.json();
      oas.check('GET', url, r.status, b);
      expect(r.status).toBe(200);
      return b;
    };
    const txns = await read(`/api/v1/accounts/${demoAccounts[0]}/transactions?pageSize=500`);
    const pushed = txns.data.filter((x: Body) => String(x.description).startsWith('API取込'));
    expect(pushed.map((x: Body) => [x.description, x.amount])).toEqual(
      expect.arrayContaining([
        ['API取込 入金', { amount: '150000', currency: 'JPY' }],
        ['API取込 手数料', { amount: '330', currency: 'JPY' }],
      ]),
    );
    const balances = await read(`/api/v1/accounts/${demoAccounts[0]}/balances`);
    expect(balances.data.find((b: Body) => b.currency === 'JPY').cash).toEqual({
      amount: '987654.5',
      currency: 'JPY',
    });

    // The aggregator's token is no institution token.
    const refused = await push({ authorization: `DPoP ${tokens.access_token}`, body: batch });
    expect(refused.res.status).toBe(401);
    expect(refused.body.error.code).toBe('invalid_token');
    expect(refused.res.headers.get('www-authenticate')).toMatch(/^DPoP /);
  });

  it('answers a repeat of the same batch under the same key with the first result (200, replayed)', async () => {
    const k = key();
    const batch = { transactions: [txn(), txn()] };
    const first = await push({ key: k, body: batch });
    expect(first.res.status).toBe(201);
    const before = await counts();
    // Same batch, other member order: the same batch.
    const reordered = {
      transactions: batch.transactions.map((r) => Object.fromEntries(Object.entries(r).reverse())),
    };
    const again = await push({ key: k, body: reordered });
    expect(again.res.status).toBe(200);
    expect(again.res.headers.get('idempotent-replayed')).toBe('true');
    expect(again.body).toEqual(first.body);
    expect(await counts()).toEqual(before);
    expect((await auditRows('api.ingest.replayed')).at(-1)).toMatchObject({
      outcome: 'info',
      client_id: DEMO_INSTITUTION_CLIENT_ID,
      data: { batchId: first.body.batchId, institutionId: DEMO_INSTITUTION_ID },
    });
  });

  it('refuses another batch under a used key (409) and stores nothing', async () => {
    const k = key();
    expect((await push({ key: k, body: { transactions: [txn()] } })).res.status).toBe(201);
    const before = await counts();
    const { res, body } = await push({ key: k, body: { transactions: [txn()] } });
    expect(res.status).toBe(409);
    expect(body.error.code).toBe('idempotency_conflict');
    expect(await counts()).toEqual(before);
  });

  it('refuses a batch with a bad record (422, index and reason), stores nothing, and keeps the key free', async () => {
    const before = await counts();
    const k = key();
    const good = [txn(), txn()];
    const bad = txn({ amount: '1,500' });
    const { res, body } = await push({ key: k, body: { transactions: [good[0], bad, good[1]] } });
    expect(res.status).toBe(422);
    expect(body.error.code).toBe('invalid_batch');
    expect(body.error.issues).toEqual([
      expect.objectContaining({ path: 'transactions[1].amount', section: 'transactions', index: 1 }),
    ]);
    expect(body.error.issues[0].reason).toMatch(/decimal string/);
    expect(await counts()).toEqual(before);
    const refused = (await auditRows('api.ingest.refused')).at(-1);
    expect(refused).toMatchObject({
      outcome: 'failure',
      client_id: DEMO_INSTITUTION_CLIENT_ID,
      data: { status: 422, code: 'invalid_batch', issues: 1, received: { transactions: 3 } },
    });
    // The corrected batch goes in under the same key.
    const fixed = await push({
      key: k,
      body: { transactions: [good[0], { ...bad, amount: '1500' }, good[1]] },
    });
    expect(fixed.res.status).toBe(201);
    expect(fixed.body.transactions.inserted).toBe(3);
  });

  it("refuses records naming another institution's accounts (422), storing none of the batch", async () => {
    const before = await counts();
    const { res, body } = await push({
      body: { transactions: [txn(), txn({ accountId: OTHER_ACCOUNT }), txn({ accountId: 'acc_nowhere' })] },
    });
    expect(res.status).toBe(422);
    expect(body.error.issues).toEqual([
      expect.objectContaining({
        path: 'transactions[1].accountId',
        index: 1,
        reason: 'no such account at this institution',
      }),
      expect.objectContaining({
        path: 'transactions[2].accountId',
        index: 2,
        reason: 'no such account at this institution',
      }),
    ]);
    expect(await counts()).toEqual(before);
  });

  it('refuses what the database could not store as a 422, not a 500', async () => {
    const nul = await push({ body: { transactions: [txn({ accountId: `${demoAccounts[0]}\u0000x` })] } });
    expect(nul.res.status).toBe(422);
    expect(nul.body.error.issues[0]).toMatchObject({ path: 'transactions[0].accountId', index: 0 });
    const deep = await push({ raw: `{"transactions":${'['.repeat(100_000)}${']'.repeat(100_000)}}` });
    expect(deep.res.status).toBe(422);
    expect(deep.body.error.issues[0].reason).toMatch(/nested too deeply/);
    const notObject = await push({ raw: '[1,2,3]' });
    expect(notObject.res.status).toBe(422);
  });
});

describe('refused requests', () => {
  it('requires an Idempotency-Key (400), well-formed', async () => {
    const missing = await push({ key: null, body: { transactions: [txn()] } });
    expect(missing.res.status).toBe(400);
    expect(missing.body.error.message).toMatch(/Idempotency-Key/);
    const spaced = await push({ key: 'has space', body: { transactions: [txn()] } });
    expect(spaced.res.status).toBe(400);
    const long = await push({ key: 'k'.repeat(256), body: { transactions: [txn()] } });
    expect(long.res.status).toBe(400);
  });

  it('requires a JSON body (415 for another type, 400 for broken JSON)', async () => {
    const form = await push({ raw: 'a=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(form.res.status).toBe(415);
    const broken = await push({ raw: '{"transactions": [' });
    expect(broken.res.status).toBe(400);
    expect(broken.body.error.code).toBe('invalid_request');
  });

  it('refuses a body over the limit with 413, declared or streamed, without storing anything', async () => {
    const before = await counts();
    const filler = 'x'.repeat(5 * 1024 * 1024);
    const declared = await push({ raw: `{"transactions":[],"pad":"${filler}"}` });
    expect(declared.res.status).toBe(413);
    expect(declared.body.error.code).toBe('payload_too_large');
    // Chunked, no Content-Length: counted as it arrives.
    const chunk = new TextEncoder().encode('x'.repeat(256 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent === 0) controller.enqueue(new TextEncoder().encode('{"pad":"'));
        if (sent++ < 24) controller.enqueue(chunk);
        else controller.close();
      },
    });
    const streamed = await push({ raw: stream });
    expect(streamed.res.status).toBe(413);
    expect(await counts()).toEqual(before);
    // The hub still answers afterwards.
    expect((await push({ body: { transactions: [txn()] } })).res.status).toBe(201);
  });

  it('refuses calls without a token, and DPoP-bound tokens without their proof (401 with a DPoP challenge)', async () => {
    const batch = { transactions: [txn()] };
    const none = await push({ token: null, body: batch });
    expect(none.res.status).toBe(401);
    expect(none.body.error.code).toBe('unauthorized');
    expect(none.res.headers.get('www-authenticate')).toMatch(/^DPoP algs="/);

    const noProof = await push({ proof: null, body: batch });
    expect(noProof.res.status).toBe(401);
    expect(noProof.body.error.code).toBe('invalid_dpop_proof');
    expect(noProof.res.headers.get('www-authenticate')).toMatch(/^DPoP error="invalid_dpop_proof"/);

    const asBearer = await push({ scheme: 'Bearer', proof: null, body: batch });
    expect(asBearer.res.status).toBe(401);
    expect(asBearer.body.error.code).toBe('invalid_token');

    const otherUrl = await push({
      proof: institution.proof('POST', `${t.issuer}/api/v1/accounts`),
      body: batch,
    });
    expect(otherUrl.res.status).toBe(401);
    expect(otherUrl.body.error.message).toMatch(/htu/);

    const jti = randomUUID();
    const once = await push({ proof: institution.proof('POST', endpoint, { jti }), body: batch });
    expect(once.res.status).toBe(201);
    const replayed = await push({ proof: institution.proof('POST', endpoint, { jti }), body: batch });
    expect(replayed.res.status).toBe(401);
    expect(replayed.body.error.message).toMatch(/replayed/);
    // Each refused proof is audited, as at the read API and grant management (one token check).
    const refused = (await auditRows('institution.dpop.rejected')).filter(
      (a) => a.client_id === demoInstitution.clientId,
    );
    expect(refused.map((a) => a.data.path)).toEqual(Array(3).fill('/api/institution/v1/batches'));
    expect(refused.map((a) => a.data.reason)).toEqual([
      expect.any(String),
      expect.stringMatching(/htu/),
      expect.stringMatching(/replayed/),
    ]);

    const unknown = await push({ authorization: 'DPoP not-a-token', body: batch });
    expect(unknown.res.status).toBe(401);
    expect(unknown.body.error.code).toBe('invalid_token');
  });

  it('refuses tokens that are not DPoP-bound, even from an institution', async () => {
    const bearer = await registerClient('inst-bearer', {
      institution_id: DEMO_INSTITUTION_ID,
      scope: 'institution:ingest',
      dpop_bound_access_tokens: false,
    });
    const token = await tokenFor(bearer, undefined, { dpop: false });
    expect(token.type.toLowerCase()).toBe('bearer');
    for (const scheme of ['Bearer', 'DPoP']) {
      const { res, body } = await push({ token, scheme, proof: null, body: { transactions: [txn()] } });
      expect(res.status).toBe(401);
      expect(body.error.code).toBe('invalid_token');
    }
    const { res, body } = await push({ token, body: { transactions: [txn()] } });
    expect(res.status).toBe(401);
    expect(body.error.message).toMatch(/not DPoP-bound/);
  });

  it('refuses a token without institution:ingest (403 insufficient_scope)', async () => {
    const scopeless = await tokenFor(demoInstitution, { resource: institutionResource(t.issuer) });
    expect(scopeless.scope).toBeUndefined();
    const { res, body } = await push({ token: scopeless, body: { transactions: [txn()] } });
    expect(res.status).toBe(403);
    expect(body.error.code).toBe('insufficient_scope');
    expect(res.headers.get('www-authenticate')).toMatch(
      /^DPoP error="insufficient_scope".*scope="institution:ingest"/,
    );
  });

  it('refuses a client whose institution is not known (403), checked at each call', async () => {
    const ghost = await registerClient('inst-ghost', {
      institution_id: 'ghost-bank',
      scope: 'institution:ingest',
    });
    const token = await tokenFor(ghost);
    const { res, body } = await push({ token, body: { transactions: [txn()] } });
    expect(res.status).toBe(403);
    expect(body.error.code).toBe('unknown_institution');
    expect((await auditRows('api.ingest.refused')).at(-1)).toMatchObject({
      client_id: 'inst-ghost',
      data: { status: 403, code: 'unknown_institution', institutionId: 'ghost-bank' },
    });
  });

  it('stops a token at once when its client is disabled', async () => {
    const feed = await registerClient('inst-disabled', {
      institution_id: DEMO_INSTITUTION_ID,
      scope: 'institution:ingest',
    });
    const token = await tokenFor(feed);
    expect((await push({ token, body: { transactions: [txn()] } })).res.status).toBe(201);
    await t.hub.db.query('UPDATE clients SET enabled = false WHERE client_id = $1', ['inst-disabled']);
    const { res, body } = await push({ token, body: { transactions: [txn()] } });
    expect(res.status).toBe(401);
    expect(body.error.code).toBe('invalid_token');
  });

  it('stops a token at once when its client metadata becomes unacceptable (401, not 500)', async () => {
    const feed = await registerClient('inst-edited', {
      institution_id: DEMO_INSTITUTION_ID,
      scope: 'institution:ingest',
    });
    const token = await tokenFor(feed);
    await t.hub.db.query(
      `UPDATE clients SET metadata = jsonb_set(metadata, '{institution_id}', '"not an id!"') WHERE client_id = $1`,
      ['inst-edited'],
    );
    const { res, body } = await push({ token, body: { transactions: [txn()] } });
    expect(res.status).toBe(401);
    expect(body.error.message).toMatch(/no longer registered/);
  });

  it('allows only POST (405 with Allow)', async () => {
    const res = await t.fetch(endpoint, { method: 'GET' });
    const body: Body = await res.json();
    oas.check('POST', endpoint, res.status, body);
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('POST');
  });

  it('has checked every documented response of the operation against the document', () => {
    for (const status of [200, 201, 400, 401, 403, 405, 409, 413, 415, 422])
      expect(oas.checked.has(`POST /api/institution/v1/batches ${status}`), String(status)).toBe(true);
  });
});
