import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import type { CgroupLimits, VmCgroup } from '../jail/cgroups.js';
import type { VmNetwork } from '../net/vm-network.js';
import type { EngineContext } from './context.js';
import type { MicroVm } from './microvm.js';
import { qemuArgs, type MachineConfig } from './qemu-args.js';
import { QemuProcess } from './qemu-process.js';
import { QmpClient } from './qmp-client.js';
import { connectUnix } from './unix-socket.js';
import { QmpError } from './errors.js';

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
  memoryFile: string;
  /** The QEMU process's control group (absent when cgroups are off). */
  cgroup?: string;
}

/**
 * What a VM's QEMU may use: its guest RAM plus the TCG code cache plus 256 MiB for QEMU itself;
 * 256 tasks; and CPU up to `burstFactor` times its baseline (memory / 2 GiB of a core, as the
 * reference service ties vCPU to memory), never less than its whole vCPUs.
 */
export function limitsFor(m: MachineConfig, tcgCacheMiB: number, burstFactor: number): CgroupLimits {
  const baselineCores = m.memoryMiB / 2048;
  return {
    memoryMaxBytes: (m.memoryMiB + (m.accel === 'tcg' ? tcgCacheMiB : 0) + 256) * 2 ** 20,
    pidsMax: 256,
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
  memoryFile: string;
  memoryShared: boolean;
  rootDisk: string;
  incoming: boolean;
  network: VmNetwork;
}

/**
 * Starts QEMU for `vm` inside its network namespace and connects QMP. On failure the process is
 * killed before the error propagates (no orphan).
 */
export async function launchQemu(ctx: EngineContext, vm: MicroVm, o: LaunchOptions): Promise<void> {
  const L = vm.layout;
  await rm(L.runDir, { recursive: true, force: true });
  await mkdir(L.runDir, { recursive: true, mode: 0o700 });
  const args = qemuArgs(vm.id, vm.record.machine, {
    memoryFile: o.memoryFile,
    memoryShared: o.memoryShared,
    rootDisk: o.rootDisk,
    qmpSocket: L.qmpSocket,
    agentSocket: L.agentSocket,
    controlSocket: L.controlSocket,
    consoleLog: L.consoleLog,
    tapName: o.network.tapName,
    macAddress: o.network.macAddress,
    incoming: o.incoming,
  });
  const cg = ctx.cgroups
    ? await ctx.cgroups.create(
        cgroupName(vm.id),
        limitsFor(vm.record.machine, ctx.tcgCacheMiB, ctx.cpuBurstFactor),
      )
    : undefined;
  const proc = QemuProcess.spawn({
    vmId: vm.id,
    args,
    netnsPath: o.network.netnsPath,
    stderrFile: L.qemuLog,
  });
  vm.process = proc;
  vm.instance = nextInstance();
  if (cg) watchCgroup(vm, proc, cg);
  try {
    // QEMU joins right after exec, before it has created its vCPU or touched guest RAM.
    if (cg) await cg.join(proc.pid);
    const state: RunState = {
      pid: proc.pid,
      startTime: proc.startTime ?? -1,
      network: o.network,
      activeLayer: vm.activeLayer,
      memoryFile: o.memoryFile,
      ...(cg ? { cgroup: cg.name } : {}),
    };
    await writeFile(L.runStateFile, JSON.stringify(state));
    vm.qmp = await QmpClient.connect(L.qmpSocket, {
      timeoutMs: ctx.qmpConnectTimeoutMs,
      abort: () => proc.exitError(),
    });
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
