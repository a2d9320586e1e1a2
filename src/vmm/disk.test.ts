import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOverlay, virtualSize } from './disk.js';

const hasQemuImg = spawnSync('qemu-img', ['--version']).status === 0;

describe.skipIf(!hasQemuImg)('qcow2 overlays written without qemu-img', () => {
  let dir: string;
  /** What `qemu-img create` writes for an overlay `file` (in `cwd`) over `backing` (relative to cwd). */
  const qemuImgOverlay = async (cwd: string, file: string, backing: string, format: string) => {
    const r = spawnSync(
      'qemu-img',
      ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', '-b', backing, '-F', format, file],
      { cwd },
    );
    expect(r.stderr.toString()).toBe('');
    return readFile(join(cwd, file));
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-disk-'));
    await mkdir(join(dir, 'templates', 't1'), { recursive: true });
    await mkdir(join(dir, 'vms', 'vm-1', 'disks'), { recursive: true });
    await writeFile(join(dir, 'base.raw'), '');
    await truncate(join(dir, 'base.raw'), 3 * 2 ** 30 + 65536 * 3); // not a multiple of 512 MiB
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes exactly the bytes qemu-img create writes, over raw and qcow2 backings, for any name', async () => {
    // A template layer over the raw base, then a clone's layer over the template, then a next layer.
    const tpl = join(dir, 'templates', 't1', 'disk.qcow2');
    await createOverlay(tpl, join(dir, 'base.raw'), 'raw');
    const expectedTpl = await qemuImgOverlay(
      join(dir, 'templates', 't1'),
      'expected.qcow2',
      '../../base.raw',
      'raw',
    );
    expect((await readFile(tpl)).equals(expectedTpl)).toBe(true);

    const l1 = join(dir, 'vms', 'vm-1', 'disks', 'layer-0001.qcow2');
    await createOverlay(l1, tpl, 'qcow2');
    const l2 = join(dir, 'vms', 'vm-1', 'disks', 'layer-0002.qcow2');
    await createOverlay(l2, l1, 'qcow2');
    const l3 = join(dir, 'vms', 'vm-1', 'disks', 'layer-0003.qcow2');
    await createOverlay(l3, l2, 'qcow2'); // same name length as l2's: the prototype is patched
    for (const [file, backing] of [
      [l1, '../../../templates/t1/disk.qcow2'],
      [l2, 'layer-0001.qcow2'],
      [l3, 'layer-0002.qcow2'],
    ] as const) {
      const expected = await qemuImgOverlay(
        join(dir, 'vms', 'vm-1', 'disks'),
        'expected.qcow2',
        backing,
        'qcow2',
      );
      expect((await readFile(file)).equals(expected)).toBe(true);
      const info = JSON.parse(
        spawnSync('qemu-img', ['info', '--output=json', '--backing-chain', file]).stdout.toString(),
      ) as { 'virtual-size': number; filename: string }[];
      expect(info.map((i) => i['virtual-size'])).toEqual(info.map(() => 3 * 2 ** 30 + 65536 * 3));
      expect(info.at(-1)!.filename).toMatch(/base\.raw$/);
      expect(spawnSync('qemu-img', ['check', '-q', file]).status).toBe(0);
    }
    expect(await virtualSize(l3, 'qcow2')).toBe(3 * 2 ** 30 + 65536 * 3);
    await expect(virtualSize(join(dir, 'base.raw'), 'qcow2')).rejects.toThrow(/not a qcow2 image/);
  });
});
