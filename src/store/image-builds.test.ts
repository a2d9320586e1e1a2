import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Store } from './database.js';
import { StoreConflictError, StoreNotFoundError } from './errors.js';
import { at, buildRecord, imageRecord, testBackends, versionInput, type TestDatabase } from './testing.js';

describe.each(testBackends())('image builds on $name', (backend) => {
  let db: TestDatabase;
  let store: Store;

  beforeEach(async () => {
    db = await backend.create();
    store = await db.open();
    await store.images.create(imageRecord('app'));
    await store.versions.create(versionInput('app'));
    await store.versions.create(versionInput('app'));
  });

  afterEach(async () => {
    await store.close();
    await db.dispose();
  });

  it('creates and reads back a build', async () => {
    const b = buildRecord('app', '1.0', { buildState: 'IN_PROGRESS', stateReason: 'building' });
    expect(await store.builds.create(b)).toStrictEqual(b);
    expect(await store.builds.get(b.id)).toStrictEqual(b);
    expect(await store.builds.get('b-none')).toBeUndefined();
  });

  it('refuses a build of an unknown version (STORE_NOT_FOUND) or a taken id (STORE_CONFLICT)', async () => {
    await expect(store.builds.create(buildRecord('app', '7.0'))).rejects.toBeInstanceOf(StoreNotFoundError);
    await expect(store.builds.create(buildRecord('ghost', '1.0'))).rejects.toBeInstanceOf(StoreNotFoundError);
    const b = await store.builds.create(buildRecord('app', '1.0'));
    await expect(store.builds.create(buildRecord('app', '2.0', { id: b.id }))).rejects.toBeInstanceOf(
      StoreConflictError,
    );
  });

  it('records the outcome, sizes above 2^32 included', async () => {
    const b = await store.builds.create(buildRecord('app', '1.0'));
    const big = 8 * 1024 ** 3 + 12345;
    const done = await store.builds.update(b.id, {
      buildState: 'SUCCESSFUL',
      snapshotMemorySizeInBytes: big,
      snapshotDiskSizeInBytes: 2 ** 40,
      codeInstallSizeInBytes: 0,
      endedAt: at(300),
    });
    expect(done).toStrictEqual({
      ...b,
      buildState: 'SUCCESSFUL',
      snapshotMemorySizeInBytes: big,
      snapshotDiskSizeInBytes: 2 ** 40,
      codeInstallSizeInBytes: 0,
      endedAt: at(300),
    });
    expect(await store.builds.get(b.id)).toStrictEqual(done);

    const failed = await store.builds.update(b.id, {
      buildState: 'FAILED',
      failureCode: 'READY_TIMEOUT',
      stateReason: 'no reply on port 8080',
      snapshotMemorySizeInBytes: null,
    });
    expect(failed.failureCode).toBe('READY_TIMEOUT');
    expect(failed).not.toHaveProperty('snapshotMemorySizeInBytes');
    expect(await store.builds.update(b.id, {})).toStrictEqual(failed);
    await expect(store.builds.update('b-none', { buildState: 'FAILED' })).rejects.toBeInstanceOf(
      StoreNotFoundError,
    );
    await expect(store.builds.update('b-none', {})).rejects.toBeInstanceOf(StoreNotFoundError);
  });

  it('lists the builds of one version by start time, paging through each exactly once', async () => {
    const ids: string[] = [];
    // Several builds share a start time: the id breaks the tie.
    for (let i = 0; i < 9; i++) {
      const b = await store.builds.create(buildRecord('app', '1.0', { startedAt: at(Math.floor(i / 3)) }));
      ids.push(b.id);
    }
    await store.builds.create(buildRecord('app', '2.0'));
    const expected = ids
      .map((id, i) => ({ id, t: Math.floor(i / 3) }))
      .sort((a, b) => a.t - b.t || (a.id < b.id ? -1 : 1))
      .map((x) => x.id);
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.builds.listByVersion('app', '1.0', { limit: 2, cursor });
      seen.push(...page.items.map((b) => b.id));
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen).toEqual(expected);
    expect((await store.builds.listByVersion('app', '2.0')).items).toHaveLength(1);
  });

  it('goes away with its version', async () => {
    const b = await store.builds.create(buildRecord('app', '2.0'));
    await store.versions.delete('app', '2.0');
    expect(await store.builds.get(b.id)).toBeUndefined();
  });
});
