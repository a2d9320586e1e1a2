import { randomUUID } from 'node:crypto';
import { cpus } from 'node:os';
import { Semaphore } from '../util/semaphore.js';
import { callHook, type HookName } from '../hooks/hook-client.js';
import type { Store } from '../store/database.js';
import type { Page } from '../store/pagination.js';
import type { MicrovmListRequest, MicrovmPatch, MicrovmUpdateOptions } from '../store/microvms.js';
import { faultPoint } from '../util/faults.js';
import type { Logger } from '../util/log.js';
import { Mutex } from '../util/mutex.js';
import type { EgressPolicy } from '../net/policy.js';
import type { Engine } from '../vmm/engine.js';
import type { MicroVm } from '../vmm/microvm.js';
import { ValidationError } from './image-spec.js';
import type { ImageService } from './images.js';
import { oncePerClientToken } from './client-token.js';
import { ingressModeOf } from './connector-arns.js';
import type { NetworkConnectorService } from './network-connectors.js';
import {
  InsufficientCapacityError,
  MicrovmNotFoundError,
  MicrovmStateConflictError,
  QuotaExceededError,
} from './errors.js';
import type { IdlePolicy, ImageVersionRecord, MicrovmRecord, MicrovmState } from './model.js';
import { emptyUsage, UsageMeter, type MicrovmUsage } from './usage.js';

/** What RunMicrovm asks for (validated for shape and ranges by the API layer). */
export interface RunInput {
  imageIdentifier: string;
  imageVersion?: string;
  idlePolicy?: IdlePolicy;
  maximumDurationInSeconds?: number;
  runHookPayload?: string;
  ingressNetworkConnectors?: string[];
  egressNetworkConnectors?: string[];
  clientToken?: string;
}

/** Limits and timings of the microVM lifecycle; every one is a server setting. */
export interface MicrovmLimits {
  /** microVMs not TERMINATED at once. */
  maxMicrovms: number;
  /** Sum of baseline memory of RUNNING, SUSPENDING, SUSPENDED and PENDING microVMs, MiB. */
  maxMemoryMiB: number;
  /** Smallest maxIdleDurationSeconds accepted (the reference service: 60; tests lower it). */
  minIdleSeconds: number;
  /** maximumDurationInSeconds when RunMicrovm gives none (the largest allowed: 8 h). */
  defaultMaxDurationSeconds: number;
  /** How long TERMINATED microVMs stay visible. At least 600 (10 minutes). */
  terminatedRetentionSeconds: number;
  /** How often idle, suspended-TTL and maximum-duration deadlines are checked. */
  checkIntervalMs: number;
  /** Timeout of a runtime hook whose configuration gives none, seconds. */
  defaultHookTimeoutS: number;
  /**
   * Launches and resumes that restore VMs at once; the others wait their turn. Restores are
   * CPU-bound (above all under TCG): running a few at a time finishes each sooner than running all.
   */
  maxConcurrentRestores: number;
}

export const DEFAULT_MICROVM_LIMITS: MicrovmLimits = {
  maxMicrovms: 100,
  maxMemoryMiB: 256 * 1024,
  minIdleSeconds: 60,
  defaultMaxDurationSeconds: 28_800, // 8 hours
  terminatedRetentionSeconds: 3_600, // 1 hour
  checkIntervalMs: 1_000,
  defaultHookTimeoutS: 10,
  maxConcurrentRestores: Math.max(2, cpus().length),
};

/** What a token for a microVM's endpoint may reach. */
export type AllowedPort =
  { port: number } | { range: { startPort: number; endPort: number } } | { allPorts: Record<string, never> };

export interface TokenMinter {
  mint(o: {
    microvmId: string;
    allowedPorts: AllowedPort[];
    expirationInMinutes: number;
    generation: number;
  }): Promise<string>;
}

export interface MicrovmServiceOptions {
  store: Store;
  engine: Engine;
  images: ImageService;
  /** Resolves RunMicrovm's connector lists into the guest's egress policy. */
  connectors: NetworkConnectorService;
  log: Logger;
  limits?: Partial<MicrovmLimits>;
  /** The endpoint host of a microVM (no scheme), e.g. <id>.microvm.localhost:8443. */
  endpointFor: (microvmId: string) => string;
  tokens?: TokenMinter;
  /** Called before a microVM is suspended or terminated: the gateway closes its connections. */
  closeConnections?: (microvmId: string) => Promise<void> | void;
  now?: () => number;
}

export interface ActivityEvent {
  kind: 'request' | 'bytes' | 'stream-open' | 'stream-close';
  bytes?: number;
}

/** A microVM as the API returns it: the record plus its endpoint and image ARN. */
export interface MicrovmView extends MicrovmRecord {
  endpoint: string;
  imageArn: string;
}

/** How often a running microVM's usage is written to the store (it is sampled every check). */
const USAGE_SAVE_INTERVAL_MS = 60_000;

const ACTIVE_STATES: readonly MicrovmState[] = [
  'PENDING',
  'RUNNING',
  'SUSPENDING',
  'SUSPENDED',
  'TERMINATING',
];

/**
 * The lifecycle of microVMs, durable in the store: PENDING -> RUNNING -> SUSPENDING -> SUSPENDED ->
 * RUNNING ..., TERMINATING -> TERMINATED, with reasons and timestamps. Operations on one microVM
 * are serialised; a resume is shared by everyone waiting for it. Idle suspend, the suspended TTL and
 * the maximum duration are enforced by a periodic check. Runtime hooks (run, resume, suspend,
 * terminate) are called as the image configures them.
 */
export class MicrovmService {
  readonly limits: MicrovmLimits;
  private readonly locks = new Map<string, Mutex>();
  private readonly resuming = new Map<string, Promise<MicrovmRecord>>();
  private readonly launches = new Map<string, Promise<void>>();
  private readonly activityState = new Map<string, { last: number; streams: number }>();
  private readonly busy = new Set<string>();
  private readonly capacity = new Mutex();
  private readonly restores: Semaphore;
  private readonly versions = new Map<string, ImageVersionRecord>();
  private readonly records = new Map<string, MicrovmRecord>();
  private readonly meter = new UsageMeter();
  /** When each running microVM's usage was last written to the store (ms). */
  private readonly usageSavedAtMs = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private lastRetentionSweep = 0;
  private closed = false;

  constructor(private readonly o: MicrovmServiceOptions) {
    this.limits = { ...DEFAULT_MICROVM_LIMITS, ...o.limits };
    this.restores = new Semaphore(this.limits.maxConcurrentRestores);
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  private lock(id: string): Mutex {
    let m = this.locks.get(id);
    if (!m) this.locks.set(id, (m = new Mutex()));
    return m;
  }

  /** The record as the API shows it: endpoint, image ARN, and its freshest usage figures. */
  view(rec: MicrovmRecord): MicrovmView {
    const usage = this.meter.get(rec.microvmId) ?? rec.usage;
    return {
      ...rec,
      endpoint: this.o.endpointFor(rec.microvmId),
      imageArn: this.o.images.arnOf(rec.imageName),
      ...(usage ? { usage } : {}),
    };
  }

  /**
   * Adds one sample of the microVM's QEMU (none when it does not run) to its usage account, which
   * starts from what the store kept. Returns the account. Never throws for a vanished process.
   */
  private async sampleUsage(rec: MicrovmRecord): Promise<MicrovmUsage> {
    const id = rec.microvmId;
    const memoryMiB = (await this.version(rec.imageName, rec.imageVersion)).config.memoryMiB;
    this.meter.restore(id, rec.usage ?? emptyUsage(memoryMiB));
    return this.meter.add(id, await this.o.engine.get(id)?.processUsage(), this.now());
  }

  /**
   * Samples a RUNNING microVM's usage, and writes it to the store every USAGE_SAVE_INTERVAL_MS (in
   * the background, under the microVM's lock, so it never races a state change).
   */
  private async recordUsage(rec: MicrovmRecord, nowMs: number): Promise<void> {
    const id = rec.microvmId;
    await this.sampleUsage(rec);
    if (nowMs - (this.usageSavedAtMs.get(id) ?? 0) < USAGE_SAVE_INTERVAL_MS) return;
    this.usageSavedAtMs.set(id, nowMs);
    void this.lock(id)
      .run(async () => {
        const usage = this.meter.get(id);
        if (usage) await this.save(id, { usage }, { expectedState: 'RUNNING' });
      })
      .catch(() => undefined);
  }

  /** Usage of every live microVM, fresh as of the last check (for metrics). */
  usageOf(id: string): MicrovmUsage | undefined {
    return this.meter.get(id);
  }

  private async version(name: string, version: string): Promise<ImageVersionRecord> {
    const key = `${name}@${version}`;
    let v = this.versions.get(key);
    if (!v) {
      v = await this.o.images.getVersion(name, version);
      this.versions.set(key, v);
    }
    return v;
  }

  /** Starts the periodic check of idle, suspended and maximum-duration deadlines. */
  start(): void {
    if (this.timer) return;
    let checking = false;
    this.timer = setInterval(() => {
      // On a busy host one pass can outlast the interval: the next tick is skipped, never stacked.
      if (checking) return;
      checking = true;
      void this.checkDeadlines()
        .catch((e: Error) => this.o.log.error('deadline check failed', { error: e.message }))
        .finally(() => (checking = false));
    }, this.limits.checkIntervalMs);
    this.timer.unref();
  }

  async get(id: string): Promise<MicrovmRecord> {
    const rec = await this.o.store.microvms.get(id);
    if (!rec) throw new MicrovmNotFoundError(id);
    this.records.set(id, rec);
    return rec;
  }

  /**
   * The microVM as this process last wrote or read it, without a store query (the gateway asks on
   * every request). This process is the only writer of its microVMs' states, so it is current.
   */
  async current(id: string): Promise<MicrovmRecord | undefined> {
    return (
      this.records.get(id) ??
      (await this.o.store.microvms.get(id).then((r) => (r && this.records.set(id, r), r)))
    );
  }

  /** Writes a change to the store and to the cache of `current`. */
  private async save(id: string, patch: MicrovmPatch, opts?: MicrovmUpdateOptions): Promise<MicrovmRecord> {
    const rec = await this.o.store.microvms.update(id, patch, opts);
    this.records.set(id, rec);
    return rec;
  }

  list(req: MicrovmListRequest): Promise<Page<MicrovmRecord>> {
    return this.o.store.microvms.list(req);
  }

  /** Every microVM in one of `states` (TERMINATED ones only while they are still listed). */
  listByStates(states: readonly MicrovmState[]): Promise<MicrovmRecord[]> {
    return this.o.store.microvms.listByStates(states);
  }

  /**
   * RunMicrovm: checks the image version, the policy, the network connectors (see
   * NetworkConnectorService.resolveForRun) and the limits, records the microVM PENDING with its
   * connectors' ARNs and launches it in the background with their egress policy (clone, `run`
   * hook, RUNNING; or TERMINATED with the reason). A repeated clientToken returns the first call's
   * microVM.
   */
  async run(input: RunInput): Promise<MicrovmRecord> {
    const name = this.o.images.nameFromIdentifier(input.imageIdentifier);
    const version = await this.o.images.runnableVersion(name, input.imageVersion);
    this.checkRunInput(input, version);
    const connectors = await this.o.connectors.resolveForRun(
      input.ingressNetworkConnectors,
      input.egressNetworkConnectors,
    );
    // A Hearth with user-mode networking cannot enforce egress connectors: refused before anything
    // is recorded (NET_EGRESS_UNENFORCEABLE, a ValidationException).
    this.o.engine.checkEgress(connectors.egressPolicy);
    const { clientToken, ...request } = input;
    const { value: rec, replayed } = await oncePerClientToken({
      store: this.o.store,
      scope: 'RunMicrovm',
      clientToken,
      request,
      now: this.now(),
      create: () =>
        this.capacity.run(async () => {
          await this.checkCapacity(version);
          const now = new Date(this.now()).toISOString();
          return this.o.store.transaction(async (tx) => {
            await this.o.connectors.lockUserConnectors(tx, connectors.userConnectors);
            return tx.microvms.create({
              microvmId: `microvm-${randomUUID()}`,
              imageName: name,
              imageVersion: version.version,
              state: 'PENDING',
              ...(input.idlePolicy ? { idlePolicy: input.idlePolicy } : {}),
              maximumDurationInSeconds:
                input.maximumDurationInSeconds ?? this.limits.defaultMaxDurationSeconds,
              ...(input.runHookPayload !== undefined ? { runHookPayload: input.runHookPayload } : {}),
              ingressNetworkConnectors: connectors.ingress,
              egressNetworkConnectors: connectors.egress,
              ...(clientToken ? { clientToken } : {}),
              tokenGeneration: 1,
              startedAt: now,
              updatedAt: now,
            });
          });
        }),
      resultOf: (r) => ({ microvmId: r.microvmId }),
      replay: (r) => this.get((r as { microvmId: string }).microvmId),
    });
    if (replayed) return rec;
    const launch = this.launch(rec, version, connectors.egressPolicy).finally(() =>
      this.launches.delete(rec.microvmId),
    );
    this.launches.set(rec.microvmId, launch);
    return rec;
  }

  private checkRunInput(input: RunInput, version: ImageVersionRecord): void {
    const p = input.idlePolicy;
    if (p && p.maxIdleDurationSeconds < this.limits.minIdleSeconds) {
      throw new ValidationError(
        'idlePolicy.maxIdleDurationSeconds',
        `must be at least ${this.limits.minIdleSeconds} seconds, got ${p.maxIdleDurationSeconds}`,
      );
    }
    if (input.runHookPayload !== undefined && version.config.hooks?.microvmHooks?.run !== 'ENABLED') {
      throw new ValidationError(
        'runHookPayload',
        `image ${version.imageName} version ${version.version} does not enable the run hook, so it cannot take a payload`,
      );
    }
  }

  private async checkCapacity(version: ImageVersionRecord): Promise<void> {
    const active = await this.o.store.microvms.listByStates(ACTIVE_STATES.filter((s) => s !== 'TERMINATING'));
    if (active.length + 1 > this.limits.maxMicrovms) {
      throw new QuotaExceededError(
        `this Hearth runs at most ${this.limits.maxMicrovms} microVMs at once (${active.length} now)`,
      );
    }
    let memory = version.config.memoryMiB;
    for (const vm of active) memory += (await this.version(vm.imageName, vm.imageVersion)).config.memoryMiB;
    if (memory > this.limits.maxMemoryMiB) {
      throw new QuotaExceededError(
        `this microVM would bring allocated memory to ${memory} MiB; the limit is ${this.limits.maxMemoryMiB} MiB`,
      );
    }
  }

  /** Waits for a launch started by `run` to end (tests, and the CLI's --wait). */
  async waitForLaunch(id: string): Promise<MicrovmRecord> {
    await this.launches.get(id);
    return this.get(id);
  }

  private hookConfig(
    version: ImageVersionRecord,
    hook: Exclude<HookName, 'ready' | 'validate'>,
  ): { port: number; timeoutS: number } | undefined {
    const h = version.config.hooks;
    const vmHooks = h?.microvmHooks;
    if (!h?.port || vmHooks?.[hook] !== 'ENABLED') return undefined;
    const timeoutS = vmHooks[`${hook}TimeoutInSeconds`] ?? this.limits.defaultHookTimeoutS;
    return { port: h.port, timeoutS };
  }

  /** Calls a runtime hook if the image enables it; undefined when it does not. */
  private async hook(
    vm: MicroVm,
    version: ImageVersionRecord,
    hook: Exclude<HookName, 'ready' | 'validate'>,
    body: unknown,
  ) {
    const cfg = this.hookConfig(version, hook);
    if (!cfg || !vm.hostAddress) return undefined;
    let at;
    try {
      at = await vm.tcpEndpoint(cfg.port);
    } catch (e) {
      return { status: 0, body: '', error: `the hook port cannot be reached: ${(e as Error).message}` };
    }
    return callHook(at.host, at.port, hook, body, cfg.timeoutS * 1000);
  }

  /** Clones the version's template with `egress` as the guest's network policy, then the `run` hook. */
  private async launch(rec: MicrovmRecord, version: ImageVersionRecord, egress: EgressPolicy): Promise<void> {
    const id = rec.microvmId;
    await this.lock(id).run(async () => {
      if ((await this.get(id)).state !== 'PENDING') return; // terminated before it started
      try {
        await faultPoint('core.launch.before-clone');
        const template = await this.o.engine.template(version.id);
        const vm = await this.restores.run(() => this.o.engine.clone(template, { vmId: id, egress }));
        await faultPoint('core.launch.after-clone');
        const r = await this.hook(vm, version, 'run', {
          microvmId: id,
          runHookPayload: rec.runHookPayload ?? null,
        });
        if (r && r.status !== 200) {
          throw new Error(
            `the run hook answered ${r.status || r.error}${r.body ? `: ${r.body.slice(0, 200)}` : ''}`,
          );
        }
        this.touch(id);
        await this.save(id, { state: 'RUNNING', stateReason: null }, { expectedState: 'PENDING' });
        this.o.log.info('microVM running', { microvm: id, image: rec.imageName, version: rec.imageVersion });
      } catch (e) {
        const reason =
          (e as { code?: string }).code === 'NET_EXHAUSTED'
            ? new InsufficientCapacityError((e as Error).message).message
            : (e as Error).message;
        this.o.log.warn('microVM launch failed', { microvm: id, error: reason });
        await this.o.engine.destroy(id).catch(() => undefined);
        await this.save(id, {
          state: 'TERMINATED',
          stateReason: `launch failed: ${reason.split('\n')[0]}`,
          terminatedAt: new Date(this.now()).toISOString(),
          tokenGeneration: rec.tokenGeneration + 1,
        });
      }
    });
  }

  /** Records inbound activity (the gateway calls this for every request, byte and stream). */
  recordActivity(id: string, e: ActivityEvent): void {
    const a = this.activityState.get(id) ?? { last: this.now(), streams: 0 };
    a.last = this.now();
    if (e.kind === 'stream-open') a.streams++;
    if (e.kind === 'stream-close') a.streams = Math.max(0, a.streams - 1);
    this.activityState.set(id, a);
  }

  private touch(id: string): void {
    const a = this.activityState.get(id);
    if (a) a.last = this.now();
    else this.activityState.set(id, { last: this.now(), streams: 0 });
  }

  /**
   * SuspendMicrovm (also the idle policy): `suspend` hook, connections closed, then the engine's
   * crash-consistent suspend. On failure the microVM is RUNNING again, or SUSPENDED at its previous
   * snapshot, or TERMINATED, with the reason. Suspending a SUSPENDED microVM changes nothing.
   */
  async suspend(id: string, reason = 'suspended on request'): Promise<MicrovmRecord> {
    await this.get(id);
    return this.lock(id).run(async () => {
      const rec = await this.get(id);
      if (rec.state === 'SUSPENDED') return rec;
      if (rec.state !== 'RUNNING') throw new MicrovmStateConflictError(id, 'suspend', rec.state, ['RUNNING']);
      const vm = this.o.engine.get(id);
      if (!vm || vm.state !== 'running') return this.lost(rec, 'its VM was not running');
      await this.save(id, { state: 'SUSPENDING', stateReason: reason }, { expectedState: 'RUNNING' });
      const version = await this.version(rec.imageName, rec.imageVersion);
      const h = await this.hook(vm, version, 'suspend', { microvmId: id });
      if (h && h.status !== 200)
        this.o.log.warn('suspend hook failed; suspending anyway', {
          microvm: id,
          status: h.status || h.error,
        });
      await this.o.closeConnections?.(id);
      await this.sampleUsage(rec);
      await faultPoint('core.suspend.before-engine');
      try {
        await this.o.engine.suspend(vm);
      } catch (e) {
        const kept = (e as { vmKeptRunning?: boolean }).vmKeptRunning;
        if (kept) {
          return this.save(id, {
            state: 'RUNNING',
            stateReason: `suspend failed, still running: ${(e as Error).message}`,
          });
        }
        if ((vm.state as string) === 'suspended') {
          return this.save(id, {
            state: 'SUSPENDED',
            suspendedAt: new Date(this.now()).toISOString(),
            stateReason: `suspend failed; back at the previous snapshot: ${(e as Error).message}`,
          });
        }
        return this.lost(await this.get(id), `suspend failed: ${(e as Error).message}`);
      }
      await faultPoint('core.suspend.after-engine');
      this.activityState.delete(id);
      return this.save(id, {
        state: 'SUSPENDED',
        suspendedAt: new Date(this.now()).toISOString(),
        stateReason: reason,
        usage: await this.sampleUsage(rec),
      });
    });
  }

  /** ResumeMicrovm: only from SUSPENDED. */
  async resume(id: string): Promise<MicrovmRecord> {
    const rec = await this.get(id);
    if (rec.state !== 'SUSPENDED' && rec.state !== 'SUSPENDING')
      throw new MicrovmStateConflictError(id, 'resume', rec.state, ['SUSPENDED']);
    return this.ensureRunning(id);
  }

  /**
   * Brings a microVM to RUNNING: a no-op when it runs, waits for a launch or a suspend in progress,
   * resumes a SUSPENDED one (the engine restore, then the `resume` hook; traffic only after it).
   * Everyone asking at once shares one resume. Rejects for TERMINATING/TERMINATED microVMs and when
   * the resume fails (the microVM then stays SUSPENDED, or TERMINATED if its snapshot is unusable).
   */
  ensureRunning(id: string): Promise<MicrovmRecord> {
    const inFlight = this.resuming.get(id);
    if (inFlight) return inFlight;
    const p = this.lock(id)
      .run(async () => {
        const rec = await this.get(id);
        if (rec.state === 'RUNNING') return rec;
        if (rec.state !== 'SUSPENDED')
          throw new MicrovmStateConflictError(id, 'resume', rec.state, ['RUNNING', 'SUSPENDED']);
        return this.doResume(rec);
      })
      .finally(() => this.resuming.delete(id));
    this.resuming.set(id, p);
    return p;
  }

  private async doResume(rec: MicrovmRecord): Promise<MicrovmRecord> {
    const id = rec.microvmId;
    const version = await this.version(rec.imageName, rec.imageVersion);
    await faultPoint('core.resume.before-engine');
    let vm: MicroVm;
    try {
      vm = await this.restores.run(() => this.o.engine.resume(id));
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'VMM_SNAPSHOT_CORRUPT' || code === 'VMM_SNAPSHOT_INCOMPATIBLE') {
        await this.lost(rec, `its snapshot is unusable: ${(e as Error).message}`);
      } else {
        await this.save(id, {
          stateReason: `resume failed: ${(e as Error).message.split('\n')[0]}`,
        });
      }
      throw e;
    }
    await faultPoint('core.resume.after-engine');
    const h = await this.hook(vm, version, 'resume', { microvmId: id });
    if (h && h.status !== 200) {
      await this.o.engine.revert(vm, 'resume hook failed');
      const reason = `the resume hook answered ${h.status || h.error}`;
      await this.save(id, { stateReason: `resume failed: ${reason}` });
      throw new MicrovmStateConflictError(id, `resume (${reason})`, 'SUSPENDED', ['RUNNING']);
    }
    this.touch(id);
    return this.save(id, { state: 'RUNNING', suspendedAt: null, stateReason: 'resumed' });
  }

  /**
   * TerminateMicrovm: `terminate` hook (when running), connections closed, the VM and all its files
   * removed; tokens minted for it stop working. Idempotent: a TERMINATED microVM stays as it is.
   */
  async terminate(id: string, reason = 'terminated on request'): Promise<MicrovmRecord> {
    const first = await this.get(id);
    if (first.state === 'TERMINATED') return first;
    return this.lock(id).run(async () => {
      const rec = await this.get(id);
      if (rec.state === 'TERMINATED') return rec;
      await this.save(id, {
        state: 'TERMINATING',
        stateReason: reason,
        tokenGeneration: rec.tokenGeneration + 1,
      });
      const vm = this.o.engine.get(id);
      if (vm?.state === 'running') {
        const h = await this.hook(vm, await this.version(rec.imageName, rec.imageVersion), 'terminate', {
          microvmId: id,
        });
        if (h && h.status !== 200)
          this.o.log.warn('terminate hook failed; terminating anyway', { microvm: id });
      }
      await this.o.closeConnections?.(id);
      await this.sampleUsage(rec);
      await faultPoint('core.terminate.before-engine');
      await this.o.engine.destroy(id);
      this.activityState.delete(id);
      return this.save(id, {
        state: 'TERMINATED',
        terminatedAt: new Date(this.now()).toISOString(),
        usage: await this.finalUsage(rec),
      });
    });
  }

  /** Marks a microVM whose VM is gone TERMINATED, removing whatever is left of it. */
  private async lost(rec: MicrovmRecord, reason: string): Promise<MicrovmRecord> {
    await this.o.engine.destroy(rec.microvmId).catch(() => undefined);
    this.activityState.delete(rec.microvmId);
    return this.save(rec.microvmId, {
      state: 'TERMINATED',
      stateReason: reason,
      terminatedAt: new Date(this.now()).toISOString(),
      tokenGeneration: rec.tokenGeneration + 1,
      usage: await this.finalUsage(rec),
    });
  }

  /** The usage account of a microVM whose QEMU is gone for good (memory 0), then forgotten. */
  private async finalUsage(rec: MicrovmRecord): Promise<MicrovmUsage> {
    const u = await this.sampleUsage(rec);
    this.meter.forget(rec.microvmId);
    this.usageSavedAtMs.delete(rec.microvmId);
    return u;
  }

  /**
   * CreateMicrovmAuthToken: a token for this microVM's endpoint, also while it is suspended.
   * ValidationError for a microVM run with NO_INGRESS (nothing could use the token).
   */
  async createAuthToken(
    id: string,
    o: { allowedPorts: AllowedPort[]; expirationInMinutes: number },
  ): Promise<string> {
    const rec = await this.get(id);
    if (rec.state === 'TERMINATING' || rec.state === 'TERMINATED')
      throw new MicrovmStateConflictError(id, 'create a token for', rec.state, ACTIVE_STATES.slice(0, 4));
    if (ingressModeOf(rec.ingressNetworkConnectors) === 'none')
      throw new ValidationError(
        'microvmIdentifier',
        `microVM ${id} was run with NO_INGRESS: its endpoint accepts no traffic`,
      );
    if (!this.o.tokens) throw new Error('no token authority configured');
    return this.o.tokens.mint({
      microvmId: id,
      allowedPorts: o.allowedPorts,
      expirationInMinutes: o.expirationInMinutes,
      generation: rec.tokenGeneration,
    });
  }

  /** Whether any microVM that is not TERMINATED uses this image version. */
  async versionInUse(imageName: string, version: string): Promise<boolean> {
    const active = await this.o.store.microvms.listByStates(ACTIVE_STATES);
    return active.some((vm) => vm.imageName === imageName && vm.imageVersion === version);
  }

  /** One pass of the idle policy, the suspended TTL and the maximum duration. */
  async checkDeadlines(): Promise<void> {
    if (this.closed) return;
    const now = this.now();
    for (const rec of await this.o.store.microvms.listByStates(['PENDING', 'RUNNING', 'SUSPENDED'])) {
      const id = rec.microvmId;
      if (this.busy.has(id)) continue;
      const act = (fn: () => Promise<unknown>, what: string) => {
        this.busy.add(id);
        void fn()
          .catch((e: Error) => this.o.log.warn(`${what} failed`, { microvm: id, error: e.message }))
          .finally(() => this.busy.delete(id));
      };
      if (now - Date.parse(rec.startedAt) >= rec.maximumDurationInSeconds * 1000) {
        act(
          () => this.terminate(id, `maximum duration of ${rec.maximumDurationInSeconds} s reached`),
          'terminate at maximum duration',
        );
        continue;
      }
      if (rec.state === 'RUNNING') await this.recordUsage(rec, now);
      const p = rec.idlePolicy;
      if (!p) continue;
      if (rec.state === 'RUNNING') {
        const a = this.activityState.get(id);
        if (!a) {
          this.touch(id); // first sight (e.g. after a restart): idle time counts from now
          continue;
        }
        if (a.streams > 0 && p.openStreamsCountAsActivity !== false) continue;
        if (now - a.last >= p.maxIdleDurationSeconds * 1000) {
          act(() => this.suspend(id, `idle for ${p.maxIdleDurationSeconds} s`), 'idle suspend');
        }
      } else if (rec.state === 'SUSPENDED' && rec.suspendedAt) {
        if (now - Date.parse(rec.suspendedAt) >= p.suspendedDurationSeconds * 1000) {
          act(
            () => this.terminate(id, `suspended for ${p.suspendedDurationSeconds} s`),
            'terminate after the suspended duration',
          );
        }
      }
    }
    if (now - this.lastRetentionSweep > 60_000) {
      this.lastRetentionSweep = now;
      const before = new Date(
        now - Math.max(600, this.limits.terminatedRetentionSeconds) * 1000,
      ).toISOString();
      if ((await this.o.store.microvms.deleteTerminatedBefore(before)) > 0) {
        for (const [id, r] of this.records)
          if (r.state === 'TERMINATED' && (r.terminatedAt ?? '') < before) this.records.delete(id);
      }
    }
  }

  /**
   * After a restart (the engine opened with adoptRunning): brings every record and VM into
   * agreement. Each microVM ends RUNNING (its VM adopted and revived), SUSPENDED (with a verified
   * snapshot) or TERMINATED (with the reason); nothing is left half done.
   */
  async recover(): Promise<void> {
    const engine = this.o.engine;
    for (const rec of await this.o.store.microvms.listByStates(ACTIVE_STATES)) {
      const id = rec.microvmId;
      const vm = engine.get(id);
      const live = vm?.state === 'running';
      try {
        switch (rec.state) {
          case 'PENDING':
            await this.lost(rec, 'the launch was interrupted by a server restart');
            break;
          case 'RUNNING':
          case 'SUSPENDING':
            if (live) {
              await engine.revive(vm);
              this.touch(id);
              await this.save(id, {
                state: 'RUNNING',
                stateReason:
                  rec.state === 'SUSPENDING'
                    ? 'a suspend was interrupted by a server restart; still running'
                    : 'running (recovered after a server restart)',
              });
            } else await this.toSnapshotOrLost(rec, 'its VM was lost in a server restart');
            break;
          case 'SUSPENDED':
            if (live) await engine.revert(vm, 'a resume was interrupted by a server restart');
            await this.toSnapshotOrLost(rec, 'its snapshot is missing');
            break;
          case 'TERMINATING':
            await engine.destroy(id);
            await this.save(id, {
              state: 'TERMINATED',
              terminatedAt: new Date(this.now()).toISOString(),
            });
            break;
          default:
            break;
        }
      } catch (e) {
        this.o.log.error('recovery of a microVM failed; terminating it', {
          microvm: id,
          error: (e as Error).message,
        });
        await this.lost(rec, `recovery after a server restart failed: ${(e as Error).message}`).catch(
          () => undefined,
        );
      }
      this.o.log.info('recovered microVM', { microvm: id, was: rec.state, now: (await this.get(id)).state });
    }
    // Adopted VMs without a record (their record was never written) are removed.
    for (const vm of engine.adopted()) {
      const rec = await this.o.store.microvms.get(vm.id);
      if (!rec || rec.state === 'TERMINATED') await engine.destroy(vm.id);
    }
  }

  private async toSnapshotOrLost(rec: MicrovmRecord, reason: string): Promise<void> {
    let generation = 0;
    try {
      generation = await this.o.engine.verifySnapshot(rec.microvmId);
    } catch (e) {
      await this.lost(rec, `${reason}, and its snapshot is unusable: ${(e as Error).message}`);
      return;
    }
    if (generation === 0) {
      await this.lost(rec, reason);
      return;
    }
    await this.save(rec.microvmId, {
      state: 'SUSPENDED',
      suspendedAt: rec.suspendedAt ?? new Date(this.now()).toISOString(),
      stateReason:
        rec.state === 'SUSPENDED'
          ? (rec.stateReason ?? 'suspended')
          : `${reason}; restored to its last snapshot`,
    });
  }

  /** Stops the deadline checks and waits for launches in progress. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.allSettled([...this.launches.values(), ...this.resuming.values()]);
  }
}
