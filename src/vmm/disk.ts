import { chmod, chown, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { run } from '../util/exec.js';

interface OverlayPrototype {
  bytes: Buffer;
  nameOffset: number;
}

/**
 * Empty qcow2 overlays of one backing format and virtual size differ only in the bytes of their
 * backing file name: one made by `qemu-img create` per (format, size, name length) is reused for
 * every other name of that length, so a launch or resume writes its layer without a process.
 */
const prototypes = new Map<string, Promise<OverlayPrototype>>();

function overlayPrototype(
  backingFormat: 'raw' | 'qcow2',
  sizeBytes: number,
  nameBytes: number,
): Promise<OverlayPrototype> {
  const key = `${backingFormat}:${sizeBytes}:${nameBytes}`;
  let p = prototypes.get(key);
  if (!p) {
    p = (async () => {
      const dir = await mkdtemp(join(tmpdir(), 'hearth-qcow2-'));
      try {
        const file = join(dir, 'overlay.qcow2');
        // -u: the placeholder backing name is never opened; the size is given instead.
        await run(
          'qemu-img',
          [
            ...['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536'],
            ...['-b', 'x'.repeat(nameBytes), '-F', backingFormat, '-u', file, String(sizeBytes)],
          ],
          { timeoutMs: 30_000 },
        );
        const bytes = await readFile(file);
        const nameOffset = Number(bytes.readBigUInt64BE(8));
        if (bytes.readUInt32BE(16) !== nameBytes || nameOffset + nameBytes > bytes.length)
          throw new Error(`qemu-img wrote an unexpected qcow2 header (backing name of ${nameBytes} bytes)`);
        return { bytes, nameOffset };
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    })();
    prototypes.set(key, p);
    p.catch(() => prototypes.delete(key));
  }
  return p;
}

/** The virtual size of a disk image: a raw file's size, or a qcow2 header's size field. */
export async function virtualSize(path: string, format: 'raw' | 'qcow2'): Promise<number> {
  if (format === 'raw') return (await stat(path)).size;
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(32);
    await fh.read(head, 0, 32, 0);
    if (head.readUInt32BE(0) !== 0x514649fb) throw new Error(`${path} is not a qcow2 image`);
    return Number(head.readBigUInt64BE(24));
  } finally {
    await fh.close();
  }
}

/**
 * Creates (or replaces) a qcow2 copy-on-write overlay over `backing` (raw or qcow2), of the
 * backing's virtual size, with 64 KiB clusters: the file `qemu-img create -b` would write. The
 * backing path is stored relative to the overlay's directory, so the data directory can be moved
 * as a whole.
 */
export async function createOverlay(
  path: string,
  backing: string,
  backingFormat: 'raw' | 'qcow2',
): Promise<void> {
  const rel = relative(dirname(path), backing);
  const name = Buffer.from(rel);
  const proto = await overlayPrototype(backingFormat, await virtualSize(backing, backingFormat), name.length);
  const bytes = Buffer.from(proto.bytes);
  name.copy(bytes, proto.nameOffset);
  await writeFile(path, bytes, { mode: 0o644 });
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
