import { describe, expect, it } from 'vitest';
import { cpuShape, emptyUsage, UsageMeter } from './usage.js';

const MIB = 2 ** 20;
const sample = (processInstance: number, cpuSeconds: number, ageSeconds: number, rssMiB = 100) => ({
  processInstance,
  cpuSeconds,
  ageSeconds,
  rssBytes: rssMiB * MIB,
});

describe('usage against the baseline', () => {
  it('ties cores to memory as the reference does: 2 GiB = 1 core, bursting to 4x (at least 1 vCPU)', () => {
    expect(cpuShape(512)).toEqual({ baselineVcpus: 0.25, peakVcpus: 1 });
    expect(cpuShape(2048)).toEqual({ baselineVcpus: 1, peakVcpus: 4 });
    expect(cpuShape(8192)).toEqual({ baselineVcpus: 4, peakVcpus: 16 });
  });

  it('counts only what is above the baseline in each interval: idle costs nothing, a burst is charged', () => {
    const m = new UsageMeter();
    m.restore('vm', emptyUsage(512)); // baseline 0.25 core
    m.add('vm', sample(1, 0.1, 1), 1_000); // started 1 s ago, used 0.1 s: under 0.25
    let u = m.add('vm', sample(1, 0.2, 2), 2_000); // +0.1 s in 1 s
    expect(u.cpuSeconds).toBeCloseTo(0.2);
    expect(u.cpuSecondsAboveBaseline).toBe(0);
    u = m.add('vm', sample(1, 1.2, 3), 3_000); // +1.0 s in 1 s: 0.75 above
    expect(u.cpuSecondsAboveBaseline).toBeCloseTo(0.75);
    u = m.add('vm', sample(1, 1.3, 13), 13_000); // +0.1 s in 10 s: idle again
    expect(u.cpuSeconds).toBeCloseTo(1.3);
    expect(u.cpuSecondsAboveBaseline).toBeCloseTo(0.75);
    expect(u.memoryBytes).toBe(100 * MIB);
    expect(u.sampledAt).toBe(new Date(13_000).toISOString());
  });

  it('a new QEMU process (a resume) counts from zero; a suspended microVM holds no memory; totals carry on', () => {
    const m = new UsageMeter();
    m.restore('vm', {
      ...emptyUsage(2048),
      cpuSeconds: 10,
      cpuSecondsAboveBaseline: 2,
      peakMemoryBytes: 300 * MIB,
    });
    m.add('vm', sample(1, 5, 2, 200), 0); // 5 s in its first 2 s at baseline 1 core: 3 above
    expect(m.add('vm', undefined, 1_000)).toMatchObject({
      cpuSeconds: 15,
      memoryBytes: 0,
      peakMemoryBytes: 300 * MIB,
    });
    const u = m.add('vm', sample(2, 0.5, 1, 400), 60_000); // resumed: a new process
    expect(u.cpuSeconds).toBeCloseTo(15.5);
    expect(u.cpuSecondsAboveBaseline).toBeCloseTo(5);
    expect(u.peakMemoryBytes).toBe(400 * MIB);
  });

  it('refuses to sample a microVM whose account was not restored, and forgets terminated ones', () => {
    const m = new UsageMeter();
    expect(() => m.add('x', undefined, 0)).toThrow(/not restored/);
    m.restore('x', emptyUsage(512));
    m.forget('x');
    expect(m.get('x')).toBeUndefined();
  });
});
