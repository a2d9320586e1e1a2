import { appendFile, readFile } from 'node:fs/promises';
import type { BaseDisk } from './base-rootfs.js';
import { SUBORDINATE_ID_START, type Buildah } from './buildah.js';
import { createLogger } from '../util/log.js';

const log = createLogger('builder.base');

/** A base image Hearth provides, like ListManagedMicrovmImages returns. */
export interface ManagedImage {
  name: string;
  /** What Dockerfiles write after FROM. */
  reference: string;
  arn: string;
  description: string;
}

export interface ManagedImageVersion {
  name: string;
  version: string;
  status: 'AVAILABLE' | 'DEPRECATED';
  createdAt: string;
}

export const BASE_IMAGE_REF = 'hearth/base:bookworm';
const LOCAL_REF = `localhost/${BASE_IMAGE_REF}`;
const VERSION_LABEL = 'io.hearth.base.version';
/** Bumped when the way the base image is imported changes, so hosts re-import it. */
const IMPORT_REVISION = '2';
export const MANAGED_IMAGE_ARN_PREFIX = 'arn:hearth:lambda:local:hearth:microvm-image:';

export const MANAGED_IMAGES: readonly ManagedImage[] = [
  {
    name: 'bookworm',
    reference: BASE_IMAGE_REF,
    arn: `${MANAGED_IMAGE_ARN_PREFIX}bookworm`,
    description:
      'Debian 12 (bookworm), minimal, with python3 and CA certificates; built from Debian packages',
  },
];

/** Versions of the managed images this host has (the current base disk's build). */
export function managedVersions(base: BaseDisk): ManagedImageVersion[] {
  return [{ name: 'bookworm', version: base.name, status: 'AVAILABLE', createdAt: base.createdAt }];
}

/**
 * Makes `hearth/base:bookworm` available to builds: imports the base root filesystem tarball into
 * Hearth's buildah storage (as localhost/hearth/base:bookworm) unless the same version is there.
 */
export async function ensureBaseImage(buildah: Buildah, base: BaseDisk): Promise<void> {
  if (await buildah.imageExists(LOCAL_REF)) {
    const cfg = await buildah.imageConfig(LOCAL_REF);
    if (cfg.Labels?.[VERSION_LABEL] === `${base.name}/${IMPORT_REVISION}`) return;
  }
  log.info('importing the managed base image', { ref: BASE_IMAGE_REF, version: base.name });
  await buildah.importRootfs(base.rootfsTar, LOCAL_REF, {
    env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
    cmd: ['/bin/bash'],
    labels: { [VERSION_LABEL]: `${base.name}/${IMPORT_REVISION}` },
  });
}

/**
 * Gives the `containers` user (whose ranges buildah's --userns=auto draws from) subordinate uids and
 * gids, above anything a normal system allocates. Idempotent.
 */
export async function ensureSubordinateIds(): Promise<void> {
  for (const file of ['/etc/subuid', '/etc/subgid']) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (!/^containers:/m.test(text))
      await appendFile(file, `${text && !text.endsWith('\n') ? '\n' : ''}containers:2147483647:2147483648\n`);
  }
}
