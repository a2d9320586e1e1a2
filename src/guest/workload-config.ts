import { buildCpio } from '../util/cpio.js';

/** What the guest init runs, like a container's ENTRYPOINT/CMD, ENV, WORKDIR and USER. */
export interface WorkloadSpec {
  /** argv[0] is looked up in PATH (from env, else the Debian default). */
  argv: string[];
  /** "NAME=value" entries, in order. */
  env?: string[];
  /** Working directory; default "/". */
  cwd?: string;
  /** "uid", "uid:gid", "name" or "name:group", resolved in the image's /etc/passwd and /etc/group. */
  user?: string;
  /** What init does when the workload exits: keep the VM up (default) or power it off. */
  onExit?: 'keep' | 'poweroff';
}

/** The guest side of the VM's network link. */
export interface GuestNetwork {
  /** Address with prefix, e.g. 172.16.0.2/30. */
  ipCidr: string;
  gateway: string;
  mtu?: number;
}

export interface GuestBootConfig {
  workload?: WorkloadSpec;
  hostname: string;
  network?: GuestNetwork;
}

/** Limits that keep a boot config well inside what the guest init accepts (512 items, small files). */
export const MAX_ARGS = 256;
export const MAX_ENV = 256;
export const MAX_CONFIG_BYTES = 256 * 1024;

function checkValue(what: string, v: string): string {
  if (v.includes('\0')) throw new RangeError(`${what} must not contain NUL bytes`);
  return v;
}

/**
 * Encodes the boot config in the format hearth-init reads from /run/hearth/workload.cfg:
 * NUL-terminated key and value strings, in pairs.
 */
export function encodeBootConfig(cfg: GuestBootConfig): Buffer {
  const pairs: [string, string][] = [['hostname', checkValue('hostname', cfg.hostname)]];
  const w = cfg.workload;
  if (w) {
    if (w.argv.length === 0) throw new RangeError('workload argv must not be empty');
    if (w.argv.length > MAX_ARGS)
      throw new RangeError(`workload argv has ${w.argv.length} items; at most ${MAX_ARGS}`);
    if ((w.env?.length ?? 0) > MAX_ENV)
      throw new RangeError(`workload env has too many items; at most ${MAX_ENV}`);
    for (const a of w.argv) pairs.push(['arg', checkValue('argument', a)]);
    for (const e of w.env ?? []) {
      if (!/^[^=]+=/.test(e))
        throw new RangeError(`environment entry '${e.slice(0, 40)}' must look like NAME=value`);
      pairs.push(['env', checkValue('environment entry', e)]);
    }
    if (w.cwd) pairs.push(['cwd', checkValue('cwd', w.cwd)]);
    if (w.user) pairs.push(['user', checkValue('user', w.user)]);
    if (w.onExit) pairs.push(['on-exit', w.onExit]);
  }
  if (cfg.network) {
    pairs.push(
      ['ip', checkValue('ip', cfg.network.ipCidr)],
      ['gateway', checkValue('gateway', cfg.network.gateway)],
    );
    if (cfg.network.mtu) pairs.push(['mtu', String(cfg.network.mtu)]);
  }
  const buf = Buffer.from(
    pairs
      .flatMap(([k, v]) => [k, v])
      .map((s) => s + '\0')
      .join(''),
  );
  if (buf.length > MAX_CONFIG_BYTES)
    throw new RangeError(`boot config is ${buf.length} bytes; at most ${MAX_CONFIG_BYTES}`);
  return buf;
}

/** The per-boot initramfs archive appended after the generic one: just /hearth/workload.cfg. */
export function bootConfigArchive(cfg: GuestBootConfig): Buffer {
  return buildCpio([
    { path: 'hearth', mode: 0o755 },
    { path: 'hearth/workload.cfg', data: encodeBootConfig(cfg), mode: 0o644 },
  ]);
}
