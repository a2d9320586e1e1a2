import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

/**
 * Hashing files off the event loop: snapshot files are hundreds of MiB (a template's RAM), and
 * hashing them on the main thread stalled the whole server (API, gateway, launches) for seconds and
 * churned the garbage collector. One worker thread reads each file with one reused 1 MiB buffer and
 * hashes it; requests are served in order. The worker keeps the process alive only while it has
 * work.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { closeSync, openSync, readSync } = require('node:fs');
const buf = Buffer.allocUnsafe(1 << 20);
parentPort.on('message', ({ id, path }) => {
  try {
    const fd = openSync(path, 'r');
    const hash = createHash('sha256');
    try {
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        hash.update(buf.subarray(0, n));
      }
    } finally {
      closeSync(fd);
    }
    parentPort.postMessage({ id, hex: hash.digest('hex') });
  } catch (e) {
    parentPort.postMessage({ id, error: String(e && e.message), code: e && e.code });
  }
});
`;

interface Reply {
  id: number;
  hex?: string;
  error?: string;
  code?: string;
}

let worker: Worker | undefined;
let nextId = 0;
const pending = new Map<number, { resolve: (hex: string) => void; reject: (e: Error) => void }>();

function hashWorker(): Worker {
  if (worker) return worker;
  const w = new Worker(WORKER_SOURCE, { eval: true });
  w.on('message', (r: Reply) => {
    const p = pending.get(r.id);
    pending.delete(r.id);
    if (pending.size === 0) w.unref();
    if (!p) return;
    if (r.hex !== undefined) p.resolve(r.hex);
    else p.reject(Object.assign(new Error(r.error ?? 'hashing failed'), r.code ? { code: r.code } : {}));
  });
  const fail = (e: Error) => {
    worker = undefined;
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };
  w.on('error', fail);
  w.on('exit', (code) => fail(new Error(`the hashing worker exited (${code})`)));
  w.unref();
  return (worker = w);
}

/** sha256 of a file's content, hex, computed on a worker thread (never loads the file whole). */
export function sha256File(path: string): Promise<string> {
  const w = hashWorker();
  const id = nextId++;
  return new Promise<string>((resolve, reject) => {
    pending.set(id, { resolve, reject });
    w.ref();
    w.postMessage({ id, path });
  });
}

export function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
