import type { MicrovmUsage } from '../core/usage.js';
import { cpus } from 'node:os';
import { MANAGED_IMAGES, managedVersions } from '../builder/managed-images.js';
import type { BaseDisk } from '../builder/base-rootfs.js';
import { ValidationError } from '../core/image-spec.js';
import type { ImageService } from '../core/images.js';
import type { AllowedPort, MicrovmService } from '../core/microvms.js';
import type { NetworkConnectorService } from '../core/network-connectors.js';
import type { ImageBuildRecord, ImageRecord, ImageVersionRecord, MicrovmRecord } from '../core/model.js';
import { connectorHandlers } from './connector-handlers.js';
import type { HostProtections } from '../vmm/host-protections.js';
import { ApiError } from './errors.js';
import type { InputOf, OutputOf } from './operations.js';
import type { OperationHandlers } from './server.js';

export interface HandlerDeps {
  images: ImageService;
  microvms: MicrovmService;
  connectors: NetworkConnectorService;
  baseDisk: BaseDisk;
  /** What this Hearth enforces around its microVMs (GetHost; the engine's protections). */
  host: () => HostProtections;
}

/** The header name a token goes in, as CreateMicrovmAuthToken's map key. */
export const TOKEN_HEADER = 'X-Hearth-Proxy-Auth';
const CHIPSET = (cpus()[0]?.model ?? 'x86_64').split(' ')[0] ?? 'x86_64';

function versionOut(image: ImageRecord, v: ImageVersionRecord): OutputOf<'GetMicrovmImageVersion'> {
  const c = v.config;
  return {
    baseImageArn: c.baseImageArn,
    buildRoleArn: c.buildRoleArn ?? 'arn:hearth:iam::000000000000:role/none',
    codeArtifact: { uri: c.codeArtifactUri },
    imageArn: image.arn,
    imageVersion: v.version,
    state: v.state,
    status: v.status,
    createdAt: v.createdAt,
    updatedAt: v.updatedAt,
    resources: [{ minimumMemoryInMiB: c.memoryMiB as 512 }],
    ...(c.baseImageVersion ? { baseImageVersion: c.baseImageVersion } : {}),
    ...(c.description ? { description: c.description } : {}),
    ...(c.hooks ? { hooks: c.hooks as never } : {}),
    ...(c.environmentVariables ? { environmentVariables: c.environmentVariables } : {}),
    ...(v.stateReason ? { stateReason: v.stateReason } : {}),
    tags: image.tags,
  } as OutputOf<'GetMicrovmImageVersion'>;
}

function buildOut(image: ImageRecord, b: ImageBuildRecord) {
  return {
    imageArn: image.arn,
    imageVersion: b.version,
    buildId: b.id,
    buildState: b.buildState,
    architecture: b.architecture,
    chipset: CHIPSET,
    chipsetGeneration: 'x86-64',
    createdAt: b.startedAt,
    ...(b.stateReason || b.failureCode
      ? { stateReason: `${b.failureCode ? `${b.failureCode}: ` : ''}${b.stateReason ?? ''}` }
      : {}),
  };
}

function microvmOut(m: MicrovmService, rec: MicrovmRecord): OutputOf<'GetMicrovm'> {
  const v = m.view(rec);
  return {
    microvmId: v.microvmId,
    state: v.state,
    endpoint: v.endpoint,
    imageArn: v.imageArn,
    imageVersion: v.imageVersion,
    maximumDurationInSeconds: v.maximumDurationInSeconds,
    startedAt: v.startedAt,
    ...(v.terminatedAt ? { terminatedAt: v.terminatedAt } : {}),
    ...(v.stateReason ? { stateReason: v.stateReason } : {}),
    ...(v.idlePolicy
      ? {
          idlePolicy: {
            maxIdleDurationSeconds: v.idlePolicy.maxIdleDurationSeconds,
            suspendedDurationSeconds: v.idlePolicy.suspendedDurationSeconds,
            autoResumeEnabled: v.idlePolicy.autoResumeEnabled,
            ...(v.idlePolicy.openStreamsCountAsActivity !== undefined
              ? { openStreamsCountAsActivity: v.idlePolicy.openStreamsCountAsActivity }
              : {}),
          },
        }
      : {}),
    ingressNetworkConnectors: v.ingressNetworkConnectors,
    egressNetworkConnectors: v.egressNetworkConnectors,
    ...(v.usage ? { usage: usageOut(v.usage) } : {}),
  } as OutputOf<'GetMicrovm'>;
}

function usageOut(u: MicrovmUsage) {
  const mib = (bytes: number) => Math.round(bytes / 2 ** 20);
  return {
    baselineMilliVcpus: Math.round(u.baselineVcpus * 1000),
    peakMilliVcpus: Math.round(u.peakVcpus * 1000),
    cpuMilliseconds: Math.round(u.cpuSeconds * 1000),
    cpuMillisecondsAboveBaseline: Math.round(u.cpuSecondsAboveBaseline * 1000),
    memoryMiB: mib(u.memoryBytes),
    peakMemoryMiB: mib(u.peakMemoryBytes),
    ...(u.sampledAt ? { sampledAt: u.sampledAt } : {}),
  };
}

type ImageInput = InputOf<'CreateMicrovmImage'> | InputOf<'UpdateMicrovmImage'>;

function spec(name: string, i: ImageInput) {
  const uri = (i.codeArtifact as { uri?: string }).uri;
  if (!uri) throw new ValidationError('codeArtifact', 'give codeArtifact.uri');
  return {
    name,
    codeArtifactUri: uri,
    baseImageArn: i.baseImageArn,
    buildRoleArn: i.buildRoleArn,
    ...(i.baseImageVersion ? { baseImageVersion: i.baseImageVersion } : {}),
    ...(i.resources?.[0] ? { memoryMiB: i.resources[0].minimumMemoryInMiB } : {}),
    ...(i.diskSizeInMiB !== undefined ? { diskSizeMiB: i.diskSizeInMiB } : {}),
    ...(i.appPort !== undefined ? { appPort: i.appPort } : {}),
    ...(i.hooks ? { hooks: i.hooks as never } : {}),
    ...(i.environmentVariables ? { environmentVariables: i.environmentVariables } : {}),
    ...(i.buildArgs ? { buildArgs: i.buildArgs } : {}),
    ...(i.noCache ? { noCache: true } : {}),
    ...(i.description !== undefined ? { description: i.description } : {}),
    ...('tags' in i && i.tags ? { tags: i.tags } : {}),
  };
}

/** An image as ListMicrovmImages lists it (MicrovmImageSummary); the other image outputs add to it. */
function imageSummary(image: ImageRecord) {
  return {
    imageArn: image.arn,
    name: image.name,
    state: image.state,
    createdAt: image.createdAt,
    ...(image.latestActiveVersion ? { latestActiveImageVersion: image.latestActiveVersion } : {}),
    ...(image.latestFailedVersion ? { latestFailedImageVersion: image.latestFailedVersion } : {}),
  };
}

/** The output of CreateMicrovmImage and UpdateMicrovmImage: the image and the version it started. */
function imageCreated(image: ImageRecord, version: ImageVersionRecord) {
  const v = versionOut(image, version);
  return {
    ...imageSummary(image),
    updatedAt: image.updatedAt,
    baseImageArn: v.baseImageArn,
    buildRoleArn: v.buildRoleArn,
    codeArtifact: v.codeArtifact,
    imageVersion: version.version,
    ...(v.resources ? { resources: v.resources } : {}),
    ...(v.hooks ? { hooks: v.hooks } : {}),
    ...(v.environmentVariables ? { environmentVariables: v.environmentVariables } : {}),
    ...(v.description ? { description: v.description } : {}),
  };
}

function managedByArn(arn: string) {
  const m = MANAGED_IMAGES.find((x) => x.arn === arn || x.name === arn);
  if (!m)
    throw new ApiError(
      'ResourceNotFoundException',
      `managed image ${arn} not found; available: ${MANAGED_IMAGES.map((x) => x.arn).join(', ')}`,
    );
  return m;
}

/** Binds every operation of the API (the AWS ones and Hearth's own) to Hearth's services. */
export function createHandlers(d: HandlerDeps): OperationHandlers {
  const { images, microvms, connectors } = d;
  const imageName = (id: string) => images.nameFromIdentifier(id);
  return {
    ...connectorHandlers(connectors),
    GetHost: () => d.host(),
    async RunMicrovm(i) {
      const rec = await microvms.run({
        imageIdentifier: i.imageIdentifier,
        ...(i.imageVersion ? { imageVersion: i.imageVersion } : {}),
        ...(i.idlePolicy ? { idlePolicy: i.idlePolicy } : {}),
        ...(i.maximumDurationInSeconds !== undefined
          ? { maximumDurationInSeconds: i.maximumDurationInSeconds }
          : {}),
        ...(i.runHookPayload !== undefined ? { runHookPayload: i.runHookPayload } : {}),
        ...(i.ingressNetworkConnectors ? { ingressNetworkConnectors: [...i.ingressNetworkConnectors] } : {}),
        ...(i.egressNetworkConnectors ? { egressNetworkConnectors: [...i.egressNetworkConnectors] } : {}),
        ...(i.clientToken ? { clientToken: i.clientToken } : {}),
      });
      return microvmOut(microvms, rec);
    },
    async GetMicrovm(i) {
      return microvmOut(microvms, await microvms.get(i.microvmIdentifier));
    },
    async ListMicrovms(i) {
      const page = await microvms.list({
        ...(i.imageIdentifier ? { imageName: imageName(i.imageIdentifier) } : {}),
        ...(i.imageVersion ? { imageVersion: i.imageVersion } : {}),
        ...(i.maxResults ? { limit: i.maxResults } : {}),
        ...(i.nextToken ? { cursor: i.nextToken } : {}),
      });
      return {
        items: page.items.map((r) => ({
          microvmId: r.microvmId,
          state: r.state,
          imageArn: images.arnOf(r.imageName),
          imageVersion: r.imageVersion,
          startedAt: r.startedAt,
        })),
        ...(page.nextCursor ? { nextToken: page.nextCursor } : {}),
      };
    },
    async SuspendMicrovm(i) {
      await microvms.suspend(i.microvmIdentifier);
      return {};
    },
    async ResumeMicrovm(i) {
      await microvms.resume(i.microvmIdentifier);
      return {};
    },
    async TerminateMicrovm(i) {
      await microvms.terminate(i.microvmIdentifier);
      return {};
    },
    async CreateMicrovmAuthToken(i) {
      const token = await microvms.createAuthToken(i.microvmIdentifier, {
        allowedPorts: i.allowedPorts as unknown as AllowedPort[],
        expirationInMinutes: i.expirationInMinutes,
      });
      return { authToken: { [TOKEN_HEADER]: token } };
    },
    async CreateMicrovmShellAuthToken() {
      throw new ApiError(
        'ValidationException',
        'shell access needs the SHELL_INGRESS connector, which this Hearth does not offer yet',
        {
          hint: 'use the guest agent (hearth exec, coming) or an app port instead',
        },
      );
    },
    async CreateMicrovmImage(i) {
      const r = await images.createImage(spec(i.name, i));
      return { ...imageCreated(r.image, r.version), tags: r.image.tags } as OutputOf<'CreateMicrovmImage'>;
    },
    async UpdateMicrovmImage(i) {
      const r = await images.updateImage(spec(imageName(i.imageIdentifier), i));
      return imageCreated(r.image, r.version) as OutputOf<'UpdateMicrovmImage'>;
    },
    async GetMicrovmImage(i) {
      const image = await images.getImage(imageName(i.imageIdentifier));
      return { ...imageSummary(image), updatedAt: image.updatedAt, tags: image.tags };
    },
    async ListMicrovmImages(i) {
      const page = await images.listImages({
        ...(i.nameFilter ? { nameFilter: i.nameFilter } : {}),
        ...(i.maxResults ? { limit: i.maxResults } : {}),
        ...(i.nextToken ? { cursor: i.nextToken } : {}),
      });
      return {
        items: page.items.map(imageSummary),
        ...(page.nextCursor ? { nextToken: page.nextCursor } : {}),
      };
    },
    async DeleteMicrovmImage(i) {
      const name = imageName(i.imageIdentifier);
      await images.deleteImage(name);
      return { imageIdentifier: name, state: 'DELETED' };
    },
    async GetMicrovmImageVersion(i) {
      const name = imageName(i.imageIdentifier);
      return versionOut(await images.getImage(name), await images.getVersion(name, i.imageVersion));
    },
    async ListMicrovmImageVersions(i) {
      const name = imageName(i.imageIdentifier);
      const image = await images.getImage(name);
      const page = await images.listVersions(name, {
        ...(i.maxResults ? { limit: i.maxResults } : {}),
        ...(i.nextToken ? { cursor: i.nextToken } : {}),
      });
      return {
        items: page.items.map((v) => versionOut(image, v)),
        ...(page.nextCursor ? { nextToken: page.nextCursor } : {}),
      };
    },
    async UpdateMicrovmImageVersion(i) {
      const name = imageName(i.imageIdentifier);
      const v = await images.setVersionStatus(name, i.imageVersion, i.status);
      return versionOut(await images.getImage(name), v);
    },
    async DeleteMicrovmImageVersion(i) {
      const name = imageName(i.imageIdentifier);
      await images.deleteVersion(name, i.imageVersion);
      return { imageIdentifier: name, imageVersion: i.imageVersion, state: 'DELETED' };
    },
    async ListMicrovmImageBuilds(i) {
      const name = imageName(i.imageIdentifier);
      const image = await images.getImage(name);
      const page = await images.listBuilds(name, i.imageVersion, {
        ...(i.maxResults ? { limit: i.maxResults } : {}),
        ...(i.nextToken ? { cursor: i.nextToken } : {}),
      });
      return {
        items: page.items.map((b) => buildOut(image, b)),
        ...(page.nextCursor ? { nextToken: page.nextCursor } : {}),
      };
    },
    async GetMicrovmImageBuild(i) {
      const name = imageName(i.imageIdentifier);
      const image = await images.getImage(name);
      const builds = await images.listBuilds(name, i.imageVersion, { limit: 1000 });
      const b = builds.items.find((x) => x.id === i.buildId);
      if (!b)
        throw new ApiError(
          'ResourceNotFoundException',
          `build ${i.buildId} of ${name} version ${i.imageVersion} not found`,
        );
      return {
        ...buildOut(image, b),
        snapshotBuild: {
          ...(b.snapshotMemorySizeInBytes !== undefined
            ? { memorySnapshotSizeInBytes: b.snapshotMemorySizeInBytes }
            : {}),
          ...(b.snapshotDiskSizeInBytes !== undefined
            ? { diskSnapshotSizeInBytes: b.snapshotDiskSizeInBytes }
            : {}),
          ...(b.codeInstallSizeInBytes !== undefined
            ? { codeInstallSizeInBytes: b.codeInstallSizeInBytes }
            : {}),
        },
      };
    },
    async ListManagedMicrovmImages() {
      return { items: MANAGED_IMAGES.map((m) => ({ imageArn: m.arn, createdAt: d.baseDisk.createdAt })) };
    },
    async ListManagedMicrovmImageVersions(i) {
      const m = managedByArn(i.imageIdentifier);
      return {
        items: managedVersions(d.baseDisk).map((v) => ({
          imageArn: m.arn,
          imageVersion: v.version,
          createdAt: v.createdAt,
          status: v.status,
        })),
      };
    },
    // Tags live on images and network connectors, told apart by the ARN.
    async ListTags(i) {
      if (connectors.isConnectorArn(i.Resource)) return { Tags: await connectors.tags(i.Resource) };
      return { Tags: (await images.getImage(imageName(i.Resource))).tags };
    },
    async TagResource(i) {
      if (connectors.isConnectorArn(i.Resource)) await connectors.tag(i.Resource, i.Tags);
      else await images.tagImage(imageName(i.Resource), i.Tags);
    },
    async UntagResource(i) {
      if (connectors.isConnectorArn(i.Resource)) await connectors.untag(i.Resource, i.TagKeys);
      else await images.untagImage(imageName(i.Resource), [...i.TagKeys]);
    },
  };
}
