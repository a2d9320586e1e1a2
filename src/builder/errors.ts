import { HearthError } from '../errors.js';

/**
 * Errors of the code-artifact intake (src/builder/artifact.ts). The ARCHIVE_* and CODE_ARTIFACT_*
 * codes are also build failure codes (core/model.ts BuildFailureCode), so they name the failure the
 * same way on the build record.
 */

/**
 * The code artifact's path (or the file:// URL's path) does not exist or cannot be read, or a remote
 * artifact's server answered 404 (then `path` is the redacted URI).
 */
export class CodeArtifactNotFoundError extends HearthError {
  readonly code = 'CODE_ARTIFACT_NOT_FOUND';
  constructor(
    readonly path: string,
    reason: string,
    options?: { cause?: unknown; hint?: string },
  ) {
    super(`code artifact ${path} ${reason}`, {
      ...options,
      hint:
        options?.hint ??
        'give the absolute path (or a file:// URL) of a directory or .zip file that exists on the Hearth host and that Hearth can read',
    });
  }
}

/**
 * The code artifact URI has a scheme Hearth does not handle, is malformed, or cannot be fetched with
 * the server's configuration (an s3:// URI without an S3 endpoint). `uri` is already redacted.
 */
export class UnsupportedArtifactUriError extends HearthError {
  readonly code = 'CODE_ARTIFACT_URI_UNSUPPORTED';
  constructor(
    readonly uri: string,
    reason: string,
    options?: { cause?: unknown; hint?: string },
  ) {
    super(`code artifact URI ${uri}: ${reason}`, {
      ...options,
      hint:
        options?.hint ??
        'give a local path or a file:// URL (file:///absolute/path) of a directory or .zip file on the Hearth host, or an http(s):// or s3:// URL of a .zip file',
    });
  }
}

/**
 * Fetching a remote code artifact (src/builder/artifact-fetch.ts) failed: a non-2xx answer (other
 * than 404), too many redirects, a timeout, or a network error. `uri` is already redacted.
 */
export class CodeArtifactFetchError extends HearthError {
  readonly code = 'CODE_ARTIFACT_FETCH_FAILED';
  /** The HTTP status of the final answer, when there was one. */
  readonly status: number | undefined;
  constructor(
    readonly uri: string,
    reason: string,
    options?: { cause?: unknown; hint?: string; status?: number },
  ) {
    super(`fetching the code artifact ${uri} failed: ${reason}`, {
      ...(options?.cause !== undefined ? { cause: options.cause } : {}),
      hint:
        options?.hint ??
        'check that the URL is right and that the Hearth host can reach it; for a presigned URL, check it has not expired',
    });
    this.status = options?.status;
  }
}

/** No regular file named `Dockerfile` at the root of the directory or zip. */
export class DockerfileNotFoundError extends HearthError {
  readonly code = 'ARCHIVE_DOCKERFILE_NOT_FOUND';
  constructor(message: string, hint: string) {
    super(message, { hint });
  }
}

/**
 * An entry that could write outside the build context or is not a plain file, directory or (in a
 * directory source) contained symlink: absolute or `..` paths, backslashes, NUL bytes, symlinks,
 * devices, FIFOs, sockets, duplicate or conflicting paths, over-long names.
 */
export class UnsafeArchiveEntryError extends HearthError {
  readonly code = 'ARCHIVE_UNSAFE_ENTRY';
  constructor(
    readonly entryName: string,
    readonly reason: string,
    hint?: string,
  ) {
    super(`unsafe entry ${entryName} in the code artifact: ${reason}`, {
      hint:
        hint ??
        'the code artifact may only hold regular files and directories with relative paths inside it (and, in a directory, symlinks that stay inside it); remove or replace this entry',
    });
  }
}

/** A limit of ArtifactLimits was crossed: entries, total bytes, bytes of one file, compression ratio. */
export class ArchiveTooLargeError extends HearthError {
  readonly code = 'ARCHIVE_TOO_LARGE';
  constructor(
    /** The name of the ArtifactLimits field that was crossed, or maxDownloadBytes of artifact-fetch.ts. */
    readonly limit:
      'maxEntries' | 'maxTotalBytes' | 'maxFileBytes' | 'maxCompressionRatio' | 'maxDownloadBytes',
    message: string,
  ) {
    super(message, {
      hint:
        limit === 'maxCompressionRatio'
          ? 'this looks like a zip bomb; if the data is genuine, ship it compressed in its own format or generate it during the build'
          : 'make the code artifact smaller (leave out build outputs, dependencies the Dockerfile installs, .git, large data); fetch big files during the build instead',
    });
  }
}

/** Not a zip, a corrupt zip, encrypted entries or an unsupported compression method. */
export class InvalidArchiveError extends HearthError {
  readonly code = 'ARCHIVE_INVALID';
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, {
      ...options,
      hint:
        options?.hint ??
        'give a directory or a standard, unencrypted .zip file (stored or deflate), e.g. made with `cd app && zip -r ../app.zip .`',
    });
  }
}

/**
 * intakeArtifact (or fetchArtifact) was given a destination that already exists (a caller bug: it
 * is never removed).
 */
export class ArtifactDestinationExistsError extends HearthError {
  readonly code = 'ARTIFACT_DEST_EXISTS';
  constructor(
    readonly destDir: string,
    what = 'the build context directory',
  ) {
    super(`${what} ${destDir} already exists; the intake needs a fresh one`, {
      hint: 'remove it first or choose a new path',
    });
  }
}
