import { join } from 'node:path';
import { assertSafeId } from '../config/data-dir.js';

/**
 * Where one VM's files live, all under <data>/vms/<id>/:
 *   vm.json                  static record (origin, machine, identity)
 *   console.log              guest serial console, appended across restores
 *   memory.raw               guest RAM of a cold-booted VM (share=on); moved into a template
 *   initrd.img               per-boot initrd of a cold-booted VM
 *   disks/layer-NNNN.qcow2   copy-on-write disk layers; all but the newest are frozen (0444)
 *   snapshots/gen-NNNN/      committed suspends (manifest.json last); *.tmp = never committed
 *   qemu.log                 QEMU's stderr, appended across restores
 *   run/                     sockets and state.json of the live QEMU process (gone when not running)
 */
export class VmLayout {
  readonly dir: string;

  constructor(
    vmsDir: string,
    readonly vmId: string,
  ) {
    this.dir = join(vmsDir, assertSafeId(vmId, 'VM id'));
  }

  get recordFile(): string {
    return join(this.dir, 'vm.json');
  }
  get consoleLog(): string {
    return join(this.dir, 'console.log');
  }
  get memoryFile(): string {
    return join(this.dir, 'memory.raw');
  }
  get initrd(): string {
    return join(this.dir, 'initrd.img');
  }
  get disksDir(): string {
    return join(this.dir, 'disks');
  }
  get snapshotsDir(): string {
    return join(this.dir, 'snapshots');
  }
  get runDir(): string {
    return join(this.dir, 'run');
  }
  get qmpSocket(): string {
    return join(this.runDir, 'qmp.sock');
  }
  get agentSocket(): string {
    return join(this.runDir, 'agent.sock');
  }
  get controlSocket(): string {
    return join(this.runDir, 'control.sock');
  }
  get migrationSocket(): string {
    return join(this.runDir, 'migrate.sock');
  }
  /** What a restarted server needs to adopt the running QEMU: pid, start time, network, layer. */
  get runStateFile(): string {
    return join(this.runDir, 'state.json');
  }
  /** QEMU's own messages (stderr), appended across restores. */
  get qemuLog(): string {
    return join(this.dir, 'qemu.log');
  }

  layer(n: number): string {
    return join(this.disksDir, layerName(n));
  }

  generationDir(n: number): string {
    return join(this.snapshotsDir, generationName(n));
  }
}

export function layerName(n: number): string {
  return `layer-${String(n).padStart(4, '0')}.qcow2`;
}

export function generationName(n: number): string {
  return `gen-${String(n).padStart(4, '0')}`;
}

/** Parses gen-NNNN into N, or undefined. */
export function parseGeneration(name: string): number | undefined {
  const m = /^gen-(\d{4,})$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** Parses layer-NNNN.qcow2 into N, or undefined. */
export function parseLayer(name: string): number | undefined {
  const m = /^layer-(\d{4,})\.qcow2$/.exec(name);
  return m ? Number(m[1]) : undefined;
}
