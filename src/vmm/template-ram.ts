import { realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { sealFile, type SealedFile } from '../jail/sealed-file.js';
import type { Template } from './engine.js';

/**
 * The guest RAM clones of a template map, one sealed in-memory copy per template (see
 * src/jail/hearth-seal.c): every clone maps it copy-on-write (MAP_PRIVATE), QEMU may open it
 * read-write as QEMU 7.2 insists on, and still nobody, a jailed QEMU or root, can change a page
 * that other clones read. A copy is made on a template's first clone or resume (about as long as
 * reading its RAM file once) and kept while the template is used: it is dropped once no clone or
 * resume asked for it for `idleMs`, or when the template is deleted. Dropping only closes this
 * process's descriptor: running QEMUs keep their mapping, and so the memory, alive on their own.
 */
export class TemplateRam {
  private readonly sealed = new Map<string, Promise<SealedFile>>();
  private readonly lastUsedMs = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly sealBinary: string,
    private readonly idleMs = 10 * 60_000,
  ) {
    this.timer = setInterval(() => this.dropIdle(), Math.min(60_000, idleMs));
    this.timer.unref();
  }

  /** Drops the copies no clone or resume used for idleMs. */
  dropIdle(nowMs = Date.now()): void {
    for (const [id, t] of this.lastUsedMs) if (nowMs - t >= this.idleMs) this.drop(id);
  }

  /** Templates whose sealed copy this process holds (or is making). */
  held(): string[] {
    return [...this.sealed.keys()];
  }

  /**
   * The sealed copy of `t`'s RAM file. Precondition: the file was verified against the template's
   * manifest (Engine.template does it). Concurrent callers share one copy.
   */
  get(t: Template): Promise<SealedFile> {
    this.lastUsedMs.set(t.id, Date.now());
    let p = this.sealed.get(t.id);
    if (!p) {
      p = sealFile(this.sealBinary, join(t.dir, t.manifest.memory.path), mappingName(t.id));
      this.sealed.set(t.id, p);
      p.catch(() => this.sealed.delete(t.id));
    }
    return p;
  }

  /**
   * How /proc/<pid>/maps may name the guest RAM of a clone of `t`: the sealed copy, or the RAM
   * file itself for a QEMU started (and adopted) from before sealed copies.
   */
  async mappingNames(t: Template): Promise<string[]> {
    const file = await realpath(join(t.dir, t.manifest.memory.path)).catch(() => undefined);
    return [`/memfd:${mappingName(t.id)} (deleted)`, ...(file ? [file] : [])];
  }

  /** Closes this process's descriptor of `templateId`'s copy (e.g. the template is deleted). */
  drop(templateId: string): void {
    const p = this.sealed.get(templateId);
    this.sealed.delete(templateId);
    this.lastUsedMs.delete(templateId);
    void p?.then((s) => s.close()).catch(() => undefined);
  }

  closeAll(): void {
    clearInterval(this.timer);
    for (const id of [...this.sealed.keys()]) this.drop(id);
  }
}

function mappingName(templateId: string): string {
  return `hearth-ram-${templateId}`;
}
