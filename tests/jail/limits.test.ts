import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Engine } from '../../src/vmm/engine.js';
import type { MicroVm } from '../../src/vmm/microvm.js';
import { getJson, openEngine, uniqueId } from '../helpers/vm.js';

/** CPU time of a process (all threads), seconds. */
async function cpuSeconds(pid: number): Promise<number> {
  const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

describe('resource limits: a hostile guest leaves the host and other VMs healthy', () => {
  let engine: Engine;
  let hostile: MicroVm;
  let neighbour: MicroVm;

  beforeAll(async () => {
    engine = await openEngine();
    const template = await engine.template(inject('counterTemplate'));
    [hostile, neighbour] = await Promise.all([
      engine.clone(template, { vmId: uniqueId('hostile') }),
      engine.clone(template, { vmId: uniqueId('neighbour') }),
    ]);
  });

  afterAll(async () => {
    await engine.destroy(hostile.id);
    await engine.destroy(neighbour.id);
    await engine.close();
  });

  it('survives a fork bomb and a memory hog in one guest: the neighbour answers, QEMU stays inside its limits', async () => {
    const agent = await hostile.agent();
    // A fork bomb and a process allocating without end, both left running in the guest.
    await agent.exec('/bin/sh', [
      '-c',
      "(f() { f | f & }; f) >/dev/null 2>&1 & python3 -c 'a=[]\nwhile True: a.append(bytearray(32 << 20))' >/dev/null 2>&1 & echo started",
    ]);
    const pid = hostile.process!.pid;
    const cpu0 = await cpuSeconds(pid);
    const t0 = performance.now();
    const latencies: number[] = [];
    while (performance.now() - t0 < 8_000) {
      const s = performance.now();
      await getJson(neighbour);
      latencies.push(performance.now() - s);
      await new Promise((r) => setTimeout(r, 200));
    }
    const elapsedS = (performance.now() - t0) / 1000;
    const cpuShare = ((await cpuSeconds(pid)) - cpu0) / elapsedS;
    latencies.sort((x, y) => x - y);
    // The neighbour keeps answering promptly (a warm request takes ~20 ms under TCG).
    expect(latencies[Math.floor(latencies.length / 2)]!).toBeLessThan(500);
    // The hostile QEMU gets at most its quota (100% of a core for 512 MiB), within measurement slack.
    const limits = await hostile.cgroup!.limits();
    expect(cpuShare).toBeLessThanOrEqual(limits.cpuQuotaPercent / 100 + 0.15);
    const usage = await hostile.cgroup!.usage();
    expect(usage.memoryCurrentBytes).toBeLessThanOrEqual(limits.memoryMaxBytes);
    expect(usage.pids).toBeLessThanOrEqual(limits.pidsMax); // guest processes are not host tasks
    // The guest kernel contained it: QEMU still runs (the guest's OOM killer took the hog).
    expect(hostile.process!.hasExited).toBe(false);
  });
});
