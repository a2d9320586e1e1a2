import { spawn } from 'node:child_process';
import { existsSync, constants as fsc } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { release } from 'node:os';
import { writeFileAtomic } from '../util/fs-atomic.js';
import { run } from '../util/exec.js';
import type { Logger } from '../util/log.js';
import { AcceleratorUnavailableError } from './errors.js';
import { cpuModel, defaultCmdline, tcgTscArgs, type Accelerator } from './qemu-args.js';
import { QEMU_BINARY } from './qemu-process.js';

export interface AccelChoice {
  accel: Accelerator;
  /** Why this accelerator was chosen, in words (also logged). */
  reason: string;
  /** Milliseconds the chosen accelerator took to boot the probe guest to userspace. */
  probeBootMs?: number;
  /** What the cached result is valid for. */
  hostKey: string;
  probedAt: string;
}

export type AccelSetting = 'auto' | Accelerator;

/** How long a KVM guest may take to reach userspace before KVM is declared unusable. */
export const KVM_PROBE_DEADLINE_MS = 15_000;
/** How long the TCG fallback may take (it is slow, but must work). */
export const TCG_PROBE_DEADLINE_MS = 60_000;
const PROBE_MARKER = 'HEARTH_PROBE_OK';

export async function qemuVersion(): Promise<string> {
  const out = (await run(QEMU_BINARY, ['--version'])).stdout;
  return /version (\S+)/.exec(out)?.[1] ?? 'unknown';
}

/**
 * What a cached probe result holds for: kernel, QEMU, CPU, and whether /dev/kvm exists and this
 * user may open it (a Hearth without root may not, where root's probe chose KVM).
 */
async function hostKey(): Promise<string> {
  const cpu =
    /model name\s*:\s*(.*)/.exec(await readFile('/proc/cpuinfo', 'utf8').catch(() => ''))?.[1] ?? '?';
  let kvm = 'no-kvm-dev';
  if (existsSync('/dev/kvm'))
    kvm = await access('/dev/kvm', fsc.R_OK | fsc.W_OK).then(
      () => 'kvm-dev',
      () => 'kvm-dev-no-access',
    );
  return [release(), await qemuVersion(), cpu, kvm].join('|');
}

/** How a probe boot ended: its duration when the guest reached userspace, else its console's last lines. */
export type ProbeResult = { ms: number } | { ms?: undefined; consoleTail: string };

/**
 * Boots the real guest kernel and initramfs with `hearth.probe` (stage1 prints a marker and powers
 * off), with the CPU model and kernel arguments real guests get, and reports how long it took, or
 * the console's last lines if it did not get there before the deadline.
 */
export async function probeBoot(
  accel: Accelerator,
  kernel: string,
  initrd: string,
  deadlineMs: number,
): Promise<ProbeResult> {
  const accelArgs = ['-accel', accel, '-cpu', cpuModel(accel)];
  const args = [
    '-machine',
    'microvm,x-option-roms=off,isa-serial=on',
    ...accelArgs,
    '-m',
    '256M',
    '-smp',
    '1',
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-kernel',
    kernel,
    '-initrd',
    initrd,
    '-append',
    defaultCmdline([...(accel === 'tcg' ? tcgTscArgs() : []), 'hearth.probe']),
    '-serial',
    'stdio',
  ];
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(QEMU_BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(ok ? { ms: Date.now() - t0 } : { consoleTail: out.trim().split('\n').slice(-8).join('\n') });
    };
    const timer = setTimeout(() => finish(false), deadlineMs);
    const collect = (b: Buffer) => {
      out = (out + b.toString()).slice(-8_000);
      if (out.includes(PROBE_MARKER)) finish(true);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('exit', () => finish(out.includes(PROBE_MARKER)));
    child.on('error', (e) => {
      out += `\n${e.message}`;
      finish(false);
    });
  });
}

/**
 * Chooses KVM or TCG. KVM is used only if a real guest boots with it within KVM_PROBE_DEADLINE_MS:
 * the device existing is not enough (nested paravirtual KVM can hang a guest forever in early boot).
 * The result is cached per host (kernel, QEMU version, CPU) in `cacheFile`. `setting` overrides.
 */
export async function chooseAccelerator(opts: {
  setting: AccelSetting;
  cacheFile: string;
  kernel: string;
  initrd: string;
  log: Logger;
}): Promise<AccelChoice> {
  const key = await hostKey();
  const now = new Date().toISOString();
  if (opts.setting !== 'auto') {
    const choice = {
      accel: opts.setting,
      reason: `forced by configuration (accelerator=${opts.setting})`,
      hostKey: key,
      probedAt: now,
    };
    opts.log.info('accelerator chosen', { accel: choice.accel, reason: choice.reason });
    return choice;
  }
  if (existsSync(opts.cacheFile)) {
    const cached = JSON.parse(await readFile(opts.cacheFile, 'utf8')) as AccelChoice;
    if (cached.hostKey === key) {
      opts.log.info('accelerator chosen', { accel: cached.accel, reason: cached.reason, cached: true });
      return cached;
    }
  }
  let choice: AccelChoice | undefined;
  let kvmUsable = false;
  try {
    await access('/dev/kvm', fsc.R_OK | fsc.W_OK);
    kvmUsable = true;
  } catch {
    /* no usable /dev/kvm */
  }
  if (kvmUsable) {
    const { ms } = await probeBoot('kvm', opts.kernel, opts.initrd, KVM_PROBE_DEADLINE_MS);
    if (ms !== undefined) {
      choice = {
        accel: 'kvm',
        reason: `a KVM guest reached userspace in ${ms} ms`,
        probeBootMs: ms,
        hostKey: key,
        probedAt: now,
      };
    }
  }
  if (!choice) {
    const probe = await probeBoot('tcg', opts.kernel, opts.initrd, TCG_PROBE_DEADLINE_MS);
    const ms = probe.ms;
    if (ms === undefined)
      throw new AcceleratorUnavailableError(
        `neither KVM nor TCG booted the probe guest (TCG deadline ${TCG_PROBE_DEADLINE_MS} ms); its console ended with:\n${'consoleTail' in probe ? probe.consoleTail : ''}`,
      );
    const why = kvmUsable
      ? `/dev/kvm exists but a KVM guest did not reach userspace within ${KVM_PROBE_DEADLINE_MS} ms (nested or paravirtual KVM?); using TCG software emulation, which booted in ${ms} ms`
      : `/dev/kvm is absent or not accessible; using TCG software emulation, which booted in ${ms} ms`;
    choice = { accel: 'tcg', reason: why, probeBootMs: ms, hostKey: key, probedAt: now };
  }
  await writeFileAtomic(opts.cacheFile, JSON.stringify(choice, null, 2));
  opts.log.info('accelerator chosen', { accel: choice.accel, reason: choice.reason });
  return choice;
}
