/**
 * Re-sealing everything sealed at rest with the configured key-encryption key, after a KEK rotation
 * (docs/key-rotation.md). One transaction: either every value is sealed with the new KEK or nothing
 * changed.
 */
import { recordAudit } from '../audit/index.ts';
import type { Db } from '../db/index.ts';
import { decryptAtRest, encryptAtRest, opensWith } from './atRest.ts';
import { KeyError } from './errors.ts';
import { KEYS_LOCK_ID } from './material.ts';

/**
 * Every column sealed with encryptAtRest, with the context (AAD) its module seals it under. A module
 * that seals a new column must add it here; test/integration/key-rotation.test.ts checks that every
 * `*_enc` column of the schema is listed.
 */
export const SEALED_COLUMNS = [
  { table: 'signing_keys', column: 'private_jwk_enc', id: 'kid', context: (id: string) => id },
  { table: 'secrets', column: 'value_enc', id: 'name', context: (id: string) => id },
  { table: 'ssf_keys', column: 'private_jwk_enc', id: 'kid', context: (id: string) => id },
  {
    table: 'ssf_streams',
    column: 'authorization_header_enc',
    id: 'stream_id',
    context: (id: string) => `ssf-push-auth:${id}`,
  },
  {
    table: 'notify_channels',
    column: 'address_enc',
    id: 'id',
    context: (id: string) => `notify-channel:${id}`,
  },
  {
    table: 'totp_credentials',
    column: 'secret_enc',
    id: 'customer_id',
    context: (id: string) => `totp:${id}`,
  },
  { table: 'bank_link_attempts', column: 'secrets_enc', id: 'id', context: (id: string) => id },
] as const;

export interface RekeyResult {
  /** Values re-sealed per table.column. */
  resealed: Record<string, number>;
  /** Values that were already sealed with the configured KEK. */
  unchanged: number;
}

/**
 * Opens every sealed value with `kek` or one of its additional KEKs and seals it again with `kek`.
 * A value no known KEK opens aborts the whole run (KeyError ERR_KEY_DECRYPT, naming the row).
 */
export async function rekeyAtRest(db: Db, kek: Buffer, actor: string): Promise<RekeyResult> {
  return db.transaction(async (tx) => {
    // Key generation and rotation take this lock too: no key is added while the rekey runs.
    await tx.query('SELECT pg_advisory_xact_lock($1)', [KEYS_LOCK_ID]);
    const result: RekeyResult = { resealed: {}, unchanged: 0 };
    for (const { table, column, id, context } of SEALED_COLUMNS) {
      // Erased values (retired signing keys) and absent ones (push streams without a header) stay.
      const rows = await tx.query<{ id: string; sealed: string }>(
        `SELECT ${id} AS id, ${column} AS sealed FROM ${table}
         WHERE ${column} IS NOT NULL AND ${column} <> '' FOR UPDATE`,
      );
      let n = 0;
      for (const row of rows.rows) {
        const aad = context(row.id);
        if (opensWith(kek, row.sealed, aad)) {
          result.unchanged++;
          continue;
        }
        let plain: string;
        try {
          plain = decryptAtRest(kek, row.sealed, aad);
        } catch (err) {
          throw new KeyError(
            'ERR_KEY_DECRYPT',
            `${table}.${column} of ${row.id}: no configured key-encryption key opens it; nothing was changed`,
            { cause: err },
          );
        }
        await tx.query(`UPDATE ${table} SET ${column} = $1 WHERE ${id} = $2`, [
          encryptAtRest(kek, plain, aad),
          row.id,
        ]);
        n++;
      }
      if (n) result.resealed[`${table}.${column}`] = n;
    }
    await recordAudit(tx, {
      type: 'keys.rekeyed',
      outcome: 'info',
      actor,
      data: { resealed: result.resealed, unchanged: result.unchanged },
    });
    return result;
  });
}
