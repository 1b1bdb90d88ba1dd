import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Middleware } from 'koa';

const require = createRequire(import.meta.url);

interface Asset {
  body: Buffer;
  type: string;
}

function load(): Map<string, Asset> {
  const own = (name: string) => readFileSync(new URL(`./assets/${name}`, import.meta.url));
  // The package exports no subpath for its browser bundle; find it next to its CommonJS entry.
  const browserBundle = readFileSync(
    path.resolve(path.dirname(require.resolve('@simplewebauthn/browser')), '../dist/bundle/index.umd.min.js'),
  );
  return new Map([
    ['/assets/style.css', { body: own('style.css'), type: 'text/css; charset=utf-8' }],
    ['/assets/passkey.js', { body: own('passkey.js'), type: 'text/javascript; charset=utf-8' }],
    ['/assets/simplewebauthn-browser.js', { body: browserBundle, type: 'text/javascript; charset=utf-8' }],
  ]);
}

/** Serves the few static files the pages need, from memory. */
export function assetsMiddleware(): Middleware {
  const assets = load();
  return async (ctx, next) => {
    const asset = ctx.method === 'GET' || ctx.method === 'HEAD' ? assets.get(ctx.path) : undefined;
    if (!asset) return next();
    ctx.type = asset.type;
    ctx.set('cache-control', 'public, max-age=3600');
    ctx.body = asset.body;
  };
}
