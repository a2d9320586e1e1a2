import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadGatewayTls } from './tls.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hearth-tls-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('loadGatewayTls', () => {
  it('generates a CA and a certificate for the domain, localhost and 127.0.0.1, keys 0600', async () => {
    const m = await loadGatewayTls({ dir }, 'example.test');
    const cert = new X509Certificate(m.cert);
    const ca = new X509Certificate(m.ca!);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.checkHost('abc.example.test')).toBe('*.example.test');
    expect(cert.checkHost('example.test')).toBe('example.test');
    expect(cert.checkHost('localhost')).toBe('localhost');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkHost('a.b.example.test')).toBeUndefined();
    expect((await stat(join(dir, 'server.key'))).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'ca.key'))).mode & 0o777).toBe(0o600);
  });

  it('reuses valid material, and keeps the CA when the domain changes', async () => {
    const a = await loadGatewayTls({ dir }, 'example.test');
    const b = await loadGatewayTls({ dir }, 'example.test');
    expect(b.cert).toBe(a.cert);
    const c = await loadGatewayTls({ dir }, 'other.test');
    expect(c.cert).not.toBe(a.cert);
    expect(c.ca).toBe(a.ca);
    expect(new X509Certificate(c.cert).checkHost('x.other.test')).toBe('*.other.test');
  });

  it('rejects unreadable certificate files with a clear code', async () => {
    await expect(
      loadGatewayTls({ certFile: join(dir, 'nope.crt'), keyFile: join(dir, 'nope.key') }, 'x'),
    ).rejects.toMatchObject({
      code: 'GATEWAY_TLS_SETUP_FAILED',
    });
  });
});
