import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { debianKernelRelease, ensureKernel } from '../../src/guest/kernel.js';
import { testDataDir } from '../helpers/env.js';

/** A kernel cache entry as ensureKernel leaves it (only kernel.json is read on the pinned path). */
async function fakeKernel(kernelDir: string, release: string, mtime?: Date): Promise<void> {
  const dir = join(kernelDir, release);
  await mkdir(join(dir, 'modules'), { recursive: true });
  const manifest = join(dir, 'kernel.json');
  await writeFile(
    manifest,
    JSON.stringify({ release, vmlinuz: 'x', modulesDir: 'y', loadOrder: ['virtio_mmio'] }),
  );
  if (mtime) await utimes(manifest, mtime, mtime);
}

describe('the guest kernel is pinned', () => {
  let dir: string;
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps the release `current` names, whatever Debian offers now, without asking apt', async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-kernel-'));
    await fakeKernel(dir, '6.1.0-1-cloud-amd64');
    await fakeKernel(dir, '6.1.0-2-cloud-amd64');
    await writeFile(join(dir, 'current'), '6.1.0-1-cloud-amd64\n');
    const k = await ensureKernel(dir);
    expect(k.release).toBe('6.1.0-1-cloud-amd64');
    expect(k.vmlinuz).toBe(join(dir, '6.1.0-1-cloud-amd64', 'vmlinuz'));
    expect(k.loadOrder).toEqual(['virtio_mmio']);
  });

  it('pins a data directory set up before the pin to its most recently unpacked release', async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-kernel-'));
    await fakeKernel(dir, '6.1.0-9-cloud-amd64', new Date('2026-01-01'));
    await fakeKernel(dir, '6.1.0-3-cloud-amd64', new Date('2026-06-01'));
    await mkdir(join(dir, '6.1.0-7-cloud-amd64.staging')); // an interrupted unpack is not a release
    expect((await ensureKernel(dir)).release).toBe('6.1.0-3-cloud-amd64');
    expect(await readFile(join(dir, 'current'), 'utf8')).toBe('6.1.0-3-cloud-amd64\n');
  });

  it('moves to the kernel Debian names now on upgrade, and pins that one', async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-kernel-'));
    const real = await debianKernelRelease();
    // The test data directory (set up by the global setup) normally has it: then nothing is downloaded.
    const have = join(testDataDir().kernelDir, real);
    if (existsSync(join(have, 'kernel.json'))) await cp(have, join(dir, real), { recursive: true });
    await fakeKernel(dir, '6.1.0-1-cloud-amd64');
    await writeFile(join(dir, 'current'), '6.1.0-1-cloud-amd64\n');
    expect((await ensureKernel(dir)).release).toBe('6.1.0-1-cloud-amd64');
    const upgraded = await ensureKernel(dir, { upgrade: true });
    expect(upgraded.release).toBe(real);
    expect(await readFile(join(dir, 'current'), 'utf8')).toBe(`${real}\n`);
    expect((await ensureKernel(dir)).release).toBe(real);
  });
});
