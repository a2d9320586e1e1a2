import { chown, rename, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { CommandFailedError } from '../util/errors.js';
import type { Buildah } from './buildah.js';

/** The root filesystem does not fit the disk size asked for, or the host ran out of space. */
export class DiskFullError extends Error {
  readonly code = 'DISK_STORAGE_FULL';
}

const NO_SPACE = /No space left|Could not allocate block|not enough space|too small|ENOSPC|File too large/i;

// Runs in the builder's user namespace, where the image's files have their in-image owners.
const EXPORT_SCRIPT = `
du -sb --one-file-system "$ROOTFS" | cut -f1
mkfs.ext4 -q -F -L hearth-root -E root_owner=0:0 -d "$ROOTFS" "$1" "$2"M
`;

/**
 * Makes an ext4 disk image of `sizeMiB` (sparse: only written blocks use host space) holding the
 * root filesystem of image `ref`, with ownership, modes, links and special files as the image has
 * them, at `diskPath` (owned by Hearth's user). Returns the bytes of file content. Throws DiskFullError when
 * the content does not fit or the host disk is full; leaves no file on failure.
 */
export async function imageToDisk(
  buildah: Buildah,
  ref: string,
  diskPath: string,
  sizeMiB: number,
): Promise<{ contentBytes: number; allocatedBytes: number }> {
  const scratch = join(buildah.outDir, `${basename(diskPath)}.${process.pid}.tmp`);
  try {
    const r = await buildah.withRootfs(ref, EXPORT_SCRIPT, [scratch, String(sizeMiB)]);
    // The disk belongs to Hearth's user (root's when Hearth runs as root), not to the builder's.
    if (process.getuid?.() === 0) await chown(scratch, 0, 0);
    await rename(scratch, diskPath);
    const st = await stat(diskPath);
    return { contentBytes: Number(r.stdout.trim().split('\n')[0]) || 0, allocatedBytes: st.blocks * 512 };
  } catch (e) {
    await rm(scratch, { force: true });
    const detail = e instanceof CommandFailedError ? e.stderrTail : (e as Error).message;
    if (NO_SPACE.test(detail))
      throw new DiskFullError(
        `the root filesystem does not fit a ${sizeMiB} MiB disk (${detail.split('\n').pop()})`,
      );
    throw e;
  }
}
