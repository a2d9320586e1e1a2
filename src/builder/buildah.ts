import { chmod, chown, mkdir, readdir, readFile, stat } from 'node:fs/promises';
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
  /** Build context: a directory with a Dockerfile at its root, readable by the builder user. */
  contextDir: string;
  /** Tag for the result, e.g. localhost/hearth-build/iv-1234. */
  tag: string;
  buildArgs?: Record<string, string>;
  /** Run every step again instead of reusing cached layers. */
  noCache?: boolean;
  /** Receives every line buildah prints (steps, RUN output, errors). */
  onLog?: (line: string) => void;
  timeoutMs?: number;
}

/** The unprivileged system user builds run as. */
export const BUILDER_USER = 'hearth-builder';
/** Its subordinate uids/gids (from /etc/subuid and /etc/subgid): root inside builds maps here. */
export const BUILDER_SUBID_START = 1879048192;
export const BUILDER_SUBID_COUNT = 65536;
const BUILD_TIMEOUT_MS = 30 * 60_000; // 30 minutes

export interface BuildahOptions {
  /**
   * The user buildah runs as, through runuser (Hearth must be root). Default: `hearth-builder` when
   * Hearth runs as root, else Hearth's own user, directly (a Hearth without root: that user needs a
   * subordinate uid range, see `hearth setup --for-user`).
   */
  user?: string;
}

/**
 * buildah, run rootless as an unprivileged user (`hearth-builder` for a Hearth run as root, else
 * Hearth's own user), with its image storage inside the data directory (overlay driver).
 *
 * Isolation of builds: buildah itself and every RUN step run as that user inside a user namespace
 * where root is one of the user's 65536 subordinate uids: RUN steps get an OCI container (runc,
 * rootless: new mount, pid, ipc, uts namespaces, seccomp, reduced capabilities) and a private
 * network through slirp4netns (outbound NAT only, the host's loopback not reachable). Nothing in a
 * build runs as host root.
 */
export class Buildah {
  readonly home: string;
  readonly storageRoot: string;
  readonly runRoot: string;
  readonly runtimeDir: string;
  /** Scratch space the builder user writes into (exported disks). */
  readonly outDir: string;
  private prepared = false;
  /** Who runs buildah through runuser; undefined: this process's own user, directly. */
  readonly user: string | undefined;

  /** buildah's global options naming Hearth's image storage (before the subcommand). */
  private get storageArgs(): string[] {
    return ['--root', this.storageRoot, '--runroot', this.runRoot, '--storage-driver', 'overlay'];
  }

  constructor(builderDir: string, o: BuildahOptions = {}) {
    this.user = o.user ?? (process.getuid?.() === 0 ? BUILDER_USER : undefined);
    this.home = builderDir;
    this.storageRoot = join(builderDir, 'storage');
    this.runRoot = join(builderDir, 'run');
    this.runtimeDir = join(builderDir, 'xdg');
    this.outDir = join(builderDir, 'out');
  }

  /** The uid and gid buildah runs as. */
  ids(): Promise<{ uid: number; gid: number }> {
    if (this.user === undefined) return Promise.resolve({ uid: process.getuid!(), gid: process.getgid!() });
    return userIds(this.user);
  }

  /** Creates the builder's directories, owned by the user buildah runs as. Idempotent. */
  async prepare(): Promise<void> {
    if (this.prepared) return;
    const { uid, gid } = await this.ids();
    for (const d of [this.home, this.storageRoot, this.runRoot, this.runtimeDir, this.outDir]) {
      await mkdir(d, { recursive: true, mode: 0o700 });
      const st = await stat(d);
      if (st.uid !== uid || st.gid !== gid) await chown(d, uid, gid);
      await chmod(d, 0o700);
    }
    this.prepared = true;
  }

  private command(args: string[]): [string, string[]] {
    const env = [
      `HOME=${this.home}`,
      `XDG_RUNTIME_DIR=${this.runtimeDir}`,
      'PATH=/usr/sbin:/usr/bin:/sbin:/bin',
      'buildah',
      ...this.storageArgs,
      ...args,
    ];
    return this.user === undefined ? ['env', env] : ['runuser', ['-u', this.user, '--', 'env', ...env]];
  }

  /** Runs a buildah subcommand as the user builds run as, with Hearth's storage. */
  async exec(
    args: string[],
    opts: { timeoutMs?: number; onLog?: (line: string) => void; allowFailure?: boolean } = {},
  ): Promise<RunResult> {
    await this.prepare();
    let partial = '';
    const onOutput = opts.onLog
      ? (chunk: string) => {
          partial += chunk;
          const lines = partial.split('\n');
          partial = lines.pop() ?? '';
          for (const l of lines) opts.onLog!(l);
        }
      : undefined;
    const [cmd, argv] = this.command(args);
    try {
      return await run(cmd, argv, {
        timeoutMs: opts.timeoutMs ?? 600_000,
        cwd: this.home,
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
    const args = ['build', '--layers', '--pull=missing', '-f', join(o.contextDir, 'Dockerfile'), '-t', o.tag];
    if (o.noCache) args.push('--no-cache');
    for (const [k, v] of Object.entries(o.buildArgs ?? {})) args.push('--build-arg', `${k}=${v}`);
    args.push(o.contextDir);
    await this.exec(args, {
      timeoutMs: o.timeoutMs ?? BUILD_TIMEOUT_MS,
      ...(o.onLog ? { onLog: o.onLog } : {}),
    });
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
   * Runs `script` (sh) inside the builder's user namespace with the image's root filesystem
   * mounted at "$ROOTFS" (files owned by their in-image uids, as the guest will see them), then
   * removes the working container. `args` become "$1".. of the script.
   */
  async withRootfs(
    ref: string,
    script: string,
    args: string[] = [],
    timeoutMs = 600_000,
  ): Promise<RunResult> {
    const ctr = (await this.exec(['from', '--pull=never', '--quiet', ref])).stdout.trim();
    try {
      const wrapper = `set -e\nROOTFS=$(buildah --root "$HEARTH_ROOT" --runroot "$HEARTH_RUNROOT" --storage-driver overlay mount "$HEARTH_CTR")\nexport ROOTFS\n${script}`;
      const [cmd, argv] = this.command([]);
      const prefix = argv.slice(0, argv.indexOf('buildah'));
      return await run(
        cmd,
        [
          ...prefix,
          `HEARTH_ROOT=${this.storageRoot}`,
          `HEARTH_RUNROOT=${this.runRoot}`,
          `HEARTH_CTR=${ctr}`,
          'buildah',
          ...this.storageArgs,
          'unshare',
          'sh',
          '-c',
          wrapper,
          'sh',
          ...args,
        ],
        { timeoutMs, cwd: this.home },
      );
    } finally {
      await this.exec(['rm', ctr], { allowFailure: true });
    }
  }

  /**
   * Imports a root filesystem tarball (readable by the builder user) as image `ref`, e.g.
   * localhost/hearth/base:bookworm, with the given environment and command.
   */
  async importRootfs(
    tarball: string,
    ref: string,
    config: { env: string[]; cmd: string[]; labels?: Record<string, string> },
  ): Promise<void> {
    const ctr = (await this.exec(['from', '--quiet', 'scratch'])).stdout.trim();
    try {
      await this.exec(['add', '--quiet', ctr, tarball, '/'], { timeoutMs: 600_000 });
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

  /**
   * After a crash: kills buildah (and its RUN steps) still working on this storage for a server that
   * is gone, then removes the working containers they left. Returns how many processes it killed.
   */
  async cleanupAfterCrash(): Promise<number> {
    const { uid } = await this.ids().catch(() => ({ uid: -1 }));
    const killed: number[] = [];
    if (uid >= 0) {
      for (const d of await readdir('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        const st = await stat(`/proc/${d}`).catch(() => undefined);
        if (!st || st.uid !== uid) continue;
        const cmdline = await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '');
        if (!cmdline.includes(this.storageRoot)) continue;
        try {
          process.kill(Number(d), 'SIGKILL');
          killed.push(Number(d));
        } catch {
          /* gone already */
        }
      }
    }
    if (killed.length) await new Promise((r) => setTimeout(r, 200));
    await this.exec(['rm', '--all'], { allowFailure: true });
    return killed.length;
  }
}

/** A user's uid and gid from /etc/passwd; throws if there is no such user (setup creates hearth-builder). */
export async function userIds(user: string): Promise<{ uid: number; gid: number }> {
  const passwd = await readFile('/etc/passwd', 'utf8');
  const line = passwd.split('\n').find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`the user ${user} does not exist: run \`hearth setup\``);
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

/** The last lines of a failed buildah command, for a build's failure reason. */
export function buildFailureDetail(e: unknown): string {
  if (e instanceof CommandFailedError) return e.stderrTail.split('\n').slice(-6).join('\n');
  return (e as Error).message;
}
