import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import type { Store } from '../store/database.js';
import { microvmRecord, testBackends, type TestDatabase } from '../store/testing.js';
import { DEFAULT_VM_SUBNET } from './egress-rules.js';
import { NetworkConnectorService, type NewNetworkConnector } from './network-connectors.js';

const ACCOUNT = '000000000000';
const M = (n: string) => `arn:hearth:lambda:local:hearth:network-connector:${n}`;
const AWS = (n: string) => `arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:${n}`;
const U = (n: string) => `arn:hearth:lambda:local:${ACCOUNT}:network-connector:${n}`;

const DB: NewNetworkConnector = {
  name: 'db',
  description: 'the database',
  egressRules: [{ cidr: '10.0.5.0/24', protocol: 'TCP', ports: [{ port: 5432 }] }],
};

/** The error `p` rejects with, as `code: message`. */
async function failure(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'no error',
    (e: Error & { code?: string }) => `${e.code}: ${e.message}`,
  );
}

describe.each(testBackends())('the network connector service on $name', (backend) => {
  let db: TestDatabase;
  let store: Store;
  let svc: NetworkConnectorService;

  beforeEach(async () => {
    db = await backend.create();
    store = await db.open();
    svc = new NetworkConnectorService({
      store,
      region: 'local',
      accountId: ACCOUNT,
      vmSubnet: DEFAULT_VM_SUBNET,
      now: () => Date.parse('2026-01-01T00:00:00Z'),
    });
  });

  afterEach(async () => {
    await store.close();
    await db.dispose();
  });

  it('creates an allow-list and gets it by name or ARN', async () => {
    const created = await svc.create({ ...DB, tags: { team: 'data' } });
    expect(created).toEqual({
      connectorArn: U('db'),
      name: 'db',
      type: 'EGRESS_ALLOW_LIST',
      description: 'the database',
      egressRules: [{ cidr: '10.0.5.0/24', protocol: 'TCP', ports: [{ port: 5432 }] }],
      state: 'ACTIVE',
      createdAt: '2026-01-01T00:00:00.000Z',
      tags: { team: 'data' },
    });
    expect(await svc.get('db')).toEqual(created);
    expect(await svc.get(U('db'))).toEqual(created);
    expect(await failure(svc.get('nope'))).toBe(
      'NETWORK_CONNECTOR_NOT_FOUND: network connector nope not found',
    );
    expect(await failure(svc.get('arn:hearth:lambda:other:1:network-connector:db'))).toMatch(
      /^VALIDATION: connectorIdentifier: .* is not a connector of this Hearth/,
    );
  });

  it('describes the managed connectors by name or ARN, in either form', async () => {
    expect(await svc.get('INTERNET_EGRESS')).toMatchObject({
      connectorArn: M('INTERNET_EGRESS'),
      type: 'MANAGED_EGRESS',
      state: 'ACTIVE',
    });
    expect(await svc.get(AWS('NO_INGRESS'))).toMatchObject({ name: 'NO_INGRESS', type: 'MANAGED_INGRESS' });
    expect(await failure(svc.get(M('SHELL_INGRESS')))).toMatch(/^NETWORK_CONNECTOR_NOT_FOUND: /);
  });

  it('refuses duplicates, managed names and bad rules', async () => {
    await svc.create(DB);
    expect(await failure(svc.create(DB))).toBe(
      'NETWORK_CONNECTOR_CONFLICT: a network connector named db already exists',
    );
    expect(await failure(svc.create({ ...DB, name: 'HTTP_INGRESS' }))).toBe(
      'NETWORK_CONNECTOR_CONFLICT: HTTP_INGRESS is the name of a managed connector',
    );
    expect(
      await failure(svc.create({ ...DB, name: 'x', egressRules: [{ cidr: '169.254.169.254/32' }] })),
    ).toMatch(/^VALIDATION: egressRules\.1\.member\.cidr: .*'169\.254\.169\.254\/32' overlaps link-local/);
    expect(await store.networkConnectors.get('x')).toBeUndefined();
  });

  it('replays a create with the same clientToken, and refuses the token with other parameters', async () => {
    const a = await svc.create({ ...DB, clientToken: 't1' });
    expect(await svc.create({ ...DB, clientToken: 't1' })).toEqual(a);
    expect(await failure(svc.create({ ...DB, description: 'other', clientToken: 't1' }))).toMatch(
      /^IDEMPOTENCY_MISMATCH: /,
    );
    // A failed create forgets its token.
    expect(await failure(svc.create({ ...DB, name: 'bad', egressRules: [{}], clientToken: 't2' }))).toMatch(
      /^VALIDATION/,
    );
    expect((await svc.create({ ...DB, name: 'good', clientToken: 't2' })).name).toBe('good');
  });

  it('lists the managed connectors, then the user ones, page by page', async () => {
    for (const name of ['b', 'a', 'c']) await svc.create({ ...DB, name });
    const all = ['ALL_INGRESS', 'HTTP_INGRESS', 'NO_INGRESS', 'INTERNET_EGRESS', 'a', 'b', 'c'];
    expect((await svc.list()).items.map((c) => c.name)).toEqual(all);
    for (const limit of [1, 2, 3, 4, 5, 7]) {
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await svc.list({ limit, ...(cursor ? { cursor } : {}) });
        expect(page.items.length).toBeLessThanOrEqual(limit);
        seen.push(...page.items.map((c) => c.name));
        cursor = page.nextCursor;
        pages++;
      } while (cursor);
      expect(seen, `limit ${limit}`).toEqual(all);
      expect(pages, `limit ${limit}`).toBe(Math.ceil(all.length / limit));
    }
    expect(await failure(svc.list({ cursor: 'garbage' }))).toMatch(/^STORE_INVALID_ARGUMENT/);
  });

  it('gives no cursor after the managed ones when there are no user connectors', async () => {
    expect(await svc.list({ limit: 4 })).toEqual({ items: expect.any(Array) });
  });

  it('deletes a connector no live microVM uses, and names the microVMs that do', async () => {
    await svc.create(DB);
    await store.microvms.create(
      microvmRecord('microvm-a', { state: 'RUNNING', egressNetworkConnectors: [U('db')] }),
    );
    await store.microvms.create(
      microvmRecord('microvm-b', { state: 'SUSPENDED', egressNetworkConnectors: [U('db')] }),
    );
    expect(await failure(svc.delete('db'))).toBe(
      'NETWORK_CONNECTOR_CONFLICT: network connector db is used by 2 microVMs that are not TERMINATED: microvm-a, microvm-b',
    );
    await store.microvms.update('microvm-a', { state: 'TERMINATED' });
    await store.microvms.update('microvm-b', { state: 'TERMINATED' });
    await svc.delete(U('db'));
    expect(await failure(svc.get('db'))).toMatch(/NOT_FOUND/);
    expect(await failure(svc.delete('db'))).toMatch(/NOT_FOUND/);
    expect(await failure(svc.delete('NO_INGRESS'))).toBe(
      'VALIDATION: connectorIdentifier: NO_INGRESS is a managed connector: it cannot be deleted',
    );
  });

  it('tags user connectors, at most 50 tags, and refuses managed ones', async () => {
    await svc.create({ ...DB, tags: { a: '1' } });
    await svc.tag(U('db'), { b: '2' });
    await svc.untag(U('db'), ['a', 'zz']);
    expect(await svc.tags(U('db'))).toEqual({ b: '2' });
    const many = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, 'v']));
    expect(await failure(svc.tag(U('db'), many))).toBe(
      'VALIDATION: Tags: a network connector has at most 50 tags; this would make 51',
    );
    expect(await failure(svc.tag(M('INTERNET_EGRESS'), { a: 'b' }))).toBe(
      'VALIDATION: Resource: INTERNET_EGRESS is a managed connector: it cannot be tagged',
    );
    expect(svc.isConnectorArn(U('db'))).toBe(true);
    expect(svc.isConnectorArn('arn:hearth:lambda:local:000000000000:microvm-image:db')).toBe(false);
  });

  describe('resolveForRun', () => {
    beforeEach(async () => {
      await svc.create(DB);
      await svc.create({ name: 'web', egressRules: [{ hostname: '*.example.com', ports: [{ port: 443 }] }] });
    });

    it('defaults to HTTP_INGRESS and no egress at all', async () => {
      expect(await svc.resolveForRun()).toEqual({
        ingress: [M('HTTP_INGRESS')],
        egress: [],
        egressPolicy: { internet: false, allow: [] },
        userConnectors: [],
      });
    });

    it('resolves managed and user connectors, AWS-form ARNs to Hearth ones, into one policy', async () => {
      expect(
        await svc.resolveForRun([AWS('ALL_INGRESS')], [AWS('INTERNET_EGRESS'), U('db'), U('web')]),
      ).toEqual({
        ingress: [M('ALL_INGRESS')],
        egress: [M('INTERNET_EGRESS'), U('db'), U('web')],
        egressPolicy: {
          internet: true,
          allow: [
            { cidr: '10.0.5.0/24', protocol: 'tcp', ports: [{ from: 5432, to: 5432 }] },
            { hostname: '*.example.com', protocol: 'all', ports: [{ from: 443, to: 443 }] },
          ],
        },
        userConnectors: ['db', 'web'],
      });
    });

    it.each([
      [
        ['HTTP_INGRESS'],
        [],
        `VALIDATION: ingressNetworkConnectors.1.member: 'HTTP_INGRESS' is a name; connectors are given by ARN: use ${M('HTTP_INGRESS')}`,
      ],
      [
        [],
        ['db'],
        `VALIDATION: egressNetworkConnectors.1.member: 'db' is a name; connectors are given by ARN: use ${U('db')}`,
      ],
      [
        [],
        [M('HTTP_INGRESS')],
        `VALIDATION: egressNetworkConnectors.1.member: ${M('HTTP_INGRESS')} is an ingress connector; put it in ingressNetworkConnectors`,
      ],
      [
        [U('db')],
        [],
        `VALIDATION: ingressNetworkConnectors.1.member: ${U('db')} is an egress connector; put it in egressNetworkConnectors`,
      ],
      [
        [M('INTERNET_EGRESS')],
        [],
        `VALIDATION: ingressNetworkConnectors.1.member: ${M('INTERNET_EGRESS')} is an egress connector; put it in egressNetworkConnectors`,
      ],
      [
        [M('NO_INGRESS'), M('HTTP_INGRESS')],
        [],
        'VALIDATION: ingressNetworkConnectors: NO_INGRESS cannot be combined with another ingress connector',
      ],
      [
        [M('HTTP_INGRESS'), AWS('HTTP_INGRESS')],
        [],
        `VALIDATION: ingressNetworkConnectors: ${M('HTTP_INGRESS')} is listed twice`,
      ],
      [[], [U('db'), U('db')], `VALIDATION: egressNetworkConnectors: ${U('db')} is listed twice`],
      [[], [U('gone')], `NETWORK_CONNECTOR_NOT_FOUND: network connector ${U('gone')} not found`],
      [
        [],
        ['arn:hearth:lambda:local:000000000000:microvm-image:x'],
        'VALIDATION: egressNetworkConnectors.1.member: ',
      ],
      [
        [M('SHELL_INGRESS')],
        [],
        "NETWORK_CONNECTOR_NOT_FOUND: network connector 'SHELL_INGRESS' (managed) not found",
      ],
    ])('refuses ingress %j egress %j', async (ingress, egress, expected) => {
      expect(await failure(svc.resolveForRun(ingress, egress))).toContain(expected);
    });
  });

  it('locks user connectors for a microVM being recorded, and fails once one is gone', async () => {
    await svc.create(DB);
    await store.transaction((tx) => svc.lockUserConnectors(tx, ['db']));
    await svc.delete('db');
    const err = await store.transaction((tx) => svc.lockUserConnectors(tx, ['db'])).catch((e: unknown) => e);
    expect(hasCode(err, 'NETWORK_CONNECTOR_NOT_FOUND')).toBe(true);
  });
});
