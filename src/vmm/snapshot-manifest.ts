import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256File } from '../util/hash.js';
import { writeFileAtomic } from '../util/fs-atomic.js';
import { SnapshotCorruptError, SnapshotIncompatibleError } from './errors.js';
import type { NetworkMode } from '../net/vm-networks.js';
import type { Accelerator } from './qemu-args.js';

export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_FORMAT = 'hearth-snapshot/1';

/** One file of a snapshot, by name relative to the manifest's directory (or to the data dir for shared layers). */
export interface FileRecord {
  path: string;
  sizeBytes: number;
  sha256: string;
}

/** What a restore must match: the same machine shape, accelerator and QEMU build. */
export interface MachineFingerprint {
  memoryMiB: number;
  vcpus: number;
  accel: Accelerator;
  qemuVersion: string;
  kernelRelease: string;
  network: boolean;
  /**
   * What backs the network device (see MachineConfig.networkMode). Absent in snapshots made before
   * user-mode networking existed: those are 'namespaces' when `network` is true.
   */
  networkMode?: NetworkMode;
  /** The guest CPU model (-cpu); absent in snapshots made before it was recorded. */
  cpuModel?: string;
}

/**
 * Describes a complete, restorable snapshot. Written last, atomically (temp + fsync + rename): a
 * snapshot without a manifest does not exist, so a crash at any earlier step leaves nothing
 * half-saved behind that could be mistaken for a snapshot.
 */
export interface SnapshotManifest {
  format: typeof MANIFEST_FORMAT;
  kind: 'template' | 'suspend';
  vmId: string;
  /** Counts suspends of one VM: 1, 2, ... (0 for templates). */
  generation: number;
  createdAt: string;
  machine: MachineFingerprint;
  /** The template's RAM file (templates) or the diff against it (suspends). */
  memory: FileRecord & { mode: 'full' | 'diff' };
  /** The template a diff applies to, and the checksum its memory file had. */
  template?: { id: string; memorySha256: string };
  devices: FileRecord;
  /** The VM's own frozen disk layers, bottom to top (the template's layer is not repeated here). */
  diskLayers: FileRecord[];
  /** The initrd the VM booted with; restores must pass the same one. */
  initrd: FileRecord;
  /** The guest filesystems were frozen when saved: the restore thaws them. */
  fsFrozen: boolean;
}

/** Sizes and checksums a file. */
export async function recordFile(absPath: string, recordedPath: string): Promise<FileRecord> {
  const st = await stat(absPath);
  return { path: recordedPath, sizeBytes: st.size, sha256: await sha256File(absPath) };
}

export async function writeManifest(dir: string, m: SnapshotManifest): Promise<void> {
  await writeFileAtomic(join(dir, MANIFEST_FILE), JSON.stringify(m, null, 2) + '\n', 0o444);
}

/** Reads and structurally checks a manifest; SnapshotCorruptError if it is missing or malformed. */
export async function readManifest(dir: string): Promise<SnapshotManifest> {
  const path = join(dir, MANIFEST_FILE);
  let m: SnapshotManifest;
  try {
    m = JSON.parse(await readFile(path, 'utf8')) as SnapshotManifest;
  } catch (e) {
    throw new SnapshotCorruptError(dir, `manifest unreadable (${(e as Error).message})`);
  }
  if (m?.format !== MANIFEST_FORMAT)
    throw new SnapshotCorruptError(dir, `unknown manifest format '${String(m?.format)}'`);
  for (const f of [m.memory, m.devices, m.initrd, ...(m.diskLayers ?? [])]) {
    if (
      !f ||
      typeof f.path !== 'string' ||
      typeof f.sizeBytes !== 'number' ||
      !/^[0-9a-f]{64}$/.test(f.sha256 ?? '')
    ) {
      throw new SnapshotCorruptError(dir, 'manifest lists a file without path, size or checksum');
    }
  }
  return m;
}

/** A fingerprint with the network mode of records made before it was recorded filled in. */
function withNetworkMode(f: MachineFingerprint): MachineFingerprint {
  return f.network && f.networkMode === undefined ? { ...f, networkMode: 'namespaces' } : f;
}

const NETWORK_MODE_WORDS: Record<NetworkMode, string> = {
  namespaces: 'network namespaces (a Hearth run as root)',
  'user-mode': 'user-mode networking (a Hearth without root)',
};

/**
 * Throws SnapshotIncompatibleError if the snapshot was made for another machine shape or QEMU, or
 * with the other kind of network: QEMU restores device state by section, and a user-mode network
 * saves a 'slirp' section a tap network does not have, so a snapshot never crosses between the two.
 */
export function checkCompatible(
  dir: string,
  savedAsIs: MachineFingerprint,
  hereAsIs: MachineFingerprint,
): void {
  const saved = withNetworkMode(savedAsIs);
  const here = withNetworkMode(hereAsIs);
  if (saved.network && here.network && saved.networkMode !== here.networkMode)
    throw new SnapshotIncompatibleError(
      dir,
      `it was made with ${NETWORK_MODE_WORDS[saved.networkMode!]} but this Hearth uses ${NETWORK_MODE_WORDS[here.networkMode!]}; the network device's saved state differs`,
      'rebuild the image (UpdateMicrovmImage) on this Hearth, or run the Hearth that made it',
    );
  const keys = new Set([...Object.keys(saved), ...Object.keys(here)]) as Set<keyof MachineFingerprint>;
  for (const k of keys) {
    if (saved[k] !== here[k])
      throw new SnapshotIncompatibleError(
        dir,
        `${k} is ${String(saved[k])} in the snapshot but ${String(here[k])} here`,
      );
  }
}

/**
 * Remembers files already verified in this process by (device, inode, size, mtime), so a layer that
 * has not changed since it was checked is not hashed again on every restore. Frozen files are
 * read-only (mode 0444), so a change would also change their mtime.
 */
export class VerifiedFiles {
  private readonly seen = new Map<string, string>();
  /** Hashes in progress by path + identity: concurrent restores of one template hash it once. */
  private readonly inFlight = new Map<string, Promise<string>>();

  /** `hash` returns a file's sha256 in hex (replaceable to count calls in tests). */
  constructor(private readonly hash: (path: string) => Promise<string> = sha256File) {}

  private static key(st: { dev: number; ino: number; size: number; mtimeMs: number }): string {
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  }

  /** Verifies size and checksum of `absPath` against `rec`; SnapshotCorruptError on any mismatch. */
  async verify(snapshotDir: string, absPath: string, rec: FileRecord): Promise<void> {
    let st;
    try {
      st = await stat(absPath);
    } catch {
      throw new SnapshotCorruptError(snapshotDir, `${rec.path} is missing`);
    }
    if (st.size !== rec.sizeBytes) {
      throw new SnapshotCorruptError(
        snapshotDir,
        `${rec.path} is ${st.size} bytes; the manifest says ${rec.sizeBytes} (truncated or overwritten)`,
      );
    }
    const key = VerifiedFiles.key(st);
    if (this.seen.get(absPath) === key + rec.sha256) return;
    const flightKey = `${absPath}\0${key}`;
    let hashing = this.inFlight.get(flightKey);
    if (!hashing) {
      hashing = this.hash(absPath).finally(() => this.inFlight.delete(flightKey));
      this.inFlight.set(flightKey, hashing);
    }
    const actual = await hashing;
    if (actual !== rec.sha256)
      throw new SnapshotCorruptError(snapshotDir, `${rec.path} does not match its checksum`);
    this.seen.set(absPath, key + rec.sha256);
  }

  /** Records a file Hearth just wrote and hashed itself. */
  async trust(absPath: string, rec: FileRecord): Promise<void> {
    const st = await stat(absPath);
    this.seen.set(absPath, VerifiedFiles.key(st) + rec.sha256);
  }
}
