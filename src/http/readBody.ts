import type { Context } from 'koa';

export class BodyError extends Error {
  override name = 'BodyError';
  readonly code: 'ERR_BODY_TOO_LARGE' | 'ERR_BODY_TYPE' | 'ERR_BODY_PARSE';
  readonly status: number;
  constructor(code: BodyError['code'], status: number, message: string) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

/**
 * Reads a small request body as JSON or as a form. Anything else, anything larger than `limit`
 * bytes, or anything that does not parse is a BodyError (a 4xx), never a 500.
 */
export async function readBody(
  ctx: Context,
  accept: 'json',
  limit?: number,
): Promise<Record<string, unknown>>;
export async function readBody(ctx: Context, accept: 'form', limit?: number): Promise<URLSearchParams>;
export async function readBody(
  ctx: Context,
  accept: 'json' | 'form',
  limit = 64 * 1024,
): Promise<Record<string, unknown> | URLSearchParams> {
  const type = ctx.request.type;
  const expected = accept === 'json' ? 'application/json' : 'application/x-www-form-urlencoded';
  if (type !== expected) throw new BodyError('ERR_BODY_TYPE', 415, `expected ${expected}`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new BodyError('ERR_BODY_TOO_LARGE', 413, 'request body too large');
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (accept === 'form') return new URLSearchParams(text);
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new Error('not an object');
    return parsed as Record<string, unknown>;
  } catch {
    throw new BodyError('ERR_BODY_PARSE', 400, 'request body is not a JSON object');
  }
}
