import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConflictException,
  CreateMicrovmAuthTokenCommand,
  CreateMicrovmImageCommand,
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
  ResourceNotFoundException,
  ResumeMicrovmCommand,
  RunMicrovmCommand,
  SuspendMicrovmCommand,
  TagResourceCommand,
  TerminateMicrovmCommand,
  UntagResourceCommand,
  UpdateMicrovmImageCommand,
  UpdateMicrovmImageVersionCommand,
  ValidationException,
  createEndpointToken,
  ensureImage,
  hearthRequest,
  waitForImageVersion,
  waitForMicrovm,
} from '../../src/sdk/index.js';
import { BASE_ARN, fixtureImage } from '../helpers/images.js';
import { makeZip } from '../helpers/zip.js';
import { callEndpoint, startTestServer, type TestServer } from '../helpers/server.js';

const HOOKS = {
  port: 9000,
  microvmImageHooks: { ready: 'ENABLED' as const, readyTimeoutInSeconds: 60 },
  microvmHooks: {
    run: 'ENABLED' as const,
    resume: 'ENABLED' as const,
    suspend: 'ENABLED' as const,
    terminate: 'ENABLED' as const,
  },
};

describe('the API through the official AWS SDK client', () => {
  let t: TestServer;
  const name = `sdk-${Date.now().toString(36)}`;
  let imageArn: string;

  beforeAll(async () => {
    t = await startTestServer();
    const created = await t.client.send(
      new CreateMicrovmImageCommand({
        name,
        codeArtifact: { uri: fixtureImage('lifecycle') },
        baseImageArn: BASE_ARN,
        buildRoleArn: 'arn:aws:iam::000000000000:role/unused',
        resources: [{ minimumMemoryInMiB: 512 }],
        hooks: HOOKS,
        tags: { team: 'hearth' },
      }),
    );
    expect(created).toMatchObject({ name, state: 'CREATING', imageVersion: '1.0' });
    imageArn = created.imageArn!;
    const v = await waitForImageVersion(t.client, name, '1.0');
    expect(v.state).toBe('SUCCESSFUL');
  });

  afterAll(async () => {
    await t.stop();
  });

  it('describes images, versions, builds (with snapshot sizes) and the managed base images', async () => {
    expect(await t.client.send(new GetMicrovmImageCommand({ imageIdentifier: imageArn }))).toMatchObject({
      name,
      state: 'CREATED',
      latestActiveImageVersion: '1.0',
    });
    // ensureImage leaves an image with an ACTIVE version alone.
    let built = false;
    const ensured = await ensureImage(
      t.client,
      name,
      {
        codeArtifact: { uri: '/nonexistent' },
        baseImageArn: BASE_ARN,
        buildRoleArn: 'arn:aws:iam::000000000000:role/x',
      },
      { onBuild: () => (built = true) },
    );
    expect(ensured).toEqual({ version: '1.0', built: false });
    expect(built).toBe(false);
    const list = await t.client.send(new ListMicrovmImagesCommand({ nameFilter: name }));
    expect(list.items?.map((i) => i.name)).toEqual([name]);
    const versions = await t.client.send(new ListMicrovmImageVersionsCommand({ imageIdentifier: name }));
    expect(versions.items?.[0]).toMatchObject({ imageVersion: '1.0', state: 'SUCCESSFUL', status: 'ACTIVE' });
    expect(versions.items?.[0]?.createdAt).toBeInstanceOf(Date);
    const builds = await t.client.send(
      new ListMicrovmImageBuildsCommand({ imageIdentifier: name, imageVersion: '1.0' }),
    );
    const buildId = builds.items![0]!.buildId!;
    const build = await t.client.send(
      new GetMicrovmImageBuildCommand({ imageIdentifier: name, imageVersion: '1.0', buildId }),
    );
    expect(build.buildState).toBe('SUCCESSFUL');
    expect(build.snapshotBuild?.memorySnapshotSizeInBytes).toBeGreaterThan(1 << 20);
    const managed = await t.client.send(new ListManagedMicrovmImagesCommand({}));
    expect(managed.items?.map((m) => m.imageArn)).toContain(BASE_ARN);
    const mv = await t.client.send(new ListManagedMicrovmImageVersionsCommand({ imageIdentifier: BASE_ARN }));
    expect(mv.items?.[0]?.imageVersion).toMatch(/^bookworm-/);
  });

  it('tags images', async () => {
    await t.client.send(new TagResourceCommand({ Resource: imageArn, Tags: { stage: 'test' } }));
    expect((await t.client.send(new ListTagsCommand({ Resource: imageArn }))).Tags).toEqual({
      team: 'hearth',
      stage: 'test',
    });
    await t.client.send(new UntagResourceCommand({ Resource: imageArn, TagKeys: ['team'] }));
    expect((await t.client.send(new ListTagsCommand({ Resource: imageArn }))).Tags).toEqual({
      stage: 'test',
    });
  });

  it('runs a microVM through its whole lifecycle, reached through its HTTPS endpoint with a token', async () => {
    const run = await t.client.send(
      new RunMicrovmCommand({ imageIdentifier: imageArn, runHookPayload: 'hello' }),
    );
    expect(run).toMatchObject({
      state: 'PENDING',
      imageArn,
      imageVersion: '1.0',
      maximumDurationInSeconds: 28_800,
    });
    expect(run.startedAt).toBeInstanceOf(Date);
    const id = run.microvmId!;
    const vm = await waitForMicrovm(t.client, id, ['RUNNING']);
    expect(vm.endpoint).toBe(`${id}.microvm.localhost:${t.server.config.gatewayPort}`);
    const token = await createEndpointToken(t.client, id);
    const state = JSON.parse((await callEndpoint(t, vm.endpoint!, { token, path: '/state' })).body) as {
      payload: string;
      hooks: string[];
    };
    expect(state.payload).toBe('hello');
    expect((await callEndpoint(t, vm.endpoint!)).status).toBe(403); // no token

    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
    expect((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state).toBe('SUSPENDED');
    const tokenWhileSuspended = await createEndpointToken(t.client, id); // tokens can be minted while suspended
    await t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
    expect((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }))).state).toBe('RUNNING');
    expect((await callEndpoint(t, vm.endpoint!, { token: tokenWhileSuspended })).status).toBe(200);

    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id })); // idempotent
    const gone = await t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
    expect(gone.state).toBe('TERMINATED');
    expect(gone.terminatedAt).toBeInstanceOf(Date);
    const after = await callEndpoint(t, vm.endpoint!, { token });
    expect(after.status).toBe(410); // tokens die with their VM
    await expect(t.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }))).rejects.toBeInstanceOf(
      ConflictException,
    );
  });

  it('lists microVMs page by page', async () => {
    const ids = [];
    for (let i = 0; i < 3; i++)
      ids.push((await t.client.send(new RunMicrovmCommand({ imageIdentifier: name }))).microvmId!);
    const seen: string[] = [];
    let nextToken: string | undefined;
    do {
      const page = await t.client.send(
        new ListMicrovmsCommand({
          imageIdentifier: name,
          maxResults: 1,
          ...(nextToken ? { nextToken } : {}),
        }),
      );
      expect(page.items!.length).toBeLessThanOrEqual(1);
      seen.push(...page.items!.map((i) => i.microvmId!));
      nextToken = page.nextToken;
    } while (nextToken);
    for (const id of ids) expect(seen).toContain(id);
    for (const id of ids) {
      await waitForMicrovm(t.client, id, ['RUNNING']);
      await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
    }
  });

  it('replays a RunMicrovm with the same clientToken', async () => {
    const a = await t.client.send(
      new RunMicrovmCommand({ imageIdentifier: name, clientToken: `ct-${name}` }),
    );
    const b = await t.client.send(
      new RunMicrovmCommand({ imageIdentifier: name, clientToken: `ct-${name}` }),
    );
    expect(b.microvmId).toBe(a.microvmId);
    await waitForMicrovm(t.client, a.microvmId!, ['RUNNING']);
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: a.microvmId! }));
  });

  it('rejects out-of-range values with the limit in the message, and unknown fields', async () => {
    const run = (extra: object) => t.client.send(new RunMicrovmCommand({ imageIdentifier: name, ...extra }));
    await expect(run({ maximumDurationInSeconds: 28_801 })).rejects.toThrow(/less than or equal to 28800/);
    await expect(run({ runHookPayload: 'x'.repeat(4097) })).rejects.toBeInstanceOf(ValidationException);
    await expect(
      run({
        idlePolicy: { maxIdleDurationSeconds: 0, suspendedDurationSeconds: 1, autoResumeEnabled: true },
      }),
    ).rejects.toBeInstanceOf(ValidationException);
    await expect(
      t.client.send(
        new CreateMicrovmAuthTokenCommand({
          microvmIdentifier: 'microvm-x',
          expirationInMinutes: 61,
          allowedPorts: [{ port: 8080 }],
        }),
      ),
    ).rejects.toThrow(/less than or equal to 60/);
    await expect(
      hearthRequest(t.connection, 'POST', '/2025-09-09/microvms', { imageIdentifier: name, colour: 'blue' }),
    ).rejects.toThrow(/colour/);
    await expect(
      t.client.send(new GetMicrovmCommand({ microvmIdentifier: 'microvm-does-not-exist' })),
    ).rejects.toBeInstanceOf(ResourceNotFoundException);
  });

  it('answers 404 "No active version found" when no version is ACTIVE', async () => {
    await t.client.send(
      new UpdateMicrovmImageVersionCommand({
        imageIdentifier: name,
        imageVersion: '1.0',
        status: 'INACTIVE',
      }),
    );
    await expect(t.client.send(new RunMicrovmCommand({ imageIdentifier: name }))).rejects.toSatisfy(
      (e: Error) => e instanceof ResourceNotFoundException && /No active version found/.test(e.message),
    );
    await t.client.send(
      new UpdateMicrovmImageVersionCommand({ imageIdentifier: name, imageVersion: '1.0', status: 'ACTIVE' }),
    );
  });

  it('builds from an http:// code artifact (a zip downloaded, then checked like a local one), updates, deletes', async () => {
    const dir = fixtureImage('lifecycle');
    const zip = makeZip(readdirSync(dir).map((f) => ({ name: f, data: readFileSync(join(dir, f)) })));
    const http = createServer((req, res) => {
      if (req.url === '/app.zip') res.writeHead(200, { 'content-type': 'application/zip' }).end(zip);
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    const base = `http://user:s3cret@127.0.0.1:${(http.address() as AddressInfo).port}`;
    try {
      const remote = `${name}-http`;
      for (const [image, path] of [
        [remote, '/app.zip'],
        [`${remote}-404`, '/missing.zip'],
      ] as const) {
        await t.client.send(
          new CreateMicrovmImageCommand({
            name: image,
            codeArtifact: { uri: base + path },
            baseImageArn: BASE_ARN,
            buildRoleArn: 'arn:aws:iam::000000000000:role/unused',
            resources: [{ minimumMemoryInMiB: 512 }],
          }),
        );
      }
      expect((await waitForImageVersion(t.client, remote, '1.0')).state).toBe('SUCCESSFUL');
      const missing = await waitForImageVersion(t.client, `${remote}-404`, '1.0');
      expect(missing.state).toBe('FAILED');
      const builds = await t.client.send(
        new ListMicrovmImageBuildsCommand({ imageIdentifier: `${remote}-404`, imageVersion: '1.0' }),
      );
      const failure = JSON.stringify(builds.items);
      expect(failure).toContain('CODE_ARTIFACT_NOT_FOUND');
      expect(failure).not.toContain('s3cret');
      // ensureImage builds a new version of an image that has no ACTIVE one.
      expect(
        await ensureImage(t.client, `${remote}-404`, {
          codeArtifact: { uri: fixtureImage('lifecycle') },
          baseImageArn: BASE_ARN,
          buildRoleArn: 'arn:aws:iam::000000000000:role/unused',
          resources: [{ minimumMemoryInMiB: 512 }],
        }),
      ).toEqual({ version: '2.0', built: true });

      // A new version from a local artifact, then the old one and the images deleted.
      const updated = await t.client.send(
        new UpdateMicrovmImageCommand({
          imageIdentifier: remote,
          codeArtifact: { uri: fixtureImage('lifecycle') },
          baseImageArn: BASE_ARN,
          buildRoleArn: 'arn:aws:iam::000000000000:role/unused',
          resources: [{ minimumMemoryInMiB: 512 }],
        }),
      );
      expect(updated).toMatchObject({ name: remote, imageVersion: '2.0' });
      expect((await waitForImageVersion(t.client, remote, '2.0')).state).toBe('SUCCESSFUL');
      expect(
        await t.client.send(
          new GetMicrovmImageVersionCommand({ imageIdentifier: remote, imageVersion: '2.0' }),
        ),
      ).toMatchObject({ imageVersion: '2.0', state: 'SUCCESSFUL', status: 'ACTIVE' });
      await t.client.send(
        new DeleteMicrovmImageVersionCommand({ imageIdentifier: remote, imageVersion: '1.0' }),
      );
      const left = await t.client.send(new ListMicrovmImageVersionsCommand({ imageIdentifier: remote }));
      expect(left.items?.map((v) => v.imageVersion)).toEqual(['2.0']);
      for (const image of [remote, `${remote}-404`]) {
        await t.client.send(new DeleteMicrovmImageCommand({ imageIdentifier: image }));
        await expect(
          t.client.send(new GetMicrovmImageCommand({ imageIdentifier: image })),
        ).rejects.toBeInstanceOf(ResourceNotFoundException);
      }
    } finally {
      http.close();
    }
  });

  it('answered every request as the OpenAPI document says', () => {
    expect(t.specViolations).toEqual([]);
  });
});
