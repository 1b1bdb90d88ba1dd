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

/** Runs a benchmark's main, cleans up whatever happens, and exits (1 on failure). */
export function runBench(main: () => Promise<void>): void {
  main()
    .then(
      () => cleanup(),
      async (err) => {
        log(`bench failed: ${(err as Error).stack ?? err}`);
        await cleanup();
        process.exitCode = 1;
      },
    )
    .then(() => process.exit());
}
