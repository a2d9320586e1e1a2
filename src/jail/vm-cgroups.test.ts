import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { VmCgroups, type VmCgroup } from './vm-cgroups.js';

const asRoot = process.getuid?.() === 0;
const LIMITS = { memoryMaxBytes: 256 * 2 ** 20, pidsMax: 8, cpuQuotaPercent: 50 };

describe.skipIf(!asRoot)('per-VM cgroups (real /sys/fs/cgroup)', () => {
  const made: VmCgroup[] = [];
  afterEach(async () => {
    for (const g of made.splice(0)) await g.remove();
  });

  async function create(name: string) {
    const cg = await VmCgroups.open({ parentName: 'hearth-unit-test' });
    const g = await cg.create(`${name}-${process.pid}`, LIMITS);
    made.push(g);
    return { cg, g };
  }

  it('creates a group with the limits, reads them back, and moves a process in', async () => {
    const { g } = await create('t-limits');
    expect(await g.limits()).toEqual(LIMITS);
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      await g.join(child.pid!);
      const membership = await readFile(`/proc/${child.pid}/cgroup`, 'utf8');
      expect(membership).toContain(`/hearth-unit-test/${g.name}`);
      const u = await g.usage();
      expect(u.pidsCurrent).toBe(1);
      expect(Number.isFinite(u.memoryCurrentBytes)).toBe(true); // v1 charges only what is touched after joining
      expect(u.cpuUsageUsec).toBeGreaterThanOrEqual(0);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('stops a fork bomb at pidsMax: the shell cannot start more tasks than the limit', async () => {
    const { g } = await create('t-pids');
    // The shell waits for a go, so it is in the group before it forks.
    const sh = spawn('sh', ['-c', 'read go; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done; wait'], {
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    let stderr = '';
    sh.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    await g.join(sh.pid!);
    sh.stdin.end('go\n');
    await new Promise((r) => setTimeout(r, 500));
    const u = await g.usage();
    expect(u.pidsCurrent).toBeLessThanOrEqual(LIMITS.pidsMax);
    expect(stderr).toMatch(/fork|Resource temporarily unavailable|Cannot/i);
    await g.remove(); // kills what is left
    expect([...g.dirs.values()].some((d) => existsSync(d))).toBe(false);
  });

  it('removes a group with processes still in it by killing them, and reaps orphans', async () => {
    const { cg, g } = await create('t-orphan');
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    await g.join(child.pid!);
    const exited = new Promise((r) => child.on('exit', r));
    // Only this test's group is an orphan: the groups of any running VM are kept.
    const others = new Set([...(await cg.names())].filter((n) => n !== g.name));
    expect(await cg.reapOrphans(others)).toBe(1);
    await exited;
    expect([...g.dirs.values()].some((d) => existsSync(d))).toBe(false);
  });

  it('refuses names that could leave its directory', async () => {
    const cg = await VmCgroups.open({ parentName: 'hearth-unit-test' });
    expect(() => cg.group('../x')).toThrow(/invalid group name/);
    expect(() => cg.group('A')).toThrow(/invalid group name/);
  });
});
