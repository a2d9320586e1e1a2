import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256, sha256File } from './hash.js';

describe('sha256File (on a worker thread)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-hash-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('hashes files of any size, many at once, as node:crypto does over the whole content', async () => {
    const files = await Promise.all(
      [0, 1, (1 << 20) - 1, 1 << 20, 3 * (1 << 20) + 17].map(async (n, i) => {
        const data = randomBytes(n);
        const f = join(dir, `f${i}`);
        await writeFile(f, data);
        return { f, want: createHash('sha256').update(data).digest('hex') };
      }),
    );
    const got = await Promise.all(files.map((x) => sha256File(x.f)));
    expect(got).toEqual(files.map((x) => x.want));
    const sparse = join(dir, 'sparse');
    await writeFile(sparse, '');
    await truncate(sparse, 8 << 20);
    expect(await sha256File(sparse)).toBe(sha256(Buffer.alloc(8 << 20)));
  });

  it('rejects with the error code of a file it cannot read, and keeps serving others', async () => {
    const e = await sha256File(join(dir, 'absent')).catch((err: NodeJS.ErrnoException) => err);
    expect((e as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(await sha256File(join(dir, 'f0'))).toBe(sha256(''));
  });
});
