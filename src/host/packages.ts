import { existsSync } from 'node:fs';
import { run } from '../util/exec.js';
import { createLogger } from '../util/log.js';
import { MissingPackagesError, NotRootError, UnsupportedHostError } from './errors.js';

const log = createLogger('setup.packages');

/**
 * Debian packages the host needs, with what each is for. Guest-side packages (the kernel,
 * qemu-guest-agent) are downloaded and unpacked into the cache, never installed on the host.
 */
export const HOST_PACKAGES: Readonly<Record<string, string>> = {
  'qemu-system-x86': 'the VMM (qemu-system-x86_64, -M microvm)',
  'qemu-utils': 'qemu-img for copy-on-write disk overlays',
  'busybox-static': 'the initramfs userland',
  e2fsprogs: 'mkfs.ext4 -d to turn a root filesystem into a disk',
  mmdebstrap: 'building the Debian base root filesystem',
  kmod: 'modinfo, to resolve guest kernel module dependencies',
  gcc: 'compiling the static guest init',
  'libc6-dev': 'static libc for the guest init',
  iproute2: 'network namespaces, veth and tap devices',
  nftables: 'per-VM packet filtering and port forwarding',
  conntrack: 'flushing connection tracking when a VM network is recycled',
  'util-linux': 'nsenter, to start QEMU inside a VM network namespace',
  'ca-certificates': 'TLS to Debian mirrors',
  buildah: 'building images from Dockerfiles',
  runc: 'the OCI runtime buildah runs RUN steps in (crun refuses hybrid cgroups)',
  uidmap: 'user namespaces for rootless builds (newuidmap/newgidmap)',
  slirp4netns: 'the network of RUN steps in rootless builds',
};

/** Returns the packages from `names` that dpkg does not report as installed. */
export async function missingPackages(names: readonly string[]): Promise<string[]> {
  const res = await run('dpkg-query', ['-W', '-f=${Package} ${db:Status-Status}\n', ...names], {
    allowFailure: true,
  });
  const installed = new Set(
    res.stdout
      .split('\n')
      .filter((l) => l.endsWith(' installed'))
      .map((l) => l.split(' ')[0]),
  );
  return names.filter((n) => !installed.has(n));
}

/** Throws NotRootError unless running as uid 0. */
export function assertRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new NotRootError(what);
}

let aptUpdated = false;

/** `apt-get update`, at most once per process. */
export async function aptUpdate(): Promise<void> {
  if (aptUpdated) return;
  log.info('updating Debian package lists');
  await run('apt-get', ['update', '-q'], { timeoutMs: 600_000 });
  aptUpdated = true;
}

/**
 * Installs whichever of `names` are missing. Idempotent: does nothing (and touches no network) when
 * all are present. Throws MissingPackagesError when not root or apt fails.
 */
export async function ensurePackages(names: readonly string[] = Object.keys(HOST_PACKAGES)): Promise<void> {
  if (!existsSync('/usr/bin/dpkg-query') || !existsSync('/usr/bin/apt-get')) {
    throw new UnsupportedHostError('dpkg and apt-get were not found');
  }
  const missing = await missingPackages(names);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) throw new MissingPackagesError(missing, 'installing them needs root');
  log.info('installing Debian packages', { packages: missing.join(',') });
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () =>
    run('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...missing], {
      env,
      timeoutMs: 1_200_000,
    });
  try {
    await install();
  } catch {
    await aptUpdate();
    try {
      await install();
    } catch (e) {
      throw new MissingPackagesError(missing, `apt-get install failed: ${(e as Error).message.slice(-500)}`);
    }
  }
  const still = await missingPackages(missing);
  if (still.length > 0)
    throw new MissingPackagesError(still, 'apt-get reported success but they are not installed');
}
