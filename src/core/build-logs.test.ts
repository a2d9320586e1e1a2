import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BuildLogs } from './build-logs.js';

describe('BuildLogs', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'build-logs-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const strip = (l: string) => l.replace(/^\S+ /, '');

  it('keeps every line in order in the build log file, with a timestamp', async () => {
    const logs = new BuildLogs(dir);
    const write = logs.open('b-1');
    for (let i = 0; i < 100; i++) write(`line ${i}`);
    await logs.close('b-1');
    const lines: string[] = [];
    for await (const l of logs.read('b-1')) lines.push(l);
    expect(lines.map(strip)).toEqual(Array.from({ length: 100 }, (_, i) => `line ${i}`));
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z line 0$/);
  });

  it('follows a live build: what was written before, then each new line, exactly once, until it ends', async () => {
    const logs = new BuildLogs(dir);
    const write = logs.open('b-2');
    write('before 1');
    write('before 2');
    const got: string[] = [];
    const reader = (async () => {
      for await (const l of logs.read('b-2', { follow: true })) got.push(strip(l));
    })();
    for (let i = 0; i < 50; i++) {
      write(`live ${i}`);
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    await logs.close('b-2');
    await reader;
    expect(got).toEqual(['before 1', 'before 2', ...Array.from({ length: 50 }, (_, i) => `live ${i}`)]);
  });

  it('reading a finished build with follow returns its lines and ends', async () => {
    const logs = new BuildLogs(dir);
    const write = logs.open('b-3');
    write('only line');
    await logs.close('b-3');
    const got: string[] = [];
    for await (const l of logs.read('b-3', { follow: true })) got.push(strip(l));
    expect(got).toEqual(['only line']);
  });

  it('rejects build ids that are not safe file names', () => {
    const logs = new BuildLogs(dir);
    expect(() => logs.path('../etc/passwd')).toThrow(/invalid build id/);
  });
});
