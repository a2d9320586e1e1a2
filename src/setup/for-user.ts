/**
 * `hearth setup --for-user <name>`: root prepares a data directory that an unprivileged user then
 * serves from (`hearth serve --data-dir <dir>`, no privilege). These are the checks that keep that
 * from handing the user something that is not theirs to have.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { DataDir } from '../config/data-dir.js';
import { HearthError } from '../errors.js';
import { run } from '../util/exec.js';

/** A user of this host, as the passwd database has it. */
export interface HostUser {
  name: string;
  uid: number;
  gid: number;
}

/** `--for-user` names no user of this host. */
export class UnknownUserError extends HearthError {
  readonly code = 'HOST_USER_NOT_FOUND';
  constructor(name: string) {
    super(`there is no user '${name.slice(0, 64)}' on this host`, {
      hint: 'create it first (e.g. useradd --create-home <name>), or name an existing user',
    });
  }
}

/** `--for-user` names root: a Hearth run as root needs no such preparation. */
export class RootTargetError extends HearthError {
  readonly code = 'HOST_USER_IS_ROOT';
  constructor(name: string) {
    super(`'${name.slice(0, 64)}' is root (uid 0): --for-user is for unprivileged users`, {
      hint: 'run `hearth setup` (without --for-user) for a Hearth run as root',
    });
  }
}

/** The data directory holds another user's Hearth (its database or snapshots). */
export class DataDirOwnedError extends HearthError {
  readonly code = 'HOST_DATA_DIR_OWNED';
  constructor(dir: string, what: string, uid: number, user: HostUser) {
    super(`${dir} already holds the ${what} of uid ${uid}, not of ${user.name} (uid ${user.uid})`, {
      hint: `give ${user.name} a data directory of its own: hearth setup --for-user ${user.name} --data-dir <new dir>`,
    });
  }
}

const USER_NAME = /^[a-z_][a-z0-9_.-]{0,31}\$?$/i;

/** Looks `name` up in the passwd database (getent: local files and NSS). */
export async function lookupUser(name: string): Promise<HostUser> {
  if (!USER_NAME.test(name)) throw new UnknownUserError(name);
  const r = await run('getent', ['passwd', name], { allowFailure: true });
  const f = r.stdout.trim().split('\n')[0]?.split(':') ?? [];
  if (r.exitCode !== 0 || f[0] !== name) throw new UnknownUserError(name);
  const user = { name, uid: Number(f[2]), gid: Number(f[3]) };
  if (!Number.isInteger(user.uid) || !Number.isInteger(user.gid)) throw new UnknownUserError(name);
  if (user.uid === 0) throw new RootTargetError(name);
  return user;
}

/**
 * Refuses a data directory whose database or snapshots belong to someone other than `user` (e.g.
 * root's own Hearth): setup --for-user gives every file in it to the user. A new directory, or one
 * prepared for the user before, is fine.
 */
export async function assertDataDirFor(dataDir: DataDir, user: HostUser): Promise<void> {
  for (const [what, path] of [
    ['database', dataDir.databaseFile],
    ['snapshots', dataDir.templatesDir],
    ['microVMs', dataDir.vmsDir],
    ['engine lock', join(dataDir.root, 'engine.lock')],
  ] as const) {
    const st = await stat(path).catch(() => undefined);
    if (st && st.uid !== user.uid) throw new DataDirOwnedError(dataDir.root, what, st.uid, user);
  }
}
