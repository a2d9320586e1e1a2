import type { ProcessUsage } from '../vmm/microvm.js';

/**
 * Per-microVM resource usage, measured against its baseline as the reference service bills it: a
 * microVM gets its image's baseline (memory, and memory / 2 GiB of a core) and may burst to 4x that;
 * what it uses above the baseline is counted per sampling interval.
 */
export interface MicrovmUsage {
  /** Cores guaranteed: baseline memory / 2 GiB (0.25 for 512 MiB). */
  baselineVcpus: number;
  /** Cores it may burst to (its vCPUs, and its control group's CPU quota). */
  peakVcpus: number;
  /** CPU time its QEMU processes used over its whole life (all runs, across suspends), seconds. */
  cpuSeconds: number;
  /**
   * Of that, the part above its baseline: for each sampling interval, max(0, CPU used - baseline x
   * interval), added up. A microVM that idles and then bursts is charged for the burst only.
   */
  cpuSecondsAboveBaseline: number;
  /** Resident host memory of its QEMU now (0 when not running), bytes. */
  memoryBytes: number;
  /** The largest resident memory seen, bytes. */
  peakMemoryBytes: number;
  /** When it was last sampled (ISO 8601), if ever. */
  sampledAt?: string;
}

/** The baseline and peak cores of a memory size (2 GiB of memory = 1 core; burst x4). */
export function cpuShape(memoryMiB: number, burstFactor = 4): { baselineVcpus: number; peakVcpus: number } {
  const baselineVcpus = memoryMiB / 2048;
  return { baselineVcpus, peakVcpus: Math.max(1, baselineVcpus * burstFactor) };
}

export function emptyUsage(memoryMiB: number): MicrovmUsage {
  return {
    ...cpuShape(memoryMiB),
    cpuSeconds: 0,
    cpuSecondsAboveBaseline: 0,
    memoryBytes: 0,
    peakMemoryBytes: 0,
  };
}

interface Last {
  processInstance: number;
  cpuSeconds: number;
  atMs: number;
}

/**
 * Turns successive samples of QEMU processes into MicrovmUsage. Each microVM's totals start from
 * what the store kept (`restore`), so they survive suspends and server restarts; a new QEMU
 * process (a resume) counts from zero, and the last sample before a suspend or terminate closes
 * the previous one's account (the caller samples then).
 */
export class UsageMeter {
  private readonly usage = new Map<string, MicrovmUsage>();
  private readonly last = new Map<string, Last>();

  /** Starts (or continues) the account of `id` from `kept` (e.g. read from the store). */
  restore(id: string, kept: MicrovmUsage): void {
    if (!this.usage.has(id)) this.usage.set(id, { ...kept });
  }

  /** The account of `id` now, or undefined if it was never restored or sampled. */
  get(id: string): MicrovmUsage | undefined {
    const u = this.usage.get(id);
    return u ? { ...u } : undefined;
  }

  /**
   * Adds one sample of `id`'s QEMU taken at `nowMs` (undefined: no process runs, memory is 0).
   * Precondition: `restore` was called for `id`.
   */
  add(id: string, sample: ProcessUsage | undefined, nowMs: number): MicrovmUsage {
    const u = this.usage.get(id);
    if (!u) throw new Error(`usage of ${id} was not restored before sampling`);
    if (!sample) {
      u.memoryBytes = 0;
      this.last.delete(id);
      return { ...u };
    }
    const prev = this.last.get(id);
    const samePrev = prev && prev.processInstance === sample.processInstance ? prev : undefined;
    const usedS = Math.max(0, sample.cpuSeconds - (samePrev?.cpuSeconds ?? 0));
    // A new process: its CPU so far was used since it started.
    const intervalS = samePrev ? Math.max(0, (nowMs - samePrev.atMs) / 1000) : sample.ageSeconds;
    u.cpuSeconds += usedS;
    u.cpuSecondsAboveBaseline += Math.max(0, usedS - u.baselineVcpus * intervalS);
    u.memoryBytes = sample.rssBytes;
    u.peakMemoryBytes = Math.max(u.peakMemoryBytes, sample.rssBytes);
    u.sampledAt = new Date(nowMs).toISOString();
    this.last.set(id, {
      processInstance: sample.processInstance,
      cpuSeconds: sample.cpuSeconds,
      atMs: nowMs,
    });
    return { ...u };
  }

  /** Forgets `id` (terminated). */
  forget(id: string): void {
    this.usage.delete(id);
    this.last.delete(id);
  }
}
