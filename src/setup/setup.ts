import { mkdir } from 'node:fs/promises';
import { userInfo } from 'node:os';
import type { DataDir } from '../config/data-dir.js';
import { cachedBaseDisk, ensureBaseDisk, type BaseDisk } from '../builder/base-rootfs.js';
import { Buildah } from '../builder/buildah.js';
import { ensureBaseImage, ensureBuilderUser, ensureTunUsable } from '../builder/managed-images.js';
import { ensureAgentBundle } from '../guest/agent-bundle.js';
import {
  assertStaticBusybox,
  ensureInitBinary,
  ensureInitramfs,
  pruneGuestBuilds,
} from '../guest/initramfs.js';
import { ensureKernel } from '../guest/kernel.js';
import { NotRootError } from '../host/errors.js';
import { ensurePackages, HOST_PACKAGES, missingPackages } from '../host/packages.js';
import { run } from '../util/exec.js';
import { writeFileAtomic } from '../util/fs-atomic.js';
import { createLogger } from '../util/log.js';
import { chooseAccelerator, qemuVersion, type AccelSetting } from '../vmm/accel.js';
import { HostNotSetUpError, type HostArtifacts } from './host-artifacts.js';
import { assertDataDirFor, lookupUser, type HostUser } from './for-user.js';
import { ensureSubIds, hasSubIds } from './subids.js';
import { MissingPackagesError } from '../host/errors.js';

const log = createLogger('setup');

export interface SetupOptions {
  accelerator?: AccelSetting;
  /**
   * As root: prepare the data directory for this (unprivileged) user instead, who then runs
   * `hearth serve` without privilege: every file in it becomes theirs, builds run as them (a
   * subordinate uid range is added for them), and no `hearth-builder` is needed.
   */
  forUser?: string;
  /**
   * Move the guest kernel to the newest Debian cloud kernel (otherwise the one first set up stays:
   * see ensureKernel). Images built with the old kernel must then be rebuilt.
   */
  upgradeGuestKernel?: boolean;
}

/**
 * Prepares this host for Hearth, idempotently: Debian packages, the guest kernel, the agent bundle,
 * hearth-init, the initramfs, the Debian base root disk, and the accelerator choice. Each step is
 * cached in the data directory and skipped when already done; a second run takes seconds.
 *
 * As root, everything is done (with `forUser`, for that user: see SetupOptions). Without root,
 * nothing that needs root is tried (no apt, no useradd, no base disk build): the host must have been
 * prepared with `hearth setup --for-user <this user>`, and what is missing is said instead
 * (MissingPackagesError, HostNotSetUpError); what an unprivileged user can refresh (hearth-init,
 * the initramfs, the accelerator probe) is refreshed.
 */
export async function setupHost(dataDir: DataDir, opts: SetupOptions = {}): Promise<HostArtifacts> {
  if (process.getuid?.() !== 0) {
    if (opts.forUser) throw new NotRootError('hearth setup --for-user');
    return checkPreparedHost(dataDir, opts);
  }
  const t0 = Date.now();
  const user = opts.forUser ? await lookupUser(opts.forUser) : undefined;
  if (user) await assertDataDirFor(dataDir, user);
  await mkdir(dataDir.root, { recursive: true, mode: 0o711 });
  await ensurePackages();
  await assertStaticBusybox();
  const guest = await prepareGuest(dataDir, opts);
  const baseDisk = await ensureBaseDisk(dataDir.baseDisksDir);
  if (user) {
    // Builds run as the user (rootless buildah needs a subordinate range); its storage must be theirs.
    await ensureSubIds(user.name);
    await ensureTunUsable();
    await chownTree(dataDir.root, user);
    await ensureBaseImage(new Buildah(dataDir.builderDir, { user: user.name }), baseDisk);
  } else {
    await ensureBuilderUser(dataDir.builderDir);
    await ensureBaseImage(new Buildah(dataDir.builderDir), baseDisk);
  }
  const artifacts = await finish(dataDir, guest, baseDisk, opts);
  if (user) await chownTree(dataDir.root, user);
  log.info('host ready', {
    seconds: ((Date.now() - t0) / 1000).toFixed(1),
    dataDir: dataDir.root,
    accel: artifacts.accel.accel,
    ...(user ? { forUser: user.name } : {}),
  });
  return artifacts;
}

type Guest = Pick<HostArtifacts, 'kernel' | 'agent' | 'initramfs'>;

/** The guest side: kernel, agent bundle, hearth-init and the initramfs (each cached). */
async function prepareGuest(dataDir: DataDir, opts: SetupOptions): Promise<Guest> {
  const kernel = await ensureKernel(dataDir.kernelDir, { upgrade: opts.upgradeGuestKernel ?? false });
  const agent = await ensureAgentBundle(dataDir.guestDir);
  const init = await ensureInitBinary(dataDir.guestDir);
  const initramfs = await ensureInitramfs(dataDir.guestDir, kernel, agent, init);
  await pruneGuestBuilds(dataDir.guestDir, [init, initramfs]);
  return { kernel, agent, initramfs };
}

/** Chooses the accelerator (cached probe) and records every artifact for the engine. */
async function finish(
  dataDir: DataDir,
  guest: Guest,
  baseDisk: BaseDisk,
  opts: SetupOptions,
): Promise<HostArtifacts> {
  const accel = await chooseAccelerator({
    setting: opts.accelerator ?? 'auto',
    cacheFile: dataDir.accelCacheFile,
    kernel: guest.kernel.vmlinuz,
    initrd: guest.initramfs,
    log,
  });
  const artifacts: HostArtifacts = {
    ...guest,
    baseDisk,
    accel,
    qemuVersion: await qemuVersion(),
    setupAt: new Date().toISOString(),
  };
  await writeFileAtomic(dataDir.hostArtifactsFile, JSON.stringify(artifacts, null, 2));
  return artifacts;
}

async function chownTree(dir: string, user: HostUser): Promise<void> {
  await run('chown', ['-R', '--no-dereference', `${user.uid}:${user.gid}`, dir], { timeoutMs: 600_000 });
}

/** The name of the user this process runs as. */
function currentUserName(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? '?');
  }
}

/**
 * Without root: checks that `hearth setup --for-user <this user>` prepared the host and the data
 * directory, refreshes what needs no privilege, and says what is missing.
 */
async function checkPreparedHost(dataDir: DataDir, opts: SetupOptions): Promise<HostArtifacts> {
  const me = currentUserName();
  const prepare = `as root: hearth setup --for-user ${me} --data-dir ${dataDir.root}`;
  const missing = await missingPackages(Object.keys(HOST_PACKAGES));
  if (missing.length > 0) throw new MissingPackagesError(missing, `installing them needs root; ${prepare}`);
  const baseDisk = await cachedBaseDisk(dataDir.baseDisksDir);
  if (!baseDisk) throw new HostNotSetUpError(dataDir.root, `the base disk is not built (${prepare})`);
  let guest: Guest;
  try {
    await assertStaticBusybox();
    guest = await prepareGuest(dataDir, opts);
  } catch (e) {
    throw new HostNotSetUpError(
      dataDir.root,
      `the guest kernel, agent or initramfs could not be prepared as ${me} (${(e as Error).message.split('\n')[0]}); ${prepare}`,
    );
  }
  const buildah = new Buildah(dataDir.builderDir);
  if (await hasSubIds(me)) await ensureBaseImage(buildah, baseDisk);
  else
    log.warn(
      `image builds need a subordinate uid range for ${me} in /etc/subuid and /etc/subgid: ${prepare}`,
    );
  return finish(dataDir, guest, baseDisk, opts);
}
