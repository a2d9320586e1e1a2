/**
 * Host forwards of a VM with user-mode networking (src/net/user-network.ts): the host reaches guest
 * port P at 127.0.0.1:<a port QEMU listens on>. Forwards are added on demand, the first time
 * something asks for a guest port (app port, hook port, a token's port through the gateway), and
 * live as long as the QEMU process: they go when it exits (stop, suspend, kill), and the forwards a
 * VM had are added again to the next QEMU process of a restore, on the same host ports when those
 * are still free.
 *
 * A forward is added with host port 0 (the kernel picks a free port as QEMU binds it, so two
 * processes never race for one), then QEMU's connection table (`info usernet`) tells which port it
 * got. Adds are serialised per VM, so a new forward is the one entry for its guest port that is not
 * known yet.
 */
import { HearthError } from '../errors.js';
import {
  FORWARD_HOST_ADDRESS,
  hostfwdAddCommand,
  parseUsernetForwards,
  type UsernetForward,
} from '../net/user-network.js';
import { Mutex } from '../util/mutex.js';

/** Where the host connects to reach one TCP port of a guest. */
export interface TcpEndpoint {
  host: string;
  port: number;
}

/** Sends one human monitor command to the VM's QEMU and resolves with its output. */
export type HmpCommand = (commandLine: string) => Promise<string>;

/** QEMU did not set up a forward to a guest port. */
export class PortForwardError extends HearthError {
  readonly code = 'VMM_PORT_FORWARD_FAILED';
  constructor(vmId: string, guestPort: number, detail: string, options?: { cause?: unknown }) {
    super(`could not forward a host port to port ${guestPort} of VM ${vmId}: ${detail}`, {
      ...options,
      hint: 'the VM may have stopped meanwhile; if it runs, see its qemu.log (user-mode networking needs libslirp in QEMU)',
    });
  }
}

/** The forwards of one VM, kept across its QEMU processes (see the module doc). */
export class PortForwards {
  private hmp: HmpCommand | undefined;
  /** Changes at every attach and detach: an add of an earlier process never lands in a later one. */
  private epoch = 0;
  private readonly mutex = new Mutex();
  /** Forwards of the current process, by guest port (promises: concurrent askers share one add). */
  private readonly current = new Map<number, Promise<number>>();
  /** Host ports of the current process's forwards that are in place, by guest port. */
  private readonly placed = new Map<number, number>();
  /** The forwards the VM had, by guest port: re-created for the next process. */
  private wanted = new Map<number, number>();

  constructor(private readonly vmId: string) {}

  /** Guest port -> host port of the forwards in place now. */
  get ports(): ReadonlyMap<number, number> {
    return this.placed;
  }

  /**
   * Binds the forwards to a new QEMU process (`hmp` talks to it). With `restore`, every forward
   * the VM had is added again now, preferring its earlier host port (a restore); with `adopt`,
   * the forwards the process already has (an adopted QEMU) are taken over instead.
   */
  async attach(hmp: HmpCommand, mode: 'fresh' | 'restore' | 'adopt'): Promise<void> {
    this.detach();
    this.hmp = hmp;
    const epoch = this.epoch;
    if (mode === 'adopt') {
      const listed = parseUsernetForwards(await hmp('info usernet'));
      if (epoch !== this.epoch) return;
      for (const f of listed) {
        if (f.hostAddress !== FORWARD_HOST_ADDRESS || this.placed.has(f.guestPort)) continue;
        this.placed.set(f.guestPort, f.hostPort);
        this.current.set(f.guestPort, Promise.resolve(f.hostPort));
      }
      return;
    }
    if (mode === 'restore') {
      const results = await Promise.allSettled([...this.wanted].map(([g, h]) => this.forward(g, h)));
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason; // the others are in place; a failed one is added again on demand
    }
  }

  /**
   * Forgets the current process's forwards (it has exited or is being killed: its listening sockets
   * go with it); they stay wanted for the next process.
   */
  detach(): void {
    for (const [guest, host] of this.placed) this.wanted.set(guest, host);
    this.hmp = undefined;
    this.epoch++;
    this.current.clear();
    this.placed.clear();
  }

  /** Forgets everything, wanted forwards included (the VM is gone). */
  clear(): void {
    this.detach();
    this.wanted = new Map();
  }

  /**
   * The host endpoint of guest TCP port `guestPort`, adding the forward if there is none yet.
   * Precondition: attached (QEMU runs). Throws RangeError for a port outside 1..65535,
   * PortForwardError if QEMU does not add it.
   */
  async endpoint(guestPort: number): Promise<TcpEndpoint> {
    if (!Number.isInteger(guestPort) || guestPort < 1 || guestPort > 65_535)
      throw new RangeError(`guest port must be an integer in 1..65535, not ${guestPort}`);
    return { host: FORWARD_HOST_ADDRESS, port: await this.forward(guestPort, this.wanted.get(guestPort)) };
  }

  private forward(guestPort: number, preferredHostPort: number | undefined): Promise<number> {
    const existing = this.current.get(guestPort);
    if (existing) return existing;
    const epoch = this.epoch;
    const p = this.mutex.run(() => this.add(guestPort, preferredHostPort, epoch));
    this.current.set(guestPort, p);
    p.then(
      (host) => {
        if (this.epoch === epoch) this.placed.set(guestPort, host);
      },
      () => {
        if (this.current.get(guestPort) === p) this.current.delete(guestPort);
      },
    );
    return p;
  }

  private async add(guestPort: number, preferred: number | undefined, epoch: number): Promise<number> {
    const hmp = this.hmp;
    if (!hmp || epoch !== this.epoch)
      throw new PortForwardError(this.vmId, guestPort, 'its QEMU process is not running');
    if (preferred !== undefined) {
      const out = await hmp(hostfwdAddCommand(preferred, guestPort));
      if (out.trim() === '') return preferred;
      // Taken by someone else since: let the kernel pick another one.
    }
    const known = new Set(this.placed.values());
    const out = await hmp(hostfwdAddCommand(0, guestPort));
    if (out.trim() !== '') throw new PortForwardError(this.vmId, guestPort, out.trim());
    const listed: UsernetForward[] = parseUsernetForwards(await hmp('info usernet'));
    const added = listed.find(
      (f) => f.guestPort === guestPort && f.hostAddress === FORWARD_HOST_ADDRESS && !known.has(f.hostPort),
    );
    if (!added)
      throw new PortForwardError(
        this.vmId,
        guestPort,
        "QEMU's connection table does not list the new forward",
      );
    return added.hostPort;
  }
}
