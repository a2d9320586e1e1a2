import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { HearthError } from '../errors.js';
import type { DataDir } from '../config/data-dir.js';
import type { Buildah } from '../builder/buildah.js';
import { BuildFailure } from '../builder/build-failure.js';
import { buildImageVersion, removeVersionFiles, type ArtifactFetchSettings } from '../builder/build-image.js';
import { MANAGED_IMAGE_ARN_PREFIX, MANAGED_IMAGES } from '../builder/managed-images.js';
import type { Store } from '../store/database.js';
import type { Page, PageRequest } from '../store/pagination.js';
import type { Engine } from '../vmm/engine.js';
import type { Logger } from '../util/log.js';
import { BuildLogs } from './build-logs.js';
import { normalizeImageSpec, ValidationError, type ImageSpec } from './image-spec.js';
import { withTags, withoutTags } from './tags.js';
import type { ImageBuildRecord, ImageRecord, ImageVersionRecord, VersionStatus } from './model.js';

/** No image (or version, or build) with this name exists. */
export class ImageNotFoundError extends HearthError {
  readonly code = 'IMAGE_NOT_FOUND';
  constructor(what: string) {
    super(`${what} not found`, { hint: 'list images with `hearth images` (ListMicrovmImages)' });
  }
}

/** The request conflicts with the image's current state (e.g. a duplicate name, a version in use). */
export class ImageConflictError extends HearthError {
  readonly code = 'IMAGE_CONFLICT';
  constructor(message: string, hint?: string) {
    super(message, hint ? { hint } : undefined);
  }
}

/** No version of the image can run: none is SUCCESSFUL and ACTIVE (RunMicrovm answers 404). */
export class NoActiveVersionError extends HearthError {
  readonly code = 'IMAGE_NO_ACTIVE_VERSION';
  constructor(name: string, version?: string) {
    super(
      version
        ? `version ${version} of image ${name} is not SUCCESSFUL and ACTIVE`
        : `No active version found for image ${name}`,
      {
        hint: 'build the image successfully, or mark a successful version ACTIVE',
      },
    );
  }
}

export interface ImageServiceOptions {
  store: Store;
  engine: Engine;
  buildah: Buildah;
  dataDir: DataDir;
  log: Logger;
  /** Prefix of image ARNs: arn:hearth:lambda:<region>:<account>:microvm-image: */
  arnPrefix: string;
  /** Builds that run at once; more wait in order. Default 1 (builds are CPU-heavy). */
  maxConcurrentBuilds?: number;
  /** Ready timeout of builds whose ready hook is not enabled, seconds. Default 300. */
  defaultReadyTimeoutS?: number;
  /** How builds fetch http(s):// and s3:// code artifacts (S3 endpoint and credentials, limits). */
  artifactFetch?: ArtifactFetchSettings;
  /** Says whether microVMs still use a version (such a version cannot be deleted). */
  versionInUse?: (imageName: string, version: string) => Promise<boolean>;
}

export interface CreatedVersion {
  image: ImageRecord;
  version: ImageVersionRecord;
  build: ImageBuildRecord;
}

/**
 * Images, their versions and builds: each create or update makes a new version, built in the
 * background (queued); the store records every state. A version can run once it is SUCCESSFUL and
 * ACTIVE; its engine template is named by its internal id.
 */
export class ImageService {
  readonly logs: BuildLogs;
  private readonly queue: (() => Promise<void>)[] = [];
  private running = 0;
  private readonly done = new Map<string, Promise<ImageBuildRecord>>();
  private readonly doneResolvers = new Map<string, (b: ImageBuildRecord) => void>();
  private closed = false;

  constructor(private readonly o: ImageServiceOptions) {
    this.logs = new BuildLogs(o.dataDir.buildLogsDir);
  }

  arnOf(name: string): string {
    return `${this.o.arnPrefix}${name}`;
  }

  /** Accepts an image name or ARN (of this service); ValidationError for another ARN. */
  nameFromIdentifier(identifier: string): string {
    if (identifier.startsWith('arn:')) {
      if (!identifier.startsWith(this.o.arnPrefix))
        throw new ValidationError(
          'imageIdentifier',
          `'${identifier}' is not an image ARN of this Hearth (${this.o.arnPrefix}<name>)`,
        );
      return identifier.slice(this.o.arnPrefix.length);
    }
    return identifier;
  }

  /**
   * Marks what a crashed server left half done: builds PENDING or IN_PROGRESS become FAILED
   * (BUILD_INTERRUPTED) with their files removed, images stuck CREATING/UPDATING become *_FAILED,
   * and versions stuck DELETING are deleted. Call once at start, before accepting requests.
   */
  async recover(): Promise<void> {
    const killed = await this.o.buildah.cleanupAfterCrash();
    if (killed > 0) this.o.log.warn('stopped build processes left by a previous server', { count: killed });
    let cursor: string | undefined;
    do {
      const page = await this.o.store.images.list({ limit: 200, ...(cursor ? { cursor } : {}) });
      for (const image of page.items) await this.recoverImage(image);
      cursor = page.nextCursor;
    } while (cursor);
  }

  private async recoverImage(image: ImageRecord): Promise<void> {
    const s = this.o.store;
    let cursor: string | undefined;
    do {
      const page = await s.versions.listByImage(image.name, { limit: 200, ...(cursor ? { cursor } : {}) });
      for (const v of page.items) {
        if (v.state === 'PENDING' || v.state === 'IN_PROGRESS') {
          this.o.log.warn('build interrupted by a restart: marking it failed', {
            image: image.name,
            version: v.version,
          });
          await removeVersionFiles(this.deps(), v.id);
          await s.versions.update(image.name, v.version, {
            state: 'FAILED',
            stateReason: 'BUILD_INTERRUPTED: the server stopped during the build',
          });
          const builds = await s.builds.listByVersion(image.name, v.version, { limit: 1000 });
          for (const b of builds.items) {
            if (b.buildState === 'PENDING' || b.buildState === 'IN_PROGRESS') {
              await s.builds.update(b.id, {
                buildState: 'FAILED',
                failureCode: 'BUILD_INTERRUPTED',
                stateReason: 'the server stopped during the build',
                endedAt: new Date().toISOString(),
              });
            }
          }
          await s.images.update(image.name, { latestFailedVersion: v.version });
        } else if (v.state === 'DELETING') {
          await removeVersionFiles(this.deps(), v.id);
          await s.versions.delete(image.name, v.version);
        } else if (v.state === 'SUCCESSFUL' && v.status === 'ACTIVE') {
          await this.retireIfUnrestorable(v);
        }
      }
      cursor = page.nextCursor;
    } while (cursor);
    await this.refreshLatestActive(image.name);
    const fresh = (await s.images.get(image.name))!;
    if (fresh.state === 'CREATING')
      await s.images.update(image.name, {
        state: 'CREATE_FAILED',
        stateReason: 'the server stopped during the build',
      });
    if (fresh.state === 'UPDATING')
      await s.images.update(image.name, {
        state: 'UPDATE_FAILED',
        stateReason: 'the server stopped during the build',
      });
    if (fresh.state === 'DELETING') await this.deleteImage(image.name);
  }

  /**
   * An ACTIVE version whose snapshot was made for another machine (QEMU, guest kernel, CPU model or
   * accelerator changed since the build) can launch nothing here: it becomes INACTIVE with the
   * reason, so RunMicrovm answers "no active version" and UpdateMicrovmImage rebuilds it.
   */
  private async retireIfUnrestorable(v: ImageVersionRecord): Promise<void> {
    try {
      await this.o.engine.checkTemplate(v.id);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code !== 'VMM_SNAPSHOT_INCOMPATIBLE' && code !== 'VMM_NOT_FOUND') throw e;
      this.o.log.warn('image version cannot be restored on this host: marking it INACTIVE', {
        image: v.imageName,
        version: v.version,
        reason: (e as Error).message,
      });
      await this.o.store.versions.update(v.imageName, v.version, {
        status: 'INACTIVE',
        stateReason: `SNAPSHOT_INCOMPATIBLE: ${(e as Error).message}; rebuild it with UpdateMicrovmImage`,
      });
    }
  }

  private deps() {
    return {
      engine: this.o.engine,
      buildah: this.o.buildah,
      dataDir: this.o.dataDir,
      ...(this.o.artifactFetch ? { artifactFetch: this.o.artifactFetch } : {}),
    };
  }

  /** Creates an image and its first version, whose build starts in the background. */
  async createImage(spec: ImageSpec): Promise<CreatedVersion> {
    const n = normalizeImageSpec(spec);
    this.checkBaseImage(n.config.baseImageArn);
    const now = new Date().toISOString();
    if (await this.o.store.images.get(n.name)) {
      throw new ImageConflictError(
        `an image named ${n.name} already exists`,
        'use UpdateMicrovmImage (hearth update-microvm-image) to build a new version',
      );
    }
    let image: ImageRecord;
    try {
      image = await this.o.store.images.create({
        name: n.name,
        arn: this.arnOf(n.name),
        state: 'CREATING',
        ...(n.config.description ? { description: n.config.description } : {}),
        tags: n.tags,
        createdAt: now,
        updatedAt: now,
      });
    } catch (e) {
      if ((e as { code?: string }).code === 'STORE_CONFLICT')
        throw new ImageConflictError(`an image named ${n.name} already exists`);
      throw e;
    }
    return this.newVersion(image, n.config);
  }

  /** Builds a new version of an existing image (PUT semantics: the whole configuration). */
  async updateImage(spec: ImageSpec): Promise<CreatedVersion> {
    const n = normalizeImageSpec(spec);
    this.checkBaseImage(n.config.baseImageArn);
    const image = await this.getImage(n.name);
    if (image.state === 'DELETING') throw new ImageConflictError(`image ${n.name} is being deleted`);
    const updated = await this.o.store.images.update(n.name, {
      state: 'UPDATING',
      stateReason: null,
      ...(n.config.description !== undefined ? { description: n.config.description } : {}),
      ...(spec.tags ? { tags: { ...image.tags, ...spec.tags } } : {}),
    });
    return this.newVersion(updated, n.config);
  }

  private checkBaseImage(arn: string): void {
    if (arn.startsWith(MANAGED_IMAGE_ARN_PREFIX) && !MANAGED_IMAGES.some((m) => m.arn === arn)) {
      throw new ValidationError(
        'baseImageArn',
        `unknown managed image ${arn}; available: ${MANAGED_IMAGES.map((m) => m.arn).join(', ')}`,
      );
    }
  }

  private async newVersion(
    image: ImageRecord,
    config: ImageVersionRecord['config'],
  ): Promise<CreatedVersion> {
    const now = new Date().toISOString();
    const version = await this.o.store.versions.create({
      imageName: image.name,
      id: `iv-${randomBytes(6).toString('hex')}`,
      state: 'PENDING',
      status: 'INACTIVE',
      config,
      createdAt: now,
      updatedAt: now,
    });
    const build = await this.o.store.builds.create({
      id: `b-${randomBytes(6).toString('hex')}`,
      imageName: image.name,
      version: version.version,
      buildState: 'PENDING',
      architecture: 'X86_64',
      startedAt: now,
    });
    this.enqueue(version, build);
    return { image: (await this.o.store.images.get(image.name))!, version, build };
  }

  private enqueue(version: ImageVersionRecord, build: ImageBuildRecord): void {
    let resolve!: (b: ImageBuildRecord) => void;
    this.done.set(build.id, new Promise((r) => (resolve = r)));
    this.doneResolvers.set(build.id, resolve);
    const log = this.logs.open(build.id);
    log(`[hearth] build ${build.id} of ${version.imageName} version ${version.version} queued`);
    this.queue.push(() => this.runBuild(version, build, log));
    this.pump();
  }

  private pump(): void {
    while (!this.closed && this.running < (this.o.maxConcurrentBuilds ?? 1) && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.running++;
      void job().finally(() => {
        this.running--;
        this.pump();
      });
    }
  }

  private async runBuild(
    version: ImageVersionRecord,
    build: ImageBuildRecord,
    log: (l: string) => void,
  ): Promise<void> {
    const s = this.o.store;
    const name = version.imageName;
    let final: ImageBuildRecord;
    try {
      await s.versions.update(name, version.version, { state: 'IN_PROGRESS' });
      await s.builds.update(build.id, { buildState: 'IN_PROGRESS' });
      const out = await buildImageVersion(this.deps(), {
        buildId: build.id,
        versionId: version.id,
        config: version.config,
        log,
        ...(this.o.defaultReadyTimeoutS ? { defaultReadyTimeoutS: this.o.defaultReadyTimeoutS } : {}),
      });
      const image = await s.images.get(name);
      if (!image || image.state === 'DELETING')
        throw new BuildFailure('BUILD_INTERRUPTED', 'the image was deleted during the build');
      final = await s.builds.update(build.id, {
        buildState: 'SUCCESSFUL',
        snapshotMemorySizeInBytes: out.memorySnapshotBytes,
        snapshotDiskSizeInBytes: out.diskSnapshotBytes,
        codeInstallSizeInBytes: out.codeInstallBytes,
        endedAt: new Date().toISOString(),
      });
      await s.versions.update(name, version.version, {
        state: 'SUCCESSFUL',
        status: 'ACTIVE',
        stateReason: null,
      });
      await s.images.update(name, {
        state: image.state === 'CREATING' ? 'CREATED' : 'UPDATED',
        stateReason: null,
        latestActiveVersion: version.version,
      });
    } catch (e) {
      const f = e instanceof BuildFailure ? e : new BuildFailure('INTERNAL_ERROR', (e as Error).message);
      this.o.log.warn('build failed', { image: name, version: version.version, failure: f.failureCode });
      await removeVersionFiles(this.deps(), version.id).catch(() => undefined);
      final = await s.builds.update(build.id, {
        buildState: 'FAILED',
        failureCode: f.failureCode,
        stateReason: f.reason,
        endedAt: new Date().toISOString(),
      });
      await s.versions
        .update(name, version.version, {
          state: 'FAILED',
          stateReason: `${f.failureCode}: ${f.reason.split('\n')[0]}`,
        })
        .catch(() => undefined);
      const image = await s.images.get(name);
      if (image && image.state !== 'DELETING') {
        await s.images.update(name, {
          state:
            image.state === 'CREATING'
              ? 'CREATE_FAILED'
              : image.state === 'UPDATING'
                ? 'UPDATE_FAILED'
                : image.state,
          stateReason: `version ${version.version}: ${f.failureCode}`,
          latestFailedVersion: version.version,
        });
      }
    } finally {
      await this.logs.close(build.id);
    }
    this.doneResolvers.get(build.id)?.(final);
    this.doneResolvers.delete(build.id);
  }

  /** Resolves when the build ends (at once with the record if it already has). */
  async waitForBuild(buildId: string): Promise<ImageBuildRecord> {
    const p = this.done.get(buildId);
    if (p) return p;
    const b = await this.o.store.builds.get(buildId);
    if (!b) throw new ImageNotFoundError(`build ${buildId}`);
    return b;
  }

  async getImage(name: string): Promise<ImageRecord> {
    const image = await this.o.store.images.get(name);
    if (!image || image.state === 'DELETED') throw new ImageNotFoundError(`image ${name}`);
    return image;
  }

  listImages(req: PageRequest & { nameFilter?: string } = {}): Promise<Page<ImageRecord>> {
    return this.o.store.images.list(req);
  }

  async getVersion(name: string, version: string): Promise<ImageVersionRecord> {
    const v = await this.o.store.versions.get(name, version);
    if (!v || v.state === 'DELETED') throw new ImageNotFoundError(`version ${version} of image ${name}`);
    return v;
  }

  async listVersions(name: string, req: PageRequest = {}): Promise<Page<ImageVersionRecord>> {
    await this.getImage(name);
    return this.o.store.versions.listByImage(name, req);
  }

  /** ACTIVE or INACTIVE. An INACTIVE version cannot be run (RunMicrovm answers 404). */
  async setVersionStatus(name: string, version: string, status: VersionStatus): Promise<ImageVersionRecord> {
    const v = await this.getVersion(name, version);
    if (status === 'ACTIVE' && v.state !== 'SUCCESSFUL')
      throw new ImageConflictError(
        `version ${version} is ${v.state}; only a SUCCESSFUL version can be ACTIVE`,
      );
    const updated = await this.o.store.versions.update(name, version, { status });
    await this.refreshLatestActive(name);
    return updated;
  }

  private async refreshLatestActive(name: string): Promise<void> {
    let latest: string | null = null;
    let cursor: string | undefined;
    do {
      const page = await this.o.store.versions.listByImage(name, {
        limit: 1000,
        ...(cursor ? { cursor } : {}),
      });
      for (const v of page.items) if (v.state === 'SUCCESSFUL' && v.status === 'ACTIVE') latest = v.version;
      cursor = page.nextCursor;
    } while (cursor);
    await this.o.store.images.update(name, { latestActiveVersion: latest });
  }

  /**
   * Deletes a version: its template, disk and build output are freed. The image's last version
   * cannot be deleted on its own (delete the image), nor a version microVMs still use.
   */
  async deleteVersion(name: string, version: string): Promise<void> {
    const v = await this.getVersion(name, version);
    const all = await this.o.store.versions.listByImage(name, { limit: 2 });
    if (all.items.length < 2)
      throw new ImageConflictError(
        `version ${version} is the last version of image ${name}`,
        'delete the image instead',
      );
    if (v.state === 'PENDING' || v.state === 'IN_PROGRESS')
      throw new ImageConflictError(`version ${version} is still building`, 'wait for the build to end');
    if (await this.o.versionInUse?.(name, version))
      throw new ImageConflictError(`microVMs still use version ${version}`, 'terminate them first');
    await this.o.store.versions.update(name, version, { state: 'DELETING' });
    await removeVersionFiles(this.deps(), v.id);
    await this.o.store.versions.delete(name, version);
    await this.refreshLatestActive(name);
  }

  /** Deletes an image with all its versions and their files. Idempotent. */
  async deleteImage(name: string): Promise<void> {
    const image = await this.o.store.images.get(name);
    if (!image) return;
    const versions: ImageVersionRecord[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.o.store.versions.listByImage(name, {
        limit: 1000,
        ...(cursor ? { cursor } : {}),
      });
      versions.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor);
    if (versions.some((v) => v.state === 'PENDING' || v.state === 'IN_PROGRESS')) {
      throw new ImageConflictError(
        `image ${name} has a build in progress`,
        'wait for the build to end, then delete',
      );
    }
    for (const v of versions) {
      if (await this.o.versionInUse?.(name, v.version))
        throw new ImageConflictError(
          `microVMs still use version ${v.version} of ${name}`,
          'terminate them first',
        );
    }
    await this.o.store.images.update(name, { state: 'DELETING' });
    for (const v of versions) await removeVersionFiles(this.deps(), v.id);
    const builds = await Promise.all(
      versions.map((v) => this.o.store.builds.listByVersion(name, v.version, { limit: 1000 })),
    );
    await this.o.store.images.delete(name);
    for (const b of builds.flatMap((p) => p.items)) await rmQuiet(this.logs.path(b.id));
  }

  /** Adds or replaces tags on an image (at most 50 in all). */
  async tagImage(name: string, tags: Record<string, string>): Promise<void> {
    const image = await this.getImage(name);
    await this.o.store.images.update(name, { tags: withTags(image.tags, tags, 'an image') });
  }

  /** Removes tags from an image (absent keys are ignored). */
  async untagImage(name: string, keys: string[]): Promise<void> {
    const image = await this.getImage(name);
    await this.o.store.images.update(name, { tags: withoutTags(image.tags, keys) });
  }

  async listBuilds(name: string, version: string, req: PageRequest = {}): Promise<Page<ImageBuildRecord>> {
    await this.getVersion(name, version);
    return this.o.store.builds.listByVersion(name, version, req);
  }

  /** The newest build of a version. */
  async latestBuild(name: string, version: string): Promise<ImageBuildRecord> {
    const builds = await this.listBuilds(name, version, { limit: 1000 });
    const b = builds.items[builds.items.length - 1];
    if (!b) throw new ImageNotFoundError(`build of version ${version} of image ${name}`);
    return b;
  }

  /**
   * The version a microVM launch uses: `version` if given (it must be SUCCESSFUL and ACTIVE), else
   * the newest SUCCESSFUL and ACTIVE one. NoActiveVersionError otherwise.
   */
  async runnableVersion(name: string, version?: string): Promise<ImageVersionRecord> {
    const image = await this.getImage(name);
    const want = version ?? image.latestActiveVersion;
    if (!want) throw new NoActiveVersionError(name);
    const v = await this.o.store.versions.get(name, want);
    if (!v || v.state !== 'SUCCESSFUL' || v.status !== 'ACTIVE')
      throw new NoActiveVersionError(name, version);
    return v;
  }

  /** Stops taking builds; waits for running ones to end. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.running > 0) await new Promise((r) => setTimeout(r, 50));
  }
}

async function rmQuiet(path: string): Promise<void> {
  await rm(path, { force: true });
}
