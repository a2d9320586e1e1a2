import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  RunMicrovmCommand,
  SuspendMicrovmCommand,
  TerminateMicrovmCommand,
  getMicrovmWithUsage,
  hearthMetrics,
  waitForMicrovm,
  type MicrovmUsageView,
} from '../../src/sdk/index.js';
import { buildFixtureImage, startTestServer, type TestServer } from '../helpers/server.js';

const IMAGE = `usage-${Date.now().toString(36)}`;

function plainGet(port: number, path: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }),
      );
    })
      .on('error', reject)
      .end();
  });
}

describe('usage against the baseline: measured per microVM, in GetMicrovm and in the metrics', () => {
  let t: TestServer;

  beforeAll(async () => {
    t = await startTestServer({ metricsPort: 0 });
    await buildFixtureImage(t.client, IMAGE);
  });

  afterAll(async () => {
    await t.stop();
  });

  it('a burst above the baseline is counted, idling is not; the account survives a suspend', async () => {
    const run = await t.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE }));
    const id = run.microvmId!;
    await waitForMicrovm(t.client, id, ['RUNNING']);
    const usage = async (): Promise<MicrovmUsageView> => (await getMicrovmWithUsage(t.connection, id)).usage!;
    // Let a few samples (every 200 ms in tests) see it idle.
    await new Promise((r) => setTimeout(r, 2_000));
    const idle = await usage();
    expect(idle).toMatchObject({ baselineMilliVcpus: 250, peakMilliVcpus: 1000 });
    expect(idle.memoryMiB).toBeGreaterThan(20);
    const idleAbove = idle.cpuMillisecondsAboveBaseline;

    // Four seconds of a busy loop in the guest: its one vCPU runs flat out, 4x its quarter-core baseline.
    const agent = await t.server.engine.get(id)!.agent();
    const r = await agent.exec(
      '/usr/bin/python3',
      ['-c', 'import time\nt=time.time()\nwhile time.time()-t<4: pass'],
      {
        timeoutMs: 30_000,
      },
    );
    expect(r.exitCode).toBe(0);
    await new Promise((res) => setTimeout(res, 600));
    const busy = await usage();
    expect(busy.cpuMilliseconds - idle.cpuMilliseconds).toBeGreaterThan(2_500);
    // About 0.75 core above the baseline for 4 s (less on a busy host, where TCG gets less CPU).
    expect(busy.cpuMillisecondsAboveBaseline - idleAbove).toBeGreaterThan(1_500);
    expect(busy.cpuMillisecondsAboveBaseline).toBeLessThan(busy.cpuMilliseconds);

    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
    await waitForMicrovm(t.client, id, ['SUSPENDED']);
    const suspended = await usage();
    expect(suspended.memoryMiB).toBe(0);
    expect(suspended.peakMemoryMiB).toBeGreaterThanOrEqual(busy.memoryMiB);
    expect(suspended.cpuMilliseconds).toBeGreaterThanOrEqual(busy.cpuMilliseconds);
    expect(suspended.cpuMillisecondsAboveBaseline).toBeGreaterThanOrEqual(busy.cpuMillisecondsAboveBaseline);

    // The metrics say the same, signed on the API port and unauthenticated on the metrics port.
    const text = await hearthMetrics(t.connection);
    const line = text
      .split('\n')
      .find((l) => l.startsWith(`hearth_microvm_cpu_above_baseline_seconds_total{microvm="${id}"`));
    expect(Number(line?.split(' ').pop())).toBeCloseTo(suspended.cpuMillisecondsAboveBaseline / 1000, 1);
    expect(text).toMatch(/^hearth_microvms\{state="SUSPENDED"\} [1-9]/m);
    expect(text).toContain(
      `hearth_microvm_baseline_vcpus{microvm="${id}",image="${IMAGE}",version="1.0"} 0.25`,
    );
    const scraped = await plainGet(t.server.config.metricsPort!, '/metrics');
    expect(scraped.status).toBe(200);
    expect(scraped.type).toContain('version=0.0.4');
    expect(scraped.body).toContain(`microvm="${id}"`);
    expect((await plainGet(t.server.config.metricsPort!, '/other')).status).toBe(404);

    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    expect((await waitForMicrovm(t.client, id, ['TERMINATED'])).state).toBe('TERMINATED');
    expect((await usage()).cpuMilliseconds).toBeGreaterThanOrEqual(suspended.cpuMilliseconds);
  });

  it('answered every request as the OpenAPI document says', () => {
    expect(t.specViolations).toEqual([]);
  });
});
