/**
 * Reading a client request: which microVM, which port, which token, and what to forward. Pure
 * functions, no I/O.
 *
 * The microVM, in order of precedence:
 *   1. the host: `<microvmId>.<domain>` (Host header, or :authority in HTTP/2);
 *   2. the header `X-Hearth-Microvm-Id: <id>` (clients that cannot set Host);
 *   3. the query parameter `hearth-microvm=<id>` (browsers, first request; the gateway then sets the
 *      cookie `hearth-microvm`), then that cookie.
 * The token: header `X-Hearth-Proxy-Auth`, WebSocket subprotocol `hearth.authentication.<token>`
 * (with `hearth`), cookie `hearth-auth` (set by visiting `?hearth-auth=<token>` once), query
 * `hearth-auth`. The port: header `X-Hearth-Proxy-Port` or subprotocol `hearth.port.N`, default 8080.
 * CONNECT requests (raw TCP tunnels) are read by parseConnectTarget: the microVM and the port from
 * the request target `<microvmId>.<domain>:<port>`, the token also from `Proxy-Authorization: Bearer`.
 *
 * Everything Hearth-specific is removed before forwarding: `X-Hearth-*` headers, `hearth-*` cookies
 * and query parameters, `hearth*` subprotocols. The app never sees a token.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import {
  BadConnectTargetError,
  BadHostError,
  BadMicrovmIdError,
  BadPortError,
  MicrovmIdMissingError,
} from './errors.js';

export const HEADER_MICROVM_ID = 'x-hearth-microvm-id';
export const HEADER_AUTH = 'x-hearth-proxy-auth';
export const HEADER_PORT = 'x-hearth-proxy-port';
export const HEADER_FORCE_H2 = 'x-hearth-proxy-force-h2';
export const HEADER_PROXY_AUTHORIZATION = 'proxy-authorization';
export const COOKIE_AUTH = 'hearth-auth';
export const COOKIE_MICROVM = 'hearth-microvm';
export const QUERY_AUTH = 'hearth-auth';
export const QUERY_MICROVM = 'hearth-microvm';
export const SUBPROTOCOL = 'hearth';
export const SUBPROTOCOL_AUTH_PREFIX = 'hearth.authentication.';
export const SUBPROTOCOL_PORT_PREFIX = 'hearth.port.';

/** A microVM id: a lowercase DNS label (RunMicrovm makes `microvm-<uuid>`). */
const MICROVM_ID = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export interface RoutingConfig {
  /** Endpoints are `<microvmId>.<domain>`. */
  domain: string;
  /** Port when the request names none. */
  defaultPort: number;
}

/** What the gateway reads from one request. */
export interface Target {
  microvmId: string;
  port: number;
  token: string | undefined;
  /** Where the VM id came from. */
  idFrom: 'host' | 'header' | 'query' | 'cookie';
  /** Where the token came from (undefined when there is none). */
  tokenFrom: 'header' | 'proxy-authorization' | 'subprotocol' | 'cookie' | 'query' | undefined;
  /** The request target with hearth-* query parameters removed (what the app sees); CONNECT: the authority. */
  path: string;
  /** The query carried hearth-auth or hearth-microvm: a browser GET gets a redirect setting cookies. */
  fromQuery: { auth?: string; microvm?: string } | undefined;
  /** X-Hearth-Proxy-Force-H2: true. */
  forceH2: boolean;
  /** WebSocket: the subprotocols the client offered, minus Hearth's. */
  appSubprotocols: string[];
  /** WebSocket: the client offered the `hearth` subprotocol (the gateway selects it if the app picks none). */
  offeredHearthSubprotocol: boolean;
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** `host[:port]` or `[v6]:port` → lowercase host without port and trailing dot. */
export function hostWithoutPort(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    h = end > 0 ? h.slice(1, end) : h;
  } else {
    const colon = h.indexOf(':');
    if (colon >= 0) h = h.slice(0, colon);
  }
  return h.endsWith('.') ? h.slice(0, -1) : h;
}

/** name → value of the cookies in a Cookie header (first occurrence wins). */
export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!header) return out;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (!out.has(name)) out.set(name, part.slice(eq + 1).trim());
  }
  return out;
}

/** The Cookie header without `hearth-*` cookies (undefined when nothing remains). */
export function stripHearthCookies(header: string | undefined): string | undefined {
  if (!header || !header.includes('hearth-')) return header;
  const kept = header
    .split(';')
    .map((p) => p.trim())
    .filter((p) => p !== '' && !p.startsWith('hearth-'));
  return kept.length ? kept.join('; ') : undefined;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/**
 * Splits hearth-auth / hearth-microvm out of the request target's query, keeping every other byte of
 * the path and query as the client sent it.
 */
export function splitHearthQuery(path: string): { path: string; auth?: string; microvm?: string } {
  const q = path.indexOf('?');
  if (q < 0 || !path.includes('hearth-', q)) return { path };
  const out: { path: string; auth?: string; microvm?: string } = { path };
  const kept: string[] = [];
  for (const seg of path.slice(q + 1).split('&')) {
    const eq = seg.indexOf('=');
    const name = safeDecode(eq < 0 ? seg : seg.slice(0, eq));
    const value = eq < 0 ? '' : safeDecode(seg.slice(eq + 1));
    if (name === QUERY_AUTH) out.auth ??= value;
    else if (name === QUERY_MICROVM) out.microvm ??= value;
    else kept.push(seg);
  }
  out.path = path.slice(0, q) + (kept.length ? '?' + kept.join('&') : '');
  return out;
}

/** The offered subprotocols (Sec-WebSocket-Protocol, possibly repeated), in order. */
export function parseSubprotocols(v: string | string[] | undefined): string[] {
  if (v === undefined) return [];
  const all = Array.isArray(v) ? v.join(',') : v;
  return all
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function parsePort(v: string): number {
  if (!/^[0-9]{1,5}$/.test(v)) throw new BadPortError(v);
  const n = Number(v);
  if (n < 1 || n > 65_535) throw new BadPortError(v);
  return n;
}

function checkId(id: string): string {
  if (!MICROVM_ID.test(id)) throw new BadMicrovmIdError();
  return id;
}

/**
 * Reads the target of a request. `host` is the Host header or :authority, `path` the request target
 * (origin form), `headers` the lowercase headers. Throws a 400 GatewayError when the request names no
 * valid microVM or port; never checks the token (see TokenAuthority).
 */
export function parseTarget(
  host: string | undefined,
  path: string,
  headers: IncomingHttpHeaders,
  cfg: RoutingConfig,
  websocket = false,
): Target {
  const query = splitHearthQuery(path);
  const cookieHeader = headers.cookie;
  const cookies = cookieHeader && cookieHeader.includes('hearth-') ? parseCookies(cookieHeader) : undefined;

  let microvmId = idFromHost(host, cfg);
  let idFrom: Target['idFrom'] = 'host';
  if (microvmId === undefined) {
    const fromHeader = first(headers[HEADER_MICROVM_ID]);
    if (fromHeader !== undefined) {
      microvmId = checkId(fromHeader.trim());
      idFrom = 'header';
    } else if (query.microvm !== undefined) {
      microvmId = checkId(query.microvm);
      idFrom = 'query';
    } else if (cookies?.has(COOKIE_MICROVM)) {
      microvmId = checkId(cookies.get(COOKIE_MICROVM)!);
      idFrom = 'cookie';
    } else {
      throw new MicrovmIdMissingError(cfg.domain);
    }
  }

  const appSubprotocols: string[] = [];
  let offeredHearthSubprotocol = false;
  let subToken: string | undefined;
  let subPort: string | undefined;
  if (websocket) {
    for (const p of parseSubprotocols(headers['sec-websocket-protocol'])) {
      if (p === SUBPROTOCOL) offeredHearthSubprotocol = true;
      else if (p.startsWith(SUBPROTOCOL_AUTH_PREFIX)) subToken ??= p.slice(SUBPROTOCOL_AUTH_PREFIX.length);
      else if (p.startsWith(SUBPROTOCOL_PORT_PREFIX)) subPort ??= p.slice(SUBPROTOCOL_PORT_PREFIX.length);
      else if (!p.startsWith('hearth.')) appSubprotocols.push(p);
    }
  }

  const portHeader = first(headers[HEADER_PORT]) ?? subPort;
  const port = portHeader === undefined ? cfg.defaultPort : parsePort(portHeader.trim());

  let token: string | undefined;
  let tokenFrom: Target['tokenFrom'];
  const headerToken = first(headers[HEADER_AUTH]);
  if (headerToken !== undefined) {
    token = headerToken.trim();
    tokenFrom = 'header';
  } else if (subToken !== undefined) {
    token = subToken;
    tokenFrom = 'subprotocol';
  } else if (cookies?.has(COOKIE_AUTH)) {
    token = cookies.get(COOKIE_AUTH);
    tokenFrom = 'cookie';
  } else if (query.auth !== undefined) {
    token = query.auth;
    tokenFrom = 'query';
  }

  const fromQuery =
    query.auth !== undefined || query.microvm !== undefined
      ? {
          ...(query.auth !== undefined ? { auth: query.auth } : {}),
          ...(query.microvm !== undefined ? { microvm: query.microvm } : {}),
        }
      : undefined;
  return {
    microvmId,
    port,
    token,
    idFrom,
    tokenFrom,
    path: query.path,
    fromQuery,
    forceH2: first(headers[HEADER_FORCE_H2])?.trim().toLowerCase() === 'true',
    appSubprotocols,
    offeredHearthSubprotocol,
  };
}

/** The microVM named by a host: `<microvmId>.<domain>` → id; another host → undefined. */
function idFromHost(host: string | undefined, cfg: RoutingConfig): string | undefined {
  const h = host === undefined ? undefined : hostWithoutPort(host);
  const suffix = '.' + cfg.domain;
  if (h === undefined || !h.endsWith(suffix) || h.length <= suffix.length) return undefined;
  const label = h.slice(0, -suffix.length);
  if (label.includes('.')) throw new BadHostError(host, cfg.domain);
  return checkId(label);
}

/** `Proxy-Authorization: Bearer <token>` → the token (other schemes: undefined). */
function bearerToken(v: string | undefined): string | undefined {
  const m = v === undefined ? null : /^\s*bearer\s+(\S+)\s*$/i.exec(v);
  return m ? m[1] : undefined;
}

/**
 * Reads the target of an HTTP/1.1 CONNECT request (a raw TCP tunnel): `authority` is its request
 * target (authority form, `<host>:<port>` or `[v6]:<port>`), `headers` the lowercase headers.
 * The microVM: the host if it is `<microvmId>.<domain>`, else the header X-Hearth-Microvm-Id. The
 * port: the authority's, the guest port (X-Hearth-Proxy-Port is not read). The token: header
 * X-Hearth-Proxy-Auth, else `Proxy-Authorization: Bearer <token>` (cookies and queries are not read).
 * Throws a 400 GatewayError when the request names no valid microVM or port; never checks the token.
 */
export function parseConnectTarget(
  authority: string,
  headers: IncomingHttpHeaders,
  cfg: RoutingConfig,
): Target {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^\s[\]:/@]+):([0-9]{1,5})$/.exec(authority);
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65_535) throw new BadConnectTargetError(authority, cfg.domain);
  let microvmId = idFromHost(m[1], cfg);
  let idFrom: Target['idFrom'] = 'host';
  if (microvmId === undefined) {
    const fromHeader = first(headers[HEADER_MICROVM_ID]);
    if (fromHeader === undefined) throw new MicrovmIdMissingError(cfg.domain);
    microvmId = checkId(fromHeader.trim());
    idFrom = 'header';
  }
  const headerToken = first(headers[HEADER_AUTH])?.trim();
  const bearer = headerToken === undefined ? bearerToken(headers[HEADER_PROXY_AUTHORIZATION]) : undefined;
  const token = headerToken ?? bearer;
  return {
    microvmId,
    port,
    token,
    idFrom,
    tokenFrom:
      headerToken !== undefined ? 'header' : bearer !== undefined ? 'proxy-authorization' : undefined,
    path: authority,
    fromQuery: undefined,
    forceH2: false,
    appSubprotocols: [],
    offeredHearthSubprotocol: false,
  };
}

/** Hop-by-hop headers (RFC 9110 7.6.1) and proxy headers never forwarded in either direction. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'transfer-encoding',
  'upgrade',
  'expect',
  'http2-settings',
]);

export interface ForwardOptions {
  /** The client's address, appended to X-Forwarded-For. */
  remoteAddress: string | undefined;
  /** https or http, for X-Forwarded-Proto. */
  proto: 'https' | 'http';
  /** Keep `te: trailers` (HTTP/2 and gRPC upstreams). */
  keepTeTrailers?: boolean;
  /** Keep Transfer-Encoding: chunked (HTTP/1.1 upstream of an HTTP/1.1 client). */
  keepTransferEncoding?: boolean;
  /** WebSocket: keep Connection/Upgrade and set Sec-WebSocket-Protocol to these. */
  websocketSubprotocols?: string[];
}

/**
 * The request headers to send to the app: without hop-by-hop headers (and those the Connection
 * header names), HTTP/2 pseudo-headers, X-Hearth-* headers and hearth-* cookies; with
 * X-Forwarded-For/Proto/Host. The Host header is kept as the client sent it.
 */
export function forwardRequestHeaders(headers: IncomingHttpHeaders, o: ForwardOptions): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const connection = headers.connection;
  const named =
    connection && connection.includes(',') ? new Set(connection.toLowerCase().split(/\s*,\s*/)) : undefined;
  for (const k in headers) {
    const v = headers[k];
    if (v === undefined) continue;
    if (k.charCodeAt(0) === 58 /* ':' */) continue;
    if (k.startsWith('x-hearth-')) continue;
    if (HOP_BY_HOP.has(k) || named?.has(k)) {
      if (k === 'te' && o.keepTeTrailers && String(v).trim().toLowerCase() === 'trailers')
        out.te = 'trailers';
      else if (
        k === 'transfer-encoding' &&
        o.keepTransferEncoding &&
        String(v).trim().toLowerCase() === 'chunked'
      )
        out['transfer-encoding'] = 'chunked';
      continue;
    }
    if (k === 'cookie') {
      const c = stripHearthCookies(v as string);
      if (c !== undefined) out.cookie = c;
      continue;
    }
    if (k === 'sec-websocket-protocol' || k === 'x-forwarded-proto' || k === 'x-forwarded-host') continue;
    out[k] = v;
  }
  if (o.websocketSubprotocols) {
    out.connection = 'Upgrade';
    out.upgrade = 'websocket';
    if (o.websocketSubprotocols.length) out['sec-websocket-protocol'] = o.websocketSubprotocols.join(', ');
  }
  const xff = headers['x-forwarded-for'];
  if (o.remoteAddress) out['x-forwarded-for'] = xff ? `${String(xff)}, ${o.remoteAddress}` : o.remoteAddress;
  out['x-forwarded-proto'] = o.proto;
  if (headers.host ?? headers[':authority']) out['x-forwarded-host'] = headers.host ?? headers[':authority'];
  return out;
}

/** Response headers that must not be copied to the client (hop-by-hop; HTTP/2 forbids them). */
export function isHopByHopResponseHeader(name: string): boolean {
  return (
    name === 'connection' ||
    name === 'keep-alive' ||
    name === 'proxy-connection' ||
    name === 'transfer-encoding' ||
    name === 'upgrade' ||
    name === 'te' ||
    name === 'http2-settings'
  );
}

/**
 * forwardRequestHeaders for HTTP/1.1 `rawHeaders` (flat [name, value, ...], case and order kept):
 * the same filtering, returned in the same flat form (cheaper for http.request to send).
 */
export function forwardRawRequestHeaders(raw: string[], o: ForwardOptions): string[] {
  const out: string[] = [];
  let named: Set<string> | undefined;
  let xff: string | undefined;
  let host: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const n = raw[i]!.toLowerCase();
    if (n === 'connection' && raw[i + 1]!.includes(','))
      named = new Set(raw[i + 1]!.toLowerCase().split(/\s*,\s*/));
  }
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const n = name.toLowerCase();
    if (n.startsWith('x-hearth-') || n === 'sec-websocket-protocol') continue;
    if (HOP_BY_HOP.has(n) || named?.has(n)) {
      if (n === 'te' && o.keepTeTrailers && value.trim().toLowerCase() === 'trailers')
        out.push(name, 'trailers');
      else if (
        n === 'transfer-encoding' &&
        o.keepTransferEncoding &&
        value.trim().toLowerCase() === 'chunked'
      )
        out.push(name, 'chunked');
      continue;
    }
    if (n === 'cookie') {
      const c = stripHearthCookies(value);
      if (c !== undefined) out.push(name, c);
      continue;
    }
    if (n === 'x-forwarded-for') {
      xff = xff === undefined ? value : `${xff}, ${value}`;
      continue;
    }
    if (n === 'x-forwarded-proto' || n === 'x-forwarded-host') continue;
    if (n === 'host') host = value;
    out.push(name, value);
  }
  if (o.websocketSubprotocols) {
    out.push('Connection', 'Upgrade', 'Upgrade', 'websocket');
    if (o.websocketSubprotocols.length)
      out.push('Sec-WebSocket-Protocol', o.websocketSubprotocols.join(', '));
  }
  if (o.remoteAddress) out.push('X-Forwarded-For', xff ? `${xff}, ${o.remoteAddress}` : o.remoteAddress);
  out.push('X-Forwarded-Proto', o.proto);
  if (host !== undefined) out.push('X-Forwarded-Host', host);
  return out;
}

/**
 * The app's response headers (or trailers) as a flat list for writeHead, without hop-by-hop ones
 * (repeated headers such as set-cookie stay separate).
 */
export function responseHeaderList(h: IncomingHttpHeaders, trailers = false): string[] {
  const out: string[] = [];
  for (const k in h) {
    if (isHopByHopResponseHeader(k) || (trailers && k === 'content-length')) continue;
    const v = h[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.push(k, x);
    else out.push(k, v);
  }
  return out;
}
