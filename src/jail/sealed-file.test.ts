import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import { ensureSealBinary, sealFile } from './sealed-file.js';

const MIB = 1024 * 1024;

describe('sealed in-memory copies (hearth-seal, real memfds)', () => {
  let dir: string;
  let seal: string;
  let file: string;
  const data = randomBytes(3 * MIB);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-seal-'));
    seal = await ensureSealBinary(join(dir, 'bin'));
    // 64 MiB, sparse: data at 0, a zero-filled MiB at 16 MiB (allocated but all zero), data at 40 MiB.
    file = join(dir, 'memory.raw');
    const fd = openSync(file, 'w');
    writeSync(fd, data, 0, data.length, 0);
    writeSync(fd, Buffer.alloc(MIB), 0, MIB, 16 * MIB);
    writeSync(fd, data, 0, data.length, 40 * MIB);
    writeSync(fd, Buffer.from([0]), 0, 1, 64 * MIB - 1);
    closeSync(fd);
  }, 60_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('holds exactly the file, named as /proc/<pid>/maps will show it, and only its data is allocated', async () => {
    const s = await sealFile(seal, file, 'hearth-test-ram');
    try {
      expect(s.sizeBytes).toBe(64 * MIB);
      expect(s.mappingName).toBe('/memfd:hearth-test-ram (deleted)');
      expect(readFileSync(`/proc/self/fd/${s.fd}`).equals(readFileSync(file))).toBe(true);
      // Two data runs of 3 MiB are allocated; the holes and the zero MiB are not (du counts 512-byte blocks).
      const blocks = Number(
        spawnSync('stat', ['-L', '-c', '%b', `/proc/${process.pid}/fd/${s.fd}`]).stdout.toString(),
      );
      expect(blocks * 512).toBeGreaterThanOrEqual(6 * MIB);
      expect(blocks * 512).toBeLessThan(8 * MIB);
    } finally {
      s.close();
    }
  });

  it('can be opened read-write by anyone but never written, truncated or grown, even by root', async () => {
    const s = await sealFile(seal, file, 'hearth-test-ram');
    try {
      const rw = openSync(`/proc/self/fd/${s.fd}`, 'r+');
      try {
        expect(() => writeSync(rw, Buffer.from('x'), 0, 1, 0)).toThrow(/EPERM/);
      } finally {
        closeSync(rw);
      }
      const truncate = spawnSync('truncate', ['-s', '0', `/proc/${process.pid}/fd/${s.fd}`]);
      expect(truncate.stderr.toString()).toMatch(/Operation not permitted/);
      expect(readFileSync(`/proc/self/fd/${s.fd}`).subarray(0, 16).equals(data.subarray(0, 16))).toBe(true);
      // An unprivileged process maps it privately, writes its own copy, and the memfd stays as it was.
      const py = [
        'import mmap, os',
        'f = os.open("/proc/self/fd/3", os.O_RDWR)',
        'm = mmap.mmap(f, 4096, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)',
        'm[0:5] = b"guest"',
        'print(m[0:5].decode(), os.getuid())',
      ].join('\n');
      const r = spawnSync(
        'setpriv',
        ['--reuid=65534', '--regid=65534', '--clear-groups', '/usr/bin/python3', '-c', py],
        { stdio: ['ignore', 'pipe', 'pipe', s.fd] },
      );
      expect(r.stderr.toString()).toBe('');
      expect(r.stdout.toString()).toBe('guest 65534\n');
      expect(readFileSync(`/proc/self/fd/${s.fd}`).subarray(0, 16).equals(data.subarray(0, 16))).toBe(true);
    } finally {
      s.close();
    }
  });

  it('fails with JAIL_SEAL_FAILED for a missing file, and refuses names that are not simple', async () => {
    const e = await sealFile(seal, join(dir, 'absent'), 'x').catch((err: unknown) => err);
    expect(hasCode(e, 'JAIL_SEAL_FAILED')).toBe(true);
    expect((e as Error).message).toMatch(/absent: hearth-seal: open source: No such file or directory/);
    await expect(sealFile(seal, file, '../x')).rejects.toThrow(TypeError);
  });
});
