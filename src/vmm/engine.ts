import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { HearthError } from '../errors.js';
import { CgroupManager } from '../jail/cgroups.js';
import { ensureJailerBinary, vmUid } from '../jail/jailer.js';
import { ensureSealBinary } from '../jail/sealed-file.js';
import { sha256 } from '../util/hash.js';
import type { DataDir } from '../config/data-dir.js';
import { assertSafeId } from '../config/data-dir.js';
import { bootConfigArchive, type WorkloadSpec } from '../guest/workload-config.js';
import type { EgressPolicy } from '../net/policy.js';
import { UserNetworks } from '../net/user-network.js';
import { GUEST_DNS, GUEST_GATEWAY, GUEST_IP, GUEST_PREFIX, NetworkManager } from '../net/vm-network.js';
import type { NetworkMode, VmNetworks } from '../net/vm-networks.js';
import { loadHostArtifacts, type HostArtifacts } from '../setup/host-artifacts.js';
import { run } from '../util/exec.js';
import { fsyncDir, fsyncFile, writeFileAtomic } from '../util/fs-atomic.js';
import { createLogger, type Logger } from '../util/log.js';
import { Mutex } from '../util/mutex.js';
import type { EngineContext } from './context.js';
import { createOverlay, freezeLayer } from './disk.js';
import { BootTimeoutError, InvalidVmStateError } from './errors.js';
import { waitForQuietGuest } from './guest-quiesce.js';
import { launchQemu, nextInstance, saveDeviceState, watchCgroup, type RunState } from './launch.js';
import { MicroVm, type VmRecord } from './microvm.js';
import { cpuModel, defaultCmdline, tcgTscArgs, type MachineConfig } from './qemu-args.js';
import {
  recordFile,
  readManifest,
  VerifiedFiles,
  writeManifest,
  type SnapshotManifest,
  type MachineFingerprint,
  checkCompatible,
} from './snapshot-manifest.js';
import { parseGeneration, VmLayout } from './vm-layout.js';
import { QemuProcess } from './qemu-process.js';
import { TemplateRam } from './template-ram.js';
import { QmpClient } from './qmp-client.js';
import { applyRestoreHygiene } from './restore-hygiene.js';
import { HOSTNAME_PATTERN } from './guest-control.js';
import { suspendVm } from './vm-suspend.js';
import { restoreClone, resumeVm, verifyGeneration } from './vm-restore.js';
import { killOrphanQemus } from './orphans.js';
import { hostProtections, type HostProtections } from './host-protections.js';
import { hmpOf } from './launch.js';

/** Another Hearth process already uses this data directory. */
export class EngineLockedError extends HearthError {
  readonly code = 'VMM_DATA_DIR_LOCKED';
  constructor(dir: string, pid: number) {
    super(`data directory ${dir} is in use by process ${pid}`, {
      hint: 'stop that Hearth process, or use another data directory',
    });
  }
}

/** No VM or template with this id exists on this host. */
export class VmNotFoundError extends HearthError {
  readonly code = 'VMM_NOT_FOUND';
  constructor(what: 'VM' | 'template', id: string) {
    super(`${what} ${id} not found`);
  }
}

/**
 * The control groups of this data directory's VMs (parent `hearth-<hash of the data dir>`, so two
 * Hearths on one host never reap each other's groups). Without writable cgroups VMs still run,
 * without memory, task and CPU limits, and the log says why.
 */
async function openCgroups(dataDir: DataDir, log: Logger): Promise<CgroupManager | undefined> {
  const probe = await CgroupManager.probe(undefined, `hearth-${sha256(dataDir.root).slice(0, 12)}`);
  if (!probe.manager) log.info('control groups unavailable', { reason: probe.reason });
  return probe.manager;
}

/**
 * The VMs' networks: network namespaces as root, else QEMU's user-mode networking (which needs no
 * privilege and enforces deny-all egress only).
 */
function openNetworks(dataDir: DataDir, mode: NetworkMode, o: EngineOptions, jailed: boolean): VmNetworks {
  if (mode === 'user-mode') return new UserNetworks();
  return new NetworkManager({
    stateDir: join(dataDir.root, 'run', 'net'),
    ...(o.vmSubnet ? { subnet: o.vmSubnet } : {}),
    // A jailed QEMU opens its tap without privileges: the tap belongs to its uid.
    ...(jailed ? { tapOwnerUid: (slot: number) => vmUid(slot) } : {}),
  });
}

/** The jailer binary and the empty directory every jail mounts its root on (in its own namespace). */
async function openJail(dataDir: DataDir, binDir: string): Promise<EngineContext['jail']> {
  const rootDir = join(dataDir.root, 'run', 'jail-root');
  await mkdir(rootDir, { recursive: true, mode: 0o755 });
  return { jailer: await ensureJailerBinary(binDir), rootDir };
}

export interface EngineOptions {
  dataDir: DataDir;
  /** Default: read from the data directory (written by `hearth setup`). */
  artifacts?: HostArtifacts;
  log?: Logger;
  /** TCG translated-code cache per VM, MiB. Default 128. */
  tcgCacheMiB?: number;
  /** IPv4 /16 for host-VM links. Default 10.201.0.0/16. */
  vmSubnet?: string;
  /**
   * Take over VMs whose QEMU an earlier engine left running (after a crash of the server), instead
   * of killing them. Default false: every leftover QEMU is killed.
   */
  adoptRunning?: boolean;
  /**
   * Run each QEMU in its own control group with memory, pids and CPU limits (see limitsFor in
   * launch.ts). Default true; needs a writable /sys/fs/cgroup (root).
   */
  cgroups?: boolean;
  /**
   * Run each QEMU inside hearth-jailer: its own uid, new mount/pid/ipc/uts namespaces, a root
   * holding only its own files (see launch.ts). Default true when running as root (it needs root).
   */
  jail?: boolean;
  /**
   * How guests are networked: 'namespaces' (a namespace, tap and nftables per VM; needs root;
   * enforces egress policies) or 'user-mode' (QEMU's own restricted stack, forwards on 127.0.0.1;
   * no privilege; deny-all egress only). Default: 'namespaces' as root, else 'user-mode'.
   */
  network?: NetworkMode;
}

export interface BootOptions {
  vmId: string;
  /** Guest RAM, MiB. Default 512. */
  memoryMiB?: number;
  /** Default 1. */
  vcpus?: number;
  workload?: WorkloadSpec;
  hostname?: string;
  /** Root disk to put the VM's first copy-on-write layer on. Default: the host's Debian base disk. */
  baseDisk?: { path: string; format: 'raw' | 'qcow2' };
  /** Resolve only once this guest TCP port accepts connections. */
  waitForPort?: number;
  /** Deadline for the guest init (and `waitForPort`), ms. Default 120 000. */
  bootTimeoutMs?: number;
  /** What the guest may reach. Default: nothing. */
  egress?: EgressPolicy;
}

export interface CloneOptions {
  vmId: string;
  /** What the guest may reach, kept across suspend and resume. Default: nothing. */
  egress?: EgressPolicy;
  /** Default: the VM id. */
  hostname?: string;
}

/** An immutable snapshot clones start from: RAM file, device state, frozen disk, initrd. */
export interface Template {
  id: string;
  dir: string;
  manifest: TemplateManifest;
}

export interface TemplateManifest extends SnapshotManifest {
  kind: 'template';
  /** The machine the template runs (paths relative to the data directory). */
  machineConfig: MachineConfig;
  /** The raw disk under the template's layer (relative to the data directory), by size. */
  baseDisk: { path: string; sizeBytes: number };
}

const DEFAULT_MEMORY_MIB = 512;
const DEFAULT_BOOT_TIMEOUT_MS = 120_000;
const QEMU_QUIT_TIMEOUT_MS = 10_000;

/**
 * The microVM engine of one host: boots VMs, turns a running VM into a template, clones templates,
 * suspends and resumes clones, stops and destroys VMs. Operations on one VM are serialised.
 * One Engine per data directory (enforced with a lock file).
 */
export class Engine {
  private readonly vms = new Map<string, MicroVm>();
  private readonly locks = new Map<string, Mutex>();
  private readonly templates = new Map<string, Template>();
  private closed = false;

  private constructor(
    readonly ctx: EngineContext,
    private readonly lockFile: string,
  ) {}

  /**
   * Opens the engine on a set-up data directory: takes its lock, then removes what a crashed
   * predecessor left: QEMU processes, VM networks, sockets and uncommitted snapshot directories.
   * Logs one warning per protection it cannot give here (see `protections`): without root there is
   * no jail, no control groups, and networking is user-mode.
   */
  static async open(opts: EngineOptions): Promise<Engine> {
    const dataDir = opts.dataDir;
    const artifacts = opts.artifacts ?? (await loadHostArtifacts(dataDir));
    const log = opts.log ?? createLogger('engine');
    await mkdir(dataDir.root, { recursive: true });
    const lockFile = join(dataDir.root, 'engine.lock');
    await acquireLock(lockFile, dataDir.root);
    const binDir = join(dataDir.cacheDir, 'jail');
    const root = process.getuid?.() === 0;
    const wantJail = opts.jail ?? true;
    const jail = wantJail && root ? await openJail(dataDir, binDir) : undefined;
    const networkMode = opts.network ?? (root ? 'namespaces' : 'user-mode');
    const ctx: EngineContext = {
      dataDir,
      artifacts,
      log,
      network: openNetworks(dataDir, networkMode, opts, jail !== undefined),
      verified: new VerifiedFiles(),
      tcgCacheMiB: opts.tcgCacheMiB ?? 128,
      cgroups: opts.cgroups === false ? undefined : await openCgroups(dataDir, log),
      cpuBurstFactor: 4,
      qmpConnectTimeoutMs: 10_000,
      jail,
      templateRam: new TemplateRam(await ensureSealBinary(binDir)),
    };
    const engine = new Engine(ctx, lockFile);
    // One warning per protection wanted but not given here (GET /hearth/v1/host lists them all).
    const notWanted = new Set([
      ...(wantJail ? [] : ['qemu-jail']),
      ...(opts.cgroups === false ? ['cgroup-limits'] : []),
    ]);
    const p = engine.protections;
    p.notEnforced.forEach((name, i) => {
      if (!notWanted.has(name)) log.warn(p.warnings[i]!);
    });
    await engine.cleanupAfterCrash(opts.adoptRunning ?? false);
    return engine;
  }

  /** What this engine enforces around its VMs and what it cannot here (see host-protections.ts). */
  get protections(): HostProtections {
    return hostProtections({
      accelerator: this.ctx.artifacts.accel.accel,
      jail: this.ctx.jail !== undefined,
      cgroups: this.ctx.cgroups !== undefined,
      network: this.ctx.network.mode,
      uid: process.getuid?.() ?? -1,
    });
  }

  /**
   * Throws unless this engine can give a guest egress `policy`: NET_POLICY_INVALID (malformed or
   * opening what no VM may reach), NET_EGRESS_UNENFORCEABLE (anything but deny-all with user-mode
   * networking). Nothing is started; check before recording a launch.
   */
  checkEgress(policy: Readonly<EgressPolicy>): void {
    this.ctx.network.checkEgress(policy);
  }

  private async cleanupAfterCrash(adoptRunning: boolean): Promise<void> {
    const adopted = adoptRunning ? await this.adoptLiveVms() : [];
    const killed = await killOrphanQemus(
      this.ctx.dataDir.vmsDir,
      adopted.map((vm) => vm.process!.pid),
    );
    if (killed > 0) this.ctx.log.warn('killed QEMU processes left by a previous engine', { count: killed });
    await this.ctx.network.reapOrphans(new Set(adopted.map((vm) => vm.network!.slot)));
    const reaped = await this.ctx.cgroups?.reapOrphans(
      new Set(adopted.flatMap((vm) => (vm.cgroup ? [vm.cgroup.name] : []))),
    );
    if (reaped?.length)
      this.ctx.log.info('removed control groups left by a previous engine', { count: reaped.length });
    for (const id of await readdir(this.ctx.dataDir.vmsDir).catch(() => [] as string[])) {
      const L = new VmLayout(this.ctx.dataDir.vmsDir, id);
      if (!this.vms.has(id)) await rm(L.runDir, { recursive: true, force: true });
      for (const g of await readdir(L.snapshotsDir).catch(() => [] as string[])) {
        if (g.endsWith('.tmp')) await rm(join(L.snapshotsDir, g), { recursive: true, force: true });
      }
    }
    for (const t of await readdir(this.ctx.dataDir.templatesDir).catch(() => [] as string[])) {
      if (t.includes('.tmp'))
        await rm(join(this.ctx.dataDir.templatesDir, t), { recursive: true, force: true });
    }
  }

  /**
   * Takes over the QEMU processes an earlier engine left running (they outlive it: their own session,
   * stderr in a file): process, QMP, network. Their guests may be paused or frozen if the earlier
   * engine died mid-operation: see `revive`.
   */
  private async adoptLiveVms(): Promise<MicroVm[]> {
    const adopted: MicroVm[] = [];
    for (const id of await readdir(this.ctx.dataDir.vmsDir).catch(() => [] as string[])) {
      const L = new VmLayout(this.ctx.dataDir.vmsDir, id);
      let state: RunState;
      let record: VmRecord;
      try {
        state = JSON.parse(await readFile(L.runStateFile, 'utf8')) as RunState;
        record = JSON.parse(await readFile(L.recordFile, 'utf8')) as VmRecord;
      } catch {
        continue;
      }
      const cmdline = await readFile(`/proc/${state.pid}/cmdline`, 'utf8').catch(() => '');
      const proc = cmdline.includes(`hearth-${id},`)
        ? QemuProcess.adopt(id, state.pid, state.startTime, L.qemuLog)
        : undefined;
      if (!proc) continue;
      const vm = new MicroVm(record, L, this.ctx.log.child(id), 'running');
      vm.process = proc;
      vm.instance = nextInstance();
      vm.network = state.network;
      if (state.cgroup && this.ctx.cgroups) watchCgroup(vm, proc, this.ctx.cgroups.group(state.cgroup));
      vm.activeLayer = state.activeLayer;
      vm.generation = await newestGeneration(L);
      try {
        vm.qmp = await QmpClient.connect(L.qmpSocket, { timeoutMs: 5_000, abort: () => proc.exitError() });
        const st = await vm.qmp.execute<{ status: string }>('query-status');
        vm.adoptedStatus = st.status;
        // The forwards its QEMU already listens on, so that they are used rather than added again.
        if (state.network.kind === 'user') await vm.forwards.attach(hmpOf(vm), 'adopt');
      } catch (e) {
        this.ctx.log.warn('could not adopt a running VM', { vm: id, error: (e as Error).message });
        proc.kill('SIGKILL');
        vm.qmp?.close();
        continue;
      }
      this.ctx.network.adopt(state.network);
      this.vms.set(id, vm);
      adopted.push(vm);
      this.ctx.log.info('adopted a running VM', { vm: id, pid: state.pid, status: vm.adoptedStatus });
    }
    return adopted;
  }

  /**
   * Makes an adopted VM whole again, whatever the earlier engine was doing when it died: continues
   * vCPUs stopped for a snapshot, thaws filesystems frozen for one, and applies restore hygiene
   * (clock, RNG, identity) in case a restore was cut short. Idempotent. Precondition: running.
   */
  async revive(vm: MicroVm): Promise<void> {
    await this.lockFor(vm.id).run(async () => {
      if (vm.state !== 'running' || !vm.qmp)
        throw new InvalidVmStateError(vm.id, 'revive', vm.state, ['running']);
      const st = await vm.qmp.execute<{ status: string }>('query-status');
      if (st.status !== 'running') await vm.qmp.execute('cont');
      await applyRestoreHygiene(vm, { thaw: true });
      vm.adoptedStatus = undefined;
    });
  }

  /** VMs taken over from an earlier engine at open (see EngineOptions.adoptRunning). */
  adopted(): MicroVm[] {
    return [...this.vms.values()].filter((vm) => vm.adoptedStatus !== undefined);
  }

  get log(): Logger {
    return this.ctx.log;
  }

  private lockFor(vmId: string): Mutex {
    let m = this.locks.get(vmId);
    if (!m) this.locks.set(vmId, (m = new Mutex()));
    return m;
  }

  /** The VM handle if this engine knows the VM (running, or suspended/stopped since it was opened). */
  get(vmId: string): MicroVm | undefined {
    return this.vms.get(vmId);
  }

  list(): MicroVm[] {
    return [...this.vms.values()];
  }

  private fingerprint(m: MachineConfig): MachineFingerprint {
    return {
      memoryMiB: m.memoryMiB,
      vcpus: m.vcpus,
      accel: m.accel,
      qemuVersion: this.ctx.artifacts.qemuVersion,
      kernelRelease: this.ctx.artifacts.kernel.release,
      network: m.network,
      ...(m.network ? { networkMode: m.networkMode ?? 'namespaces' } : {}),
      cpuModel: cpuModel(m.accel),
    };
  }

  /**
   * Cold-boots a VM on a fresh copy-on-write layer over a base disk, with its RAM in a file
   * (share=on) so that it can become a template. Resolves when hearth-init answers (and, with
   * `waitForPort`, when that port accepts connections). On failure nothing of the VM is left running.
   */
  async boot(o: BootOptions): Promise<MicroVm> {
    assertSafeId(o.vmId, 'VM id');
    if (o.egress) this.checkEgress(o.egress); // before anything is created
    if (this.vms.has(o.vmId) || existsSync(new VmLayout(this.ctx.dataDir.vmsDir, o.vmId).dir)) {
      throw new InvalidVmStateError(o.vmId, 'boot', 'exists', ['absent']);
    }
    const a = this.ctx.artifacts;
    const L = new VmLayout(this.ctx.dataDir.vmsDir, o.vmId);
    const hostname = o.hostname ?? o.vmId;
    if (!HOSTNAME_PATTERN.test(hostname))
      throw new RangeError(`hostname '${hostname.slice(0, 70)}' is not a valid host name`);
    const networkMode = this.ctx.network.mode;
    const machine: MachineConfig = {
      memoryMiB: o.memoryMiB ?? DEFAULT_MEMORY_MIB,
      vcpus: o.vcpus ?? 1,
      accel: a.accel.accel,
      kernelPath: a.kernel.vmlinuz,
      initrdPath: L.initrd,
      cmdline: defaultCmdline([
        ...(a.accel.accel === 'tcg' ? tcgTscArgs() : []),
        `hearth.ip=${GUEST_IP}/${GUEST_PREFIX}`,
        `hearth.gw=${GUEST_GATEWAY}`,
        `hearth.hostname=${hostname}`,
        // With user-mode networking no resolver is ever reachable: without hearth.dns the guest's
        // resolv.conf names its own loopback, so a lookup fails at once instead of timing out.
        ...(networkMode === 'namespaces' ? [`hearth.dns=${GUEST_DNS}`] : []),
      ]),
      tcgCacheMiB: this.ctx.tcgCacheMiB,
      network: true,
      networkMode,
    };
    const record: VmRecord = {
      id: o.vmId,
      createdAt: new Date().toISOString(),
      origin: { kind: 'boot' },
      machine,
      hostname,
      machineId: randomBytes(16).toString('hex'),
      ...(o.workload ? { workload: o.workload } : {}),
      ...(o.egress ? { egress: o.egress } : {}),
    };
    const vm = new MicroVm(record, L, this.ctx.log.child(o.vmId), 'starting');
    this.vms.set(vm.id, vm);
    const t0 = Date.now();
    try {
      await mkdir(L.disksDir, { recursive: true });
      await mkdir(L.snapshotsDir, { recursive: true });
      await writeFileAtomic(L.recordFile, JSON.stringify(record, null, 2));
      const baseDisk = o.baseDisk ?? { path: a.baseDisk.path, format: 'raw' as const };
      await createOverlay(L.layer(1), baseDisk.path, baseDisk.format);
      vm.network = await this.ctx.network.acquire(record.egress);
      const base = await readFile(a.initramfs);
      const initrd = Buffer.concat([
        base,
        // The kernel only looks for the next archive at a 4-byte aligned offset after a compressed one.
        Buffer.alloc((4 - (base.length % 4)) % 4),
        bootConfigArchive({ workload: o.workload, hostname }),
      ]);
      await writeFile(L.initrd, initrd, { mode: 0o644 });
      await launchQemu(this.ctx, vm, {
        memory: { file: L.memoryFile },
        rootDisk: L.layer(1),
        backingFiles: [baseDisk.path],
        ...(baseDisk.format === 'raw' ? { diskBytes: (await stat(baseDisk.path)).size } : {}),
        incoming: false,
        network: vm.network,
      });
      const timeoutMs = o.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
      const deadline = Date.now() + timeoutMs;
      try {
        const control = await vm.control(timeoutMs);
        await control.ping(Math.max(1, deadline - Date.now()));
        if (o.waitForPort !== undefined) {
          await vm.waitForPort(o.waitForPort, Math.max(1, deadline - Date.now()));
        }
      } catch (e) {
        // A closed guest channel is often the first sign that QEMU died: give its exit a moment to
        // be observed, so the error names QEMU's own message rather than a timeout.
        const explained = await vm.explain(e);
        throw (
          (explained !== e ? explained : undefined) ??
          new BootTimeoutError(
            vm.id,
            o.waitForPort ? `port ${o.waitForPort}` : 'guest init',
            timeoutMs,
            await vm.consoleTail(15),
            { cause: e },
          )
        );
      }
      vm.state = 'running';
      vm.log.info('booted', { ms: Date.now() - t0, accel: machine.accel });
      return vm;
    } catch (e) {
      await this.teardown(vm, 'failed', `boot failed: ${(e as Error).message}`);
      throw e;
    }
  }

  /**
   * Turns a running cold-booted VM into template `templateId`: stops it, saves its device state,
   * and moves its RAM file, disk layer and initrd into templates/<id>/, frozen (read-only) and
   * described by a checksummed manifest. The VM no longer exists afterwards.
   */
  async createTemplate(vm: MicroVm, templateId: string): Promise<Template> {
    assertSafeId(templateId, 'template id');
    return this.lockFor(vm.id).run(async () => {
      if (vm.state !== 'running' || vm.record.origin.kind !== 'boot') {
        throw new InvalidVmStateError(vm.id, 'make a template of', `${vm.state}/${vm.record.origin.kind}`, [
          'running/boot',
        ]);
      }
      const final = join(this.ctx.dataDir.templatesDir, templateId);
      if (existsSync(final))
        throw new InvalidVmStateError(templateId, 'create template', 'exists', ['absent']);
      const tmp = `${final}.tmp-${randomBytes(4).toString('hex')}`;
      await mkdir(tmp, { recursive: true });
      const t0 = Date.now();
      try {
        const qmp = vm.qmp!;
        // What the guest is still doing when frozen, every clone does again after its restore (and
        // under TCG pays for translating): let it see the agent's host side close, and finish
        // what it was doing (the warm-up request's connection closing), once, here.
        vm.closeAgent();
        if (!(await waitForQuietGuest(vm.process!.pid)))
          vm.log.info('the guest was still busy when its template snapshot was taken');
        await qmp.execute('stop');
        await saveDeviceState(vm, join(tmp, 'devices.state'));
        await this.quitQemu(vm);
        const L = vm.layout;
        await rename(L.memoryFile, join(tmp, 'memory.raw'));
        await rename(L.layer(1), join(tmp, 'disk.qcow2'));
        await rename(L.initrd, join(tmp, 'initrd.img'));
        // The layer's backing path is relative to its directory: point it at the base disk from here.
        const backing = await qcow2Backing(join(tmp, 'disk.qcow2'), L.disksDir);
        await run('qemu-img', [
          'rebase',
          '-u',
          '-f',
          'qcow2',
          '-F',
          'raw',
          '-b',
          relative(final, backing),
          join(tmp, 'disk.qcow2'),
        ]);
        for (const f of ['memory.raw', 'disk.qcow2', 'initrd.img', 'devices.state']) {
          await fsyncFile(join(tmp, f));
          await freezeLayer(join(tmp, f));
        }
        const dataRoot = this.ctx.dataDir.root;
        const m = vm.record.machine;
        const manifest: TemplateManifest = {
          format: 'hearth-snapshot/1',
          kind: 'template',
          vmId: vm.id,
          generation: 0,
          createdAt: new Date().toISOString(),
          machine: this.fingerprint(m),
          machineConfig: { ...m, kernelPath: relative(dataRoot, m.kernelPath), initrdPath: 'initrd.img' },
          memory: { ...(await recordFile(join(tmp, 'memory.raw'), 'memory.raw')), mode: 'full' },
          devices: await recordFile(join(tmp, 'devices.state'), 'devices.state'),
          diskLayers: [await recordFile(join(tmp, 'disk.qcow2'), 'disk.qcow2')],
          initrd: await recordFile(join(tmp, 'initrd.img'), 'initrd.img'),
          baseDisk: { path: relative(dataRoot, backing), sizeBytes: (await stat(backing)).size },
          fsFrozen: false,
        };
        await writeManifest(tmp, manifest);
        await rename(tmp, final);
        await fsyncDir(this.ctx.dataDir.templatesDir);
        await this.teardown(vm, 'stopped', `became template ${templateId}`);
        await rm(L.dir, { recursive: true, force: true });
        this.vms.delete(vm.id);
        const template: Template = { id: templateId, dir: final, manifest };
        for (const f of [manifest.memory, manifest.devices, manifest.initrd, ...manifest.diskLayers]) {
          await this.ctx.verified.trust(join(final, f.path), f);
        }
        this.templates.set(templateId, template);
        this.ctx.log.info('template created', {
          template: templateId,
          from: vm.id,
          ms: Date.now() - t0,
          memoryBytes: manifest.memory.sizeBytes,
        });
        return template;
      } catch (e) {
        await rm(tmp, { recursive: true, force: true });
        if (vm.process && !vm.process.hasExited) await vm.qmp?.execute('cont').catch(() => undefined);
        else await this.teardown(vm, 'failed', `template creation failed: ${(e as Error).message}`);
        throw e;
      }
    });
  }

  /**
   * Throws SnapshotIncompatibleError if a template was made for another machine (QEMU, kernel, CPU
   * model, accelerator...) and so cannot be restored here; VmNotFoundError if it does not exist.
   * Reads only the manifest (no checksums).
   */
  async checkTemplate(templateId: string): Promise<TemplateManifest> {
    assertSafeId(templateId, 'template id');
    const dir = join(this.ctx.dataDir.templatesDir, templateId);
    if (!existsSync(dir)) throw new VmNotFoundError('template', templateId);
    const manifest = (this.templates.get(templateId)?.manifest ??
      (await readManifest(dir))) as TemplateManifest;
    const m = manifest.machineConfig;
    checkCompatible(
      dir,
      manifest.machine,
      this.fingerprint({ ...m, accel: this.ctx.artifacts.accel.accel, networkMode: this.ctx.network.mode }),
    );
    return manifest;
  }

  /** Loads a template and verifies every file against its manifest (once per process per file). */
  async template(templateId: string): Promise<Template> {
    const manifest = await this.checkTemplate(templateId);
    const dir = join(this.ctx.dataDir.templatesDir, templateId);
    for (const f of [manifest.memory, manifest.devices, manifest.initrd, ...manifest.diskLayers]) {
      await this.ctx.verified.verify(dir, join(dir, f.path), f);
    }
    const t: Template = { id: templateId, dir, manifest };
    this.templates.set(templateId, t);
    return t;
  }

  /**
   * Readies a template for clones ahead of time: verifies it (see template) and makes its sealed
   * RAM copy (see TemplateRam), the two costs a template's first clone in a process would pay.
   */
  async warmTemplate(templateId: string): Promise<Template> {
    const t = await this.template(templateId);
    await this.ctx.templateRam.get(t);
    return t;
  }

  async deleteTemplate(templateId: string): Promise<void> {
    assertSafeId(templateId, 'template id');
    this.templates.delete(templateId);
    this.ctx.templateRam.drop(templateId);
    await rm(join(this.ctx.dataDir.templatesDir, templateId), { recursive: true, force: true });
  }

  /** The machine config of a template, with paths resolved for this host. */
  templateMachine(t: Template): MachineConfig {
    const m = t.manifest.machineConfig;
    return {
      ...m,
      kernelPath: resolve(this.ctx.dataDir.root, m.kernelPath),
      initrdPath: join(t.dir, m.initrdPath),
      tcgCacheMiB: this.ctx.tcgCacheMiB,
    };
  }

  /**
   * Starts a new VM from a template: its own copy-on-write disk layer and copy-on-write RAM (the
   * template's RAM file mapped privately), continuing exactly where the template stopped, then
   * restore hygiene (clock, RNG reseed, hostname, machine-id). On failure nothing is left behind.
   */
  async clone(template: Template, o: CloneOptions): Promise<MicroVm> {
    assertSafeId(o.vmId, 'VM id');
    if (o.egress) this.checkEgress(o.egress); // before anything is created
    const L = new VmLayout(this.ctx.dataDir.vmsDir, o.vmId);
    if (this.vms.has(o.vmId) || existsSync(L.dir))
      throw new InvalidVmStateError(o.vmId, 'clone', 'exists', ['absent']);
    const record: VmRecord = {
      id: o.vmId,
      createdAt: new Date().toISOString(),
      origin: { kind: 'clone', templateId: template.id },
      machine: this.templateMachine(template),
      hostname: (o.hostname ?? o.vmId).slice(0, 63),
      machineId: randomBytes(16).toString('hex'),
      ...(o.egress ? { egress: o.egress } : {}),
    };
    const vm = new MicroVm(record, L, this.ctx.log.child(o.vmId), 'starting');
    this.vms.set(vm.id, vm);
    return this.lockFor(vm.id).run(async () => {
      try {
        await restoreClone(this.ctx, vm, template);
        return vm;
      } catch (e) {
        const err = (await vm.explain(e)) as Error;
        await this.teardown(vm, 'failed', `clone failed: ${err.message}`);
        await rm(L.dir, { recursive: true, force: true });
        this.vms.delete(vm.id);
        throw err;
      }
    });
  }

  /**
   * Suspends a running clone to files: filesystems frozen, device state and the RAM that differs
   * from the template saved, disk layer frozen, manifest committed last; then the QEMU process exits
   * and the network is released (no process, no RAM held). See vm-suspend.ts for the failure contract.
   */
  async suspend(vm: MicroVm): Promise<void> {
    await this.lockFor(vm.id).run(async () => {
      if (vm.state !== 'running') throw new InvalidVmStateError(vm.id, 'suspend', vm.state, ['running']);
      if (vm.record.origin.kind !== 'clone')
        throw new InvalidVmStateError(vm.id, 'suspend', 'cold-booted', ['clone']);
      await suspendVm(this.ctx, vm, this.template.bind(this), (v, s, r) => this.teardown(v, s, r));
    });
  }

  /**
   * Resumes a suspended VM from its newest committed snapshot, verified against its manifest first.
   * On failure the VM stays suspended with its snapshot untouched.
   */
  async resume(vmId: string): Promise<MicroVm> {
    assertSafeId(vmId, 'VM id');
    const vm = this.vms.get(vmId) ?? (await this.loadVm(vmId));
    return this.lockFor(vmId).run(async () => {
      if (vm.state !== 'suspended' && vm.state !== 'failed')
        throw new InvalidVmStateError(vm.id, 'resume', vm.state, ['suspended', 'failed']);
      const template = await this.template((vm.record.origin as { templateId: string }).templateId);
      try {
        await resumeVm(this.ctx, vm, template);
      } catch (e) {
        await this.teardown(
          vm,
          vm.generation > 0 ? 'suspended' : 'failed',
          `resume failed: ${(e as Error).message}`,
        );
        throw e;
      }
      return vm;
    });
  }

  /**
   * Verifies a VM's newest committed snapshot against its manifest and returns its generation
   * (0: the VM has none). SnapshotCorruptError / SnapshotIncompatibleError when it is unusable.
   */
  async verifySnapshot(vmId: string): Promise<number> {
    assertSafeId(vmId, 'VM id');
    const vm = this.vms.get(vmId) ?? (await this.loadVm(vmId));
    if (vm.generation === 0) return 0;
    const template = await this.template((vm.record.origin as { templateId: string }).templateId);
    await verifyGeneration(this.ctx, vm.layout, vm.generation, template);
    return vm.generation;
  }

  /** Builds a handle for a VM that exists on disk but not in this engine's memory (e.g. after a restart). */
  private async loadVm(vmId: string): Promise<MicroVm> {
    const L = new VmLayout(this.ctx.dataDir.vmsDir, vmId);
    let record: VmRecord;
    try {
      record = JSON.parse(await readFile(L.recordFile, 'utf8')) as VmRecord;
    } catch {
      throw new VmNotFoundError('VM', vmId);
    }
    const vm = new MicroVm(record, L, this.ctx.log.child(vmId), 'suspended');
    vm.generation = await newestGeneration(L);
    if (vm.generation === 0) {
      vm.state = 'failed';
      vm.stateReason = 'no committed snapshot';
    }
    this.vms.set(vmId, vm);
    return vm;
  }

  /**
   * Stops a running VM: asks hearth-init to stop the workload (SIGTERM, SIGKILL after `graceMs`)
   * and power off; if the guest does not, QMP quit, then SIGKILL. The VM's files stay until destroy.
   */
  async stop(vm: MicroVm, opts: { graceMs?: number } = {}): Promise<void> {
    await this.lockFor(vm.id).run(async () => {
      if (vm.state !== 'running') return;
      vm.state = 'stopping';
      const graceMs = opts.graceMs ?? 5_000;
      try {
        const c = await vm.control(1_000);
        await c.poweroff(graceMs, 2_000);
        await vm.process?.waitExit(graceMs + 5_000);
      } catch {
        /* fall through to quit / kill */
      }
      await this.quitQemu(vm);
      await this.teardown(vm, 'stopped', 'stopped');
    });
  }

  /** Kills a VM's QEMU at once (SIGKILL) and releases its network. Files stay until destroy. */
  async kill(vm: MicroVm, reason = 'killed'): Promise<void> {
    vm.process?.kill('SIGKILL');
    await this.teardown(vm, 'stopped', reason);
  }

  /**
   * Abandons the current run of a resumed VM: kills QEMU without saving, so the VM is back at its
   * last committed snapshot ('suspended'), or 'failed' if it has none. For a resume whose last step
   * (e.g. the app's resume hook) failed.
   */
  async revert(vm: MicroVm, reason: string): Promise<void> {
    await this.lockFor(vm.id).run(async () => {
      vm.process?.kill('SIGKILL');
      await this.teardown(vm, vm.generation > 0 ? 'suspended' : 'failed', reason);
    });
  }

  /** Kills the VM if it runs and deletes all its files, snapshots included. Idempotent. */
  async destroy(vmId: string): Promise<void> {
    assertSafeId(vmId, 'VM id');
    const vm = this.vms.get(vmId);
    await this.lockFor(vmId).run(async () => {
      if (vm) {
        vm.process?.kill('SIGKILL');
        await this.teardown(vm, 'stopped', 'destroyed');
        vm.forwards.clear();
      }
      await rm(new VmLayout(this.ctx.dataDir.vmsDir, vmId).dir, { recursive: true, force: true });
      this.vms.delete(vmId);
    });
    this.locks.delete(vmId);
  }

  /** QMP quit, then SIGKILL if QEMU has not exited within QEMU_QUIT_TIMEOUT_MS. */
  private async quitQemu(vm: MicroVm): Promise<void> {
    const p = vm.process;
    if (!p || p.hasExited) return;
    await vm.qmp?.execute('quit', undefined, { timeoutMs: 2_000 }).catch(() => undefined);
    await p.waitExit(QEMU_QUIT_TIMEOUT_MS);
  }

  /**
   * Releases everything a VM holds while it runs: QEMU (killed if still alive), connections,
   * network, sockets. Sets the final state. Never throws.
   */
  private async teardown(vm: MicroVm, state: MicroVm['state'], reason: string): Promise<void> {
    if (vm.process && !vm.process.hasExited) {
      vm.process.kill('SIGKILL');
      await vm.process.exited;
    }
    vm.process = undefined;
    vm.disconnect();
    vm.forwards.detach(); // they went with the process
    if (vm.network) {
      this.ctx.network.release(vm.network);
      vm.network = undefined;
    }
    await rm(vm.layout.runDir, { recursive: true, force: true });
    vm.state = state;
    vm.stateReason = reason;
  }

  /**
   * Closes the engine. By default running VMs are killed and their networks removed; with
   * `leaveRunning` they keep running (QEMU is in its own session) for the next engine to adopt.
   * Suspended VMs stay on disk either way.
   */
  async close(opts: { leaveRunning?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const vm of this.vms.values()) {
      if (!vm.process) continue;
      if (opts.leaveRunning && vm.state === 'running') vm.disconnect();
      else await this.teardown(vm, 'stopped', 'engine closed');
    }
    await this.ctx.network.drain();
    this.ctx.templateRam.closeAll();
    await rm(this.lockFile, { force: true });
  }
}

async function newestGeneration(L: VmLayout): Promise<number> {
  const gens = (await readdir(L.snapshotsDir).catch(() => [] as string[]))
    .map((g) => parseGeneration(g))
    .filter((g): g is number => g !== undefined);
  return gens.length ? Math.max(...gens) : 0;
}

async function qcow2Backing(path: string, relativeTo: string): Promise<string> {
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', '-U', path])).stdout) as {
    'backing-filename'?: string;
  };
  const b = info['backing-filename'];
  if (!b) throw new Error(`${path} has no backing file`);
  return resolve(relativeTo, b);
}

async function acquireLock(lockFile: string, dir: string): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(lockFile, `${process.pid}\n`, { flag: 'wx' });
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number((await readFile(lockFile, 'utf8').catch(() => '')).trim());
      if (pid && pid !== process.pid && isAlive(pid)) throw new EngineLockedError(dir, pid);
      await rm(lockFile, { force: true }); // stale: its owner is gone
    }
  }
  throw new Error(`cannot take lock ${lockFile}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
