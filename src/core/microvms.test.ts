import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CloneOptions, Engine } from '../vmm/engine.js';
import type { EgressPolicy } from '../net/policy.js';
import { UserNetworks } from '../net/user-network.js';
import type { Store } from '../store/database.js';
import { testBackends, type TestDatabase } from '../store/testing.js';
import { createLogger } from '../util/log.js';
import { DEFAULT_VM_SUBNET } from './egress-rules.js';
import type { ImageService } from './images.js';
import { MicrovmService } from './microvms.js';
import type { ImageVersionRecord } from './model.js';
import { NetworkConnectorService } from './network-connectors.js';

const M = (n: string) => `arn:hearth:lambda:local:hearth:network-connector:${n}`;
const U = (n: string) => `arn:hearth:lambda:local:000000000000:network-connector:${n}`;

const VERSION: ImageVersionRecord = {
  imageName: 'app',
  version: '1.0',
  id: 'iv-test',
  state: 'SUCCESSFUL',
  status: 'ACTIVE',
  config: {
    codeArtifactUri: '/srv/app',
    baseImageArn: 'arn:hearth:lambda:local:hearth:microvm-image:bookworm',
    memoryMiB: 512,
    vcpus: 1,
    diskSizeMiB: 1024,
    appPort: 8080,
  },
  createdAt: '2026-01-01T00:00:00.000Z',
  updatedAt: '2026-01-01T00:00:00.000Z',
};

/**
 * The microVM service over a real store, with an engine and an image service that only record
 * what they are asked: what RunMicrovm hands the engine, without booting anything.
 */
describe('MicrovmService with network connectors', () => {
  let db: TestDatabase;
  let store: Store;
  let clones: CloneOptions[];
  /** The engine uses user-mode networking (a Hearth without root). */
  let userMode: boolean;
  let microvms: MicrovmService;

  beforeEach(async () => {
    db = await testBackends()[0]!.create();
    store = await db.open();
    clones = [];
    userMode = false;
    const engine = {
      checkEgress: (p: EgressPolicy) => (userMode ? new UserNetworks().checkEgress(p) : undefined),
      template: async (id: string) => ({ id }),
      clone: async (_t: unknown, o: CloneOptions) => {
        clones.push(o);
        return { id: o.vmId, state: 'running' };
      },
      destroy: async () => undefined,
      get: () => undefined,
    } as unknown as Engine;
    const images = {
      nameFromIdentifier: (id: string) => id,
      runnableVersion: async () => VERSION,
      getVersion: async () => VERSION,
      arnOf: (name: string) => `arn:hearth:lambda:local:000000000000:microvm-image:${name}`,
    } as unknown as ImageService;
    const connectors = new NetworkConnectorService({
      store,
      region: 'local',
      accountId: '000000000000',
      vmSubnet: DEFAULT_VM_SUBNET,
    });
    await connectors.create({
      name: 'db',
      egressRules: [
        { cidr: '10.0.5.0/24', protocol: 'TCP', ports: [{ range: { startPort: 5432, endPort: 5433 } }] },
      ],
    });
    microvms = new MicrovmService({
      store,
      engine,
      images,
      connectors,
      log: createLogger('test.microvms'),
      endpointFor: (id) => `${id}.microvm.localhost:8443`,
      tokens: { mint: async () => 'token' },
    });
  });

  afterEach(async () => {
    await microvms.close();
    await store.close();
    await db.dispose();
  });

  it('launches with deny-all egress and HTTP_INGRESS when the request names no connector', async () => {
    const rec = await microvms.run({ imageIdentifier: 'app' });
    expect(rec.ingressNetworkConnectors).toEqual([M('HTTP_INGRESS')]);
    expect(rec.egressNetworkConnectors).toEqual([]);
    expect((await microvms.waitForLaunch(rec.microvmId)).state).toBe('RUNNING');
    expect(clones).toEqual([{ vmId: rec.microvmId, egress: { internet: false, allow: [] } }]);
  });

  it("hands the engine the policy of the microVM's egress connectors and records their ARNs", async () => {
    const rec = await microvms.run({
      imageIdentifier: 'app',
      ingressNetworkConnectors: [M('ALL_INGRESS')],
      egressNetworkConnectors: [M('INTERNET_EGRESS'), U('db')],
    });
    await microvms.waitForLaunch(rec.microvmId);
    expect(clones).toEqual([
      {
        vmId: rec.microvmId,
        egress: {
          internet: true,
          allow: [{ cidr: '10.0.5.0/24', protocol: 'tcp', ports: [{ from: 5432, to: 5433 }] }],
        },
      },
    ]);
    expect(await microvms.get(rec.microvmId)).toMatchObject({
      ingressNetworkConnectors: [M('ALL_INGRESS')],
      egressNetworkConnectors: [M('INTERNET_EGRESS'), U('db')],
    });
  });

  it('launches once for a repeated clientToken', async () => {
    const a = await microvms.run({ imageIdentifier: 'app', clientToken: 'ct' });
    const b = await microvms.run({ imageIdentifier: 'app', clientToken: 'ct' });
    expect(b.microvmId).toBe(a.microvmId);
    await microvms.waitForLaunch(a.microvmId);
    expect(clones).toHaveLength(1);
  });

  it('refuses egress connectors on a Hearth without root, with a stable code, before recording anything', async () => {
    userMode = true;
    for (const egress of [[M('INTERNET_EGRESS')], [U('db')]]) {
      await expect(
        microvms.run({ imageIdentifier: 'app', egressNetworkConnectors: egress }),
      ).rejects.toMatchObject({
        code: 'NET_EGRESS_UNENFORCEABLE',
        message: expect.stringContaining('runs without root (user-mode networking)'),
      });
    }
    expect((await microvms.list({})).items).toEqual([]);
    expect(clones).toEqual([]);
    // Deny-all (no egress connector) and ingress connectors still run.
    const rec = await microvms.run({ imageIdentifier: 'app', ingressNetworkConnectors: [M('ALL_INGRESS')] });
    expect((await microvms.waitForLaunch(rec.microvmId)).state).toBe('RUNNING');
  });

  it('refuses an unknown connector before recording anything', async () => {
    await expect(
      microvms.run({ imageIdentifier: 'app', egressNetworkConnectors: [U('nope')] }),
    ).rejects.toMatchObject({ code: 'NETWORK_CONNECTOR_NOT_FOUND' });
    expect((await microvms.list({})).items).toEqual([]);
  });

  it('mints no endpoint token for a microVM run with NO_INGRESS', async () => {
    const rec = await microvms.run({ imageIdentifier: 'app', ingressNetworkConnectors: [M('NO_INGRESS')] });
    await microvms.waitForLaunch(rec.microvmId);
    await expect(
      microvms.createAuthToken(rec.microvmId, { allowedPorts: [{ port: 8080 }], expirationInMinutes: 5 }),
    ).rejects.toMatchObject({
      code: 'VALIDATION',
      message: `microvmIdentifier: microVM ${rec.microvmId} was run with NO_INGRESS: its endpoint accepts no traffic`,
    });
    const open = await microvms.run({ imageIdentifier: 'app' });
    await microvms.waitForLaunch(open.microvmId);
    expect(
      await microvms.createAuthToken(open.microvmId, {
        allowedPorts: [{ port: 8080 }],
        expirationInMinutes: 5,
      }),
    ).toBe('token');
  });
});
