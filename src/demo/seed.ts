/**
 * Demo mode: on an empty database, a demo brokerage, a customer with two securities accounts and
 * an aggregator client (private_key_jwt + DPoP). The client's private key is written only to
 * <dataDir>/demo/aggregator-client.json (0600), never to the database or the log.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/index.ts';
import type { Db, Queryable } from '../db/index.ts';
import { jwkThumbprint } from '../keys/index.ts';
import { ingestDemoLedger } from '../ledger/index.ts';

export const DEMO_INSTITUTION_ID = 'demo-securities';
export const DEMO_CUSTOMER_NUMBER = '10000001';
export const DEMO_CLIENT_ID = 'demo-aggregator';
export const DEMO_CLIENT_ID_2 = 'demo-aggregator-2';
const DEMO_LOCK_ID = 0x64656d6f;

export interface DemoInfo {
  customerId: string;
  customerNumber: string;
  clientFile: string;
  /** True when this start created the demo data. */
  created: boolean;
}

export function demoClientFile(config: Config): string {
  return path.join(config.dataDir, 'demo', 'aggregator-client.json');
}

function secondClientFile(config: Config): string {
  return path.join(config.dataDir, 'demo', 'aggregator-client-2.json');
}

/** Registers a private_key_jwt + DPoP client and writes its private key to `file` (0600) only. */
async function createDemoClient(
  tx: Queryable,
  config: Config,
  clientId: string,
  name: string,
  file: string,
): Promise<void> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pub = publicKey.export({ format: 'jwk' }) as { kty: string };
  const kid = jwkThumbprint(pub);
  const redirectUri = `${config.issuer}/demo/callback`;
  const metadata = {
    client_id: clientId,
    client_name: name,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    scope: 'openid offline_access accounts',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    id_token_signed_response_alg: 'ES256',
    dpop_bound_access_tokens: true,
    require_pushed_authorization_requests: true,
    jwks: { keys: [{ ...pub, kid, alg: 'ES256', use: 'sig' }] },
  };
  await tx.query('INSERT INTO clients (client_id, metadata) VALUES ($1, $2)', [
    clientId,
    JSON.stringify(metadata),
  ]);
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const secret = {
    issuer: config.issuer,
    client_id: clientId,
    redirect_uris: [redirectUri],
    scope: metadata.scope,
    token_endpoint_auth_method: 'private_key_jwt',
    private_jwk: { ...(privateKey.export({ format: 'jwk' }) as object), kid, alg: 'ES256', use: 'sig' },
  };
  writeFileSync(file, `${JSON.stringify(secret, null, 2)}\n`, { mode: 0o600 });
}

export async function seedDemo(db: Db, config: Config): Promise<DemoInfo> {
  const clientFile = demoClientFile(config);
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [DEMO_LOCK_ID]);
    const existing = await tx.query<{ id: string }>(
      'SELECT id FROM customers WHERE institution_id = $1 AND customer_number = $2',
      [DEMO_INSTITUTION_ID, DEMO_CUSTOMER_NUMBER],
    );
    if (existing.rows[0])
      return {
        customerId: existing.rows[0].id,
        customerNumber: DEMO_CUSTOMER_NUMBER,
        clientFile,
        created: false,
      };
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
    return { customerId, customerNumber: DEMO_CUSTOMER_NUMBER, clientFile, created: true };
  });
}
