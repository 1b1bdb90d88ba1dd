/**
 * Demo mode: on an empty database, a demo brokerage, a customer with two securities accounts,
 * two aggregator clients (private_key_jwt + DPoP), a third one registered for signed requests and
 * JARM, the accounts API's resource-server client (introspection) and the brokerage's ingestion
 * client (client credentials, scope institution:ingest). Private keys are written only to
 * <dataDir>/demo/*-client*.json (0600), never to the database or the log.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { INGEST_SCOPE, INSTITUTION_ID_METADATA, institutionResource } from '../api/institution.ts';
import type { Config } from '../config/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import { jwkThumbprint } from '../keys/index.ts';
import { ingestDemoLedger } from '../ledger/index.ts';

export const DEMO_INSTITUTION_ID = 'demo-securities';
export const DEMO_CUSTOMER_NUMBER = '10000001';
export const DEMO_CLIENT_ID = 'demo-aggregator';
export const DEMO_CLIENT_ID_2 = 'demo-aggregator-2';
/** FAPI Message Signing: an aggregator that must sign its requests (JAR) and gets JARM responses only. */
export const DEMO_SIGNED_CLIENT_ID = 'demo-signed-aggregator';
/** The accounts API as a registered resource server: it may introspect (signed responses). */
export const DEMO_RESOURCE_SERVER_CLIENT_ID = 'demo-resource-server';
/** The demo brokerage's own client, pushing its data through POST /api/institution/v1/batches. */
export const DEMO_INSTITUTION_CLIENT_ID = 'demo-institution';
const DEMO_LOCK_ID = 0x64656d6f;

export interface DemoInfo {
  customerId: string;
  customerNumber: string;
  clientFile: string;
  /** The demo institution's ingestion client (its private key, client id and resource). */
  institutionClientFile: string;
  /** True when this start created the demo data. */
  created: boolean;
}

export function demoClientFile(config: Config): string {
  return path.join(config.dataDir, 'demo', 'aggregator-client.json');
}

function secondClientFile(config: Config): string {
  return path.join(config.dataDir, 'demo', 'aggregator-client-2.json');
}

function signedClientFile(config: Config): string {
  return path.join(config.dataDir, 'demo', 'signed-aggregator-client.json');
}

function resourceServerClientFile(config: Config): string {
  return path.join(config.dataDir, 'demo', 'resource-server-client.json');
}

export function demoInstitutionClientFile(config: Config): string {
  return path.join(config.dataDir, 'demo', 'institution-client.json');
}

/** A fresh ES256 key: the public JWK for the client's metadata, the private one for its file. */
function newClientKey() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pub = publicKey.export({ format: 'jwk' }) as { kty: string };
  const kid = jwkThumbprint(pub);
  return {
    kid,
    publicJwk: { ...pub, kid, alg: 'ES256', use: 'sig' },
    privateJwk: { ...(privateKey.export({ format: 'jwk' }) as object), kid, alg: 'ES256', use: 'sig' },
  };
}

function writeSecretFile(file: string, secret: object): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${JSON.stringify(secret, null, 2)}\n`, { mode: 0o600 });
}

/**
 * Registers the demo brokerage's ingestion client unless it exists (a database seeded before it
 * was added gets it on the next start) and writes its private key to `file` (0600) only.
 */
async function ensureInstitutionClient(tx: Queryable, config: Config, file: string): Promise<void> {
  const key = newClientKey();
  const metadata = {
    client_id: DEMO_INSTITUTION_CLIENT_ID,
    client_name: 'かけはし証券 データ連携 (Demo institution feed)',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: INGEST_SCOPE,
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    dpop_bound_access_tokens: true,
    [INSTITUTION_ID_METADATA]: DEMO_INSTITUTION_ID,
    jwks: { keys: [key.publicJwk] },
  };
  const inserted = await tx.query(
    'INSERT INTO clients (client_id, metadata) VALUES ($1, $2) ON CONFLICT (client_id) DO NOTHING',
    [DEMO_INSTITUTION_CLIENT_ID, JSON.stringify(metadata)],
  );
  if (inserted.rowCount !== 1) return;
  writeSecretFile(file, {
    issuer: config.issuer,
    client_id: DEMO_INSTITUTION_CLIENT_ID,
    institution_id: DEMO_INSTITUTION_ID,
    scope: INGEST_SCOPE,
    resource: institutionResource(config.issuer),
    endpoint: `${config.issuer}/api/institution/v1/batches`,
    token_endpoint_auth_method: 'private_key_jwt',
    private_jwk: key.privateJwk,
  });
}

/**
 * Registers a private_key_jwt + DPoP client unless it exists, and then writes its private key to
 * `file` (0600) only. `extra` metadata goes on top (e.g. signed requests and JARM).
 */
async function createDemoClient(
  tx: Queryable,
  config: Config,
  clientId: string,
  name: string,
  file: string,
  extra: Record<string, unknown> = {},
): Promise<void> {
  const { publicJwk, privateJwk } = newClientKey();
  const redirectUri = `${config.issuer}/demo/callback`;
  const metadata = {
    client_id: clientId,
    client_name: name,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    scope: 'openid offline_access accounts grant_management_query grant_management_revoke',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    id_token_signed_response_alg: 'ES256',
    dpop_bound_access_tokens: true,
    require_pushed_authorization_requests: true,
    jwks: { keys: [publicJwk] },
    ...extra,
  };
  const inserted = await tx.query(
    'INSERT INTO clients (client_id, metadata) VALUES ($1, $2) ON CONFLICT (client_id) DO NOTHING',
    [clientId, JSON.stringify(metadata)],
  );
  if (inserted.rowCount !== 1) return;
  writeSecretFile(file, {
    issuer: config.issuer,
    client_id: clientId,
    redirect_uris: [redirectUri],
    scope: metadata.scope,
    token_endpoint_auth_method: 'private_key_jwt',
    private_jwk: privateJwk,
  });
}

/**
 * The Message Signing demo clients (added on the next start to a database seeded before them): an
 * aggregator registered for signed request objects and JARM, and the accounts API's resource-server
 * client, which may introspect.
 */
async function ensureMessageSigningClients(tx: Queryable, config: Config): Promise<void> {
  await createDemoClient(
    tx,
    config,
    DEMO_SIGNED_CLIENT_ID,
    'デモ署名付きアプリ (Demo signed-request PFM)',
    signedClientFile(config),
    { require_signed_request_object: true, response_modes: ['jwt', 'query.jwt', 'form_post.jwt'] },
  );
  const key = newClientKey();
  const inserted = await tx.query(
    'INSERT INTO clients (client_id, metadata) VALUES ($1, $2) ON CONFLICT (client_id) DO NOTHING',
    [
      DEMO_RESOURCE_SERVER_CLIENT_ID,
      JSON.stringify({
        client_id: DEMO_RESOURCE_SERVER_CLIENT_ID,
        client_name: 'かけはし口座API (Demo resource server)',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: 'ES256',
        introspection_signed_response_alg: 'ES256',
        dpop_bound_access_tokens: true,
        resource_server: true,
        jwks: { keys: [key.publicJwk] },
      }),
    ],
  );
  if (inserted.rowCount === 1)
    writeSecretFile(resourceServerClientFile(config), {
      issuer: config.issuer,
      client_id: DEMO_RESOURCE_SERVER_CLIENT_ID,
      redirect_uris: [],
      scope: '',
      introspection_endpoint: `${config.issuer}/token/introspection`,
      token_endpoint_auth_method: 'private_key_jwt',
      private_jwk: key.privateJwk,
    });
}

export async function seedDemo(db: Db, config: Config): Promise<DemoInfo> {
  const clientFile = demoClientFile(config);
  const institutionClientFile = demoInstitutionClientFile(config);
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [DEMO_LOCK_ID]);
    const existing = await tx.query<{ id: string }>(
      'SELECT id FROM customers WHERE institution_id = $1 AND customer_number = $2',
      [DEMO_INSTITUTION_ID, DEMO_CUSTOMER_NUMBER],
    );
    if (existing.rows[0]) {
      await ensureInstitutionClient(tx, config, institutionClientFile);
      await ensureMessageSigningClients(tx, config);
      return {
        customerId: existing.rows[0].id,
        customerNumber: DEMO_CUSTOMER_NUMBER,
        clientFile,
        institutionClientFile,
        created: false,
      };
    }
    const any = await tx.query('SELECT 1 FROM institutions LIMIT 1');
    if (any.rowCount > 0)
      throw new Error('demo mode needs an empty database (institutions exist); set KAKEHASHI_DEMO=false');

    const customerId = `cus_${randomBytes(12).toString('hex')}`;
    await tx.query(
      "INSERT INTO institutions (id, kind, name_ja, name_en) VALUES ($1, 'brokerage', 'かけはし証券', 'Kakehashi Securities')",
      [DEMO_INSTITUTION_ID],
    );
    await tx.query(
      `INSERT INTO customers (id, institution_id, customer_number, name_kanji, name_kana, birth_date)
       VALUES ($1, $2, $3, '山田 太郎', 'ヤマダ タロウ', '1980-04-01')`,
      [customerId, DEMO_INSTITUTION_ID, DEMO_CUSTOMER_NUMBER],
    );
    await tx.query(
      `INSERT INTO accounts (id, customer_id, institution_id, kind, tax_category, branch_code, account_number, nickname, opened_on) VALUES
       ($1, $3, $4, 'securities', 'specific', '001', '1234567', '特定口座', '2019-04-01'),
       ($2, $3, $4, 'securities', 'nisa', '001', '7654321', 'NISA口座', '2024-01-04')`,
      [
        `acc_${randomBytes(8).toString('hex')}`,
        `acc_${randomBytes(8).toString('hex')}`,
        customerId,
        DEMO_INSTITUTION_ID,
      ],
    );

    await createDemoClient(tx, config, DEMO_CLIENT_ID, 'デモ家計簿アプリ (Demo PFM)', clientFile);
    // A second aggregator, so that cross-client misuse (another client's code, request_uri, …) can be tried.
    await createDemoClient(
      tx,
      config,
      DEMO_CLIENT_ID_2,
      'デモ資産管理サービス (Demo Wealth)',
      secondClientFile(config),
    );
    await ensureInstitutionClient(tx, config, institutionClientFile);
    await ensureMessageSigningClients(tx, config);
    // Balances, holdings and transactions arrive through the same ingestion path institutions use.
    const accounts = await tx.query<{ id: string }>(
      'SELECT id FROM accounts WHERE customer_id = $1 ORDER BY opened_on',
      [customerId],
    );
    await ingestDemoLedger(
      tx,
      DEMO_INSTITUTION_ID,
      accounts.rows.map((r) => r.id),
    );
    return {
      customerId,
      customerNumber: DEMO_CUSTOMER_NUMBER,
      clientFile,
      institutionClientFile,
      created: true,
    };
  });
}
