/** Small conversions between records and rows, shared by the repositories. */
import { StoreCorruptError } from './errors.js';

/** Parses a JSON text column; StoreCorruptError if it does not parse. */
export function fromJson<T>(text: string, table: string, column: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new StoreCorruptError(table, column, { cause: e });
  }
}

/** JSON text for a column that may be absent (undefined -> NULL). */
export function toJsonOrNull(value: unknown): string | null {
  return value === undefined ? null : JSON.stringify(value);
}

/** NULL -> undefined, for optional record fields. */
export function opt<T>(value: T | null): T | undefined {
  return value === null ? undefined : value;
}

/** NULL -> undefined, and numbers PostgreSQL returns as strings (bigint) -> number. */
export function optNumber(value: number | string | null): number | undefined {
  return value === null ? undefined : Number(value);
}

/** Drops keys whose value is undefined, so records read back have only the fields that are set. */
export function compact<T extends object>(record: T): T {
  for (const key of Object.keys(record) as (keyof T)[]) {
    if (record[key] === undefined) delete record[key];
  }
  return record;
}

/**
 * A partial update of a record: absent (or undefined) fields are left alone, `null` clears an
 * optional field. Only the keys `K` may be changed.
 */
export type Patch<T, K extends keyof T> = {
  [P in K]?: undefined extends T[P] ? Exclude<T[P], undefined> | null : T[P];
};

/** Maps a patch value to its column value: undefined stays undefined (no change), null stays null. */
export function patchValue<V, C>(value: V | null | undefined, encode: (v: V) => C): C | null | undefined {
  if (value === undefined) return undefined;
  if (value === null) return null;
  return encode(value);
}

/** Escapes LIKE's wildcards (names may contain `_`) with the `\` escape character (`escape '\'`). */
export function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}
