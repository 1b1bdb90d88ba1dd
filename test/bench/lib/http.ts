/**
 * The generator's HTTP layer: one keep-alive undici Client (one TLS connection) per virtual user,
 * trusting the hub's dev CA, addressing 127.0.0.1 with the issuer's Host header; plus a minimal
 * per-flow cookie jar (name + path, as a browser scopes oidc-provider's interaction cookies).
 */
import { Client } from 'undici';

export interface Target {
  /** https://127.0.0.1:<port>: where the bytes go. */
  connectOrigin: string;
  /** The issuer (https://localhost:<port>), sent as Host and used in URLs the hub checks. */
  issuer: string;
  host: string;
  caPem: string;
}

/** TLS connections the generator opened so far (a phase should open none: keep-alive throughout). */
export const connectionStats = { opened: 0 };

export function connection(target: Target): Client {
  const client = new Client(target.connectOrigin, {
    connect: { ca: target.caPem, servername: 'localhost' },
    keepAliveTimeout: 60_000,
    keepAliveMaxTimeout: 120_000,
    pipelining: 1,
  });
  client.on('connect', () => {
    connectionStats.opened += 1;
  });
  return client;
}

export class UnexpectedResponse extends Error {
  override name = 'UnexpectedResponse';
  readonly code = 'ERR_BENCH_RESPONSE';
  readonly status: number;
  readonly step: string;
  constructor(step: string, status: number, body: string) {
    super(`${step}: HTTP ${status} ${body.slice(0, 300)}`);
    this.step = step;
    this.status = status;
  }
}

export interface Response {
  status: number;
  location: string | undefined;
  setCookie: string | string[] | undefined;
  text: string | undefined;
}

/**
 * One request. The body is read as text only when `read` is true (JSON we need); otherwise it is
 * drained without decoding. Throws UnexpectedResponse when the status is not `expect`.
 */
export async function request(
  client: Client,
  step: string,
  expect: number,
  method: 'GET' | 'POST',
  path: string,
  headers: Record<string, string>,
  body: string | undefined,
  read: boolean,
): Promise<Response> {
  const res = await client.request({ method, path, headers, body: body ?? null });
  if (res.statusCode !== expect) {
    const text = await res.body.text();
    throw new UnexpectedResponse(step, res.statusCode, text);
  }
  let text: string | undefined;
  if (read) text = await res.body.text();
  else await res.body.dump();
  const loc = res.headers.location;
  return {
    status: res.statusCode,
    location: typeof loc === 'string' ? loc : undefined,
    setCookie: res.headers['set-cookie'],
    text,
  };
}

interface Cookie {
  name: string;
  path: string;
  value: string;
}

/** A browser profile's cookies for one host: enough RFC 6265 for oidc-provider's path-scoped cookies. */
export class CookieJar {
  #cookies: Cookie[] = [];

  store(setCookie: string | string[] | undefined): void {
    if (setCookie === undefined) return;
    for (const line of typeof setCookie === 'string' ? [setCookie] : setCookie) this.#storeOne(line);
  }

  #storeOne(line: string): void {
    const semi = line.indexOf(';');
    const pair = semi < 0 ? line : line.slice(0, semi);
    const eq = pair.indexOf('=');
    if (eq <= 0) return;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    let path = '/';
    let expired = false;
    if (semi >= 0) {
      for (const attr of line.slice(semi + 1).split(';')) {
        const i = attr.indexOf('=');
        const k = (i < 0 ? attr : attr.slice(0, i)).trim().toLowerCase();
        const v = i < 0 ? '' : attr.slice(i + 1).trim();
        if (k === 'path') path = v || '/';
        else if (k === 'expires') expired = Date.parse(v) <= Date.now();
        else if (k === 'max-age') expired = Number(v) <= 0;
      }
    }
    this.#cookies = this.#cookies.filter((c) => !(c.name === name && c.path === path));
    if (!expired) this.#cookies.push({ name, path, value });
  }

  /** The Cookie header for a request path, longest paths first, or undefined. */
  header(requestPath: string): string | undefined {
    const q = requestPath.indexOf('?');
    const p = q < 0 ? requestPath : requestPath.slice(0, q);
    const matching = this.#cookies.filter(
      (c) =>
        p === c.path || (p.startsWith(c.path) && (c.path.endsWith('/') || p.charAt(c.path.length) === '/')),
    );
    if (matching.length === 0) return undefined;
    matching.sort((a, b) => b.path.length - a.path.length);
    return matching.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}
