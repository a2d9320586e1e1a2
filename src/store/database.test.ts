import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import { openSqliteDatabase, openStore, parseStoreUrl, redactUrl, type Store } from './database.js';
import { StoreBusyError, StoreConflictError, StoreUnavailableError } from './errors.js';
import { imageRecord, microvmRecord, testBackends, versionInput, type TestDatabase } from './testing.js';

describe('parseStoreUrl', () => {
  it('accepts sqlite paths, :memory: and postgres URLs', () => {
    expect(parseStoreUrl('sqlite:/var/lib/hearth/hearth.db')).toEqual({
      backend: 'sqlite',
      path: '/var/lib/hearth/hearth.db',
    });
    expect(parseStoreUrl('sqlite:rel/h.db')).toEqual({ backend: 'sqlite', path: 'rel/h.db' });
    expect(parseStoreUrl('sqlite::memory:')).toEqual({ backend: 'sqlite', path: ':memory:' });
    expect(parseStoreUrl('postgres://u:p@h:5432/d')).toEqual({
      backend: 'postgres',
      url: 'postgres://u:p@h:5432/d',
    });
    expect(parseStoreUrl('postgresql://h/d').backend).toBe('postgres');
  });

  it('refuses anything else with STORE_UNAVAILABLE and a hint, without echoing a password', () => {
    for (const bad of ['sqlite:', 'mysql://u:secret@h/d', '/var/lib/hearth/hearth.db', '']) {
      let err: unknown;
      try {
        parseStoreUrl(bad);
      } catch (e) {
        err = e;
      }
      expect(hasCode(err, 'STORE_UNAVAILABLE'), bad).toBe(true);
      expect((err as StoreUnavailableError).hint).toMatch(/sqlite:/);
      expect((err as Error).message).not.toContain('secret');
    }
  });

  it('redacts passwords', () => {
    expect(redactUrl('postgres://hearth:s3cret@db:5432/hearth')).toBe('postgres://hearth:***@db:5432/hearth');
    expect(redactUrl('postgres://db/hearth')).toBe('postgres://db/hearth');
  });
});

describe('openStore on SQLite', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-store-open-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates the file with mode 0600, in WAL mode, and records the migrations', async () => {
    const path = join(dir, 'hearth.db');
    const store = await openStore(`sqlite:${path}`);
    expect(store.backend).toBe('sqlite');
    await store.images.create(imageRecord('a'));
    await store.close();

    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const raw = new BetterSqlite3(path, { readonly: true });
    try {
      expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(raw.prepare('select name from migrations order by name').all()).toEqual([
        { name: '0001-initial' },
        { name: '0002-network-connectors' },
        { name: '0003-microvm-usage' },
      ]);
    } finally {
      raw.close();
    }
  });

  it('opens the file with WAL, synchronous=FULL and foreign keys on', () => {
    const path = join(dir, 'pragmas.db');
    const raw = openSqliteDatabase(`sqlite:${path}`, path);
    try {
      expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(raw.pragma('synchronous', { simple: true })).toBe(2); // FULL
      expect(raw.pragma('foreign_keys', { simple: true })).toBe(1);
    } finally {
      raw.close();
    }
  });

  it('waits for another store holding the write lock without blocking the event loop', async () => {
    const url = `sqlite:${join(dir, 'hearth.db')}`;
    const a = await openStore(url);
    const b = await openStore(url);
    try {
      await a.images.create(imageRecord('app'));
      let ticks = 0;
      const ticker = setInterval(() => ticks++, 5);
      let releaseA!: () => void;
      const held = new Promise<void>((r) => (releaseA = r));
      const txA = a.transaction(async (tx) => {
        await tx.versions.create(versionInput('app'));
        await held; // the transaction stays open, holding the lock, across awaits
        await tx.versions.create(versionInput('app'));
      });
      await new Promise((r) => setTimeout(r, 20));
      const writeB = b.versions.create(versionInput('app'));
      await new Promise((r) => setTimeout(r, 150));
      const ticksWhileWaiting = ticks;
      releaseA();
      await txA;
      expect((await writeB).version).toBe('3.0');
      clearInterval(ticker);
      expect(ticksWhileWaiting).toBeGreaterThan(5);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('gives up with STORE_BUSY after the busy timeout', async () => {
    const url = `sqlite:${join(dir, 'hearth.db')}`;
    const a = await openStore(url);
    const b = await openStore(url, { busyTimeoutMs: 100 });
    try {
      let releaseA!: () => void;
      const held = new Promise<void>((r) => (releaseA = r));
      const txA = a.transaction(async (tx) => {
        await tx.images.create(imageRecord('a'));
        await held;
      });
      await new Promise((r) => setTimeout(r, 10));
      const t0 = Date.now();
      const err = await b.images.create(imageRecord('b')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StoreBusyError);
      expect(hasCode(err, 'STORE_BUSY')).toBe(true);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(50);
      releaseA();
      await txA;
      expect(await b.images.get('b')).toBeUndefined();
      await b.images.create(imageRecord('b'));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('works in memory', async () => {
    const store = await openStore('sqlite::memory:');
    await store.images.create(imageRecord('a'));
    expect((await store.images.get('a'))?.name).toBe('a');
    await store.close();
  });

  it('fails with STORE_UNAVAILABLE and a hint when the directory does not exist', async () => {
    const err = await openStore(`sqlite:${join(dir, 'missing', 'hearth.db')}`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect((err as StoreUnavailableError).hint).toMatch(/directory .* does not exist/);
  });

  it('fails with STORE_UNAVAILABLE when the file is not a database', async () => {
    const path = join(dir, 'junk.db');
    await writeFile(path, 'this is not a database, just some text long enough to have a header\n'.repeat(20));
    const err = await openStore(`sqlite:${path}`).catch((e: unknown) => e);
    expect(hasCode(err, 'STORE_UNAVAILABLE')).toBe(true);
    expect((err as StoreUnavailableError).hint).toMatch(/not a SQLite database/);
  });

  it('refuses a database migrated by a newer Hearth, and leaves it alone', async () => {
    const path = join(dir, 'hearth.db');
    await (await openStore(`sqlite:${path}`)).close();
    const raw = new BetterSqlite3(path);
    raw.prepare("insert into migrations (name, applied_at) values ('9999-future', 'x')").run();
    raw.close();
    const err = await openStore(`sqlite:${path}`).catch((e: unknown) => e);
    expect(hasCode(err, 'STORE_UNAVAILABLE')).toBe(true);
    expect((err as Error).message).toContain('9999-future');
    expect((err as StoreUnavailableError).hint).toMatch(/newer Hearth/);
  });

  it('keeps every transaction committed before kill -9', async () => {
    const path = join(dir, 'hearth.db');
    await (await openStore(`sqlite:${path}`)).close();
    // A child process writes microVMs one transaction at a time and reports each commit; it is
    // killed without warning mid-stream. Every reported commit must be there afterwards.
    const databaseTs = fileURLToPath(new URL('./database.ts', import.meta.url));
    const script = `
      import { openStore } from ${JSON.stringify(databaseTs)};
      const store = await openStore(${JSON.stringify(`sqlite:${path}`)});
      const base = ${JSON.stringify(microvmRecord('x'))};
      for (let i = 0; ; i++) {
        const id = 'vm-' + String(i).padStart(6, '0');
        await store.microvms.create({ ...base, microvmId: id });
        process.stdout.write(id + '\\n');
      }
    `;
    const scriptPath = join(dir, 'writer.mts');
    await writeFile(scriptPath, script);
    const child = spawn(process.execPath, ['--import', 'tsx', scriptPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const reported: string[] = [];
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split('\n');
        buf = lines.pop() ?? '';
        reported.push(...lines);
        if (reported.length >= 200) {
          child.kill('SIGKILL');
          resolve();
        }
      });
      child.on('exit', (code, signal) => {
        if (signal !== 'SIGKILL') reject(new Error(`writer exited (${code}) before being killed: ${stderr}`));
      });
    });
    await new Promise((r) => child.once('close', r));

    const store = await openStore(`sqlite:${path}`);
    try {
      const found = new Set((await store.microvms.list({ limit: 1000 })).items.map((v) => v.microvmId));
      const lost = reported.filter((id) => !found.has(id));
      expect(lost).toEqual([]);
      expect(found.size).toBeGreaterThanOrEqual(reported.length);
    } finally {
      await store.close();
    }
  });
});

describe('openStore on PostgreSQL', () => {
  it('fails with STORE_UNAVAILABLE, a hint and no password when the server cannot be reached', async () => {
    const err = await openStore('postgres://hearth:s3cret@127.0.0.1:1/hearth', {
      connectTimeoutMs: 2000,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect((err as Error).message).toContain('postgres://hearth:***@127.0.0.1:1/hearth');
    expect((err as Error).message).not.toContain('s3cret');
    expect((err as StoreUnavailableError).hint).toMatch(/PostgreSQL is running/);
  });

  it.runIf(process.env.HEARTH_TEST_POSTGRES_URL)(
    'fails with STORE_UNAVAILABLE for a missing database',
    async () => {
      const u = new URL(process.env.HEARTH_TEST_POSTGRES_URL!);
      u.pathname = '/hearth_no_such_database';
      const err = await openStore(u.toString()).catch((e: unknown) => e);
      expect(hasCode(err, 'STORE_UNAVAILABLE')).toBe(true);
      expect((err as Error).message).toMatch(/does not exist/);
    },
  );
});

describe.each(testBackends())('store on $name', (backend) => {
  let db: TestDatabase;
  let store: Store;

  beforeEach(async () => {
    db = await backend.create();
    store = await db.open();
  });

  afterEach(async () => {
    await store.close();
    await db.dispose();
  });

  it('can be closed twice', async () => {
    await store.close();
    await store.close();
    store = await db.open(); // for afterEach
  });

  it('keeps its data across close and reopen', async () => {
    await store.images.create(imageRecord('persisted', { tags: { a: 'b' } }));
    const v = await store.versions.create(versionInput('persisted'));
    await store.microvms.create(microvmRecord('vm-1', { idlePolicy: idle() }));
    await store.close();

    store = await db.open();
    expect(await store.images.get('persisted')).toEqual({
      ...imageRecord('persisted', { tags: { a: 'b' } }),
      latestVersion: '1.0',
      updatedAt: expect.any(String),
    });
    expect(await store.versions.get('persisted', '1.0')).toEqual(v);
    expect((await store.microvms.get('vm-1'))?.idlePolicy).toEqual(idle());
    // The version counter lives in the database too.
    expect((await store.versions.create(versionInput('persisted'))).version).toBe('2.0');
  });

  it('lets several stores open and migrate a new database at once', async () => {
    const fresh = await backend.create();
    try {
      const stores = await Promise.all(Array.from({ length: 4 }, () => fresh.open()));
      await stores[0]!.images.create(imageRecord('one'));
      for (const s of stores) expect((await s.images.get('one'))?.name).toBe('one');
      await Promise.all(stores.map((s) => s.close()));
    } finally {
      await fresh.dispose();
    }
  });

  it('opens a database again while another store has it open', async () => {
    const second = await db.open();
    try {
      await store.images.create(imageRecord('shared'));
      expect((await second.images.get('shared'))?.name).toBe('shared');
    } finally {
      await second.close();
    }
  });

  it('commits a transaction that resolves', async () => {
    const result = await store.transaction(async (tx) => {
      await tx.images.create(imageRecord('t1'));
      const v = await tx.versions.create(versionInput('t1'));
      return v.version;
    });
    expect(result).toBe('1.0');
    expect((await store.images.get('t1'))?.latestVersion).toBe('1.0');
  });

  it('rolls back a transaction that throws, and rethrows its error', async () => {
    const boom = new Error('boom');
    await expect(
      store.transaction(async (tx) => {
        await tx.images.create(imageRecord('t2'));
        await tx.versions.create(versionInput('t2'));
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(await store.images.get('t2')).toBeUndefined();
    expect(await store.versions.get('t2', '1.0')).toBeUndefined();
  });

  it('rolls back a transaction whose write conflicts', async () => {
    await store.images.create(imageRecord('taken'));
    await expect(
      store.transaction(async (tx) => {
        await tx.images.create(imageRecord('fresh'));
        await tx.images.create(imageRecord('taken'));
      }),
    ).rejects.toBeInstanceOf(StoreConflictError);
    expect(await store.images.get('fresh')).toBeUndefined();
  });
});

function idle() {
  return { maxIdleDurationSeconds: 300, suspendedDurationSeconds: 3600, autoResumeEnabled: true };
}
