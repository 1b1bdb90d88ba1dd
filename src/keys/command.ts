/**
 * `kakehashi keys …`: list, rotate, rekey (docs/key-rotation.md), rotate-rp / promote-rp (the
 * bank-federation signing key, docs/rp-and-operations-review.md). Separate from src/main.ts so that
 * tests run it against a live hub's database.
 */
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/index.ts';
import type { Db } from '../db/index.ts';
import { FederationError, promoteRpKey, stageRpKey } from '../federation/index.ts';
import { loadKeyEncryptionKey } from './atRest.ts';
import { KeyError } from './errors.ts';
import { isSigningAlg, listSigningKeys, rotateSigningKeys } from './lifecycle.ts';
import { loadKeyMaterial, SIGNING_ALGS, type SigningAlg } from './material.ts';
import { rekeyAtRest } from './rekey.ts';

export const KEYS_USAGE = `usage: keys [list] | keys jwks | keys rotate [--alg ES256|PS256|EdDSA] [--activate-after SECONDS]
       | keys rekey | keys new-kek | keys rotate-rp | keys promote-rp`;

export interface KeysCommandOptions {
  db: Db;
  config: Config;
  args: string[];
  /** --alg (repeatable) */
  algs?: string[] | undefined;
  /** --activate-after: seconds before the new key signs (default keys.activateAfterSeconds). */
  activateAfter?: string | undefined;
  operator: string;
  out?: (line: string) => void;
  err?: (line: string) => void;
}

/** `keys new-kek` needs no database. */
export function newKeyEncryptionKey(): string {
  return randomBytes(32).toString('base64url');
}

/** Runs one keys subcommand; returns the exit code (2 with a message for a KEK that opens nothing, or a sealed key it does not open). */
export async function runKeysCommand(o: KeysCommandOptions): Promise<number> {
  const err = o.err ?? ((line: string) => console.error(line));
  try {
    return await run(o, o.out ?? ((line: string) => console.log(line)), err);
  } catch (e) {
    // A bank-federation key that does not open (rotate-rp, promote-rp) is the same operator matter.
    // So is a rotate-rp that would unpublish a key a node may still sign with.
    const federation =
      e instanceof FederationError && (e.code === 'ERR_RP_KEY' || e.code === 'ERR_RP_KEY_IN_USE');
    if (!(e instanceof KeyError) && !federation) throw e;
    err(`refused: ${e.message}`);
    return 2;
  }
}

async function run(
  o: KeysCommandOptions,
  out: (line: string) => void,
  err: (line: string) => void,
): Promise<number> {
  const [action = 'list'] = o.args;
  if (action === 'list') {
    // Makes sure the keys exist (first start) before listing them.
    await loadKeyMaterial(o.db, loadKeyEncryptionKey(o.config));
    const rows = await listSigningKeys(o.db);
    out('status    alg    kid                                          signs from / left at');
    for (const k of rows) {
      const when =
        k.status === 'next'
          ? `signs from ${k.activatedAt?.toISOString()}`
          : k.status === 'current'
            ? `signing since ${k.activatedAt?.toISOString()}`
            : k.status === 'previous'
              ? `published until ${k.retiredAt?.toISOString()}`
              : `retired ${k.retiredAt?.toISOString()}`;
      out(`${k.status.padEnd(9)} ${k.alg.padEnd(6)} ${k.kid.padEnd(44)} ${when}`);
    }
    return 0;
  }
  if (action === 'jwks') {
    const keys = await loadKeyMaterial(o.db, loadKeyEncryptionKey(o.config));
    out(JSON.stringify(keys.publicJwks, null, 2));
    return 0;
  }
  if (action === 'rotate') {
    const algs = o.algs ?? [];
    const unknown = algs.filter((a) => !isSigningAlg(a));
    if (unknown.length) {
      err(`unknown --alg ${unknown.join(', ')}; one of ${SIGNING_ALGS.join(', ')}`);
      return 2;
    }
    let activateAfterSeconds = o.config.keys.activateAfterSeconds;
    if (o.activateAfter !== undefined) {
      if (!/^\d{1,8}$/.test(o.activateAfter)) {
        err('--activate-after must be a number of seconds');
        return 2;
      }
      activateAfterSeconds = Number(o.activateAfter);
    }
    const kek = loadKeyEncryptionKey(o.config);
    await loadKeyMaterial(o.db, kek);
    const results = await rotateSigningKeys(o.db, kek, {
      algs: algs as SigningAlg[],
      activateAfterSeconds,
      actor: o.operator,
    });
    for (const r of results)
      out(
        `${r.alg}: ${r.created ? 'new key' : 'key already waiting'} ${r.kid} is published now as next and signs from ${r.activatesAt.toISOString()}`,
      );
    out(
      'every node picks the change up within keys.pollSeconds; the replaced key stays published until what it signed has expired',
    );
    return 0;
  }
  if (action === 'rekey') {
    const r = await rekeyAtRest(o.db, loadKeyEncryptionKey(o.config), o.operator);
    const total = Object.values(r.resealed).reduce((a, b) => a + b, 0);
    out(
      `${total} sealed values re-sealed with the configured key-encryption key, ${r.unchanged} already were`,
    );
    for (const [where, n] of Object.entries(r.resealed)) out(`  ${where}: ${n}`);
    if (o.config.additionalKeyEncryptionKeys.length)
      out(
        'once every node runs with this configuration, remove additionalKeyEncryptionKeys and restart them',
      );
    return 0;
  }
  // The bank-federation signing key (src/federation/rpKey.ts): staged, then promoted by an operator.
  if (action === 'rotate-rp') {
    const r = await stageRpKey(o.db, loadKeyEncryptionKey(o.config), o.operator, {
      pollSeconds: o.config.keys.pollSeconds,
    });
    if (r.replacedMissing) {
      out(
        `the signing key was missing: ${r.created ? 'new key' : 'the waiting key'} ${r.kid} signs from now on (every node within keys.pollSeconds); banks must register it (published at /federation/jwks.json)`,
      );
      return 0;
    }
    out(
      `${r.created ? 'new key' : 'key already waiting'} ${r.kid} is published now at /federation/jwks.json as next; once every bank trusts it, run keys promote-rp`,
    );
    return 0;
  }
  if (action === 'promote-rp') {
    const r = await promoteRpKey(o.db, loadKeyEncryptionKey(o.config), o.operator);
    if (!r) {
      err('no next key is waiting; run keys rotate-rp first');
      return 2;
    }
    out(
      `${r.kid} signs from now on (every node within keys.pollSeconds); ${r.previousKid} stays published as previous until the next rotate-rp`,
    );
    return 0;
  }
  if (action === 'new-kek') {
    out(newKeyEncryptionKey());
    return 0;
  }
  err(KEYS_USAGE);
  return 2;
}
