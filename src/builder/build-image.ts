import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { DataDir } from '../config/data-dir.js';
import type { BuildFailureCode, ImageVersionConfig } from '../core/model.js';
import type { Engine } from '../vmm/engine.js';
import { DEFAULT_ARTIFACT_LIMITS, intakeArtifact, redactUri } from './artifact.js';
import { fetchArtifact, isRemoteArtifactUri, type S3Settings } from './artifact-fetch.js';
import { bake } from './bake.js';
import { BuildFailure } from './build-failure.js';
import { buildFailureDetail, type Buildah } from './buildah.js';
import { NoCommandError, workloadFromImage } from './image-config.js';
import { DiskFullError, imageToDisk } from './rootfs-disk.js';

/** How remote (http(s)://, s3://) code artifacts are fetched; see artifact-fetch.ts. */
export interface ArtifactFetchSettings {
  /** Without it (or without its endpoint), s3:// URIs are refused. */
  s3?: S3Settings;
  /** Deadline of one download, ms. Default 300 000. */
  timeoutMs?: number;
  /** Largest download, bytes. Default DEFAULT_ARTIFACT_LIMITS.maxTotalBytes. */
  maxBytes?: number;
}

export interface BuildDeps {
  engine: Engine;
  buildah: Buildah;
  dataDir: DataDir;
  artifactFetch?: ArtifactFetchSettings;
}

export interface BuildJob {
  buildId: string;
  /** The image version's internal id: names its disk, its buildah tag and its template. */
  versionId: string;
  config: ImageVersionConfig;
  /** Receives the build's log, line by line. */
  log: (line: string) => void;
  /** Ready timeout when the ready hook is not enabled, seconds. */
  defaultReadyTimeoutS?: number;
}

export interface BuildOutput {
  templateId: string;
  rootDisk: string;
  memorySnapshotBytes: number;
  diskSnapshotBytes: number;
  codeInstallBytes: number;
}

const ARTIFACT_CODES = new Set<string>([
  'ARCHIVE_DOCKERFILE_NOT_FOUND',
  'ARCHIVE_INVALID',
  'ARCHIVE_TOO_LARGE',
  'ARCHIVE_UNSAFE_ENTRY',
  'CODE_ARTIFACT_FETCH_FAILED',
  'CODE_ARTIFACT_NOT_FOUND',
  'CODE_ARTIFACT_URI_UNSUPPORTED',
]);

/** Paths of one image version's built files. */
export function versionPaths(
  dataDir: DataDir,
  versionId: string,
): { dir: string; rootDisk: string; buildTag: string } {
  const dir = join(dataDir.imagesDir, versionId);
  return { dir, rootDisk: join(dir, 'rootfs.ext4'), buildTag: `localhost/hearth-build/${versionId}` };
}

async function allocatedBytes(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

/**
 * Builds one image version, from code artifact to ready-to-serve template:
 *   intake -> buildah build -> root disk -> bake (boot, ready, snapshot, validate).
 * Throws BuildFailure with the failure code for the build record; on any failure nothing of the
 * version is left (disk, template, build tag), only the build log the caller keeps.
 */
export async function buildImageVersion(deps: BuildDeps, job: BuildJob): Promise<BuildOutput> {
  const { engine, buildah, dataDir } = deps;
  const paths = versionPaths(dataDir, job.versionId);
  const contextDir = join(dataDir.root, 'build-contexts', job.buildId);
  /** Where a remote artifact is downloaded to; a fixed name, never derived from the URI. */
  const downloadZip = join(dataDir.root, 'build-contexts', `${job.buildId}.artifact.zip`);
  const say = (s: string) => job.log(`[hearth] ${s}`);
  const t0 = Date.now();
  let ok = false;
  try {
    await mkdir(join(dataDir.root, 'build-contexts'), { recursive: true });
    await rm(contextDir, { recursive: true, force: true });
    await rm(downloadZip, { force: true });
    const uri = job.config.codeArtifactUri;
    const remote = isRemoteArtifactUri(uri);
    say(`fetching the code artifact ${remote ? redactUri(uri) : uri}`);
    try {
      if (remote) {
        // Downloaded to a local zip first, which then gets every check of a local zip.
        const f = deps.artifactFetch ?? {};
        const { bytes } = await fetchArtifact(uri, downloadZip, {
          ...(f.s3 ? { s3: f.s3 } : {}),
          maxBytes: f.maxBytes ?? DEFAULT_ARTIFACT_LIMITS.maxTotalBytes,
          timeoutMs: f.timeoutMs ?? 300_000,
        });
        say(`downloaded ${bytes} bytes`);
      }
      const { files, bytes } = await intakeArtifact(remote ? downloadZip : uri, contextDir);
      say(`code artifact: ${files} files, ${bytes} bytes`);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code && ARTIFACT_CODES.has(code)) {
        const hint = (e as { hint?: string }).hint;
        throw new BuildFailure(code as BuildFailureCode, (e as Error).message, {
          cause: e,
          ...(hint ? { hint } : {}),
        });
      }
      throw e;
    } finally {
      await rm(downloadZip, { force: true });
    }

    say('building the Dockerfile with buildah (isolation: OCI container in its own user namespace)');
    try {
      await buildah.build({
        contextDir,
        tag: paths.buildTag,
        buildArgs: job.config.buildArgs,
        ...(job.config.noCache ? { noCache: true } : {}),
        onLog: job.log,
      });
    } catch (e) {
      throw new BuildFailure('CONTAINER_BUILD_FAILED', buildFailureDetail(e), { cause: e });
    }
    const imageConfig = await buildah.imageConfig(paths.buildTag);
    let workload;
    try {
      workload = workloadFromImage(imageConfig, job.config.environmentVariables);
    } catch (e) {
      if (e instanceof NoCommandError) throw new BuildFailure('CONTAINER_BUILD_FAILED', e.message);
      throw e;
    }
    say(`workload: ${JSON.stringify(workload.argv)} as ${workload.user ?? 'root'} in ${workload.cwd}`);

    say(`writing the root disk (${job.config.diskSizeMiB} MiB)`);
    await mkdir(paths.dir, { recursive: true });
    let codeInstallBytes = 0;
    try {
      codeInstallBytes = (await imageToDisk(buildah, paths.buildTag, paths.rootDisk, job.config.diskSizeMiB))
        .contentBytes;
    } catch (e) {
      if (e instanceof DiskFullError || (e as NodeJS.ErrnoException).code === 'ENOSPC') {
        throw new BuildFailure('DISK_STORAGE_FULL', (e as Error).message, { cause: e });
      }
      throw e;
    }

    const template = await bake(engine, {
      vmId: `bake-${job.versionId}`,
      templateId: job.versionId,
      rootDisk: paths.rootDisk,
      memoryMiB: job.config.memoryMiB,
      vcpus: job.config.vcpus,
      workload,
      appPort: job.config.appPort,
      ...(job.config.hooks ? { hooks: job.config.hooks } : {}),
      ...(job.defaultReadyTimeoutS ? { defaultReadyTimeoutS: job.defaultReadyTimeoutS } : {}),
      log: say,
    });
    const out: BuildOutput = {
      templateId: template.id,
      rootDisk: paths.rootDisk,
      memorySnapshotBytes: await allocatedBytes(join(template.dir, 'memory.raw')),
      diskSnapshotBytes:
        (await allocatedBytes(paths.rootDisk)) + (await allocatedBytes(join(template.dir, 'disk.qcow2'))),
      codeInstallBytes,
    };
    say(
      `build finished in ${((Date.now() - t0) / 1000).toFixed(1)} s (memory snapshot ${(out.memorySnapshotBytes / 2 ** 20).toFixed(1)} MiB)`,
    );
    ok = true;
    return out;
  } catch (e) {
    if (e instanceof BuildFailure) say(`build failed: ${e.failureCode}: ${e.reason}`);
    else say(`build failed: ${(e as Error).message}`);
    throw e instanceof BuildFailure
      ? e
      : new BuildFailure('INTERNAL_ERROR', (e as Error).message, { cause: e });
  } finally {
    await rm(contextDir, { recursive: true, force: true });
    await rm(downloadZip, { force: true });
    if (!ok) await removeVersionFiles(deps, job.versionId);
  }
}

/** Deletes everything a version's build produced: template, root disk, buildah tag. Idempotent. */
export async function removeVersionFiles(deps: BuildDeps, versionId: string): Promise<void> {
  const paths = versionPaths(deps.dataDir, versionId);
  await deps.engine.destroy(`bake-${versionId}`).catch(() => undefined);
  await deps.engine.destroy(`bake-${versionId}-validate`).catch(() => undefined);
  await deps.engine.deleteTemplate(versionId).catch(() => undefined);
  await rm(paths.dir, { recursive: true, force: true });
  await deps.buildah.removeImage(paths.buildTag);
}
