import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureSealBinary } from '../jail/sealed-file.js';
import type { Template } from './engine.js';
import { TemplateRam } from './template-ram.js';

describe('sealed template RAM: one copy per template in use', () => {
  let dir: string;
  let ram: TemplateRam;
  const template = (id: string) =>
    ({ id, dir, manifest: { memory: { path: 'memory.raw' } } }) as unknown as Template;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-tram-'));
    await writeFile(join(dir, 'memory.raw'), Buffer.alloc(1 << 20, 7));
    ram = new TemplateRam(await ensureSealBinary(join(dir, 'bin')), 60_000);
  }, 60_000);

  afterAll(async () => {
    ram.closeAll();
    await rm(dir, { recursive: true, force: true });
  });

  it('shares one copy between concurrent users, and names its mapping after the template', async () => {
    const [a, b] = await Promise.all([ram.get(template('t-1')), ram.get(template('t-1'))]);
    expect(a).toBe(b);
    expect(a.sizeBytes).toBe(1 << 20);
    expect((await ram.mappingNames(template('t-1')))[0]).toBe('/memfd:hearth-ram-t-1 (deleted)');
  });

  it('drops a copy nobody used for the idle time, and makes it again when asked', async () => {
    const first = await ram.get(template('t-2'));
    expect(ram.held()).toContain('t-2');
    ram.dropIdle(Date.now() + 30_000);
    expect(ram.held()).toContain('t-2'); // used 30 s ago: kept
    ram.dropIdle(Date.now() + 61_000);
    expect(ram.held()).not.toContain('t-2');
    const again = await ram.get(template('t-2'));
    expect(again).not.toBe(first);
    expect(ram.held()).toContain('t-2');
  });
});
