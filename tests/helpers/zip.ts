import { crc32, deflateRawSync } from 'node:zlib';

// A small zip writer, so tests can craft entries that zip tools refuse to make.

export interface ZipSpec {
  name: string | Buffer;
  /** File content; omit for an entry without data (a directory, or an empty special file). */
  data?: Buffer | string;
  /** 0 stored, 8 deflate (default), or any other number to write an unsupported method. */
  method?: number;
  /** Full unix st_mode for the external attributes; default a 0644 file, or a 0755 directory for names ending in "/". */
  unixMode?: number;
  /** Uncompressed size to declare in the headers instead of the real one. */
  declaredSize?: number;
  /** CRC-32 to declare instead of the real one. */
  crc?: number;
  /** General purpose flags (bit 0: encrypted); bit 11 (UTF-8 names) is always set. */
  flags?: number;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

export function makeZip(specs: readonly ZipSpec[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const s of specs) {
    const name = typeof s.name === 'string' ? Buffer.from(s.name, 'utf8') : s.name;
    const raw = s.data === undefined ? Buffer.alloc(0) : Buffer.from(s.data);
    const method = s.method ?? (s.data === undefined ? 0 : 8);
    const body = method === 8 ? deflateRawSync(raw) : raw;
    const crc = s.crc ?? crc32(raw);
    const usize = s.declaredSize ?? raw.length;
    const flags = (s.flags ?? 0) | 0x800;
    const isDirName = name.at(-1) === 0x2f;
    const mode = s.unixMode ?? (isDirName ? 0o040755 : 0o100644);
    const common = Buffer.concat([
      u16(flags),
      u16(method),
      u16(0),
      u16(0x21),
      u32(crc),
      u32(body.length),
      u32(usize),
    ]);
    const local = Buffer.concat([u32(0x04034b50), u16(20), common, u16(name.length), u16(0), name, body]);
    centrals.push(
      Buffer.concat([
        u32(0x02014b50),
        u16((3 << 8) | 30), // made by: unix, spec 3.0
        u16(20),
        common,
        u16(name.length),
        u16(0), // extra
        u16(0), // comment
        u16(0), // disk
        u16(0), // internal attributes
        u32(mode * 0x10000), // external attributes: unix mode in the high 16 bits
        u32(offset),
        name,
      ]),
    );
    locals.push(local);
    offset += local.length;
  }
  const cd = Buffer.concat(centrals);
  const eocd = Buffer.concat([
    u32(0x06054b50),
    u16(0),
    u16(0),
    u16(specs.length),
    u16(specs.length),
    u32(cd.length),
    u32(offset),
    u16(0),
  ]);
  return Buffer.concat([...locals, cd, eocd]);
}
