import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
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

/**
 * Makes sure the Debian cloud kernel and the modules the guest needs are unpacked in `kernelDir`.
 * Idempotent and cached per kernel release; downloads only when the release is not cached yet.
 */
export async function ensureKernel(kernelDir: string): Promise<GuestKernel> {
  await mkdir(kernelDir, { recursive: true });
  const pkg = await resolveKernelPackage();
  const release = pkg.replace(/^linux-image-/, '');
  const dir = join(kernelDir, release);
  const manifest = join(dir, 'kernel.json');
  if (existsSync(manifest)) {
    // Paths are those of the directory it is in now (a data directory may be moved or copied).
    const k = JSON.parse(await readFile(manifest, 'utf8')) as GuestKernel;
    return { ...k, vmlinuz: join(dir, 'vmlinuz'), modulesDir: join(dir, 'modules') };
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
    log.info('guest kernel ready', { release, modules: kernel.loadOrder.join(',') });
    return kernel;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
