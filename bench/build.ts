/**
 * Build benchmark: examples/flask from artifact to SUCCESSFUL with the base image cached (every
 * Dockerfile step run, including apt-get from Debian's mirrors), then an unchanged rebuild (layer
 * cache). Ends with one JSON line.
 *
 *   npm run bench -- build
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Buildah } from '../src/builder/buildah.js';
import { MANAGED_IMAGES } from '../src/builder/managed-images.js';
import { DataDir } from '../src/config/data-dir.js';
import { ImageService } from '../src/core/images.js';
import { setupHost } from '../src/setup/setup.js';
import { openStore } from '../src/store/database.js';
import { createLogger } from '../src/util/log.js';
import { Engine } from '../src/vmm/engine.js';
import { round } from './stats.js';

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { 'data-dir': { type: 'string' }, memory: { type: 'string', default: '512' } },
  });
  const dataDir = values['data-dir'] ? new DataDir(values['data-dir']) : DataDir.fromEnv();
  await setupHost(dataDir);
  const engine = await Engine.open({ dataDir });
  const dbFile = join(dataDir.root, `bench-build-${randomBytes(4).toString('hex')}.db`);
  const store = await openStore(`sqlite:${dbFile}`);
  const images = new ImageService({
    store,
    engine,
    buildah: new Buildah(dataDir.builderDir),
    dataDir,
    log: createLogger('bench'),
    arnPrefix: 'arn:hearth:lambda:local:000000000000:microvm-image:',
  });
  const say = (s: string) => process.stdout.write(s + '\n');
  const name = `bench-flask-${randomBytes(3).toString('hex')}`;
  const spec = {
    name,
    codeArtifactUri: join(import.meta.dirname, '..', 'examples', 'flask'),
    baseImageArn: MANAGED_IMAGES[0]!.arn,
    memoryMiB: Number(values.memory),
  };
  try {
    let t = performance.now();
    const first = await images.createImage({ ...spec, noCache: true });
    const b1 = await images.waitForBuild(first.build.id);
    const buildS = (performance.now() - t) / 1000;
    if (b1.buildState !== 'SUCCESSFUL') throw new Error(`build failed: ${b1.failureCode}: ${b1.stateReason}`);
    say(
      `build (every step, base cached)   ${buildS.toFixed(1)} s   memory snapshot ${(b1.snapshotMemorySizeInBytes! / 2 ** 20).toFixed(1)} MiB`,
    );
    t = performance.now();
    const second = await images.updateImage(spec);
    const b2 = await images.waitForBuild(second.build.id);
    const rebuildS = (performance.now() - t) / 1000;
    if (b2.buildState !== 'SUCCESSFUL')
      throw new Error(`rebuild failed: ${b2.failureCode}: ${b2.stateReason}`);
    say(`unchanged rebuild (layer cache)   ${rebuildS.toFixed(1)} s`);
    say(
      JSON.stringify({
        build_s: round(buildS),
        rebuild_s: round(rebuildS),
        memory_snapshot_mib: round(b1.snapshotMemorySizeInBytes! / 2 ** 20),
        disk_snapshot_mib: round(b1.snapshotDiskSizeInBytes! / 2 ** 20),
        guest_memory_mib: spec.memoryMiB,
      }),
    );
  } finally {
    await images.deleteImage(name).catch(() => undefined);
    await images.close();
    await store.close();
    await engine.close();
    for (const s of ['', '-wal', '-shm']) await rm(dbFile + s, { force: true });
  }
}
