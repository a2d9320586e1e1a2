import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HearthError } from '../errors.js';
import { DEFAULT_ARTIFACT_LIMITS, intakeArtifact, type ArtifactLimits } from './artifact.js';
import { makeZip, type ZipSpec } from '../../tests/helpers/zip.js';

const DOCKERFILE: ZipSpec = { name: 'Dockerfile', data: 'FROM scratch\nCOPY . /app\n' };

function hasZipTool(): boolean {
  try {
    execFileSync('zip', ['-v'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Every path under `root` with its kind, for "nothing was written outside" checks. */
async function tree(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, rel: string) => {
    for (const name of (await readdir(dir)).sort()) {
      const st = await lstat(join(dir, name));
      out.push(`${rel}${name}${st.isDirectory() ? '/' : st.isSymbolicLink() ? '@' : ''}`);
      if (st.isDirectory()) await walk(join(dir, name), `${rel}${name}/`);
    }
  };
  await walk(root, '');
  return out;
}

describe('intakeArtifact', () => {
  let tmp: string;
  let src: string;
  let dest: string;
  let oldUmask: number;

  beforeEach(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'hearth-artifact-'));
    src = join(tmp, 'src');
    await mkdir(src);
    // deep enough that "../../etc/x" from the context would still land inside tmp, where we look
    await mkdir(join(tmp, 'out', 'a', 'b'), { recursive: true });
    dest = join(tmp, 'out', 'a', 'b', 'ctx');
    oldUmask = process.umask(0o022);
  });

  afterEach(async () => {
    process.umask(oldUmask);
    await rm(tmp, { recursive: true, force: true });
  });

  async function zipFile(specs: readonly ZipSpec[], name = 'app.zip'): Promise<string> {
    const p = join(tmp, name);
    await writeFile(p, makeZip(specs));
    return p;
  }

  /**
   * Runs the intake expecting a failure with `code`; checks the error has a hint, that the
   * context does not exist and that nothing else under tmp changed.
   */
  async function expectRejects(
    source: string,
    code: string,
    limits: ArtifactLimits = DEFAULT_ARTIFACT_LIMITS,
  ): Promise<HearthError> {
    const before = await tree(tmp);
    const err: unknown = await intakeArtifact(source, dest, limits).then(
      () => new Error('the intake succeeded'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HearthError);
    const he = err as HearthError;
    expect(he.code, he.message).toBe(code);
    expect(he.message.length).toBeGreaterThan(10);
    expect(he.hint).toBeTruthy();
    expect(existsSync(dest)).toBe(false);
    expect(await tree(tmp)).toEqual(before);
    return he;
  }

  const small: ArtifactLimits = {
    maxEntries: 100,
    maxTotalBytes: 10_000,
    maxFileBytes: 5_000,
    maxCompressionRatio: 200,
  };

  describe('directory sources', () => {
    it('copies a directory with nested folders, file modes reduced to 0755/0644 and inside symlinks kept', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      await mkdir(join(src, 'app', 'lib'), { recursive: true });
      await writeFile(join(src, 'app', 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
      await writeFile(join(src, 'app', 'lib', 'secret.txt'), 'private', { mode: 0o600 });
      await writeFile(join(src, 'app', 'setuid'), 'x');
      await chmod(join(src, 'app', 'setuid'), 0o4755);
      await mkdir(join(src, 'empty'), { mode: 0o700 });
      await symlink('app/run.sh', join(src, 'run'));
      await symlink('lib', join(src, 'app', 'libdir'));
      await symlink('../Dockerfile', join(src, 'app', 'up'));
      await symlink('not-there-yet', join(src, 'dangling'));

      const r = await intakeArtifact(src, dest);

      expect(r).toEqual({ files: 8, bytes: 13 + 18 + 7 + 1 });
      expect(await readFile(join(dest, 'app', 'run.sh'), 'utf8')).toBe('#!/bin/sh\necho hi\n');
      expect((await stat(join(dest, 'app', 'run.sh'))).mode & 0o7777).toBe(0o755);
      expect((await stat(join(dest, 'app', 'lib', 'secret.txt'))).mode & 0o7777).toBe(0o644);
      expect((await stat(join(dest, 'app', 'setuid'))).mode & 0o7777).toBe(0o755);
      expect((await stat(join(dest, 'empty'))).mode & 0o7777).toBe(0o755);
      expect((await stat(dest)).mode & 0o7777).toBe(0o755);
      expect(await readlink(join(dest, 'run'))).toBe('app/run.sh');
      expect(await readlink(join(dest, 'app', 'libdir'))).toBe('lib');
      expect(await readlink(join(dest, 'app', 'up'))).toBe('../Dockerfile');
      expect(await readlink(join(dest, 'dangling'))).toBe('not-there-yet');
      expect(await readFile(join(dest, 'run'), 'utf8')).toContain('echo hi');
    });

    it('keeps modes whatever the umask', async () => {
      process.umask(0o077);
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      await mkdir(join(src, 'd'));
      await writeFile(join(src, 'd', 'x'), 'x', { mode: 0o755 });
      await intakeArtifact(src, dest);
      expect((await stat(join(dest, 'd'))).mode & 0o777).toBe(0o755);
      expect((await stat(join(dest, 'd', 'x'))).mode & 0o777).toBe(0o755);
      expect((await stat(join(dest, 'Dockerfile'))).mode & 0o777).toBe(0o644);
    });

    it('copies a directory into a destination inside it without copying the destination into itself', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      const inner = join(src, 'ctx');
      expect(await intakeArtifact(src, inner)).toEqual({ files: 1, bytes: 13 });
      expect((await readdir(inner)).sort()).toEqual(['Dockerfile']);
    });

    it('creates missing parents of the destination', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      const deep = join(tmp, 'new', 'parents', 'ctx');
      await intakeArtifact(src, deep);
      expect(existsSync(join(deep, 'Dockerfile'))).toBe(true);
    });

    it('rejects a directory without a Dockerfile', async () => {
      await writeFile(join(src, 'main.py'), 'print(1)');
      const e = await expectRejects(src, 'ARCHIVE_DOCKERFILE_NOT_FOUND');
      expect(e.message).toContain('no Dockerfile at the root of the directory');
    });

    it('rejects a directory whose Dockerfile is only in a subfolder, naming the folder to use instead', async () => {
      await mkdir(join(src, 'app'));
      await writeFile(join(src, 'app', 'Dockerfile'), 'FROM scratch\n');
      const e = await expectRejects(src, 'ARCHIVE_DOCKERFILE_NOT_FOUND');
      expect(e.hint).toContain(join(src, 'app'));
    });

    it('rejects a directory whose Dockerfile is a symlink', async () => {
      await writeFile(join(src, 'Dockerfile.real'), 'FROM scratch\n');
      await symlink('Dockerfile.real', join(src, 'Dockerfile'));
      const e = await expectRejects(src, 'ARCHIVE_DOCKERFILE_NOT_FOUND');
      expect(e.message).toContain('symlink');
    });

    it('rejects a symlink pointing outside the directory', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      await writeFile(join(tmp, 'outside.txt'), 'secret');
      await symlink('../outside.txt', join(src, 'escape'));
      const e = await expectRejects(src, 'ARCHIVE_UNSAFE_ENTRY');
      expect(e.message).toContain('escape');
      expect(e.message).toContain('outside');
    });

    it('rejects a symlink to an absolute path', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      await symlink('/etc/passwd', join(src, 'passwd'));
      const e = await expectRejects(src, 'ARCHIVE_UNSAFE_ENTRY');
      expect(e.message).toContain('absolute');
    });

    it('rejects a symlink to an absolute path even inside the directory (it would not point into the copy)', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      await symlink(join(src, 'Dockerfile'), join(src, 'df'));
      await expectRejects(src, 'ARCHIVE_UNSAFE_ENTRY');
    });

    it('rejects a symlink that climbs above the directory and comes back in by its name', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      await symlink('../src/Dockerfile', join(src, 'df'));
      await expectRejects(src, 'ARCHIVE_UNSAFE_ENTRY');
    });

    it('rejects a symlink that escapes through another symlink (d -> ., e -> d/../x)', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      await mkdir(join(src, 'sub'));
      await symlink('.', join(src, 'sub', 'here'));
      // lexically sub/here/../../x stays inside; the kernel resolves here to sub, so it is src/../x
      await symlink('here/../../outside.txt', join(src, 'sub', 'sneaky'));
      const e = await expectRejects(src, 'ARCHIVE_UNSAFE_ENTRY');
      expect(e.message).toContain('sneaky');
    });

    it('rejects a symlink loop', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      await symlink('b', join(src, 'a'));
      await symlink('a', join(src, 'b'));
      const e = await expectRejects(src, 'ARCHIVE_UNSAFE_ENTRY');
      expect(e.message).toContain('loop');
    });

    it('rejects a FIFO', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      execFileSync('mkfifo', [join(src, 'pipe')]);
      const e = await expectRejects(src, 'ARCHIVE_UNSAFE_ENTRY');
      expect(e.message).toContain('FIFO');
    });

    it('rejects a directory with too many entries', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      for (let i = 0; i < 5; i++) await writeFile(join(src, `f${i}`), 'x');
      await expectRejects(src, 'ARCHIVE_TOO_LARGE', { ...small, maxEntries: 5 });
    });

    it('rejects a directory with a file over the per-file limit', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      await writeFile(join(src, 'big'), Buffer.alloc(6_000));
      const e = await expectRejects(src, 'ARCHIVE_TOO_LARGE', small);
      expect(e.message).toContain('big');
    });

    it('rejects a directory over the total limit', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      for (let i = 0; i < 3; i++) await writeFile(join(src, `f${i}`), Buffer.alloc(4_000));
      await expectRejects(src, 'ARCHIVE_TOO_LARGE', small);
    });
  });

  describe('zip sources', () => {
    it('extracts a zip with nested folders, without directory entries, and modes reduced to 0755/0644', async () => {
      const zip = await zipFile([
        DOCKERFILE,
        { name: 'app/', unixMode: 0o040700 },
        { name: 'app/run.sh', data: '#!/bin/sh\necho hi\n', unixMode: 0o100755 },
        { name: 'app/lib/deep/util.txt', data: 'util', unixMode: 0o100600 },
        { name: 'app/setuid', data: 'x', unixMode: 0o104755 },
        { name: 'stored.bin', data: Buffer.from([0, 1, 2, 3]), method: 0 },
        { name: 'plain.txt', data: 'no unix mode', unixMode: 0 },
        { name: './dot/./file.txt', data: 'normalised' },
        { name: 'empty/' },
        { name: 'ünïcode.txt', data: 'utf8' },
      ]);
      const r = await intakeArtifact(zip, dest);
      expect(r.files).toBe(8);
      expect(r.bytes).toBe(25 + 18 + 4 + 1 + 4 + 12 + 10 + 4);
      expect(await readFile(join(dest, 'Dockerfile'), 'utf8')).toBe('FROM scratch\nCOPY . /app\n');
      expect(await readFile(join(dest, 'app', 'lib', 'deep', 'util.txt'), 'utf8')).toBe('util');
      expect([...(await readFile(join(dest, 'stored.bin')))]).toEqual([0, 1, 2, 3]);
      expect(await readFile(join(dest, 'dot', 'file.txt'), 'utf8')).toBe('normalised');
      expect(await readFile(join(dest, 'ünïcode.txt'), 'utf8')).toBe('utf8');
      expect((await stat(join(dest, 'app'))).mode & 0o7777).toBe(0o755);
      expect((await stat(join(dest, 'app', 'lib', 'deep'))).mode & 0o7777).toBe(0o755);
      expect((await stat(join(dest, 'app', 'run.sh'))).mode & 0o7777).toBe(0o755);
      expect((await stat(join(dest, 'app', 'lib', 'deep', 'util.txt'))).mode & 0o7777).toBe(0o644);
      expect((await stat(join(dest, 'app', 'setuid'))).mode & 0o7777).toBe(0o755);
      expect((await stat(join(dest, 'plain.txt'))).mode & 0o7777).toBe(0o644);
      expect((await stat(join(dest, 'empty'))).isDirectory()).toBe(true);
    });

    it.skipIf(!hasZipTool())(
      'extracts a zip made by the zip tool, following the symlinks it stored as files',
      async () => {
        await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
        await mkdir(join(src, 'bin'));
        await writeFile(join(src, 'bin', 'start'), '#!/bin/sh\n', { mode: 0o755 });
        await symlink('bin/start', join(src, 'start'));
        const zip = join(tmp, 'tool.zip');
        execFileSync('zip', ['-q', '-r', zip, '.'], { cwd: src });
        const r = await intakeArtifact(zip, dest);
        expect(r.files).toBe(3);
        expect((await stat(join(dest, 'bin', 'start'))).mode & 0o777).toBe(0o755);
        expect((await lstat(join(dest, 'start'))).isFile()).toBe(true);
      },
    );

    it.skipIf(!hasZipTool())('rejects a zip made by the zip tool with stored symlinks (-y)', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      await symlink('/etc/passwd', join(src, 'passwd'));
      const zip = join(tmp, 'tool.zip');
      execFileSync('zip', ['-q', '-r', '-y', zip, '.'], { cwd: src });
      const e = await expectRejects(zip, 'ARCHIVE_UNSAFE_ENTRY');
      expect(e.message).toContain('symlink');
    });

    it('rejects a zip without a Dockerfile', async () => {
      const e = await expectRejects(
        await zipFile([{ name: 'main.py', data: 'print(1)' }]),
        'ARCHIVE_DOCKERFILE_NOT_FOUND',
      );
      expect(e.message).toContain('no Dockerfile at the root of the zip');
    });

    it('rejects a zip whose Dockerfile is inside its single top-level folder, saying it must be at the zip root', async () => {
      const zip = await zipFile([
        { name: 'myapp/' },
        { name: 'myapp/Dockerfile', data: 'FROM scratch\n' },
        { name: 'myapp/main.py', data: 'print(1)' },
        { name: '__MACOSX/myapp/._Dockerfile', data: 'junk' },
      ]);
      const e = await expectRejects(zip, 'ARCHIVE_DOCKERFILE_NOT_FOUND');
      expect(e.message).toContain('myapp/');
      expect(e.hint).toContain('must be at the zip root, not inside a folder');
    });

    it('rejects a zip whose Dockerfile is only in a subfolder next to other files', async () => {
      const zip = await zipFile([
        { name: 'main.py', data: 'print(1)' },
        { name: 'docker/Dockerfile', data: 'FROM scratch\n' },
      ]);
      const e = await expectRejects(zip, 'ARCHIVE_DOCKERFILE_NOT_FOUND');
      expect(e.message).toContain('docker/Dockerfile');
    });

    it('rejects a zip whose root dockerfile is spelt in lower case', async () => {
      const e = await expectRejects(
        await zipFile([{ name: 'dockerfile', data: 'FROM scratch\n' }]),
        'ARCHIVE_DOCKERFILE_NOT_FOUND',
      );
      expect(e.message).toContain('case-sensitive');
    });

    it('rejects a zip whose Dockerfile is a directory', async () => {
      await expectRejects(
        await zipFile([{ name: 'Dockerfile/' }, { name: 'Dockerfile/x', data: 'x' }]),
        'ARCHIVE_DOCKERFILE_NOT_FOUND',
      );
    });

    it('rejects a zip-slip entry (../../etc/x) and writes nothing outside', async () => {
      const zip = await zipFile([DOCKERFILE, { name: '../../etc/x', data: 'pwned' }]);
      const e = await expectRejects(zip, 'ARCHIVE_UNSAFE_ENTRY');
      expect(e.message).toContain('..');
      expect(existsSync(join(tmp, 'out', 'a', 'etc'))).toBe(false);
    });

    it('rejects a ".." hidden in the middle of a path', async () => {
      await expectRejects(
        await zipFile([DOCKERFILE, { name: 'a/b/../../../x', data: 'pwned' }]),
        'ARCHIVE_UNSAFE_ENTRY',
      );
    });

    it('rejects an absolute entry path', async () => {
      const target = join(tmp, 'abs-target');
      const e = await expectRejects(
        await zipFile([DOCKERFILE, { name: target, data: 'pwned' }]),
        'ARCHIVE_UNSAFE_ENTRY',
      );
      expect(e.message).toContain('absolute');
      expect(existsSync(target)).toBe(false);
    });

    it('rejects a Windows drive path', async () => {
      await expectRejects(
        await zipFile([DOCKERFILE, { name: 'C:/Windows/x', data: 'x' }]),
        'ARCHIVE_UNSAFE_ENTRY',
      );
    });

    it('rejects backslashes used as separators', async () => {
      const e = await expectRejects(
        await zipFile([DOCKERFILE, { name: '..\\..\\evil.txt', data: 'pwned' }]),
        'ARCHIVE_UNSAFE_ENTRY',
      );
      expect(e.message).toContain('backslash');
      await expectRejects(
        await zipFile([DOCKERFILE, { name: 'dir\\file.txt', data: 'x' }]),
        'ARCHIVE_UNSAFE_ENTRY',
      );
    });

    it('rejects a NUL byte in a name, showing the name with control and bidi characters escaped', async () => {
      const e = await expectRejects(
        await zipFile([DOCKERFILE, { name: 'a\0.txt', data: 'x' }]),
        'ARCHIVE_UNSAFE_ENTRY',
      );
      expect(e.message).toContain('NUL');
      const bidi = await expectRejects(
        await zipFile([DOCKERFILE, { name: 'gpj.\u202eexe\0', data: 'x' }]),
        'ARCHIVE_UNSAFE_ENTRY',
      );
      expect(bidi.message).toContain('\\u202e'); // shown escaped, not reordering the message
    });

    it('rejects a name longer than 4096 bytes, and a path component longer than 255', async () => {
      const long = `${'d'.repeat(200)}/`.repeat(21) + 'f';
      const e = await expectRejects(
        await zipFile([DOCKERFILE, { name: long, data: 'x' }]),
        'ARCHIVE_UNSAFE_ENTRY',
      );
      expect(e.message).toContain('4096');
      await expectRejects(
        await zipFile([DOCKERFILE, { name: 'x'.repeat(300), data: 'x' }]),
        'ARCHIVE_UNSAFE_ENTRY',
      );
    });

    it('rejects a symlink entry', async () => {
      const e = await expectRejects(
        await zipFile([DOCKERFILE, { name: 'passwd', data: '/etc/passwd', method: 0, unixMode: 0o120777 }]),
        'ARCHIVE_UNSAFE_ENTRY',
      );
      expect(e.message).toContain('symlink');
    });

    it('rejects a device file, a FIFO and a socket entry', async () => {
      const cases: [number, string][] = [
        [0o020644, 'device'],
        [0o060644, 'device'],
        [0o010644, 'FIFO'],
        [0o140644, 'socket'],
      ];
      for (const [unixMode, word] of cases) {
        const e = await expectRejects(
          await zipFile([DOCKERFILE, { name: 'special', unixMode }]),
          'ARCHIVE_UNSAFE_ENTRY',
        );
        expect(e.message).toContain(word);
      }
    });

    it('rejects duplicate paths, paths differing only by case or normalisation, and a file used as a folder', async () => {
      const sets: ZipSpec[][] = [
        [DOCKERFILE, DOCKERFILE],
        [DOCKERFILE, { name: 'a.txt', data: '1' }, { name: './a.txt', data: '2' }],
        [DOCKERFILE, { name: 'a//b.txt', data: '1' }, { name: 'a/b.txt', data: '2' }],
        [DOCKERFILE, { name: 'README', data: '1' }, { name: 'readme', data: '2' }],
        [DOCKERFILE, { name: 'app/a.txt', data: '1' }, { name: 'APP/b.txt', data: '2' }],
        [DOCKERFILE, { name: 'caf\u00e9', data: '1' }, { name: 'cafe\u0301', data: '2' }],
        [DOCKERFILE, { name: 'a', data: '1' }, { name: 'a/b', data: '2' }],
        [DOCKERFILE, { name: 'a/b', data: '1' }, { name: 'a', data: '2' }],
      ];
      for (const specs of sets) await expectRejects(await zipFile(specs), 'ARCHIVE_UNSAFE_ENTRY');
    });

    it('accepts a directory entry after files inside it', async () => {
      await intakeArtifact(await zipFile([DOCKERFILE, { name: 'a/b', data: '1' }, { name: 'a/' }]), dest);
      expect(await readFile(join(dest, 'a', 'b'), 'utf8')).toBe('1');
    });

    it('rejects a zip with too many entries', async () => {
      const specs = [DOCKERFILE, ...Array.from({ length: 10 }, (_, i) => ({ name: `f${i}`, data: 'x' }))];
      const e = await expectRejects(await zipFile(specs), 'ARCHIVE_TOO_LARGE', { ...small, maxEntries: 10 });
      expect(e.message).toContain('10 entries');
    });

    it('rejects a zip with a file over the per-file limit', async () => {
      const zip = await zipFile([DOCKERFILE, { name: 'big.bin', data: Buffer.alloc(6_000, 7) }]);
      const e = await expectRejects(zip, 'ARCHIVE_TOO_LARGE', small);
      expect(e.message).toContain('big.bin');
    });

    it('rejects a zip over the total limit', async () => {
      const specs = [DOCKERFILE, ...[1, 2, 3].map((i) => ({ name: `f${i}`, data: Buffer.alloc(4_000, i) }))];
      await expectRejects(await zipFile(specs), 'ARCHIVE_TOO_LARGE', small);
    });

    it('rejects a zip bomb while inflating, stopping soon after the ratio limit', async () => {
      const bomb = Buffer.alloc(8 * 2 ** 20); // 8 MiB of zeros: about 8 KiB of deflate
      const zip = await zipFile([DOCKERFILE, { name: 'bomb.bin', data: bomb }]);
      expect((await stat(zip)).size).toBeLessThan(16 * 1024);
      const limits = { ...DEFAULT_ARTIFACT_LIMITS, maxCompressionRatio: 100 };
      const e = await expectRejects(zip, 'ARCHIVE_TOO_LARGE', limits);
      expect(e.message).toContain('compression ratio');
      const stoppedAt = Number(/more than (\d+) bytes/.exec(e.message)?.[1]);
      expect(stoppedAt).toBeLessThan(2 * 2 ** 20);
    });

    it('rejects a zip bomb spread over many entries that are each small (whole-archive ratio)', async () => {
      const piece = Buffer.alloc(512 * 1024);
      const specs = [
        DOCKERFILE,
        ...Array.from({ length: 10 }, (_, i) => ({ name: `part${i}`, data: piece })),
      ];
      const limits = { ...DEFAULT_ARTIFACT_LIMITS, maxCompressionRatio: 100 };
      const e = await expectRejects(await zipFile(specs), 'ARCHIVE_TOO_LARGE', limits);
      expect(e.message).toContain('-byte zip inflates');
    });

    it('rejects an entry whose header declares fewer bytes than its data inflates to', async () => {
      const zip = await zipFile([
        DOCKERFILE,
        { name: 'liar.bin', data: Buffer.alloc(100_000, 1), declaredSize: 100 },
      ]);
      const e = await expectRejects(zip, 'ARCHIVE_INVALID');
      expect(e.message).toContain('liar.bin');
      // with limits below the real size, it is still refused before the real size is written
      await expectRejects(zip, 'ARCHIVE_INVALID', small);
    });

    it('rejects a stored entry whose header size does not match its data', async () => {
      await expectRejects(
        await zipFile([DOCKERFILE, { name: 's', data: Buffer.alloc(1000), method: 0, declaredSize: 10 }]),
        'ARCHIVE_INVALID',
      );
    });

    it('rejects an entry whose CRC-32 does not match', async () => {
      const e = await expectRejects(
        await zipFile([DOCKERFILE, { name: 'x', data: 'data', crc: 1234 }]),
        'ARCHIVE_INVALID',
      );
      expect(e.message).toContain('CRC');
    });

    it('rejects an encrypted entry', async () => {
      const e = await expectRejects(
        await zipFile([DOCKERFILE, { name: 'x', data: 'data', flags: 1 }]),
        'ARCHIVE_INVALID',
      );
      expect(e.message).toContain('encrypted');
    });

    it('rejects an unsupported compression method', async () => {
      const e = await expectRejects(
        await zipFile([DOCKERFILE, { name: 'x', data: 'data', method: 12 }]),
        'ARCHIVE_INVALID',
      );
      expect(e.message).toContain('compression method 12');
    });

    it('rejects a file that is not a zip, naming a tarball when it sees one', async () => {
      const txt = join(tmp, 'notes.zip');
      await writeFile(txt, 'this is not a zip at all');
      await expectRejects(txt, 'ARCHIVE_INVALID');
      const tgz = join(tmp, 'app.tar.gz');
      await writeFile(tgz, gzipSync(Buffer.from('tar data')));
      const e = await expectRejects(tgz, 'ARCHIVE_INVALID');
      expect(e.hint).toContain('gzip');
      const empty = join(tmp, 'empty.zip');
      await writeFile(empty, '');
      await expectRejects(empty, 'ARCHIVE_INVALID');
    });

    it('rejects a truncated zip', async () => {
      const whole = makeZip([DOCKERFILE, { name: 'a.txt', data: 'hello '.repeat(100) }]);
      const cut = join(tmp, 'cut.zip');
      await writeFile(cut, whole.subarray(0, whole.length - 30));
      await expectRejects(cut, 'ARCHIVE_INVALID');
    });
  });

  describe('sources and destination', () => {
    it('takes file:// URLs of a directory and of a zip', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      expect(await intakeArtifact(pathToFileURL(src).href, dest)).toEqual({ files: 1, bytes: 13 });
      const zip = await zipFile([DOCKERFILE]);
      const dest2 = join(tmp, 'ctx2');
      expect(await intakeArtifact(pathToFileURL(zip).href, dest2)).toEqual({ files: 1, bytes: 25 });
    });

    it('rejects a path that does not exist, given as a path or a file:// URL', async () => {
      const missing = join(tmp, 'missing.zip');
      const e = await expectRejects(missing, 'CODE_ARTIFACT_NOT_FOUND');
      expect(e.message).toContain(missing);
      await expectRejects(pathToFileURL(missing).href, 'CODE_ARTIFACT_NOT_FOUND');
      await expectRejects('', 'CODE_ARTIFACT_NOT_FOUND');
    });

    it('rejects http(s):// and s3:// URIs without echoing credentials', async () => {
      for (const uri of [
        'http://example.com/app.zip',
        'HTTPS://user:hunter2@example.com/app.zip?sig=abc',
        's3://bucket/app.zip',
      ]) {
        const e = await expectRejects(uri, 'CODE_ARTIFACT_URI_UNSUPPORTED');
        expect(e.message).not.toContain('hunter2');
        expect(e.message).not.toContain('sig=abc');
      }
    });

    it('rejects a file:// URL naming another host', async () => {
      await expectRejects('file://otherhost/srv/app.zip', 'CODE_ARTIFACT_URI_UNSUPPORTED');
    });

    it('rejects a source that is neither a directory nor a file', async () => {
      execFileSync('mkfifo', [join(tmp, 'fifo')]);
      await expectRejects(join(tmp, 'fifo'), 'ARCHIVE_INVALID');
    });

    it('rejects an existing destination and leaves it untouched', async () => {
      await writeFile(join(src, 'Dockerfile'), 'FROM scratch\n');
      await mkdir(dest);
      await writeFile(join(dest, 'keep'), 'mine');
      const err = await intakeArtifact(src, dest).catch((e: unknown) => e);
      expect((err as HearthError).code).toBe('ARTIFACT_DEST_EXISTS');
      expect(await readFile(join(dest, 'keep'), 'utf8')).toBe('mine');
    });
  });
});
