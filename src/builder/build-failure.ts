import { HearthError } from '../errors.js';
import type { BuildFailureCode } from '../core/model.js';

const HINTS: Partial<Record<BuildFailureCode, string>> = {
  ARCHIVE_DOCKERFILE_NOT_FOUND: 'put a file named Dockerfile at the root of the directory or zip',
  CONTAINER_BUILD_FAILED: 'fix the Dockerfile step shown in the build log and build again',
  DISK_STORAGE_FULL: 'ask for a larger disk (diskSizeMiB), make the image smaller, or free space on the host',
  READY_TIMEOUT:
    'make the app listen on its port (default 8080) or answer the ready hook sooner, or raise the ready timeout; the console lines show what it printed',
  READY_HOOK_FAILED: 'the ready hook must answer 200 when ready, or 503 to be asked again',
  VALIDATE_HOOK_FAILED: 'the validate hook must answer 200 on a VM restored from the snapshot',
  BUILD_INTERRUPTED: 'the server stopped during the build; build again',
};

/** A build failed for a reason the user can act on; `failureCode` goes on the build record. */
export class BuildFailure extends HearthError {
  readonly code = 'BUILD_FAILED';
  constructor(
    readonly failureCode: BuildFailureCode,
    readonly reason: string,
    options?: { cause?: unknown; hint?: string },
  ) {
    const hint = options?.hint ?? HINTS[failureCode];
    super(`${failureCode}: ${reason}`, {
      ...(options?.cause !== undefined ? { cause: options.cause } : {}),
      ...(hint ? { hint } : {}),
    });
  }
}
