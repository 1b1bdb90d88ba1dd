/**
 * vitest globalSetup: once per run, before any test process starts. Without a real PostgreSQL, it
 * builds the migrated PGlite template that test databases and hubs start from (pgliteTemplate.ts).
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { realPostgresUrl } from './db.ts';
import { buildPgliteTemplate, TEMPLATE_ENV } from './pgliteTemplate.ts';

export async function setup(): Promise<() => void> {
  if (realPostgresUrl) return () => {};
  const dir = path.join(
    fileURLToPath(new URL('../../.tmp/', import.meta.url)),
    `pglite-template-${process.pid}`,
  );
  await buildPgliteTemplate(dir);
  // Test processes are forked after this, so they inherit it.
  process.env[TEMPLATE_ENV] = dir;
  return () => rmSync(dir, { recursive: true, force: true });
}
