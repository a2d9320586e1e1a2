import { createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, base64url } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_TOKEN_CHARS, TOKEN_TYP, TokenAuthority, portAllowed } from './tokens.js';

let dir: string;
let auth: TokenAuthority;
const VM = 'microvm-1';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hearth-tokens-'));
  auth = await TokenAuthority.open({ keyFile: join(dir, 'keys', 'token.pem') });
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const mint = (o: Partial<Parameters<TokenAuthority['mint']>[0]> = {}) =>
  auth.mint({ microvmId: VM, allowedPorts: [{ port: 8080 }], expirationInMinutes: 5, generation: 1, ...o });

async function code(token: string | undefined, port = 8080, generation = 1, vm = VM): Promise<string> {
  const r = await auth.verify(token, { microvmId: vm, port, generation });
  return r.ok ? 'OK' : r.error.code;
}

describe('TokenAuthority', () => {
  it('creates the key file 0600 on first use and reuses it', async () => {
    const file = join(dir, 'keys', 'token.pem');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const again = await TokenAuthority.open({ keyFile: file });
    expect(await again.verify(await mint(), { microvmId: VM, port: 8080 })).toMatchObject({ ok: true });
  });

  it('rejects a key file others can read (fail closed)', async () => {
    const file = join(dir, 'loose.pem');
    await TokenAuthority.open({ keyFile: file });
    await chmod(file, 0o644);
    await expect(TokenAuthority.open({ keyFile: file })).rejects.toMatchObject({
      code: 'TOKEN_KEY_INSECURE',
    });
  });

  it('two processes creating the key at once end with one key', async () => {
    const file = join(dir, 'race', 'k.pem');
    const [a, b] = await Promise.all([
      TokenAuthority.open({ keyFile: file }),
      TokenAuthority.open({ keyFile: file }),
    ]);
    const t = await a.mint({
      microvmId: VM,
      allowedPorts: [{ port: 1 }],
      expirationInMinutes: 1,
      generation: 0,
    });
    expect((await b.verify(t, { microvmId: VM, port: 1 })).ok).toBe(true);
  });

  it('mints a compact EdDSA JWS with an explicit typ and the documented claims', async () => {
    const t = await mint({ allowedPorts: [{ range: { startPort: 3000, endPort: 3010 } }] });
    const [h, p] = t.split('.');
    const header = JSON.parse(new TextDecoder().decode(base64url.decode(h!)));
    const claims = JSON.parse(new TextDecoder().decode(base64url.decode(p!)));
    expect(header).toMatchObject({ alg: 'EdDSA', typ: TOKEN_TYP });
    expect(claims).toMatchObject({ iss: 'hearth', aud: 'hearth-gateway', sub: VM, gen: 1 });
    expect(claims.exp - claims.iat).toBe(300);
    expect(claims.ports).toEqual([{ range: { startPort: 3000, endPort: 3010 } }]);
    expect(await code(t, 3005)).toBe('OK');
    expect(await code(t, 3011)).toBe('TOKEN_PORT_NOT_ALLOWED');
  });

  it('rejects out-of-range mint requests', async () => {
    await expect(mint({ expirationInMinutes: 0 })).rejects.toMatchObject({ code: 'TOKEN_REQUEST_INVALID' });
    await expect(mint({ expirationInMinutes: 61 })).rejects.toMatchObject({ code: 'TOKEN_REQUEST_INVALID' });
    await expect(mint({ allowedPorts: [] })).rejects.toMatchObject({ code: 'TOKEN_REQUEST_INVALID' });
    await expect(mint({ allowedPorts: [{ port: 70000 }] })).rejects.toMatchObject({
      code: 'TOKEN_REQUEST_INVALID',
    });
    await expect(mint({ allowedPorts: [{ range: { startPort: 9, endPort: 1 } }] })).rejects.toMatchObject({
      code: 'TOKEN_REQUEST_INVALID',
    });
    await expect(mint({ allowedPorts: [{ port: 1, allPorts: {} } as never] })).rejects.toMatchObject({
      code: 'TOKEN_REQUEST_INVALID',
    });
  });

  it('port matching: port, range, allPorts', () => {
    expect(portAllowed([{ port: 80 }], 80)).toBe(true);
    expect(portAllowed([{ port: 80 }], 81)).toBe(false);
    expect(portAllowed([{ range: { startPort: 1, endPort: 2 } }], 2)).toBe(true);
    expect(portAllowed([{ allPorts: {} }], 65535)).toBe(true);
  });

  describe('the token matrix (each case fails closed with its own code)', () => {
    it('rejects a missing token', async () => {
      expect(await code(undefined)).toBe('TOKEN_MISSING');
      expect(await code('')).toBe('TOKEN_MISSING');
    });
    it('rejects a malformed token', async () => {
      expect(await code('not-a-token')).toBe('TOKEN_MALFORMED');
      expect(await code('a.b.c')).toBe('TOKEN_MALFORMED');
      expect(await code('e30.e30.e30.e30')).toBe('TOKEN_MALFORMED');
    });
    it('rejects an oversized token before decoding it', async () => {
      expect(await code('a'.repeat(MAX_TOKEN_CHARS + 1))).toBe('TOKEN_TOO_LONG');
    });
    it('rejects an expired token', async () => {
      const old = await TokenAuthority.open({
        keyFile: join(dir, 'keys', 'token.pem'),
        now: () => Date.now() - 2 * 3600_000,
      });
      const t = await old.mint({
        microvmId: VM,
        allowedPorts: [{ port: 8080 }],
        expirationInMinutes: 1,
        generation: 1,
      });
      expect(await code(t)).toBe('TOKEN_EXPIRED');
    });
    it('rejects a token whose nbf is beyond the clock tolerance, accepts skew inside it', async () => {
      const keyFile = join(dir, 'keys', 'token.pem');
      const ahead = await TokenAuthority.open({ keyFile, now: () => Date.now() + 120_000 });
      const slightlyAhead = await TokenAuthority.open({ keyFile, now: () => Date.now() + 20_000 });
      const m = (a: TokenAuthority) =>
        a.mint({ microvmId: VM, allowedPorts: [{ port: 8080 }], expirationInMinutes: 1, generation: 1 });
      expect(await code(await m(ahead))).toBe('TOKEN_NOT_YET_VALID');
      expect(await code(await m(slightlyAhead))).toBe('OK');
      // Expired 20 s ago: inside the 30 s tolerance.
      const behind = await TokenAuthority.open({ keyFile, now: () => Date.now() - 80_000 });
      expect(await code(await m(behind))).toBe('OK');
    });
    it('rejects a token for another microVM', async () => {
      expect(await code(await mint(), 8080, 1, 'microvm-2')).toBe('TOKEN_WRONG_MICROVM');
    });
    it('rejects a port the token does not allow', async () => {
      expect(await code(await mint(), 22)).toBe('TOKEN_PORT_NOT_ALLOWED');
    });
    it('rejects a tampered token', async () => {
      const t = await mint();
      const [h, p, s] = t.split('.') as [string, string, string];
      const claims = JSON.parse(new TextDecoder().decode(base64url.decode(p)));
      claims.ports = [{ allPorts: {} }];
      expect(await code(`${h}.${base64url.encode(JSON.stringify(claims))}.${s}`, 22)).toBe(
        'TOKEN_BAD_SIGNATURE',
      );
      const flipped = s.slice(0, 10) + (s[10] === 'A' ? 'B' : 'A') + s.slice(11);
      expect(await code(`${h}.${p}.${flipped}`)).toBe('TOKEN_BAD_SIGNATURE');
    });
    it('rejects a token signed by another key', async () => {
      const other = await TokenAuthority.open({ keyFile: join(dir, 'other.pem') });
      const t = await other.mint({
        microvmId: VM,
        allowedPorts: [{ port: 8080 }],
        expirationInMinutes: 1,
        generation: 1,
      });
      expect(await code(t)).toBe('TOKEN_BAD_SIGNATURE');
    });
    it('rejects alg none', async () => {
      const now = Math.floor(Date.now() / 1000);
      const enc = (o: object) => base64url.encode(JSON.stringify(o));
      const claims = {
        iss: 'hearth',
        aud: 'hearth-gateway',
        sub: VM,
        gen: 1,
        ports: [{ port: 8080 }],
        iat: now,
        nbf: now,
        exp: now + 60,
        jti: 'x',
      };
      expect(await code(`${enc({ alg: 'none', typ: TOKEN_TYP })}.${enc(claims)}.`)).toBe(
        'TOKEN_ALGORITHM_NOT_ALLOWED',
      );
      expect(await code(`${enc({ alg: 'EdDSA', typ: 'JWT' })}.${enc(claims)}.${enc({})}`)).toBe(
        'TOKEN_ALGORITHM_NOT_ALLOWED',
      );
    });
    it('rejects HS256 signed with the public key (algorithm confusion)', async () => {
      const pem = await readFile(join(dir, 'keys', 'token.pem'), 'utf8');
      const pub = createPublicKey(createPrivateKey(pem)).export({ type: 'spki', format: 'pem' }) as string;
      const t = await new SignJWT({ gen: 1, ports: [{ port: 8080 }] })
        .setProtectedHeader({ alg: 'HS256', typ: TOKEN_TYP })
        .setIssuer('hearth')
        .setAudience('hearth-gateway')
        .setSubject(VM)
        .setIssuedAt()
        .setNotBefore('0s')
        .setExpirationTime('5m')
        .setJti('j')
        .sign(new TextEncoder().encode(pub));
      expect(await code(t)).toBe('TOKEN_ALGORITHM_NOT_ALLOWED');
    });
    it('rejects a token from before the microVM was terminated or recreated (stale generation)', async () => {
      const t = await mint({ generation: 1 });
      expect(await code(t, 8080, 1)).toBe('OK');
      expect(await code(t, 8080, 2)).toBe('TOKEN_STALE_GENERATION');
    });
    it('re-checks time, VM and port on cached tokens', async () => {
      let now = Date.now();
      const a = await TokenAuthority.open({ keyFile: join(dir, 'keys', 'token.pem'), now: () => now });
      const t = await a.mint({
        microvmId: VM,
        allowedPorts: [{ port: 8080 }],
        expirationInMinutes: 1,
        generation: 1,
      });
      expect((await a.verify(t, { microvmId: VM, port: 8080 })).ok).toBe(true);
      expect((await a.verify(t, { microvmId: 'x', port: 8080 })).ok).toBe(false);
      now += 120_000;
      const r = await a.verify(t, { microvmId: VM, port: 8080 });
      expect(r.ok ? 'OK' : r.error.code).toBe('TOKEN_EXPIRED');
    });
  });
});
