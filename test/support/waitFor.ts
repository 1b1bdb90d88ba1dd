/**
 * Polls `fn` until it returns something truthy and resolves with that value; rejects naming `what`
 * after `timeoutMs`. For effects that happen in the background (workers, pushes, mail).
 */
export async function waitFor<T>(
  what: string,
  fn: () => T | undefined | false | null | Promise<T | undefined | false | null>,
  timeoutMs = 15_000,
  intervalMs = 25,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
