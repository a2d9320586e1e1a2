import { connect } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GetMicrovmCommand,
  RunMicrovmCommand,
  SuspendMicrovmCommand,
  TerminateMicrovmCommand,
  createEndpointToken,
  hearthRequest,
  managedConnectorArn,
  type ManagedConnectorName,
  waitForMicrovm,
} from '../../src/sdk/index.js';
import { h2Get, sendConnect } from '../../src/gateway/testing.js';
import { buildFixtureImage, callEndpoint, startTestServer, type TestServer } from '../helpers/server.js';

const IMAGE = `gw-${Date.now().toString(36)}`;

describe('microVM endpoints through the gateway, with real VMs', () => {
  let t: TestServer;

  beforeAll(async () => {
    t = await startTestServer();
    await buildFixtureImage(t.client, IMAGE);
  });

  afterAll(async () => {
    await t.stop();
  });

  async function launch(autoResumeEnabled: boolean, ingress?: ManagedConnectorName) {
    const run = await t.client.send(
      new RunMicrovmCommand({
        imageIdentifier: IMAGE,
        idlePolicy: { maxIdleDurationSeconds: 3600, suspendedDurationSeconds: 3600, autoResumeEnabled },
        ...(ingress ? { ingressNetworkConnectors: [managedConnectorArn('local', ingress)] } : {}),
      }),
    );
    const vm = await waitForMicrovm(t.client, run.microvmId!, ['RUNNING']);
    return {
      id: vm.microvmId!,
      endpoint: vm.endpoint!,
      token: await createEndpointToken(t.client, vm.microvmId!),
    };
  }

  it('100 concurrent requests to a SUSPENDED microVM cause exactly one resume, and all are answered', async () => {
    const vm = await launch(true);
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: vm.id }));
    const engine = t.server.engine;
    const original = engine.resume.bind(engine);
    let resumes = 0;
    engine.resume = async (id: string) => {
      resumes++;
      return original(id);
    };
    try {
      const results = await Promise.all(
        Array.from({ length: 100 }, () => callEndpoint(t, vm.endpoint, { token: vm.token })),
      );
      expect(results.map((r) => r.status)).toEqual(Array(100).fill(200));
      const counts = results
        .map((r) => (JSON.parse(r.body) as { count: number }).count)
        .sort((a, b) => a - b);
      expect(new Set(counts).size).toBe(100); // one process served them all, in memory
      expect(resumes).toBe(1);
    } finally {
      engine.resume = original;
    }
    expect((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: vm.id }))).state).toBe('RUNNING');
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: vm.id }));
  });

  it('a request that arrives while the microVM is SUSPENDING waits and is delivered after a resume', async () => {
    const vm = await launch(true);
    const suspending = t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: vm.id }));
    await new Promise((r) => setTimeout(r, 20));
    const r = await callEndpoint(t, vm.endpoint, { token: vm.token });
    await suspending;
    expect(r.status).toBe(200);
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: vm.id }));
  });

  it('without autoResume, a SUSPENDED microVM answers 409 with a code saying so', async () => {
    const vm = await launch(false);
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: vm.id }));
    const r = await callEndpoint(t, vm.endpoint, { token: vm.token });
    expect(r.status).toBe(409);
    expect(JSON.parse(r.body)).toMatchObject({ code: 'MICROVM_SUSPENDED' });
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: vm.id }));
  });

  it('serves HTTP/2 clients, and a port outside the token is refused', async () => {
    const vm = await launch(true);
    const [host, port] = vm.endpoint.split(':') as [string, string];
    const session = connect(`https://127.0.0.1:${port}`, { ca: t.ca, servername: host });
    try {
      const { status, body } = await h2Get(session, {
        ':path': '/',
        ':authority': vm.endpoint,
        'x-hearth-proxy-auth': vm.token,
      });
      expect(status).toBe(200);
      expect(JSON.parse(body)).toHaveProperty('count');
    } finally {
      session.close();
    }
    const wrongPort = await callEndpoint(t, vm.endpoint, { token: vm.token, port: 9000 });
    expect(wrongPort.status).toBe(403);
    await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: vm.id }));
  });

  it('ALL_INGRESS carries raw TCP through a CONNECT tunnel (resuming a SUSPENDED microVM); HTTP_INGRESS refuses it', async () => {
    const connectTo = async (vm: { id: string; endpoint: string; token: string }) => {
      const [host, port] = vm.endpoint.split(':') as [string, string];
      return sendConnect(
        Number(port),
        `CONNECT ${host}:8080 HTTP/1.1\r\nHost: ${host}:8080\r\nX-Hearth-Proxy-Auth: ${vm.token}\r\n\r\n`,
        { ca: t.ca, servername: host },
      );
    };
    const all = await launch(true, 'ALL_INGRESS');
    await t.client.send(new SuspendMicrovmCommand({ microvmIdentifier: all.id }));
    const tunnel = await connectTo(all);
    expect(tunnel.status).toBe(200);
    expect((await t.client.send(new GetMicrovmCommand({ microvmIdentifier: all.id }))).state).toBe('RUNNING');
    // Raw bytes through the tunnel: an HTTP/1.0 exchange written by hand, the guest's answer read back.
    tunnel.socket.write('GET / HTTP/1.0\r\n\r\n');
    tunnel.socket.resume();
    const reply = await new Promise<string>((resolve) => {
      let got = tunnel.rest.toString();
      tunnel.socket.on('data', (c: Buffer) => (got += c.toString()));
      tunnel.socket.on('end', () => resolve(got));
    });
    expect(reply).toMatch(/^HTTP\/1\.[01] 200/);
    expect(reply).toContain('"count"');
    tunnel.socket.destroy();

    const http = await launch(true);
    const refused = await connectTo(http);
    expect(refused.status).toBe(403);
    expect(refused.json()).toMatchObject({ code: 'INGRESS_PROTOCOL_NOT_ALLOWED' });
    refused.socket.destroy();
    for (const id of [all.id, http.id])
      await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
  });

  it('an unfinished request keeps the microVM busy by default; with openStreamsCountAsActivity false it does not', async () => {
    const stateWhileSlowRequest = async (openStreamsCountAsActivity?: boolean) => {
      const run = await hearthRequest<{ microvmId: string }>(t.connection, 'POST', '/2025-09-09/microvms', {
        imageIdentifier: IMAGE,
        idlePolicy: {
          maxIdleDurationSeconds: 1,
          suspendedDurationSeconds: 3600,
          autoResumeEnabled: true,
          ...(openStreamsCountAsActivity === undefined ? {} : { openStreamsCountAsActivity }),
        },
      });
      const vm = await waitForMicrovm(t.client, run.microvmId, ['RUNNING']);
      expect(vm.idlePolicy).toBeDefined();
      const token = await createEndpointToken(t.client, run.microvmId);
      const slow = callEndpoint(t, vm.endpoint!, { token, path: '/slow' }).catch((e: Error) => e); // 3 s
      await new Promise((r) => setTimeout(r, 2_500)); // idle deadline (1 s) long passed
      const state = (await t.client.send(new GetMicrovmCommand({ microvmIdentifier: run.microvmId }))).state;
      await slow;
      const got = await hearthRequest<{ idlePolicy: Record<string, unknown> }>(
        t.connection,
        'GET',
        `/2025-09-09/microvms/${run.microvmId}`,
      );
      await waitForMicrovm(t.client, run.microvmId, ['SUSPENDED']);
      await t.client.send(new TerminateMicrovmCommand({ microvmIdentifier: run.microvmId }));
      return { state, idlePolicy: got.idlePolicy };
    };
    const counted = await stateWhileSlowRequest();
    expect(counted.state).toBe('RUNNING');
    const ignored = await stateWhileSlowRequest(false);
    expect(['SUSPENDING', 'SUSPENDED']).toContain(ignored.state);
    expect(ignored.idlePolicy.openStreamsCountAsActivity).toBe(false);
  });
});
