import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempPathFor, writeFileAtomic } from './fs-atomic.js';

describe('writeFileAtomic', () => {
  let dir: string;
  let oldUmask: number;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-fs-atomic-'));
    oldUmask = process.umask(0o022);
  });

  afterEach(async () => {
    process.umask(oldUmask);
    await rm(dir, { recursive: true, force: true });
  });

  it('creates a file with the given content', async () => {
    const p = join(dir, 'a.txt');
    await writeFileAtomic(p, 'first');
    expect(await readFile(p, 'utf8')).toBe('first');
  });

  it('replaces the content of an existing file', async () => {
    const p = join(dir, 'a.txt');
    await writeFile(p, 'old content that is longer than the new one');
    await writeFileAtomic(p, 'new');
    expect(await readFile(p, 'utf8')).toBe('new');
    await writeFileAtomic(p, Buffer.from([1, 2, 3]));
    expect([...(await readFile(p))]).toEqual([1, 2, 3]);
  });

  it('leaves no temporary files in the directory', async () => {
    const p = join(dir, 'a.txt');
    await writeFileAtomic(p, 'one');
    await writeFileAtomic(p, 'two');
    await Promise.all([writeFileAtomic(join(dir, 'b'), 'b'), writeFileAtomic(join(dir, 'c'), 'c')]);
    expect((await readdir(dir)).sort()).toEqual(['a.txt', 'b', 'c']);
  });

  it('applies the given mode', async () => {
    const p = join(dir, 'secret');
    await writeFileAtomic(p, 'x', 0o600);
    expect((await stat(p)).mode & 0o777).toBe(0o600);
    const q = join(dir, 'ro');
    await writeFileAtomic(q, 'x', 0o444);
    expect((await stat(q)).mode & 0o777).toBe(0o444);
  });

  it('uses mode 0644 by default', async () => {
    const p = join(dir, 'plain');
    await writeFileAtomic(p, 'x');
    expect((await stat(p)).mode & 0o777).toBe(0o644);
  });

  it('replaces the mode of an existing file with the given one', async () => {
    const p = join(dir, 'f');
    await writeFile(p, 'old', { mode: 0o644 });
    await writeFileAtomic(p, 'new', 0o600);
    expect((await stat(p)).mode & 0o777).toBe(0o600);
  });

  it('replaces a read-only file', async () => {
    const p = join(dir, 'manifest.json');
    await writeFileAtomic(p, 'v1', 0o444);
    await writeFileAtomic(p, 'v2', 0o444);
    expect(await readFile(p, 'utf8')).toBe('v2');
  });

  it('creates missing parent directories', async () => {
    const p = join(dir, 'x', 'y', 'z.json');
    await writeFileAtomic(p, '{}');
    expect(await readFile(p, 'utf8')).toBe('{}');
  });

  it('gives a new file a new inode (rename, not an in-place rewrite)', async () => {
    const p = join(dir, 'f');
    await writeFile(p, 'old');
    const before = await stat(p);
    await writeFileAtomic(p, 'new');
    expect((await stat(p)).ino).not.toBe(before.ino);
  });
});

describe('tempPathFor', () => {
  it('names a hidden file in the same directory, different each time', () => {
    const a = tempPathFor('/some/dir/file.json');
    const b = tempPathFor('/some/dir/file.json');
    expect(a).toMatch(/^\/some\/dir\/\.file\.json\.tmp-[0-9a-f]{8}$/);
    expect(a).not.toBe(b);
  });
});
