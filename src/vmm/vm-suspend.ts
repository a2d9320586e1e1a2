import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir, fsyncFile } from '../util/fs-atomic.js';
import { faultPoint } from '../util/faults.js';
import type { EngineContext } from './context.js';
import { saveDeviceState } from './launch.js';
import { freezeLayer } from './disk.js';
import { SuspendFailedError } from './errors.js';
import type { Template } from './engine.js';
import { saveMemoryDiff } from './memory-diff.js';
import type { MicroVm, VmState } from './microvm.js';
import {
  MANIFEST_FORMAT,
  readManifest,
  recordFile,
  writeManifest,
  type FileRecord,
  type SnapshotManifest,
} from './snapshot-manifest.js';
import { generationName, layerName, parseGeneration } from './vm-layout.js';

const FREEZE_TIMEOUT_MS = 10_000;

type Teardown = (vm: MicroVm, state: VmState, reason: string) => Promise<void>;

/**
 * Suspends a running clone. Steps, and what a failure at each leaves:
 *   1. freeze guest filesystems (hearth-init)  -> thawed, VM keeps running
 *   2. stop vCPUs, save device state, save RAM diff into gen-N.tmp/
 *                                              -> VM continued and thawed; or, if QEMU died, the VM is
 *                                                 'suspended' at generation N-1 (or 'failed' if none)
 *   3. QEMU quits (disk already flushed by stop)
 *   4. freeze the disk layer, checksum everything, manifest, rename gen-N.tmp -> gen-N (the commit)
 *   5. release network and sockets, delete older generations
 * Every write the guest completed is in the saved disk: `stop` drains and flushes QEMU's block layer,
 * and the freeze in step 1 also leaves the guest filesystems clean on that disk.
 */
export async function suspendVm(
  ctx: EngineContext,
  vm: MicroVm,
  loadTemplate: (id: string) => Promise<Template>,
  teardown: Teardown,
): Promise<void> {
  const t0 = Date.now();
  const L = vm.layout;
  const templateId = (vm.record.origin as { templateId: string }).templateId;
  const template = await loadTemplate(templateId);
  const gen = vm.generation + 1;
  const tmp = `${L.generationDir(gen)}.tmp`;
  const afterCrash: VmState = vm.generation > 0 ? 'suspended' : 'failed';
  vm.state = 'suspending';

  // 1. Freeze.
  try {
    const control = await vm.control(FREEZE_TIMEOUT_MS);
    await control.freeze(FREEZE_TIMEOUT_MS);
  } catch (e) {
    if (await qemuAlive(vm)) {
      await thawQuietly(vm);
      vm.state = 'running';
      throw new SuspendFailedError(vm.id, 'freeze', true, { cause: e });
    }
    await teardown(vm, afterCrash, 'QEMU exited during suspend (freeze)');
    throw new SuspendFailedError(vm.id, 'freeze', false, { cause: e });
  }
  const tFrozen = Date.now();

  // 2. Stop and save.
  let memStats;
  try {
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    const qmp = vm.qmp!;
    await qmp.execute('stop');
    await saveDeviceState(vm, join(tmp, 'devices.state'));
    await faultPoint('suspend.after-device-state');
    memStats = await saveMemoryDiff(
      vm.process!.pid,
      await ctx.templateRam.mappingNames(template),
      vm.record.machine.memoryMiB * 1024 * 1024,
      join(tmp, 'memory.diff'),
    );
    await faultPoint('suspend.after-memory');
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    if (await qemuAlive(vm)) {
      await vm.qmp?.execute('cont').catch(() => undefined);
      await thawQuietly(vm);
      vm.state = 'running';
      throw new SuspendFailedError(vm.id, 'save', true, { cause: e });
    }
    await teardown(vm, afterCrash, `QEMU exited during suspend: ${(e as Error).message}`);
    throw new SuspendFailedError(vm.id, 'save', false, { cause: e });
  }
  const tSaved = Date.now();

  // 3. QEMU quits; the VM's RAM and process are released.
  await vm.qmp?.execute('quit', undefined, { timeoutMs: 2_000 }).catch(() => undefined);
  await vm.process?.waitExit(10_000);
  await faultPoint('suspend.after-quit');
  const tQuit = Date.now();

  // 4. Commit.
  try {
    const layerFile = L.layer(vm.activeLayer);
    await fsyncFile(layerFile);
    await freezeLayer(layerFile);
    const previous = vm.generation > 0 ? (await readManifest(L.generationDir(vm.generation))).diskLayers : [];
    const genRel = `snapshots/${generationName(gen)}`;
    const rec = (name: string): Promise<FileRecord> => recordFile(join(tmp, name), `${genRel}/${name}`);
    for (const f of ['devices.state', 'memory.diff']) {
      await fsyncFile(join(tmp, f));
      await freezeLayer(join(tmp, f));
    }
    const manifest: SnapshotManifest = {
      format: MANIFEST_FORMAT,
      kind: 'suspend',
      vmId: vm.id,
      generation: gen,
      createdAt: new Date().toISOString(),
      machine: template.manifest.machine,
      memory: { ...(await rec('memory.diff')), mode: 'diff' },
      template: { id: template.id, memorySha256: template.manifest.memory.sha256 },
      devices: await rec('devices.state'),
      diskLayers: [...previous, await recordFile(layerFile, `disks/${layerName(vm.activeLayer)}`)],
      initrd: template.manifest.initrd,
      fsFrozen: true,
    };
    await writeManifest(tmp, manifest);
    await faultPoint('suspend.before-commit');
    await rename(tmp, L.generationDir(gen));
    await fsyncDir(L.snapshotsDir);
    for (const f of [
      manifest.memory,
      manifest.devices,
      manifest.diskLayers[manifest.diskLayers.length - 1]!,
    ]) {
      await ctx.verified.trust(join(L.dir, f.path), f);
    }
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    await teardown(vm, afterCrash, `suspend could not be committed: ${(e as Error).message}`);
    throw new SuspendFailedError(vm.id, 'commit', false, { cause: e });
  }
  vm.generation = gen;

  // 5. Release and tidy.
  await teardown(vm, 'suspended', 'suspended');
  for (const g of await readdir(L.snapshotsDir)) {
    const n = parseGeneration(g);
    if (n !== undefined && n < gen) await rm(join(L.snapshotsDir, g), { recursive: true, force: true });
  }
  vm.log.info('suspended', {
    generation: gen,
    ms: Date.now() - t0,
    freezeMs: tFrozen - t0,
    saveMs: tSaved - tFrozen,
    quitMs: tQuit - tSaved,
    commitMs: Date.now() - tQuit,
    ramPages: memStats.pagesSaved,
    zeroPages: memStats.zeroPages,
  });
}

/**
 * Whether the VM's QEMU still answers. A failed step may be the first sign that QEMU died, before
 * its exit has been observed, so ask it (and then wait briefly for the exit) instead of trusting
 * what is known so far.
 */
async function qemuAlive(vm: MicroVm): Promise<boolean> {
  const p = vm.process;
  if (!p || p.hasExited || !vm.qmp) return false;
  try {
    await vm.qmp.execute('query-status', undefined, { timeoutMs: 2_000 });
    return true;
  } catch {
    await p.waitExit(2_000);
    return false;
  }
}

async function thawQuietly(vm: MicroVm): Promise<void> {
  if (!vm.process || vm.process.hasExited) return;
  try {
    await (await vm.control(2_000)).thaw(5_000);
  } catch {
    /* the agent is unreachable; nothing more can be done here */
  }
}
