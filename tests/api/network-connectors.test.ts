import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  CreateMicrovmAuthTokenCommand,
  CreateMicrovmImageCommand,
  GetMicrovmCommand,
  ListTagsCommand,
  ResourceNotFoundException,
  RunMicrovmCommand,
  TagResourceCommand,
  TerminateMicrovmCommand,
  UntagResourceCommand,
  ValidationException,
  createEndpointToken,
  createNetworkConnector,
  deleteNetworkConnector,
  getNetworkConnector,
  hearthRequest,
  listNetworkConnectors,
  managedConnectorArn,
  waitForImageVersion,
  waitForMicrovm,
  type GetMicrovmCommandOutput,
} from '../../src/sdk/index.js';
import { onFault } from '../../src/util/faults.js';
import { runCli } from '../helpers/cli.js';
import { BASE_ARN, fixtureImage } from '../helpers/images.js';
import { callEndpoint, startTestServer, type TestServer } from '../helpers/server.js';

const M = (name: 'ALL_INGRESS' | 'HTTP_INGRESS' | 'NO_INGRESS' | 'INTERNET_EGRESS') =>
  managedConnectorArn('local', name);
const AWS = (name: string) => `arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:${name}`;
const DB_RULES = [{ cidr: '10.0.5.0/24', protocol: 'TCP' as const, ports: [{ port: 5432 }] }];

/** The exception an API call rejects with. */
async function rejection(p: Promise<unknown>): Promise<Error & { hint?: string }> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: Error) => e,
  );
}

/** Waits until the microVM's launch has ended: RUNNING, or TERMINATED with its reason. */
async function settled(t: TestServer, id: string): Promise<GetMicrovmCommandOutput> {
  for (;;) {
    const vm = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
    if (vm.state === 'RUNNING' || vm.state === 'TERMINATED') return vm;
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('network connectors through the API', () => {
  let t: TestServer;
  const suffix = Date.now().toString(36);
  const image = `conn-${suffix}`;
  const name = (n: string) => `${n}-${suffix}`;
  const userArn = (n: string) => `arn:hearth:lambda:local:000000000000:network-connector:${name(n)}`;
  const cleanups: (() => void)[] = [];

  beforeAll(async () => {
    t = await startTestServer();
    await t.client.send(
      new CreateMicrovmImageCommand({
        name: image,
        codeArtifact: { uri: fixtureImage('lifecycle') },
        baseImageArn: BASE_ARN,
        buildRoleArn: 'arn:aws:iam::000000000000:role/unused',
        resources: [{ minimumMemoryInMiB: 512 }],
        hooks: { port: 9000, microvmImageHooks: { ready: 'ENABLED' } },
      }),
    );
    expect((await waitForImageVersion(t.client, image, '1.0')).state).toBe('SUCCESSFUL');
  });

  afterEach(() => {
    for (const c of cleanups.splice(0)) c();
  });

  afterAll(async () => {
    await t.stop();
  });

  it('creates, gets, lists page by page and deletes allow-lists; managed connectors are listed, never deleted', async () => {
    const input = {
      name: name('db'),
      description: 'the database',
      egressRules: [
        ...DB_RULES,
        { hostname: 'API.Example.com', ports: [{ range: { startPort: 8000, endPort: 8100 } }] },
      ],
      clientToken: `ct-${suffix}`,
    };
    const created = await createNetworkConnector(t.connection, input);
    expect(created).toEqual({
      connectorArn: userArn('db'),
      name: name('db'),
      type: 'EGRESS_ALLOW_LIST',
      description: 'the database',
      egressRules: [
        ...DB_RULES,
        {
          hostname: 'api.example.com',
          protocol: 'ALL',
          ports: [{ range: { startPort: 8000, endPort: 8100 } }],
        },
      ],
      state: 'ACTIVE',
      createdAt: expect.any(Date),
      tags: {},
    });
    // The same clientToken replays the create.
    expect(await createNetworkConnector(t.connection, input)).toEqual(created);
    expect(await getNetworkConnector(t.connection, name('db'))).toEqual(created);
    expect(await getNetworkConnector(t.connection, userArn('db'))).toEqual(created);
    expect(await getNetworkConnector(t.connection, AWS('INTERNET_EGRESS'))).toMatchObject({
      connectorArn: M('INTERNET_EGRESS'),
      type: 'MANAGED_EGRESS',
    });

    await createNetworkConnector(t.connection, {
      name: name('web'),
      egressRules: [{ hostname: '*.example.com' }],
    });
    const seen: string[] = [];
    let nextToken: string | undefined;
    do {
      const page = await listNetworkConnectors(t.connection, {
        maxResults: 2,
        ...(nextToken ? { nextToken } : {}),
      });
      expect(page.networkConnectors.length).toBeLessThanOrEqual(2);
      seen.push(...page.networkConnectors.map((c) => c.name));
      nextToken = page.nextToken;
    } while (nextToken);
    expect(seen.slice(0, 4)).toEqual(['ALL_INGRESS', 'HTTP_INGRESS', 'NO_INGRESS', 'INTERNET_EGRESS']);
    expect(seen).toContain(name('db'));
    expect(seen).toContain(name('web'));
    expect(new Set(seen).size).toBe(seen.length);

    await deleteNetworkConnector(t.connection, name('web'));
    const gone = await rejection(getNetworkConnector(t.connection, name('web')));
    expect(gone.name).toBe('ResourceNotFoundException');
    const managed = await rejection(deleteNetworkConnector(t.connection, 'INTERNET_EGRESS'));
    expect(managed.name).toBe('ValidationException');
    expect(managed.message).toContain('INTERNET_EGRESS is a managed connector: it cannot be deleted');
  });

  it('refuses bad rules and taken names, naming the field and the limit', async () => {
    const create = (egressRules: unknown, n = name('bad')) =>
      rejection(
        hearthRequest(t.connection, 'POST', '/hearth/v1/network-connectors', { name: n, egressRules }),
      );
    const cases: [unknown, string][] = [
      [
        [{ cidr: '10.0.5.1/24' }],
        "egressRules.1.member.cidr: egress policy refused: '10.0.5.1/24' has host bits set (did you mean 10.0.5.0/24?)",
      ],
      [[{ cidr: '127.0.0.1/32' }], "'127.0.0.1/32' overlaps loopback"],
      [[{ cidr: '10.201.0.0/24' }], 'overlaps the VM subnet 10.201.0.0/16'],
      [[{ hostname: '-not.a.host' }], 'egressRules.1.member.hostname: '],
      [[{}], 'egressRules.1.member: give exactly one of cidr and hostname'],
      [[], 'Member must have length greater than or equal to 1'],
      [[{ cidr: '10.0.5.0/24', ports: [{ port: 70_000 }] }], 'less than or equal to 65535'],
      [
        [{ cidr: '10.0.5.0/24', via: 'x' }],
        "'egressRules.1.member.via' failed to satisfy constraint: Member is not a known field",
      ],
    ];
    for (const [rules, message] of cases) {
      const e = await create(rules);
      expect(e.name, JSON.stringify(rules)).toBe('ValidationException');
      expect(e.message, JSON.stringify(rules)).toContain(message);
    }
    await createNetworkConnector(t.connection, { name: name('taken'), egressRules: DB_RULES });
    const taken = await create(DB_RULES, name('taken'));
    expect(taken.name).toBe('ConflictException');
    expect(taken.message).toBe(`a network connector named ${name('taken')} already exists`);
  });

  it('tags connectors through the AWS tagging operations', async () => {
    const arn = (
      await createNetworkConnector(t.connection, {
        name: name('tagged'),
        egressRules: DB_RULES,
        tags: { team: 'data' },
      })
    ).connectorArn;
    await t.client.send(new TagResourceCommand({ Resource: arn, Tags: { stage: 'test' } }));
    expect((await t.client.send(new ListTagsCommand({ Resource: arn }))).Tags).toEqual({
      team: 'data',
      stage: 'test',
    });
    await t.client.send(new UntagResourceCommand({ Resource: arn, TagKeys: ['team'] }));
    expect((await t.client.send(new ListTagsCommand({ Resource: arn }))).Tags).toEqual({ stage: 'test' });
    expect((await getNetworkConnector(t.connection, arn)).tags).toEqual({ stage: 'test' });
    await expect(
      t.client.send(new TagResourceCommand({ Resource: M('NO_INGRESS'), Tags: { a: 'b' } })),
    ).rejects.toBeInstanceOf(ValidationException);
    await expect(t.client.send(new ListTagsCommand({ Resource: userArn('nope') }))).rejects.toBeInstanceOf(
      ResourceNotFoundException,
    );
  });

  it('runs with HTTP_INGRESS and no egress by default, and with NO_INGRESS (AWS form) mints no token', async () => {
    const plain = await t.client.send(new RunMicrovmCommand({ imageIdentifier: image }));
    expect(plain.ingressNetworkConnectors).toEqual([M('HTTP_INGRESS')]);
    expect(plain.egressNetworkConnectors).toEqual([]);
    const vm = await waitForMicrovm(t.client, plain.microvmId!, ['RUNNING']);
    expect(vm.ingressNetworkConnectors).toEqual([M('HTTP_INGRESS')]);
    const token = await createEndpointToken(t.client, vm.microvmId!);
    expect((await callEndpoint(t, vm.endpoint!, { token })).status).toBe(200);

    const closed = await t.client.send(
      new RunMicrovmCommand({ imageIdentifier: image, ingressNetworkConnectors: [AWS('NO_INGRESS')] }),
    );
    expect(closed.ingressNetworkConnectors).toEqual([M('NO_INGRESS')]);
    await waitForMicrovm(t.client, closed.microvmId!, ['RUNNING']);
    const refused = await rejection(
      t.client.send(
        new CreateMicrovmAuthTokenCommand({
          microvmIdentifier: closed.microvmId!,
          expirationInMinutes: 5,
          allowedPorts: [{ port: 8080 }],
        }),
      ),
    );
    expect(refused).toBeInstanceOf(ValidationException);
    expect(refused.message).toContain('was run with NO_INGRESS: its endpoint accepts no traffic');
    for (const id of [plain.microvmId!, closed.microvmId!])
      await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
  });

  it('refuses unknown connectors (404) and bad combinations (400) before starting anything', async () => {
    const run = (ingress: string[], egress: string[]) =>
      rejection(
        t.client.send(
          new RunMicrovmCommand({
            imageIdentifier: image,
            ingressNetworkConnectors: ingress,
            egressNetworkConnectors: egress,
          }),
        ),
      );
    const unknown = await run([], [userArn('never-made')]);
    expect(unknown).toBeInstanceOf(ResourceNotFoundException);
    expect(unknown.message).toBe(`network connector ${userArn('never-made')} not found`);
    const bad: [string[], string[], string][] = [
      [['HTTP_INGRESS'], [], `use ${M('HTTP_INGRESS')}`],
      [[], [M('HTTP_INGRESS')], 'is an ingress connector; put it in ingressNetworkConnectors'],
      [[M('INTERNET_EGRESS')], [], 'is an egress connector; put it in egressNetworkConnectors'],
      [
        [M('NO_INGRESS'), M('ALL_INGRESS')],
        [],
        'NO_INGRESS cannot be combined with another ingress connector',
      ],
      [[], [M('INTERNET_EGRESS'), AWS('INTERNET_EGRESS')], `${M('INTERNET_EGRESS')} is listed twice`],
    ];
    for (const [ingress, egress, message] of bad) {
      const e = await run(ingress, egress);
      expect(e, message).toBeInstanceOf(ValidationException);
      expect(e.message).toContain(message);
    }
    // Each connector is fine on its own; together they exceed what the network side applies.
    const big = [];
    for (const n of ['big1', 'big2'])
      big.push(
        await createNetworkConnector(t.connection, {
          name: name(n),
          egressRules: Array.from({ length: 40 }, (_, i) => ({
            cidr: `10.${n === 'big1' ? 1 : 2}.${i}.0/24`,
          })),
        }),
      );
    const tooMany = await run(
      [],
      big.map((c) => c.connectorArn),
    );
    expect(tooMany).toBeInstanceOf(ValidationException);
    expect(tooMany.message).toBe('egressNetworkConnectors: egress policy refused: at most 64 allow rules');
  });

  it('records the egress connectors of a microVM, and refuses to delete one while it is in use', async () => {
    const db = await createNetworkConnector(t.connection, { name: name('inuse'), egressRules: DB_RULES });
    // Hold the launch at its first step, so the microVM stays PENDING while the delete is tried.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    cleanups.push(
      onFault('core.launch.before-clone', () => held),
      () => release(),
    );
    const run = await t.client.send(
      new RunMicrovmCommand({
        imageIdentifier: image,
        ingressNetworkConnectors: [M('ALL_INGRESS')],
        egressNetworkConnectors: [AWS('INTERNET_EGRESS'), db.connectorArn],
      }),
    );
    const id = run.microvmId!;
    const expected = {
      ingressNetworkConnectors: [M('ALL_INGRESS')],
      egressNetworkConnectors: [M('INTERNET_EGRESS'), db.connectorArn],
    };
    expect(run).toMatchObject({ state: 'PENDING', ...expected });
    expect(await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).toMatchObject(expected);

    const inUse = await rejection(deleteNetworkConnector(t.connection, db.connectorArn));
    expect(inUse.name).toBe('ConflictException');
    expect(inUse.message).toBe(
      `network connector ${name('inuse')} is used by 1 microVM that is not TERMINATED: ${id}`,
    );
    release();
    // The network side applies the policy: the internet plus the allow-list.
    const vm = await settled(t, id);
    expect(vm).toMatchObject({ state: 'RUNNING', ...expected });
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    await deleteNetworkConnector(t.connection, db.connectorArn);
    await expect(
      t.client.send(
        new RunMicrovmCommand({ imageIdentifier: image, egressNetworkConnectors: [db.connectorArn] }),
      ),
    ).rejects.toBeInstanceOf(ResourceNotFoundException);
  });

  it('round-trips through the CLI: create, list, get, run with short names, delete', async () => {
    const hearth = (...args: string[]) => runCli(t, ...args);
    const created = await hearth(
      'create-network-connector',
      '--name',
      name('cli'),
      '--egress-rules',
      JSON.stringify([{ hostname: 'db.internal', protocol: 'TCP', ports: [{ port: 5432 }] }]),
      '--description',
      'from the CLI',
    );
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(new RegExp(`connectorArn\\s+${userArn('cli')}`));
    const list = await hearth('connectors');
    expect(list.stdout).toMatch(/^NAME\s+TYPE\s+RULES\s+CONNECTOR_ARN/);
    expect(list.stdout).toMatch(new RegExp(`${name('cli')}\\s+EGRESS_ALLOW_LIST\\s+1\\s+${userArn('cli')}`));
    expect(list.stdout).toMatch(
      /INTERNET_EGRESS\s+MANAGED_EGRESS\s+-\s+arn:hearth:lambda:local:hearth:network-connector:INTERNET_EGRESS/,
    );
    const got = JSON.parse(
      (await hearth('get-network-connector', name('cli'), '--output', 'json')).stdout,
    ) as {
      egressRules: unknown;
    };
    expect(got.egressRules).toEqual([{ hostname: 'db.internal', protocol: 'TCP', ports: [{ port: 5432 }] }]);

    const run = await hearth(
      'run',
      image,
      '--ingress-network-connectors',
      'NO_INGRESS',
      '--wait',
      '--output',
      'json',
    );
    expect(run.code, run.stderr).toBe(0);
    const vm = JSON.parse(run.stdout) as {
      microvmId: string;
      state: string;
      ingressNetworkConnectors: string[];
    };
    expect(vm).toMatchObject({ state: 'RUNNING', ingressNetworkConnectors: [M('NO_INGRESS')] });
    expect((await hearth('rm', vm.microvmId)).code).toBe(0);

    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    cleanups.push(
      onFault('core.launch.before-clone', () => held),
      () => release(),
    );
    const withEgress = await hearth(
      'run',
      image,
      '--egress-network-connectors',
      `INTERNET_EGRESS,${name('cli')}`,
      '--output',
      'json',
    );
    expect(withEgress.code, withEgress.stderr).toBe(0);
    const pending = JSON.parse(withEgress.stdout) as { microvmId: string; egressNetworkConnectors: string[] };
    expect(pending.egressNetworkConnectors).toEqual([M('INTERNET_EGRESS'), userArn('cli')]);
    const refused = await hearth('delete-network-connector', name('cli'));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('error [ConflictException]: network connector');
    expect(refused.stderr).toContain('hint: terminate them first');
    release();
    await settled(t, pending.microvmId);
    expect((await hearth('rm', pending.microvmId)).code).toBe(0);
    const deleted = await hearth('delete-network-connector', name('cli'));
    expect(deleted.code, deleted.stderr).toBe(0);
    const unknown = await hearth('run', image, '--egress-network-connectors', name('cli'));
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('ResourceNotFoundException');
  });

  it('answered every request as the OpenAPI document says', () => {
    expect(t.specViolations).toEqual([]);
  });
});
