/**
 * A browser without a browser: one cookie jar and manual redirects over a fetch that trusts the
 * hub's CA. Enough to drive the login/consent interaction pages over plain HTTP, as a real
 * browser would, without rendering anything. One user agent = one browser profile; start a new
 * one for a session-less login.
 */

export interface UaResponse {
  /** The URL this response answers (no redirect was followed to reach it). */
  url: URL;
  status: number;
  headers: Headers;
  /** The Location header resolved against `url`, for 3xx answers. */
  location: URL | undefined;
  text: string;
  /** The body parsed as JSON (throws when it is not JSON). */
  json<T = unknown>(): T;
}

export interface FollowResult {
  /** The last response received (a non-redirect, or the redirect whose target matched `stopAt`). */
  response: UaResponse;
  /** The redirect target that matched `stopAt`, not requested. */
  stoppedAt: URL | undefined;
  /** Every URL requested, in order. */
  visited: URL[];
}

export interface RequestInitLite {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
}

export interface UserAgent {
  /** One request, no redirect followed; cookies are sent and stored. */
  request(url: string | URL, init?: RequestInitLite): Promise<UaResponse>;
  get(url: string | URL): Promise<UaResponse>;
  postJson(url: string | URL, body: unknown): Promise<UaResponse>;
  postForm(url: string | URL, form: URLSearchParams | Record<string, string>): Promise<UaResponse>;
  /**
   * GETs `url` and follows redirects (always with GET, like a browser after a 303) until a
   * response is not a redirect, or a redirect points to a URL for which `stopAt` is true — that
   * URL is then returned without being requested (e.g. the client's redirect_uri).
   */
  follow(
    url: string | URL,
    options?: { stopAt?: (url: URL) => boolean; maxHops?: number },
  ): Promise<FollowResult>;
}

export interface UserAgentOptions {
  /** A fetch that trusts the hub's CA (undici with a dispatcher, or TestHub.fetch). */
  fetch: typeof globalThis.fetch;
  /** Sent as Accept-Language (the hub picks the page language from it). Default `en`. */
  language?: string;
  userAgent?: string;
  /** Sees every response (e.g. to assert the status of a redirect completeLogin followed). */
  onResponse?: (response: UaResponse) => void;
}

interface Cookie {
  name: string;
  value: string;
  host: string;
  path: string;
  /** Epoch ms; undefined for a session cookie. */
  expires: number | undefined;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** RFC 6265 §5.1.4 default-path of a request URL. */
function defaultPath(url: URL): string {
  const p = url.pathname;
  if (!p.startsWith('/') || p.lastIndexOf('/') === 0) return '/';
  return p.slice(0, p.lastIndexOf('/'));
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath.charAt(cookiePath.length) === '/';
}

function parseSetCookie(header: string, url: URL): Cookie | undefined {
  const [pair = '', ...attributes] = header.split(';');
  const eq = pair.indexOf('=');
  if (eq <= 0) return undefined;
  const cookie: Cookie = {
    name: pair.slice(0, eq).trim(),
    value: pair.slice(eq + 1).trim(),
    host: url.host,
    path: defaultPath(url),
    expires: undefined,
  };
  let maxAge: number | undefined;
  for (const attribute of attributes) {
    const i = attribute.indexOf('=');
    const key = (i < 0 ? attribute : attribute.slice(0, i)).trim().toLowerCase();
    const value = i < 0 ? '' : attribute.slice(i + 1).trim();
    if (key === 'path' && value.startsWith('/')) cookie.path = value;
    else if (key === 'max-age' && /^-?\d+$/.test(value)) maxAge = Number(value);
    else if (key === 'expires') {
      const t = Date.parse(value);
      if (!Number.isNaN(t)) cookie.expires = t;
    }
  }
  // Max-Age wins over Expires (RFC 6265 §5.3 step 3).
  if (maxAge !== undefined) cookie.expires = Date.now() + maxAge * 1000;
  return cookie;
}

export function createUserAgent(options: UserAgentOptions): UserAgent {
  const jar = new Map<string, Cookie>();
  const key = (c: Pick<Cookie, 'host' | 'path' | 'name'>) => `${c.host} ${c.path} ${c.name}`;

  function cookiesFor(url: URL): Cookie[] {
    const now = Date.now();
    const out: Cookie[] = [];
    for (const [k, c] of jar) {
      if (c.expires !== undefined && c.expires <= now) {
        jar.delete(k);
        continue;
      }
      if (c.host === url.host && pathMatches(url.pathname, c.path)) out.push(c);
    }
    // Longer paths first (RFC 6265 §5.4 step 2).
    return out.sort((a, b) => b.path.length - a.path.length);
  }

  function store(url: URL, headers: Headers): void {
    for (const line of headers.getSetCookie()) {
      const cookie = parseSetCookie(line, url);
      if (!cookie) continue;
      if (cookie.expires !== undefined && cookie.expires <= Date.now()) jar.delete(key(cookie));
      else jar.set(key(cookie), cookie);
    }
  }

  async function request(target: string | URL, init: RequestInitLite = {}): Promise<UaResponse> {
    const url = new URL(target);
    const headers: Record<string, string> = {
      accept: 'text/html,application/json;q=0.9,*/*;q=0.8',
      'accept-language': options.language ?? 'en',
      'user-agent': options.userAgent ?? 'kakehashi-conformance/1 (browserless)',
      ...init.headers,
    };
    const cookies = cookiesFor(url);
    if (cookies.length) headers.cookie = cookies.map((c) => `${c.name}=${c.value}`).join('; ');
    const res = await options.fetch(url, {
      method: init.method ?? 'GET',
      headers,
      ...(init.body !== undefined ? { body: init.body } : {}),
      redirect: 'manual',
    });
    store(url, res.headers);
    const text = await res.text();
    const loc = res.headers.get('location');
    const response: UaResponse = {
      url,
      status: res.status,
      headers: res.headers,
      location: loc && REDIRECTS.has(res.status) ? new URL(loc, url) : undefined,
      text,
      json<T>() {
        return JSON.parse(text) as T;
      },
    };
    options.onResponse?.(response);
    return response;
  }

  return {
    request,
    get: (url) => request(url),
    postJson: (url, body) =>
      request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(body),
      }),
    postForm: (url, form) =>
      request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: (form instanceof URLSearchParams ? form : new URLSearchParams(form)).toString(),
      }),
    async follow(url, { stopAt, maxHops = 10 } = {}) {
      const visited: URL[] = [];
      let next = new URL(url);
      for (let hop = 0; hop <= maxHops; hop++) {
        visited.push(next);
        const response = await request(next);
        if (!response.location) return { response, stoppedAt: undefined, visited };
        if (stopAt?.(response.location)) return { response, stoppedAt: response.location, visited };
        next = response.location;
      }
      throw new Error(`more than ${maxHops} redirects starting at ${new URL(url).pathname}`);
    },
  };
}
