import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { setLogSink } from '../util/log.js';
import { checkResponse } from './openapi-validate.js';
import type { OperationName } from './operations.js';
import type { OperationHandlers } from './server.js';
import { CANNED_OUTPUTS, sendRaw, startTestApi, type TestApi } from './testing.js';

const PATH = '/hearth/v1/network-connectors';
const RULE = { cidr: '10.0.5.0/24', protocol: 'TCP', ports: [{ port: 5432 }] };

let api: TestApi;
const calls: { operation: OperationName; input: unknown }[] = [];
let restoreSink: ((line: string) => void) | undefined;

function handler(operation: OperationName) {
  return async (input: unknown) => {
    calls.push({ operation, input });
    return CANNED_OUTPUTS[operation];
  };
}

beforeAll(async () => {
  restoreSink = setLogSink(() => undefined);
  api = await startTestApi({
    CreateNetworkConnector: handler('CreateNetworkConnector'),
    GetNetworkConnector: handler('GetNetworkConnector'),
    ListNetworkConnectors: handler('ListNetworkConnectors'),
    DeleteNetworkConnector: handler('DeleteNetworkConnector'),
  } as Partial<OperationHandlers>);
});

afterAll(async () => {
  await api.close();
  if (restoreSink) setLogSink(restoreSink);
});

beforeEach(() => {
  calls.length = 0;
});

async function create(body: unknown) {
  return sendRaw(api.url, { method: 'POST', path: PATH, body: JSON.stringify(body) });
}

describe('the network connector routes', () => {
  it('create: 201, the validated input handed over, the output as the OpenAPI document says', async () => {
    const r = await create({
      name: 'db_1',
      egressRules: [RULE, { hostname: '*.example.com' }],
      clientToken: 't',
    });
    expect(r.status).toBe(201);
    expect(calls).toEqual([
      {
        operation: 'CreateNetworkConnector',
        input: { name: 'db_1', egressRules: [RULE, { hostname: '*.example.com' }], clientToken: 't' },
      },
    ]);
    expect(checkResponse('CreateNetworkConnector', 201, r.body)).toEqual([]);
    expect((r.json as { createdAt: number }).createdAt).toBeTypeOf('number');
  });

  it('get, list and delete: labels (ARNs percent-encoded) and query parameters', async () => {
    const arn = 'arn:hearth:lambda:local:000000000000:network-connector:db';
    const get = await sendRaw(api.url, { method: 'GET', path: `${PATH}/${encodeURIComponent(arn)}` });
    expect(get.status).toBe(200);
    expect(checkResponse('GetNetworkConnector', 200, get.body)).toEqual([]);
    const list = await sendRaw(api.url, {
      method: 'GET',
      path: PATH,
      query: { maxResults: '2', nextToken: 'n' },
    });
    expect(list.status).toBe(200);
    expect(checkResponse('ListNetworkConnectors', 200, list.body)).toEqual([]);
    const del = await sendRaw(api.url, { method: 'DELETE', path: `${PATH}/db` });
    expect(del.status).toBe(204);
    expect(del.body).toBe('');
    expect(calls.map((c) => c.input)).toEqual([
      { connectorIdentifier: arn },
      { maxResults: 2, nextToken: 'n' },
      { connectorIdentifier: 'db' },
    ]);
  });

  it('needs a signature like every operation', async () => {
    const r = await sendRaw(api.url, { method: 'GET', path: PATH }, { sign: false });
    expect(r.status).toBe(403);
    expect(r.headers['x-amzn-errortype']).toBe('MissingAuthenticationTokenException');
  });

  it('answers 405 for an update: connectors are immutable', async () => {
    const r = await sendRaw(api.url, { method: 'PUT', path: `${PATH}/db`, body: '{}' });
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('DELETE, GET');
  });

  it.each([
    [{ egressRules: [RULE] }, "Value null at 'name' failed to satisfy constraint: Member must not be null"],
    [
      { name: 'a b', egressRules: [RULE] },
      "Value 'a b' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9_-]+$",
    ],
    [{ name: 'x'.repeat(65), egressRules: [RULE] }, 'Member must have length less than or equal to 64'],
    [
      { name: 'n', egressRules: [] },
      "Value at 'egressRules' failed to satisfy constraint: Member must have length greater than or equal to 1",
    ],
    [
      { name: 'n', egressRules: Array.from({ length: 51 }, () => RULE) },
      "Value at 'egressRules' failed to satisfy constraint: Member must have length less than or equal to 50",
    ],
    [
      { name: 'n', egressRules: [{ ...RULE, protocol: 'ICMP' }] },
      "Value 'ICMP' at 'egressRules.1.member.protocol' failed to satisfy constraint: Member must satisfy enum value set: [TCP, UDP, ALL]",
    ],
    [
      { name: 'n', egressRules: [{ ...RULE, ports: [{ port: 0 }] }] },
      "Value '0' at 'egressRules.1.member.ports.1.member.port' failed to satisfy constraint: Member must have value greater than or equal to 1",
    ],
    [
      { name: 'n', egressRules: [{ ...RULE, ports: [{ port: 65_536 }] }] },
      'Member must have value less than or equal to 65535',
    ],
    [
      { name: 'n', egressRules: [{ ...RULE, ports: [{ range: { startPort: 9, endPort: 8 } }] }] },
      "Value at 'egressRules.1.member.ports.1.member.range' failed to satisfy constraint: startPort must be less than or equal to endPort",
    ],
    [
      { name: 'n', egressRules: [{ ...RULE, ports: [{ allPorts: {} }] }] },
      'Member is not a known member of NetworkConnectorPort (known: port, range)',
    ],
    [
      {
        name: 'n',
        egressRules: [{ ...RULE, ports: Array.from({ length: 21 }, (_, i) => ({ port: i + 1 })) }],
      },
      "Value at 'egressRules.1.member.ports' failed to satisfy constraint: Member must have length less than or equal to 20",
    ],
    [
      { name: 'n', egressRules: [{ ...RULE, cidrs: ['x'] }] },
      "Value at 'egressRules.1.member.cidrs' failed to satisfy constraint: Member is not a known field of EgressRule (known: cidr, hostname, protocol, ports)",
    ],
    [
      { name: 'n', egressRules: [RULE], colour: 'blue' },
      "Value at 'colour' failed to satisfy constraint: Member is not a known field of CreateNetworkConnector",
    ],
    [
      { name: 'n', egressRules: [RULE], description: 'd'.repeat(257) },
      "at 'description' failed to satisfy constraint: Member must have length less than or equal to 256",
    ],
  ])('create refuses %j: %s', async (body, message) => {
    const r = await create(body);
    expect(r.status).toBe(400);
    expect(r.headers['x-amzn-errortype']).toBe('ValidationException');
    expect((r.json as { message: string }).message).toContain(message);
    expect(checkResponse('CreateNetworkConnector', 400, r.body)).toEqual([]);
    expect(calls).toEqual([]);
  });

  it('refuses an out-of-range page size', async () => {
    const r = await sendRaw(api.url, { method: 'GET', path: PATH, query: { maxResults: '0' } });
    expect(r.status).toBe(400);
    expect((r.json as { message: string }).message).toContain(
      "Value '0' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1",
    );
  });
});
