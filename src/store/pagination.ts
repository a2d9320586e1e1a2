/**
 * Keyset pagination. Every list is ordered by immutable, unique columns; a cursor carries the sort
 * key of the last row returned, so the next page starts strictly after it. Rows inserted or deleted
 * between pages do not shift the pages: a row present for the whole listing is returned exactly once.
 * Cursors are opaque to callers (base64url JSON) and name the listing they belong to.
 */
import { StoreInvalidArgumentError } from './errors.js';

export const DEFAULT_PAGE_LIMIT = 50;
export const MAX_PAGE_LIMIT = 1000;

export interface PageRequest {
  /** Rows per page, 1..1000; default 50. */
  limit?: number;
  /** `nextCursor` from the previous page of the same listing. */
  cursor?: string;
}

export interface Page<T> {
  items: T[];
  /** Present when more rows follow; pass it back as `cursor`. */
  nextCursor?: string;
}

export type CursorKey = readonly (string | number)[];

/** The page size to use; StoreInvalidArgumentError if out of range. */
export function pageLimit(req: PageRequest): number {
  const limit = req.limit ?? DEFAULT_PAGE_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_LIMIT)
    throw new StoreInvalidArgumentError('limit', `${limit} is not an integer from 1 to ${MAX_PAGE_LIMIT}`);
  return limit;
}

export function encodeCursor(listing: string, key: CursorKey): string {
  return Buffer.from(JSON.stringify({ l: listing, k: key })).toString('base64url');
}

/**
 * The sort key in a cursor of `listing`, checked against the expected element types;
 * StoreInvalidArgumentError for anything else (another listing's cursor, garbage).
 */
export function decodeCursor<K extends CursorKey>(
  listing: string,
  cursor: string,
  types: { [I in keyof K]: K[I] extends number ? 'number' : 'string' },
): K {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw new StoreInvalidArgumentError('cursor', 'not a cursor issued by this store');
  }
  const p = parsed as { l?: unknown; k?: unknown } | null;
  if (typeof p !== 'object' || p === null || p.l !== listing || !Array.isArray(p.k))
    throw new StoreInvalidArgumentError('cursor', `not a cursor of the ${listing} listing`);
  const key = p.k as unknown[];
  if (key.length !== types.length || key.some((v, i) => typeof v !== types[i]))
    throw new StoreInvalidArgumentError('cursor', `malformed ${listing} cursor`);
  return key as unknown as K;
}

/**
 * Builds a page from up to `limit + 1` rows fetched in order: the extra row only signals that more
 * follow; the cursor is the key of the last row kept.
 */
export function toPage<R, T>(
  rows: R[],
  limit: number,
  listing: string,
  keyOf: (row: R) => CursorKey,
  map: (row: R) => T,
): Page<T> {
  const kept = rows.slice(0, limit);
  const page: Page<T> = { items: kept.map(map) };
  const last = kept[kept.length - 1];
  if (rows.length > limit && last !== undefined) page.nextCursor = encodeCursor(listing, keyOf(last));
  return page;
}
