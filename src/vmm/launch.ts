import { randomBytes } from 'node:crypto';
import { chown, mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CgroupLimits, VmCgroup } from '../jail/cgroups.js';
import { vmUid, type JailSpec } from '../jail/jailer.js';
import type { SealedFile } from '../jail/sealed-file.js';
import { asTapNetwork, type VmNetwork } from '../net/vm-networks.js';
import type { EngineContext } from './context.js';
import type { MicroVm } from './microvm.js';
import { qemuArgs, type MachineConfig } from './qemu-args.js';
import { QemuProcess } from './qemu-process.js';
import { QmpClient } from './qmp-client.js';
import { connectUnix } from './unix-socket.js';
import { QmpError } from './errors.js';
import type { HmpCommand } from './port-forwards.js';

let instances = 0;
/** A number unique in this process for each QEMU process started or adopted. */
export function nextInstance(): number {
  return ++instances;
}

/** run/state.json: how a restarted server finds and adopts a live VM. */
export interface RunState {
  pid: number;
  startTime: number;
  network: VmNetwork;
  activeLayer: number;
  /** The QEMU process's control group (absent when cgroups are off). */
  cgroup?: string;
}

/** Tasks (threads) one QEMU may have: its control group's pids.max and its uid's RLIMIT_NPROC. */
export const QEMU_TASKS_MAX = 256;

/**
 * What a VM's QEMU may use: its guest RAM plus the TCG code cache plus 256 MiB for QEMU itself;
 * 256 tasks; and CPU up to `burstFactor` times its baseline (memory / 2 GiB of a core, as the
 * reference service ties vCPU to memory), never less than its whole vCPUs.
 */
export function limitsFor(m: MachineConfig, tcgCacheMiB: number, burstFactor: number): CgroupLimits {
  const baselineCores = m.memoryMiB / 2048;
  return {
    memoryMaxBytes: (m.memoryMiB + (m.accel === 'tcg' ? tcgCacheMiB : 0) + 256) * 2 ** 20,
    pidsMax: QEMU_TASKS_MAX,
    cpuQuotaPercent: Math.round(Math.max(baselineCores * burstFactor, m.vcpus) * 100),
  };
}

/** Makes `cg` the VM's group while `proc` runs, and removes the group when it exits. */
export function watchCgroup(vm: MicroVm, proc: QemuProcess, cg: VmCgroup): void {
  vm.cgroup = cg;
  void proc.exited
    .then(async () => {
      if (vm.cgroup === cg) vm.cgroup = undefined;
      await cg.remove();
    })
    .catch((e: Error) =>
      vm.log.warn('could not remove a control group', { group: cg.name, error: e.message }),
    );
}

/** A group name unique to one QEMU process of VM `vmId` (so a late cleanup never hits the next one). */
function cgroupName(vmId: string): string {
  return `${vmId.slice(0, 55)}-${randomBytes(3).toString('hex')}`;
}

export interface LaunchOptions {
  /**
   * Guest RAM: a file QEMU fills (share=on: a cold boot, which may become a template), or a
   * template's sealed copy, mapped copy-on-write (share=off).
   */
  memory: { file: string } | { sealed: SealedFile };
  /** The VM's writable disk layer (in its directory). */
  rootDisk: string;
  /** The read-only files below it in its disk chain that live outside the VM's directory. */
  backingFiles: string[];
  /** Virtual size of the root disk, bytes, when known: bounds the files QEMU may write. */
  diskBytes?: number;
  incoming: boolean;
  network: VmNetwork;
}

/** Sealed RAM is QEMU's fd 3 (see QemuSpawnOptions.extraFds); QEMU reopens it by this path. */
const SEALED_RAM_PATH = '/proc/self/fd/3';

/** The uid and gid a jailed QEMU runs as: one per network slot, so one per running VM. */
export function qemuUid(network: VmNetwork): number {
  return vmUid(network.slot);
}

/**
 * The jail of one QEMU: its uid, the VM's network namespace, and a root holding /usr (QEMU, its
 * libraries and firmware), the kernel, initrd and backing disks read-only, and the VM's own
 * directory; only the files QEMU must write there (run directory, disk layer, console, RAM file)
 * belong to its uid, everything else in it stays root's and read-only to QEMU.
 */
function jailFor(
  ctx: EngineContext,
  vm: MicroVm,
  o: LaunchOptions,
  cg: VmCgroup | undefined,
  uid: number,
): JailSpec {
  const m = vm.record.machine;
  const inVmDir = (f: string) => f.startsWith(vm.layout.dir + '/');
  const memoryBytes = m.memoryMiB * 2 ** 20;
  const tap = asTapNetwork(o.network);
  return {
    uid,
    gid: uid,
    // A user-mode network is QEMU's own: its forwards listen in the host's namespace.
    ...(tap ? { netnsPath: tap.netnsPath } : {}),
    rootDir: ctx.jail!.rootDir,
    readOnly: [
      ...new Set(['/usr', m.kernelPath, m.initrdPath, ...o.backingFiles].filter((f) => !inVmDir(f))),
    ],
    readWrite: [vm.layout.dir],
    devices: [
      ...(tap ? ['/dev/net/tun'] : []),
      '/dev/null',
      '/dev/urandom',
      ...(m.accel === 'kvm' ? ['/dev/kvm'] : []),
    ],
    cgroupProcsFiles: cg?.procsFiles ?? [],
    keepFds: 'sealed' in o.memory ? [3] : [],
    limits: {
      nofile: 1024,
      nproc: QEMU_TASKS_MAX,
      ...(o.diskBytes ? { fsizeBytes: Math.max(o.diskBytes, memoryBytes) + 2 ** 30 } : {}),
    },
    hostname: 'hearth-qemu',
  };
}

/** Gives directory `dir` and `files` (created if absent) to `uid`. */
async function giveFiles(dir: string, files: string[], uid: number): Promise<void> {
  await Promise.all([
    chown(dir, uid, uid),
    ...files.map(async (f) => {
      await (await open(f, 'a', 0o600)).close();
      await chown(f, uid, uid);
    }),
  ]);
}

/**
 * Starts QEMU for `vm` (jailed when the engine jails) and connects QMP: inside the VM's network
 * namespace for a tap network; with a user-mode network, in Hearth's own namespace, and the VM's
 * forwards are bound to the new process (those it had before a suspend are added back). On
 * failure the process is killed before the error propagates (no orphan).
 */
export async function launchQemu(ctx: EngineContext, vm: MicroVm, o: LaunchOptions): Promise<void> {
  const L = vm.layout;
  await rm(L.runDir, { recursive: true, force: true });
  await mkdir(L.runDir, { recursive: true, mode: 0o700 });
  const sealed = 'sealed' in o.memory ? o.memory.sealed : undefined;
  const ramFile = 'file' in o.memory ? o.memory.file : undefined;
  const tap = asTapNetwork(o.network);
  const args = qemuArgs(vm.id, vm.record.machine, {
    memoryFile: ramFile ?? SEALED_RAM_PATH,
    memoryShared: ramFile !== undefined,
    rootDisk: o.rootDisk,
    qmpSocket: L.qmpSocket,
    agentSocket: L.agentSocket,
    controlSocket: L.controlSocket,
    consoleLog: L.consoleLog,
    ...(tap ? { tapName: tap.tapName } : {}),
    macAddress: o.network.macAddress,
    incoming: o.incoming,
  });
  const uid = ctx.jail ? qemuUid(o.network) : undefined;
  // A booting guest runs from QEMU's first instant, so hearth-jailer puts QEMU in its group before
  // exec. A restored QEMU stays paused until `cont`: it joins while it starts, since a first move
  // into a new group waits for the kernel (an RCU grace period, ~10 ms on cgroup v1).
  const joinBeforeExec = uid !== undefined && !o.incoming;
  const [group, files] = await Promise.allSettled([
    ctx.cgroups?.create(cgroupName(vm.id), limitsFor(vm.record.machine, ctx.tcgCacheMiB, ctx.cpuBurstFactor)),
    uid !== undefined
      ? giveFiles(L.runDir, [L.consoleLog, o.rootDisk, ...(ramFile ? [ramFile] : [])], uid)
      : undefined,
  ]);
  if (group.status === 'rejected') throw group.reason;
  const cg = group.value;
  if (files.status === 'rejected') {
    await cg?.remove();
    throw files.reason;
  }
  let proc: QemuProcess;
  try {
    proc = await QemuProcess.spawn({
      vmId: vm.id,
      args,
      ...(tap ? { netnsPath: tap.netnsPath } : {}),
      stderrFile: L.qemuLog,
      ...(uid !== undefined
        ? {
            jail: {
              jailer: ctx.jail!.jailer,
              spec: jailFor(ctx, vm, o, joinBeforeExec ? cg : undefined, uid),
            },
          }
        : {}),
      ...(sealed ? { extraFds: [sealed.fd] } : {}),
    });
  } catch (e) {
    await cg?.remove();
    throw e;
  }
  vm.process = proc;
  vm.instance = nextInstance();
  if (cg) watchCgroup(vm, proc, cg);
  try {
    const joined = cg && !joinBeforeExec ? cg.join(proc.pid) : undefined;
    const state: RunState = {
      pid: proc.pid,
      startTime: proc.startTime ?? -1,
      network: o.network,
      activeLayer: vm.activeLayer,
      ...(cg ? { cgroup: cg.name } : {}),
    };
    await writeFile(L.runStateFile, JSON.stringify(state));
    // Both settle before either error is thrown, so a QMP client that connected is closed below.
    const [qmp, join] = await Promise.allSettled([
      QmpClient.connect(L.qmpSocket, {
        timeoutMs: ctx.qmpConnectTimeoutMs,
        abort: () => proc.exitError(),
      }),
      joined,
    ]);
    if (qmp.status === 'rejected') throw qmp.reason;
    vm.qmp = qmp.value;
    if (join.status === 'rejected') throw join.reason;
    if (o.network.kind === 'user') await attachForwards(vm);
    if (o.incoming) {
      await vm.qmp.execute('migrate-set-capabilities', {
        capabilities: [
          { capability: 'x-ignore-shared', state: true },
          { capability: 'events', state: true },
        ],
      });
    }
  } catch (e) {
    proc.kill('SIGKILL');
    await proc.exited;
    vm.process = undefined;
    vm.qmp?.close();
    vm.qmp = undefined;
    throw proc.exitError() ?? e;
  }
}

/** Sends human monitor commands (hostfwd_add, info usernet) to the VM's QEMU through QMP. */
export function hmpOf(vm: MicroVm): HmpCommand {
  const qmp = vm.qmp!;
  return (commandLine) => qmp.execute<string>('human-monitor-command', { 'command-line': commandLine });
}

/**
 * Binds the VM's forwards to its new QEMU process and adds back the ones it had before (a resume:
 * preferably on the same host ports). A forward that fails now is only logged: it is added again
 * when something asks for its port.
 */
async function attachForwards(vm: MicroVm): Promise<void> {
  try {
    await vm.forwards.attach(hmpOf(vm), 'restore');
  } catch (e) {
    vm.log.warn('could not add back a port forward after a restore', { error: (e as Error).message });
  }
}

/**
 * Saves a stopped VM's device state to `file` (QEMU writes it into the VM's run directory, the only
 * place a jailed QEMU may create files; it is then moved). Precondition: vCPUs stopped (QMP stop).
 */
export async function saveDeviceState(vm: MicroVm, file: string): Promise<void> {
  const inRunDir = join(vm.layout.runDir, 'devices.state');
  await vm.qmp!.execute('xen-save-devices-state', { filename: inRunDir, live: false });
  await rename(inRunDir, file);
}

/**
 * Loads a device-state file into a QEMU started with `incoming`: QEMU listens on a Unix socket and
 * Hearth streams the file into it (no shell, no helper process inside QEMU's sandbox).
 * Precondition: guest RAM already holds the snapshot's memory. The VM stays paused.
 */
export async function loadDeviceState(vm: MicroVm, devicesFile: string, timeoutMs = 30_000): Promise<void> {
  const qmp = vm.qmp!;
  const sock = vm.layout.migrationSocket;
  await qmp.execute('migrate-incoming', { uri: `unix:${sock}` });
  const done = qmp.waitForEvent('MIGRATION', {
    timeoutMs,
    predicate: (e) => e.data?.status === 'completed' || e.data?.status === 'failed',
  });
  done.catch(() => undefined);
  const conn = await connectUnix(sock, 5_000, () => vm.process?.exitError());
  // Device state is small (tens of KiB). QEMU may close its end as soon as it has read the
  // end-of-stream marker, before our side finishes closing: success or failure is judged by the
  // MIGRATION event (or QEMU's exit), not by the socket.
  conn.on('error', () => undefined);
  conn.end(await readFile(devicesFile));
  const ev = await Promise.race([
    done,
    vm.process!.exited.then(() => {
      throw vm.process!.exitError();
    }),
  ]);
  if (ev.data?.status !== 'completed')
    throw new QmpError('migrate-incoming', `device state load ${String(ev.data?.status)}`);
}
