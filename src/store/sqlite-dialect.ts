/**
 * Kysely's better-sqlite3 dialect with two changes for a server process:
 *
 * - Transactions begin IMMEDIATE: they take the write lock at once, so two connections never
 *   deadlock upgrading read locks, and no statement inside a transaction waits for a lock.
 * - Waiting for another connection's lock is asynchronous. better-sqlite3 is synchronous, so
 *   SQLite's own busy timeout would block the whole event loop while it waits, and, when the lock
 *   holder is another store in the same process (its transaction parked at an `await`), wait for a
 *   lock that can never be released. Instead the connection runs with busy_timeout = 0 and a
 *   statement that fails with SQLITE_BUSY is retried after a timer, with backoff, until
 *   `busyTimeoutMs` has passed (then StoreBusyError). A statement that fails with SQLITE_BUSY has
 *   done nothing, so retrying it is safe.
 */
import {
  CompiledQuery,
  SqliteDialect,
  SqliteDriver,
  type DatabaseConnection,
  type Driver,
  type QueryResult,
  type SqliteDialectConfig,
} from 'kysely';
import { StoreBusyError } from './errors.js';

export interface RetryingSqliteDialectConfig extends SqliteDialectConfig {
  /** How long a statement keeps retrying while another connection holds the lock. */
  busyTimeoutMs: number;
}

export class RetryingSqliteDialect extends SqliteDialect {
  constructor(private readonly config: RetryingSqliteDialectConfig) {
    super(config);
  }

  override createDriver(): Driver {
    return new RetryingSqliteDriver(this.config);
  }
}

class RetryingSqliteDriver extends SqliteDriver {
  constructor(private readonly retryConfig: RetryingSqliteDialectConfig) {
    super(retryConfig);
  }

  override async acquireConnection(): Promise<DatabaseConnection> {
    return new BusyRetryConnection(await super.acquireConnection(), this.retryConfig.busyTimeoutMs);
  }

  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}

const MAX_RETRY_DELAY_MS = 25;

/**
 * Retries statements that fail with SQLITE_BUSY* until the busy timeout, then throws StoreBusyError;
 * other errors pass through.
 */
class BusyRetryConnection implements DatabaseConnection {
  constructor(
    private readonly inner: DatabaseConnection,
    private readonly busyTimeoutMs: number,
  ) {}

  async executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    const start = Date.now();
    for (let delayMs = 1; ; delayMs = Math.min(delayMs * 2, MAX_RETRY_DELAY_MS)) {
      try {
        return await this.inner.executeQuery<R>(query);
      } catch (e) {
        if (!isBusy(e)) throw e;
        const waitedMs = Date.now() - start;
        if (waitedMs + delayMs > this.busyTimeoutMs) throw new StoreBusyError(waitedMs, { cause: e });
      }
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }

  streamQuery<R>(query: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    return this.inner.streamQuery<R>(query, chunkSize);
  }
}

function isBusy(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}
