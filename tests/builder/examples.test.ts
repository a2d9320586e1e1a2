import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { versionPaths } from '../../src/builder/build-image.js';
import { httpGet } from '../../src/util/http-get.js';
import { testDataDir } from '../helpers/env.js';
import { buildImage, BASE_ARN, EXAMPLES, openImageHarness, type ImageHarness } from '../helpers/images.js';
import { vmUrl } from '../helpers/vm.js';

type FlaskReply = { hostname: string; requests: number; process_started: number; pid: number };

async function collect(h: ImageHarness, buildId: string): Promise<string> {
  const lines: string[] = [];
  for await (const l of h.images.logs.read(buildId)) lines.push(l);
  return lines.join('\n');
}

describe('examples/flask', () => {
  let h: ImageHarness;
  let name: string;

  beforeAll(async () => {
    h = await openImageHarness();
    const r = await buildImage(h, 'flask', join(EXAMPLES, 'flask'));
    name = r.name;
    expect(r.build).toMatchObject({ buildState: 'SUCCESSFUL' });
  });

  afterAll(async () => {
    await h.images.deleteImage(name).catch(() => undefined);
    await h.close();
  });

  it('builds SUCCESSFUL: an ACTIVE version 1.0, a CREATED image, a build record with snapshot sizes', async () => {
    const image = await h.images.getImage(name);
    expect(image).toMatchObject({ state: 'CREATED', latestActiveVersion: '1.0', latestVersion: '1.0' });
    expect(image.arn).toMatch(new RegExp(`:microvm-image:${name}$`));
    expect(await h.images.getVersion(name, '1.0')).toMatchObject({ state: 'SUCCESSFUL', status: 'ACTIVE' });
    const build = await h.images.latestBuild(name, '1.0');
    expect(build.snapshotMemorySizeInBytes).toBeGreaterThan(16 * 2 ** 20);
    expect(build.snapshotMemorySizeInBytes).toBeLessThan(512 * 2 ** 20);
    expect(build.snapshotDiskSizeInBytes).toBeGreaterThan(build.codeInstallSizeInBytes! / 2);
    expect(build.codeInstallSizeInBytes).toBeGreaterThan(100 * 2 ** 20);
  });

  it('keeps the build log: Dockerfile steps, the bake, the outcome', async () => {
    const build = await h.images.latestBuild(name, '1.0');
    const log = await collect(h, build.id);
    expect(log).toContain('STEP 1/6: FROM hearth/base:bookworm');
    expect(log).toMatch(/waiting for port 8080 to accept connections/);
    expect(log).toMatch(/build finished in [\d.]+ s/);
  });

  it('launches a clone that answers at once and shows the state made before the snapshot', async () => {
    const v = await h.images.runnableVersion(name);
    const template = await h.engine.template(v.id);
    const t0 = Date.now();
    const a = await h.engine.clone(template, { vmId: 'flask-a' });
    const ra = JSON.parse((await httpGet(await vmUrl(a))).body) as FlaskReply;
    const firstReplyMs = Date.now() - t0;
    const b = await h.engine.clone(template, { vmId: 'flask-b' });
    const rb = JSON.parse((await httpGet(await vmUrl(b))).body) as FlaskReply;
    try {
      // The warm-up request of the build was request 1: both clones continue from it.
      expect(ra).toMatchObject({ requests: 2, hostname: 'flask-a' });
      expect(rb).toMatchObject({ requests: 2, hostname: 'flask-b' });
      expect(ra.process_started).toBe(rb.process_started); // the same gunicorn process, started at build time
      expect(firstReplyMs).toBeLessThan(5_000); // a restore, not a boot (a cold boot takes ~10 s here)
    } finally {
      await h.engine.destroy('flask-a');
      await h.engine.destroy('flask-b');
    }
  });

  it('rebuilds an unchanged artifact from the layer cache as version 2.0', async () => {
    const r = await h.images.updateImage({
      name,
      codeArtifactUri: join(EXAMPLES, 'flask'),
      baseImageArn: BASE_ARN,
      memoryMiB: 512,
    });
    expect(r.version.version).toBe('2.0');
    const build = await h.images.waitForBuild(r.build.id);
    expect(build.buildState).toBe('SUCCESSFUL');
    const log = await collect(h, build.id);
    expect(log.match(/Using cache/g)?.length ?? 0).toBeGreaterThanOrEqual(4);
    expect(await h.images.getImage(name)).toMatchObject({ state: 'UPDATED', latestActiveVersion: '2.0' });
  });

  it('deleting a version frees its disk and snapshot; the last version cannot be deleted alone', async () => {
    const v1 = await h.images.getVersion(name, '1.0');
    const paths = versionPaths(testDataDir(), v1.id);
    expect(existsSync(paths.rootDisk)).toBe(true);
    expect(existsSync(join(testDataDir().templatesDir, v1.id))).toBe(true);
    await h.images.deleteVersion(name, '1.0');
    expect(existsSync(paths.dir)).toBe(false);
    expect(existsSync(join(testDataDir().templatesDir, v1.id))).toBe(false);
    expect(await h.buildah.imageExists(paths.buildTag)).toBe(false);
    await expect(h.images.getVersion(name, '1.0')).rejects.toMatchObject({ code: 'IMAGE_NOT_FOUND' });
    await expect(h.images.deleteVersion(name, '2.0')).rejects.toMatchObject({ code: 'IMAGE_CONFLICT' });
  });
});

describe('examples/hooks', () => {
  let h: ImageHarness;
  let name: string;

  beforeAll(async () => {
    h = await openImageHarness();
    const r = await buildImage(h, 'hooks', join(EXAMPLES, 'hooks'), {
      hooks: {
        port: 9000,
        microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 120, validate: 'ENABLED' },
        microvmHooks: { run: 'ENABLED', resume: 'ENABLED', suspend: 'ENABLED', terminate: 'ENABLED' },
      },
    });
    name = r.name;
    expect(r.build).toMatchObject({ buildState: 'SUCCESSFUL' });
  });

  afterAll(async () => {
    await h.images.deleteImage(name).catch(() => undefined);
    await h.close();
  });

  it('snapshots only after the ready hook answered 200 (503 is retried), and passes validate', async () => {
    const build = await h.images.latestBuild(name, '1.0');
    const log = await collect(h, build.id);
    expect(log).toContain('waiting for the ready hook on port 9000');
    expect(log).toContain('validate hook passed');
    const v = await h.images.runnableVersion(name);
    const vm = await h.engine.clone(await h.engine.template(v.id), { vmId: 'hooks-a' });
    try {
      const state = JSON.parse((await httpGet(await vmUrl(vm))).body) as {
        initialised: boolean;
        hooks: Record<string, number>;
        secret: string | null;
      };
      expect(state.initialised).toBe(true);
      expect(state.hooks.ready).toBeGreaterThanOrEqual(2); // answered 503 at least once, then 200
      expect(state.hooks.validate).toBe(0); // validate ran on another VM, restored from this snapshot
      expect(state.secret).toBeNull(); // per-VM secrets come from the run hook, after launch
    } finally {
      await h.engine.destroy('hooks-a');
    }
  });
});
