/**
 * Checklist group "Transport" (checked where the hub terminates TLS): TLS 1.2 or later only, with
 * the BCP 195 / FAPI 2.0 §5.2.1 cipher suites on TLS 1.2, on the main listener and — in the variants
 * that use it — the mTLS listener; HSTS on the browser-facing endpoints; the session and interaction
 * cookies Secure and HttpOnly. (Moved here from test/integration/hub-http.test.ts, which keeps the
 * headers every response carries.)
 */
import { type ConnectionOptions, connect } from 'node:tls';
import type { CheckContext } from '../lib/context.ts';
import { check } from '../lib/expect.ts';
import { type Check, usesMtls } from '../lib/types.ts';

const GROUP = 'Transport';
/** FAPI 2.0 §5.2.1 / BCP 195: TLS 1.2 with these suites only (TLS 1.3 suites are all acceptable). */
const FAPI_TLS12_SUITE = /^ECDHE-(ECDSA|RSA)-AES(128|256)-GCM-SHA(256|384)$/;
/** At least a year (a long max-age, as BCP 195 and the HSTS preload list ask). */
const HSTS = /max-age=(\d+)/i;
const YEAR = 31_536_000;

interface TlsEndpoint {
  host: string;
  port: number;
  servername: string;
  ca?: string;
}

/** A TLS handshake with the given client options: `TLSv1.3 TLS_AES_…`, or 'refused'. */
export function tlsHandshake(endpoint: TlsEndpoint, options: ConnectionOptions): Promise<string> {
  return new Promise<string>((resolve) => {
    const socket = connect({
      host: endpoint.host,
      port: endpoint.port,
      servername: endpoint.servername,
      ...(endpoint.ca ? { ca: endpoint.ca } : {}),
      ...options,
    });
    socket.setTimeout(5000, () => {
      socket.destroy();
      resolve('refused');
    });
    socket.once('secureConnect', () => {
      resolve(`${socket.getProtocol()} ${socket.getCipher().name}`);
      socket.end();
    });
    socket.once('error', () => resolve('refused'));
  });
}

function endpoints(ctx: CheckContext): { name: string; endpoint: TlsEndpoint }[] {
  const main = ctx.target.tls ?? ctx.notApplicable('the TLS endpoint of this hub is not known');
  const out = [{ name: 'main listener', endpoint: main }];
  if (usesMtls(ctx.variant))
    out.push({ name: 'mTLS listener', endpoint: { ...main, ...ctx.mtls().listener } });
  return out;
}

function hsts(res: Response, where: string): void {
  const value = res.headers.get('strict-transport-security') ?? '';
  const maxAge = Number(HSTS.exec(value)?.[1] ?? 0);
  check(maxAge >= YEAR, `${where}: Strict-Transport-Security "${value}" (want max-age ≥ ${YEAR})`);
}

export const transportChecks: Check[] = [
  {
    group: GROUP,
    id: 'transport-tls13',
    title: 'TLS 1.3 handshake',
    expect: 'accept',
    async run(ctx) {
      for (const { name, endpoint } of endpoints(ctx)) {
        const got = await tlsHandshake(endpoint, {});
        check(/^TLSv1\.3 /.test(got), `${name}: ${got}`);
      }
    },
  },
  {
    group: GROUP,
    id: 'transport-tls12-fapi-suite',
    title: 'TLS 1.2 handshake negotiates a FAPI (ECDHE + AES-GCM) cipher suite',
    expect: 'accept',
    async run(ctx) {
      for (const { name, endpoint } of endpoints(ctx)) {
        const got = await tlsHandshake(endpoint, { maxVersion: 'TLSv1.2' });
        const [version, suite] = got.split(' ');
        check(version === 'TLSv1.2' && FAPI_TLS12_SUITE.test(suite ?? ''), `${name}: ${got}`);
      }
    },
  },
  {
    group: GROUP,
    id: 'transport-tls10-11-refused',
    title: 'TLS 1.0 and 1.1 handshakes refused',
    expect: 'fail',
    async run(ctx) {
      for (const { name, endpoint } of endpoints(ctx))
        for (const v of ['TLSv1', 'TLSv1.1'] as const) {
          const got = await tlsHandshake(endpoint, {
            minVersion: v,
            maxVersion: v,
            // OpenSSL 3 keeps TLS < 1.2 at security level 0 only; the server must be what refuses.
            ciphers: 'DEFAULT@SECLEVEL=0',
          });
          check(got === 'refused', `${name}: a ${v} handshake succeeded (${got})`);
        }
    },
  },
  {
    group: GROUP,
    id: 'transport-tls12-weak-suites-refused',
    title: 'TLS 1.2 without forward secrecy or AEAD (AES128-SHA256, ECDHE-RSA-AES128-SHA) refused',
    expect: 'fail',
    async run(ctx) {
      for (const { name, endpoint } of endpoints(ctx))
        for (const ciphers of ['AES128-SHA256', 'ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA']) {
          const got = await tlsHandshake(endpoint, { maxVersion: 'TLSv1.2', ciphers });
          check(got === 'refused', `${name}: TLS 1.2 with ${ciphers} succeeded (${got})`);
        }
    },
  },
  {
    group: GROUP,
    id: 'transport-hsts',
    title: 'HSTS (max-age ≥ 1 year) on discovery, the authorization endpoint and the login page',
    expect: 'accept',
    async run(ctx) {
      const discovery = await ctx.target.fetch(`${ctx.issuer}/.well-known/openid-configuration`);
      await discovery.arrayBuffer();
      hsts(discovery, 'discovery');
      const pushed = await ctx.par();
      const authorize = await ctx.target.fetch(pushed.url, { redirect: 'manual' });
      await authorize.arrayBuffer();
      hsts(authorize, 'authorization endpoint');
      const location = authorize.headers.get('location');
      check(
        location,
        `authorization endpoint: expected a redirect to the login page, got ${authorize.status}`,
      );
      const cookie = authorize.headers
        .getSetCookie()
        .map((c) => c.split(';')[0])
        .join('; ');
      const page = await ctx.target.fetch(new URL(location, ctx.issuer), {
        headers: { cookie },
        redirect: 'manual',
      });
      const html = await page.text();
      check(page.status === 200, `login page: HTTP ${page.status} ${html.slice(0, 200)}`);
      hsts(page, 'login page');
    },
  },
  {
    group: GROUP,
    id: 'transport-cookies-secure',
    title: 'cookies set by the authorization endpoint are Secure and HttpOnly',
    expect: 'accept',
    async run(ctx) {
      const pushed = await ctx.par();
      const res = await ctx.target.fetch(pushed.url, { redirect: 'manual' });
      await res.arrayBuffer();
      const cookies = res.headers.getSetCookie();
      check(cookies.length > 0, `no cookies set (HTTP ${res.status})`);
      for (const c of cookies) {
        const attrs = c.toLowerCase();
        check(
          attrs.includes('; secure') && attrs.includes('; httponly'),
          `cookie ${c.split('=')[0]} lacks Secure or HttpOnly: ${c.replace(/=[^;]*/, '=…')}`,
        );
      }
    },
  },
];
