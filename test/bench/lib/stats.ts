/** Small statistics helpers for the benchmark's latency samples. */

export interface Summary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles of `samples` (sorted in place). */
export function summarize(samples: number[]): Summary {
  const n = samples.length;
  if (n === 0)
    return { count: 0, mean: Number.NaN, p50: Number.NaN, p90: Number.NaN, p99: Number.NaN, max: Number.NaN };
  samples.sort((a, b) => a - b);
  const at = (q: number) => samples[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))]!;
  let sum = 0;
  for (const s of samples) sum += s;
  return { count: n, mean: sum / n, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: samples[n - 1]! };
}

export const round = (x: number, digits = 1) => (Number.isFinite(x) ? Number(x.toFixed(digits)) : null);
