import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CgroupError, CgroupManager, type CgroupLimits, type VmCgroup } from './cgroups.js';
import { ensureJailerBinary, jailedCommand, readJailerPid, vmUid } from './jailer.js';

const asRoot = process.getuid?.() === 0;
// Not 'hearth': never touch the groups of a Hearth running on this host.
const PARENT = 'hearth-jail-test';
const UID = vmUid(55_000 + (process.pid % 5_000));
const LIMITS: CgroupLimits = { memoryMaxBytes: 256 * 2 ** 20, pidsMax: 16, cpuQuotaPercent: 50 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe.skipIf(!asRoot)('per-VM cgroups (real /sys/fs/cgroup, needs root)', () => {
  let manager: CgroupManager;
  let cache: string;
  let jailer: string;
  let rootDir: string;
  const made: VmCgroup[] = [];

  beforeAll(async () => {
    const probe = await CgroupManager.probe(undefined, PARENT);
    if (!probe.manager) throw new Error(`no usable cgroups on this host: ${probe.reason}`);
    manager = probe.manager;
    cache = await mkdtemp('/tmp/hearth-jailer-cache-');
    jailer = await ensureJailerBinary(cache);
    rootDir = await mkdtemp('/tmp/hearth-cgroup-jail-');
  }, 60_000);

  afterEach(async () => {
    for (const g of made.splice(0)) await g.remove();
  });

  afterAll(async () => {
    if (manager) for (const d of manager.parentDirs) await rmdir(d).catch(() => undefined);
    if (cache) await rm(cache, { recursive: true, force: true });
    if (rootDir) await rm(rootDir, { recursive: true, force: true });
  });

  async function create(name: string, limits = LIMITS): Promise<VmCgroup> {
    const g = await manager.create(`${name}-${process.pid}`, limits);
    made.push(g);
    return g;
  }

  /** Runs `sh -c script` in the jail with the group's procs files; resolves once the pid is known. */
  async function jailIn(g: VmCgroup, script: string) {
    const { cmd, args } = jailedCommand(
      jailer,
      {
        uid: UID,
        gid: UID,
        rootDir,
        readOnly: ['/usr'],
        readWrite: [],
        devices: ['/dev/null'],
        cgroupProcsFiles: g.procsFiles,
        limits: { nofile: 64 },
      },
      '/bin/sh',
      ['-c', script],
    );
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
      child.on('exit', (code, signal) => r({ code, signal })),
    );
    const pid = await readJailerPid(child.stdout, 5_000);
    child.stdout.resume();
    return { child, pid, exited, stderr: () => stderr };
  }

  it(`detects the host's cgroups (this host: ${existsSync('/sys/fs/cgroup/cgroup.controllers') ? 'v2' : 'v1'})`, () => {
    expect(manager.version).toBe(existsSync('/sys/fs/cgroup/cgroup.controllers') ? 2 : 1);
    for (const d of manager.parentDirs) expect(existsSync(d), d).toBe(true);
  });

  it('creates a group whose limits read back, runs the jailer in it, reports usage and removes it', async () => {
    const g = await create('t-limits');
    expect(await g.limits()).toEqual(LIMITS);
    expect(g.procsFiles.length).toBe(manager.version === 2 ? 1 : 4);
    if (manager.version === 1) {
      const memsw = `${g.dirs.find((d) => existsSync(`${d}/memory.memsw.limit_in_bytes`))}/memory.memsw.limit_in_bytes`;
      if (existsSync(memsw)) expect(Number(readFileSync(memsw, 'utf8'))).toBe(LIMITS.memoryMaxBytes);
    }

    const j = await jailIn(g, 'sleep 1.5');
    const membership = readFileSync(`/proc/${j.pid}/cgroup`, 'utf8');
    const suffix = `/${PARENT}/${g.name}`;
    if (manager.version === 2) {
      expect(membership).toMatch(new RegExp(`^0::${suffix}$`, 'm'));
    } else {
      for (const c of ['cpu', 'cpuacct', 'memory', 'pids']) {
        const line = membership.split('\n').find((l) => l.split(':')[1]?.split(',').includes(c));
        expect(line, c).toMatch(new RegExp(`${suffix}$`));
      }
    }
    // The jailer parent and the child (sh, then sleep) are both inside.
    await waitFor('two tasks', async () => (await g.usage()).pids >= 2);
    const u = await g.usage();
    expect(Number.isFinite(u.memoryCurrentBytes)).toBe(true);
    expect(u.memoryCurrentBytes).toBeGreaterThanOrEqual(0);
    expect(u.cpuUsageUsec).toBeGreaterThanOrEqual(0);
    expect(await j.exited).toEqual({ code: 0, signal: null });
    expect((await g.usage()).pids).toBe(0);

    await g.remove();
    for (const d of g.dirs) expect(existsSync(d), d).toBe(false);
    await g.remove(); // idempotent
  });

  it('stops a fork bomb at pidsMax', async () => {
    const g = await create('t-pids', { ...LIMITS, pidsMax: 5 });
    const j = await jailIn(g, 'for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait');
    await waitFor('fork failures', () => /fork|Resource temporarily unavailable/i.test(j.stderr()));
    expect((await g.usage()).pids).toBeLessThanOrEqual(5);
    // dash gives up (exit 2) when a fork fails; whatever is left, remove() kills, the jailer included.
    await g.remove();
    const r = await j.exited;
    expect(r.code === 2 || r.signal === 'SIGKILL', JSON.stringify(r)).toBe(true);
    for (const d of g.dirs) expect(existsSync(d)).toBe(false);
  });

  it('reaps orphans: kills what runs in them and removes them, keeping the others', async () => {
    const orphan = await create('t-orphan');
    const kept = await create('t-kept');
    const j = await jailIn(orphan, 'sleep 30');
    // Nested groups below a VM's group are removed too.
    await mkdir(`${kept.dirs[0]}/nested`);
    const others = new Set([...(await manager.names())].filter((n) => n !== orphan.name));
    expect(await manager.reapOrphans(others)).toEqual([orphan.name]);
    expect(await j.exited).toEqual({ code: null, signal: 'SIGKILL' });
    for (const d of orphan.dirs) expect(existsSync(d)).toBe(false);
    for (const d of kept.dirs) expect(existsSync(d)).toBe(true);
    expect(await manager.names()).toContain(kept.name);
  });

  it('replaces a stale group of the same name', async () => {
    const first = await create('t-stale');
    const j = await jailIn(first, 'sleep 30');
    const second = await create('t-stale', { ...LIMITS, pidsMax: 7 });
    expect(await j.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect((await second.limits()).pidsMax).toBe(7);
  });

  it('refuses names that could leave the parent, and bad limits', async () => {
    for (const n of ['../x', 'A', '', 'a/b', '-x', 'x'.repeat(64)])
      expect(() => manager.group(n)).toThrow(CgroupError);
    await expect(manager.create('t-bad', { ...LIMITS, pidsMax: 0 })).rejects.toThrow(CgroupError);
    await expect(manager.create('t-bad', { ...LIMITS, cpuQuotaPercent: 0 })).rejects.toThrow(CgroupError);
    await expect(manager.create('t-bad', { ...LIMITS, memoryMaxBytes: 1.5 })).rejects.toThrow(CgroupError);
  });
});

describe('CgroupManager.probe', () => {
  it('explains why there is no manager', async () => {
    const dir = await mkdtemp('/tmp/hearth-no-cgroups-');
    try {
      const p = await CgroupManager.probe(dir, 'hearth-x');
      expect(p.manager).toBeUndefined();
      expect(p.reason).toMatch(/no cgroup v2 .* and no cgroup v1 'cpu' hierarchy/);
      expect(await CgroupManager.detect(dir, 'hearth-x')).toBeUndefined();
      expect((await CgroupManager.probe(dir, '../evil')).reason).toMatch(/invalid parent group name/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('CgroupManager on a fake tree (the layouts this host does not have)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp('/tmp/hearth-fake-cgroups-');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('v2: enables the controllers, writes the limits to one directory, reads them and the usage back', async () => {
    const root = `${dir}/v2`;
    await mkdir(root);
    await writeFile(`${root}/cgroup.controllers`, 'cpuset cpu io memory hugetlb pids rdma misc\n');
    const m = await CgroupManager.detect(root, 'hearth');
    expect(m?.version).toBe(2);
    expect(readFileSync(`${root}/cgroup.subtree_control`, 'utf8')).toBe('+cpu +memory +pids');
    expect(readFileSync(`${root}/hearth/cgroup.subtree_control`, 'utf8')).toBe('+cpu +memory +pids');
    // memory.swap.max exists in a real group; here it appears only if the test makes it.
    await mkdir(`${root}/hearth/vm-1`);
    await writeFile(`${root}/hearth/vm-1/memory.swap.max`, 'max\n');
    const g = m!.group('vm-1');
    expect(g.procsFiles).toEqual([`${root}/hearth/vm-1/cgroup.procs`]);
    // create() removes the stale directory first (rmdir of a plain directory with files fails: not a cgroup).
    await expect(m!.create('vm-1', LIMITS)).rejects.toThrow(/cannot remove/);
    await rm(`${root}/hearth/vm-1`, { recursive: true });
    await m!.create('vm-1', { memoryMaxBytes: 2 ** 30, pidsMax: 256, cpuQuotaPercent: 250 });
    const file = (f: string) => readFileSync(`${root}/hearth/vm-1/${f}`, 'utf8');
    expect([file('memory.max'), file('pids.max'), file('cpu.max')]).toEqual([
      String(2 ** 30),
      '256',
      '250000 100000',
    ]);
    expect(existsSync(`${root}/hearth/vm-1/memory.swap.max`)).toBe(false); // absent: not created
    expect(await g.limits()).toEqual({ memoryMaxBytes: 2 ** 30, pidsMax: 256, cpuQuotaPercent: 250 });
    await writeFile(`${root}/hearth/vm-1/cpu.stat`, 'usage_usec 12345\nuser_usec 10000\nsystem_usec 2345\n');
    await writeFile(`${root}/hearth/vm-1/memory.current`, '4096\n');
    await writeFile(`${root}/hearth/vm-1/pids.current`, '3\n');
    expect(await g.usage()).toEqual({ cpuUsageUsec: 12345, memoryCurrentBytes: 4096, pids: 3 });
    await writeFile(`${root}/hearth/vm-1/cpu.max`, 'max 100000\n');
    await writeFile(`${root}/hearth/vm-1/pids.max`, 'max\n');
    expect(await g.limits()).toMatchObject({ pidsMax: Infinity, cpuQuotaPercent: Infinity });
  });

  it('v2: says which controllers are missing', async () => {
    const root = `${dir}/v2-bare`;
    await mkdir(root);
    await writeFile(`${root}/cgroup.controllers`, '\n');
    expect((await CgroupManager.probe(root, 'hearth')).reason).toMatch(
      /lacks the cpu, memory, pids controller/,
    );
  });

  it('v1 with cpu and cpuacct co-mounted: one directory serves both', async () => {
    const root = `${dir}/v1`;
    for (const h of ['cpu,cpuacct', 'memory', 'pids']) {
      await mkdir(`${root}/${h}`, { recursive: true });
      await writeFile(`${root}/${h}/cgroup.procs`, '');
    }
    await symlink('cpu,cpuacct', `${root}/cpu`);
    await symlink('cpu,cpuacct', `${root}/cpuacct`);
    const m = await CgroupManager.detect(root, 'hearth');
    expect(m?.version).toBe(1);
    const g = await m!.create('vm-2', LIMITS);
    expect(g.procsFiles.length).toBe(3);
    const cpuDir = g.dirs.find((d) => d.includes('/cpu,cpuacct/'))!;
    expect(readFileSync(`${cpuDir}/cpu.cfs_quota_us`, 'utf8')).toBe('50000');
    expect(readFileSync(`${cpuDir}/cpu.cfs_period_us`, 'utf8')).toBe('100000');
    const memDir = g.dirs.find((d) => d.includes('/memory/'))!;
    expect(readFileSync(`${memDir}/memory.limit_in_bytes`, 'utf8')).toBe(String(LIMITS.memoryMaxBytes));
    expect(await g.limits()).toEqual(LIMITS);
    await writeFile(`${cpuDir}/cpuacct.usage`, '7000500\n');
    await writeFile(`${memDir}/memory.usage_in_bytes`, '8192\n');
    await writeFile(`${g.dirs.find((d) => d.includes('/pids/'))!}/pids.current`, '2\n');
    expect(await g.usage()).toEqual({ cpuUsageUsec: 7001, memoryCurrentBytes: 8192, pids: 2 });
    await writeFile(`${memDir}/memory.limit_in_bytes`, '9223372036854771712\n');
    await writeFile(`${cpuDir}/cpu.cfs_quota_us`, '-1\n');
    expect(await g.limits()).toMatchObject({ memoryMaxBytes: Infinity, cpuQuotaPercent: Infinity });
  });
});
