import { existsSync } from 'node:fs';
import { cp, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { versionPaths } from '../../src/builder/build-image.js';
import type { BuildFailureCode } from '../../src/core/model.js';
import { testDataDir } from '../helpers/env.js';
import {
  BASE_ARN,
  buildImage,
  fixtureImage,
  openImageHarness,
  type ImageHarness,
} from '../helpers/images.js';
import { leftovers, NOTHING_LEFT } from '../helpers/vm.js';
import { makeZip } from '../helpers/zip.js';

describe('build failures', () => {
  let h: ImageHarness;
  let scratch: string;

  beforeAll(async () => {
    h = await openImageHarness({ defaultReadyTimeoutS: 20 });
    scratch = await mkdtemp(join(tmpdir(), 'hearth-build-failures-'));
  });

  afterAll(async () => {
    await h.close();
    await rm(scratch, { recursive: true, force: true });
  });

  /** Builds `source`, expects FAILED with `code`, and checks that only the record and the log remain. */
  async function expectFailure(
    source: string,
    code: BuildFailureCode,
    extra: Parameters<typeof buildImage>[3] = {},
  ) {
    const { name, build } = await buildImage(h, code.toLowerCase().replace(/_/g, '-'), source, extra);
    expect(build).toMatchObject({ buildState: 'FAILED', failureCode: code });
    expect(build.stateReason).toBeTruthy();
    const version = await h.images.getVersion(name, '1.0');
    expect(version.state).toBe('FAILED');
    expect(version.stateReason).toContain(code);
    expect(await h.images.getImage(name)).toMatchObject({
      state: 'CREATE_FAILED',
      latestFailedVersion: '1.0',
    });
    await expect(h.images.runnableVersion(name)).rejects.toMatchObject({ code: 'IMAGE_NO_ACTIVE_VERSION' });
    // Nothing of the version is left but its record and its log.
    const paths = versionPaths(testDataDir(), version.id);
    expect(existsSync(paths.dir)).toBe(false);
    expect(existsSync(join(testDataDir().templatesDir, version.id))).toBe(false);
    expect(await h.buildah.imageExists(paths.buildTag)).toBe(false);
    expect(await leftovers(h.engine)).toEqual(NOTHING_LEFT);
    expect(await readdir(join(testDataDir().root, 'build-contexts')).catch(() => [])).not.toContain(build.id);
    const log: string[] = [];
    for await (const l of h.images.logs.read(build.id)) log.push(l);
    expect(log.join('\n')).toContain(`build failed: ${code}`);
    return { name, build, log: log.join('\n') };
  }

  it('rejects an artifact without a Dockerfile at its root: ARCHIVE_DOCKERFILE_NOT_FOUND', async () => {
    await expectFailure(fixtureImage('no-dockerfile'), 'ARCHIVE_DOCKERFILE_NOT_FOUND');
  });

  it('rejects a zip that would write outside its directory (zip-slip): ARCHIVE_UNSAFE_ENTRY, nothing written', async () => {
    const zip = join(scratch, 'slip.zip');
    const escape = join(testDataDir().root, 'build-contexts', 'zip-slip-escaped');
    await writeFile(
      zip,
      makeZip([
        { name: 'Dockerfile', data: 'FROM hearth/base:bookworm\n' },
        { name: '../zip-slip-escaped', data: 'pwned' },
      ]),
    );
    await expectFailure(zip, 'ARCHIVE_UNSAFE_ENTRY');
    expect(existsSync(escape)).toBe(false);
  });

  it('reports a failing Dockerfile step: CONTAINER_BUILD_FAILED with the step in the log', async () => {
    const { build, log } = await expectFailure(fixtureImage('run-fails'), 'CONTAINER_BUILD_FAILED');
    expect(log).toContain('about to fail on purpose');
    expect(build.stateReason).toMatch(/RUN echo "about to fail on purpose" && false/);
  });

  it('bounds the wait for readiness: READY_TIMEOUT with the last console lines', async () => {
    const { build } = await expectFailure(fixtureImage('never-ready'), 'READY_TIMEOUT');
    expect(build.stateReason).toContain('did not accept connections within 20 s');
    expect(build.stateReason).toContain('never-ready app started');
  });

  it('reports a ready hook that answers an error: READY_HOOK_FAILED', async () => {
    await expectFailure(fixtureImage('hook-app'), 'READY_HOOK_FAILED', {
      environmentVariables: { READY_STATUS: '500' },
      hooks: { port: 9000, microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 60 } },
    });
  });

  it('times out a ready hook that keeps answering 503: READY_TIMEOUT', async () => {
    const { build } = await expectFailure(fixtureImage('hook-app'), 'READY_TIMEOUT', {
      environmentVariables: { READY_STATUS: '503' },
      hooks: { port: 9000, microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 15 } },
    });
    expect(build.stateReason).toContain('did not answer 200 within 15 s');
  });

  it('fails a build whose validate hook fails on the restored snapshot: VALIDATE_HOOK_FAILED', async () => {
    await expectFailure(fixtureImage('hook-app'), 'VALIDATE_HOOK_FAILED', {
      environmentVariables: { VALIDATE_STATUS: '500' },
      hooks: {
        port: 9000,
        microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 60, validate: 'ENABLED' },
      },
    });
  });

  it('reports a root filesystem larger than the disk: DISK_STORAGE_FULL', async () => {
    await expectFailure(fixtureImage('too-big'), 'DISK_STORAGE_FULL', { diskSizeMiB: 256 });
  });

  it('rejects invalid image specs before building anything', async () => {
    const base = { codeArtifactUri: fixtureImage('run-fails'), baseImageArn: BASE_ARN };
    await expect(h.images.createImage({ ...base, name: 'bad name!' })).rejects.toMatchObject({
      code: 'VALIDATION',
      field: 'name',
    });
    await expect(h.images.createImage({ ...base, name: 'mem', memoryMiB: 768 })).rejects.toMatchObject({
      code: 'VALIDATION',
      message: expect.stringContaining('512, 1024, 2048, 4096, 8192'),
    });
    await expect(
      h.images.createImage({
        ...base,
        name: 'hooks-no-port',
        hooks: { microvmImageHooks: { ready: 'ENABLED' } },
      }),
    ).rejects.toMatchObject({ code: 'VALIDATION', field: 'hooks.port' });
    await expect(
      h.images.createImage({
        ...base,
        name: 'run-no-ready',
        hooks: { port: 9000, microvmHooks: { run: 'ENABLED' } },
      }),
    ).rejects.toMatchObject({ code: 'VALIDATION', message: expect.stringContaining('need the ready hook') });
    await expect(
      h.images.createImage({ ...base, name: 'disk', memoryMiB: 512, diskSizeMiB: 9000 }),
    ).rejects.toMatchObject({
      code: 'VALIDATION',
      message: expect.stringContaining('from 256 to 8192'),
    });
    expect((await h.store.images.list()).items.map((i) => i.name)).not.toContain('mem');
  });

  it('rejects a second image with the same name, pointing to UpdateMicrovmImage', async () => {
    const src = join(scratch, 'dup');
    await cp(fixtureImage('run-fails'), src, { recursive: true });
    const r = await h.images.createImage({
      name: 'dup-name',
      codeArtifactUri: src,
      baseImageArn: BASE_ARN,
      memoryMiB: 512,
    });
    await expect(
      h.images.createImage({ name: 'dup-name', codeArtifactUri: src, baseImageArn: BASE_ARN }),
    ).rejects.toMatchObject({
      code: 'IMAGE_CONFLICT',
      hint: expect.stringContaining('UpdateMicrovmImage'),
    });
    await h.images.waitForBuild(r.build.id);
  });
});
