import { HearthError } from '../errors.js';

/** Setup needs root (apt, /dev/kvm, network namespaces) and was run as another user. */
export class NotRootError extends HearthError {
  readonly code = 'HOST_NOT_ROOT';
  constructor(what: string) {
    super(`${what} must run as root (uid 0); running as uid ${process.getuid?.() ?? '?'}`, {
      hint: 'run it again with sudo, or as root',
    });
  }
}

/** Debian packages Hearth needs are missing and cannot be installed here. */
export class MissingPackagesError extends HearthError {
  readonly code = 'HOST_PACKAGES_MISSING';
  constructor(
    readonly packages: readonly string[],
    reason: string,
  ) {
    super(`missing Debian packages: ${packages.join(', ')} (${reason})`, {
      hint: `install them with: apt-get install -y ${packages.join(' ')}`,
    });
  }
}

/** This host is not a Debian-like system with apt and dpkg. */
export class UnsupportedHostError extends HearthError {
  readonly code = 'HOST_UNSUPPORTED';
  constructor(reason: string) {
    super(`unsupported host: ${reason}`, { hint: 'Hearth runs on Debian 12 (bookworm) x86_64 hosts' });
  }
}
