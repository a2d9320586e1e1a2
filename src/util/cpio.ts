/**
 * Writes cpio archives in the "newc" format the Linux kernel unpacks as an initramfs. Archives can be
 * concatenated: the kernel unpacks each in turn, later files replacing earlier ones.
 */
export interface CpioEntry {
  /** Path inside the archive, without a leading slash. */
  path: string;
  /** Regular file content; omit for a directory. */
  data?: Uint8Array;
  /** Permission bits, e.g. 0o755. */
  mode: number;
  /** Symlink target (then `data` is ignored). */
  symlinkTarget?: string;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(len: number): Buffer {
  return Buffer.alloc((4 - (len % 4)) % 4);
}

function header(ino: number, mode: number, size: number, name: string): Buffer {
  const nameBytes = Buffer.from(name + '\0');
  const fields = [
    '070701',
    hex8(ino),
    hex8(mode),
    hex8(0), // uid
    hex8(0), // gid
    hex8(1), // nlink
    hex8(0), // mtime: fixed so archives are reproducible
    hex8(size),
    hex8(0), // devmajor
    hex8(0), // devminor
    hex8(0), // rdevmajor
    hex8(0), // rdevminor
    hex8(nameBytes.length),
    hex8(0), // check
  ].join('');
  const h = Buffer.concat([Buffer.from(fields, 'ascii'), nameBytes]);
  return Buffer.concat([h, pad4(h.length)]);
}

/** Builds one uncompressed newc archive, with its trailer. */
export function buildCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (e.symlinkTarget !== undefined) {
      const target = Buffer.from(e.symlinkTarget);
      parts.push(header(ino++, S_IFLNK | 0o777, target.length, name), target, pad4(target.length));
    } else if (e.data === undefined) {
      parts.push(header(ino++, S_IFDIR | (e.mode & 0o7777), 0, name));
    } else {
      const data = Buffer.from(e.data);
      parts.push(header(ino++, S_IFREG | (e.mode & 0o7777), data.length, name), data, pad4(data.length));
    }
  }
  parts.push(header(0, 0, 0, 'TRAILER!!!'));
  const body = Buffer.concat(parts);
  // Pad to a 512-byte boundary like GNU cpio; harmless, and keeps concatenation tidy.
  return Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}
