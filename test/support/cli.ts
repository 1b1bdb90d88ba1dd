/** Runs the kakehashi CLI (src/main.ts) in a child process with the given environment. */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Node's on-disk compile cache for the processes tests start (CLI, hubs): it keeps the compiled and
 * type-stripped modules, so each start after the first spends about a third less CPU loading them.
 */
export const NODE_COMPILE_CACHE = fileURLToPath(new URL('../../.tmp/node-compile-cache/', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Each CLI call starts Node and opens the database (PGlite: seconds on a loaded 2-core machine), so a
 * test making several calls gets this much time (vitest's default 30 s is for in-process tests).
 */
export const CLI_TEST_TIMEOUT = 120_000;

export async function runCli(env: NodeJS.ProcessEnv, ...args: string[]): Promise<CliResult> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['src/main.ts', ...args], {
      env: { NODE_COMPILE_CACHE, ...env },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
