import { isAbsolute, join, normalize } from 'node:path';
import { HearthError } from '../errors.js';
import { packageRoot } from '../util/package-root.js';
import { ensureStaticBinary } from '../util/static-binary.js';

/**
 * Starting QEMU inside a jail: hearth-jailer (src/jail/hearth-jailer.c, modelled on Firecracker's
 * jailer) puts it in its cgroups, its network namespace, new mount/IPC/UTS/PID namespaces and a
 * root holding only what it needs, then runs it as an unprivileged uid with no_new_privs.
 */

/** hearth-jailer's exit code when setting up the jail failed (its message is on stderr). */
export const JAILER_EXIT_SETUP_FAILED = 125;
/** hearth-jailer's exit code when the jail was set up but exec of the program failed. */
export const JAILER_EXIT_EXEC_FAILED = 127;

/**
 * The first uid (and gid) of the VMs' range. VM slot `s` runs as `VM_UID_BASE + s`. The range
 * 1_950_000_000..1_950_065_535 does not overlap the builder's subuids (1879048192..1879113727).
 */
export const VM_UID_BASE = 1_950_000_000;
/** The highest VM slot: slots are integers 0..VM_SLOT_MAX. */
export const VM_SLOT_MAX = 65_535;

/** A jail spec that hearth-jailer must not be given (a bug in the caller, not in the host). */
export class JailConfigError extends HearthError {
  readonly code = 'JAIL_INVALID_SPEC';
  constructor(message: string) {
    super(message, {
      hint: 'jail paths must be absolute and normalised, and uid/gid must be integers > 0 (see vmUid)',
    });
  }
}

/** hearth-jailer did not report the jailed process (it failed before forking, or hung). */
export class JailStartError extends HearthError {
  readonly code = 'JAIL_START_FAILED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, {
      hint: "hearth-jailer's stderr says which step failed (it must run as root)",
      ...options,
    });
  }
}

/**
 * The uid (and gid: they are equal) of VM slot `slot`. Each running VM should get its own slot,
 * so that one VM's QEMU cannot signal or ptrace another's, and RLIMIT_NPROC (counted per uid)
 * counts one VM only. Throws JailConfigError unless `slot` is an integer in 0..VM_SLOT_MAX.
 */
export function vmUid(slot: number): number {
  if (!Number.isInteger(slot) || slot < 0 || slot > VM_SLOT_MAX)
    throw new JailConfigError(`VM slot must be an integer in 0..${VM_SLOT_MAX}, not ${slot}`);
  return VM_UID_BASE + slot;
}

/** The C source of hearth-jailer. */
export function jailerSource(): string {
  return join(packageRoot(), 'src', 'jail', 'hearth-jailer.c');
}

/** Compiles hearth-jailer into `cacheDir` (cached by source hash; see ensureStaticBinary). */
export function ensureJailerBinary(cacheDir: string): Promise<string> {
  return ensureStaticBinary(jailerSource(), cacheDir, 'hearth-jailer');
}

/** What the jail around one program holds and allows. */
export interface JailSpec {
  /** The program's uid and gid (> 0; see vmUid). */
  uid: number;
  gid: number;
  /** A network namespace to enter (e.g. /run/netns/<name>); default: the caller's. */
  netnsPath?: string;
  /** An existing, empty directory: the jail's root tmpfs is mounted on it (the host never sees it). */
  rootDir: string;
  /** Host paths bound at the same path, read-only (nosuid, nodev; noexec kept from the source). */
  readOnly: string[];
  /** Host paths bound at the same path, writable by the program if their permissions allow. */
  readWrite: string[];
  /**
   * Device nodes under /dev/ to recreate in the jail (same type, numbers and mode, owned by uid/gid),
   * e.g. /dev/kvm, /dev/net/tun, /dev/null, /dev/urandom.
   */
  devices: string[];
  /** Descriptors (>= 3) the program inherits, e.g. a sealed memfd it maps; every other one is closed. */
  keepFds?: number[];
  /** `cgroup.procs` files to join before anything else (VmCgroup.procsFiles). */
  cgroupProcsFiles: string[];
  limits: { nofile: number; nproc?: number; fsizeBytes?: number };
  /** The hostname inside the jail's UTS namespace; default "hearth-jail". */
  hostname?: string;
}

const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/;

function checkPath(what: string, p: string, opts: { allowRoot?: boolean } = {}): void {
  if (typeof p !== 'string' || /[\0\n\r]/.test(p))
    throw new JailConfigError(`${what} must be a path without NUL or newline characters`);
  if (!isAbsolute(p) || normalize(p) !== p || (p.length > 1 && p.endsWith('/')))
    throw new JailConfigError(`${what} must be an absolute, normalised path: '${p.slice(0, 200)}'`);
  if (p === '/' && !opts.allowRoot) throw new JailConfigError(`${what} cannot be '/'`);
  if (p.length > 3800) throw new JailConfigError(`${what} is too long`);
}

function checkPositiveInt(what: string, n: number | undefined, max: number): void {
  if (n === undefined) return;
  if (!Number.isSafeInteger(n) || n < 1 || n > max)
    throw new JailConfigError(`${what} must be an integer in 1..${max}, not ${n}`);
}

/**
 * The command that runs `binary args...` inside the jail `spec` describes, for spawn(). Spawn it
 * with stdout piped: its first line is `pid <host pid>` (see readJailerPid), and the program's
 * own stdout follows. The jailer's exit code is the program's, or 128+signal if the program was
 * killed; 125 means setup failed and 127 means exec failed.
 *
 * Bind mounts are passed in path order, so a path is mounted before any path below it, whichever
 * list it is in. Throws JailConfigError if a path is not absolute and normalised (no '..', no
 * trailing '/'), is '/', or contains NUL or a newline; if a path is in both readOnly and
 * readWrite; if a device is not under /dev/; if uid or gid is not an integer > 0; if a kept
 * descriptor is not an integer >= 3; or if a limit or the hostname is invalid. Spawning the command also requires root.
 */
export function jailedCommand(
  jailerPath: string,
  spec: JailSpec,
  binary: string,
  args: string[],
): { cmd: string; args: string[] } {
  checkPath('jailer path', jailerPath);
  checkPath('binary', binary);
  checkPath('rootDir', spec.rootDir);
  for (const [what, id] of [
    ['uid', spec.uid],
    ['gid', spec.gid],
  ] as const) {
    if (!Number.isSafeInteger(id) || id < 1 || id > 0xfffffffe)
      throw new JailConfigError(`${what} must be an integer in 1..4294967294 (never root), not ${id}`);
  }
  for (const a of args) {
    if (typeof a !== 'string' || a.includes('\0'))
      throw new JailConfigError('arguments must not contain NUL');
  }
  const binds = new Map<string, 'ro' | 'rw'>();
  for (const [kind, paths] of [
    ['ro', spec.readOnly],
    ['rw', spec.readWrite],
  ] as const) {
    for (const p of paths) {
      checkPath(`${kind} path`, p);
      if (binds.has(p) && binds.get(p) !== kind)
        throw new JailConfigError(`'${p}' is both read-only and read-write`);
      binds.set(p, kind);
    }
  }
  for (const d of spec.devices) {
    checkPath('device', d);
    if (!d.startsWith('/dev/')) throw new JailConfigError(`device '${d}' is not under /dev/`);
  }
  for (const f of spec.cgroupProcsFiles) checkPath('cgroup.procs file', f);
  for (const fd of spec.keepFds ?? []) {
    if (!Number.isSafeInteger(fd) || fd < 3 || fd > 1 << 20)
      throw new JailConfigError(`keepFds entries must be integers in 3..${1 << 20}, not ${fd}`);
  }
  if (spec.netnsPath !== undefined) checkPath('netnsPath', spec.netnsPath);
  checkPositiveInt('limits.nofile', spec.limits.nofile, 1 << 30);
  checkPositiveInt('limits.nproc', spec.limits.nproc, 1 << 30);
  checkPositiveInt('limits.fsizeBytes', spec.limits.fsizeBytes, Number.MAX_SAFE_INTEGER);
  if (spec.hostname !== undefined && !HOSTNAME.test(spec.hostname))
    throw new JailConfigError(`invalid hostname '${String(spec.hostname).slice(0, 80)}'`);

  const out: string[] = [];
  if (spec.netnsPath !== undefined) out.push('--netns', spec.netnsPath);
  out.push('--uid', String(spec.uid), '--gid', String(spec.gid));
  for (const f of spec.cgroupProcsFiles) out.push('--cgroup-procs', f);
  out.push('--root', spec.rootDir);
  // A prefix sorts before its extensions ('/a' < '/a/b'), so parents are mounted first.
  for (const p of [...binds.keys()].sort()) out.push(binds.get(p) === 'ro' ? '--ro' : '--rw', p);
  for (const d of new Set(spec.devices)) out.push('--dev', d);
  for (const fd of new Set(spec.keepFds ?? [])) out.push('--keep-fd', String(fd));
  out.push('--nofile', String(spec.limits.nofile));
  if (spec.limits.nproc !== undefined) out.push('--nproc', String(spec.limits.nproc));
  if (spec.limits.fsizeBytes !== undefined) out.push('--fsize', String(spec.limits.fsizeBytes));
  if (spec.hostname !== undefined) out.push('--hostname', spec.hostname);
  out.push('--', binary, ...args);
  return { cmd: jailerPath, args: out };
}

const MAX_PID_LINE = 64;

/**
 * Reads hearth-jailer's first stdout line, `pid <N>`, and returns N, the jailed program's pid in
 * the host's pid namespace (kill it, read /proc/N, etc.).
 * Preconditions: `stdout` is the jailer's stdout (a pipe) and nothing else has consumed it or is
 * listening to it (no 'data' listener): this reads in paused mode.
 * Effects: the bytes after the pid line (the program's first output) are pushed back with
 * unshift(), so a reader attached afterwards sees them. The stream is left paused.
 * Rejects with JailStartError (code JAIL_START_FAILED) if the stream ends or errors before a full
 * line arrives (setup failed: the reason is on the jailer's stderr), if the line is malformed,
 * or after `timeoutMs`.
 */
export function readJailerPid(stdout: NodeJS.ReadableStream, timeoutMs: number): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err: Error | undefined, pid?: number) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stdout.removeListener('readable', onReadable);
      stdout.removeListener('end', onEnd);
      stdout.removeListener('error', onError);
      if (err) reject(err);
      else resolve(pid!);
    };
    const onReadable = () => {
      let chunk: string | Buffer | null;
      while (!done && (chunk = stdout.read()) !== null) {
        buf = Buffer.concat([buf, typeof chunk === 'string' ? Buffer.from(chunk) : chunk]);
        const nl = buf.indexOf(0x0a);
        if (nl < 0) {
          if (buf.length > MAX_PID_LINE)
            finish(new JailStartError(`hearth-jailer printed '${printable(buf)}' instead of 'pid N'`));
          continue;
        }
        const line = buf.subarray(0, nl).toString('latin1');
        const rest = buf.subarray(nl + 1);
        const m = /^pid ([1-9][0-9]{0,9})$/.exec(line);
        if (rest.length > 0) stdout.unshift(rest);
        if (!m) finish(new JailStartError(`hearth-jailer printed '${printable(line)}' instead of 'pid N'`));
        else finish(undefined, Number(m[1]));
      }
    };
    const onEnd = () =>
      finish(new JailStartError('hearth-jailer exited before reporting the jailed pid (see its stderr)'));
    const onError = (e: Error) =>
      finish(new JailStartError(`reading hearth-jailer's stdout failed: ${e.message}`, { cause: e }));
    const timer = setTimeout(
      () => finish(new JailStartError(`hearth-jailer did not report the jailed pid within ${timeoutMs} ms`)),
      timeoutMs,
    );
    stdout.on('readable', onReadable);
    stdout.on('end', onEnd);
    stdout.on('error', onError);
  });
}

function printable(s: Buffer | string): string {
  return (typeof s === 'string' ? s : s.toString('latin1'))
    .slice(0, MAX_PID_LINE)
    .replace(/[^\x20-\x7e]/g, '?');
}
