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
  const text = await readBodyText(ctx, limit);
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

/**
 * The body as text, never more than `limit` bytes. Over the limit the rest is left unread and the
 * connection closes after the answer: leaving a `for await` loop early would destroy the request, and
 * with it the socket the answer (and the audit record's address) still needs.
 */
export function readBodyText(ctx: Context, limit: number): Promise<string> {
  const tooLarge = () => {
    ctx.set('connection', 'close');
    return new BodyError('ERR_BODY_TOO_LARGE', 413, 'request body too large');
  };
  if (Number(ctx.get('content-length') || 0) > limit) return Promise.reject(tooLarge());
  const req = ctx.req;
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err?: BodyError) => {
      req.off('data', onData).off('end', onEnd).off('error', onError).off('aborted', onAborted);
      if (err) reject(err);
      else resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
      else {
        req.pause();
        done(tooLarge());
      }
    };
    const onEnd = () => done();
    const onError = () => done(new BodyError('ERR_BODY_PARSE', 400, 'the request body could not be read'));
    const onAborted = () => done(new BodyError('ERR_BODY_PARSE', 400, 'the request was aborted'));
    req.on('data', onData).on('end', onEnd).on('error', onError).on('aborted', onAborted);
  });
}
