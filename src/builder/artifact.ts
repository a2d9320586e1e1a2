/**
 * Code-artifact intake: turns what a user gave as the code of an image (a local directory, a local
 * .zip file, or a file:// URL of either) into a fresh build-context directory with a Dockerfile at
 * its root, refusing anything that could write outside that directory, smuggle in special files,
 * or exhaust the host (entry count, bytes, zip bombs).
 *
 * Both kinds of source go through the same two steps: a plan (read and check every entry's metadata,
 * write nothing) and a copy (create the context and stream the content in, counting the bytes really
 * written against the limits). A failure at any point leaves no build context behind.
 */
import { constants, type Stats } from 'node:fs';
import {
  chmod,
  lstat,
  mkdir,
  open,
  readdir,
  readlink,
  realpath,
  rm,
  stat,
  symlink,
  type FileHandle,
} from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';
import yauzl from 'yauzl';
import { HearthError } from '../errors.js';
import {
  ArchiveTooLargeError,
  ArtifactDestinationExistsError,
  CodeArtifactNotFoundError,
  DockerfileNotFoundError,
  InvalidArchiveError,
  UnsafeArchiveEntryError,
  UnsupportedArtifactUriError,
} from './errors.js';

export interface ArtifactLimits {
  /** Entries of the zip or the directory tree (files, directories and symlinks), the root excluded. */
  maxEntries: number;
  /** Bytes of file content in all, as really written (not as declared by the zip's headers). */
  maxTotalBytes: number;
  /** Bytes of one file's content, as really written. */
  maxFileBytes: number;
  /**
   * Uncompressed bytes per compressed byte, of one zip entry and of the whole zip. Checked once the
   * output passes RATIO_CHECK_MIN_BYTES (small files of padding compress far better than this,
   * harmlessly).
   */
  maxCompressionRatio: number;
}

const GiB = 2 ** 30;

export const DEFAULT_ARTIFACT_LIMITS: ArtifactLimits = Object.freeze({
  maxEntries: 10_000,
  maxTotalBytes: 2 * GiB,
  maxFileBytes: 1 * GiB,
  maxCompressionRatio: 200,
});

/** The compression ratio is only enforced on an entry (or the whole zip) that inflates past this. */
export const RATIO_CHECK_MIN_BYTES = 2 ** 20;

/** Longest entry name accepted (bytes, UTF-8), and longest single path component (Linux NAME_MAX). */
const MAX_NAME_BYTES = 4096;
const MAX_COMPONENT_BYTES = 255;
/** Symlinks followed while resolving one symlink of a directory source (the kernel's limit). */
const MAX_SYMLINK_HOPS = 40;
const COPY_BUFFER_BYTES = 256 * 1024;

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;
const S_IFSOCK = 0o140000;

/** Flags for every file the intake creates: a new file, never through an existing name or link. */
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
/** Flags for reading a directory source's file: no link following, no blocking on a swapped-in FIFO. */
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/**
 * Materialises a code artifact into `destDir` (which must not exist yet; created by this function,
 * parents included) and checks a Dockerfile is at its root. `source` is a local directory, a local
 * .zip file, or a file:// URL of either; http(s)://, s3:// and other schemes are refused with
 * UnsupportedArtifactUriError: remote artifacts are first downloaded to a local .zip by fetchArtifact
 * (artifact-fetch.ts), and that file is then given here, so it gets every check below.
 *
 * The copy keeps regular files (permission bits reduced to 0755 or 0644), directories (0755) and,
 * from a directory source, symlinks whose target stays inside the directory (copied as symlinks).
 * Zip entries may not be symlinks. Nothing is ever written outside `destDir`.
 *
 * Throws CodeArtifactNotFoundError, UnsupportedArtifactUriError, InvalidArchiveError,
 * UnsafeArchiveEntryError, ArchiveTooLargeError or DockerfileNotFoundError (codes CODE_ARTIFACT_*,
 * ARCHIVE_*), and ArtifactDestinationExistsError if `destDir` exists (then it is left untouched).
 * On any other failure `destDir` does not exist afterwards.
 *
 * Returns the number of files (regular files and symlinks) and the bytes of file content written.
 */
export async function intakeArtifact(
  source: string,
  destDir: string,
  limits: ArtifactLimits = DEFAULT_ARTIFACT_LIMITS,
): Promise<{ files: number; bytes: number }> {
  const path = localPathOf(source);
  let st: Stats;
  try {
    st = await stat(path);
  } catch (e) {
    throw notFound(path, e);
  }
  const dest = resolve(destDir);
  if (await exists(dest)) throw new ArtifactDestinationExistsError(dest);
  if (st.isDirectory()) return intakeDirectory(path, dest, limits);
  if (st.isFile()) return intakeZip(path, st.size, dest, limits);
  throw new InvalidArchiveError(`code artifact ${path} is neither a directory nor a regular file`);
}

// ---------------------------------------------------------------------------------------------
// Source location

/** The local path `source` names; throws for URL schemes other than file:// and malformed file URLs. */
function localPathOf(source: string): string {
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(source)?.[1]?.toLowerCase();
  if (scheme === 'file') {
    try {
      return fileURLToPath(new URL(source));
    } catch (e) {
      const reason = `not a valid local file:// URL (${(e as Error).message})`;
      throw new UnsupportedArtifactUriError(source, reason, { cause: e });
    }
  }
  if (scheme !== undefined && /^[^:]+:\/\//.test(source)) {
    throw new UnsupportedArtifactUriError(
      redactUri(source),
      `${scheme}:// code artifacts are not handled by the local intake (only local paths and file:// URLs)`,
    );
  }
  if (source === '') throw new CodeArtifactNotFoundError('(empty path)', 'was not given');
  return resolve(source);
}

/** The URI without credentials, query or fragment (presigned URLs carry secrets there), for messages. */
export function redactUri(uri: string): string {
  try {
    const u = new URL(uri);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return uri.replace(/[?#].*$/, '').replace(/\/\/[^/@]*@/, '//');
  }
}

function notFound(path: string, e: unknown): HearthError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new CodeArtifactNotFoundError(path, 'does not exist', { cause: e });
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new CodeArtifactNotFoundError(path, 'cannot be read (permission denied)', { cause: e });
  }
  if (code === 'ELOOP') return new CodeArtifactNotFoundError(path, 'is a symlink loop', { cause: e });
  return new CodeArtifactNotFoundError(path, `cannot be read (${(e as Error).message})`, { cause: e });
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Shared: output tree, Dockerfile check, names

type Kind = 'file' | 'dir' | 'symlink';

/** Permission bits the build context keeps: 0755 if any execute bit was set, else 0644. */
function filePerms(mode: number): 0o755 | 0o644 {
  return (mode & 0o111) !== 0 ? 0o755 : 0o644;
}

/** An entry name safe to put in a message: quoted, control and bidi characters escaped, long names cut. */
function show(name: string): string {
  const cut = name.length > 200 ? `${name.slice(0, 100)}...${name.slice(-60)}` : name;
  return JSON.stringify(cut).replace(
    /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/**
 * The build context being written: every path is resolved under the context's real path and
 * prefix-checked; files are created with O_EXCL|O_NOFOLLOW, directories with mode 0755.
 */
class OutputTree {
  private readonly dirs = new Set<string>(['']);

  private constructor(readonly root: string) {}

  /** Creates `dest` (parents as needed, `dest` itself must be new) and returns its tree. */
  static async create(dest: string): Promise<OutputTree> {
    await mkdir(dirname(dest), { recursive: true });
    try {
      await mkdir(dest, 0o755);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new ArtifactDestinationExistsError(dest);
      throw e;
    }
    await chmod(dest, 0o755);
    return new OutputTree(await realpath(dest));
  }

  /** The absolute output path of `rel`; throws if it resolves outside the context. */
  pathOf(rel: string, display: string): string {
    const p = resolve(this.root, rel);
    if (!p.startsWith(this.root + sep)) {
      throw new UnsafeArchiveEntryError(display, 'it resolves outside the build context');
    }
    return p;
  }

  /** Creates directory `rel` and its missing parents (mode 0755); an existing non-directory is refused. */
  async dir(rel: string, display: string): Promise<void> {
    if (this.dirs.has(rel)) return;
    const slash = rel.lastIndexOf('/');
    await this.dir(slash < 0 ? '' : rel.slice(0, slash), display);
    const p = this.pathOf(rel, display);
    try {
      await mkdir(p, 0o755);
      await chmod(p, 0o755); // whatever the umask
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError(e, display);
      if (!(await lstat(p)).isDirectory()) {
        throw new UnsafeArchiveEntryError(display, `${show(rel)} is both a directory and a file or link`);
      }
    }
    this.dirs.add(rel);
  }

  /** Creates the new file `rel` (parents as needed) with the given permission bits, open for writing. */
  async file(rel: string, perms: 0o755 | 0o644, display: string): Promise<FileHandle> {
    await this.dir(parentOf(rel), display);
    try {
      const fh = await open(this.pathOf(rel, display), CREATE_FLAGS, 0o600);
      try {
        await fh.chmod(perms);
      } catch (e) {
        await fh.close();
        throw e;
      }
      return fh;
    } catch (e) {
      throw fsError(e, display);
    }
  }

  /** Creates the symlink `rel` -> `target` (parents as needed); never replaces an existing name. */
  async symlink(rel: string, target: string, display: string): Promise<void> {
    await this.dir(parentOf(rel), display);
    try {
      await symlink(target, this.pathOf(rel, display));
    } catch (e) {
      throw fsError(e, display);
    }
  }
}

function parentOf(rel: string): string {
  const slash = rel.lastIndexOf('/');
  return slash < 0 ? '' : rel.slice(0, slash);
}

/** Turns a write failure that is the entry's fault into UnsafeArchiveEntryError; others pass through. */
function fsError(e: unknown, display: string): unknown {
  if (e instanceof HearthError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'EEXIST') return new UnsafeArchiveEntryError(display, 'another entry already wrote this path');
  if (code === 'ENAMETOOLONG') {
    return new UnsafeArchiveEntryError(display, 'its path is too long for the host filesystem');
  }
  if (code === 'ELOOP' || code === 'ENOTDIR') {
    return new UnsafeArchiveEntryError(display, 'a parent of its path is not a directory');
  }
  return e;
}

/**
 * Creates the build context, runs `fill` on it, and removes the context entirely if `fill` (or the
 * creation) fails.
 */
async function withOutput<T>(dest: string, fill: (out: OutputTree) => Promise<T>): Promise<T> {
  let created = false;
  try {
    const out = await OutputTree.create(dest);
    created = true;
    return await fill(out);
  } catch (e) {
    if (created) await rm(dest, { recursive: true, force: true });
    throw e;
  }
}

interface Listed {
  rel: string;
  kind: Kind;
}

/**
 * Throws DockerfileNotFoundError unless a regular file named exactly `Dockerfile` is at the root,
 * with a message and hint for the usual mistakes (a zipped folder, a nested or misspelt Dockerfile).
 */
function checkDockerfile(entries: readonly Listed[], what: 'zip' | 'directory', sourcePath: string): void {
  const atRoot = entries.find((e) => e.rel === 'Dockerfile');
  if (atRoot?.kind === 'file') return;
  if (atRoot) {
    throw new DockerfileNotFoundError(
      `the Dockerfile at the root of the ${what} is a ${atRoot.kind === 'dir' ? 'directory' : 'symlink'}, not a regular file`,
      'make Dockerfile a regular file at the root of the code artifact',
    );
  }
  const nested = entries.filter((e) => e.kind === 'file' && e.rel.endsWith('/Dockerfile'));
  nested.sort((a, b) => a.rel.split('/').length - b.rel.split('/').length || (a.rel < b.rel ? -1 : 1));
  const tops = new Set(entries.map((e) => e.rel.split('/')[0]).filter((t) => t !== '__MACOSX'));
  const [onlyTop] = tops;
  if (tops.size === 1 && onlyTop !== undefined && nested.some((e) => e.rel === `${onlyTop}/Dockerfile`)) {
    throw new DockerfileNotFoundError(
      `no Dockerfile at the root of the ${what}: it is inside the ${what}'s only folder, ${show(`${onlyTop}/`)}`,
      what === 'zip'
        ? `the Dockerfile must be at the zip root, not inside a folder: zip the folder's contents rather than the folder itself (e.g. \`cd ${onlyTop} && zip -r ../app.zip .\`)`
        : `the Dockerfile must be at the root of the directory: give ${join(sourcePath, onlyTop)} as the code artifact instead`,
    );
  }
  const misspelt = entries.find(
    (e) => e.kind === 'file' && !e.rel.includes('/') && e.rel.toLowerCase() === 'dockerfile',
  );
  if (misspelt) {
    throw new DockerfileNotFoundError(
      `no file named Dockerfile at the root of the ${what} (there is ${show(misspelt.rel)}; the name is case-sensitive)`,
      `rename ${show(misspelt.rel)} to Dockerfile`,
    );
  }
  const first = nested[0];
  if (first) {
    throw new DockerfileNotFoundError(
      `no Dockerfile at the root of the ${what} (there is one at ${show(first.rel)}, but only the root one is used)`,
      `move the Dockerfile to the root of the ${what}: the root is the build context`,
    );
  }
  throw new DockerfileNotFoundError(
    `no Dockerfile at the root of the ${what}`,
    `put a file named Dockerfile at the root of the ${what}`,
  );
}

/** Byte and ratio accounting of what was really written, throwing ArchiveTooLargeError at once. */
class Budget {
  totalBytes = 0;

  constructor(
    private readonly limits: ArtifactLimits,
    /** Bytes of the whole zip, for the archive-wide ratio; undefined for a directory. */
    private readonly archiveBytes?: number,
  ) {}

  /** Counts `n` more bytes of the file `display`, which now has `fileBytes` written from `inBytes` compressed. */
  add(n: number, display: string, fileBytes: number, inBytes?: number): void {
    this.totalBytes += n;
    const { maxFileBytes, maxTotalBytes, maxCompressionRatio } = this.limits;
    if (fileBytes > maxFileBytes) {
      throw new ArchiveTooLargeError(
        'maxFileBytes',
        `file ${display} holds more than ${maxFileBytes} bytes (the limit for one file); stopped there`,
      );
    }
    if (this.totalBytes > maxTotalBytes) {
      throw new ArchiveTooLargeError(
        'maxTotalBytes',
        `the code artifact holds more than ${maxTotalBytes} bytes of files (the limit); stopped at ${display}`,
      );
    }
    if (
      inBytes !== undefined &&
      fileBytes > RATIO_CHECK_MIN_BYTES &&
      fileBytes > maxCompressionRatio * inBytes
    ) {
      throw new ArchiveTooLargeError(
        'maxCompressionRatio',
        `zip entry ${display} inflates ${inBytes} compressed bytes to more than ${fileBytes} bytes, over the compression ratio limit of ${maxCompressionRatio}; stopped there`,
      );
    }
    const whole = this.archiveBytes;
    if (
      whole !== undefined &&
      this.totalBytes > RATIO_CHECK_MIN_BYTES &&
      this.totalBytes > maxCompressionRatio * whole
    ) {
      throw new ArchiveTooLargeError(
        'maxCompressionRatio',
        `the ${whole}-byte zip inflates to more than ${this.totalBytes} bytes, over the compression ratio limit of ${maxCompressionRatio}; stopped at ${display}`,
      );
    }
  }
}

/** Writes all of `chunk` at the file's current position (FileHandle.write may write less). */
export async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let off = 0;
  while (off < chunk.length) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
    off += bytesWritten;
  }
}

function tooManyEntries(maxEntries: number, what: string): ArchiveTooLargeError {
  return new ArchiveTooLargeError(
    'maxEntries',
    `the ${what} has more than ${maxEntries} entries (the limit)`,
  );
}

// ---------------------------------------------------------------------------------------------
// Directory source

interface DirEntry extends Listed {
  /** Permission bits for a file. */
  perms: 0o755 | 0o644;
  /** Identity seen by the plan, checked again when the file is opened. */
  dev: number;
  ino: number;
  /** Symlink target, verbatim. */
  target?: string;
}

async function intakeDirectory(
  sourcePath: string,
  dest: string,
  limits: ArtifactLimits,
): Promise<{ files: number; bytes: number }> {
  const root = await realpath(sourcePath);
  const entries = await planDirectory(root, limits);
  checkDockerfile(entries, 'directory', sourcePath);
  return withOutput(dest, async (out) => {
    const budget = new Budget(limits);
    let files = 0;
    for (const e of entries) {
      const display = show(e.rel);
      if (e.kind === 'dir') {
        await out.dir(e.rel, display);
      } else if (e.kind === 'symlink') {
        await out.symlink(e.rel, e.target ?? '', display);
        files++;
      } else {
        await copyFile(join(root, e.rel), e, out, budget, display);
        files++;
      }
    }
    return { files, bytes: budget.totalBytes };
  });
}

/**
 * Lists the tree under `root` without following symlinks, parents before children, names sorted;
 * refuses special files and symlinks that lead outside, and stops as soon as a limit is crossed.
 */
async function planDirectory(root: string, limits: ArtifactLimits): Promise<DirEntry[]> {
  const out: DirEntry[] = [];
  let declaredBytes = 0;
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(rel === '' ? root : join(root, rel))).sort();
    if (out.length + names.length > limits.maxEntries) throw tooManyEntries(limits.maxEntries, 'directory');
    for (const name of names) {
      const childRel = rel === '' ? name : `${rel}/${name}`;
      const display = show(childRel);
      const st = await lstat(join(root, childRel));
      const base = { rel: childRel, perms: filePerms(st.mode), dev: st.dev, ino: st.ino };
      if (st.isDirectory()) {
        out.push({ ...base, kind: 'dir' });
        await walk(childRel);
      } else if (st.isFile()) {
        if (st.size > limits.maxFileBytes) {
          throw new ArchiveTooLargeError(
            'maxFileBytes',
            `file ${display} has ${st.size} bytes, over the limit of ${limits.maxFileBytes} for one file`,
          );
        }
        declaredBytes += st.size;
        if (declaredBytes > limits.maxTotalBytes) {
          throw new ArchiveTooLargeError(
            'maxTotalBytes',
            `the directory holds more than ${limits.maxTotalBytes} bytes of files (the limit), counting up to ${display}`,
          );
        }
        out.push({ ...base, kind: 'file' });
      } else if (st.isSymbolicLink()) {
        const target = await readlink(join(root, childRel));
        await checkSymlink(root, childRel, target, display);
        out.push({ ...base, kind: 'symlink', target });
      } else {
        throw new UnsafeArchiveEntryError(
          display,
          `it is a ${specialKind(st)}, not a regular file or directory`,
        );
      }
    }
  };
  await walk('');
  return out;
}

function specialKind(st: Stats): string {
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  if (st.isFIFO()) return 'FIFO';
  if (st.isSocket()) return 'socket';
  return 'special file';
}

const SYMLINK_HINT =
  'replace the symlink with a copy of what it points to, or make it a relative link to a path inside the directory';

/** Refuses a symlink of a directory source unless its target, resolved as the kernel would, stays inside `root`. */
async function checkSymlink(root: string, linkRel: string, target: string, display: string): Promise<void> {
  const where = await resolveSymlink(root, linkRel, target);
  if (where === 'inside') return;
  const reason =
    where === 'absolute'
      ? `it is a symlink to the absolute path ${show(target)}, which would not point into the build context`
      : where === 'loop'
        ? `it is a symlink to ${show(target)} that goes through more than ${MAX_SYMLINK_HOPS} symlinks (a loop)`
        : `it is a symlink to ${show(target)}, which points outside the directory`;
  throw new UnsafeArchiveEntryError(display, reason, SYMLINK_HINT);
}

/**
 * Resolves the symlink at `linkRel` (relative to `root`) component by component, following the
 * symlinks it meets on the way, the way the kernel would. 'outside' if any step climbs above `root`
 * (even to come back: in the copy, the name of `root` is different). A component that does not exist
 * (or is not a directory) ends the walk: the link dangles, and dangles the same in the copy.
 */
async function resolveSymlink(
  root: string,
  linkRel: string,
  target: string,
): Promise<'inside' | 'outside' | 'absolute' | 'loop'> {
  if (isAbsolute(target)) return 'absolute';
  const at = linkRel.split('/').slice(0, -1);
  const todo = target.split('/').reverse();
  let hops = 0;
  while (todo.length > 0) {
    const c = todo.pop();
    if (c === undefined || c === '' || c === '.') continue;
    if (c === '..') {
      if (at.length === 0) return 'outside';
      at.pop();
      continue;
    }
    at.push(c);
    const p = join(root, ...at);
    let st: Stats;
    try {
      st = await lstat(p);
    } catch {
      return 'inside';
    }
    if (st.isSymbolicLink()) {
      if (++hops > MAX_SYMLINK_HOPS) return 'loop';
      const next = await readlink(p);
      if (isAbsolute(next)) return 'absolute';
      at.pop();
      todo.push(...next.split('/').reverse());
    } else if (!st.isDirectory()) {
      return 'inside';
    }
  }
  return 'inside';
}

/** Copies one regular file of a directory source, refusing it if it changed since the plan. */
async function copyFile(
  src: string,
  e: DirEntry,
  out: OutputTree,
  budget: Budget,
  display: string,
): Promise<void> {
  let input: FileHandle;
  try {
    input = await open(src, READ_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'ENOENT') {
      throw new UnsafeArchiveEntryError(
        display,
        'it was replaced or removed while the directory was being copied',
      );
    }
    throw err;
  }
  try {
    const st = await input.stat();
    if (!st.isFile() || st.ino !== e.ino || st.dev !== e.dev) {
      throw new UnsafeArchiveEntryError(display, 'it was replaced while the directory was being copied');
    }
    const output = await out.file(e.rel, e.perms, display);
    try {
      const buf = Buffer.allocUnsafe(COPY_BUFFER_BYTES);
      let fileBytes = 0;
      for (;;) {
        const { bytesRead } = await input.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        fileBytes += bytesRead;
        budget.add(bytesRead, display, fileBytes);
        await writeAll(output, buf.subarray(0, bytesRead));
      }
    } finally {
      await output.close();
    }
  } finally {
    await input.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Zip source

interface ZipPlanned extends Listed {
  entry: yauzl.Entry;
  perms: 0o755 | 0o644;
  display: string;
}

async function intakeZip(
  zipPath: string,
  zipBytes: number,
  dest: string,
  limits: ArtifactLimits,
): Promise<{ files: number; bytes: number }> {
  let zip: yauzl.ZipFile;
  try {
    // decodeStrings: false so that yauzl does not reject unsafe names with a generic error: the
    // names are decoded below (strictly: a backslash stays a backslash) and refused as unsafe.
    zip = await yauzl.openPromise(zipPath, {
      lazyEntries: true,
      autoClose: false,
      decodeStrings: false,
      validateEntrySizes: true,
      strictFileNames: true,
    });
  } catch (e) {
    throw new InvalidArchiveError(`code artifact ${zipPath} is not a readable zip: ${(e as Error).message}`, {
      cause: e,
      ...(await otherFormatHint(zipPath)),
    });
  }
  // yauzl may emit 'error' when nobody waits for an entry; errors reach us through nextEntry/streams.
  zip.on('error', () => {});
  try {
    if (zip.entryCount > limits.maxEntries) throw tooManyEntries(limits.maxEntries, 'zip');
    const planned = await planZip(zip, limits);
    checkDockerfile(planned, 'zip', zipPath);
    return await withOutput(dest, async (out) => {
      const budget = new Budget(limits, zipBytes);
      let files = 0;
      for (const p of planned) {
        if (p.kind === 'dir') {
          await out.dir(p.rel, p.display);
        } else {
          await extractFile(zip, p, out, budget);
          files++;
        }
      }
      return { files, bytes: budget.totalBytes };
    });
  } finally {
    zip.close();
  }
}

/** Reads the next central-directory entry, or null at the end. */
function nextEntry(zip: yauzl.ZipFile): Promise<yauzl.Entry | null> {
  return new Promise((resolvePromise, reject) => {
    const done = () => {
      zip.off('entry', onEntry);
      zip.off('end', onEnd);
      zip.off('error', onError);
    };
    const onEntry = (e: yauzl.Entry) => (done(), resolvePromise(e));
    const onEnd = () => (done(), resolvePromise(null));
    const onError = (err: Error) => (done(), reject(err));
    zip.on('entry', onEntry);
    zip.on('end', onEnd);
    zip.on('error', onError);
    zip.readEntry();
  });
}

/**
 * Reads the whole central directory and checks every entry before anything is written: names, types,
 * duplicates, encryption, compression method, declared sizes (the real sizes are enforced again
 * while inflating).
 */
async function planZip(zip: yauzl.ZipFile, limits: ArtifactLimits): Promise<ZipPlanned[]> {
  const planned: ZipPlanned[] = [];
  const paths = new PathRegistry();
  let declaredBytes = 0;
  let count = 0;
  for (;;) {
    let entry: yauzl.Entry | null;
    try {
      entry = await nextEntry(zip);
    } catch (e) {
      throw new InvalidArchiveError(`the zip is corrupt: ${(e as Error).message}`, { cause: e });
    }
    if (entry === null) break;
    if (++count > limits.maxEntries) throw tooManyEntries(limits.maxEntries, 'zip');
    const name = yauzl.getFileNameLowLevel(
      entry.generalPurposeBitFlag,
      entry.fileNameRaw,
      entry.extraFields,
      true,
    );
    const display = show(name);
    const { rel, dirName } = checkZipName(name, entry.fileNameRaw.length, display);
    const kind = zipEntryKind(entry, dirName, display);
    if (rel === '') continue; // "./": the root itself
    paths.add(rel, kind, display);
    if (kind === 'file') {
      if (entry.isEncrypted()) {
        throw new InvalidArchiveError(`zip entry ${display} is encrypted`, {
          hint: 'make the zip without a password (Hearth cannot decrypt it)',
        });
      }
      if (entry.compressionMethod !== 0 && entry.compressionMethod !== 8) {
        throw new InvalidArchiveError(
          `zip entry ${display} uses compression method ${entry.compressionMethod}; only stored (0) and deflate (8) are supported`,
          { hint: 'make the zip with standard deflate compression, e.g. `cd app && zip -r ../app.zip .`' },
        );
      }
      if (entry.uncompressedSize > limits.maxFileBytes) {
        throw new ArchiveTooLargeError(
          'maxFileBytes',
          `zip entry ${display} declares ${entry.uncompressedSize} bytes, over the limit of ${limits.maxFileBytes} for one file`,
        );
      }
      declaredBytes += entry.uncompressedSize;
      if (declaredBytes > limits.maxTotalBytes) {
        throw new ArchiveTooLargeError(
          'maxTotalBytes',
          `the zip declares more than ${limits.maxTotalBytes} bytes of files (the limit), counting up to ${display}`,
        );
      }
    }
    const unixMode = entry.externalFileAttributes >>> 16;
    planned.push({ entry, rel, kind, perms: filePerms(unixMode === 0 ? 0o644 : unixMode), display });
  }
  return planned;
}

/**
 * Checks a decoded zip entry name and returns its normalised relative path ('.' and empty
 * components dropped, no trailing slash) and whether it is named like a directory.
 */
function checkZipName(name: string, rawBytes: number, display: string): { rel: string; dirName: boolean } {
  const unsafe = (reason: string, hint?: string) => new UnsafeArchiveEntryError(display, reason, hint);
  if (rawBytes > MAX_NAME_BYTES || Buffer.byteLength(name) > MAX_NAME_BYTES) {
    throw unsafe(`its name is longer than ${MAX_NAME_BYTES} bytes`);
  }
  if (name.includes('\0')) throw unsafe('its name contains a NUL byte');
  if (name.includes('\\')) {
    throw unsafe(
      'its name contains a backslash (a Windows path separator)',
      'make the zip with a tool that writes "/" as the separator, e.g. `zip -r`, 7-Zip or .NET ZipFile',
    );
  }
  if (name.startsWith('/') || /^[a-zA-Z]:/.test(name)) throw unsafe('its path is absolute');
  const parts = name.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.includes('..')) {
    throw unsafe('its path has a ".." component and could land outside the build context');
  }
  if (parts.some((c) => Buffer.byteLength(c) > MAX_COMPONENT_BYTES)) {
    throw unsafe(`a component of its path is longer than ${MAX_COMPONENT_BYTES} bytes`);
  }
  const dirName = name.endsWith('/');
  const rel = parts.join('/');
  if (rel === '' && !dirName) throw unsafe('its name is empty');
  return { rel, dirName };
}

/** The entry's kind from its name and the unix mode in its external attributes; refuses the rest. */
function zipEntryKind(entry: yauzl.Entry, dirName: boolean, display: string): 'file' | 'dir' {
  const fmt = (entry.externalFileAttributes >>> 16) & S_IFMT;
  const unsafe = (reason: string, hint?: string) => new UnsafeArchiveEntryError(display, reason, hint);
  switch (fmt) {
    case S_IFLNK:
      throw unsafe(
        'it is a symlink (zip entries must be regular files or directories)',
        'make the zip without storing symlinks (zip follows them unless given -y/--symlinks), or replace the link with a copy of its target',
      );
    case S_IFCHR:
    case S_IFBLK:
      throw unsafe('it is a device file');
    case S_IFIFO:
      throw unsafe('it is a FIFO');
    case S_IFSOCK:
      throw unsafe('it is a socket');
    case S_IFDIR:
      return 'dir';
    case S_IFREG:
      if (dirName) throw unsafe('it is named like a directory but marked as a regular file');
      return 'file';
    case 0:
      return dirName ? 'dir' : 'file';
    default:
      throw unsafe(`its unix mode has an unknown file type (0o${fmt.toString(8)})`);
  }
}

/**
 * The paths a zip creates, explicit or as parents, to refuse duplicates and paths that differ only
 * by case or Unicode normalisation (they would collide on a case-insensitive filesystem, and make
 * what the build sees depend on entry order), and a path used both as a file and a directory.
 */
class PathRegistry {
  private readonly seen = new Map<string, { path: string; kind: Kind; explicit: boolean }>();

  add(rel: string, kind: Kind, display: string): void {
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) this.put(parts.slice(0, i).join('/'), 'dir', false, display);
    this.put(rel, kind, true, display);
  }

  private put(path: string, kind: Kind, explicit: boolean, display: string): void {
    const key = path.normalize('NFC').toLowerCase();
    const prev = this.seen.get(key);
    if (!prev) {
      this.seen.set(key, { path, kind, explicit });
      return;
    }
    if (prev.path !== path) {
      throw new UnsafeArchiveEntryError(
        display,
        `its path ${show(path)} and ${show(prev.path)} differ only by case or Unicode normalisation`,
      );
    }
    if (prev.kind !== kind) {
      throw new UnsafeArchiveEntryError(display, `${show(path)} is both a directory and a file`);
    }
    if (explicit && prev.explicit) {
      throw new UnsafeArchiveEntryError(display, `the zip has ${show(path)} twice`);
    }
    if (explicit) prev.explicit = true;
  }
}

/** Streams one zip entry to its new file, counting real bytes against the limits and checking its CRC-32. */
async function extractFile(
  zip: yauzl.ZipFile,
  p: ZipPlanned,
  out: OutputTree,
  budget: Budget,
): Promise<void> {
  const { entry, display } = p;
  const corrupt = (e: unknown) =>
    new InvalidArchiveError(`zip entry ${display} is corrupt: ${(e as Error).message}`, { cause: e });
  const fh = await out.file(p.rel, p.perms, display);
  try {
    let stream: Readable;
    try {
      stream = await zip.openReadStreamPromise(entry);
    } catch (e) {
      throw corrupt(e);
    }
    // Listen at once: data flows (and errors fire) as soon as the stream exists. The iterator sees
    // every error; the no-op listener keeps a late one (after the iterator let go) from crashing us.
    const chunks = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    stream.on('error', () => {});
    try {
      let fileBytes = 0;
      let crc = 0;
      for (;;) {
        let next: IteratorResult<Buffer>;
        try {
          next = await chunks.next();
        } catch (e) {
          throw corrupt(e);
        }
        if (next.done) break;
        const chunk = next.value;
        fileBytes += chunk.length;
        budget.add(chunk.length, display, fileBytes, entry.compressedSize);
        crc = crc32(chunk, crc);
        await writeAll(fh, chunk);
      }
      if (crc >>> 0 !== entry.crc32 >>> 0) {
        throw new InvalidArchiveError(
          `zip entry ${display} is corrupt: its CRC-32 does not match its content`,
        );
      }
    } finally {
      stream.destroy();
    }
  } finally {
    await fh.close();
  }
}

/** A hint naming the archive format when the file is a known non-zip archive. */
async function otherFormatHint(path: string): Promise<{ hint?: string }> {
  let head: Buffer;
  try {
    const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      head = Buffer.alloc(512);
      const { bytesRead } = await fh.read(head, 0, head.length, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch {
    return {};
  }
  const starts = (...bytes: number[]) => bytes.every((b, i) => head[i] === b);
  let format: string | undefined;
  if (starts(0x1f, 0x8b)) format = 'gzip (.tar.gz?)';
  else if (starts(0x42, 0x5a, 0x68)) format = 'bzip2';
  else if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a)) format = 'xz';
  else if (starts(0x28, 0xb5, 0x2f, 0xfd)) format = 'zstd';
  else if (starts(0x37, 0x7a, 0xbc, 0xaf)) format = '7z';
  else if (starts(0x52, 0x61, 0x72, 0x21)) format = 'RAR';
  else if (head.subarray(257, 262).toString('latin1') === 'ustar') format = 'tar';
  if (format === undefined) return {};
  return {
    hint: `this looks like a ${format} archive; Hearth takes a directory or a .zip file (e.g. \`cd app && zip -r ../app.zip .\`)`,
  };
}
