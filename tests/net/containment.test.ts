import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Engine } from '../../src/vmm/engine.js';
import type { MicroVm } from '../../src/vmm/microvm.js';
import { GUEST_GATEWAY } from '../../src/net/vm-network.js';
import { guestConnect, openEngine, tapNet, uniqueId, vmUrl } from '../helpers/vm.js';
import { httpGet } from '../../src/util/http-get.js';

/** A refused, timed-out or unreachable connection: the probe ran, and the connection failed. */
const BLOCKED = /^(TimeoutError|ConnectionRefusedError|OSError)$/;

describe('guest network containment (fail closed)', () => {
  let engine: Engine;
  let a: MicroVm;
  let b: MicroVm;
  let server: Server;
  let port: number;

  beforeAll(async () => {
    engine = await openEngine();
    const template = await engine.template(inject('counterTemplate'));
    [a, b] = await Promise.all([
      engine.clone(template, { vmId: uniqueId('net-a') }),
      engine.clone(template, { vmId: uniqueId('net-b') }),
    ]);
    // A host service listening on every address: the guest must not reach it.
    server = createServer((s) => s.end('host secret\n'));
    await new Promise<void>((r) => server.listen(0, '0.0.0.0', r));
    port = (server.address() as { port: number }).port;
  });

  afterAll(async () => {
    server.close();
    await engine.destroy(a.id);
    await engine.destroy(b.id);
    await engine.close();
  });

  it('the host reaches the guest app through the forwarded address', async () => {
    expect((await httpGet(await vmUrl(a))).status).toBe(200);
  });

  it('the probe itself works: the guest reaches its own app', async () => {
    expect(await guestConnect(a, '127.0.0.1', 8080)).toBe('connected');
  });

  it("the guest cannot reach a host service on the host's end of its link", async () => {
    expect(await guestConnect(a, tapNet(a).hostIp, port)).toMatch(BLOCKED);
  });

  it('the guest cannot reach its own namespace gateway', async () => {
    expect(await guestConnect(a, GUEST_GATEWAY, port)).toMatch(BLOCKED);
    expect(await guestConnect(a, GUEST_GATEWAY, 22)).toMatch(BLOCKED);
  });

  it('the guest cannot reach another VM', async () => {
    expect(await guestConnect(a, tapNet(b).endpointIp, 8080)).toMatch(BLOCKED);
    expect(await guestConnect(a, tapNet(b).hostIp, port)).toMatch(BLOCKED);
  });

  it('the guest cannot reach the metadata address or the outside', async () => {
    expect(await guestConnect(a, '169.254.169.254', 80)).toMatch(BLOCKED);
    expect(await guestConnect(a, '1.1.1.1', 443)).toMatch(BLOCKED);
  });
  it('refuses rather than drops: a DNS lookup fails at once, and the guest resolves its own name locally', async () => {
    const agent = await a.agent();
    const script = `
import socket, time
t = time.time()
try:
    socket.getaddrinfo('example.com', 443)
    print('resolved')
except OSError as e:
    print('failed', round(time.time() - t, 2))
print(socket.gethostbyname(socket.gethostname()))
`;
    const out = (await agent.exec('/usr/bin/python3', ['-c', script], { timeoutMs: 30_000 })).stdout
      .toString()
      .trim()
      .split('\n');
    expect(out[0]).toMatch(/^failed /);
    expect(Number(out[0]!.split(' ')[1])).toBeLessThan(3);
    expect(out[1]).toBe('127.0.1.1');
  });
});
