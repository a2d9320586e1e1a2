import { chmod, readdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { clearFaults, onFault } from '../../src/util/faults.js';
import type { Engine, Template } from '../../src/vmm/engine.js';
import type { MicroVm } from '../../src/vmm/microvm.js';
import { TEMPLATE_REQUESTS } from '../helpers/env.js';
import {
  getJson,
  leftovers,
  NOTHING_LEFT,
  openEngine,
  recordedNetworks,
  sh,
  uniqueId,
} from '../helpers/vm.js';

type Count = { count: number };

async function flipByte(path: string, offset: number): Promise<Buffer> {
  await chmod(path, 0o644);
  const original = await readFile(path);
  const damaged = Buffer.from(original);
  damaged[offset] = damaged[offset]! ^ 0xff;
  await writeFile(path, damaged);
  return original;
}

describe('snapshot failures', () => {
  let engine: Engine;
  let template: Template;
  const created: string[] = [];

  async function newClone(prefix: string): Promise<MicroVm> {
    const vm = await engine.clone(template, { vmId: uniqueId(prefix) });
    created.push(vm.id);
    return vm;
  }

  beforeAll(async () => {
    engine = await openEngine();
    template = await engine.template(inject('counterTemplate'));
  });

  afterEach(async () => {
    clearFaults();
    for (const id of created.splice(0)) await engine.destroy(id);
  });

  afterAll(async () => {
    await engine.close();
    expect(await recordedNetworks()).toEqual([]); // spares included: nothing outlives the engine
  });

  it('rejects a bit-flipped memory snapshot with a clear error, starts nothing, and resumes once repaired', async () => {
    const vm = await newClone('corrupt');
    await getJson(vm);
    await engine.suspend(vm);
    const diff = join(vm.layout.generationDir(1), 'memory.diff');
    const original = await flipByte(diff, 4096 + 17);
    await expect(engine.resume(vm.id)).rejects.toMatchObject({
      code: 'VMM_SNAPSHOT_CORRUPT',
      message: expect.stringContaining('memory.diff does not match its checksum'),
    });
    expect(vm.state).toBe('suspended');
    expect((await leftovers(engine)).qemuPids).toEqual([]);
    await writeFile(diff, original);
    await engine.resume(vm.id);
    expect((await getJson<Count>(vm)).count).toBe(TEMPLATE_REQUESTS + 2);
  });

  it('rejects a truncated device state and a truncated disk layer', async () => {
    const vm = await newClone('trunc');
    await engine.suspend(vm);
    const devices = join(vm.layout.generationDir(1), 'devices.state');
    const original = await readFile(devices);
    await chmod(devices, 0o644);
    await truncate(devices, original.length - 100);
    await expect(engine.resume(vm.id)).rejects.toMatchObject({
      code: 'VMM_SNAPSHOT_CORRUPT',
      message: expect.stringMatching(/devices\.state is \d+ bytes.*truncated/),
    });
    expect(vm.state).toBe('suspended');
    expect((await leftovers(engine)).qemuPids).toEqual([]);
    await writeFile(devices, original);

    const layer = vm.layout.layer(1);
    await chmod(layer, 0o644);
    await truncate(layer, 65536);
    await expect(engine.resume(vm.id)).rejects.toMatchObject({
      code: 'VMM_SNAPSHOT_CORRUPT',
      message: expect.stringMatching(/layer-0001\.qcow2 is 65536 bytes/),
    });
    expect(vm.state).toBe('suspended');
    expect(await leftovers(engine)).toEqual(NOTHING_LEFT);
  });

  it('rejects a snapshot whose manifest is damaged', async () => {
    const vm = await newClone('manifest');
    await engine.suspend(vm);
    const manifest = join(vm.layout.generationDir(1), 'manifest.json');
    await chmod(manifest, 0o644);
    await writeFile(manifest, '{"format": "hearth-snapshot/1", "memory": ');
    await expect(engine.resume(vm.id)).rejects.toMatchObject({
      code: 'VMM_SNAPSHOT_CORRUPT',
      message: expect.stringContaining('manifest unreadable'),
    });
  });

  it('keeps the VM running when a suspend step fails while QEMU is alive', async () => {
    const vm = await newClone('keeps-running');
    await getJson(vm);
    onFault('suspend.after-memory', () => {
      throw new Error('injected failure');
    });
    await expect(engine.suspend(vm)).rejects.toMatchObject({
      code: 'VMM_SUSPEND_FAILED',
      vmKeptRunning: true,
    });
    expect(vm.state).toBe('running');
    // Running and writable: the filesystems were thawed again.
    expect((await getJson<Count>(vm)).count).toBe(TEMPLATE_REQUESTS + 2);
    expect(await readdir(vm.layout.snapshotsDir)).toEqual([]);
  });

  it('survives kill -9 of QEMU in the middle of a suspend: the previous snapshot stays usable, nothing is left behind', async () => {
    const vm = await newClone('kill9');
    expect((await getJson<Count>(vm)).count).toBe(TEMPLATE_REQUESTS + 1);
    await engine.suspend(vm); // generation 1: count is TEMPLATE_REQUESTS + 1
    await engine.resume(vm.id);
    await getJson(vm);
    await getJson(vm); // these two exist only in the running VM
    onFault('suspend.after-device-state', () => vm.process!.kill('SIGKILL'));
    await expect(engine.suspend(vm)).rejects.toMatchObject({
      code: 'VMM_SUSPEND_FAILED',
      vmKeptRunning: false,
    });
    expect(vm.state).toBe('suspended');
    expect(vm.generation).toBe(1);
    expect(await readdir(vm.layout.snapshotsDir)).toEqual(['gen-0001']); // the partial generation is gone
    expect(await leftovers(engine)).toEqual(NOTHING_LEFT);
    clearFaults();
    await engine.resume(vm.id);
    // Back exactly at generation 1, memory and disk consistent with each other.
    expect((await getJson<Count>(vm)).count).toBe(TEMPLATE_REQUESTS + 2);
    const log = (await sh(vm, 'cat /var/lib/counter/requests.log')).trim().split('\n').map(Number);
    expect(log).toEqual(Array.from({ length: TEMPLATE_REQUESTS + 2 }, (_, i) => i + 1));
  });

  it('marks a never-suspended VM failed when QEMU dies during its first suspend', async () => {
    const vm = await newClone('kill9-first');
    onFault('suspend.after-device-state', () => vm.process!.kill('SIGKILL'));
    await expect(engine.suspend(vm)).rejects.toMatchObject({
      code: 'VMM_SUSPEND_FAILED',
      vmKeptRunning: false,
    });
    expect(vm.state).toBe('failed');
    expect(vm.stateReason).toMatch(/QEMU exited during suspend/);
    expect(await readdir(vm.layout.snapshotsDir)).toEqual([]);
    expect(await leftovers(engine)).toEqual(NOTHING_LEFT);
  });

  it('rejects a template whose memory file was truncated', async () => {
    // A copy of the template, so the shared one stays intact.
    const { cp } = await import('node:fs/promises');
    const copyId = uniqueId('tplcopy');
    const dir = join(engine.ctx.dataDir.templatesDir, copyId);
    await cp(template.dir, dir, { recursive: true });
    try {
      await chmod(join(dir, 'memory.raw'), 0o644);
      await truncate(join(dir, 'memory.raw'), 4096);
      await expect(engine.template(copyId)).rejects.toMatchObject({
        code: 'VMM_SNAPSHOT_CORRUPT',
        message: expect.stringContaining('memory.raw'),
      });
    } finally {
      await engine.deleteTemplate(copyId);
    }
  });
});
