import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HearthError } from '../errors.js';

/**
 * Per-VM control groups: each QEMU process runs in its own group with a memory, pids and CPU
 * limit, and its usage can be read back. Works on cgroup v2 (a unified hierarchy, as on a normal
 * Debian 12 host) and on cgroup v1 (separate cpu, cpuacct, memory and pids hierarchies).
 *
 * Layout: v2 `<root>/<parent>/<vm group>`; v1 `<root>/<controller>/<server's own group>/<parent>/<vm
 * group>` for each controller, so the VMs stay inside whatever group the server itself was given.
 * The parent is per data directory (`hearth-<hash>`), so two Hearths on one host never reap each
 * other's groups.
 */

/** What a VM's group allows. */
export interface CgroupLimits {
  /** Memory of QEMU and the guest RAM it touches, bytes. */
  memoryMaxBytes: number;
  /** Tasks (QEMU's threads), a fork-bomb stop. */
  pidsMax: number;
  /** CPU time per period, percent of one core (400 = four cores). */
  cpuQuotaPercent: number;
}

export interface CgroupUsage {
  cpuUsageUsec: number;
  memoryCurrentBytes: number;
  pidsCurrent: number;
}

/** A control-group file could not be written (a limit, or a process joining). */
export class CgroupError extends HearthError {
  readonly code = 'CGROUP_FAILED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, {
      hint: 'Hearth needs a writable /sys/fs/cgroup (run as root, not inside a container without cgroup delegation)',
      ...options,
    });
  }
}

const CPU_PERIOD_US = 100_000;
const V1_CONTROLLERS = ['cpu', 'cpuacct', 'memory', 'pids'] as const;
type V1Controller = (typeof V1_CONTROLLERS)[number];
const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

async function write(file: string, value: string): Promise<void> {
  try {
    await writeFile(file, value);
  } catch (e) {
    throw new CgroupError(`cannot write '${value}' to ${file}: ${(e as Error).message}`, { cause: e });
  }
}

async function readNumber(file: string): Promise<number> {
  const text = (await readFile(file, 'utf8')).trim();
  return text === 'max' ? Infinity : Number(text);
}

/** Kills what is left in a group and removes it (a group without processes can be removed). */
async function removeGroup(dir: string): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') throw e;
    }
    const pids = (await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => ''))
      .split('\n')
      .filter(Boolean)
      .map(Number);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await new Promise((r) => setTimeout(r, 25 * (attempt + 1)));
  }
  throw new CgroupError(`cannot remove ${dir}: processes keep running in it`);
}

/** One VM's group: its directories (one, or one per v1 controller). */
export class VmCgroup {
  constructor(
    readonly name: string,
    private readonly v2: boolean,
    /** v2: the group; v1: controller -> group. */
    readonly dirs: ReadonlyMap<V1Controller | 'unified', string>,
  ) {}

  /** Moves process `pid` (and its threads) into the group, in every hierarchy. */
  async join(pid: number): Promise<void> {
    for (const dir of new Set(this.dirs.values())) await write(join(dir, 'cgroup.procs'), String(pid));
  }

  private dir(c: V1Controller): string {
    return (this.v2 ? this.dirs.get('unified') : this.dirs.get(c))!;
  }

  /** The limits as the kernel holds them. */
  async limits(): Promise<CgroupLimits> {
    if (this.v2) {
      const [quota, period] = (await readFile(join(this.dir('cpu'), 'cpu.max'), 'utf8')).trim().split(' ');
      return {
        memoryMaxBytes: await readNumber(join(this.dir('memory'), 'memory.max')),
        pidsMax: await readNumber(join(this.dir('pids'), 'pids.max')),
        cpuQuotaPercent: quota === 'max' ? Infinity : (Number(quota) / Number(period)) * 100,
      };
    }
    const quota = await readNumber(join(this.dir('cpu'), 'cpu.cfs_quota_us'));
    const period = await readNumber(join(this.dir('cpu'), 'cpu.cfs_period_us'));
    return {
      memoryMaxBytes: await readNumber(join(this.dir('memory'), 'memory.limit_in_bytes')),
      pidsMax: await readNumber(join(this.dir('pids'), 'pids.max')),
      cpuQuotaPercent: quota < 0 ? Infinity : (quota / period) * 100,
    };
  }

  /** CPU time used so far, memory charged now, tasks now. */
  async usage(): Promise<CgroupUsage> {
    if (this.v2) {
      const stat = await readFile(join(this.dir('cpu'), 'cpu.stat'), 'utf8');
      return {
        cpuUsageUsec: Number(/^usage_usec (\d+)$/m.exec(stat)?.[1] ?? 0),
        memoryCurrentBytes: await readNumber(join(this.dir('memory'), 'memory.current')),
        pidsCurrent: await readNumber(join(this.dir('pids'), 'pids.current')),
      };
    }
    return {
      cpuUsageUsec: Math.round((await readNumber(join(this.dir('cpuacct'), 'cpuacct.usage'))) / 1000),
      memoryCurrentBytes: await readNumber(join(this.dir('memory'), 'memory.usage_in_bytes')),
      pidsCurrent: await readNumber(join(this.dir('pids'), 'pids.current')),
    };
  }

  /** Removes the group, killing anything still in it. Idempotent. */
  async remove(): Promise<void> {
    for (const dir of new Set(this.dirs.values())) await removeGroup(dir);
  }
}

/** Creates, finds and removes the VMs' groups. */
export class VmCgroups {
  private constructor(
    private readonly v2: boolean,
    /** v2: 'unified' -> <root>/hearth; v1: controller -> its hearth parent. */
    private readonly parents: ReadonlyMap<V1Controller | 'unified', string>,
  ) {}

  /**
   * Finds the hierarchy and creates Hearth's parent groups (enabling the cpu, memory and pids
   * controllers on v2). Throws CgroupError when the host gives no writable cgroups.
   */
  static async open(opts: { root?: string; parentName?: string } = {}): Promise<VmCgroups> {
    const root = opts.root ?? '/sys/fs/cgroup';
    const parentName = opts.parentName ?? 'hearth';
    if (!NAME.test(parentName))
      throw new CgroupError(`invalid parent group name '${parentName.slice(0, 80)}'`);
    if (existsSync(join(root, 'cgroup.controllers'))) {
      const parent = join(root, parentName);
      await mkdir(parent, { recursive: true }).catch((e: Error) => {
        throw new CgroupError(`cannot create ${parent}: ${e.message}`, { cause: e });
      });
      await write(join(root, 'cgroup.subtree_control'), '+cpu +memory +pids');
      await write(join(parent, 'cgroup.subtree_control'), '+cpu +memory +pids');
      return new VmCgroups(true, new Map([['unified', parent]]));
    }
    const own = await ownV1Groups();
    const parents = new Map<V1Controller, string>();
    for (const c of V1_CONTROLLERS) {
      const mount = join(root, c);
      if (!existsSync(join(mount, 'cgroup.procs')))
        throw new CgroupError(`no cgroup v1 '${c}' hierarchy at ${mount} and no cgroup v2 at ${root}`);
      const parent = join(mount, own.get(c) ?? '/', parentName);
      await mkdir(parent, { recursive: true }).catch((e: Error) => {
        throw new CgroupError(`cannot create ${parent}: ${e.message}`, { cause: e });
      });
      parents.set(c, parent);
    }
    return new VmCgroups(false, parents);
  }

  /** The group of VM `name` (it may or may not exist). */
  group(name: string): VmCgroup {
    if (!NAME.test(name)) throw new CgroupError(`invalid group name '${name.slice(0, 80)}'`);
    const dirs = new Map<V1Controller | 'unified', string>();
    for (const [c, parent] of this.parents) dirs.set(c, join(parent, name));
    return new VmCgroup(name, this.v2, dirs);
  }

  /** Creates VM `name`'s group with `limits` (a stale group of that name is removed first). */
  async create(name: string, limits: CgroupLimits): Promise<VmCgroup> {
    const g = this.group(name);
    await g.remove();
    for (const dir of new Set(g.dirs.values())) await mkdir(dir);
    const quotaUs = Math.max(1000, Math.round((CPU_PERIOD_US * limits.cpuQuotaPercent) / 100));
    const dir = (c: V1Controller) => (this.v2 ? g.dirs.get('unified')! : g.dirs.get(c)!);
    try {
      if (this.v2) {
        await write(join(dir('memory'), 'memory.max'), String(limits.memoryMaxBytes));
        if (existsSync(join(dir('memory'), 'memory.swap.max')))
          await write(join(dir('memory'), 'memory.swap.max'), '0');
        await write(join(dir('cpu'), 'cpu.max'), `${quotaUs} ${CPU_PERIOD_US}`);
      } else {
        await write(join(dir('memory'), 'memory.limit_in_bytes'), String(limits.memoryMaxBytes));
        await write(join(dir('cpu'), 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
        await write(join(dir('cpu'), 'cpu.cfs_quota_us'), String(quotaUs));
      }
      await write(join(dir('pids'), 'pids.max'), String(limits.pidsMax));
    } catch (e) {
      await g.remove().catch(() => undefined);
      throw e;
    }
    return g;
  }

  /** Names of the VM groups that exist. */
  async names(): Promise<Set<string>> {
    const names = new Set<string>();
    for (const parent of new Set(this.parents.values())) {
      for (const e of await readdir(parent, { withFileTypes: true }).catch(() => [])) {
        if (e.isDirectory() && NAME.test(e.name)) names.add(e.name);
      }
    }
    return names;
  }

  /** Removes every VM group not named in `keep` (left by a crash); returns how many. */
  async reapOrphans(keep: ReadonlySet<string>): Promise<number> {
    const orphans = [...(await this.names())].filter((n) => !keep.has(n));
    for (const n of orphans) await this.group(n).remove();
    return orphans.length;
  }
}

/** This process's own v1 groups, controller -> path ("4:memory:/a/b" -> memory -> /a/b). */
async function ownV1Groups(): Promise<Map<string, string>> {
  const own = new Map<string, string>();
  for (const line of (await readFile('/proc/self/cgroup', 'utf8')).split('\n')) {
    const [, controllers, path] = line.split(':');
    if (!controllers || !path) continue;
    for (const c of controllers.split(',')) own.set(c, path);
  }
  return own;
}
