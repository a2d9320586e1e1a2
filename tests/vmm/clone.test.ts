import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Engine, Template } from '../../src/vmm/engine.js';
import type { MicroVm } from '../../src/vmm/microvm.js';
import { waitForQuietGuest } from '../../src/vmm/guest-quiesce.js';
import { TEMPLATE_REQUESTS } from '../helpers/env.js';
import { getJson, leftovers, NOTHING_LEFT, openEngine, sh, uniqueId } from '../helpers/vm.js';

type Count = { count: number; hostname: string; pid: number };

describe('template -> clones', () => {
  let engine: Engine;
  let template: Template;
  let a: MicroVm;
  let b: MicroVm;

  beforeAll(async () => {
    engine = await openEngine();
    template = await engine.template(inject('counterTemplate'));
    [a, b] = await Promise.all([
      engine.clone(template, { vmId: uniqueId('clone-a') }),
      engine.clone(template, { vmId: uniqueId('clone-b') }),
    ]);
  });

  afterAll(async () => {
    await engine.destroy(a.id);
    await engine.destroy(b.id);
    await engine.close();
  });

  it('continues where the template stopped: same process, same in-memory state', async () => {
    const [ra, rb] = await Promise.all([getJson<Count>(a), getJson<Count>(b)]);
    expect(ra.count).toBe(TEMPLATE_REQUESTS + 1);
    expect(rb.count).toBe(TEMPLATE_REQUESTS + 1);
    expect(ra.pid).toBe(rb.pid);
  });

  it('gives each clone its own memory', async () => {
    await getJson(a);
    await getJson(a);
    expect((await getJson<Count>(a)).count).toBe(TEMPLATE_REQUESTS + 4);
    expect((await getJson<Count>(b)).count).toBe(TEMPLATE_REQUESTS + 2);
  });

  it('gives each clone its own disk', async () => {
    await sh(a, 'echo only-in-a > /root/marker && sync');
    expect(await sh(a, 'cat /root/marker')).toBe('only-in-a\n');
    expect(await sh(b, 'test -e /root/marker && echo present || echo absent')).toBe('absent\n');
    // Both keep their own request logs, which began with the template's lines.
    const la = (await sh(a, 'cat /var/lib/counter/requests.log')).trim().split('\n').map(Number);
    const lb = (await sh(b, 'cat /var/lib/counter/requests.log')).trim().split('\n').map(Number);
    expect(la.slice(0, TEMPLATE_REQUESTS + 1)).toEqual(lb.slice(0, TEMPLATE_REQUESTS + 1));
    expect(la.length).toBeGreaterThan(lb.length);
  });

  it('reseeds the RNG: clones of one snapshot read different random bytes', async () => {
    const [ra, rb] = await Promise.all([
      getJson<{ random: string }>(a, '/random'),
      getJson<{ random: string }>(b, '/random'),
    ]);
    expect(ra.random).toMatch(/^[0-9a-f]{64}$/);
    expect(ra.random).not.toBe(rb.random);
  });

  it('gives each clone its own identity: hostname and machine-id', async () => {
    const [ia, ib] = await Promise.all([
      getJson<{ hostname: string; machineId: string }>(a, '/identity'),
      getJson<{ hostname: string; machineId: string }>(b, '/identity'),
    ]);
    expect(ia).toEqual({ hostname: a.id, machineId: a.record.machineId });
    expect(ib).toEqual({ hostname: b.id, machineId: b.record.machineId });
    expect(ia.machineId).not.toBe(ib.machineId);
  });

  it('sets the guest clock to the host clock (the template snapshot is minutes old)', async () => {
    const before = Date.now() / 1000;
    const { time } = await getJson<{ time: number }>(a, '/time');
    const after = Date.now() / 1000;
    expect(time).toBeGreaterThan(before - 1);
    expect(time).toBeLessThan(after + 1);
  });

  it('keeps each clone in its own network namespace: two VMs, two networks, nothing else', async () => {
    expect(a.network!.slot).not.toBe(b.network!.slot);
    expect(engine.ctx.network.activeCount).toBe(2);
    expect(await leftovers(engine, [a.id, b.id])).toEqual(NOTHING_LEFT);
  });
  it('stops a clone by force (kill): no process, network or socket directory is left', async () => {
    const pid = b.process!.pid;
    await engine.kill(b);
    expect(b.state).toBe('stopped');
    expect(() => process.kill(pid, 0)).toThrow();
    expect(await leftovers(engine, [a.id])).toEqual(NOTHING_LEFT);
    await engine.destroy(b.id);
    expect(existsSync(b.layout.dir)).toBe(false);
  });
});

describe('a restore is quiet', () => {
  let engine: Engine;
  let template: Template;
  let c: MicroVm;

  beforeAll(async () => {
    engine = await openEngine();
    template = await engine.template(inject('counterTemplate'));
    c = await engine.clone(template, { vmId: uniqueId('clone-quiet') });
  });

  afterAll(async () => {
    await engine.destroy(c.id);
    await engine.close();
  });

  it('does not announce itself: the guest sends no packet of its own in its first seconds', async () => {
    // QEMU's self-announce would have the guest send ARP, neighbour adverts and MLD reports in
    // rounds over ~0.8 s after the load; nothing else in the idle guest transmits.
    const txPackets = async () => Number(await sh(c, 'cat /sys/class/net/eth0/statistics/tx_packets'));
    const first = await txPackets();
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await txPackets()).toBe(first);
  });

  it('keeps the machine-id on the guest tmpfs, bound over /etc/machine-id (identity writes nothing to disk)', async () => {
    expect(await sh(c, 'cat /etc/machine-id')).toBe(`${c.record.machineId}\n`);
    expect(await sh(c, 'cat /run/hearth/machine-id')).toBe(`${c.record.machineId}\n`);
    expect(await sh(c, 'grep -c " /etc/machine-id " /proc/self/mountinfo')).toBe('1\n');
  });

  it('tells a quiet guest from a busy one by its vCPU time (the wait before a template snapshot)', async () => {
    expect(await waitForQuietGuest(c.process!.pid, { maxMs: 3_000 })).toBe(true);
    await sh(c, '(i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done) >/dev/null 2>&1 & echo $! > /tmp/busy');
    try {
      expect(await waitForQuietGuest(c.process!.pid, { maxMs: 1_000 })).toBe(false);
    } finally {
      await sh(c, 'kill $(cat /tmp/busy) 2>/dev/null; true');
    }
  });
});
