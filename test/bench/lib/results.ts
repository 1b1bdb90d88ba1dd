/**
 * Writes a benchmark's JSON results file. The results files are committed: they get the repository's
 * formatting so that `npm run check` stays clean.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '../../..');

export function writeResults(file: string, report: unknown): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(report, (_k, v) => (v instanceof Set ? [...v] : v), 2)}\n`);
  try {
    execFileSync(path.join(ROOT, 'node_modules', '.bin', 'biome'), ['format', '--write', file], {
      stdio: 'ignore',
    });
  } catch {
    // biome missing or the file outside the project: the JSON is valid either way
  }
}

/** The default place of a results file: test/bench/results/<name>. */
export const resultsFile = (name: string) => path.join(ROOT, 'test', 'bench', 'results', name);
