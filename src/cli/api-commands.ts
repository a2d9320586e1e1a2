import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { existsSync } from 'node:fs';
import {
  DeleteMicrovmImageCommand,
  DeleteMicrovmImageVersionCommand,
  GetMicrovmCommand,
  GetMicrovmImageBuildCommand,
  GetMicrovmImageCommand,
  GetMicrovmImageVersionCommand,
  ListManagedMicrovmImagesCommand,
  ListManagedMicrovmImageVersionsCommand,
  ListMicrovmImageBuildsCommand,
  ListMicrovmImagesCommand,
  ListMicrovmImageVersionsCommand,
  ListMicrovmsCommand,
  ListTagsCommand,
  ResumeMicrovmCommand,
  type RunMicrovmCommandOutput,
  SuspendMicrovmCommand,
  TagResourceCommand,
  TerminateMicrovmCommand,
  UntagResourceCommand,
  UpdateMicrovmImageVersionCommand,
  buildLogs,
  createEndpointToken,
  hearthClient,
  hearthRequest,
  hearthMetrics,
  getMicrovmWithUsage,
  loadConnection,
  microvmConsole,
  waitForImageVersion,
  waitForMicrovm,
  type HearthConnection,
} from '../sdk/index.js';
import {
  CliUsageError,
  LIST_OPTS,
  int,
  json,
  listAll,
  str,
  type ApiCommand,
  type CommandContext,
} from './command.js';
import { CONNECTOR_COMMANDS, expandConnectors } from './connector-commands.js';
import { HOST_COMMAND } from './host-command.js';
import { clean, print, record, table } from './format.js';

export { CliUsageError, type ApiCommand, type CommandContext } from './command.js';

/** The microVM id: positional or --microvm-identifier. */
function microvmId(ctx: CommandContext): string {
  const id = ctx.args[0] ?? str(ctx, 'microvm-identifier');
  if (!id) throw new CliUsageError('which microVM? give its id (e.g. hearth get microvm-1234...)');
  return id;
}

function imageId(ctx: CommandContext): string {
  const id = str(ctx, 'image-identifier') ?? str(ctx, 'name') ?? ctx.args[0];
  if (!id) throw new CliUsageError('which image? give --image-identifier <name or ARN>');
  return id;
}

function keyValues(list: string[] | undefined, what: string): Record<string, string> | undefined {
  if (!list?.length) return undefined;
  const out: Record<string, string> = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new CliUsageError(`${what} must look like KEY=VALUE, got '${kv}'`);
    out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

const MICROVM_COLUMNS = ['microvmId', 'state', 'imageVersion', 'startedAt'];
const IMAGE_SPEC_OPTS = {
  name: { type: 'string' as const },
  'code-artifact': { type: 'string' as const },
  'base-image-arn': { type: 'string' as const },
  'base-image-version': { type: 'string' as const },
  'build-role-arn': { type: 'string' as const },
  resources: { type: 'string' as const },
  memory: { type: 'string' as const },
  'disk-size': { type: 'string' as const },
  'app-port': { type: 'string' as const },
  hooks: { type: 'string' as const },
  'environment-variables': { type: 'string' as const },
  'build-arg': { type: 'string' as const, multiple: true },
  'no-cache': { type: 'boolean' as const },
  description: { type: 'string' as const },
  tags: { type: 'string' as const },
  follow: { type: 'boolean' as const },
  'no-wait': { type: 'boolean' as const },
};

const DEFAULT_BASE_IMAGE = 'arn:hearth:lambda:local:hearth:microvm-image:bookworm';

/** The CreateMicrovmImage body, with Hearth's extension fields when asked for. */
function imageBody(ctx: CommandContext): Record<string, unknown> {
  let uri = str(ctx, 'code-artifact')?.replace(/^uri=/, '') ?? ctx.args[0];
  if (!uri)
    throw new CliUsageError(
      'what to build? give a directory or .zip with a Dockerfile (hearth build ./app --name app)',
    );
  if (!/^[a-z0-9+.-]+:\/\//i.test(uri) && existsSync(uri)) uri = resolve(uri);
  const name = str(ctx, 'name') ?? str(ctx, 'image-identifier');
  if (!name) throw new CliUsageError('--name is required (letters, digits, - and _)');
  const memory = int(ctx, 'memory');
  const body: Record<string, unknown> = {
    name,
    codeArtifact: { uri },
    baseImageArn: str(ctx, 'base-image-arn') ?? DEFAULT_BASE_IMAGE,
    buildRoleArn: str(ctx, 'build-role-arn') ?? 'arn:hearth:iam::000000000000:role/hearth-builder',
  };
  const resources =
    json<unknown[]>(ctx, 'resources') ?? (memory ? [{ minimumMemoryInMiB: memory }] : undefined);
  if (resources) body.resources = resources;
  for (const [opt, field] of [
    ['base-image-version', 'baseImageVersion'],
    ['description', 'description'],
  ] as const) {
    const v = str(ctx, opt);
    if (v !== undefined) body[field] = v;
  }
  for (const [opt, field] of [
    ['hooks', 'hooks'],
    ['environment-variables', 'environmentVariables'],
    ['tags', 'tags'],
  ] as const) {
    const v = json(ctx, opt);
    if (v !== undefined) body[field] = v;
  }
  const disk = int(ctx, 'disk-size');
  if (disk !== undefined) body.diskSizeInMiB = disk;
  const port = int(ctx, 'app-port');
  if (port !== undefined) body.appPort = port;
  const args = keyValues(ctx.opts['build-arg'] as string[] | undefined, '--build-arg');
  if (args) body.buildArgs = args;
  if (ctx.opts['no-cache']) body.noCache = true;
  return body;
}

/** Prints the build's log live (with `[hearth]` progress lines), then the outcome. */
async function followBuild(
  ctx: CommandContext,
  name: string,
  version: string,
  follow: boolean,
): Promise<number> {
  const c = await ctx.connection();
  if (follow && ctx.output === 'table') {
    for await (const line of buildLogs(c, name, version, { follow: true }))
      process.stderr.write(line.replace(/^\S+ /, '') + '\n');
  }
  const v = await waitForImageVersion(await ctx.client(), name, version);
  const builds = await (
    await ctx.client()
  ).send(new ListMicrovmImageBuildsCommand({ imageIdentifier: name, imageVersion: version }));
  const build = builds.items?.[builds.items.length - 1];
  print(ctx.output, { ...clean(v), build }, () =>
    record({ name, version, state: v.state, status: v.status, reason: v.stateReason, build: build?.buildId }),
  );
  return v.state === 'SUCCESSFUL' ? 0 : 1;
}

async function createOrUpdateImage(ctx: CommandContext, update: boolean): Promise<number> {
  const body = imageBody(ctx);
  const c = await ctx.connection();
  const name = body.name as string;
  const out = update
    ? await hearthRequest<Record<string, unknown>>(
        c,
        'PUT',
        `/2025-09-09/microvm-images/${encodeURIComponent(name)}`,
        { ...body, name: undefined },
      )
    : await hearthRequest<Record<string, unknown>>(c, 'POST', '/2025-09-09/microvm-images', body);
  const version = String(out.imageVersion);
  if (ctx.opts['no-wait']) {
    print(ctx.output, out, () => record({ name, version, state: out.state }));
    return 0;
  }
  if (ctx.output === 'table')
    process.stderr.write(`building ${name} version ${version} (Ctrl-C stops following, not the build)\n`);
  return followBuild(ctx, name, version, ctx.opts.follow !== false);
}

export const API_COMMANDS: ApiCommand[] = [
  {
    name: 'run-microvm',
    aliases: ['run'],
    summary: 'launch a microVM from an image',
    usage:
      'hearth run <image> [--image-version V] [--idle-policy JSON] [--maximum-duration-in-seconds N] [--run-hook-payload S] [--ingress-network-connectors NAME|ARN ...] [--egress-network-connectors NAME|ARN ...] [--wait]',
    options: {
      'image-identifier': { type: 'string' },
      'image-version': { type: 'string' },
      'idle-policy': { type: 'string' },
      'maximum-duration-in-seconds': { type: 'string' },
      'run-hook-payload': { type: 'string' },
      'ingress-network-connectors': { type: 'string', multiple: true },
      'egress-network-connectors': { type: 'string', multiple: true },
      'client-token': { type: 'string' },
      wait: { type: 'boolean' },
    },
    async run(ctx) {
      // A raw signed request, not the AWS client, so Hearth's extension fields (for instance
      // idlePolicy.openStreamsCountAsActivity) reach the server instead of being dropped.
      const client = await ctx.client();
      let vm = await hearthRequest<RunMicrovmCommandOutput>(
        await ctx.connection(),
        'POST',
        '/2025-09-09/microvms',
        {
          imageIdentifier: imageId(ctx),
          imageVersion: str(ctx, 'image-version'),
          idlePolicy: json(ctx, 'idle-policy'),
          maximumDurationInSeconds: int(ctx, 'maximum-duration-in-seconds'),
          runHookPayload: str(ctx, 'run-hook-payload'),
          ingressNetworkConnectors: await expandConnectors(
            ctx,
            ctx.opts['ingress-network-connectors'] as string[] | undefined,
          ),
          egressNetworkConnectors: await expandConnectors(
            ctx,
            ctx.opts['egress-network-connectors'] as string[] | undefined,
          ),
          clientToken: str(ctx, 'client-token') ?? randomUUID(),
        },
      );
      if (ctx.opts.wait) vm = await waitForMicrovm(client, vm.microvmId!, ['RUNNING']);
      print(ctx.output, clean(vm), () => record(clean(vm)));
      return 0;
    },
  },
  {
    name: 'get-microvm',
    aliases: ['get'],
    summary: 'show a microVM, with its usage against its baseline (CPU, burst above it, memory)',
    usage: 'hearth get <microvm-id>',
    options: { 'microvm-identifier': { type: 'string' } },
    async run(ctx) {
      // A raw signed request, so Hearth's `usage` extension field is shown (the AWS client drops it).
      const vm = clean(await getMicrovmWithUsage(await ctx.connection(), microvmId(ctx)));
      print(ctx.output, vm, () => record(vm));
      return 0;
    },
  },
  {
    name: 'metrics',
    summary: "print Hearth's metrics (Prometheus text): microVMs by state, usage, endpoint traffic",
    usage: 'hearth metrics',
    options: {},
    async run(ctx) {
      process.stdout.write(await hearthMetrics(await ctx.connection()));
      return 0;
    },
  },
  {
    name: 'list-microvms',
    aliases: ['ls'],
    summary: 'list microVMs',
    usage: 'hearth ls [--image-identifier I] [--image-version V] [--max-results N] [--next-token T] [--all]',
    options: { 'image-identifier': { type: 'string' }, 'image-version': { type: 'string' }, ...LIST_OPTS },
    async run(ctx) {
      const client = await ctx.client();
      const page = await listAll(ctx, async (nextToken) => {
        const r = await client.send(
          new ListMicrovmsCommand({
            imageIdentifier: str(ctx, 'image-identifier'),
            imageVersion: str(ctx, 'image-version'),
            maxResults: int(ctx, 'max-results'),
            nextToken,
          }),
        );
        return { items: r.items ?? [], ...(r.nextToken ? { nextToken: r.nextToken } : {}) };
      });
      print(
        ctx.output,
        page,
        () =>
          table(page.items as unknown as Record<string, unknown>[], MICROVM_COLUMNS) +
          (page.nextToken ? `(more: --next-token ${page.nextToken})\n` : ''),
      );
      return 0;
    },
  },
  ...(['suspend', 'resume', 'terminate'] as const).map((verb): ApiCommand => ({
    name: `${verb}-microvm`,
    aliases: verb === 'terminate' ? [verb, 'rm'] : [verb],
    summary: `${verb} a microVM`,
    usage: `hearth ${verb} <microvm-id>`,
    options: { 'microvm-identifier': { type: 'string' } },
    async run(ctx) {
      const client = await ctx.client();
      const id = microvmId(ctx);
      if (verb === 'suspend') await client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
      if (verb === 'resume') await client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
      if (verb === 'terminate') await client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
      const vm = clean(await client.send(new GetMicrovmCommand({ microvmIdentifier: id })));
      print(ctx.output, vm, () => `${id}  ${vm.state}\n`);
      return 0;
    },
  })),
  {
    name: 'create-microvm-auth-token',
    aliases: ['token'],
    summary: "make a token for a microVM's endpoint",
    usage: 'hearth token <microvm-id> [--port 8080 ...] [--allowed-ports JSON] [--expiration-in-minutes 60]',
    options: {
      'microvm-identifier': { type: 'string' },
      port: { type: 'string', multiple: true },
      'allowed-ports': { type: 'string' },
      'expiration-in-minutes': { type: 'string' },
    },
    async run(ctx) {
      const client = await ctx.client();
      const id = microvmId(ctx);
      const allowed = json<{ port?: number; allPorts?: unknown }[]>(ctx, 'allowed-ports');
      const ports = allowed?.some((p) => p.allPorts)
        ? 'all'
        : (allowed?.map((p) => p.port!).filter(Boolean) ??
          (ctx.opts.port as string[] | undefined)?.map(Number));
      const token = await createEndpointToken(client, id, {
        ...(ports ? { ports } : {}),
        expirationInMinutes: int(ctx, 'expiration-in-minutes') ?? 60,
      });
      const vm = await client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
      print(
        ctx.output,
        { authToken: { 'X-Hearth-Proxy-Auth': token }, endpoint: vm.endpoint },
        () => `${token}\n`,
      );
      return 0;
    },
  },
  {
    name: 'create-microvm-image',
    aliases: ['build'],
    summary: 'build an image from a directory or .zip with a Dockerfile (shows the build log live)',
    usage:
      'hearth build <dir|zip|url> --name NAME [--memory 512] [--disk-size MiB] [--hooks JSON] [--environment-variables JSON] [--build-arg K=V] [--no-cache] [--no-wait]',
    options: IMAGE_SPEC_OPTS,
    run: (ctx) => createOrUpdateImage(ctx, false),
  },
  {
    name: 'update-microvm-image',
    aliases: ['rebuild'],
    summary: 'build a new version of an image',
    usage: 'hearth rebuild <dir|zip|url> --name NAME [same options as build]',
    options: IMAGE_SPEC_OPTS,
    run: (ctx) => createOrUpdateImage(ctx, true),
  },
  {
    name: 'get-microvm-image',
    aliases: ['image'],
    summary: 'show an image',
    usage: 'hearth image <name>',
    options: { 'image-identifier': { type: 'string' } },
    async run(ctx) {
      const img = clean(
        await (await ctx.client()).send(new GetMicrovmImageCommand({ imageIdentifier: imageId(ctx) })),
      );
      print(ctx.output, img, () => record(img));
      return 0;
    },
  },
  {
    name: 'list-microvm-images',
    aliases: ['images'],
    summary: 'list images',
    usage: 'hearth images [--name-filter S] [--all]',
    options: { 'name-filter': { type: 'string' }, ...LIST_OPTS },
    async run(ctx) {
      const client = await ctx.client();
      const page = await listAll(ctx, async (nextToken) => {
        const r = await client.send(
          new ListMicrovmImagesCommand({
            nameFilter: str(ctx, 'name-filter'),
            maxResults: int(ctx, 'max-results'),
            nextToken,
          }),
        );
        return { items: r.items ?? [], ...(r.nextToken ? { nextToken: r.nextToken } : {}) };
      });
      print(ctx.output, page, () =>
        table(page.items as unknown as Record<string, unknown>[], [
          'name',
          'state',
          'latestActiveImageVersion',
          'imageArn',
        ]),
      );
      return 0;
    },
  },
  {
    name: 'delete-microvm-image',
    summary: 'delete an image and all its versions',
    usage: 'hearth delete-microvm-image <name>',
    options: { 'image-identifier': { type: 'string' } },
    async run(ctx) {
      await (await ctx.client()).send(new DeleteMicrovmImageCommand({ imageIdentifier: imageId(ctx) }));
      return 0;
    },
  },
  {
    name: 'list-microvm-image-versions',
    aliases: ['versions'],
    summary: "list an image's versions",
    usage: 'hearth versions <name>',
    options: { 'image-identifier': { type: 'string' }, ...LIST_OPTS },
    async run(ctx) {
      const client = await ctx.client();
      const page = await listAll(ctx, async (nextToken) => {
        const r = await client.send(
          new ListMicrovmImageVersionsCommand({
            imageIdentifier: imageId(ctx),
            maxResults: int(ctx, 'max-results'),
            nextToken,
          }),
        );
        return { items: r.items ?? [], ...(r.nextToken ? { nextToken: r.nextToken } : {}) };
      });
      print(ctx.output, page, () =>
        table(page.items as unknown as Record<string, unknown>[], [
          'imageVersion',
          'state',
          'status',
          'stateReason',
        ]),
      );
      return 0;
    },
  },
  {
    name: 'get-microvm-image-version',
    summary: 'show an image version',
    usage: 'hearth get-microvm-image-version <name> --image-version V',
    options: { 'image-identifier': { type: 'string' }, 'image-version': { type: 'string' } },
    async run(ctx) {
      const v = clean(
        await (
          await ctx.client()
        ).send(
          new GetMicrovmImageVersionCommand({
            imageIdentifier: imageId(ctx),
            imageVersion: str(ctx, 'image-version', true)!,
          }),
        ),
      );
      print(ctx.output, v, () => record(v));
      return 0;
    },
  },
  {
    name: 'update-microvm-image-version',
    summary: 'mark an image version ACTIVE or INACTIVE',
    usage: 'hearth update-microvm-image-version <name> --image-version V --status ACTIVE|INACTIVE',
    options: {
      'image-identifier': { type: 'string' },
      'image-version': { type: 'string' },
      status: { type: 'string' },
    },
    async run(ctx) {
      const status = str(ctx, 'status', true)!;
      const v = clean(
        await (
          await ctx.client()
        ).send(
          new UpdateMicrovmImageVersionCommand({
            imageIdentifier: imageId(ctx),
            imageVersion: str(ctx, 'image-version', true)!,
            status: status as 'ACTIVE',
          }),
        ),
      );
      print(ctx.output, v, () => record(v));
      return 0;
    },
  },
  {
    name: 'delete-microvm-image-version',
    summary: 'delete an image version (frees its disk and snapshot)',
    usage: 'hearth delete-microvm-image-version <name> --image-version V',
    options: { 'image-identifier': { type: 'string' }, 'image-version': { type: 'string' } },
    async run(ctx) {
      await (
        await ctx.client()
      ).send(
        new DeleteMicrovmImageVersionCommand({
          imageIdentifier: imageId(ctx),
          imageVersion: str(ctx, 'image-version', true)!,
        }),
      );
      return 0;
    },
  },
  {
    name: 'list-microvm-image-builds',
    aliases: ['builds'],
    summary: "list an image version's builds",
    usage: 'hearth builds <name> --image-version V',
    options: { 'image-identifier': { type: 'string' }, 'image-version': { type: 'string' }, ...LIST_OPTS },
    async run(ctx) {
      const r = await (
        await ctx.client()
      ).send(
        new ListMicrovmImageBuildsCommand({
          imageIdentifier: imageId(ctx),
          imageVersion: str(ctx, 'image-version', true)!,
        }),
      );
      print(ctx.output, clean(r), () =>
        table((r.items ?? []) as unknown as Record<string, unknown>[], [
          'buildId',
          'buildState',
          'stateReason',
        ]),
      );
      return 0;
    },
  },
  {
    name: 'get-microvm-image-build',
    summary: 'show a build (state, failure reason, snapshot sizes)',
    usage: 'hearth get-microvm-image-build <name> --image-version V --build-id B',
    options: {
      'image-identifier': { type: 'string' },
      'image-version': { type: 'string' },
      'build-id': { type: 'string' },
    },
    async run(ctx) {
      const b = clean(
        await (
          await ctx.client()
        ).send(
          new GetMicrovmImageBuildCommand({
            imageIdentifier: imageId(ctx),
            imageVersion: str(ctx, 'image-version', true)!,
            buildId: str(ctx, 'build-id', true)!,
          }),
        ),
      );
      print(ctx.output, b, () => record(b));
      return 0;
    },
  },
  {
    name: 'build-logs',
    summary: "print an image version's build log (--follow: live)",
    usage: 'hearth build-logs <name> [--image-version V] [--follow]',
    options: {
      'image-identifier': { type: 'string' },
      'image-version': { type: 'string' },
      follow: { type: 'boolean' },
    },
    async run(ctx) {
      const name = imageId(ctx);
      const client = await ctx.client();
      let version = str(ctx, 'image-version');
      if (!version) {
        const versions = await client.send(
          new ListMicrovmImageVersionsCommand({ imageIdentifier: name, maxResults: 1000 }),
        );
        version = versions.items?.[versions.items.length - 1]?.imageVersion;
      }
      if (!version) throw new CliUsageError(`image ${name} has no version yet`);
      for await (const line of buildLogs(await ctx.connection(), name, version, {
        follow: Boolean(ctx.opts.follow),
      }))
        process.stdout.write(line + '\n');
      return 0;
    },
  },
  {
    name: 'logs',
    summary: "print a microVM's console: its workload's output (--follow: live)",
    usage: 'hearth logs <microvm-id> [--follow]',
    options: { 'microvm-identifier': { type: 'string' }, follow: { type: 'boolean' } },
    async run(ctx) {
      for await (const line of microvmConsole(await ctx.connection(), microvmId(ctx), {
        follow: Boolean(ctx.opts.follow),
      }))
        process.stdout.write(line + '\n');
      return 0;
    },
  },
  {
    name: 'list-managed-microvm-images',
    aliases: ['base-images'],
    summary: 'list the base images Hearth provides',
    usage: 'hearth base-images',
    options: {},
    async run(ctx) {
      const r = await (await ctx.client()).send(new ListManagedMicrovmImagesCommand({}));
      print(ctx.output, clean(r), () =>
        table(
          (r.items ?? []) as unknown as Record<string, unknown>[],
          Object.keys(r.items?.[0] ?? { imageArn: 1 }),
        ),
      );
      return 0;
    },
  },
  {
    name: 'list-managed-microvm-image-versions',
    summary: 'list the versions of a base image',
    usage: 'hearth list-managed-microvm-image-versions --image-identifier ARN',
    options: { 'image-identifier': { type: 'string' } },
    async run(ctx) {
      const r = await (
        await ctx.client()
      ).send(new ListManagedMicrovmImageVersionsCommand({ imageIdentifier: imageId(ctx) }));
      print(ctx.output, clean(r), () =>
        table(
          (r.items ?? []) as unknown as Record<string, unknown>[],
          Object.keys(r.items?.[0] ?? { version: 1 }),
        ),
      );
      return 0;
    },
  },
  ...CONNECTOR_COMMANDS,
  HOST_COMMAND,
  {
    name: 'tag-resource',
    summary: 'tag an image or a network connector',
    usage: 'hearth tag-resource --resource ARN --tags \'{"k":"v"}\'',
    options: { resource: { type: 'string' }, tags: { type: 'string' } },
    async run(ctx) {
      await (
        await ctx.client()
      ).send(
        new TagResourceCommand({ Resource: str(ctx, 'resource', true)!, Tags: json(ctx, 'tags') ?? {} }),
      );
      return 0;
    },
  },
  {
    name: 'untag-resource',
    summary: 'remove tags from an image or a network connector',
    usage: 'hearth untag-resource --resource ARN --tag-keys K ...',
    options: { resource: { type: 'string' }, 'tag-keys': { type: 'string', multiple: true } },
    async run(ctx) {
      await (
        await ctx.client()
      ).send(
        new UntagResourceCommand({
          Resource: str(ctx, 'resource', true)!,
          TagKeys: (ctx.opts['tag-keys'] as string[]) ?? [],
        }),
      );
      return 0;
    },
  },
  {
    name: 'list-tags',
    summary: 'list the tags of an image or a network connector',
    usage: 'hearth list-tags --resource ARN',
    options: { resource: { type: 'string' } },
    async run(ctx) {
      const r = await (
        await ctx.client()
      ).send(new ListTagsCommand({ Resource: str(ctx, 'resource', true)! }));
      print(ctx.output, clean(r), () => record(r.Tags ?? {}));
      return 0;
    },
  },
];

/** Builds the command context's connection and client lazily (commands like --help need neither). */
export function connectionFactory(overrides: {
  endpoint?: string;
  region?: string;
}): Pick<CommandContext, 'connection' | 'client'> {
  let conn: Promise<HearthConnection> | undefined;
  const connection = () =>
    (conn ??= loadConnection().then((c) => ({
      ...c,
      ...(overrides.endpoint ? { endpoint: overrides.endpoint } : {}),
      ...(overrides.region ? { region: overrides.region } : {}),
    })));
  return { connection, client: async () => hearthClient(await connection()) };
}
