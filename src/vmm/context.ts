import type { DataDir } from '../config/data-dir.js';
import type { VmNetworks } from '../net/vm-networks.js';
import type { HostArtifacts } from '../setup/host-artifacts.js';
import type { Logger } from '../util/log.js';
import type { CgroupManager } from '../jail/cgroups.js';
import type { VerifiedFiles } from './snapshot-manifest.js';
import type { TemplateRam } from './template-ram.js';

/** What every lifecycle operation of the engine needs to know about the host. */
export interface EngineContext {
  dataDir: DataDir;
  artifacts: HostArtifacts;
  log: Logger;
  /** The VMs' networks: namespaces (root) or user-mode (no root); see net/vm-networks.ts. */
  network: VmNetworks;
  verified: VerifiedFiles;
  /** Cap on TCG's code cache per VM, MiB. */
  tcgCacheMiB: number;
  /** Per-VM control groups (memory, pids, CPU limits), or undefined when disabled. */
  cgroups: CgroupManager | undefined;
  /** A VM may use up to this many times its baseline CPU (its memory / 2 GiB of a core). */
  cpuBurstFactor: number;
  /** Deadline for QEMU to create its QMP socket and greet, ms. */
  qmpConnectTimeoutMs: number;
  /**
   * Run each QEMU inside hearth-jailer (its own uid, namespaces, a root of only its files), or
   * undefined to run it plainly (not root, or turned off).
   */
  jail: { jailer: string; rootDir: string } | undefined;
  /** The sealed guest-RAM copies clones of each template map. */
  templateRam: TemplateRam;
}
