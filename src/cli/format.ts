/** Output of the CLI: tables for people (default), JSON for programs (`--output json`). */
export type OutputMode = 'table' | 'json';

function cell(v: unknown): string {
  if (v === undefined || v === null) return '-';
  if (v instanceof Date) return v.toISOString().replace(/\.\d{3}Z$/, 'Z');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** Renders rows as an aligned table with the given columns (header = column name in capitals). */
export function table(rows: Record<string, unknown>[], columns: string[]): string {
  const header = columns.map((c) => c.replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase());
  const body = rows.map((r) => columns.map((c) => cell(r[c])));
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(header), ...body.map(line)].join('\n') + '\n';
}

/** Renders one record as "key  value" lines. */
export function record(r: Record<string, unknown>): string {
  const keys = Object.keys(r).filter((k) => k !== '$metadata' && r[k] !== undefined);
  const width = Math.max(...keys.map((k) => k.length));
  return keys.map((k) => `${k.padEnd(width)}  ${cell(r[k])}`).join('\n') + '\n';
}

/** Drops the SDK's $metadata from a command output. */
export function clean<T extends object>(o: T): Omit<T, '$metadata'> {
  const { $metadata: _m, ...rest } = o as T & { $metadata?: unknown };
  return rest as Omit<T, '$metadata'>;
}

export function print(mode: OutputMode, data: unknown, asTable: () => string): void {
  process.stdout.write(mode === 'json' ? JSON.stringify(data, null, 2) + '\n' : asTable());
}
