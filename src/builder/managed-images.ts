import { appendFile, chmod, readFile, stat } from 'node:fs/promises';
import { run } from '../util/exec.js';
import type { BaseDisk } from './base-rootfs.js';
import { BUILDER_SUBID_COUNT, BUILDER_SUBID_START, BUILDER_USER, type Buildah } from './buildah.js';
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
const IMPORT_REVISION = '3';
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
 * Creates the unprivileged system user builds run as, gives it 65536 subordinate uids and gids for
 * its user namespace, and lets unprivileged users open /dev/net/tun (the Debian default, 0666;
 * creating a device with it still needs CAP_NET_ADMIN in the owning namespace), which slirp4netns
 * needs for the network of RUN steps. Idempotent.
 */
export async function ensureBuilderUser(home: string): Promise<void> {
  const passwd = await readFile('/etc/passwd', 'utf8');
  if (!passwd.split('\n').some((l) => l.startsWith(`${BUILDER_USER}:`))) {
    await run('useradd', [
      '--system',
      '--user-group',
      '--no-create-home',
      '--home-dir',
      home,
      '--shell',
      '/usr/sbin/nologin',
      BUILDER_USER,
    ]);
  }
  for (const file of ['/etc/subuid', '/etc/subgid']) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (!new RegExp(`^${BUILDER_USER}:`, 'm').test(text)) {
      await appendFile(
        file,
        `${text && !text.endsWith('\n') ? '\n' : ''}${BUILDER_USER}:${BUILDER_SUBID_START}:${BUILDER_SUBID_COUNT}\n`,
      );
    }
  }
  await ensureTunUsable();
}

/**
 * Lets unprivileged users open /dev/net/tun (the Debian default, 0666; creating a device with it
 * still needs CAP_NET_ADMIN in the owning namespace): slirp4netns needs it for the network of
 * RUN steps in rootless builds. Root only; idempotent.
 */
export async function ensureTunUsable(): Promise<void> {
  const tun = await stat('/dev/net/tun').catch(() => undefined);
  if (tun && (tun.mode & 0o666) !== 0o666) await chmod('/dev/net/tun', 0o666);
}
