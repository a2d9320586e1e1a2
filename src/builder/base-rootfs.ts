import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../util/exec.js';
import { writeFileAtomic } from '../util/fs-atomic.js';
import { sha256 } from '../util/hash.js';
import { createLogger } from '../util/log.js';

const log = createLogger('setup.base');

/** Hearth's managed Debian base: minimal bookworm, plus python3 for apps and tests. */
export const BASE_SUITE = 'bookworm';
export const BASE_PACKAGES = ['python3', 'ca-certificates'] as const;
/** Size of the base root disk (sparse: only written blocks take space). */
export const BASE_DISK_SIZE_MIB = 2048;

export interface BaseDisk {
  name: string;
  /** Raw ext4 image: the read-only bottom layer of every disk chain built on it. */
  path: string;
  /** The root filesystem as a tarball (what image builds import). */
  rootfsTar: string;
  sizeMiB: number;
  packages: string[];
  createdAt: string;
}

/** The name of the base disk this version of Hearth builds (a hash of what goes into it). */
function baseDiskName(): string {
  const key = sha256(
    JSON.stringify({ v: 2, suite: BASE_SUITE, packages: BASE_PACKAGES, size: BASE_DISK_SIZE_MIB }),
  ).slice(0, 12);
  return `${BASE_SUITE}-${key}`;
}

/**
 * The base disk in `baseDisksDir` if it was built already (paths as of where it is now: a data
 * directory may be moved or copied), else undefined. Builds nothing.
 */
export async function cachedBaseDisk(baseDisksDir: string): Promise<BaseDisk | undefined> {
  const dir = join(baseDisksDir, baseDiskName());
  const manifest = join(dir, 'base.json');
  if (!existsSync(manifest)) return undefined;
  const base = JSON.parse(await readFile(manifest, 'utf8')) as BaseDisk;
  return { ...base, path: join(dir, 'disk.raw'), rootfsTar: join(dir, 'rootfs.tar') };
}

/**
 * Builds (once, then cached) the minimal Debian root filesystem with mmdebstrap from Debian's own
 * packages, and turns it into an ext4 disk image with mkfs.ext4 -d.
 */
export async function ensureBaseDisk(baseDisksDir: string): Promise<BaseDisk> {
  const cached = await cachedBaseDisk(baseDisksDir);
  if (cached) return cached;
  const name = baseDiskName();
  const dir = join(baseDisksDir, name);

  await mkdir(baseDisksDir, { recursive: true });
  const staging = `${dir}.staging`;
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  const rootfs = await mkdtemp(join(baseDisksDir, '.rootfs-'));
  try {
    log.info('building the Debian base root filesystem with mmdebstrap', { suite: BASE_SUITE });
    const t0 = Date.now();
    await run(
      'mmdebstrap',
      [
        '--variant=minbase',
        `--include=${BASE_PACKAGES.join(',')}`,
        '--quiet',
        // The host's resolver and name must not end up in the image (the guest init provides both).
        '--customize-hook=rm -f "$1/etc/resolv.conf"; : > "$1/etc/resolv.conf"',
        '--customize-hook=printf "127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n" > "$1/etc/hosts"',
        '--customize-hook=echo localhost > "$1/etc/hostname"',
        BASE_SUITE,
        join(staging, 'rootfs.tar'),
      ],
      { timeoutMs: 1_800_000 },
    );
    await run('tar', ['-C', rootfs, '--numeric-owner', '-xpf', join(staging, 'rootfs.tar')]);
    const disk = join(staging, 'disk.raw');
    await run('mkfs.ext4', [
      '-q',
      '-F',
      '-L',
      'hearth-root',
      '-E',
      'root_owner=0:0',
      '-d',
      rootfs,
      disk,
      `${BASE_DISK_SIZE_MIB}M`,
    ]);
    const base: BaseDisk = {
      name,
      path: join(dir, 'disk.raw'),
      rootfsTar: join(dir, 'rootfs.tar'),
      sizeMiB: BASE_DISK_SIZE_MIB,
      packages: [...BASE_PACKAGES],
      createdAt: new Date().toISOString(),
    };
    await writeFileAtomic(join(staging, 'base.json'), JSON.stringify(base, null, 2));
    await rm(dir, { recursive: true, force: true });
    await rename(staging, dir);
    log.info('base root disk ready', { name, seconds: ((Date.now() - t0) / 1000).toFixed(1) });
    return base;
  } finally {
    await rm(rootfs, { recursive: true, force: true });
    await rm(staging, { recursive: true, force: true });
  }
}
