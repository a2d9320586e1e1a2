/**
 * Endpoint tokens: compact JWS (EdDSA / Ed25519) scoped to one microVM, a set of ports, a lifetime of
 * 1-60 minutes and the microVM's token generation.
 *
 *   header  { alg: "EdDSA", typ: "hearth-proxy+jwt", kid }
 *   claims  { iss: "hearth", aud: "hearth-gateway", sub: <microvmId>, gen, ports, iat, nbf, exp, jti }
 *
 * Verification follows RFC 8725: the token length is capped before anything is decoded, the
 * algorithm and `typ` are pinned (so `alg: none` and HS256-with-the-public-key confusion fail),
 * issuer and audience are checked, `exp`/`nbf`/`iat` get a clock tolerance. A token is a bearer
 * secret: it is never logged, and it is never compared as a string: the signature check is the only
 * comparison involving it, and the cache of verified tokens is keyed by its SHA-256 (a lookup's timing
 * says nothing about the token).
 *
 * The signing key is a PKCS#8 PEM file, created 0600 on first use (atomically: two processes starting
 * at once end up with the same key). A key file others can read is refused.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import {
  SignJWT,
  decodeProtectedHeader,
  errors as joseErrors,
  importPKCS8,
  importSPKI,
  jwtVerify,
} from 'jose';
import type { CryptoKey, JWTPayload } from 'jose';
import {
  PortNotAllowedError,
  TokenAlgorithmNotAllowedError,
  TokenBadSignatureError,
  type TokenError,
  TokenExpiredError,
  TokenInvalidClaimsError,
  TokenKeyInsecureError,
  TokenMalformedError,
  TokenMissingError,
  TokenNotYetValidError,
  TokenRequestInvalidError,
  TokenStaleError,
  TokenTooLongError,
  TokenWrongMicrovmError,
} from './errors.js';

/** What a token lets through: one port, an inclusive range, or every port (same shapes as the AWS API). */
export type AllowedPort =
  { port: number } | { range: { startPort: number; endPort: number } } | { allPorts: Record<string, never> };

export interface MintRequest {
  microvmId: string;
  allowedPorts: AllowedPort[];
  /** 1-60. */
  expirationInMinutes: number;
  /** The microVM's current tokenGeneration. */
  generation: number;
}

/** The claims of a verified token. */
export interface TokenClaims {
  microvmId: string;
  generation: number;
  allowedPorts: AllowedPort[];
  /** Seconds since the epoch. */
  issuedAtS: number;
  notBeforeS: number;
  expiresAtS: number;
}

export type VerifyResult = { ok: true; claims: TokenClaims } | { ok: false; error: TokenError };

export interface TokenAuthorityOptions {
  /** PKCS#8 PEM Ed25519 key; created (0600, directory 0700) if missing. */
  keyFile: string;
  /** Clock skew accepted on exp/nbf/iat, seconds. Default 30. */
  clockToleranceS?: number;
  /** Milliseconds since the epoch; tests move it. Default Date.now. */
  now?: () => number;
}

export const TOKEN_TYP = 'hearth-proxy+jwt';
export const TOKEN_ISSUER = 'hearth';
export const TOKEN_AUDIENCE = 'hearth-gateway';
/** Longer tokens are refused before any decoding or crypto. Ours are ~400-2,000 characters. */
export const MAX_TOKEN_CHARS = 4_096;
export const MAX_TOKEN_TTL_MIN = 60;
export const MAX_ALLOWED_PORT_ENTRIES = 64;
const DEFAULT_CLOCK_TOLERANCE_S = 30;
const VERIFIED_CACHE_ENTRIES = 10_000;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** True when `port` is covered by one of `allowed`. */
export function portAllowed(allowed: readonly AllowedPort[], port: number): boolean {
  for (const a of allowed) {
    if ('allPorts' in a) return true;
    if ('port' in a && a.port === port) return true;
    if ('range' in a && port >= a.range.startPort && port <= a.range.endPort) return true;
  }
  return false;
}

function isPort(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65_535;
}

/** Checks one allowedPorts entry's shape (exactly one of port, range, allPorts). */
function validAllowedPort(a: unknown): a is AllowedPort {
  if (typeof a !== 'object' || a === null || Array.isArray(a)) return false;
  const keys = Object.keys(a);
  if (keys.length !== 1) return false;
  const v = (a as Record<string, unknown>)[keys[0]!];
  switch (keys[0]) {
    case 'port':
      return isPort(v);
    case 'range': {
      if (typeof v !== 'object' || v === null) return false;
      const r = v as Record<string, unknown>;
      return (
        Object.keys(r).length === 2 && isPort(r.startPort) && isPort(r.endPort) && r.startPort <= r.endPort
      );
    }
    case 'allPorts':
      return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0;
    default:
      return false;
  }
}

/** Reads the key file, or creates it (0600) atomically if it does not exist. */
async function loadOrCreateKey(keyFile: string): Promise<string> {
  try {
    const st = await stat(keyFile);
    if ((st.mode & 0o077) !== 0) throw new TokenKeyInsecureError(keyFile, st.mode);
    return await readFile(keyFile, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dirname(keyFile), { recursive: true, mode: 0o700 });
  const { privateKey } = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const tmp = `${keyFile}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(pem);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, keyFile); // fails if another process created it meanwhile: then use theirs
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  return readFile(keyFile, 'utf8');
}

/**
 * Mints and verifies endpoint tokens with one Ed25519 key. Create with `TokenAuthority.open`.
 * Deleting the key file (and restarting) voids every token issued so far.
 */
export class TokenAuthority {
  private readonly verified = new Map<string, TokenClaims>();

  private constructor(
    private readonly privateKey: CryptoKey,
    private readonly publicKey: CryptoKey,
    private readonly kid: string,
    private readonly clockToleranceS: number,
    private readonly now: () => number,
  ) {}

  /**
   * Loads the key from `keyFile`, creating it on first use.
   * Throws TokenKeyInsecureError if the file is readable by group or others.
   */
  static async open(o: TokenAuthorityOptions): Promise<TokenAuthority> {
    const pem = await loadOrCreateKey(o.keyFile);
    const spki = createPublicKey(createPrivateKey(pem)).export({ type: 'spki', format: 'pem' }) as string;
    const kid = createHash('sha256').update(spki).digest('base64url').slice(0, 16);
    return new TokenAuthority(
      await importPKCS8(pem, 'EdDSA'),
      await importSPKI(spki, 'EdDSA'),
      kid,
      o.clockToleranceS ?? DEFAULT_CLOCK_TOLERANCE_S,
      o.now ?? Date.now,
    );
  }

  /**
   * A compact token for `microvmId`. Preconditions: 1 <= expirationInMinutes <= 60, 1-64
   * allowedPorts entries each exactly one of {port}, {range}, {allPorts: {}}. Throws
   * TokenRequestInvalidError otherwise. No side effects.
   */
  async mint(r: MintRequest): Promise<string> {
    if (
      !Number.isInteger(r.expirationInMinutes) ||
      r.expirationInMinutes < 1 ||
      r.expirationInMinutes > MAX_TOKEN_TTL_MIN
    )
      throw new TokenRequestInvalidError(`expirationInMinutes must be 1-${MAX_TOKEN_TTL_MIN}`);
    if (
      !Array.isArray(r.allowedPorts) ||
      r.allowedPorts.length < 1 ||
      r.allowedPorts.length > MAX_ALLOWED_PORT_ENTRIES
    )
      throw new TokenRequestInvalidError(`allowedPorts must have 1-${MAX_ALLOWED_PORT_ENTRIES} entries`);
    for (const a of r.allowedPorts)
      if (!validAllowedPort(a))
        throw new TokenRequestInvalidError(
          'each allowedPorts entry must be {port: 1-65535}, {range: {startPort, endPort}} or {allPorts: {}}',
        );
    if (!Number.isInteger(r.generation) || r.generation < 0)
      throw new TokenRequestInvalidError('generation must be an integer >= 0');
    const nowS = Math.floor(this.now() / 1000);
    return new SignJWT({ gen: r.generation, ports: r.allowedPorts })
      .setProtectedHeader({ alg: 'EdDSA', typ: TOKEN_TYP, kid: this.kid })
      .setIssuer(TOKEN_ISSUER)
      .setAudience(TOKEN_AUDIENCE)
      .setSubject(r.microvmId)
      .setIssuedAt(nowS)
      .setNotBefore(nowS)
      .setExpirationTime(nowS + r.expirationInMinutes * 60)
      .setJti(randomBytes(12).toString('base64url'))
      .sign(this.privateKey);
  }

  /**
   * Checks `token` for `microvmId` and `port` and, if `generation` is given, that it is not stale.
   * Never throws: a failure is returned as the TokenError to answer (all 403). Verified tokens are
   * cached (by SHA-256) so a keep-alive client does not pay for the signature check on every request;
   * time, VM, port and generation are checked on every call.
   */
  async verify(
    token: string | undefined,
    expected: { microvmId: string; port: number; generation?: number },
  ): Promise<VerifyResult> {
    if (token === undefined || token === '') return { ok: false, error: new TokenMissingError() };
    if (token.length > MAX_TOKEN_CHARS) return { ok: false, error: new TokenTooLongError(MAX_TOKEN_CHARS) };
    if (!COMPACT_JWS.test(token)) return { ok: false, error: new TokenMalformedError() };
    const cacheKey = createHash('sha256').update(token).digest('base64');
    let claims = this.verified.get(cacheKey);
    if (!claims) {
      const r = await this.verifySignature(token);
      if (!r.ok) return r;
      claims = r.claims;
      if (this.verified.size >= VERIFIED_CACHE_ENTRIES) this.pruneCache();
      this.verified.set(cacheKey, claims);
    }
    const nowS = this.now() / 1000;
    if (nowS > claims.expiresAtS + this.clockToleranceS) {
      this.verified.delete(cacheKey);
      return { ok: false, error: new TokenExpiredError() };
    }
    if (nowS < claims.notBeforeS - this.clockToleranceS)
      return { ok: false, error: new TokenNotYetValidError() };
    // The VM id is not a secret (it is in the host name): a plain comparison.
    if (claims.microvmId !== expected.microvmId) return { ok: false, error: new TokenWrongMicrovmError() };
    if (!portAllowed(claims.allowedPorts, expected.port))
      return { ok: false, error: new PortNotAllowedError(expected.port) };
    if (expected.generation !== undefined) {
      const stale = generationError(claims, expected.generation);
      if (stale) return { ok: false, error: stale };
    }
    return { ok: true, claims };
  }

  private pruneCache(): void {
    const nowS = this.now() / 1000;
    for (const [k, c] of this.verified)
      if (nowS > c.expiresAtS + this.clockToleranceS) this.verified.delete(k);
    // Still full of live tokens: drop the oldest half (insertion order).
    let drop = this.verified.size - VERIFIED_CACHE_ENTRIES / 2;
    for (const k of this.verified.keys()) {
      if (drop-- <= 0) break;
      this.verified.delete(k);
    }
  }

  private async verifySignature(token: string): Promise<VerifyResult> {
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      return { ok: false, error: new TokenMalformedError() };
    }
    if (header.alg !== 'EdDSA' || header.typ !== TOKEN_TYP)
      return { ok: false, error: new TokenAlgorithmNotAllowedError() };
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.publicKey, {
        algorithms: ['EdDSA'],
        typ: TOKEN_TYP,
        issuer: TOKEN_ISSUER,
        audience: TOKEN_AUDIENCE,
        clockTolerance: this.clockToleranceS,
        maxTokenAge: `${MAX_TOKEN_TTL_MIN}m`,
        requiredClaims: ['sub', 'iat', 'nbf', 'exp', 'jti', 'gen', 'ports'],
        currentDate: new Date(this.now()),
      }));
    } catch (err) {
      return { ok: false, error: mapJoseError(err) };
    }
    const { sub, gen, ports, iat, nbf, exp } = payload as JWTPayload & { gen?: unknown; ports?: unknown };
    if (typeof sub !== 'string') return { ok: false, error: new TokenInvalidClaimsError('sub') };
    if (typeof gen !== 'number' || !Number.isInteger(gen) || gen < 0)
      return { ok: false, error: new TokenInvalidClaimsError('gen') };
    if (!Array.isArray(ports) || ports.length === 0 || !ports.every(validAllowedPort))
      return { ok: false, error: new TokenInvalidClaimsError('ports') };
    if (exp! - iat! > MAX_TOKEN_TTL_MIN * 60)
      return { ok: false, error: new TokenInvalidClaimsError('lifetime') };
    return {
      ok: true,
      claims: {
        microvmId: sub,
        generation: gen,
        allowedPorts: ports,
        issuedAtS: iat!,
        notBeforeS: nbf!,
        expiresAtS: exp!,
      },
    };
  }
}

/** The error for a token of generation `claims.generation` against the VM's current one, if stale. */
export function generationError(claims: TokenClaims, current: number): TokenError | undefined {
  if (claims.generation < current) return new TokenStaleError();
  if (claims.generation > current) return new TokenInvalidClaimsError('gen');
  return undefined;
}

function mapJoseError(err: unknown): TokenError {
  if (err instanceof joseErrors.JWTExpired) return new TokenExpiredError();
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf' || (err.claim === 'iat' && err.reason === 'check_failed'))
      return new TokenNotYetValidError();
    return new TokenInvalidClaimsError(err.claim);
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return new TokenAlgorithmNotAllowedError();
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new TokenBadSignatureError();
  return new TokenMalformedError();
}
