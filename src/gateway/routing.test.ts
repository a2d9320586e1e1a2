import { describe, expect, it } from 'vitest';
import {
  forwardRawRequestHeaders,
  hostWithoutPort,
  parseConnectTarget,
  parseTarget,
  splitHearthQuery,
  stripHearthCookies,
} from './routing.js';

const cfg = { domain: 'microvm.localhost', defaultPort: 8080 };

describe('routing', () => {
  it('reads the host with or without port, IPv6 literals, trailing dot', () => {
    expect(hostWithoutPort('VM-1.Microvm.Localhost:8443')).toBe('vm-1.microvm.localhost');
    expect(hostWithoutPort('[::1]:8443')).toBe('::1');
    expect(hostWithoutPort('a.example.')).toBe('a.example');
  });

  it('removes hearth-* query parameters and keeps every other byte', () => {
    expect(splitHearthQuery('/p?a=%20b&hearth-auth=t.o.k&c&hearth-microvm=vm-1')).toEqual({
      path: '/p?a=%20b&c',
      auth: 't.o.k',
      microvm: 'vm-1',
    });
    expect(splitHearthQuery('/p?hearth-auth=x')).toEqual({ path: '/p', auth: 'x' });
    expect(splitHearthQuery('/p?x=hearth-auth')).toEqual({ path: '/p?x=hearth-auth' });
  });

  it('removes hearth-* cookies only', () => {
    expect(stripHearthCookies('a=1; hearth-auth=x; b=2; hearth-microvm=y')).toBe('a=1; b=2');
    expect(stripHearthCookies('hearth-auth=x')).toBeUndefined();
    expect(stripHearthCookies('a=hearth-auth')).toBe('a=hearth-auth');
  });

  it('the host wins over the header; then header, query, cookie', () => {
    const h = (o: Record<string, string>) => o;
    expect(
      parseTarget('vm-1.microvm.localhost', '/', h({ 'x-hearth-microvm-id': 'vm-2' }), cfg),
    ).toMatchObject({
      microvmId: 'vm-1',
      idFrom: 'host',
    });
    expect(parseTarget('localhost', '/', h({ 'x-hearth-microvm-id': 'vm-2' }), cfg).idFrom).toBe('header');
    expect(parseTarget('localhost', '/?hearth-microvm=vm-3', {}, cfg)).toMatchObject({
      microvmId: 'vm-3',
      idFrom: 'query',
    });
    expect(parseTarget('localhost', '/', h({ cookie: 'hearth-microvm=vm-4' }), cfg)).toMatchObject({
      microvmId: 'vm-4',
      idFrom: 'cookie',
    });
  });

  it('token precedence: header, subprotocol, cookie, query; port from header or subprotocol', () => {
    const t = parseTarget(
      'vm-1.microvm.localhost',
      '/?hearth-auth=q',
      {
        cookie: 'hearth-auth=c',
        'sec-websocket-protocol': 'hearth, hearth.authentication.s, hearth.port.9000, chat',
      },
      cfg,
      true,
    );
    expect(t).toMatchObject({ token: 's', tokenFrom: 'subprotocol', port: 9000, appSubprotocols: ['chat'] });
    expect(t.offeredHearthSubprotocol).toBe(true);
    expect(
      parseTarget('vm-1.microvm.localhost', '/?hearth-auth=q', { cookie: 'hearth-auth=c' }, cfg).tokenFrom,
    ).toBe('cookie');
    expect(parseTarget('vm-1.microvm.localhost', '/', {}, cfg).port).toBe(8080);
  });

  it('rejects malformed hosts, ids and ports (400)', () => {
    expect(() => parseTarget('a.b.microvm.localhost', '/', {}, cfg)).toThrow(
      expect.objectContaining({ code: 'GATEWAY_BAD_HOST' }),
    );
    expect(() => parseTarget(undefined, '/', {}, cfg)).toThrow(
      expect.objectContaining({ code: 'GATEWAY_MICROVM_ID_MISSING' }),
    );
    expect(() => parseTarget('-x.microvm.localhost', '/', {}, cfg)).toThrow(
      expect.objectContaining({ code: 'GATEWAY_BAD_MICROVM_ID' }),
    );
    for (const p of ['0', '65536', '80a', ''])
      expect(() => parseTarget('vm.microvm.localhost', '/', { 'x-hearth-proxy-port': p }, cfg)).toThrow(
        expect.objectContaining({ code: 'GATEWAY_BAD_PORT' }),
      );
  });

  it('forwards headers without hop-by-hop, X-Hearth-*, hearth cookies; appends X-Forwarded-For', () => {
    const out = forwardRawRequestHeaders(
      [
        'Host',
        'vm-1.microvm.localhost',
        'Connection',
        'keep-alive, X-Secret-Hop',
        'X-Secret-Hop',
        '1',
        'Keep-Alive',
        'timeout=5',
        'Transfer-Encoding',
        'chunked',
        'X-Hearth-Proxy-Auth',
        'tok',
        'Cookie',
        'a=1; hearth-auth=tok',
        'X-Forwarded-For',
        '10.0.0.1',
        'X-Forwarded-Proto',
        'spoofed',
        'Accept',
        'text/html',
      ],
      { remoteAddress: '127.0.0.1', proto: 'https' },
    );
    expect(out).toEqual([
      'Host',
      'vm-1.microvm.localhost',
      'Cookie',
      'a=1',
      'Accept',
      'text/html',
      'X-Forwarded-For',
      '10.0.0.1, 127.0.0.1',
      'X-Forwarded-Proto',
      'https',
      'X-Forwarded-Host',
      'vm-1.microvm.localhost',
    ]);
  });

  describe('CONNECT targets', () => {
    const codeOf = (f: () => unknown) => {
      try {
        f();
        return 'OK';
      } catch (e) {
        return (e as { code: string }).code;
      }
    };

    it('reads the microVM and the guest port from the authority; the port header is not read', () => {
      expect(
        parseConnectTarget(
          'VM-1.microvm.localhost:5432',
          { 'x-hearth-proxy-auth': ' t.o.k ', 'x-hearth-proxy-port': '9', 'x-hearth-microvm-id': 'vm-2' },
          cfg,
        ),
      ).toMatchObject({ microvmId: 'vm-1', port: 5432, token: 't.o.k', idFrom: 'host', tokenFrom: 'header' });
    });

    it('takes the microVM from X-Hearth-Microvm-Id when the host is not an endpoint (IPv6 too)', () => {
      expect(parseConnectTarget('127.0.0.1:22', { 'x-hearth-microvm-id': 'vm-2' }, cfg)).toMatchObject({
        microvmId: 'vm-2',
        port: 22,
        idFrom: 'header',
        token: undefined,
      });
      expect(parseConnectTarget('[::1]:22', { 'x-hearth-microvm-id': 'vm-2' }, cfg).port).toBe(22);
    });

    it('takes a Bearer Proxy-Authorization (any case), X-Hearth-Proxy-Auth first, other schemes not', () => {
      const t = (h: Record<string, string>) => parseConnectTarget('vm-1.microvm.localhost:1', h, cfg);
      expect(t({ 'proxy-authorization': 'bearer abc' })).toMatchObject({
        token: 'abc',
        tokenFrom: 'proxy-authorization',
      });
      expect(t({ 'proxy-authorization': 'Bearer abc', 'x-hearth-proxy-auth': 'h' }).token).toBe('h');
      expect(t({ 'proxy-authorization': 'Basic dTpw' }).token).toBeUndefined();
    });

    it('refuses targets that are not <host>:<port>, and hosts that name no microVM', () => {
      const c = (a: string, h: Record<string, string> = {}) => codeOf(() => parseConnectTarget(a, h, cfg));
      for (const bad of [
        'vm-1.microvm.localhost',
        'vm-1.microvm.localhost:0',
        'x:65536',
        'x:1a',
        '/',
        '',
        'a b:1',
        'u@x:1',
      ])
        expect(c(bad), bad).toBe('GATEWAY_BAD_CONNECT_TARGET');
      expect(c('x:65535', {})).toBe('GATEWAY_MICROVM_ID_MISSING');
      expect(c('a.b.microvm.localhost:1')).toBe('GATEWAY_BAD_HOST');
      expect(c('x:1', { 'x-hearth-microvm-id': 'Bad_Id' })).toBe('GATEWAY_BAD_MICROVM_ID');
    });
  });
});
