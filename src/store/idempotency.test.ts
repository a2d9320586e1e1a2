import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Store } from './database.js';
import { StoreNotFoundError } from './errors.js';
import { T0, imageRecord, testBackends, type TestDatabase } from './testing.js';

describe.each(testBackends())('idempotency on $name', (backend) => {
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

  const entry = (overrides = {}) => ({
    scope: 'RunMicrovm',
    clientToken: 'tok-1',
    requestHash: 'h1',
    createdAt: T0,
    ...overrides,
  });

  it('records a token once and returns the first record afterwards', async () => {
    const first = await store.idempotency.putIfAbsent(entry({ result: { microvmId: 'vm-1', n: [1, 2] } }));
    expect(first).toEqual({ created: true, record: entry({ result: { microvmId: 'vm-1', n: [1, 2] } }) });
    const again = await store.idempotency.putIfAbsent(
      entry({ requestHash: 'h2', result: { microvmId: 'vm-2' } }),
    );
    expect(again).toEqual({ created: false, record: first.record });
    expect(await store.idempotency.get('RunMicrovm', 'tok-1')).toEqual(first.record);
  });

  it('keeps tokens apart by scope', async () => {
    await store.idempotency.putIfAbsent(entry());
    const other = await store.idempotency.putIfAbsent(entry({ scope: 'CreateMicrovmImage' }));
    expect(other.created).toBe(true);
    expect(await store.idempotency.get('Other', 'tok-1')).toBeUndefined();
  });

  it('reserves a token without a result, then completes it', async () => {
    const reserved = await store.idempotency.putIfAbsent(entry());
    expect(reserved.created).toBe(true);
    expect(reserved.record).not.toHaveProperty('result');
    await store.idempotency.setResult('RunMicrovm', 'tok-1', { microvmId: 'vm-1' });
    expect((await store.idempotency.get('RunMicrovm', 'tok-1'))?.result).toEqual({ microvmId: 'vm-1' });
    await store.idempotency.setResult('RunMicrovm', 'tok-1', null);
    expect(await store.idempotency.get('RunMicrovm', 'tok-1')).toHaveProperty('result', null);
    await expect(store.idempotency.setResult('RunMicrovm', 'tok-9', {})).rejects.toBeInstanceOf(
      StoreNotFoundError,
    );
    expect(await store.idempotency.delete('RunMicrovm', 'tok-1')).toBe(true);
    expect(await store.idempotency.delete('RunMicrovm', 'tok-1')).toBe(false);
  });

  it('lets exactly one of several concurrent puts of one token win', async () => {
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => store.idempotency.putIfAbsent(entry({ requestHash: `h${i}` }))),
    );
    const winners = results.filter((r) => r.created);
    expect(winners).toHaveLength(1);
    for (const r of results) expect(r.record).toEqual(winners[0]!.record);
  });

  it('outlives the resource it created', async () => {
    await store.images.create(imageRecord('img'));
    await store.idempotency.putIfAbsent(entry({ scope: 'CreateMicrovmImage', result: { name: 'img' } }));
    await store.images.delete('img');
    expect((await store.idempotency.get('CreateMicrovmImage', 'tok-1'))?.result).toEqual({ name: 'img' });
  });
});
