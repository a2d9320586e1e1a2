import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, realpath, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HearthError } from '../errors.js';

/**
 * Per-VM control groups, made for hearth-jailer (its --cgroup-procs), on cgroup v2 (one unified
 * hierarchy: `<root>/cgroup.controllers` exists, as on a normal Debian 12 host) and on cgroup v1
 * (separate hierarchies under `<root>`: cpu and cpuacct, separate or co-mounted as `cpu,cpuacct`,
 * memory and pids).
 *
 * Layout:
 * - v2: `<root>/<parent>/<vm>`. The cpu, memory and pids controllers are enabled in the root's
 *   and the parent's cgroup.subtree_control.
 * - v1: `<hierarchy>/<this process's own group>/<parent>/<vm>` in each needed hierarchy. The VMs
 *   stay inside whatever group the server was put in (a container's or a service's memory limit
 *   keeps applying to them). v1 allows that; v2's no-internal-processes rule does not, so on v2
 *   the parent hangs off the root.
 */

/** What a VM's group allows. */
export interface CgroupLimits {
  /** Memory of the group's processes (QEMU, the guest RAM it touches), bytes. */
  memoryMaxBytes: number;
  /** Tasks (processes and threads): stops a fork bomb. */
  pidsMax: number;
  /** CPU time per 100 ms period, as a percent of one core (400 = four cores). */
  cpuQuotaPercent: number;
}

/** What a VM's group uses now. */
export interface CgroupUsage {
  /** CPU time used since the group was created, microseconds. */
  cpuUsageUsec: number;
  /** Memory charged to the group now, bytes. */
  memoryCurrentBytes: number;
  /** Tasks in the group now. */
  pids: number;
}

/** A control-group operation failed (creating, writing a limit, removing). */
export class CgroupError extends HearthError {
  readonly code = 'CGROUP_FAILED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, {
      hint: 'per-VM cgroups need root and a writable /sys/fs/cgroup (in a container: cgroup delegation)',
      ...options,
    });
  }
}

/** The period of the CPU quota, microseconds. */
export const CPU_PERIOD_US = 100_000;
/** Names of VM groups (and of the parent group). */
export const CGROUP_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

type Controller = 'cpu' | 'cpuacct' | 'memory' | 'pids';
const V1_CONTROLLERS: readonly Controller[] = ['cpu', 'cpuacct', 'memory', 'pids'];
const V2_CONTROLLERS = ['cpu', 'memory', 'pids'];
/** v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages, or LLONG_MAX). */
const V1_UNLIMITED = 2 ** 62;

async function write(file: string, value: string): Promise<void> {
  try {
    await writeFile(file, value);
  } catch (e) {
    throw new CgroupError(`cannot write '${value}' to ${file}: ${(e as Error).message}`, { cause: e });
  }
}

async function readNumber(file: string): Promise<number> {
  const text = (await readFile(file, 'utf8')).trim();
  if (text === 'max') return Infinity;
  const n = Number(text);
  return n >= V1_UNLIMITED ? Infinity : n;
}

function errnoCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException).code;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Removes group directory `dir` and any groups below it. Processes still in them get SIGKILL (via
 * cgroup.kill on v2 when it exists), then rmdir is retried: a group without processes can be
 * removed even though it holds files. A missing directory is fine.
 */
async function removeGroupDir(dir: string): Promise<void> {
  const children = await readdir(dir, { withFileTypes: true }).catch((e: unknown) => {
    if (errnoCode(e) === 'ENOENT') return [];
    throw e;
  });
  for (const c of children) if (c.isDirectory()) await removeGroupDir(join(dir, c.name));
  for (let attempt = 0; attempt < 30; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY')
        throw new CgroupError(`cannot remove ${dir}: ${(e as Error).message}`, { cause: e });
    }
    if (existsSync(join(dir, 'cgroup.kill')))
      await writeFile(join(dir, 'cgroup.kill'), '1').catch(() => undefined);
    const pids = (await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => ''))
      .split('\n')
      .filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    await sleep(Math.min(20 * (attempt + 1), 200));
  }
  throw new CgroupError(`cannot remove ${dir}: processes keep running in it`);
}

/** One VM's group: one directory on v2, one per hierarchy on v1 (cpu and cpuacct may share one). */
export class VmCgroup {
  /** @internal Use CgroupManager.create() or CgroupManager.group(). */
  constructor(
    readonly name: string,
    readonly version: 1 | 2,
    /** The group's directory for each controller (on v2 all the same directory). */
    private readonly dirOf: ReadonlyMap<Controller, string>,
  ) {}

  /** The group's directories, each once. */
  get dirs(): string[] {
    return [...new Set(this.dirOf.values())];
  }

  /**
   * The `cgroup.procs` files a process must write its pid into to be in this group everywhere:
   * pass them to hearth-jailer (JailSpec.cgroupProcsFiles). One on v2, one per hierarchy on v1.
   */
  get procsFiles(): string[] {
    return this.dirs.map((d) => join(d, 'cgroup.procs'));
  }

  private dir(c: Controller): string {
    return this.dirOf.get(c)!;
  }

  /** Moves process `pid` (with its threads) into the group. hearth-jailer does this itself. */
  async join(pid: number): Promise<void> {
    for (const f of this.procsFiles) await write(f, String(pid));
  }

  /** The limits as the kernel holds them (Infinity where there is none). */
  async limits(): Promise<CgroupLimits> {
    if (this.version === 2) {
      const [quota, period] = (await readFile(join(this.dir('cpu'), 'cpu.max'), 'utf8')).trim().split(' ');
      return {
        memoryMaxBytes: await readNumber(join(this.dir('memory'), 'memory.max')),
        pidsMax: await readNumber(join(this.dir('pids'), 'pids.max')),
        cpuQuotaPercent: quota === 'max' ? Infinity : (Number(quota) / Number(period)) * 100,
      };
    }
    const quota = Number((await readFile(join(this.dir('cpu'), 'cpu.cfs_quota_us'), 'utf8')).trim());
    const period = await readNumber(join(this.dir('cpu'), 'cpu.cfs_period_us'));
    return {
      memoryMaxBytes: await readNumber(join(this.dir('memory'), 'memory.limit_in_bytes')),
      pidsMax: await readNumber(join(this.dir('pids'), 'pids.max')),
      cpuQuotaPercent: quota < 0 ? Infinity : (quota / period) * 100,
    };
  }

  /** CPU time used so far, memory charged now, tasks now. Throws if the group is gone. */
  async usage(): Promise<CgroupUsage> {
    if (this.version === 2) {
      const stat = await readFile(join(this.dir('cpu'), 'cpu.stat'), 'utf8');
      return {
        cpuUsageUsec: Number(/^usage_usec (\d+)$/m.exec(stat)?.[1] ?? 0),
        memoryCurrentBytes: await readNumber(join(this.dir('memory'), 'memory.current')),
        pids: await readNumber(join(this.dir('pids'), 'pids.current')),
      };
    }
    return {
      cpuUsageUsec: Math.round((await readNumber(join(this.dir('cpuacct'), 'cpuacct.usage'))) / 1000),
      memoryCurrentBytes: await readNumber(join(this.dir('memory'), 'memory.usage_in_bytes')),
      pids: await readNumber(join(this.dir('pids'), 'pids.current')),
    };
  }

  /**
   * Removes the group's directories. Processes still in them, and every process they started,
   * are killed with SIGKILL first. A missing directory is not an error, so this is idempotent.
   */
  async remove(): Promise<void> {
    for (const d of this.dirs) await removeGroupDir(d);
  }
}

/** The outcome of CgroupManager.probe(): a manager, or why there is none. */
export type CgroupProbe =
  { manager: CgroupManager; reason?: undefined } | { manager?: undefined; reason: string };

/** Creates, finds and removes the VMs' groups below one parent group. */
export class CgroupManager {
  private constructor(
    readonly version: 1 | 2,
    /** The parent group's directory for each controller. */
    private readonly parentOf: ReadonlyMap<Controller, string>,
  ) {}

  /** The parent group's directories, each once (one on v2). */
  get parentDirs(): string[] {
    return [...new Set(this.parentOf.values())];
  }

  /**
   * Like detect(), but says why there is no manager: cgroups not mounted, a controller missing,
   * or not writable (not root, or a container without delegation).
   */
  static async probe(root = '/sys/fs/cgroup', parentName = 'hearth'): Promise<CgroupProbe> {
    if (!CGROUP_NAME.test(parentName))
      return { reason: `invalid parent group name '${parentName.slice(0, 80)}'` };
    try {
      if (existsSync(join(root, 'cgroup.controllers')))
        return { manager: new CgroupManager(2, await openV2(root, parentName)) };
      return { manager: new CgroupManager(1, await openV1(root, parentName)) };
    } catch (e) {
      return { reason: e instanceof Error ? e.message : String(e) };
    }
  }

  /**
   * Finds the cgroup hierarchy under `root` and prepares the parent group `parentName`. On v2 it
   * creates `<root>/<parentName>` and enables +cpu +memory +pids in the root's and the parent's
   * cgroup.subtree_control. On v1 it creates `<parentName>` in the cpu, cpuacct, memory and pids
   * hierarchies, below this process's own group. Returns undefined if this host gives no
   * writable cgroups with those controllers; probe() gives the reason.
   */
  static async detect(root = '/sys/fs/cgroup', parentName = 'hearth'): Promise<CgroupManager | undefined> {
    return (await CgroupManager.probe(root, parentName)).manager;
  }

  /** A handle to VM group `name`, which may or may not exist. Throws CgroupError on a bad name. */
  group(name: string): VmCgroup {
    if (!CGROUP_NAME.test(name)) throw new CgroupError(`invalid cgroup name '${String(name).slice(0, 80)}'`);
    const dirs = new Map<Controller, string>();
    for (const [c, parent] of this.parentOf) dirs.set(c, join(parent, name));
    return new VmCgroup(name, this.version, dirs);
  }

  /**
   * Creates VM group `name` (matching CGROUP_NAME) with `limits`. A stale group of that name is
   * removed first (killing anything left in it). v2: memory.max, memory.swap.max = 0 (if the file
   * exists), pids.max, cpu.max = "<quota> 100000". v1: memory.limit_in_bytes (and
   * memory.memsw.limit_in_bytes, same value, if it exists), pids.max, cpu.cfs_period_us = 100000,
   * cpu.cfs_quota_us. If a limit cannot be written, the group is removed and CgroupError thrown.
   */
  async create(name: string, limits: CgroupLimits): Promise<VmCgroup> {
    checkLimits(limits);
    const g = this.group(name);
    await g.remove();
    const quotaUs = Math.max(1000, Math.round((CPU_PERIOD_US * limits.cpuQuotaPercent) / 100));
    const dir = (c: Controller) => join(this.parentOf.get(c)!, name);
    try {
      for (const d of g.dirs) await mkdir(d);
      if (this.version === 2) {
        await write(join(dir('memory'), 'memory.max'), String(limits.memoryMaxBytes));
        if (existsSync(join(dir('memory'), 'memory.swap.max')))
          await write(join(dir('memory'), 'memory.swap.max'), '0');
        await write(join(dir('cpu'), 'cpu.max'), `${quotaUs} ${CPU_PERIOD_US}`);
      } else {
        await write(join(dir('memory'), 'memory.limit_in_bytes'), String(limits.memoryMaxBytes));
        // memsw (memory + swap) must be >= limit_in_bytes: written second, the same value means no swap.
        if (existsSync(join(dir('memory'), 'memory.memsw.limit_in_bytes')))
          await write(join(dir('memory'), 'memory.memsw.limit_in_bytes'), String(limits.memoryMaxBytes));
        await write(join(dir('cpu'), 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
        await write(join(dir('cpu'), 'cpu.cfs_quota_us'), String(quotaUs));
      }
      await write(join(dir('pids'), 'pids.max'), String(limits.pidsMax));
    } catch (e) {
      await g.remove().catch(() => undefined);
      if (e instanceof CgroupError) throw e;
      throw new CgroupError(`cannot create cgroup ${name}: ${(e as Error).message}`, { cause: e });
    }
    return g;
  }

  /** Names of the VM groups that exist below the parent (in any hierarchy). */
  async names(): Promise<Set<string>> {
    const names = new Set<string>();
    for (const parent of this.parentDirs) {
      for (const e of await readdir(parent, { withFileTypes: true }).catch(() => [])) {
        if (e.isDirectory() && CGROUP_NAME.test(e.name)) names.add(e.name);
      }
    }
    return names;
  }

  /**
   * Removes every VM group whose name is not in `keep` (left by a crash), killing what runs in
   * it. Returns the names removed.
   */
  async reapOrphans(keep: ReadonlySet<string>): Promise<string[]> {
    const orphans = [...(await this.names())].filter((n) => !keep.has(n)).sort();
    for (const n of orphans) await this.group(n).remove();
    return orphans;
  }
}

function checkLimits(l: CgroupLimits): void {
  const ok = (n: number, min: number) => Number.isSafeInteger(n) && n >= min;
  if (
    !ok(l.memoryMaxBytes, 1 << 20) ||
    !ok(l.pidsMax, 1) ||
    !(l.cpuQuotaPercent > 0 && l.cpuQuotaPercent <= 100_000)
  )
    throw new CgroupError(
      `invalid cgroup limits: memory ${l.memoryMaxBytes} (integer >= 1 MiB), pids ${l.pidsMax} (integer >= 1), ` +
        `cpu ${l.cpuQuotaPercent}% (0 < x <= 100000)`,
    );
}

async function mkdirOrThrow(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    throw new CgroupError(`cannot create ${dir}: ${(e as Error).message}`, { cause: e });
  }
}

/** Prepares the v2 parent group; returns its directory for every controller. */
async function openV2(root: string, parentName: string): Promise<Map<Controller, string>> {
  const available = (await readFile(join(root, 'cgroup.controllers'), 'utf8')).trim().split(/\s+/);
  const missing = V2_CONTROLLERS.filter((c) => !available.includes(c));
  if (missing.length > 0)
    throw new CgroupError(`cgroup v2 at ${root} lacks the ${missing.join(', ')} controller(s)`);
  const parent = join(root, parentName);
  const enable = V2_CONTROLLERS.map((c) => `+${c}`).join(' ');
  await write(join(root, 'cgroup.subtree_control'), enable);
  await mkdirOrThrow(parent);
  await write(join(parent, 'cgroup.subtree_control'), enable);
  return new Map(V1_CONTROLLERS.map((c) => [c, parent]));
}

/** Prepares the v1 parent group in each hierarchy; returns controller -> its directory. */
async function openV1(root: string, parentName: string): Promise<Map<Controller, string>> {
  const own = await ownV1Groups();
  const entries = await readdir(root).catch(() => [] as string[]);
  const parents = new Map<Controller, string>();
  for (const c of V1_CONTROLLERS) {
    // `<root>/cpu` may be a directory, or a symlink to `cpu,cpuacct`; or only the latter exists.
    const name = entries.includes(c) ? c : entries.find((e) => e.split(',').includes(c));
    const mount = name === undefined ? undefined : await realpath(join(root, name)).catch(() => undefined);
    if (mount === undefined || !existsSync(join(mount, 'cgroup.procs')))
      throw new CgroupError(`no cgroup v2 at ${root} and no cgroup v1 '${c}' hierarchy below it`);
    // This process's group in that hierarchy, if it is visible here (it may not be in a cgroup namespace).
    const ownDir = join(mount, own.get(c) ?? '/');
    const parent = join(existsSync(ownDir) ? ownDir : mount, parentName);
    await mkdirOrThrow(parent);
    parents.set(c, parent);
  }
  return parents;
}

/** This process's own v1 groups: controller -> path (from "4:memory:/a/b" and "2:cpu,cpuacct:/"). */
async function ownV1Groups(): Promise<Map<string, string>> {
  const own = new Map<string, string>();
  for (const line of (await readFile('/proc/self/cgroup', 'utf8')).split('\n')) {
    const [, controllers, path] = line.split(':');
    if (!controllers || !path) continue;
    for (const c of controllers.split(',')) own.set(c, path);
  }
  return own;
}
