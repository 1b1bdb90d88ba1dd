/**
 * Clean-up of everything a benchmark starts (hub process, PostgreSQL, temp dirs), whatever happens:
 * steps run once, newest first, also on SIGINT/SIGTERM.
 */
export const log = (s: string): void => {
  process.stderr.write(`${s}\n`);
};

const steps: Array<() => Promise<unknown> | unknown> = [];
let cleaning: Promise<void> | undefined;

/** Registers a clean-up step. */
export function onCleanup(step: () => Promise<unknown> | unknown): void {
  steps.push(step);
}

export function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const step of steps.reverse()) {
      try {
        await step();
      } catch (err) {
        log(`clean-up step failed: ${(err as Error).message}`);
      }
    }
  })();
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`\n${signal}: stopping the hub and PostgreSQL…`);
    void cleanup().then(() => process.exit(130));
  });
}
