/**
 * Opens the control plane's store: SQLite (embedded, one file in the data directory) or PostgreSQL
 * (shared by several hosts), behind one code path. Both speak through Kysely; the schema and every
 * query are the same for both (see schema.ts).
 */
import { closeSync, openSync } from 'node:fs';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { createLogger } from '../util/log.js';
import { ApiKeyRepository } from './api-keys.js';
import { StoreUnavailableError } from './errors.js';
import { IdempotencyRepository } from './idempotency.js';
import { ImageBuildRepository } from './image-builds.js';
import { ImageVersionRepository } from './image-versions.js';
import { ImageRepository } from './images.js';
import { UnknownMigrationsError, migrate } from './migrate.js';
import { MicrovmRepository } from './microvms.js';
import { NetworkConnectorRepository } from './network-connectors.js';
import { MIGRATIONS, type Database } from './schema.js';
import { RetryingSqliteDialect } from './sqlite-dialect.js';

const log = createLogger('store');

export type StoreBackend = 'sqlite' | 'postgres';

/** The repositories, bound to the store or to one transaction. */
export interface StoreRepositories {
  readonly images: ImageRepository;
  readonly versions: ImageVersionRepository;
  readonly builds: ImageBuildRepository;
  readonly microvms: MicrovmRepository;
  readonly apiKeys: ApiKeyRepository;
  readonly idempotency: IdempotencyRepository;
  readonly networkConnectors: NetworkConnectorRepository;
}

export interface Store extends StoreRepositories {
  readonly backend: StoreBackend;
  /**
   * Runs `fn` in one transaction: committed if it resolves, rolled back if it throws (the error is
   * rethrown). Inside `fn` use only `tx`: on SQLite the store has a single connection, which the
   * transaction holds, so a call through the store itself would wait for the transaction forever.
   * SQLite transactions begin IMMEDIATE (they take the write lock at once, see sqlite-dialect.ts);
   * PostgreSQL ones run at READ COMMITTED, where a failed statement
   * (such as a STORE_CONFLICT) aborts the transaction: let such errors propagate.
   */
  transaction<T>(fn: (tx: StoreRepositories) => Promise<T>): Promise<T>;
  /** Closes the database (the SQLite file, or the PostgreSQL pool). The store is unusable after. */
  close(): Promise<void>;
}

export interface OpenStoreOptions {
  /** The clock for default `updatedAt` values and the migrations table. */
  now?: () => Date;
  /** SQLite: how long a statement waits for another connection's write lock before failing; default 5000. */
  busyTimeoutMs?: number;
  /** PostgreSQL: pool size; default 10. */
  maxConnections?: number;
  /** PostgreSQL: how long opening a connection may take; default 10 000. */
  connectTimeoutMs?: number;
}

export type StoreLocation = { backend: 'sqlite'; path: string } | { backend: 'postgres'; url: string };

/**
 * Parses a store URL: `sqlite:<path>` (absolute or relative file path), `sqlite::memory:` (a
 * private in-memory database, for tests), or `postgres://...` / `postgresql://...` (libpq-style URL,
 * query parameters such as `sslmode` and `options` included). StoreUnavailableError otherwise.
 */
export function parseStoreUrl(url: string): StoreLocation {
  if (url.startsWith('sqlite:')) {
    const path = url.slice('sqlite:'.length);
    if (path === '') throw new StoreUnavailableError(url, 'no file path after sqlite:', { hint: HINT_URL });
    return { backend: 'sqlite', path };
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return { backend: 'postgres', url };
  throw new StoreUnavailableError(redactUrl(url), 'unknown kind of store URL', { hint: HINT_URL });
}

const HINT_URL = 'use sqlite:/path/to/hearth.db or postgres://user:password@host:5432/database';

/** The URL with any password replaced by ***, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password === '') return url;
    u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@');
  }
}

/**
 * Opens the store at `url` and brings its schema up to date (see migrate.ts). For SQLite the file
 * is created if missing (mode 0600: it holds API secrets) in an existing directory, and opened with
 * WAL journaling, synchronous=FULL (a committed transaction survives power loss and kill -9),
 * foreign keys enforced and a busy timeout. For PostgreSQL a connection is made before returning.
 * StoreUnavailableError, with a hint, if the database cannot be opened, reached or migrated.
 */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<Store> {
  const location = parseStoreUrl(url);
  const now = options.now ?? (() => new Date());
  const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  const db =
    location.backend === 'sqlite'
      ? new Kysely<Database>({
          dialect: new RetryingSqliteDialect({
            database: openSqliteDatabase(url, location.path),
            busyTimeoutMs,
          }),
        })
      : new Kysely<Database>({
          dialect: new PostgresDialect({ pool: await openPool(location.url, options) }),
        });
  try {
    const applied = await migrate(db, MIGRATIONS, now);
    // A new database gets every migration: routine, unlike upgrading an existing one.
    const fresh = applied[0] === MIGRATIONS[0]?.name;
    if (applied.length > 0)
      log[fresh ? 'debug' : 'info'](fresh ? 'store created' : 'store migrated', {
        backend: location.backend,
        applied: applied.join(','),
      });
  } catch (e) {
    await db.destroy().catch(() => undefined);
    if (e instanceof StoreUnavailableError) throw e;
    if (e instanceof UnknownMigrationsError)
      throw new StoreUnavailableError(redactUrl(url), e.message, {
        cause: e,
        hint: 'a newer Hearth has used this database; run that version (or restore a backup made before the upgrade)',
      });
    throw new StoreUnavailableError(redactUrl(url), `schema migration failed: ${(e as Error).message}`, {
      cause: e,
      hint: 'nothing was changed by the failed migration; fix the cause above and start again',
    });
  }
  return new KyselyStore(db, location.backend, now);
}

class KyselyStore implements Store {
  readonly images: ImageRepository;
  readonly versions: ImageVersionRepository;
  readonly builds: ImageBuildRepository;
  readonly microvms: MicrovmRepository;
  readonly apiKeys: ApiKeyRepository;
  readonly idempotency: IdempotencyRepository;
  readonly networkConnectors: NetworkConnectorRepository;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly db: Kysely<Database>,
    readonly backend: StoreBackend,
    private readonly now: () => Date,
  ) {
    const repos = repositories(db, now);
    this.images = repos.images;
    this.versions = repos.versions;
    this.builds = repos.builds;
    this.microvms = repos.microvms;
    this.apiKeys = repos.apiKeys;
    this.idempotency = repos.idempotency;
    this.networkConnectors = repos.networkConnectors;
  }

  transaction<T>(fn: (tx: StoreRepositories) => Promise<T>): Promise<T> {
    return this.db.transaction().execute((trx) => fn(repositories(trx, this.now)));
  }

  /** Idempotent: later calls wait for the first. */
  close(): Promise<void> {
    this.closing ??= this.db.destroy();
    return this.closing;
  }
}

function repositories(db: Kysely<Database>, now: () => Date): StoreRepositories {
  return {
    images: new ImageRepository(db, now),
    versions: new ImageVersionRepository(db, now),
    builds: new ImageBuildRepository(db),
    microvms: new MicrovmRepository(db, now),
    apiKeys: new ApiKeyRepository(db),
    idempotency: new IdempotencyRepository(db),
    networkConnectors: new NetworkConnectorRepository(db),
  };
}

/**
 * Opens and configures a SQLite file (see openStore); StoreUnavailableError if it cannot be.
 * The connection's own busy timeout is 0: waiting for locks is done asynchronously by
 * RetryingSqliteDialect. Opening itself may wait (synchronously, briefly) for a lock.
 */
export function openSqliteDatabase(url: string, path: string): BetterSqlite3.Database {
  const inMemory = path === ':memory:';
  let sqlite: BetterSqlite3.Database | undefined;
  try {
    // Create the file ourselves so it gets mode 0600; SQLite gives its -wal and -shm files the same mode.
    if (!inMemory) closeSync(openSync(path, 'a', 0o600));
    sqlite = new BetterSqlite3(path);
    sqlite.pragma(`busy_timeout = ${OPEN_BUSY_TIMEOUT_MS}`);
    // Switching to WAL needs an exclusive lock; only a new database needs the switch.
    if (!inMemory && sqlite.pragma('journal_mode', { simple: true }) !== 'wal') {
      const mode = sqlite.pragma('journal_mode = WAL', { simple: true });
      if (mode !== 'wal') throw new Error(`journal_mode is ${String(mode)}, WAL could not be enabled`);
    }
    sqlite.pragma('synchronous = FULL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('busy_timeout = 0');
    return sqlite;
  } catch (e) {
    sqlite?.close();
    throw new StoreUnavailableError(url, (e as Error).message, { cause: e, hint: sqliteHint(e, path) });
  }
}

const DEFAULT_BUSY_TIMEOUT_MS = 5000;
const OPEN_BUSY_TIMEOUT_MS = 2000;

function sqliteHint(e: unknown, path: string): string {
  const code = (e as { code?: unknown }).code;
  if (code === 'ENOENT')
    return `the directory of ${path} does not exist; create it (hearth setup does) or set HEARTH_DATA_DIR`;
  if (code === 'EACCES' || code === 'EPERM' || code === 'SQLITE_CANTOPEN' || code === 'SQLITE_READONLY')
    return `Hearth cannot write ${path} or its directory; run it as the user that owns them`;
  if (code === 'SQLITE_NOTADB') return `${path} is not a SQLite database; point the store at another file`;
  if (code === 'SQLITE_BUSY') return `another process holds ${path} locked; stop it or wait`;
  return `check that ${path} is a writable SQLite database on a local filesystem`;
}

/** A pool whose first connection succeeded; StoreUnavailableError otherwise. */
async function openPool(url: string, options: OpenStoreOptions): Promise<pg.Pool> {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.maxConnections ?? 10,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
  });
  // An idle client losing its connection emits 'error' on the pool; unhandled, that would end the process.
  pool.on('error', (err) => log.warn('idle PostgreSQL connection failed', { error: err }));
  try {
    const client = await pool.connect();
    client.release();
    return pool;
  } catch (e) {
    await pool.end().catch(() => undefined);
    throw new StoreUnavailableError(redactUrl(url), (e as Error).message, {
      cause: e,
      hint: 'check that PostgreSQL is running and reachable, and that the URL (host, port, user, password, database) is right',
    });
  }
}
