import { EventEmitter } from 'node:events';
import { createReadStream } from 'node:fs';
import { appendFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { assertSafeId } from '../config/data-dir.js';

/**
 * Build logs: one file per build (kept after failures, removed with the image), appended line by
 * line, and a live feed so callers can follow a build while it runs.
 */
export class BuildLogs {
  private readonly feeds = new Map<string, EventEmitter>();
  private readonly writes = new Map<string, Promise<void>>();

  constructor(private readonly dir: string) {}

  path(buildId: string): string {
    return join(this.dir, `${assertSafeId(buildId, 'build id')}.log`);
  }

  /** Starts a build's log: followers can attach from now on. */
  open(buildId: string): (line: string) => void {
    const feed = new EventEmitter();
    feed.setMaxListeners(0);
    this.feeds.set(buildId, feed);
    let seq = 0;
    return (line: string) => {
      const n = ++seq;
      const text = `${new Date().toISOString()} ${line.replace(/\r/g, '')}\n`;
      const prev = this.writes.get(buildId) ?? mkdir(this.dir, { recursive: true }).then(() => undefined);
      const next = prev.then(() => appendFile(this.path(buildId), text)).catch(() => undefined);
      this.writes.set(buildId, next);
      // Emitted in write order, after the line is in the file, with its line number.
      void next.then(() => feed.emit('line', n, text.slice(0, -1)));
    };
  }

  /** Ends a build's log: followers get the rest and stop. */
  async close(buildId: string): Promise<void> {
    await this.writes.get(buildId);
    this.writes.delete(buildId);
    const feed = this.feeds.get(buildId);
    this.feeds.delete(buildId);
    feed?.emit('end');
  }

  isLive(buildId: string): boolean {
    return this.feeds.has(buildId);
  }

  /**
   * Yields the build's log lines: those already written, then (with `follow`, while the build runs)
   * each new line as it is written, until the build ends.
   */
  async *read(buildId: string, opts: { follow?: boolean } = {}): AsyncGenerator<string> {
    const feed = opts.follow ? this.feeds.get(buildId) : undefined;
    const pending: [number, string][] = [];
    let ended = !feed;
    let wake: (() => void) | undefined;
    const onLine = (n: number, l: string) => {
      pending.push([n, l]);
      wake?.();
    };
    const onEnd = () => {
      ended = true;
      wake?.();
    };
    feed?.on('line', onLine);
    feed?.once('end', onEnd);
    try {
      // The file holds lines 1..k; the feed delivers every line written since we attached, with
      // its number, so lines also read from the file are skipped by number.
      let fromFile = 0;
      try {
        const rl = createInterface({ input: createReadStream(this.path(buildId)), crlfDelay: Infinity });
        for await (const line of rl) {
          fromFile++;
          yield line;
        }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      for (;;) {
        while (pending.length > 0) {
          const [n, line] = pending.shift()!;
          if (n > fromFile) yield line;
        }
        if (ended) return;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    } finally {
      feed?.off('line', onLine);
      feed?.off('end', onEnd);
    }
  }
}
