import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Engine, Template } from '../../src/vmm/engine.js';
import type { MicroVm } from '../../src/vmm/microvm.js';
import { readManifest } from '../../src/vmm/snapshot-manifest.js';
import { TEMPLATE_REQUESTS } from '../helpers/env.js';
import { getJson, leftovers, openEngine, sh, uniqueId } from '../helpers/vm.js';

type Count = { count: number };

const CYCLES = 10;

function logLines(text: string): number[] {
  return text.trim().split('\n').map(Number);
}

describe('suspend and resume', () => {
  let engine: Engine;
  let template: Template;
  let vm: MicroVm;

  beforeAll(async () => {
    engine = await openEngine();
    template = await engine.template(inject('counterTemplate'));
    vm = await engine.clone(template, { vmId: uniqueId('cycle') });
  });

  afterAll(async () => {
    await engine.destroy(vm.id);
    await engine.close();
  });

  it(`keeps memory, processes and every completed write across ${CYCLES} cycles`, async () => {
    let expected = TEMPLATE_REQUESTS;
    const pid = (await getJson<{ pid: number }>(vm)).pid;
    expected++;
    for (let cycle = 1; cycle <= CYCLES; cycle++) {
      // Writes right before the suspend: each one is fsynced by the app before it answers.
      for (let i = 0; i < 3; i++) expect((await getJson<Count>(vm)).count).toBe(++expected);
      const qemuPid = vm.process!.pid;
      await engine.suspend(vm);
      expect(vm.state).toBe('suspended');
      expect(vm.generation).toBe(cycle);
      expect(() => process.kill(qemuPid, 0)).toThrow(); // no QEMU process, so no RAM held
      expect((await leftovers(engine)).networksInUse).toBe(0);

      await engine.resume(vm.id);
      const r = await getJson<{ count: number; pid: number }>(vm);
      expect(r.count).toBe(++expected); // in-memory state intact
      expect(r.pid).toBe(pid); // the same process
      const log = logLines(await sh(vm, 'cat /var/lib/counter/requests.log'));
      expect(log).toEqual(Array.from({ length: expected }, (_, i) => i + 1)); // disk intact, no lost or torn write
    }
  });

  it('saves a disk that holds every acknowledged write on its own (frozen filesystem, read offline)', async () => {
    const n = (await getJson<Count>(vm)).count;
    await engine.suspend(vm);
    const m = await readManifest(vm.layout.generationDir(vm.generation));
    const top = join(vm.layout.dir, m.diskLayers[m.diskLayers.length - 1]!.path);
    const dir = mkdtempSync(join(tmpdir(), 'hearth-disk-'));
    try {
      const raw = join(dir, 'disk.raw');
      execFileSync('qemu-img', ['convert', '-O', 'raw', top, raw]);
      // Read-only inspection of the saved filesystem, without the guest: no journal replay needed.
      execFileSync('e2fsck', ['-n', '-f', raw], { stdio: 'pipe' });
      const text = execFileSync('debugfs', ['-R', 'cat /var/lib/counter/requests.log', raw], {
        stdio: ['ignore', 'pipe', 'ignore'],
      }).toString();
      expect(logLines(text)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await engine.resume(vm.id);
  });

  it('corrects the guest clock after a resume that followed a 30 s gap', async () => {
    await engine.suspend(vm);
    await new Promise((r) => setTimeout(r, 30_000));
    await engine.resume(vm.id);
    const before = Date.now() / 1000;
    const { time } = await getJson<{ time: number }>(vm, '/time');
    const after = Date.now() / 1000;
    expect(time).toBeGreaterThan(before - 1);
    expect(time).toBeLessThan(after + 1);
  });

  it('reseeds the RNG on every resume', async () => {
    const first = (await getJson<{ random: string }>(vm, '/random')).random;
    await engine.suspend(vm);
    await engine.resume(vm.id);
    const again = (await getJson<{ random: string }>(vm, '/random')).random;
    expect(again).not.toBe(first);
  });

  it('rejects suspending a VM that is not running, changing nothing', async () => {
    await engine.suspend(vm);
    await expect(engine.suspend(vm)).rejects.toMatchObject({ code: 'VMM_INVALID_STATE' });
    expect(vm.state).toBe('suspended');
    await engine.resume(vm.id);
    expect(vm.state).toBe('running');
  });
});
