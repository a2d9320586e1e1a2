import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { Engine } from '../../src/vmm/engine.js';
import { TEMPLATE_REQUESTS, testDataDir } from '../helpers/env.js';
import { getJson, leftovers, NOTHING_LEFT, sh, uniqueId } from '../helpers/vm.js';

const CHILD = join(import.meta.dirname, '..', 'fixtures', 'scripts', 'engine-child.ts');

/** Runs engine-child.ts until it prints "ready", then SIGKILLs it (or lets HEARTH_FAULT do it). */
async function crashAfterReady(vmId: string, action?: 'suspend', fault?: string): Promise<void> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', CHILD, inject('counterTemplate'), vmId, ...(action ? [action] : [])],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, ...(fault ? { HEARTH_FAULT: fault } : {}) },
    },
  );
  const exited = new Promise((r) => child.on('exit', r));
  for await (const line of createInterface({ input: child.stdout! })) if (line.startsWith('ready ')) break;
  if (!fault) child.kill('SIGKILL');
  await exited;
}

describe('a restarted engine adopts VMs left running', () => {
  it('takes over a running VM after the server was killed: same process, same memory, nothing leaked', async () => {
    const vmId = uniqueId('adopt');
    await crashAfterReady(vmId);
    const engine = await Engine.open({ dataDir: testDataDir(), adoptRunning: true });
    try {
      const vm = engine.get(vmId)!;
      expect(vm).toBeDefined();
      expect(engine.adopted().map((v) => v.id)).toContain(vmId);
      expect(vm.state).toBe('running');
      await engine.revive(vm);
      expect((await getJson<{ count: number }>(vm)).count).toBe(TEMPLATE_REQUESTS + 4);
      await engine.suspend(vm); // a full lifecycle works on the adopted VM
      await engine.resume(vmId);
      expect((await getJson<{ count: number }>(vm)).count).toBe(TEMPLATE_REQUESTS + 5);
      await engine.destroy(vmId);
      expect(await leftovers(engine)).toEqual(NOTHING_LEFT);
    } finally {
      await engine.close();
    }
  });

  it('revives a VM whose server died mid-suspend (vCPUs stopped, filesystems frozen): it runs and writes again', async () => {
    const vmId = uniqueId('adopt-paused');
    await crashAfterReady(vmId, 'suspend', 'suspend.after-device-state');
    const engine = await Engine.open({ dataDir: testDataDir(), adoptRunning: true });
    try {
      const vm = engine.get(vmId)!;
      expect(vm.adoptedStatus).toBe('paused');
      await engine.revive(vm);
      // A request appends to the disk: it would hang on a frozen filesystem.
      expect((await getJson<{ count: number }>(vm)).count).toBe(TEMPLATE_REQUESTS + 4);
      expect((await sh(vm, 'tail -n 1 /var/lib/counter/requests.log')).trim()).toBe(
        String(TEMPLATE_REQUESTS + 4),
      );
      await engine.destroy(vmId);
    } finally {
      await engine.close();
    }
  });

  it('without adoption, a restarted engine kills what was left running', async () => {
    const vmId = uniqueId('orphan');
    await crashAfterReady(vmId);
    const engine = await Engine.open({ dataDir: testDataDir() });
    try {
      expect(engine.get(vmId)).toBeUndefined();
      expect(await leftovers(engine)).toEqual(NOTHING_LEFT);
      await engine.destroy(vmId);
    } finally {
      await engine.close();
    }
  });
});
