/** Percentile (nearest-rank) of a list of numbers. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export function summary(name: string, values: number[], unit = 'ms'): string {
  const fmt = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(1));
  return `${name.padEnd(28)} n=${String(values.length).padStart(3)}  p50 ${fmt(percentile(values, 50))} ${unit}  p90 ${fmt(percentile(values, 90))} ${unit}  min ${fmt(Math.min(...values))}  max ${fmt(Math.max(...values))}`;
}

export function round(v: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
