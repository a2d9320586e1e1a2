import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import type { MicrovmState } from '../core/model.js';
import type { Store } from './database.js';
import { StoreConflictError, StoreNotFoundError } from './errors.js';
import { at, microvmRecord, testBackends, type TestDatabase } from './testing.js';

describe.each(testBackends())('microVMs on $name', (backend) => {
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

  it('creates and reads back a microVM, nested fields included', async () => {
    const vm = microvmRecord('microvm-1', {
      idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 0, autoResumeEnabled: false },
      runHookPayload: '{"user":"ada","emoji":"\u{1F525}"}',
      ingressNetworkConnectors: ['in-1', 'in-2'],
      clientToken: 'tok-1',
      stateReason: 'launching',
    });
    expect(await store.microvms.create(vm)).toStrictEqual(vm);
    expect(await store.microvms.get('microvm-1')).toStrictEqual(vm);
    const bare = microvmRecord('microvm-2');
    expect(await store.microvms.create(bare)).toStrictEqual(bare);
    expect(await store.microvms.get('microvm-3')).toBeUndefined();
  });

  it('refuses a duplicate id with STORE_CONFLICT', async () => {
    await store.microvms.create(microvmRecord('dup'));
    const err = await store.microvms.create(microvmRecord('dup')).catch((e: unknown) => e);
    expect(hasCode(err, 'STORE_CONFLICT')).toBe(true);
  });

  it('updates fields, clears nulls and stamps updatedAt', async () => {
    await store.microvms.create(
      microvmRecord('vm', {
        idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 10, autoResumeEnabled: true },
      }),
    );
    const suspended = await store.microvms.update('vm', {
      state: 'SUSPENDED',
      suspendedAt: at(30),
      idlePolicy: null,
      egressNetworkConnectors: [],
      tokenGeneration: 1,
    });
    expect(suspended).toStrictEqual({
      ...microvmRecord('vm'),
      state: 'SUSPENDED',
      suspendedAt: at(30),
      egressNetworkConnectors: [],
      tokenGeneration: 1,
      updatedAt: at(60),
    });
    expect(await store.microvms.get('vm')).toStrictEqual(suspended);
    await expect(store.microvms.update('ghost', { state: 'RUNNING' })).rejects.toBeInstanceOf(
      StoreNotFoundError,
    );
  });

  it('applies a transition only from the expected state', async () => {
    await store.microvms.create(microvmRecord('vm', { state: 'RUNNING' }));
    const ok = await store.microvms.update('vm', { state: 'SUSPENDING' }, { expectedState: 'RUNNING' });
    expect(ok.state).toBe('SUSPENDING');

    const err = await store.microvms
      .update('vm', { state: 'TERMINATING', stateReason: 'x' }, { expectedState: 'RUNNING' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreConflictError);
    expect((err as Error).message).toContain('SUSPENDING');
    expect(await store.microvms.get('vm')).toMatchObject({ state: 'SUSPENDING' });
    expect((await store.microvms.get('vm'))?.stateReason).toBeUndefined();

    const multi = await store.microvms.update(
      'vm',
      { state: 'TERMINATING' },
      { expectedState: ['RUNNING', 'SUSPENDING', 'SUSPENDED'] },
    );
    expect(multi.state).toBe('TERMINATING');
    await expect(
      store.microvms.update('vm', { state: 'RUNNING' }, { expectedState: [] }),
    ).rejects.toBeInstanceOf(StoreConflictError);
    await expect(
      store.microvms.update('ghost', { state: 'RUNNING' }, { expectedState: 'PENDING' }),
    ).rejects.toBeInstanceOf(StoreNotFoundError);
  });

  it('lets exactly one of several concurrent transitions from one state win', async () => {
    await store.microvms.create(microvmRecord('vm', { state: 'RUNNING' }));
    const targets: MicrovmState[] = ['SUSPENDING', 'TERMINATING', 'SUSPENDING', 'TERMINATING', 'SUSPENDING'];
    const results = await Promise.allSettled(
      targets.map((state) => store.microvms.update('vm', { state }, { expectedState: 'RUNNING' })),
    );
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(StoreConflictError);
    expect((await store.microvms.get('vm'))?.state).toBe(
      (won[0] as PromiseFulfilledResult<{ state: string }>).value.state,
    );
  });

  it('lists with filters, oldest first, paging through each exactly once', async () => {
    const states: MicrovmState[] = ['RUNNING', 'SUSPENDED', 'TERMINATED'];
    const all: string[] = [];
    for (let i = 0; i < 30; i++) {
      const id = `microvm-${String(29 - i).padStart(2, '0')}`; // ids run against start order
      all.push(id);
      await store.microvms.create(
        microvmRecord(id, {
          imageName: i % 2 ? 'app' : 'web',
          imageVersion: i % 4 < 2 ? '1.0' : '2.0',
          state: states[i % 3],
          startedAt: at(Math.floor(i / 2)), // pairs share a start time
        }),
      );
    }
    const collect = async (filter: Parameters<Store['microvms']['list']>[0]) => {
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.microvms.list({ ...filter, limit: 4, cursor });
        expect(page.items.length).toBeLessThanOrEqual(4);
        seen.push(...page.items.map((v) => v.microvmId));
        cursor = page.nextCursor;
      } while (cursor);
      return seen;
    };
    // Start order, ties broken by id.
    const ordered = all
      .map((id, i) => ({ id, t: Math.floor(i / 2) }))
      .sort((a, b) => a.t - b.t || (a.id < b.id ? -1 : 1))
      .map((x) => x.id);
    expect(await collect({})).toEqual(ordered);

    const app = await collect({ imageName: 'app' });
    expect(app).toHaveLength(15);
    const appV2Running = await collect({ imageName: 'app', imageVersion: '2.0', state: 'RUNNING' });
    for (const id of appV2Running)
      expect(await store.microvms.get(id)).toMatchObject({
        imageName: 'app',
        imageVersion: '2.0',
        state: 'RUNNING',
      });
    const expectedCount = all.filter((_, i) => i % 2 === 1 && i % 4 >= 2 && i % 3 === 0).length;
    expect(appV2Running).toHaveLength(expectedCount);
    expect(await collect({ imageName: 'none' })).toEqual([]);
  });

  it('lists every microVM in the given states for recovery', async () => {
    const states: MicrovmState[] = [
      'PENDING',
      'RUNNING',
      'SUSPENDING',
      'SUSPENDED',
      'TERMINATING',
      'TERMINATED',
    ];
    for (let i = 0; i < 60; i++)
      await store.microvms.create(
        microvmRecord(`vm-${String(i).padStart(2, '0')}`, { state: states[i % 6] }),
      );
    const busy = await store.microvms.listByStates(['PENDING', 'SUSPENDING', 'TERMINATING']);
    expect(busy).toHaveLength(30);
    expect(new Set(busy.map((v) => v.state))).toEqual(new Set(['PENDING', 'SUSPENDING', 'TERMINATING']));
    expect(busy.map((v) => v.microvmId)).toEqual([...busy.map((v) => v.microvmId)].sort());
    expect(await store.microvms.listByStates([])).toEqual([]);
  });
});
