import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import type { NetworkConnectorRecord } from '../core/model.js';
import type { Store } from './database.js';
import { StoreNotFoundError } from './errors.js';
import { T0, at, microvmRecord, testBackends, type TestDatabase } from './testing.js';

const ARN = 'arn:hearth:lambda:local:000000000000:network-connector:';

function connector(name: string, overrides: Partial<NetworkConnectorRecord> = {}): NetworkConnectorRecord {
  return {
    name,
    arn: `${ARN}${name}`,
    egressRules: [
      { cidr: '10.0.5.0/24', protocol: 'TCP', ports: [{ port: 5432 }] },
      { hostname: '*.example.com', protocol: 'ALL' },
    ],
    tags: {},
    createdAt: T0,
    ...overrides,
  };
}

describe.each(testBackends())('network connectors on $name', (backend) => {
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

  it('creates and reads back a connector with exactly the fields that were set', async () => {
    const full = connector('db_access', { description: 'the "db" \u00e9', tags: { team: 'core' } });
    expect(await store.networkConnectors.create(full)).toStrictEqual(full);
    expect(await store.networkConnectors.get('db_access')).toStrictEqual(full);
    expect(Object.keys((await store.networkConnectors.create(connector('bare')))!)).not.toContain(
      'description',
    );
    expect(await store.networkConnectors.get('nope')).toBeUndefined();
  });

  it('refuses a duplicate name with STORE_CONFLICT and keeps the first', async () => {
    await store.networkConnectors.create(connector('dup', { description: 'first' }));
    const err = await store.networkConnectors
      .create(connector('dup', { description: 'second' }))
      .catch((e: unknown) => e);
    expect(hasCode(err, 'STORE_CONFLICT')).toBe(true);
    expect((await store.networkConnectors.get('dup'))?.description).toBe('first');
  });

  it('lists by name, page by page', async () => {
    const names = Array.from({ length: 7 }, (_, i) => `c-${i}`);
    for (const n of [...names].reverse()) await store.networkConnectors.create(connector(n));
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.networkConnectors.list({ limit: 3, ...(cursor ? { cursor } : {}) });
      seen.push(...page.items.map((c) => c.name));
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen).toEqual(names);
  });

  it('replaces tags, and says STORE_NOT_FOUND for an unknown connector', async () => {
    await store.networkConnectors.create(connector('t', { tags: { a: '1' } }));
    expect((await store.networkConnectors.setTags('t', { b: '2' })).tags).toEqual({ b: '2' });
    await expect(store.networkConnectors.setTags('ghost', {})).rejects.toBeInstanceOf(StoreNotFoundError);
  });

  it('finds the microVMs that use a connector and are not TERMINATED, taking LIKE wildcards literally', async () => {
    await store.networkConnectors.create(connector('a_b'));
    await store.microvms.create(
      microvmRecord('m-running', { state: 'RUNNING', egressNetworkConnectors: [`${ARN}a_b`] }),
    );
    await store.microvms.create(
      microvmRecord('m-suspended', { state: 'SUSPENDED', egressNetworkConnectors: ['x', `${ARN}a_b`] }),
    );
    await store.microvms.create(
      microvmRecord('m-gone', { state: 'TERMINATED', egressNetworkConnectors: [`${ARN}a_b`] }),
    );
    // `_` is a LIKE wildcard and `a_b` a prefix of `a_bc`: neither may match.
    await store.microvms.create(
      microvmRecord('m-other', { state: 'RUNNING', egressNetworkConnectors: [`${ARN}aXb`] }),
    );
    await store.microvms.create(
      microvmRecord('m-longer', { state: 'RUNNING', egressNetworkConnectors: [`${ARN}a_bc`] }),
    );
    expect(await store.networkConnectors.usedBy(`${ARN}a_b`)).toEqual(['m-running', 'm-suspended']);
    expect(await store.networkConnectors.usedBy(`${ARN}zzz`)).toEqual([]);
  });

  it('locks an existing connector inside a transaction, and deletes it', async () => {
    await store.networkConnectors.create(connector('l'));
    expect(await store.transaction((tx) => tx.networkConnectors.lock('l'))).toBe(true);
    expect(await store.transaction((tx) => tx.networkConnectors.lock('missing'))).toBe(false);
    expect(await store.networkConnectors.get('l')).toStrictEqual(connector('l'));
    expect(await store.networkConnectors.delete('l')).toBe(true);
    expect(await store.networkConnectors.delete('l')).toBe(false);
    expect(await store.networkConnectors.get('l')).toBeUndefined();
  });
});
