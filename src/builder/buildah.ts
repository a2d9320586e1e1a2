import { chmod, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { run, type RunResult } from '../util/exec.js';
import { CommandFailedError } from '../util/errors.js';

/** What a built image's OCI config says about how to run it. */
export interface OciImageConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
  ExposedPorts?: Record<string, unknown>;
  Labels?: Record<string, string> | null;
}

export interface BuildOptions {
  /** Build context: a directory with a Dockerfile at its root. */
  contextDir: string;
  /** Tag for the result, e.g. localhost/hearth-build/iv-1234. */
  tag: string;
  buildArgs?: Record<string, string>;
  /** Receives every line buildah prints (steps, RUN output, errors). */
  onLog?: (line: string) => void;
  timeoutMs?: number;
}

/** Size of the user namespace each build runs in: enough for every uid/gid Debian uses (nobody = 65534). */
const BUILD_USERNS_SIZE = 65536;
/** Start of the subordinate id range setup gives the `containers` user in /etc/subuid and /etc/subgid. */
export const SUBORDINATE_ID_START = 2147483647;
/** Builds running at once get disjoint id ranges: this many fit in the subordinate range. */
const ID_SLOTS = 32768;
const BUILD_TIMEOUT_MS = 30 * 60_000; // 30 minutes

/**
 * buildah, with Hearth's own image storage inside the data directory (overlay driver).
 *
 * Isolation of builds: every RUN step runs in an OCI container (runc: new mount, pid, ipc, uts and
 * network namespaces, default seccomp profile, default capability set) inside its own user namespace:
 * root in the build is an unprivileged range of 65536 host uids and gids (from the `containers`
 * entries in /etc/subuid and /etc/subgid that setup adds; builds running at once get disjoint
 * ranges), never host root.
 */
export class Buildah {
  readonly storageRoot: string;
  readonly runRoot: string;
  private readonly busySlots = new Set<number>();

  constructor(containersDir: string) {
    this.storageRoot = join(containersDir, 'storage');
    this.runRoot = join(containersDir, 'run');
  }

  private globalArgs(): string[] {
    return ['--root', this.storageRoot, '--runroot', this.runRoot, '--storage-driver', 'overlay'];
  }

  /** Runs a buildah subcommand with Hearth's storage. */
  async exec(
    args: string[],
    opts: { timeoutMs?: number; onLog?: (line: string) => void; allowFailure?: boolean } = {},
  ): Promise<RunResult> {
    await mkdir(this.storageRoot, { recursive: true, mode: 0o700 });
    await mkdir(this.runRoot, { recursive: true, mode: 0o700 });
    let partial = '';
    const onOutput = opts.onLog
      ? (chunk: string) => {
          partial += chunk;
          const lines = partial.split('\n');
          partial = lines.pop() ?? '';
          for (const l of lines) opts.onLog!(l);
        }
      : undefined;
    try {
      return await run('buildah', [...this.globalArgs(), ...args], {
        timeoutMs: opts.timeoutMs ?? 600_000,
        ...(onOutput ? { onOutput } : {}),
        ...(opts.allowFailure ? { allowFailure: true } : {}),
      });
    } finally {
      if (partial && opts.onLog) opts.onLog(partial);
    }
  }

  /**
   * Builds the Dockerfile at the root of `contextDir` with layer caching (an unchanged rebuild reuses
   * every layer). Base images are used from local storage when present, else pulled.
   * Throws CommandFailedError (with the last output lines) when the build fails.
   */
  async build(o: BuildOptions): Promise<void> {
    // An explicit map rather than --userns=auto: with auto, buildah 1.28 leaves the image's root
    // directory owned by an unmapped uid, and RUN steps cannot create files in /.
    let slot = 0;
    while (this.busySlots.has(slot)) slot++;
    if (slot >= ID_SLOTS) throw new Error('too many builds at once');
    this.busySlots.add(slot);
    const start = SUBORDINATE_ID_START + slot * BUILD_USERNS_SIZE;
    const map = `0:${start}:${BUILD_USERNS_SIZE}`;
    const args = [
      'build',
      '--layers',
      '--isolation=oci',
      '--userns-uid-map',
      map,
      '--userns-gid-map',
      map,
      '--pull=missing',
      '-f',
      join(o.contextDir, 'Dockerfile'),
      '-t',
      o.tag,
    ];
    for (const [k, v] of Object.entries(o.buildArgs ?? {})) args.push('--build-arg', `${k}=${v}`);
    args.push(o.contextDir);
    try {
      await this.exec(args, {
        timeoutMs: o.timeoutMs ?? BUILD_TIMEOUT_MS,
        ...(o.onLog ? { onLog: o.onLog } : {}),
      });
    } finally {
      this.busySlots.delete(slot);
    }
  }

  async imageExists(ref: string): Promise<boolean> {
    const r = await this.exec(['inspect', '--type', 'image', '--format', '{{.FromImageID}}', ref], {
      allowFailure: true,
    });
    return r.exitCode === 0;
  }

  /** The OCI config of a local image. */
  async imageConfig(ref: string): Promise<OciImageConfig> {
    const r = await this.exec(['inspect', '--type', 'image', ref]);
    const doc = JSON.parse(r.stdout) as { OCIv1?: { config?: OciImageConfig } };
    return doc.OCIv1?.config ?? {};
  }

  /**
   * Mounts a working container of `ref` and calls `fn` with the mount point (the image's root
   * filesystem, owned by real uids), then removes the container.
   */
  async withRootfs<T>(ref: string, fn: (rootfs: string) => Promise<T>): Promise<T> {
    const ctr = (await this.exec(['from', '--pull=never', '--quiet', ref])).stdout.trim();
    try {
      const mnt = (await this.exec(['mount', ctr])).stdout.trim();
      return await fn(mnt);
    } finally {
      await this.exec(['rm', ctr], { allowFailure: true });
    }
  }

  /**
   * Imports a root filesystem tarball as image `ref` (e.g. localhost/hearth/base:bookworm), with
   * the given environment and command.
   */
  async importRootfs(
    tarball: string,
    ref: string,
    config: { env: string[]; cmd: string[]; labels?: Record<string, string> },
  ): Promise<void> {
    const ctr = (await this.exec(['from', '--quiet', 'scratch'])).stdout.trim();
    try {
      await this.exec(['add', '--quiet', ctr, tarball, '/'], { timeoutMs: 600_000 });
      // A scratch container's root directory is 0555; a distribution's root is 0755 (and RUN steps
      // of builds on this image expect to create files in /).
      const mnt = (await this.exec(['mount', ctr])).stdout.trim();
      await chmod(mnt, 0o755);
      await this.exec(['umount', ctr]);
      const cfg = ['config', '--cmd', JSON.stringify(config.cmd)];
      for (const e of config.env) cfg.push('--env', e);
      for (const [k, v] of Object.entries(config.labels ?? {})) cfg.push('--label', `${k}=${v}`);
      await this.exec([...cfg, ctr]);
      await this.exec(['commit', '--quiet', ctr, ref]);
    } finally {
      await this.exec(['rm', ctr], { allowFailure: true });
    }
  }

  /** Removes a local image tag (its layers stay while other images or the cache use them). */
  async removeImage(ref: string): Promise<void> {
    await this.exec(['rmi', ref], { allowFailure: true });
  }

  /** Removes working containers left by an interrupted build or export. */
  async removeAllContainers(): Promise<void> {
    await this.exec(['rm', '--all'], { allowFailure: true });
  }
}

/** The last lines of a failed buildah command, for a build's failure reason. */
export function buildFailureDetail(e: unknown): string {
  if (e instanceof CommandFailedError) return e.stderrTail.split('\n').slice(-6).join('\n');
  return (e as Error).message;
}
