/** A callback after a statement outside a transaction: that statement has committed already. */
export function runNow(fn: () => void): void {
  report(fn);
}

/** The callbacks of one transaction, run only after its COMMIT (a rollback simply drops them). */
export function afterCommitQueue() {
  const queued: Array<() => void> = [];
  return {
    add: (fn: () => void) => {
      queued.push(fn);
    },
    run: () => {
      for (const fn of queued.splice(0)) report(fn);
    },
  };
}

/** The transaction is settled: a failing callback must not turn its outcome into an error. */
function report(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    process.emitWarning(err as Error);
  }
}
