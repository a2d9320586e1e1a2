import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';

/**
 * Saving and restoring the part of a clone's RAM that differs from its template.
 *
 * A clone maps its template's memory file privately (MAP_PRIVATE, QEMU `share=off`): pages it never
 * wrote are the template's, pages it wrote became anonymous copy-on-write pages of the QEMU process.
 * /proc/<pid>/pagemap tells the two apart, so a suspend saves only the anonymous pages (a few MiB for
 * a typical idle app instead of the whole RAM), read through /proc/<pid>/mem while the VM is
 * stopped. A resume starts QEMU on the same template file and writes those pages back before the
 * device state is loaded and the guest runs. Each diff is against the template, never against an
 * earlier diff, so there is no chain to walk.
 *
 * File format (little-endian):
 *   magic "HMEMDIF1" | u32 pageSize | u32 reserved | u64 ramBytes | u64 runCount
 *   runCount x (u64 offset | u64 length | u64 flags)      flags bit 0: all-zero run, no data stored
 *   data of the non-zero runs, in order
 */
export const MEMDIFF_MAGIC = 'HMEMDIF1';
const PAGE_SIZE = 4096;
const HEADER_BYTES = 32;
const RUN_BYTES = 24;
const FLAG_ZERO = 1n;
const MAX_RUN_BYTES = 8 * 1024 * 1024; // bounded buffers when copying

interface Vma {
  start: number;
  end: number;
  fileOffset: number;
}

interface Run {
  offset: number;
  length: number;
  zero: boolean;
}

/**
 * The address ranges where `pid` maps QEMU's guest RAM: the file (or sealed memfd) that
 * /proc/<pid>/maps names `ramName`, or the first of several candidate names that it maps.
 */
export async function findRamMappings(pid: number, ramName: string | readonly string[]): Promise<Vma[]> {
  const names = typeof ramName === 'string' ? [ramName] : ramName;
  const maps = await readFile(`/proc/${pid}/maps`, 'utf8');
  const byName = new Map<string, Vma[]>();
  for (const line of maps.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s+(.*)$/.exec(line);
    if (!m || !names.includes(m[4]!)) continue;
    const vma = { start: parseInt(m[1]!, 16), end: parseInt(m[2]!, 16), fileOffset: parseInt(m[3]!, 16) };
    byName.set(m[4]!, [...(byName.get(m[4]!) ?? []), vma]);
  }
  const out = names.map((n) => byName.get(n)).find((v) => v !== undefined) ?? [];
  if (out.length === 0) throw new Error(`process ${pid} does not map ${names.join(' or ')}`);
  return out.sort((a, b) => a.fileOffset - b.fileOffset);
}

function isZero(buf: Buffer): boolean {
  // Compare 8 bytes at a time; guest pages that are all zero are common (freed or never-used memory).
  for (let i = 0; i + 8 <= buf.length; i += 8) if (buf.readBigUInt64LE(i) !== 0n) return false;
  return true;
}

export interface MemoryDiffStats {
  pagesSaved: number;
  zeroPages: number;
  runs: number;
  fileBytes: number;
}

/**
 * Writes the pages of `pid`'s private RAM mapping that no longer come from `memoryFile` (its name
 * or candidate names, see findRamMappings) into
 * `outPath` (then fsyncs it). Precondition: the VM is stopped (QMP `stop`), so RAM does not change.
 */
export async function saveMemoryDiff(
  pid: number,
  memoryFile: string | readonly string[],
  ramBytes: number,
  outPath: string,
): Promise<MemoryDiffStats> {
  const vmas = await findRamMappings(pid, memoryFile);
  const pagemap = await open(`/proc/${pid}/pagemap`, 'r');
  const runs: (Run & { addr: number })[] = [];
  try {
    for (const v of vmas) {
      const pages = (v.end - v.start) / PAGE_SIZE;
      const entries = Buffer.alloc(pages * 8);
      const { bytesRead } = await pagemap.read(entries, 0, entries.length, (v.start / PAGE_SIZE) * 8);
      if (bytesRead !== entries.length) throw new Error('short read of pagemap');
      let runStart = -1;
      const flush = (endPage: number) => {
        if (runStart < 0) return;
        runs.push({
          offset: v.fileOffset + runStart * PAGE_SIZE,
          length: (endPage - runStart) * PAGE_SIZE,
          zero: false,
          addr: v.start + runStart * PAGE_SIZE,
        });
        runStart = -1;
      };
      for (let i = 0; i < pages; i++) {
        const hi = entries.readUInt32LE(i * 8 + 4);
        const present = (hi & 0x80000000) !== 0;
        const swapped = (hi & 0x40000000) !== 0;
        const filePage = (hi & 0x20000000) !== 0;
        const own = (present && !filePage) || swapped; // private anonymous copy: differs from the file
        if (own) {
          if (runStart < 0) runStart = i;
          if ((i + 1 - runStart) * PAGE_SIZE >= MAX_RUN_BYTES) flush(i + 1);
        } else flush(i);
      }
      flush(pages);
    }

    // Read each run, split out all-zero pages, then write header + runs + data.
    const data: Buffer[] = [];
    const finalRuns: Run[] = [];
    let zeroPages = 0;
    let pagesSaved = 0;
    // Synchronous reads: the VM is stopped, and one syscall per run without a thread-pool round
    // trip is several times faster for the hundreds of small runs a typical diff has.
    const memFd = openSync(`/proc/${pid}/mem`, 'r');
    try {
      for (const r of runs) {
        const buf = Buffer.alloc(r.length);
        const bytesRead = readSync(memFd, buf, 0, r.length, r.addr);
        if (bytesRead !== r.length) throw new Error(`short read of guest RAM at offset ${r.offset}`);
        for (let off = 0; off < r.length; off += PAGE_SIZE) {
          const page = buf.subarray(off, off + PAGE_SIZE);
          const zero = isZero(page);
          const last = finalRuns[finalRuns.length - 1];
          if (last && last.zero === zero && last.offset + last.length === r.offset + off)
            last.length += PAGE_SIZE;
          else finalRuns.push({ offset: r.offset + off, length: PAGE_SIZE, zero });
          if (zero) zeroPages++;
          else data.push(page);
          pagesSaved++;
        }
      }
    } finally {
      closeSync(memFd);
    }
    const header = Buffer.alloc(HEADER_BYTES + finalRuns.length * RUN_BYTES);
    header.write(MEMDIFF_MAGIC, 0, 'ascii');
    header.writeUInt32LE(PAGE_SIZE, 8);
    header.writeBigUInt64LE(BigInt(ramBytes), 16);
    header.writeBigUInt64LE(BigInt(finalRuns.length), 24);
    finalRuns.forEach((r, i) => {
      const o = HEADER_BYTES + i * RUN_BYTES;
      header.writeBigUInt64LE(BigInt(r.offset), o);
      header.writeBigUInt64LE(BigInt(r.length), o + 8);
      header.writeBigUInt64LE(r.zero ? FLAG_ZERO : 0n, o + 16);
    });
    const out = await open(outPath, 'w', 0o600);
    let fileBytes = 0;
    try {
      const all = [header, ...data];
      // writev in bounded batches: one syscall per batch instead of one per page.
      for (let i = 0; i < all.length; i += 1024) {
        const batch = all.slice(i, i + 1024);
        const want = batch.reduce((n, b) => n + b.length, 0);
        const { bytesWritten } = await out.writev(batch);
        if (bytesWritten !== want) throw new Error(`short write to ${outPath} (disk full?)`);
        fileBytes += bytesWritten;
      }
      await out.sync();
    } finally {
      await out.close();
    }
    return { pagesSaved, zeroPages, runs: finalRuns.length, fileBytes };
  } finally {
    await pagemap.close();
  }
}

/** Thrown when a memory diff file does not have the structure it claims. */
export class MemoryDiffFormatError extends Error {}

async function readExact(fh: FileHandle, len: number, pos: number): Promise<Buffer> {
  const buf = Buffer.alloc(len);
  const { bytesRead } = await fh.read(buf, 0, len, pos);
  if (bytesRead !== len)
    throw new MemoryDiffFormatError(`truncated: wanted ${len} bytes at ${pos}, got ${bytesRead}`);
  return buf;
}

/**
 * Writes the pages saved in `diffPath` into the RAM of `pid`, which must map `memoryFile` privately
 * and must not be running guest code yet (started with -incoming defer -S). The whole file is
 * checked (header, every run, total size) before the first byte is written, so a malformed diff
 * changes nothing. Runs may span several mappings of the file (QEMU can split its RAM mapping).
 */
export async function loadMemoryDiff(
  pid: number,
  memoryFile: string | readonly string[],
  ramBytes: number,
  diffPath: string,
): Promise<number> {
  const vmas = await findRamMappings(pid, memoryFile);
  const diff = await open(diffPath, 'r');
  try {
    const header = await readExact(diff, HEADER_BYTES, 0);
    if (header.toString('ascii', 0, 8) !== MEMDIFF_MAGIC) throw new MemoryDiffFormatError('bad magic');
    if (header.readUInt32LE(8) !== PAGE_SIZE) throw new MemoryDiffFormatError('unexpected page size');
    if (header.readBigUInt64LE(16) !== BigInt(ramBytes)) {
      throw new MemoryDiffFormatError(
        `saved for ${header.readBigUInt64LE(16)} bytes of RAM, this VM has ${ramBytes}`,
      );
    }
    const count = Number(header.readBigUInt64LE(24));
    if (count > ramBytes / PAGE_SIZE) throw new MemoryDiffFormatError('run count larger than RAM');
    const table = await readExact(diff, count * RUN_BYTES, HEADER_BYTES);
    const runs: Run[] = [];
    let dataBytes = 0;
    for (let i = 0; i < count; i++) {
      const offset = Number(table.readBigUInt64LE(i * RUN_BYTES));
      const length = Number(table.readBigUInt64LE(i * RUN_BYTES + 8));
      const zero = (table.readBigUInt64LE(i * RUN_BYTES + 16) & FLAG_ZERO) !== 0n;
      if (offset % PAGE_SIZE || length % PAGE_SIZE || length === 0 || offset + length > ramBytes) {
        throw new MemoryDiffFormatError(`run ${i} (${offset}+${length}) is outside RAM`);
      }
      for (let o = offset; o < offset + length;) {
        const v = vmas.find((m) => o >= m.fileOffset && o < m.fileOffset + (m.end - m.start));
        if (!v)
          throw new MemoryDiffFormatError(`run ${i} covers RAM offset ${o}, which the process does not map`);
        o = Math.min(offset + length, v.fileOffset + (v.end - v.start));
      }
      runs.push({ offset, length, zero });
      if (!zero) dataBytes += length;
    }
    const dataStart = HEADER_BYTES + count * RUN_BYTES;
    const { size } = await diff.stat();
    if (dataStart + dataBytes !== size) {
      throw new MemoryDiffFormatError(
        size < dataStart + dataBytes
          ? `truncated: ${dataStart + dataBytes - size} bytes missing`
          : `${size - dataStart - dataBytes} unexpected trailing bytes`,
      );
    }

    // Synchronous I/O for the same reason as in saveMemoryDiff; the data section is read in large
    // sequential chunks, so a diff of any size needs a bounded buffer.
    const memFd = openSync(`/proc/${pid}/mem`, 'r+');
    const diffFd = openSync(diffPath, 'r');
    try {
      const zeros = Buffer.alloc(Math.min(MAX_RUN_BYTES, ramBytes));
      const chunk = Buffer.alloc(Math.min(MAX_RUN_BYTES, Math.max(dataBytes, PAGE_SIZE)));
      let chunkStart = 0;
      let chunkEnd = 0; // valid bytes in `chunk`
      let filePos = dataStart;
      const take = (n: number): Buffer => {
        if (chunkEnd - chunkStart < n) {
          chunk.copy(chunk, 0, chunkStart, chunkEnd);
          chunkEnd -= chunkStart;
          chunkStart = 0;
          const got = readSync(diffFd, chunk, chunkEnd, chunk.length - chunkEnd, filePos);
          filePos += got;
          chunkEnd += got;
          if (chunkEnd < n) throw new MemoryDiffFormatError('truncated data section');
        }
        const b = chunk.subarray(chunkStart, chunkStart + n);
        chunkStart += n;
        return b;
      };
      let written = 0;
      for (const r of runs) {
        // Write in pieces that never cross a mapping boundary nor exceed MAX_RUN_BYTES.
        for (let o = r.offset; o < r.offset + r.length;) {
          const v = vmas.find((m) => o >= m.fileOffset && o < m.fileOffset + (m.end - m.start))!;
          const n = Math.min(MAX_RUN_BYTES, r.offset + r.length - o, v.fileOffset + (v.end - v.start) - o);
          const buf = r.zero ? zeros.subarray(0, n) : take(n);
          const bytesWritten = writeSync(memFd, buf, 0, n, v.start + (o - v.fileOffset));
          if (bytesWritten !== n) throw new Error(`short write into guest RAM at offset ${o}`);
          written += n;
          o += n;
        }
      }
      return written;
    } finally {
      closeSync(memFd);
      closeSync(diffFd);
    }
  } finally {
    await diff.close();
  }
}
