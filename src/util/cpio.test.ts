import { describe, expect, it } from 'vitest';
import { buildCpio } from './cpio.js';

interface ParsedEntry {
  /** Byte offset of the entry's header in the archive. */
  headerOffset: number;
  /** Byte offset of the entry's data in the archive. */
  dataOffset: number;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  name: string;
  data: Buffer;
}

const HEADER_LEN = 110;
const MAGIC = '070701';

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** A minimal newc reader: just enough to check what buildCpio wrote, strictly. */
function parseNewc(buf: Buffer): { entries: ParsedEntry[]; endOffset: number } {
  const entries: ParsedEntry[] = [];
  let off = 0;
  for (;;) {
    if (off + HEADER_LEN > buf.length) throw new Error(`header at ${off} runs past the end`);
    if (off % 4 !== 0) throw new Error(`header at ${off} is not 4-byte aligned`);
    const magic = buf.toString('ascii', off, off + 6);
    if (magic !== MAGIC) throw new Error(`bad magic '${magic}' at ${off}`);
    const field = (i: number) => {
      const s = buf.toString('ascii', off + 6 + i * 8, off + 6 + (i + 1) * 8);
      if (!/^[0-9a-f]{8}$/.test(s)) throw new Error(`field ${i} at ${off} is not 8 hex digits: '${s}'`);
      return parseInt(s, 16);
    };
    const ino = field(0);
    const mode = field(1);
    const uid = field(2);
    const gid = field(3);
    const nlink = field(4);
    const mtime = field(5);
    const fileSize = field(6);
    const nameSize = field(11);
    const check = field(12);
    if (check !== 0) throw new Error('check field must be 0 for newc');
    const nameStart = off + HEADER_LEN;
    const nameBytes = buf.subarray(nameStart, nameStart + nameSize);
    if (nameBytes[nameSize - 1] !== 0) throw new Error(`name at ${off} is not NUL-terminated`);
    const name = nameBytes.subarray(0, nameSize - 1).toString('utf8');
    // Header + name is padded with NULs to a multiple of 4.
    const dataOffset = align4(nameStart + nameSize);
    for (let i = nameStart + nameSize; i < dataOffset; i++)
      if (buf[i] !== 0) throw new Error(`non-NUL name padding at ${i}`);
    const data = buf.subarray(dataOffset, dataOffset + fileSize);
    if (data.length !== fileSize) throw new Error(`data of ${name} runs past the end`);
    const next = align4(dataOffset + fileSize);
    for (let i = dataOffset + fileSize; i < next; i++)
      if (buf[i] !== 0) throw new Error(`non-NUL data padding at ${i}`);
    entries.push({
      headerOffset: off,
      dataOffset,
      ino,
      mode,
      uid,
      gid,
      nlink,
      mtime,
      name,
      data: Buffer.from(data),
    });
    off = next;
    if (name === 'TRAILER!!!') return { entries, endOffset: off };
  }
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

describe('buildCpio', () => {
  const fileA = Buffer.from('hello, initramfs\n'); // 17 bytes: needs data padding
  const fileB = Buffer.from([0, 1, 2, 3, 4, 5, 6, 7]); // 8 bytes: already aligned
  const archive = buildCpio([
    { path: 'etc', mode: 0o755 },
    { path: 'etc/hello.txt', data: fileA, mode: 0o644 },
    { path: '/bin/tool', data: fileB, mode: 0o4755 },
    { path: 'bin/sh', symlinkTarget: 'busybox', mode: 0o644 },
    { path: 'empty', data: new Uint8Array(0), mode: 0o600 },
  ]);

  it('writes newc headers with names, types, modes and sizes that read back', () => {
    const { entries } = parseNewc(archive);
    expect(entries.map((e) => e.name)).toEqual([
      'etc',
      'etc/hello.txt',
      'bin/tool',
      'bin/sh',
      'empty',
      'TRAILER!!!',
    ]);
    const [dir, a, b, link, empty, trailer] = entries;

    expect(dir!.mode).toBe(S_IFDIR | 0o755);
    expect(dir!.data.length).toBe(0);

    expect(a!.mode).toBe(S_IFREG | 0o644);
    expect(a!.data.equals(fileA)).toBe(true);

    expect(b!.mode).toBe(S_IFREG | 0o4755);
    expect(b!.data.equals(fileB)).toBe(true);

    expect(link!.mode & S_IFMT).toBe(S_IFLNK);
    expect(link!.mode & 0o7777).toBe(0o777);
    expect(link!.data.toString()).toBe('busybox');

    expect(empty!.mode).toBe(S_IFREG | 0o600);
    expect(empty!.data.length).toBe(0);

    expect(trailer!.mode).toBe(0);
    expect(trailer!.data.length).toBe(0);
  });

  it('strips leading slashes from paths', () => {
    const { entries } = parseNewc(archive);
    expect(entries.some((e) => e.name.startsWith('/'))).toBe(false);
  });

  it('aligns every header and every data section to 4 bytes', () => {
    const { entries } = parseNewc(archive);
    for (const e of entries) {
      expect(e.headerOffset % 4).toBe(0);
      expect(e.dataOffset % 4).toBe(0);
    }
  });

  it('gives entries distinct inode numbers, root ownership and a fixed mtime', () => {
    const { entries } = parseNewc(archive);
    const files = entries.filter((e) => e.name !== 'TRAILER!!!');
    expect(new Set(files.map((e) => e.ino)).size).toBe(files.length);
    for (const e of files) {
      expect(e.ino).toBeGreaterThan(0);
      expect(e.uid).toBe(0);
      expect(e.gid).toBe(0);
      expect(e.nlink).toBe(1);
      expect(e.mtime).toBe(0);
    }
  });

  it('ends with TRAILER!!! and zero padding to a multiple of 512 bytes', () => {
    const { entries, endOffset } = parseNewc(archive);
    expect(entries[entries.length - 1]!.name).toBe('TRAILER!!!');
    expect(archive.length % 512).toBe(0);
    expect(archive.length).toBeGreaterThanOrEqual(endOffset);
    expect(archive.length - endOffset).toBeLessThan(512);
    expect(archive.subarray(endOffset).every((b) => b === 0)).toBe(true);
  });

  it('is reproducible: the same entries give the same bytes', () => {
    const again = buildCpio([
      { path: 'etc', mode: 0o755 },
      { path: 'etc/hello.txt', data: fileA, mode: 0o644 },
      { path: '/bin/tool', data: fileB, mode: 0o4755 },
      { path: 'bin/sh', symlinkTarget: 'busybox', mode: 0o644 },
      { path: 'empty', data: new Uint8Array(0), mode: 0o600 },
    ]);
    expect(again.equals(archive)).toBe(true);
  });

  it('builds an archive of only the trailer when given no entries', () => {
    const empty = buildCpio([]);
    expect(empty.length).toBe(512);
    const { entries } = parseNewc(empty);
    expect(entries.map((e) => e.name)).toEqual(['TRAILER!!!']);
  });

  it('keeps only permission bits of the given mode', () => {
    const { entries } = parseNewc(buildCpio([{ path: 'f', data: Buffer.from('x'), mode: 0o170644 }]));
    expect(entries[0]!.mode).toBe(S_IFREG | 0o644);
  });

  it('parses name lengths of every residue modulo 4', () => {
    const names = ['a', 'ab', 'abc', 'abcd', 'abcde'];
    const { entries } = parseNewc(
      buildCpio(names.map((n) => ({ path: n, data: Buffer.from(n), mode: 0o644 }))),
    );
    expect(entries.slice(0, -1).map((e) => [e.name, e.data.toString()])).toEqual(names.map((n) => [n, n]));
  });
});
