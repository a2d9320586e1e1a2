/**
 * Test support for the store's *.test.ts files: the backends to run the same tests against, and
 * record fixtures. SQLite always (a temporary file per test); PostgreSQL when
 * HEARTH_TEST_POSTGRES_URL is set (a fresh schema per test, dropped afterwards; start a throwaway
 * server with scripts/postgres-test-server.sh).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { ImageBuildRecord, ImageRecord, MicrovmRecord } from '../core/model.js';
import { openStore, type OpenStoreOptions, type Store } from './database.js';
import type { NewImageVersion } from './image-versions.js';

/** One database for one test: the URL of a fresh, empty database and a way to remove it. */
export interface TestDatabase {
  url: string;
  /** Opens (or reopens) a store on this database. */
  open(options?: OpenStoreOptions): Promise<Store>;
  /** Removes the database (file or schema). Close stores first. */
  dispose(): Promise<void>;
}

export interface TestBackend {
  name: 'sqlite' | 'postgres';
  create(): Promise<TestDatabase>;
}

const sqliteBackend: TestBackend = {
  name: 'sqlite',
  async create() {
    const dir = await mkdtemp(join(tmpdir(), 'hearth-store-'));
    const url = `sqlite:${join(dir, 'hearth.db')}`;
    return {
      url,
      open: (options) => openStore(url, options),
      dispose: () => rm(dir, { recursive: true, force: true }),
    };
  },
};

function postgresBackend(baseUrl: string): TestBackend {
  return {
    name: 'postgres',
    async create() {
      const schema = `hearth_test_${randomBytes(6).toString('hex')}`;
      await adminQuery(baseUrl, `create schema ${schema}`);
      const u = new URL(baseUrl);
      u.searchParams.set('options', `-c search_path=${schema}`);
      const url = u.toString();
      return {
        url,
        open: (options) => openStore(url, options),
        dispose: () => adminQuery(baseUrl, `drop schema ${schema} cascade`),
      };
    },
  };
}

async function adminQuery(url: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

/** SQLite, plus PostgreSQL when HEARTH_TEST_POSTGRES_URL is set. */
export function testBackends(): TestBackend[] {
  const pgUrl = process.env.HEARTH_TEST_POSTGRES_URL;
  return pgUrl ? [sqliteBackend, postgresBackend(pgUrl)] : [sqliteBackend];
}

export const T0 = '2025-01-01T00:00:00.000Z';

/** An ISO time `seconds` after T0. */
export function at(seconds: number): string {
  return new Date(Date.parse(T0) + seconds * 1000).toISOString();
}

export function imageRecord(name: string, overrides: Partial<ImageRecord> = {}): ImageRecord {
  return {
    name,
    arn: `arn:aws:lambda:local:000000000000:microvm-image:${name}`,
    state: 'CREATING',
    tags: { team: 'core' },
    createdAt: T0,
    updatedAt: T0,
    ...overrides,
  };
}

export function versionInput(imageName: string, overrides: Partial<NewImageVersion> = {}): NewImageVersion {
  return {
    imageName,
    id: `iv-${randomBytes(8).toString('hex')}`,
    state: 'PENDING',
    status: 'ACTIVE',
    config: {
      codeArtifactUri: 'file:///srv/app',
      baseImageArn: 'arn:aws:lambda:local:aws:microvm-image:debian-12',
      memoryMiB: 512,
      vcpus: 1,
      diskSizeMiB: 2048,
      appPort: 8080,
      hooks: { port: 9000, microvmHooks: { run: 'ENABLED', runTimeoutInSeconds: 10 } },
      environmentVariables: { A: '1', QUOTE: 'it\'s "quoted" \u00e9' },
    },
    createdAt: T0,
    updatedAt: T0,
    ...overrides,
  };
}

export function buildRecord(
  imageName: string,
  version: string,
  overrides: Partial<ImageBuildRecord> = {},
): ImageBuildRecord {
  return {
    id: `b-${randomBytes(8).toString('hex')}`,
    imageName,
    version,
    buildState: 'PENDING',
    architecture: 'X86_64',
    startedAt: T0,
    ...overrides,
  };
}

export function microvmRecord(microvmId: string, overrides: Partial<MicrovmRecord> = {}): MicrovmRecord {
  return {
    microvmId,
    imageName: 'app',
    imageVersion: '1.0',
    state: 'PENDING',
    maximumDurationInSeconds: 28_800,
    ingressNetworkConnectors: [],
    egressNetworkConnectors: ['arn:aws:lambda:local:000000000000:network-connector:out:1'],
    tokenGeneration: 0,
    startedAt: T0,
    updatedAt: T0,
    ...overrides,
  };
}
