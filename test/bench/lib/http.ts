/**
 * The generator's HTTP layer: one keep-alive HTTP/1.1 connection over TLS per virtual user, trusting
 * the hub's dev CA, addressing 127.0.0.1 with the issuer's Host header; plus a minimal per-flow cookie
 * jar (name + path, as a browser scopes oidc-provider's interaction cookies).
 *
 * The connection is a small hand-written HTTP/1.1 client (one request at a time, Content-Length or
 * chunked bodies) rather than undici: the generator shares the two cores with the hub and Postgres,
 * and undici's per-request machinery cost about as much CPU as a whole read costs Postgres — CPU the
 * hub then could not use. What it sends is ordinary HTTP/1.1; the hub parses it with node:http.
 */
import { connect, type TLSSocket } from 'node:tls';

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

interface Pending {
  resolve: (r: RawResponse) => void;
  reject: (e: Error) => void;
}

interface RawResponse {
  statusCode: number;
  /** Lower-case names; set-cookie as a list, others joined by ', '. */
  headers: Record<string, string | string[]>;
  body: Buffer;
}

const CRLF2 = Buffer.from('\r\n\r\n');

/** One keep-alive HTTPS connection, opened on first use and reopened if the hub closes it. */
export class Connection {
  readonly #target: Target;
  readonly #port: number;
  #socket: TLSSocket | undefined;
  #buffer: Buffer = Buffer.alloc(0);
  #pending: Pending | undefined;

  constructor(target: Target) {
    this.#target = target;
    this.#port = Number(new URL(target.connectOrigin).port || 443);
  }

  request(o: {
    method: string;
    path: string;
    headers: Record<string, string>;
    body: string | null;
  }): Promise<RawResponse> {
    if (this.#pending) return Promise.reject(new Error('one request at a time per connection'));
    const socket = this.#open();
    const body = o.body === null ? undefined : Buffer.from(o.body);
    let head = `${o.method} ${o.path} HTTP/1.1\r\n`;
    let hasHost = false;
    for (const [k, v] of Object.entries(o.headers)) {
      if (k.toLowerCase() === 'host') hasHost = true;
      head += `${k}: ${v}\r\n`;
    }
    if (!hasHost) head += `host: ${this.#target.host}\r\n`;
    if (body !== undefined) head += `content-length: ${body.length}\r\n`;
    head += '\r\n';
    return new Promise<RawResponse>((resolve, reject) => {
      this.#pending = { resolve, reject };
      socket.write(body === undefined ? head : Buffer.concat([Buffer.from(head, 'latin1'), body]));
    });
  }

  destroy(): Promise<void> {
    this.#socket?.destroy();
    this.#socket = undefined;
    return Promise.resolve();
  }

  #open(): TLSSocket {
    if (this.#socket && !this.#socket.destroyed) return this.#socket;
    this.#buffer = Buffer.alloc(0);
    const socket = connect({
      host: '127.0.0.1',
      port: this.#port,
      ca: this.#target.caPem,
      servername: 'localhost',
    });
    socket.setNoDelay(true);
    socket.on('secureConnect', () => {
      connectionStats.opened += 1;
    });
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#parse();
    });
    const fail = (err: Error) => {
      if (this.#socket === socket) this.#socket = undefined;
      const p = this.#pending;
      this.#pending = undefined;
      p?.reject(err);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed by the hub')));
    this.#socket = socket;
    return socket;
  }

  /** Completes the pending request once its whole response is buffered. */
  #parse(): void {
    const p = this.#pending;
    if (!p) return;
    const end = this.#buffer.indexOf(CRLF2);
    if (end < 0) return;
    const lines = this.#buffer.toString('latin1', 0, end).split('\r\n');
    const statusCode = Number(lines[0]!.split(' ')[1]);
    const headers: Record<string, string | string[]> = {};
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const c = line.indexOf(':');
      const name = line.slice(0, c).trim().toLowerCase();
      const value = line.slice(c + 1).trim();
      const seen = headers[name];
      if (name === 'set-cookie') headers[name] = [...((seen as string[] | undefined) ?? []), value];
      else headers[name] = headers[name] === undefined ? value : `${headers[name] as string}, ${value}`;
    }
    let start = end + 4;
    let body: Buffer;
    if (headers['transfer-encoding'] === 'chunked') {
      const parts: Buffer[] = [];
      for (;;) {
        const eol = this.#buffer.indexOf('\r\n', start);
        if (eol < 0) return;
        const size = Number.parseInt(this.#buffer.toString('latin1', start, eol), 16);
        if (this.#buffer.length < eol + 2 + size + 2) return;
        if (size === 0) {
          // Trailers are not used by the hub: the chunked body ends with 0\r\n\r\n.
          start = eol + 4;
          break;
        }
        parts.push(this.#buffer.subarray(eol + 2, eol + 2 + size));
        start = eol + 2 + size + 2;
      }
      body = Buffer.concat(parts);
    } else {
      const length = statusCode === 304 || statusCode === 204 ? 0 : Number(headers['content-length'] ?? 0);
      if (this.#buffer.length < start + length) return;
      body = this.#buffer.subarray(start, start + length);
      start += length;
    }
    this.#buffer = this.#buffer.subarray(start);
    this.#pending = undefined;
    if (headers.connection === 'close') this.destroy();
    p.resolve({ statusCode, headers, body });
  }
}

export function connection(target: Target): Connection {
  return new Connection(target);
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
 * left undecoded. Throws UnexpectedResponse when the status is not `expect`.
 */
export async function request(
  client: Connection,
  step: string,
  expect: number,
  method: 'GET' | 'POST',
  path: string,
  headers: Record<string, string>,
  body: string | undefined,
  read: boolean,
): Promise<Response> {
  const res = await client.request({ method, path, headers, body: body ?? null });
  if (res.statusCode !== expect)
    throw new UnexpectedResponse(step, res.statusCode, res.body.toString('utf8'));
  const text = read ? res.body.toString('utf8') : undefined;
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
