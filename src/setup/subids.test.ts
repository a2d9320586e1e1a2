import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VM_UID_BASE } from '../jail/jailer.js';
import { ensureSubIds, hasSubIds, subIdRange } from './subids.js';

describe('subIdRange', () => {
  it("keeps a user's existing range", () => {
    expect(subIdRange('alice:100000:65536\nbob:165536:65536\n', 'bob')).toEqual({
      start: 165_536,
      count: 65_536,
      added: false,
    });
  });

  it('gives a new user the first free aligned range from 100000 on', () => {
    expect(subIdRange('', 'alice')).toEqual({ start: 131_072, count: 65_536, added: true });
    expect(subIdRange('alice:131072:65536\n', 'bob').start).toBe(196_608);
    // A gap before a range is used when the range fits in it.
    expect(subIdRange('x:300000:65536\n', 'bob').start).toBe(131_072);
  });

  it("never overlaps another range (hearth-builder's) or the uids of jailed VMs", () => {
    const text = 'hearth-builder:1879048192:65536\n';
    const r = subIdRange(text, 'alice');
    expect(r.start + r.count <= 1_879_048_192 || r.start >= 1_879_048_192 + 65_536).toBe(true);
    // Ranges up to the VM uids: the next one goes past them.
    const crowded = `big:131072:${VM_UID_BASE - 131_072}\n`;
    const past = subIdRange(crowded, 'alice');
    expect(past.start).toBeGreaterThanOrEqual(VM_UID_BASE + 65_536);
  });

  it('ignores malformed lines', () => {
    expect(subIdRange('garbage\n:1:2\nz:x:y\n', 'alice').added).toBe(true);
  });
});

describe('ensureSubIds', () => {
  let dir: string;
  let files: string[];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-subid-'));
    files = [join(dir, 'subuid'), join(dir, 'subgid')];
    await writeFile(files[0]!, 'hearth-builder:1879048192:65536'); // no final newline
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('adds a range to each file once, and says what the user has', async () => {
    expect(await hasSubIds('alice', files)).toBe(false);
    const first = await ensureSubIds('alice', files);
    expect(first.map((r) => r.start)).toEqual([131_072, 131_072]);
    await ensureSubIds('alice', files);
    expect(await readFile(files[0]!, 'utf8')).toBe('hearth-builder:1879048192:65536\nalice:131072:65536\n');
    expect(await readFile(files[1]!, 'utf8')).toBe('alice:131072:65536\n');
    expect(await hasSubIds('alice', files)).toBe(true);
  });
});
