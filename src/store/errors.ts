import { HearthError } from '../errors.js';

/**
 * A write collided with data already there: a duplicate key (image name, microVM id, ...) or, for
 * conditional updates, a record whose state changed underneath. Nothing was written.
 */
export class StoreConflictError extends HearthError {
  readonly code = 'STORE_CONFLICT';
  constructor(
    readonly entity: string,
    readonly key: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`${entity} ${key}: ${detail}`, options);
  }
}

/** A record a write depends on (the record itself, or its parent image or version) does not exist. */
export class StoreNotFoundError extends HearthError {
  readonly code = 'STORE_NOT_FOUND';
  constructor(
    readonly entity: string,
    readonly key: string,
    options?: { cause?: unknown },
  ) {
    super(`${entity} ${key} does not exist`, options);
  }
}

/** The database could not be opened, reached or migrated. Nothing was changed. */
export class StoreUnavailableError extends HearthError {
  readonly code = 'STORE_UNAVAILABLE';
  constructor(
    /** The store URL with any password masked. */
    readonly url: string,
    detail: string,
    options?: { cause?: unknown; hint?: string },
  ) {
    super(`cannot open store ${url}: ${detail}`, options);
  }
}

/** A list call got a cursor it did not issue, or a page size out of range. */
export class StoreInvalidArgumentError extends HearthError {
  readonly code = 'STORE_INVALID_ARGUMENT';
  constructor(
    readonly argument: 'cursor' | 'limit',
    detail: string,
  ) {
    super(`invalid ${argument}: ${detail}`);
  }
}

/** A stored value could not be decoded (a JSON column that does not parse). */
export class StoreCorruptError extends HearthError {
  readonly code = 'STORE_CORRUPT';
  constructor(
    readonly table: string,
    readonly column: string,
    options?: { cause?: unknown },
  ) {
    super(`stored value in ${table}.${column} cannot be decoded`, {
      ...options,
      hint: 'the database was changed outside Hearth; restore it from a backup',
    });
  }
}

/** SQLite: another connection held the write lock for longer than the busy timeout. Nothing was written. */
export class StoreBusyError extends HearthError {
  readonly code = 'STORE_BUSY';
  constructor(
    readonly waitedMs: number,
    options?: { cause?: unknown },
  ) {
    super(`the database stayed locked by another connection for ${waitedMs} ms`, {
      ...options,
      hint: 'another process (or another store in this one) is holding a long transaction on the same SQLite file; retry, or stop it',
    });
  }
}
