import { execFileSync } from 'node:child_process';
import { copyFile, cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpGet } from '../../src/util/http-get.js';
import { buildImage, fixtureImage, openImageHarness, type ImageHarness } from '../helpers/images.js';
import { vmUrl } from '../helpers/vm.js';

describe('Dockerfile features', () => {
  let h: ImageHarness;
  let scratch: string;
  const names: string[] = [];

  beforeAll(async () => {
    h = await openImageHarness();
    scratch = await mkdtemp(join(tmpdir(), 'hearth-dockerfile-'));
  });

  afterAll(async () => {
    for (const n of names) await h.images.deleteImage(n).catch(() => undefined);
    await h.close();
    await rm(scratch, { recursive: true, force: true });
  });

  async function launchAndGet(name: string, port = 8080): Promise<{ status: number; body: string }> {
    const v = await h.images.runnableVersion(name);
    const vm = await h.engine.clone(await h.engine.template(v.id), { vmId: `df-${names.length}` });
    try {
      return await httpGet(await vmUrl(vm, port));
    } finally {
      await h.engine.destroy(vm.id);
    }
  }

  it('honours multi-stage builds, ARG with build args, ENV, COPY --from, ADD of a tarball, WORKDIR, USER, ENTRYPOINT + CMD', async () => {
    const ctx = join(scratch, 'everything');
    await cp(fixtureImage('everything'), ctx, { recursive: true });
    await mkdir(join(scratch, 'bundle'));
    await writeFile(join(scratch, 'bundle', 'one.txt'), '1');
    await writeFile(join(scratch, 'bundle', 'two.txt'), '2');
    execFileSync('tar', [
      '-C',
      join(scratch, 'bundle'),
      '-cf',
      join(ctx, 'bundle.tar'),
      'one.txt',
      'two.txt',
    ]);
    const { name, build } = await buildImage(h, 'everything', ctx, {
      buildArgs: { GREETING: 'bonjour' },
      environmentVariables: { EXTRA: 'from the image config' },
    });
    names.push(name);
    expect(build.buildState).toBe('SUCCESSFUL');
    const r = JSON.parse((await launchAndGet(name)).body) as Record<string, unknown>;
    expect(r).toMatchObject({
      argv: ['--from-cmd'],
      uid: 1234,
      gid: 1234,
      cwd: '/srv',
      home: '/home/appuser',
      greeting: 'bonjour from the builder stage',
      bundle: ['one.txt', 'two.txt'],
      env: { APP_PORT: '8080', MODE: 'image env', EXTRA: 'from the image config' },
    });
    // RUN steps ran in a user namespace where root is not host root (fail closed).
    const map = (r.build_uid_map as string)
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/).map(Number));
    const rootLine = map.find(([inside]) => inside === 0);
    expect(rootLine).toBeDefined();
    expect(rootLine![1]).not.toBe(0);
  });

  it('boots an image FROM scratch with no shell and no libc (a static binary)', async () => {
    const ctx = join(scratch, 'static');
    await mkdir(join(ctx, 'www'), { recursive: true });
    await copyFile('/bin/busybox', join(ctx, 'busybox')); // busybox-static: no shared libraries
    await writeFile(join(ctx, 'www', 'index.html'), 'served by a static binary\n');
    await writeFile(
      join(ctx, 'Dockerfile'),
      [
        'FROM scratch',
        'COPY busybox /bin/busybox',
        'COPY www /www',
        'ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]',
        '',
      ].join('\n'),
    );
    const { name, build } = await buildImage(h, 'scratch', ctx);
    names.push(name);
    expect(build.buildState).toBe('SUCCESSFUL');
    const r = await launchAndGet(name);
    expect(r).toMatchObject({ status: 200, body: 'served by a static binary\n' });
  });
});
