/**
 * Running Hearth as an unprivileged user from the (root) test process: a system user made once,
 * a data directory prepared for it by `hearth setup --for-user` from the test data directory's
 * cached artifacts (kernel, guest files, base disk: copied, never rebuilt), and child processes
 * started as that user with setpriv.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DataDir } from '../../src/config/data-dir.js';
import { run } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/package-root.js';
import { testDataDir } from './env.js';

/** The unprivileged user the rootless tests run Hearth as. */
export const TEST_USER = 'hearth-rl-test';

export interface TestUser {
  name: string;
  uid: number;
  gid: number;
}

/** Creates the test user (a system user, no home, no shell) unless it exists. Idempotent. */
export async function ensureTestUser(): Promise<TestUser> {
  const known = await run('id', ['-u', TEST_USER], { allowFailure: true });
  if (known.exitCode !== 0)
    await run('useradd', [
      '--system',
      '--user-group',
      '--no-create-home',
      '--home-dir',
      '/nonexistent',
      '--shell',
      '/usr/sbin/nologin',
      TEST_USER,
    ]).catch(async (e: unknown) => {
      // Another test process may have created it meanwhile.
      if ((await run('id', ['-u', TEST_USER], { allowFailure: true })).exitCode !== 0) throw e;
    });
  const uid = Number((await run('id', ['-u', TEST_USER])).stdout.trim());
  const gid = Number((await run('id', ['-g', TEST_USER])).stdout.trim());
  return { name: TEST_USER, uid, gid };
}

/** The user's data directory: beside the test data directory. */
export function userDataDir(): DataDir {
  return new DataDir(`${testDataDir().root}-user`);
}

/** Runs the CLI (src/cli/main.ts) as root and resolves with its output; throws on failure. */
export async function hearthCli(args: string[], timeoutMs = 600_000): Promise<string> {
  const r = await run(
    process.execPath,
    ['--import', 'tsx', join(packageRoot(), 'src', 'cli', 'main.ts'), ...args],
    {
      cwd: packageRoot(),
      timeoutMs,
    },
  );
  return r.stdout;
}

/**
 * Prepares the user's data directory: the root test data directory's cached kernel, guest files,
 * base disk and accelerator probe are copied in where missing (reflinks where the filesystem has
 * them), then `hearth setup --for-user` finds them cached, gives the user a subordinate uid range
 * and the directory, and imports the base image as the user (once).
 */
export async function prepareUserDataDir(user: TestUser): Promise<DataDir> {
  const from = testDataDir();
  const to = userDataDir();
  await mkdir(to.cacheDir, { recursive: true });
  for (const entry of await readdir(from.cacheDir)) {
    if (!['kernel', 'guest', 'base-disks', 'accel.json'].includes(entry)) continue;
    if (existsSync(join(to.cacheDir, entry)) && entry !== 'guest') continue;
    await run('cp', ['-a', '--reflink=auto', '-n', '-r', join(from.cacheDir, entry), to.cacheDir]);
  }
  await hearthCli(['setup', '--for-user', user.name, '--data-dir', to.root]);
  return to;
}

/**
 * Starts `args` (node with tsx, cwd the repository) as `user` via setpriv: its uid, gid and groups,
 * no capabilities. HOME is the data directory, HEARTH_DATA_DIR is set.
 */
export function spawnAsUser(
  user: TestUser,
  dataDir: DataDir,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): ChildProcess {
  return spawn(
    'setpriv',
    [
      `--reuid=${user.uid}`,
      `--regid=${user.gid}`,
      '--init-groups',
      '--',
      process.execPath,
      '--import',
      'tsx',
      ...args,
    ],
    {
      cwd: packageRoot(),
      stdio: ['pipe', 'pipe', 'pipe'],
      env: {
        ...process.env,
        ...env,
        HOME: dataDir.root,
        USER: user.name,
        LOGNAME: user.name,
        HEARTH_DATA_DIR: dataDir.root,
      },
    },
  );
}

/** Copies template `id` of the root test data directory into `dataDir`, owned by `user`. */
export async function copyTemplate(id: string, dataDir: DataDir, user: TestUser): Promise<void> {
  const dst = join(dataDir.templatesDir, id);
  await mkdir(dataDir.templatesDir, { recursive: true });
  await cp(join(testDataDir().templatesDir, id), dst, { recursive: true, force: true });
  await run('chown', ['-R', `${user.uid}:${user.gid}`, dataDir.templatesDir]);
}
