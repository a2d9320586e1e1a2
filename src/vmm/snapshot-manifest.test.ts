import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import { SnapshotCorruptError, SnapshotIncompatibleError } from './errors.js';
import {
  MANIFEST_FILE,
  MANIFEST_FORMAT,
  VerifiedFiles,
  checkCompatible,
  readManifest,
  recordFile,
  writeManifest,
  type FileRecord,
  type MachineFingerprint,
  type SnapshotManifest,
} from './snapshot-manifest.js';

const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

const machine: MachineFingerprint = {
  memoryMiB: 256,
  vcpus: 1,
  accel: 'tcg',
  qemuVersion: '8.2.2',
  kernelRelease: '6.1.0-hearth',
  network: true,
};

function manifest(): SnapshotManifest {
  return {
    format: MANIFEST_FORMAT,
    kind: 'suspend',
    vmId: 'vm-1',
    generation: 2,
    createdAt: '2024-01-01T00:00:00.000Z',
    machine: { ...machine },
    memory: { path: 'memory.diff', sizeBytes: 4096, sha256: sha('m'), mode: 'diff' },
    template: { id: 'tpl-1', memorySha256: sha('t') },
    devices: { path: 'devices.state', sizeBytes: 100, sha256: sha('d') },
    diskLayers: [
      { path: 'layer-1.qcow2', sizeBytes: 200, sha256: sha('l1') },
      { path: 'layer-2.qcow2', sizeBytes: 300, sha256: sha('l2') },
    ],
    initrd: { path: '../../initrd.img', sizeBytes: 400, sha256: sha('i') },
    fsFrozen: true,
  };
}

describe('snapshot manifest', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-manifest-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function writeRaw(content: string): Promise<void> {
    await writeFile(join(dir, MANIFEST_FILE), content);
  }

  async function expectCorrupt(p: Promise<unknown>, message: RegExp): Promise<SnapshotCorruptError> {
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SnapshotCorruptError);
    expect(hasCode(err, 'VMM_SNAPSHOT_CORRUPT')).toBe(true);
    expect((err as Error).message).toMatch(message);
    return err as SnapshotCorruptError;
  }

  describe('writeManifest / readManifest', () => {
    it('round-trips a manifest', async () => {
      const m = manifest();
      await writeManifest(dir, m);
      await expect(readManifest(dir)).resolves.toEqual(m);
    });

    it('writes the manifest read-only, as pretty JSON ending with a newline', async () => {
      await writeManifest(dir, manifest());
      const p = join(dir, MANIFEST_FILE);
      expect((await stat(p)).mode & 0o777).toBe(0o444);
      const text = await readFile(p, 'utf8');
      expect(text.endsWith('}\n')).toBe(true);
      expect(text).toContain('\n  "format": "hearth-snapshot/1"');
    });

    it('replaces an existing (read-only) manifest', async () => {
      await writeManifest(dir, manifest());
      const m2 = { ...manifest(), generation: 3 };
      await writeManifest(dir, m2);
      expect((await readManifest(dir)).generation).toBe(3);
    });

    it('round-trips a template manifest without a template reference or disk layers', async () => {
      const m: SnapshotManifest = {
        ...manifest(),
        kind: 'template',
        generation: 0,
        diskLayers: [],
        fsFrozen: false,
      };
      delete m.template;
      m.memory = { ...m.memory, mode: 'full' };
      await writeManifest(dir, m);
      await expect(readManifest(dir)).resolves.toEqual(m);
    });

    it('rejects a missing manifest', async () => {
      const err = await expectCorrupt(readManifest(dir), /manifest unreadable/);
      expect(err.snapshotPath).toBe(dir);
    });

    it('rejects invalid JSON', async () => {
      await writeRaw('{"format": "hearth-snapshot/1",');
      await expectCorrupt(readManifest(dir), /manifest unreadable/);
    });

    it('rejects JSON that is not an object', async () => {
      await writeRaw('null');
      await expectCorrupt(readManifest(dir), /unknown manifest format/);
      await writeRaw('[1,2]');
      await expectCorrupt(readManifest(dir), /unknown manifest format/);
    });

    it('rejects a wrong or missing format', async () => {
      await writeRaw(JSON.stringify({ ...manifest(), format: 'hearth-snapshot/2' }));
      await expectCorrupt(readManifest(dir), /unknown manifest format 'hearth-snapshot\/2'/);
      const { format: _format, ...noFormat } = manifest();
      await writeRaw(JSON.stringify(noFormat));
      await expectCorrupt(readManifest(dir), /unknown manifest format 'undefined'/);
    });

    it('rejects a memory record without sha256', async () => {
      const m = manifest() as unknown as { memory: Partial<FileRecord> };
      delete m.memory.sha256;
      await writeRaw(JSON.stringify(m));
      await expectCorrupt(readManifest(dir), /file without path, size or checksum/);
    });

    it('rejects a disk layer with a malformed sha256', async () => {
      const m = manifest();
      m.diskLayers[1]!.sha256 = 'ABC';
      await writeRaw(JSON.stringify(m));
      await expectCorrupt(readManifest(dir), /without path, size or checksum/);
    });

    it('rejects records without path or size, and a missing devices or initrd record', async () => {
      const cases: ((m: Record<string, unknown>) => void)[] = [
        (m) => delete (m.devices as Record<string, unknown>).path,
        (m) => ((m.initrd as Record<string, unknown>).sizeBytes = '400'),
        (m) => delete m.devices,
        (m) => delete m.initrd,
        (m) => delete m.memory,
        (m) => ((m.diskLayers as unknown[])[0] = null),
      ];
      for (const mutate of cases) {
        const m = manifest() as unknown as Record<string, unknown>;
        mutate(m);
        await writeRaw(JSON.stringify(m));
        await expectCorrupt(readManifest(dir), /without path, size or checksum/);
      }
    });
  });

  describe('recordFile', () => {
    it('records the size and sha256 of a file under the given name', async () => {
      const p = join(dir, 'f.bin');
      await writeFile(p, 'hello world');
      await expect(recordFile(p, 'f.bin')).resolves.toEqual({
        path: 'f.bin',
        sizeBytes: 11,
        sha256: sha('hello world'),
      });
    });
  });

  describe('checkCompatible', () => {
    it('accepts an identical fingerprint', () => {
      expect(() => checkCompatible(dir, machine, { ...machine })).not.toThrow();
    });

    it('rejects each differing field with SnapshotIncompatibleError naming it', () => {
      const changes: Partial<MachineFingerprint>[] = [
        { memoryMiB: 512 },
        { vcpus: 2 },
        { accel: 'kvm' },
        { qemuVersion: '9.0.0' },
        { kernelRelease: '6.6.0' },
        { network: false },
      ];
      for (const change of changes) {
        const [field] = Object.keys(change);
        let err: unknown;
        try {
          checkCompatible(dir, machine, { ...machine, ...change });
        } catch (e) {
          err = e;
        }
        expect(err, field).toBeInstanceOf(SnapshotIncompatibleError);
        expect(hasCode(err, 'VMM_SNAPSHOT_INCOMPATIBLE')).toBe(true);
        expect((err as Error).message).toContain(
          `${field} is ${String(machine[field as keyof MachineFingerprint])} in the snapshot`,
        );
        expect((err as SnapshotIncompatibleError).snapshotPath).toBe(dir);
      }
    });

    it('refuses a snapshot of the other network mode, either way, saying which and what to do', () => {
      const tap = { ...machine, network: true, networkMode: 'namespaces' as const };
      const user = { ...machine, network: true, networkMode: 'user-mode' as const };
      for (const [saved, here, words] of [
        [tap, user, /made with network namespaces .* but this Hearth uses user-mode networking/],
        [user, tap, /made with user-mode networking .* but this Hearth uses network namespaces/],
      ] as const) {
        let err: unknown;
        try {
          checkCompatible(dir, saved, here);
        } catch (e) {
          err = e;
        }
        expect(hasCode(err, 'VMM_SNAPSHOT_INCOMPATIBLE')).toBe(true);
        expect((err as Error).message).toMatch(words);
        expect((err as SnapshotIncompatibleError).hint).toMatch(/rebuild the image/);
      }
    });

    it('reads a networked snapshot made before networkMode was recorded as namespaces', () => {
      const legacy = { ...machine, network: true };
      expect(() => checkCompatible(dir, legacy, { ...legacy, networkMode: 'namespaces' })).not.toThrow();
      expect(() => checkCompatible(dir, legacy, { ...legacy, networkMode: 'user-mode' })).toThrow(
        /made with network namespaces/,
      );
    });
  });

  describe('VerifiedFiles', () => {
    const content = Buffer.from('snapshot layer content: '.repeat(100));
    let file: string;
    let rec: FileRecord;
    /** A fixed mtime (whole seconds, so it is restored exactly by utimes). */
    const mtime = new Date('2024-02-03T04:05:06.000Z');

    beforeEach(async () => {
      file = join(dir, 'layer.qcow2');
      await writeFile(file, content);
      await utimes(file, mtime, mtime);
      rec = { path: 'layer.qcow2', sizeBytes: content.length, sha256: sha(content) };
    });

    /** Same size, one bit flipped, original mtime restored. */
    async function flipBitKeepingMtime(): Promise<void> {
      const bad = Buffer.from(content);
      bad[10] = bad[10]! ^ 0x01;
      await writeFile(file, bad);
      await utimes(file, mtime, mtime);
    }

    it('accepts a file matching its record', async () => {
      await expect(new VerifiedFiles().verify(dir, file, rec)).resolves.toBeUndefined();
    });

    it('hashes a file once for concurrent verifications, and each of them gets the verdict', async () => {
      const slowly = <T>(x: T) => new Promise<T>((r) => setTimeout(() => r(x), 50)); // hashing takes a while
      let hashes = 0;
      const v = new VerifiedFiles(() => (hashes++, slowly(sha(content))));
      await Promise.all(Array.from({ length: 20 }, () => v.verify(dir, file, rec)));
      expect(hashes).toBe(1);
      let bad = 0;
      const w = new VerifiedFiles(() => (bad++, slowly(sha('other'))));
      const results = await Promise.allSettled(Array.from({ length: 5 }, () => w.verify(dir, file, rec)));
      expect(results.map((r) => r.status)).toEqual(Array(5).fill('rejected'));
      expect(bad).toBe(1);
    });

    it('rejects a missing file', async () => {
      await rm(file);
      await expectCorrupt(new VerifiedFiles().verify(dir, file, rec), /layer\.qcow2 is missing/);
    });

    it('rejects a truncated file', async () => {
      await truncate(file, content.length - 1);
      await expectCorrupt(new VerifiedFiles().verify(dir, file, rec), /truncated/);
    });

    it('rejects a file that grew', async () => {
      await writeFile(file, Buffer.concat([content, Buffer.from('x')]));
      await expectCorrupt(new VerifiedFiles().verify(dir, file, rec), /manifest says/);
    });

    it('rejects a same-size file with a flipped bit (checksum)', async () => {
      await flipBitKeepingMtime();
      await expectCorrupt(new VerifiedFiles().verify(dir, file, rec), /does not match its checksum/);
    });

    it('rejects a record whose checksum differs from the file', async () => {
      await expectCorrupt(
        new VerifiedFiles().verify(dir, file, { ...rec, sha256: sha('other') }),
        /checksum/,
      );
    });

    it('does not re-hash a file it verified before while device, inode, size and mtime are unchanged', async () => {
      // Intended cache behaviour: the cache key is (dev, ino, size, mtime). Snapshot files are frozen
      // read-only (0444), so legitimate changes also change the mtime; a change that keeps size and
      // restores the mtime is deliberately not detected within the same process.
      const v = new VerifiedFiles();
      await v.verify(dir, file, rec);
      await flipBitKeepingMtime();
      await expect(v.verify(dir, file, rec)).resolves.toBeUndefined();
      // A fresh cache (another process) hashes it and finds the damage.
      await expectCorrupt(new VerifiedFiles().verify(dir, file, rec), /checksum/);
    });

    it('re-hashes a verified file whose mtime changed, and rejects it if its content changed', async () => {
      const v = new VerifiedFiles();
      await v.verify(dir, file, rec);
      await flipBitKeepingMtime();
      const later = new Date(mtime.getTime() + 1000);
      await utimes(file, later, later);
      await expectCorrupt(v.verify(dir, file, rec), /does not match its checksum/);
    });

    it('still checks the size of a cached file', async () => {
      const v = new VerifiedFiles();
      await v.verify(dir, file, rec);
      await truncate(file, 10);
      await utimes(file, mtime, mtime);
      await expectCorrupt(v.verify(dir, file, rec), /truncated/);
    });

    it('does not cache a failed verification', async () => {
      const v = new VerifiedFiles();
      await flipBitKeepingMtime();
      await expectCorrupt(v.verify(dir, file, rec), /checksum/);
      await expectCorrupt(v.verify(dir, file, rec), /checksum/);
    });

    it('does not let a cached result for one checksum vouch for another', async () => {
      const v = new VerifiedFiles();
      await v.verify(dir, file, rec);
      await expectCorrupt(v.verify(dir, file, { ...rec, sha256: sha('other') }), /checksum/);
    });

    it('trusts a file recorded with trust() without hashing it', async () => {
      // trust() is for files Hearth just wrote and hashed itself: later verifies use the cache.
      const v = new VerifiedFiles();
      await flipBitKeepingMtime();
      await v.trust(file, rec);
      await expect(v.verify(dir, file, rec)).resolves.toBeUndefined();
    });
  });
});
