import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Store } from './database.js';
import { StoreConflictError, StoreNotFoundError } from './errors.js';
import { at, imageRecord, testBackends, versionInput, type TestDatabase } from './testing.js';

describe.each(testBackends())('image versions on $name', (backend) => {
  let db: TestDatabase;
  let store: Store;

  beforeEach(async () => {
    db = await backend.create();
    store = await db.open({ now: () => new Date(at(60)) });
    await store.images.create(imageRecord('app'));
  });

  afterEach(async () => {
    await store.close();
    await db.dispose();
  });

  it('numbers versions 1.0, 2.0, ... per image and makes the newest the image latestVersion', async () => {
    await store.images.create(imageRecord('other'));
    const v1 = await store.versions.create(versionInput('app'));
    const v2 = await store.versions.create(versionInput('app'));
    const o1 = await store.versions.create(versionInput('other'));
    expect([v1.version, v2.version, o1.version]).toEqual(['1.0', '2.0', '1.0']);
    const image = await store.images.get('app');
    expect(image?.latestVersion).toBe('2.0');
    expect(image?.updatedAt).toBe(at(60));
  });

  it('reads a version back whole, config included, by number and by id', async () => {
    const input = versionInput('app', { stateReason: 'queued' });
    const created = await store.versions.create(input);
    expect(created).toStrictEqual({ ...input, version: '1.0' });
    expect(await store.versions.get('app', '1.0')).toStrictEqual(created);
    expect(await store.versions.getById(input.id)).toStrictEqual(created);
    expect(await store.versions.get('app', '2.0')).toBeUndefined();
    expect(await store.versions.get('nope', '1.0')).toBeUndefined();
  });

  it('allocates distinct numbers to concurrent creates', async () => {
    const created = await Promise.all(
      Array.from({ length: 25 }, () => store.versions.create(versionInput('app'))),
    );
    const versions = created.map((v) => v.version).sort((a, b) => parseFloat(a) - parseFloat(b));
    expect(versions).toEqual(Array.from({ length: 25 }, (_, i) => `${i + 1}.0`));
    expect((await store.images.get('app'))?.latestVersion).toBe('25.0');
  });

  it('allocates distinct numbers to concurrent creates from two stores on one database', async () => {
    const second = await db.open();
    try {
      const created = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 ? store : second).versions.create(versionInput('app'))),
      );
      expect(new Set(created.map((v) => v.version)).size).toBe(20);
    } finally {
      await second.close();
    }
  });

  it('never reuses the number of a deleted version', async () => {
    await store.versions.create(versionInput('app'));
    await store.versions.create(versionInput('app'));
    expect(await store.versions.delete('app', '2.0')).toBe(true);
    expect(await store.versions.delete('app', '2.0')).toBe(false);
    expect((await store.versions.create(versionInput('app'))).version).toBe('3.0');
  });

  it('fails for an unknown image with STORE_NOT_FOUND, and for a taken id with STORE_CONFLICT', async () => {
    await expect(store.versions.create(versionInput('ghost'))).rejects.toBeInstanceOf(StoreNotFoundError);
    const v = await store.versions.create(versionInput('app'));
    await expect(store.versions.create(versionInput('app', { id: v.id }))).rejects.toBeInstanceOf(
      StoreConflictError,
    );
    // The failed create allocated nothing.
    expect((await store.versions.create(versionInput('app'))).version).toBe('2.0');
  });

  it('updates state, status and stateReason', async () => {
    await store.versions.create(versionInput('app', { stateReason: 'queued' }));
    const building = await store.versions.update('app', '1.0', { state: 'IN_PROGRESS', stateReason: null });
    expect(building.state).toBe('IN_PROGRESS');
    expect(building).not.toHaveProperty('stateReason');
    expect(building.updatedAt).toBe(at(60));
    const done = await store.versions.update('app', '1.0', {
      state: 'FAILED',
      status: 'INACTIVE',
      stateReason: 'build failed',
      updatedAt: at(90),
    });
    expect(done).toMatchObject({
      state: 'FAILED',
      status: 'INACTIVE',
      stateReason: 'build failed',
      updatedAt: at(90),
    });
    expect(await store.versions.get('app', '1.0')).toStrictEqual(done);
    await expect(store.versions.update('app', '9.0', { state: 'FAILED' })).rejects.toBeInstanceOf(
      StoreNotFoundError,
    );
  });

  it('lists an image versions in numeric order, paging through each exactly once', async () => {
    for (let i = 0; i < 12; i++) await store.versions.create(versionInput('app'));
    await store.images.create(imageRecord('other'));
    await store.versions.create(versionInput('other'));
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.versions.listByImage('app', { limit: 5, cursor });
      seen.push(...page.items.map((v) => v.version));
      cursor = page.nextCursor;
    } while (cursor);
    // "10.0" after "9.0": numeric, not text, order.
    expect(seen).toEqual(Array.from({ length: 12 }, (_, i) => `${i + 1}.0`));
    expect((await store.versions.listByImage('ghost')).items).toEqual([]);
  });
});
