import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpGet } from '../../src/util/http-get.js';
import { testDataDir } from '../helpers/env.js';
import { buildLifecycleImage, openPlatform, waitForState, type Platform } from '../helpers/platform.js';
import { vmUrl } from '../helpers/vm.js';

type AppState = { count: number; hooks: string[]; payload: string | null; microvmId: string | null };

describe('microVM lifecycle', () => {
  let p: Platform;
  let image: string;

  async function app<T>(id: string, path = '/'): Promise<T> {
    const vm = p.engine.get(id);
    if (!vm?.hostAddress) throw new Error(`${id} is not running`);
    return JSON.parse((await httpGet(await vmUrl(vm, 8080, path))).body) as T;
  }

  beforeAll(async () => {
    p = await openPlatform({ maxMicrovms: 4 });
    image = await buildLifecycleImage(p);
  });

  afterAll(async () => {
    await p.close();
  });

  it('runs: PENDING, then RUNNING once the run hook answered 200 with the microvmId and the payload', async () => {
    const rec = await p.microvms.run({ imageIdentifier: image, runHookPayload: '{"session":"s-1"}' });
    expect(rec.state).toBe('PENDING');
    expect(rec.microvmId).toMatch(/^microvm-[0-9a-f-]{36}$/);
    const running = await waitForState(p, rec.microvmId, 'RUNNING');
    expect(running).toMatchObject({
      imageName: image,
      imageVersion: '1.0',
      maximumDurationInSeconds: 28_800,
    });
    const s = await app<AppState>(rec.microvmId, '/state');
    expect(s.hooks).toContain('run');
    expect(s.payload).toBe('{"session":"s-1"}');
    expect(s.microvmId).toBe(rec.microvmId);
    expect(p.microvms.view(running).endpoint).toBe(`${rec.microvmId}.microvm.localhost:8443`);
    await p.microvms.terminate(rec.microvmId);
  });

  it('suspends and resumes with the suspend and resume hooks, keeping memory; terminate removes everything', async () => {
    const { microvmId: id } = await p.microvms.run({ imageIdentifier: image });
    await waitForState(p, id, 'RUNNING');
    expect((await app<{ count: number }>(id)).count).toBe(1);
    const suspended = await p.microvms.suspend(id);
    expect(suspended.state).toBe('SUSPENDED');
    expect(suspended.suspendedAt).toBeTruthy();
    expect(p.engine.get(id)?.state).toBe('suspended');
    const resumed = await p.microvms.resume(id);
    expect(resumed.state).toBe('RUNNING');
    expect((await app<{ count: number }>(id)).count).toBe(2);
    expect((await app<AppState>(id, '/state')).hooks.slice(-2)).toEqual(['suspend', 'resume']);
    const t = await p.microvms.terminate(id);
    expect(t).toMatchObject({ state: 'TERMINATED' });
    expect(t.terminatedAt).toBeTruthy();
    expect(t.tokenGeneration).toBeGreaterThan(resumed.tokenGeneration);
    expect(existsSync(join(testDataDir().vmsDir, id))).toBe(false);
    expect(await p.microvms.terminate(id)).toMatchObject({ state: 'TERMINATED' }); // idempotent
    await expect(p.microvms.suspend(id)).rejects.toMatchObject({ code: 'MICROVM_CONFLICT' });
  });

  it('suspends an idle microVM after maxIdleDurationSeconds, and activity keeps it running', async () => {
    const { microvmId: id } = await p.microvms.run({
      imageIdentifier: image,
      idlePolicy: { maxIdleDurationSeconds: 2, suspendedDurationSeconds: 600, autoResumeEnabled: true },
    });
    await waitForState(p, id, 'RUNNING');
    const until = Date.now() + 4_000;
    while (Date.now() < until) {
      p.microvms.recordActivity(id, { kind: 'request' });
      await new Promise((r) => setTimeout(r, 400));
      expect((await p.microvms.get(id)).state).toBe('RUNNING');
    }
    p.microvms.recordActivity(id, { kind: 'stream-open' }); // an open stream counts as activity
    await new Promise((r) => setTimeout(r, 3_000));
    expect((await p.microvms.get(id)).state).toBe('RUNNING');
    p.microvms.recordActivity(id, { kind: 'stream-close' });
    const s = await waitForState(p, id, 'SUSPENDED', 10_000);
    expect(s.stateReason).toContain('idle for 2 s');
    await p.microvms.terminate(id);
  });

  it('terminates a microVM suspended longer than suspendedDurationSeconds', async () => {
    const { microvmId: id } = await p.microvms.run({
      imageIdentifier: image,
      idlePolicy: { maxIdleDurationSeconds: 1, suspendedDurationSeconds: 1, autoResumeEnabled: false },
    });
    await waitForState(p, id, 'SUSPENDED', 15_000);
    const t = await waitForState(p, id, 'TERMINATED', 10_000);
    expect(t.stateReason).toContain('suspended for 1 s');
  });

  it('terminates at maximumDurationInSeconds, counting running and suspended time', async () => {
    const { microvmId: id } = await p.microvms.run({ imageIdentifier: image, maximumDurationInSeconds: 4 });
    await waitForState(p, id, 'RUNNING');
    await p.microvms.suspend(id);
    const t = await waitForState(p, id, 'TERMINATED', 10_000);
    expect(t.stateReason).toContain('maximum duration of 4 s reached');
  });

  it('resumes a suspended microVM once for many concurrent callers', async () => {
    const { microvmId: id } = await p.microvms.run({ imageIdentifier: image });
    await waitForState(p, id, 'RUNNING');
    await p.microvms.suspend(id);
    const engine = p.engine;
    const original = engine.resume.bind(engine);
    let resumes = 0;
    engine.resume = async (vmId: string) => {
      resumes++;
      return original(vmId);
    };
    try {
      const results = await Promise.all(Array.from({ length: 20 }, () => p.microvms.ensureRunning(id)));
      expect(results.every((r) => r.state === 'RUNNING')).toBe(true);
      expect(resumes).toBe(1);
    } finally {
      engine.resume = original;
    }
    await p.microvms.terminate(id);
  });

  it('rejects a payload for an image without the run hook, an idle policy below the minimum, and keeps clientToken idempotent', async () => {
    await expect(
      p.microvms.run({
        imageIdentifier: image,
        idlePolicy: { maxIdleDurationSeconds: 0, suspendedDurationSeconds: 0, autoResumeEnabled: true },
      }),
    ).rejects.toMatchObject({ code: 'VALIDATION', field: 'idlePolicy.maxIdleDurationSeconds' });
    const a = await p.microvms.run({ imageIdentifier: image, clientToken: 'token-1' });
    const b = await p.microvms.run({ imageIdentifier: image, clientToken: 'token-1' });
    expect(b.microvmId).toBe(a.microvmId);
    await expect(
      p.microvms.run({ imageIdentifier: image, clientToken: 'token-1', maximumDurationInSeconds: 100 }),
    ).rejects.toMatchObject({
      code: 'IDEMPOTENCY_MISMATCH',
    });
    await waitForState(p, a.microvmId, 'RUNNING');
    await p.microvms.terminate(a.microvmId);
  });

  it('refuses a run beyond the microVM limit with nothing started', async () => {
    const running = await Promise.all([1, 2, 3, 4].map(() => p.microvms.run({ imageIdentifier: image })));
    await expect(p.microvms.run({ imageIdentifier: image })).rejects.toMatchObject({
      code: 'QUOTA_EXCEEDED',
      message: expect.stringContaining('at most 4 microVMs'),
    });
    const active = await p.store.microvms.listByStates(['PENDING', 'RUNNING']);
    expect(active).toHaveLength(4);
    for (const r of running) {
      await waitForState(p, r.microvmId, 'RUNNING');
      await p.microvms.terminate(r.microvmId);
    }
  });
});

describe('failing runtime hooks', () => {
  let p: Platform;

  beforeAll(async () => {
    p = await openPlatform();
  });

  afterAll(async () => {
    await p.close();
  });

  it('terminates a microVM whose run hook fails, with the reason', async () => {
    const image = await buildLifecycleImage(p, { RUN_STATUS: '500' });
    const { microvmId: id } = await p.microvms.run({ imageIdentifier: image });
    const t = await waitForState(p, id, 'TERMINATED');
    expect(t.stateReason).toContain('the run hook answered 500');
    expect(p.engine.get(id)).toBeUndefined();
  });

  it('keeps a microVM SUSPENDED when its resume hook fails', async () => {
    const image = await buildLifecycleImage(p, { RESUME_STATUS: '500' });
    const { microvmId: id } = await p.microvms.run({ imageIdentifier: image });
    await waitForState(p, id, 'RUNNING');
    await p.microvms.suspend(id);
    await expect(p.microvms.resume(id)).rejects.toMatchObject({ code: 'MICROVM_CONFLICT' });
    const rec = await p.microvms.get(id);
    expect(rec.state).toBe('SUSPENDED');
    expect(rec.stateReason).toContain('the resume hook answered 500');
    await p.microvms.terminate(id);
  });
});
