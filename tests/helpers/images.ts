import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Buildah } from '../../src/builder/buildah.js';
import { BASE_IMAGE_REF, MANAGED_IMAGES } from '../../src/builder/managed-images.js';
import { ImageService } from '../../src/core/images.js';
import type { ImageBuildRecord } from '../../src/core/model.js';
import { openStore, type Store } from '../../src/store/database.js';
import { createLogger } from '../../src/util/log.js';
import type { Engine } from '../../src/vmm/engine.js';
import { testDataDir } from './env.js';
import { openEngine } from './vm.js';

export const BASE_ARN = MANAGED_IMAGES[0]!.arn;
export const ARN_PREFIX = 'arn:hearth:lambda:local:000000000000:microvm-image:';
export { BASE_IMAGE_REF };

export interface ImageHarness {
  engine: Engine;
  store: Store;
  images: ImageService;
  buildah: Buildah;
  close(): Promise<void>;
}

/** An engine, a fresh SQLite store and an image service on the test data directory. */
export async function openImageHarness(opts: { defaultReadyTimeoutS?: number } = {}): Promise<ImageHarness> {
  const dataDir = testDataDir();
  const engine = await openEngine();
  const dbFile = join(dataDir.root, `test-${randomBytes(4).toString('hex')}.db`);
  const store = await openStore(`sqlite:${dbFile}`);
  const buildah = new Buildah(dataDir.builderDir);
  const images = new ImageService({
    store,
    engine,
    buildah,
    dataDir,
    log: createLogger('test.images'),
    arnPrefix: ARN_PREFIX,
    ...(opts.defaultReadyTimeoutS ? { defaultReadyTimeoutS: opts.defaultReadyTimeoutS } : {}),
  });
  return {
    engine,
    store,
    images,
    buildah,
    async close() {
      await images.close();
      await store.close();
      await engine.close();
      for (const suffix of ['', '-wal', '-shm']) await rm(dbFile + suffix, { force: true });
    },
  };
}

/** Creates an image (name made unique) and waits for its first build. */
export async function buildImage(
  h: ImageHarness,
  name: string,
  source: string,
  extra: Partial<Parameters<ImageService['createImage']>[0]> = {},
): Promise<{ name: string; build: ImageBuildRecord }> {
  const unique = `${name}-${randomBytes(3).toString('hex')}`;
  const r = await h.images.createImage({
    name: unique,
    codeArtifactUri: source,
    baseImageArn: BASE_ARN,
    memoryMiB: 512,
    ...extra,
  });
  return { name: unique, build: await h.images.waitForBuild(r.build.id) };
}

export function fixtureImage(name: string): string {
  return join(import.meta.dirname, '..', 'fixtures', 'images', name);
}

export const EXAMPLES = join(import.meta.dirname, '..', '..', 'examples');
