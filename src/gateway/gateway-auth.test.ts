import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SignJWT, base64url } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setLogSink } from '../util/log.js';
import { startGatewayKit, type GatewayKit } from './testing.js';
import { TOKEN_TYP, TokenAuthority } from './tokens.js';

let k: GatewayKit;
const logLines: string[] = [];
let prevSink: (l: string) => void;
let prevLevel: string | undefined;

beforeAll(async () => {
  k = await startGatewayKit();
  prevSink = setLogSink((l) => logLines.push(l));
  prevLevel = process.env.HEARTH_LOG_LEVEL;
  process.env.HEARTH_LOG_LEVEL = 'debug';
});
afterAll(async () => {
  setLogSink(prevSink);
  if (prevLevel === undefined) delete process.env.HEARTH_LOG_LEVEL;
  else process.env.HEARTH_LOG_LEVEL = prevLevel;
  await k.close();
});

const keyFile = () => join(k.dir, 'token.pem');
const authorityAt = (offsetMs: number) =>
  TokenAuthority.open({ keyFile: keyFile(), now: () => Date.now() + offsetMs });
const mintWith = (
  a: TokenAuthority,
  o: { vm?: string; port?: number; minutes?: number; gen?: number } = {},
) =>
  a.mint({
    microvmId: o.vm ?? 'vm-1',
    allowedPorts: [{ port: o.port ?? k.appPort }],
    expirationInMinutes: o.minutes ?? 5,
    generation: o.gen ?? 1,
  });

function claimsNow(): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: 'hearth',
    aud: 'hearth-gateway',
    sub: 'vm-1',
    gen: 1,
    ports: [{ port: k.appPort }],
    iat: now,
    nbf: now,
    exp: now + 300,
    jti: 'j',
  };
}

const sent: string[] = [];
async function call(token: string | undefined): Promise<{ status: number; code: string; raw: string }> {
  if (token) sent.push(token);
  const r = await k.request({
    auth: false,
    headers: token === undefined ? {} : { 'x-hearth-proxy-auth': token },
  });
  const raw = r.body.toString();
  return { status: r.status, code: r.status === 200 ? 'OK' : String(JSON.parse(raw).code), raw };
}

describe('the token matrix through the gateway (fails closed, exact status and code)', () => {
  const cases: Array<[string, () => Promise<string | undefined>, number, string]> = [
    ['a valid token', () => k.token('vm-1'), 200, 'OK'],
    ['missing', async () => undefined, 403, 'TOKEN_MISSING'],
    ['malformed', async () => 'definitely-not-a-token', 403, 'TOKEN_MALFORMED'],
    ['expired', async () => mintWith(await authorityAt(-2 * 3600_000), { minutes: 1 }), 403, 'TOKEN_EXPIRED'],
    ['nbf in the future', async () => mintWith(await authorityAt(5 * 60_000)), 403, 'TOKEN_NOT_YET_VALID'],
    [
      'clock skew inside the tolerance (20 s ahead)',
      async () => mintWith(await authorityAt(20_000)),
      200,
      'OK',
    ],
    [
      'for another microVM',
      async () => mintWith(await authorityAt(0), { vm: 'vm-2' }),
      403,
      'TOKEN_WRONG_MICROVM',
    ],
    [
      'for another port',
      async () => mintWith(await authorityAt(0), { port: 9 }),
      403,
      'TOKEN_PORT_NOT_ALLOWED',
    ],
    [
      'tampered (ports widened)',
      async () => {
        const [h, , s] = (await k.token('vm-1')).split('.');
        return `${h}.${base64url.encode(JSON.stringify({ ...claimsNow(), ports: [{ allPorts: {} }] }))}.${s}`;
      },
      403,
      'TOKEN_BAD_SIGNATURE',
    ],
    [
      'alg none',
      async () =>
        `${base64url.encode(JSON.stringify({ alg: 'none', typ: TOKEN_TYP }))}.${base64url.encode(JSON.stringify(claimsNow()))}.`,
      403,
      'TOKEN_ALGORITHM_NOT_ALLOWED',
    ],
    [
      'HS256 signed with the public key (algorithm confusion)',
      async () => {
        const pub = createPublicKey(createPrivateKey(await readFile(keyFile(), 'utf8'))).export({
          type: 'spki',
          format: 'pem',
        });
        return new SignJWT(claimsNow())
          .setProtectedHeader({ alg: 'HS256', typ: TOKEN_TYP })
          .sign(new TextEncoder().encode(String(pub)));
      },
      403,
      'TOKEN_ALGORITHM_NOT_ALLOWED',
    ],
    ['oversized', async () => 'a'.repeat(5_000) + '.b.c', 403, 'TOKEN_TOO_LONG'],
  ];
  for (const [name, make, status, code] of cases)
    it(`${status === 200 ? 'accepts' : 'rejects'} ${name}: ${status} ${code}`, async () => {
      const r = await call(await make());
      expect([r.status, r.code]).toEqual([status, code]);
      if (status !== 200)
        expect(JSON.parse(r.raw)).toEqual({ code, message: expect.stringMatching(/token|clock/i) });
    });

  it('rejects a token from before the microVM was recreated (stale generation): 403 TOKEN_STALE_GENERATION', async () => {
    const old = await k.token('vm-1', { generation: 1 });
    k.backend.vms.get('vm-1')!.tokenGeneration = 2;
    try {
      expect(await call(old)).toMatchObject({ status: 403, code: 'TOKEN_STALE_GENERATION' });
      expect(await call(await k.token('vm-1', { generation: 2 }))).toMatchObject({ status: 200 });
    } finally {
      k.backend.vms.get('vm-1')!.tokenGeneration = 1;
    }
  });

  it('after terminate, an old token gets 410 MICROVM_TERMINATED and nothing reaches the app', async () => {
    k.backend.add('vm-x');
    const t = await k.token('vm-x');
    k.backend.terminate('vm-x');
    const r = await k.request({ vm: 'vm-x', headers: { 'x-hearth-proxy-auth': t } });
    expect([r.status, r.json().code]).toEqual([410, 'MICROVM_TERMINATED']);
  });

  it('never writes a token to the log or into an error body', () => {
    const all = logLines.join('\n');
    for (const t of sent) {
      expect(all).not.toContain(t);
    }
  });
});

describe('per-microVM rate limit', () => {
  it('answers 429 RATE_LIMITED with Retry-After once the burst is used, per microVM', async () => {
    const rk = await startGatewayKit({ rateLimit: { requestsPerSecond: 2, burst: 5 } });
    try {
      rk.backend.add('vm-2');
      const t = await rk.token('vm-1');
      const statuses: number[] = [];
      for (let i = 0; i < 8; i++)
        statuses.push((await rk.request({ headers: { 'x-hearth-proxy-auth': t } })).status);
      expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200]);
      expect(statuses.slice(5)).toEqual([429, 429, 429]);
      const r = await rk.request({ headers: { 'x-hearth-proxy-auth': t } });
      expect(r.json()).toMatchObject({ code: 'RATE_LIMITED' });
      expect(r.headers['retry-after']).toBe('1');
      expect((await rk.request({ vm: 'vm-2' })).status).toBe(200); // another microVM has its own budget
      expect((await rk.request({ auth: false })).status).toBe(403); // unauthenticated: not counted, not limited
    } finally {
      await rk.close();
    }
  });
});
