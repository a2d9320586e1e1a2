import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Buildah, BUILDER_USER, userIds } from '../../src/builder/buildah.js';
import { versionPaths } from '../../src/builder/build-image.js';
import { ImageService } from '../../src/core/images.js';
import { openStore } from '../../src/store/database.js';
import { createLogger } from '../../src/util/log.js';
import { Engine } from '../../src/vmm/engine.js';
import { testDataDir } from '../helpers/env.js';
import { ARN_PREFIX, EXAMPLES, fixtureImage } from '../helpers/images.js';
import { leftovers, NOTHING_LEFT } from '../helpers/vm.js';

const CHILD = join(import.meta.dirname, '..', 'fixtures', 'scripts', 'build-child.ts');

/** Starts a build in a child process and SIGKILLs that process once the build reaches `phase`. */
async function buildAndKillAt(
  dbFile: string,
  name: string,
  source: string,
  phase: RegExp,
  delayMs: number,
): Promise<void> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dbFile, name, source], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((r) => child.on('exit', r));
  const lines = createInterface({ input: child.stdout! });
  for await (const line of lines) {
    if (phase.test(line)) break;
    if (line === 'phase done') throw new Error('the build finished before it could be interrupted');
  }
  await new Promise((r) => setTimeout(r, delayMs));
  child.kill('SIGKILL');
  await exited;
}

async function builderProcesses(storageRoot: string): Promise<number[]> {
  const { uid } = await userIds(BUILDER_USER);
  const pids: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = await stat(`/proc/${d}`).catch(() => undefined);
    if (st?.uid !== uid) continue;
    if ((await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '')).includes(storageRoot))
      pids.push(Number(d));
  }
  return pids;
}

describe('a build killed midway', () => {
  for (const [when, source, phase, delayMs] of [
    ['while buildah runs a step', fixtureImage('slow-build'), /building the Dockerfile/, 4_000],
    ['while the image boots for its snapshot', join(EXAMPLES, 'flask'), /booting the image/, 1_500],
  ] as const) {
    it(`leaves no half image when the server is killed ${when}`, async () => {
      const dataDir = testDataDir();
      const dbFile = join(dataDir.root, `interrupted-${randomBytes(4).toString('hex')}.db`);
      const name = `interrupted-${randomBytes(3).toString('hex')}`;
      await buildAndKillAt(dbFile, name, source, phase, delayMs);

      // The server restarts: the engine and the image service clean up after the crash.
      const engine = await Engine.open({ dataDir });
      const store = await openStore(`sqlite:${dbFile}`);
      const buildah = new Buildah(dataDir.builderDir);
      const images = new ImageService({
        store,
        engine,
        buildah,
        dataDir,
        log: createLogger('test'),
        arnPrefix: ARN_PREFIX,
      });
      try {
        await images.recover();
        const version = await images.getVersion(name, '1.0');
        expect(version.state).toBe('FAILED');
        expect(version.stateReason).toContain('BUILD_INTERRUPTED');
        const build = await images.latestBuild(name, '1.0');
        expect(build).toMatchObject({ buildState: 'FAILED', failureCode: 'BUILD_INTERRUPTED' });
        expect(await images.getImage(name)).toMatchObject({ state: 'CREATE_FAILED' });
        const paths = versionPaths(dataDir, version.id);
        expect(existsSync(paths.dir)).toBe(false);
        expect(existsSync(join(dataDir.templatesDir, version.id))).toBe(false);
        expect(existsSync(join(dataDir.vmsDir, `bake-${version.id}`))).toBe(false);
        expect(await buildah.imageExists(paths.buildTag)).toBe(false);
        expect(await builderProcesses(buildah.storageRoot)).toEqual([]);
        expect(await leftovers(engine)).toEqual(NOTHING_LEFT);
        // The build can simply be run again.
        await images.deleteImage(name);
      } finally {
        await store.close();
        await engine.close();
        for (const s of ['', '-wal', '-shm']) await rm(dbFile + s, { force: true });
      }
    });
  }
});
