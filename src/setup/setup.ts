import { mkdir } from 'node:fs/promises';
import type { DataDir } from '../config/data-dir.js';
import { ensureBaseDisk } from '../builder/base-rootfs.js';
import { Buildah } from '../builder/buildah.js';
import { ensureBaseImage, ensureBuilderUser } from '../builder/managed-images.js';
import { ensureAgentBundle } from '../guest/agent-bundle.js';
import {
  assertStaticBusybox,
  ensureInitBinary,
  ensureInitramfs,
  pruneGuestBuilds,
} from '../guest/initramfs.js';
import { ensureKernel } from '../guest/kernel.js';
import { assertRoot, ensurePackages } from '../host/packages.js';
import { writeFileAtomic } from '../util/fs-atomic.js';
import { createLogger } from '../util/log.js';
import { chooseAccelerator, qemuVersion, type AccelSetting } from '../vmm/accel.js';
import type { HostArtifacts } from './host-artifacts.js';

const log = createLogger('setup');

/**
 * Prepares this host for Hearth, idempotently: Debian packages, the guest kernel, the agent bundle,
 * hearth-init, the initramfs, the Debian base root disk, and the accelerator choice. Each step is
 * cached in the data directory and skipped when already done; a second run takes seconds.
 */
export async function setupHost(
  dataDir: DataDir,
  opts: { accelerator?: AccelSetting } = {},
): Promise<HostArtifacts> {
  assertRoot('hearth setup');
  const t0 = Date.now();
  await mkdir(dataDir.root, { recursive: true, mode: 0o711 });
  await ensurePackages();
  await assertStaticBusybox();
  const kernel = await ensureKernel(dataDir.kernelDir);
  const agent = await ensureAgentBundle(dataDir.guestDir);
  const init = await ensureInitBinary(dataDir.guestDir);
  const initramfs = await ensureInitramfs(dataDir.guestDir, kernel, agent, init);
  await pruneGuestBuilds(dataDir.guestDir, [init, initramfs]);
  const baseDisk = await ensureBaseDisk(dataDir.baseDisksDir);
  await ensureBuilderUser(dataDir.builderDir);
  await ensureBaseImage(new Buildah(dataDir.builderDir), baseDisk);
  const accel = await chooseAccelerator({
    setting: opts.accelerator ?? 'auto',
    cacheFile: dataDir.accelCacheFile,
    kernel: kernel.vmlinuz,
    initrd: initramfs,
    log,
  });
  const artifacts: HostArtifacts = {
    kernel,
    agent,
    initramfs,
    baseDisk,
    accel,
    qemuVersion: await qemuVersion(),
    setupAt: new Date().toISOString(),
  };
  await writeFileAtomic(dataDir.hostArtifactsFile, JSON.stringify(artifacts, null, 2));
  log.info('host ready', {
    seconds: ((Date.now() - t0) / 1000).toFixed(1),
    dataDir: dataDir.root,
    accel: accel.accel,
  });
  return artifacts;
}
