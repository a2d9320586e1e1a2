import { MicrovmService, type MicrovmLimits } from '../../src/core/microvms.js';
import { DEFAULT_VM_SUBNET } from '../../src/core/egress-rules.js';
import { NetworkConnectorService } from '../../src/core/network-connectors.js';
import type { MicrovmRecord, MicrovmState } from '../../src/core/model.js';
import { openImageHarness, buildImage, fixtureImage, type ImageHarness } from './images.js';

export interface Platform extends ImageHarness {
  microvms: MicrovmService;
}

/** Engine + store + images + microVM lifecycle, with short deadlines for tests. */
export async function openPlatform(limits: Partial<MicrovmLimits> = {}): Promise<Platform> {
  const h = await openImageHarness();
  const microvms = new MicrovmService({
    store: h.store,
    engine: h.engine,
    images: h.images,
    connectors: new NetworkConnectorService({
      store: h.store,
      region: 'local',
      accountId: '000000000000',
      vmSubnet: DEFAULT_VM_SUBNET,
    }),
    log: (await import('../../src/util/log.js')).createLogger('test.microvms'),
    endpointFor: (id) => `${id}.microvm.localhost:8443`,
    limits: { minIdleSeconds: 1, checkIntervalMs: 200, ...limits },
  });
  microvms.start();
  return {
    ...h,
    microvms,
    async close() {
      await microvms.close();
      for (const vm of await h.store.microvms.listByStates([
        'PENDING',
        'RUNNING',
        'SUSPENDING',
        'SUSPENDED',
        'TERMINATING',
      ])) {
        await microvms.terminate(vm.microvmId).catch(() => undefined);
      }
      await h.close();
    },
  };
}

/** Builds the lifecycle test app (hooks on 9000, counter on 8080) with all runtime hooks enabled. */
export async function buildLifecycleImage(p: Platform, env: Record<string, string> = {}): Promise<string> {
  const { name, build } = await buildImage(p, 'lifecycle', fixtureImage('lifecycle'), {
    environmentVariables: env,
    hooks: {
      port: 9000,
      microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 60 },
      microvmHooks: {
        run: 'ENABLED',
        resume: 'ENABLED',
        suspend: 'ENABLED',
        terminate: 'ENABLED',
        runTimeoutInSeconds: 10,
      },
    },
  });
  if (build.buildState !== 'SUCCESSFUL')
    throw new Error(`lifecycle image build failed: ${build.failureCode}: ${build.stateReason}`);
  return name;
}

/** Polls until the microVM reaches `state` (or fails after `timeoutMs`). */
export async function waitForState(
  p: Platform,
  id: string,
  state: MicrovmState,
  timeoutMs = 30_000,
): Promise<MicrovmRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const rec = await p.microvms.get(id);
    if (rec.state === state) return rec;
    if (Date.now() > deadline)
      throw new Error(
        `microVM ${id} is ${rec.state} (${rec.stateReason ?? ''}), not ${state}, after ${timeoutMs} ms`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}
