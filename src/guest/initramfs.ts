import { existsSync } from 'node:fs';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { buildCpio, type CpioEntry } from '../util/cpio.js';
import { run } from '../util/exec.js';
import { sha256 } from '../util/hash.js';
import { createLogger } from '../util/log.js';
import { packageRoot } from '../util/package-root.js';
import { ensureStaticBinary } from '../util/static-binary.js';
import { writeFileAtomic } from '../util/fs-atomic.js';
import type { AgentBundle } from './agent-bundle.js';
import type { GuestKernel } from './kernel.js';

const log = createLogger('setup.initramfs');

const BUSYBOX = '/bin/busybox';

export function guestSourceDir(): string {
  return join(packageRoot(), 'src', 'guest', 'init');
}

/** Compiles hearth-init (static, so it runs in any image). Cached by source hash. */
export function ensureInitBinary(guestDir: string): Promise<string> {
  return ensureStaticBinary(join(guestSourceDir(), 'hearth-init.c'), guestDir, 'hearth-init');
}

/**
 * Builds the generic initramfs every VM boots with: busybox, the kernel modules, stage1 as /init,
 * and under /hearth the files stage1 copies to /run/hearth in the guest (hearth-init, the agent
 * bundle). Per-VM configuration is appended as a second archive (see workloadArchive). Cached by a
 * hash of all inputs.
 */
export async function ensureInitramfs(
  guestDir: string,
  kernel: GuestKernel,
  agent: AgentBundle,
  initBinary: string,
): Promise<string> {
  const stage1 = await readFile(join(guestSourceDir(), 'stage1.sh'));
  const busybox = await readFile(BUSYBOX);
  const init = await readFile(initBinary);
  const agentFiles = (await readdir(agent.dir)).filter((f) => f !== 'agent.json').sort();
  const key = sha256(
    [
      sha256(stage1),
      sha256(busybox),
      sha256(init),
      kernel.release,
      kernel.loadOrder.join(','),
      agent.version,
      agentFiles.join(','),
    ].join('|'),
  ).slice(0, 16);
  const out = join(guestDir, `initramfs-${key}.cpio.gz`);
  if (existsSync(out)) return out;

  const entries: CpioEntry[] = [];
  for (const d of ['bin', 'dev', 'proc', 'sys', 'newroot', 'lib', 'lib/modules', 'hearth', 'hearth/agent']) {
    entries.push({ path: d, mode: 0o755 });
  }
  entries.push({ path: 'init', data: stage1, mode: 0o755 });
  entries.push({ path: 'bin/busybox', data: busybox, mode: 0o755 });
  for (const m of kernel.loadOrder) {
    entries.push({
      path: `lib/modules/${m}.ko`,
      data: await readFile(join(kernel.modulesDir, `${m}.ko`)),
      mode: 0o644,
    });
  }
  entries.push({
    path: 'lib/modules/load-order',
    data: Buffer.from(kernel.loadOrder.join('\n') + '\n'),
    mode: 0o644,
  });
  entries.push({ path: 'hearth/init', data: init, mode: 0o755 });
  for (const f of agentFiles) {
    const p = join(agent.dir, f);
    entries.push({ path: `hearth/agent/${f}`, data: await readFile(p), mode: (await stat(p)).mode & 0o777 });
  }
  const gz = gzipSync(buildCpio(entries), { level: 6 });
  await writeFileAtomic(out, gz);
  log.info('initramfs built', { path: out, bytes: gz.length });
  return out;
}

/** Removes initramfs and init builds other than the ones in `keep`. */
export async function pruneGuestBuilds(guestDir: string, keep: readonly string[]): Promise<void> {
  for (const f of await readdir(guestDir).catch(() => [] as string[])) {
    const p = join(guestDir, f);
    if ((f.startsWith('initramfs-') || f.startsWith('hearth-init-')) && !keep.includes(p))
      await rm(p, { force: true });
  }
}

/** Checks that busybox-static is what /bin/busybox is (a dynamic busybox would not run in the initramfs). */
export async function assertStaticBusybox(): Promise<void> {
  const res = await run('ldd', [BUSYBOX], { allowFailure: true });
  if (res.exitCode === 0 && !/not a dynamic executable/.test(res.stdout + res.stderr)) {
    throw new Error(`${BUSYBOX} is dynamically linked; install busybox-static`);
  }
}
