import type { VmCgroup } from '../jail/cgroups.js';
import { readFile } from 'node:fs/promises';
import type { Logger } from '../util/log.js';
import type { WorkloadSpec } from '../guest/workload-config.js';
import { FORWARD_HOST_ADDRESS } from '../net/user-network.js';
import type { EgressPolicy } from '../net/policy.js';
import type { VmNetwork } from '../net/vm-networks.js';
import { waitForTcp } from '../util/net-wait.js';
import { InvalidVmStateError } from './errors.js';
import { GuestAgentClient } from './guest-agent-client.js';
import { GuestControlClient } from './guest-control.js';
import { waitForGuestListener } from './guest-ports.js';
import { PortForwards, type TcpEndpoint } from './port-forwards.js';
import type { MachineConfig } from './qemu-args.js';
import type { QemuProcess } from './qemu-process.js';
import type { QmpClient } from './qmp-client.js';
import type { VmLayout } from './vm-layout.js';

/**
 * Engine-level VM states. (The control plane maps these onto the API's PENDING/RUNNING/SUSPENDING/
 * SUSPENDED/TERMINATING/TERMINATED.)
 */
export type VmState = 'starting' | 'running' | 'suspending' | 'suspended' | 'stopping' | 'stopped' | 'failed';

export type VmOrigin = { kind: 'boot' } | { kind: 'clone'; templateId: string };

/** What is known about a VM for its whole life, written to vm.json when it is created. */
export interface VmRecord {
  id: string;
  createdAt: string;
  origin: VmOrigin;
  machine: MachineConfig;
  hostname: string;
  /** 32 hex digits, the VM's /etc/machine-id. */
  machineId: string;
  workload?: WorkloadSpec;
  /** What the guest may reach, for its whole life (absent: nothing, as DENY_ALL_EGRESS). */
  egress?: EgressPolicy;
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on every Linux Hearth runs on). */
const USER_HZ = 100;

/** A QEMU process's use of the host, from /proc (see MicroVm.processUsage). */
export interface ProcessUsage {
  /** MicroVm.instance of the process measured: a new process starts counting from zero. */
  processInstance: number;
  /** CPU time (user + system, all threads) since the process started, seconds (10 ms steps). */
  cpuSeconds: number;
  /** How long the process has existed, seconds. */
  ageSeconds: number;
  /** Resident memory now, bytes (guest RAM it touched, shared template pages included). */
  rssBytes: number;
}

/** A microVM on this host: the handle the engine hands out for a running (or suspended) VM. */
export class MicroVm {
  state: VmState;
  /** Why the VM is failed or stopped, when it is. */
  stateReason: string | undefined;
  process: QemuProcess | undefined;
  qmp: QmpClient | undefined;
  network: VmNetwork | undefined;
  /** Number of the newest committed suspend snapshot (0: none). */
  generation = 0;
  /** Number of the disk layer the running guest writes to. */
  activeLayer = 1;
  /** Changes every time a QEMU process starts for this VM (clone, resume, adoption). */
  instance = 0;
  /** The control group of its current QEMU process, while one runs (when cgroups are on). */
  cgroup: VmCgroup | undefined;
  /** Set on a VM adopted from an earlier engine: QEMU's run status then (e.g. 'paused'), until revived. */
  adoptedStatus: string | undefined;
  /** Host forwards to guest ports (user-mode networking only), kept across its QEMU processes. */
  readonly forwards: PortForwards;
  private agentClient: GuestAgentClient | undefined;
  private controlClient: GuestControlClient | undefined;

  constructor(
    readonly record: VmRecord,
    readonly layout: VmLayout,
    readonly log: Logger,
    state: VmState,
  ) {
    this.state = state;
    this.forwards = new PortForwards(record.id);
  }

  get id(): string {
    return this.record.id;
  }

  /**
   * The host address of the VM's endpoint, while it runs: with network namespaces its guest ports
   * are there at the same numbers; with user-mode networking it is 127.0.0.1, where forwards listen
   * on ports of their own. To reach a guest port, ask tcpEndpoint.
   */
  get hostAddress(): string | undefined {
    if (this.state !== 'running' || !this.network) return undefined;
    return this.network.kind === 'user' ? FORWARD_HOST_ADDRESS : this.network.endpointIp;
  }

  /**
   * Where the host connects to reach TCP port `guestPort` of the guest: the namespace's endpoint
   * address and the same port; with user-mode networking, a forward on 127.0.0.1 (added now if the
   * port has none yet). Precondition: QEMU runs (from launch until stop, suspend or kill), else
   * InvalidVmStateError; PortForwardError if QEMU does not add the forward.
   */
  async tcpEndpoint(guestPort: number): Promise<TcpEndpoint> {
    const net = this.network;
    if (!net || !this.process || this.process.hasExited)
      throw new InvalidVmStateError(this.id, 'reach a port of', this.state, ['running']);
    if (net.kind === 'user') return this.forwards.endpoint(guestPort);
    if (!Number.isInteger(guestPort) || guestPort < 1 || guestPort > 65_535)
      throw new RangeError(`guest port must be an integer in 1..65535, not ${guestPort}`);
    return { host: net.endpointIp, port: guestPort };
  }

  /**
   * Resolves with the endpoint of guest TCP port `guestPort` once the guest accepts connections on
   * it from the host, or rejects after `timeoutMs` (at once with QEMU's error if QEMU exits). With
   * user-mode networking, a connection to a forward succeeds whatever the guest does, so this asks
   * the guest whether something listens there (see guest-ports.ts).
   */
  async waitForPort(guestPort: number, timeoutMs: number): Promise<TcpEndpoint> {
    const deadline = Date.now() + timeoutMs;
    const abort = () => this.process?.exitError();
    if (this.network?.kind === 'user') {
      await waitForGuestListener((ms) => this.agent(ms), guestPort, deadline, abort);
      return this.tcpEndpoint(guestPort);
    }
    const at = await this.tcpEndpoint(guestPort);
    await waitForTcp(at.host, at.port, Math.max(1, deadline - Date.now()), abort);
    return at;
  }

  /** The guest agent (qemu-ga), connected on first use. Only while the VM runs. */
  async agent(timeoutMs = 30_000): Promise<GuestAgentClient> {
    if (!this.agentClient) {
      this.agentClient = await GuestAgentClient.connect(this.layout.agentSocket, {
        timeoutMs,
        abort: () => this.process?.exitError(),
      });
    }
    return this.agentClient;
  }

  /** hearth-init's control port, connected on first use. Only while the VM runs. */
  async control(timeoutMs = 30_000): Promise<GuestControlClient> {
    if (!this.controlClient) {
      this.controlClient = await GuestControlClient.connect(this.layout.controlSocket, {
        timeoutMs,
        abort: () => this.process?.exitError(),
      });
    }
    return this.controlClient;
  }

  /**
   * What its QEMU process has used so far (all threads; it starts no children): CPU time and
   * resident memory. Undefined when no QEMU runs for it.
   */
  async processUsage(): Promise<ProcessUsage | undefined> {
    const p = this.process;
    if (!p || p.hasExited) return undefined;
    try {
      const stat = await readFile(`/proc/${p.pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const status = await readFile(`/proc/${p.pid}/status`, 'utf8');
      const uptimeS = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
      return {
        processInstance: this.instance,
        cpuSeconds: (Number(f[11]) + Number(f[12])) / USER_HZ,
        ageSeconds: Math.max(0, uptimeS - Number(f[19]) / USER_HZ),
        rssBytes: Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? 0) * 1024,
      };
    } catch {
      return undefined; // it exited meanwhile
    }
  }

  /** The last `lines` lines the guest printed on its console. */
  async consoleTail(lines = 20): Promise<string> {
    const text = await readFile(this.layout.consoleLog, 'utf8').catch(() => '');
    return text
      .split('\n')
      .slice(-lines - 1)
      .join('\n');
  }

  /**
   * The error to report for a failed operation: when a guest channel closed because QEMU died, the
   * exit may not have been observed yet, so wait briefly for it and prefer QEMU's own message.
   */
  async explain(e: unknown): Promise<unknown> {
    const p = this.process;
    if (!p) return e;
    if (!p.hasExited) await Promise.race([p.exited, new Promise((r) => setTimeout(r, 1_000))]);
    return p.exitError() ?? e;
  }

  /** Closes the host's connection to the guest agent, if any (the next agent() reconnects). */
  closeAgent(): void {
    this.agentClient?.close();
    this.agentClient = undefined;
  }

  /** Closes the host-side connections to this VM's QEMU (not the VM itself). */
  disconnect(): void {
    this.closeAgent();
    this.controlClient?.close();
    this.qmp?.close();
    this.controlClient = undefined;
    this.qmp = undefined;
  }
}
