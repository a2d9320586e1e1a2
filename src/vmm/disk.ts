import { chmod, chown } from 'node:fs/promises';
import { dirname, relative } from 'node:path';
import { run } from '../util/exec.js';

/**
 * Creates a qcow2 copy-on-write overlay over `backing` (raw or qcow2). The backing path is stored
 * relative to the overlay's directory, so the data directory can be moved as a whole.
 */
export async function createOverlay(
  path: string,
  backing: string,
  backingFormat: 'raw' | 'qcow2',
): Promise<void> {
  const rel = relative(dirname(path), backing);
  await run(
    'qemu-img',
    ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', '-b', rel, '-F', backingFormat, path],
    {
      timeoutMs: 30_000,
    },
  );
}

/**
 * Makes a file of a snapshot (disk layer, RAM, device state) read-only on the host, and root's when
 * Hearth runs as root (a jailed QEMU owned it while it ran): once frozen, it never changes again.
 */
export async function freezeLayer(path: string): Promise<void> {
  if (process.getuid?.() === 0) await chown(path, 0, 0);
  await chmod(path, 0o444);
}

/** Checks a qcow2 image's metadata (qemu-img check); throws with QEMU's report when it is damaged. */
export async function checkQcow2(path: string): Promise<void> {
  await run('qemu-img', ['check', '-q', '-f', 'qcow2', path], { timeoutMs: 120_000 });
}
