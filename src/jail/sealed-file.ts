import { spawn } from 'node:child_process';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { HearthError } from '../errors.js';
import { packageRoot } from '../util/package-root.js';
import { ensureStaticBinary } from '../util/static-binary.js';

/**
 * Sealed in-memory copies of files (memfds sealed against writing, see src/jail/hearth-seal.c): a
 * template's guest RAM that unprivileged QEMU processes map copy-on-write but can never change.
 */

/** hearth-seal failed (the file is unreadable, memory is short...). */
export class SealFailedError extends HearthError {
  readonly code = 'JAIL_SEAL_FAILED';
  constructor(file: string, detail: string) {
    super(`could not make a sealed in-memory copy of ${file}: ${detail}`, {
      hint: 'check that the file is readable and that the host has free memory for it',
    });
  }
}

/** Compiles hearth-seal into `cacheDir` (cached by source hash; see ensureStaticBinary). */
export function ensureSealBinary(cacheDir: string): Promise<string> {
  return ensureStaticBinary(join(packageRoot(), 'src', 'jail', 'hearth-seal.c'), cacheDir, 'hearth-seal');
}

/** A sealed copy held open by this process. */
export interface SealedFile {
  /** A read-only descriptor of the memfd: pass it to a child (e.g. as fd 3) to let it map the copy. */
  fd: number;
  /** How /proc/<pid>/maps names a mapping of it. */
  mappingName: string;
  sizeBytes: number;
  /** Closes this process's descriptor (mappings and other holders keep the memory alive). */
  close(): void;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const READY_TIMEOUT_MS = 120_000;

/**
 * Makes a sealed memfd named `name` holding `file`'s bytes (holes and zero blocks stay unallocated)
 * and returns a descriptor of it. Takes about as long as reading the file's data once.
 * Throws SealFailedError when hearth-seal fails; TypeError for a bad name.
 */
export async function sealFile(sealBinary: string, file: string, name: string): Promise<SealedFile> {
  if (!NAME.test(name)) throw new TypeError(`invalid sealed file name '${name.slice(0, 80)}'`);
  const child = spawn(sealBinary, [file, name], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-2000)));
  const exited = new Promise<number | null>((resolve) => {
    child.on('exit', (code) => resolve(code));
    child.on('error', (e) => {
      err += e.message;
      resolve(null);
    });
  });
  const ready = await Promise.race([
    new Promise<number>((resolve) => {
      const onData = () => {
        const m = /^ready (\d+)\n/.exec(out);
        if (m) {
          child.stdout.off('data', onData);
          resolve(Number(m[1]));
        }
      };
      child.stdout.on('data', onData);
    }),
    exited.then(() => undefined),
    new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), READY_TIMEOUT_MS).unref()),
  ]);
  let fd: number | undefined;
  try {
    if (ready === undefined)
      throw new SealFailedError(file, err.trim() || 'hearth-seal did not report ready');
    fd = openSync(`/proc/${child.pid}/fd/${ready}`, 'r');
  } finally {
    child.stdin.end();
    if (fd === undefined) child.kill('SIGKILL');
  }
  const code = await exited;
  if (code !== 0) {
    closeSync(fd);
    throw new SealFailedError(file, err.trim() || `hearth-seal exited with ${code}`);
  }
  let open = true;
  return {
    fd,
    mappingName: `/memfd:${name} (deleted)`,
    sizeBytes: fstatSync(fd).size,
    close() {
      if (open) closeSync(fd);
      open = false;
    },
  };
}
