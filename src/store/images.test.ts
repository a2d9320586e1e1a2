import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import type { Store } from './database.js';
import { StoreConflictError, StoreNotFoundError } from './errors.js';
import {
  T0,
  at,
  buildRecord,
  imageRecord,
  testBackends,
  versionInput,
  type TestDatabase,
} from './testing.js';

describe.each(testBackends())('images on $name', (backend) => {
  let db: TestDatabase;
  let store: Store;

  beforeEach(async () => {
    db = await backend.create();
    store = await db.open({ now: () => new Date(at(60)) });
  });

  afterEach(async () => {
    await store.close();
    await db.dispose();
  });

  it('creates and reads back an image with exactly the fields that were set', async () => {
    const full = imageRecord('full', {
      state: 'CREATED',
      stateReason: 'ok',
      description: 'a "quoted" description \u00e9',
      latestVersion: '3.0',
      latestActiveVersion: '2.0',
      latestFailedVersion: '3.0',
      tags: { env: 'prod', 'key with spaces': 'v' },
    });
    expect(await store.images.create(full)).toEqual(full);
    expect(await store.images.get('full')).toStrictEqual(full);

    const minimal = imageRecord('minimal', { tags: {} });
    expect(await store.images.create(minimal)).toStrictEqual(minimal);
    expect(Object.keys((await store.images.get('minimal'))!)).not.toContain('description');
  });

  it('returns undefined for an unknown image', async () => {
    expect(await store.images.get('nope')).toBeUndefined();
  });

  it('refuses a duplicate name with STORE_CONFLICT and keeps the first image', async () => {
    await store.images.create(imageRecord('dup', { description: 'first' }));
    const err = await store.images
      .create(imageRecord('dup', { description: 'second' }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreConflictError);
    expect(hasCode(err, 'STORE_CONFLICT')).toBe(true);
    expect((await store.images.get('dup'))?.description).toBe('first');
  });

  it('updates only the fields in the patch, clears fields set to null, and stamps updatedAt', async () => {
    await store.images.create(imageRecord('u', { description: 'd', stateReason: 'building' }));
    const updated = await store.images.update('u', { state: 'CREATED', stateReason: null, tags: { x: 'y' } });
    expect(updated).toStrictEqual({
      ...imageRecord('u', { description: 'd' }),
      state: 'CREATED',
      tags: { x: 'y' },
      updatedAt: at(60),
    });
    expect(await store.images.get('u')).toStrictEqual(updated);
    const explicit = await store.images.update('u', { latestActiveVersion: '1.0', updatedAt: at(5) });
    expect(explicit.updatedAt).toBe(at(5));
    expect(explicit.latestActiveVersion).toBe('1.0');
  });

  it('fails to update an unknown image with STORE_NOT_FOUND', async () => {
    await expect(store.images.update('ghost', { state: 'CREATED' })).rejects.toBeInstanceOf(
      StoreNotFoundError,
    );
  });

  it('deletes an image with its versions and builds, idempotently', async () => {
    await store.images.create(imageRecord('del'));
    const v = await store.versions.create(versionInput('del'));
    const b = await store.builds.create(buildRecord('del', v.version));
    expect(await store.images.delete('del')).toBe(true);
    expect(await store.images.get('del')).toBeUndefined();
    expect(await store.versions.get('del', v.version)).toBeUndefined();
    expect(await store.builds.get(b.id)).toBeUndefined();
    expect(await store.images.delete('del')).toBe(false);
    // The name is free again, and its version numbers start over.
    await store.images.create(imageRecord('del'));
    expect((await store.versions.create(versionInput('del'))).version).toBe('1.0');
  });

  it('lists by name, paging through every image exactly once', async () => {
    const names = Array.from({ length: 23 }, (_, i) => `img-${String(i).padStart(2, '0')}`);
    for (const n of [...names].reverse()) await store.images.create(imageRecord(n));
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await store.images.list({ limit: 5, cursor });
      expect(page.items.length).toBeLessThanOrEqual(5);
      seen.push(...page.items.map((i) => i.name));
      cursor = page.nextCursor;
      pages++;
    } while (cursor);
    expect(seen).toEqual(names);
    expect(pages).toBe(5);
  });

  it('gives no cursor when the last page is exactly full', async () => {
    for (const n of ['a', 'b', 'c', 'd']) await store.images.create(imageRecord(n));
    const first = await store.images.list({ limit: 2 });
    const second = await store.images.list({ limit: 2, cursor: first.nextCursor });
    expect(second.items.map((i) => i.name)).toEqual(['c', 'd']);
    expect(second.nextCursor).toBeUndefined();
    expect(await store.images.list()).toEqual({ items: expect.any(Array) });
  });

  it('does not skip or repeat images when others are created or deleted between pages', async () => {
    for (const n of ['b', 'd', 'f', 'h']) await store.images.create(imageRecord(n));
    const first = await store.images.list({ limit: 2 });
    expect(first.items.map((i) => i.name)).toEqual(['b', 'd']);
    await store.images.create(imageRecord('a')); // before the cursor: not seen
    await store.images.create(imageRecord('e')); // after it: seen
    await store.images.delete('d'); // the cursor's own row
    const rest = await store.images.list({ limit: 10, cursor: first.nextCursor });
    expect(rest.items.map((i) => i.name)).toEqual(['e', 'f', 'h']);
  });

  it('filters by a name fragment, ignoring case and treating LIKE wildcards literally', async () => {
    for (const n of ['web_api', 'webXapi', 'Web-Front', 'worker', '100%'])
      await store.images.create(imageRecord(n));
    const names = async (nameFilter: string) =>
      (await store.images.list({ nameFilter })).items.map((i) => i.name).sort();
    expect(await names('web')).toEqual(['Web-Front', 'webXapi', 'web_api'].sort());
    expect(await names('_')).toEqual(['web_api']);
    expect(await names('%')).toEqual(['100%']);
    expect(await names('WORK')).toEqual(['worker']);
    expect(await names('')).toHaveLength(5);
    const paged = await store.images.list({ nameFilter: 'web', limit: 1 });
    const next = await store.images.list({ nameFilter: 'web', limit: 5, cursor: paged.nextCursor });
    expect([...paged.items, ...next.items].map((i) => i.name)).toEqual(['Web-Front', 'webXapi', 'web_api']);
  });

  it('rejects bad limits and foreign or garbled cursors with STORE_INVALID_ARGUMENT', async () => {
    await store.images.create(imageRecord('a'));
    await store.images.create(imageRecord('b'));
    for (const limit of [0, -1, 1.5, 1001]) {
      const err = await store.images.list({ limit }).catch((e: unknown) => e);
      expect(hasCode(err, 'STORE_INVALID_ARGUMENT'), String(limit)).toBe(true);
    }
    const foreign = Buffer.from(JSON.stringify({ l: 'microvms', k: [T0, 'x'] })).toString('base64url');
    for (const cursor of ['garbage!', foreign, Buffer.from('{"l":"images","k":[1]}').toString('base64url')]) {
      const err = await store.images.list({ cursor }).catch((e: unknown) => e);
      expect(hasCode(err, 'STORE_INVALID_ARGUMENT'), cursor).toBe(true);
    }
  });
});
