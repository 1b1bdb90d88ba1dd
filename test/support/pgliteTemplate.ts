/**
 * A migrated PGlite cluster built once per test run (vitest globalSetup), which test databases and
 * test hubs start from instead of each running initdb: creating a PGlite cluster costs 2–4 s of CPU
 * on this machine, starting from a copy of a built one a fraction of that. Every test still runs the
 * real migrations (the template is built by `migrate`, and each hub start checks them again); tests
 * of a migration itself (`testDb({ before })`) build their own cluster.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { migrate, openDb } from '../../src/db/index.ts';

/** Set by globalSetup for the test processes: the directory holding the template. */
export const TEMPLATE_ENV = 'KAKEHASHI_TEST_PGLITE_TEMPLATE';

const clusterOf = (dir: string) => path.join(dir, 'pgdata');
const tarballOf = (dir: string) => path.join(dir, 'pgdata.tar');

/** Builds the template in `dir` (replacing any): a migrated cluster and the same as a tarball. */
export async function buildPgliteTemplate(dir: string): Promise<void> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const db = await openDb({ dataDir: dir });
  await migrate(db);
  await db.close();
  const lite = await PGlite.create(clusterOf(dir));
  const tarball = await lite.dumpDataDir('none');
  await lite.close();
  writeFileSync(tarballOf(dir), Buffer.from(await tarball.arrayBuffer()));
}

const templateDir = () => process.env[TEMPLATE_ENV] || undefined;

/**
 * Puts a copy of the template cluster where a hub with this data directory opens PGlite
 * (`<dataDir>/pgdata`), unless there is no template or a cluster is there already.
 */
export function seedPgliteDataDir(dataDir: string): void {
  const dir = templateDir();
  const target = clusterOf(dataDir);
  if (!dir || existsSync(target)) return;
  cpSync(clusterOf(dir), target, { recursive: true });
}

let tarball: Blob | undefined;

/** The template as a tarball for an in-memory PGlite (`loadDataDir`), or undefined without one. */
export function pgliteTemplateTarball(): Blob | undefined {
  const dir = templateDir();
  if (!dir) return undefined;
  tarball ??= new Blob([readFileSync(tarballOf(dir))]);
  return tarball;
}
