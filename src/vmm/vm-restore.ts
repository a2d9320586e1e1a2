import { mkdir, readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { writeFileAtomic } from '../util/fs-atomic.js';
import { faultPoint } from '../util/faults.js';
import type { EngineContext } from './context.js';
import { createOverlay } from './disk.js';
import { SnapshotCorruptError, SnapshotIncompatibleError } from './errors.js';
import { launchQemu, loadDeviceState } from './launch.js';
import { loadMemoryDiff, MemoryDiffFormatError } from './memory-diff.js';
import type { MicroVm } from './microvm.js';
import { applyRestoreHygiene } from './restore-hygiene.js';
import { checkCompatible, readManifest, type SnapshotManifest } from './snapshot-manifest.js';
import type { Template } from './engine.js';
import { parseLayer, type VmLayout } from './vm-layout.js';
import { StepTimer } from '../util/step-timer.js';

/**
 * Creates the VM's new disk layer and takes a network at the same time (they are independent and
 * each costs a few process spawns). Whatever succeeded is recorded on `vm` for teardown.
 */
async function prepare(ctx: EngineContext, vm: MicroVm, createLayer: () => Promise<void>): Promise<void> {
  const results = await Promise.allSettled([
    createLayer(),
    ctx.network.acquire(vm.record.egress).then((n) => {
      vm.network = n;
    }),
  ]);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

/** The template's disk and the base disk under it: the read-only bottom of every clone's disk chain. */
export function templateDiskChain(ctx: EngineContext, template: Template): string[] {
  return [
    join(template.dir, template.manifest.diskLayers[0]!.path),
    resolve(ctx.dataDir.root, template.manifest.baseDisk.path),
  ];
}

/**
 * Starts QEMU for a restore, on the template's sealed RAM, and connects the guest channels while
 * the device state loads.
 */
async function startRestore(
  ctx: EngineContext,
  vm: MicroVm,
  template: Template,
  rootDisk: string,
): Promise<void> {
  await launchQemu(ctx, vm, {
    memory: { sealed: await ctx.templateRam.get(template) },
    rootDisk,
    backingFiles: templateDiskChain(ctx, template),
    diskBytes: template.manifest.baseDisk.sizeBytes,
    incoming: true,
    network: vm.network!,
  });
  // Connecting now means the guest sees its control port open the moment it runs.
  void vm.control().catch(() => undefined);
}

async function finishRestore(
  vm: MicroVm,
  devicesFile: string,
  thaw: boolean,
  steps: StepTimer,
): Promise<void> {
  await loadDeviceState(vm, devicesFile);
  steps.mark('devices');
  await faultPoint('restore.before-cont');
  await vm.qmp!.execute('cont');
  steps.mark('cont');
  await applyRestoreHygiene(vm, { thaw });
  steps.mark('hygiene');
  vm.state = 'running';
}

/**
 * Clone: first disk layer over the template's, template RAM mapped privately, template device state.
 * Preconditions: `vm` is new (state starting). On failure the caller tears the VM down.
 */
export async function restoreClone(ctx: EngineContext, vm: MicroVm, template: Template): Promise<void> {
  const steps = new StepTimer();
  const L = vm.layout;
  await mkdir(L.disksDir, { recursive: true });
  await mkdir(L.snapshotsDir, { recursive: true });
  await writeFileAtomic(L.recordFile, JSON.stringify(vm.record, null, 2));
  await prepare(ctx, vm, () =>
    createOverlay(L.layer(1), join(template.dir, template.manifest.diskLayers[0]!.path), 'qcow2'),
  );
  vm.activeLayer = 1;
  steps.mark('prepare');
  await startRestore(ctx, vm, template, L.layer(1));
  steps.mark('qemu');
  await finishRestore(
    vm,
    join(template.dir, template.manifest.devices.path),
    template.manifest.fsFrozen,
    steps,
  );
  vm.log.info('cloned', { template: template.id, ms: steps.totalMs, steps: steps.toString() });
}

/**
 * Reads and verifies a VM's committed snapshot `generation` (sizes always; checksums of files not yet
 * verified in this process): SnapshotCorruptError or SnapshotIncompatibleError if it is unusable.
 */
export async function verifyGeneration(
  ctx: EngineContext,
  L: VmLayout,
  generation: number,
  template: Template,
): Promise<SnapshotManifest> {
  const dir = L.generationDir(generation);
  const m = await readManifest(dir);
  checkCompatible(dir, m.machine, template.manifest.machine);
  if (m.template?.id !== template.id || m.template.memorySha256 !== template.manifest.memory.sha256) {
    throw new SnapshotIncompatibleError(
      dir,
      `made from template ${m.template?.id ?? '?'} with different memory`,
    );
  }
  for (const f of [m.memory, m.devices, ...m.diskLayers])
    await ctx.verified.verify(dir, join(L.dir, f.path), f);
  return m;
}

/**
 * Resume: verify the newest committed snapshot, put a new writable layer on its frozen disk chain,
 * map the template RAM privately, write back the saved RAM diff, load the device state, run, then
 * restore hygiene and thaw. Layers not in the manifest (left by a run that never committed) are
 * deleted first. On failure the new layer is removed; the snapshot is untouched.
 */
export async function resumeVm(ctx: EngineContext, vm: MicroVm, template: Template): Promise<void> {
  const steps = new StepTimer();
  const L = vm.layout;
  if (vm.generation === 0) throw new SnapshotCorruptError(L.snapshotsDir, 'the VM has no committed snapshot');
  const dir = L.generationDir(vm.generation);
  const m = await verifyGeneration(ctx, L, vm.generation, template);
  const keep = new Set(m.diskLayers.map((f) => f.path.split('/').pop()));
  let top = 0;
  for (const f of await readdir(L.disksDir)) {
    const n = parseLayer(f);
    if (n === undefined) continue;
    if (!keep.has(f)) await rm(join(L.disksDir, f), { force: true });
    else top = Math.max(top, n);
  }
  steps.mark('verify');
  const next = top + 1;
  const below = join(L.dir, m.diskLayers[m.diskLayers.length - 1]!.path);
  vm.activeLayer = next;
  try {
    await prepare(ctx, vm, () => createOverlay(L.layer(next), below, 'qcow2'));
    steps.mark('prepare');
    await startRestore(ctx, vm, template, L.layer(next));
    steps.mark('qemu');
    try {
      await loadMemoryDiff(
        vm.process!.pid,
        await ctx.templateRam.mappingNames(template),
        vm.record.machine.memoryMiB * 1024 * 1024,
        join(L.dir, m.memory.path),
      );
    } catch (e) {
      if (e instanceof MemoryDiffFormatError)
        throw new SnapshotCorruptError(dir, `memory diff: ${e.message}`);
      throw e;
    }
    steps.mark('memory');
    await finishRestore(vm, join(L.dir, m.devices.path), m.fsFrozen, steps);
  } catch (e) {
    const err = await vm.explain(e);
    vm.process?.kill('SIGKILL');
    await vm.process?.exited;
    await rm(L.layer(next), { force: true });
    throw err;
  }
  vm.log.info('resumed', { generation: vm.generation, ms: steps.totalMs, steps: steps.toString() });
}
