import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Store } from './database.js';
import { StoreConflictError } from './errors.js';
import { T0, testBackends, type TestDatabase } from './testing.js';

describe.each(testBackends())('API keys on $name', (backend) => {
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

  it('creates, reads, lists and deletes keys', async () => {
    const k1 = { accessKeyId: 'HK2', secretAccessKey: 's2', description: 'ci', createdAt: T0 };
    const k2 = { accessKeyId: 'HK1', secretAccessKey: 's1', createdAt: T0 };
    expect(await store.apiKeys.create(k1)).toStrictEqual(k1);
    expect(await store.apiKeys.create(k2)).toStrictEqual(k2);
    expect(await store.apiKeys.get('HK2')).toStrictEqual(k1);
    expect(await store.apiKeys.get('HK3')).toBeUndefined();

    const first = await store.apiKeys.list({ limit: 1 });
    expect(first.items).toEqual([k2]);
    const second = await store.apiKeys.list({ limit: 1, cursor: first.nextCursor });
    expect(second).toEqual({ items: [k1] });

    await expect(store.apiKeys.create({ ...k1, secretAccessKey: 'other' })).rejects.toBeInstanceOf(
      StoreConflictError,
    );
    expect((await store.apiKeys.get('HK2'))?.secretAccessKey).toBe('s2');
    expect(await store.apiKeys.delete('HK2')).toBe(true);
    expect(await store.apiKeys.delete('HK2')).toBe(false);
    expect((await store.apiKeys.list()).items).toEqual([k2]);
  });
});
