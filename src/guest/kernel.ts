import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../util/exec.js';
import { writeFileAtomic } from '../util/fs-atomic.js';
import { createLogger } from '../util/log.js';
import { aptUpdate } from '../host/packages.js';
import { downloadAndExtract } from './debian-download.js';

const log = createLogger('setup.kernel');

/** The Debian meta-package whose dependency names the current cloud kernel. */
export const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';

/**
 * Modules the guest needs that Debian's cloud kernel builds as modules: the virtio-mmio transport of
 * `-M microvm`, the root disk, the network, virtio-serial (agent and control ports) and virtio-rng.
 */
export const GUEST_MODULES = [
  'virtio_mmio',
  'virtio_blk',
  'virtio_net',
  'virtio_console',
  'virtio-rng',
] as const;

export interface GuestKernel {
  /** Kernel release, e.g. 6.1.0-56-cloud-amd64. */
  release: string;
  /** The compressed kernel (bzImage) QEMU boots with -kernel. */
  vmlinuz: string;
  /** Directory of the needed .ko files. */
  modulesDir: string;
  /** Module names in the order they must be loaded (dependencies first). */
  loadOrder: string[];
}

async function resolveKernelPackage(): Promise<string> {
  const query = async () =>
    (await run('apt-cache', ['depends', KERNEL_META_PACKAGE], { allowFailure: true })).stdout;
  let out = await query();
  if (!/Depends: linux-image-/.test(out)) {
    await aptUpdate();
    out = await query();
  }
  const m = /Depends:\s*(linux-image-\S+-cloud-amd64)/.exec(out);
  if (!m) throw new Error(`cannot resolve ${KERNEL_META_PACKAGE} to a kernel package`);
  return m[1]!;
}

async function findModule(root: string, name: string): Promise<string> {
  const target = `${name}.ko`;
  const walk = async (dir: string): Promise<string | undefined> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        const f = await walk(p);
        if (f) return f;
      } else if (e.name === target || e.name === `${target}.xz`) return p;
    }
    return undefined;
  };
  const f = await walk(root);
  if (!f) throw new Error(`kernel module ${name} not found`);
  return f;
}

/** Orders `wanted` modules and their dependencies so each comes after what it depends on. */
async function resolveModules(modRoot: string, wanted: readonly string[]): Promise<Map<string, string>> {
  const ordered = new Map<string, string>();
  const visiting = new Set<string>();
  const visit = async (name: string): Promise<void> => {
    if (ordered.has(name) || visiting.has(name)) return;
    visiting.add(name);
    const file = await findModule(modRoot, name);
    const deps = (await run('modinfo', ['-F', 'depends', file])).stdout.trim();
    for (const d of deps.split(',').filter(Boolean)) await visit(d);
    ordered.set(name, file);
  };
  for (const w of wanted) await visit(w);
  return ordered;
}

/** File in the kernel directory naming the release in use: the guest kernel is pinned to it. */
const CURRENT_FILE = 'current';

/** The cached kernel of `release` in `kernelDir`, or undefined if it is not (completely) cached. */
async function cachedKernel(kernelDir: string, release: string): Promise<GuestKernel | undefined> {
  const dir = join(kernelDir, release);
  const manifest = join(dir, 'kernel.json');
  if (!existsSync(manifest)) return undefined;
  // Paths are those of the directory it is in now (a data directory may be moved or copied).
  const k = JSON.parse(await readFile(manifest, 'utf8')) as GuestKernel;
  return { ...k, vmlinuz: join(dir, 'vmlinuz'), modulesDir: join(dir, 'modules') };
}

/** The kernel release Debian's `linux-image-cloud-amd64` names now (what an upgrade moves to). */
export async function debianKernelRelease(): Promise<string> {
  return (await resolveKernelPackage()).replace(/^linux-image-/, '');
}

/**
 * The release the guest kernel is pinned to: the one `current` names, or (data directories set up
 * before the pin existed) the most recently unpacked one. Undefined when nothing is cached.
 */
async function pinnedRelease(kernelDir: string): Promise<string | undefined> {
  const named = await readFile(join(kernelDir, CURRENT_FILE), 'utf8').catch(() => undefined);
  if (named?.trim()) return named.trim();
  let newest: { release: string; mtimeMs: number } | undefined;
  for (const e of await readdir(kernelDir, { withFileTypes: true })) {
    if (!e.isDirectory() || e.name.endsWith('.staging')) continue;
    const s = await stat(join(kernelDir, e.name, 'kernel.json')).catch(() => undefined);
    if (s && (!newest || s.mtimeMs > newest.mtimeMs)) newest = { release: e.name, mtimeMs: s.mtimeMs };
  }
  return newest?.release;
}

/** Records `release` as the pinned one (written only when it changes). */
async function pin(kernelDir: string, release: string): Promise<void> {
  const file = join(kernelDir, CURRENT_FILE);
  if ((await readFile(file, 'utf8').catch(() => '')) !== `${release}\n`)
    await writeFileAtomic(file, `${release}\n`);
}

export interface EnsureKernelOptions {
  /**
   * Move to the kernel Debian's `linux-image-cloud-amd64` names now, even if another one is pinned.
   * Snapshots made with the old kernel cannot be restored with the new one (their image versions
   * become INACTIVE at the next server start, to be rebuilt).
   */
  upgrade?: boolean;
}

/**
 * Makes sure a Debian cloud kernel and the modules the guest needs are unpacked in `kernelDir`.
 * The first call takes the kernel Debian's meta-package names and pins it (`current`); later calls
 * keep it, without asking apt, so that a host's package update never silently makes every image's
 * snapshot unrestorable. `upgrade` moves to the newest. Idempotent; downloads only a release that
 * is not cached yet.
 */
export async function ensureKernel(kernelDir: string, o: EnsureKernelOptions = {}): Promise<GuestKernel> {
  await mkdir(kernelDir, { recursive: true });
  if (!o.upgrade) {
    const pinned = await pinnedRelease(kernelDir);
    const k = pinned ? await cachedKernel(kernelDir, pinned) : undefined;
    if (k) {
      await pin(kernelDir, k.release);
      return k;
    }
  }
  const release = await debianKernelRelease();
  const pkg = `linux-image-${release}`;
  const dir = join(kernelDir, release);
  const cached = await cachedKernel(kernelDir, release);
  if (cached) {
    await pin(kernelDir, release);
    return cached;
  }

  log.info('fetching guest kernel', { package: pkg });
  const work = await downloadAndExtract(pkg, kernelDir);
  try {
    const root = join(work, 'root');
    const staging = `${dir}.staging`;
    await rm(staging, { recursive: true, force: true });
    await mkdir(join(staging, 'modules'), { recursive: true });
    await copyFile(join(root, 'boot', `vmlinuz-${release}`), join(staging, 'vmlinuz'));
    const mods = await resolveModules(join(root, 'lib', 'modules', release), GUEST_MODULES);
    for (const [name, file] of mods) {
      if (file.endsWith('.xz')) throw new Error(`compressed module ${file} is not supported`);
      await copyFile(file, join(staging, 'modules', `${name}.ko`));
    }
    const kernel: GuestKernel = {
      release,
      vmlinuz: join(dir, 'vmlinuz'),
      modulesDir: join(dir, 'modules'),
      loadOrder: [...mods.keys()],
    };
    await writeFileAtomic(join(staging, 'kernel.json'), JSON.stringify(kernel, null, 2));
    await rm(dir, { recursive: true, force: true });
    await rename(staging, dir);
    await pin(kernelDir, release);
    log.info('guest kernel ready', { release, modules: kernel.loadOrder.join(',') });
    return kernel;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
