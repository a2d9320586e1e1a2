/**
 * QEMU command lines for Hearth's microVMs. A template and every process restored from it must be
 * started with the same machine and devices (QEMU restores device state by name and order), so
 * everything that shapes the machine lives in MachineConfig and everything per-process in
 * ProcessPaths.
 */
import { readFileSync } from 'node:fs';
import { slirpNetdevArg, USER_NETDEV_ID } from '../net/user-network.js';
import type { NetworkMode } from '../net/vm-networks.js';

export type Accelerator = 'kvm' | 'tcg';

export interface MachineConfig {
  memoryMiB: number;
  vcpus: number;
  accel: Accelerator;
  /** bzImage booted with -kernel. */
  kernelPath: string;
  /** The exact initrd the guest booted with (kept with the template; restores pass it again). */
  initrdPath: string;
  cmdline: string;
  /** Cap on TCG's translated-code cache, MiB (each VM holds up to this much extra RSS). */
  tcgCacheMiB: number;
  /** Whether the VM has a network device (the tap is created by net/ before QEMU starts). */
  network: boolean;
  /**
   * What backs the network device: a tap in the VM's namespace ('namespaces'; also when absent, in
   * records made before user-mode networking existed) or QEMU's user-mode stack ('user-mode'). Part
   * of the machine: a snapshot holds the backend's state (a 'slirp' section for user-mode).
   */
  networkMode?: NetworkMode;
}

export interface ProcessPaths {
  /** Guest RAM file. share=on: QEMU writes guest RAM into it; share=off: private copy-on-write map of it. */
  memoryFile: string;
  memoryShared: boolean;
  rootDisk: string;
  qmpSocket: string;
  agentSocket: string;
  controlSocket: string;
  consoleLog: string;
  tapName?: string;
  macAddress?: string;
  /** Start paused, waiting for `migrate-incoming` (a restore). */
  incoming: boolean;
}

/**
 * QEMU's seccomp filter, installed before any guest code runs: no obsolete system calls, no
 * set*uid/gid, no fork or exec, no scheduler or priority changes. A guest that escapes into QEMU
 * cannot start programs or regain privileges.
 */
export const QEMU_SECCOMP_POLICY = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

export const GUEST_AGENT_PORT = 'org.qemu.guest_agent.0';
export const GUEST_CONTROL_PORT = 'org.hearth.ctl.0';

/** Kernel command line for Hearth guests: serial console, quiet, no probing of absent hardware. */
export function defaultCmdline(extra: string[] = []): string {
  return [
    'console=ttyS0',
    'quiet',
    'loglevel=3',
    'panic=-1',
    'reboot=t',
    'pci=off',
    'i8042.noaux',
    'i8042.nomux',
    'i8042.nopnp',
    'i8042.dumbkbd',
    '8250.nr_uarts=1',
    'random.trust_cpu=on',
    'no_timer_check',
    'tsc=reliable',
    ...extra,
  ].join(' ');
}

/**
 * The guest CPU under TCG: QEMU's default model plus ARAT (the local APIC timer keeps running in
 * idle states). Without ARAT, Linux marks the APIC timer C3STOP and, having no broadcast timer on
 * `microvm`, never leaves the periodic tick: every idle guest then takes 250 timer interrupts a
 * second, which under TCG cost ~3% of a host core per idle VM.
 */
export const TCG_CPU_MODEL = 'qemu64,+arat';

/**
 * Under TCG the guest's TSC is the host's. Told its frequency, the guest kernel skips calibrating
 * it against the PIT: on a busy host (several TCG vCPUs per core) that calibration fails, and with
 * no HPET or PM timer on `-M microvm` the kernel marks the TSC unstable and hangs in early boot
 * (seen as "tsc: Unable to calibrate against PIT" as the last console line).
 */
export function tcgTscArgs(): string[] {
  const khz = hostTscKhz();
  return khz ? [`tsc_early_khz=${khz}`] : [];
}

/** The host's TSC frequency, kHz, from /proc/cpuinfo when the CPU says it is constant; else undefined. */
function hostTscKhz(): number | undefined {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const flags = /^flags\s*:(.*)$/m.exec(info)?.[1] ?? '';
    if (!/\bconstant_tsc\b/.test(flags) || !/\bnonstop_tsc\b/.test(flags)) return undefined;
    const mhz = Number(/^cpu MHz\s*:\s*([\d.]+)$/m.exec(info)?.[1]);
    return Number.isFinite(mhz) && mhz > 100 ? Math.round(mhz * 1000) : undefined;
  } catch {
    return undefined;
  }
}

/** The -cpu model for an accelerator (part of a snapshot's machine fingerprint). */
export function cpuModel(accel: Accelerator): string {
  return accel === 'kvm' ? 'host,-arch-capabilities' : TCG_CPU_MODEL;
}

function accelArgs(m: MachineConfig): string[] {
  if (m.accel === 'kvm') return ['-accel', 'kvm', '-cpu', cpuModel('kvm')];
  return ['-accel', `tcg,tb-size=${m.tcgCacheMiB}`, '-cpu', cpuModel('tcg')];
}

export function qemuArgs(vmId: string, m: MachineConfig, p: ProcessPaths): string[] {
  const args = [
    '-name',
    `hearth-${vmId},debug-threads=on`,
    '-machine',
    'microvm,x-option-roms=off,isa-serial=on,rtc=on,suppress-vmdesc=on,memory-backend=ram',
    ...accelArgs(m),
    '-smp',
    String(m.vcpus),
    '-m',
    `${m.memoryMiB}M`,
    '-object',
    `memory-backend-file,id=ram,size=${m.memoryMiB}M,mem-path=${p.memoryFile},share=${p.memoryShared ? 'on' : 'off'}`,
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-msg',
    'timestamp=on',
    '-kernel',
    m.kernelPath,
    '-initrd',
    m.initrdPath,
    '-append',
    m.cmdline,
    '-chardev',
    `file,id=console,path=${p.consoleLog},append=on`,
    '-serial',
    'chardev:console',
    '-qmp',
    `unix:${p.qmpSocket},server=on,wait=off`,
    '-device',
    'virtio-serial-device,max_ports=4',
    '-chardev',
    `socket,id=agent,path=${p.agentSocket},server=on,wait=off`,
    '-device',
    `virtserialport,chardev=agent,name=${GUEST_AGENT_PORT}`,
    '-chardev',
    `socket,id=control,path=${p.controlSocket},server=on,wait=off`,
    '-device',
    `virtserialport,chardev=control,name=${GUEST_CONTROL_PORT}`,
    '-drive',
    `if=none,id=root,file=${p.rootDisk},format=qcow2,cache=writeback,discard=unmap,aio=threads`,
    '-device',
    'virtio-blk-device,drive=root',
    '-object',
    'rng-random,id=rng,filename=/dev/urandom',
    '-device',
    'virtio-rng-device,rng=rng',
    // Restores load a device-state-only stream (xen-save-devices-state), which has no configuration section.
    '-global',
    'migration.send-configuration=off',
    // No self-announce after a restore's load: QEMU would otherwise have the guest send gratuitous
    // ARP, IPv6 neighbour adverts and MLD reports in five rounds over its first second (virtio-net's
    // guest_announce). A restored VM is on a new tap that no switch has learned; the host side
    // resolves the guest's address when it first needs it. Under TCG the announce cost ~1,200
    // translated blocks per restore (~6% of the restore's guest work), measured.
    '-global',
    'migration.announce-rounds=0',
    '-sandbox',
    QEMU_SECCOMP_POLICY,
  ];
  if (m.network && m.networkMode === 'user-mode') {
    if (!p.macAddress) throw new TypeError('a networked machine needs macAddress');
    args.push(
      '-netdev',
      slirpNetdevArg(USER_NETDEV_ID),
      '-device',
      `virtio-net-device,netdev=${USER_NETDEV_ID},mac=${p.macAddress}`,
    );
  } else if (m.network) {
    if (!p.tapName || !p.macAddress) throw new TypeError('a networked machine needs tapName and macAddress');
    args.push(
      '-netdev',
      `tap,id=net0,ifname=${p.tapName},script=no,downscript=no,vhost=off`,
      '-device',
      `virtio-net-device,netdev=net0,mac=${p.macAddress}`,
    );
  }
  if (p.incoming) args.push('-incoming', 'defer', '-S');
  return args;
}
