/**
 * Pagination cursors: the position of a page (a keyset key) plus the query it belongs to, as
 * base64url JSON with an HMAC-SHA256 tag. The tag makes them tamper-evident, and binding them to
 * the consent (grant) and resource keeps one client's cursors useless to another. The MAC is the
 * hub's cookie signer (shared keys: every node accepts every node's cursors; the newest key signs,
 * all verify, so a rotation does not break pages in flight). Cursor data has no '=', cookie data
 * (`name=value`) always has one: neither signature can pass for the other.
 */
import { z } from 'zod';

const cursorSchema = z.strictObject({
  /** Version of this format. */
  v: z.literal(1),
  /** The resource listed: 'transactions' or 'holdings'. */
  r: z.enum(['transactions', 'holdings']),
  /** The grant (consent) the cursor was issued under. */
  g: z.string(),
  /** The account, or null for the bulk list across consented accounts. */
  a: z.string().nullable(),
  /** next: rows after k in list order; prev: rows before k. */
  d: z.enum(['next', 'prev']),
  /** The keyset key of the boundary row. */
  k: z.tuple([z.string(), z.string()]),
  /** Page size. */
  n: z.number().int().min(1).max(10_000),
  /** Filters of the query (transactions: booking date-time bounds as given). */
  f: z.string().optional(),
  t: z.string().optional(),
});

export type Cursor = z.infer<typeof cursorSchema>;

/** A Keygrip-like MAC (src/http/CookieSigner, which oidc-provider and koa also use). */
export interface MacSigner {
  sign(data: string): string;
  verify(data: string, digest: string): boolean;
}

const DOMAIN = 'kakehashi/api-cursor/v1:';
/** Far above any cursor we issue; bounds the work spent on junk. */
const MAX_LENGTH = 2048;

export interface CursorCodec {
  encode(c: Cursor): string;
  /** The cursor, or undefined when it is malformed, forged or altered. */
  decode(token: string): Cursor | undefined;
}

export function createCursorCodec(signer: MacSigner): CursorCodec {
  return {
    encode(c) {
      const payload = Buffer.from(JSON.stringify(c)).toString('base64url');
      return `${payload}.${signer.sign(DOMAIN + payload)}`;
    },
    decode(token) {
      if (token.length > MAX_LENGTH) return undefined;
      const dot = token.indexOf('.');
      if (dot <= 0) return undefined;
      const payload = token.slice(0, dot);
      if (!/^[A-Za-z0-9_-]+$/.test(payload) || !signer.verify(DOMAIN + payload, token.slice(dot + 1)))
        return undefined;
      try {
        const parsed = cursorSchema.safeParse(JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')));
        return parsed.success ? parsed.data : undefined;
      } catch {
        return undefined;
      }
    },
  };
}
