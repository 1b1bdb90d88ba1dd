/**
 * Reads the withdrawal-strength policy: the operator's file (config key `linking.policyFile`) or
 * the one shipped in config/withdrawal-policy.json. A bad file stops the hub with its path and
 * the first problem.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Policy, PolicyError, parsePolicy } from './parsePolicy.ts';

/** The policy shipped with the hub. */
export const DEFAULT_POLICY_FILE = fileURLToPath(
  new URL('../../../config/withdrawal-policy.json', import.meta.url),
);

export function loadPolicy(file: string = DEFAULT_POLICY_FILE): Policy {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new PolicyError(
      'ERR_POLICY_INVALID',
      `${file}: cannot read a JSON policy (${(err as Error).message})`,
    );
  }
  try {
    return parsePolicy(raw);
  } catch (err) {
    if (err instanceof PolicyError) throw new PolicyError(err.code, `${file}: ${err.message}`);
    throw err;
  }
}
