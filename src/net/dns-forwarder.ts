/**
 * Hearth's resolver for guests: one UDP socket and one TCP listener on the host (same port) for a
 * whole NetworkManager. Each VM namespace whose policy needs DNS redirects its guest's port 53 here.
 *
 * - Source-checked: a query is answered only if its source address is the endpoint address of a
 *   VM network in use (`clientFor`); anything else gets no answer at all.
 * - A VM with `internet` may ask anything: queries go to the upstream resolvers unchanged.
 * - A VM with only hostname rules may ask only names its rules cover: REFUSED for any other name.
 * - Answers for names a hostname rule covers are snooped: their IPv4 addresses are handed to the
 *   client's `learn` (which adds them to the VM's allow sets) before the answer goes back, so the
 *   guest's connection that follows is allowed.
 * - Bounded: each upstream attempt and each whole query have timeouts; in-flight queries are
 *   capped; malformed or hostile packets get FORMERR or nothing, and never throw out of here.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
import { createLogger, type Logger } from '../util/log.js';
import {
  buildQuery,
  buildResponse,
  DNS_RCODE,
  DNS_TYPE,
  DnsFormatError,
  errorResponseFor,
  ipv4AnswersFor,
  parseMessage,
  type DnsMessage,
} from './dns-wire.js';
import { exchangeTcp, exchangeUdp, type DnsUpstream } from './dns-upstream.js';
import { DnsForwarderError } from './errors.js';
import { hostnameMatches } from './egress-rules.js';
import type { EgressPolicy } from './policy.js';

/** What the forwarder knows about one VM (looked up by the query's source address). */
export interface DnsClient {
  policy: Readonly<EgressPolicy>;
  /**
   * Called with the IPv4 addresses answered for `name` when a hostname rule covers it, before the
   * answer is sent; should not reject (errors are logged and the answer still goes out).
   */
  learn(name: string, addresses: string[], ttlSeconds: number): Promise<void>;
}

export interface DnsForwarderOptions {
  upstreams: DnsUpstream[];
  clientFor(address: string): DnsClient | undefined;
  /** Default 0.0.0.0 (the host firewall only lets VM links reach the port). */
  bindAddress?: string;
  /** One upstream attempt. Default 1500. */
  attemptTimeoutMs?: number;
  /** A whole query, all upstreams tried. Default 4000. */
  queryTimeoutMs?: number;
  /** Waiting for `learn`. Default 2000. */
  learnTimeoutMs?: number;
  /** Queries being answered at once, over all clients; more are dropped (UDP) or SERVFAIL. Default 256. */
  maxInFlight?: number;
  /** Per client (source address). Default 32. */
  maxInFlightPerClient?: number;
  /** Idle TCP connections are closed after this long. Default 10 000. */
  tcpIdleTimeoutMs?: number;
  log?: Logger;
}

const MAX_TCP_CONNECTIONS = 128;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Strips the IPv4-mapped prefix a dual-stack socket may report. */
function plainAddress(a: string | undefined): string {
  return (a ?? '').replace(/^::ffff:/, '');
}

export class DnsForwarder {
  private inFlight = 0;
  private readonly perClient = new Map<string, number>();
  private readonly tcpSockets = new Set<Socket>();
  private readonly log: Logger;
  private closed = false;

  private constructor(
    private readonly opts: DnsForwarderOptions,
    private readonly udp: UdpSocket,
    private readonly tcp: Server,
    readonly port: number,
  ) {
    this.log = opts.log ?? createLogger('dns');
  }

  /** Binds the UDP socket and the TCP listener on one free port. DnsForwarderError on failure. */
  static async start(opts: DnsForwarderOptions): Promise<DnsForwarder> {
    if (opts.upstreams.length === 0)
      throw new DnsForwarderError('upstream resolvers', {
        cause: new Error(
          'no upstream resolver configured (empty /etc/resolv.conf and no HEARTH_DNS_UPSTREAM)',
        ),
      });
    const host = opts.bindAddress ?? '0.0.0.0';
    let lastError: unknown;
    for (let attempt = 0; attempt < 8; attempt++) {
      const udp = createSocket('udp4');
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once('error', reject);
          udp.bind(0, host, () => {
            udp.off('error', reject);
            resolve();
          });
        });
        const port = udp.address().port;
        const tcp = createServer();
        tcp.maxConnections = MAX_TCP_CONNECTIONS;
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen(port, host, () => {
            tcp.off('error', reject);
            resolve();
          });
        });
        const f = new DnsForwarder(opts, udp, tcp, port);
        f.serve();
        return f;
      } catch (e) {
        lastError = e;
        udp.close();
      }
    }
    throw new DnsForwarderError('bind', { cause: lastError });
  }

  private serve(): void {
    this.udp.on('error', (e) => this.log.warn('DNS socket error', { error: e.message }));
    this.udp.on('message', (msg, rinfo) => {
      const source = plainAddress(rinfo.address);
      void this.answer(msg, source, 'udp').then((reply) => {
        if (reply && !this.closed) this.udp.send(reply, rinfo.port, rinfo.address);
      });
    });
    this.tcp.on('error', (e) => this.log.warn('DNS listener error', { error: e.message }));
    this.tcp.on('connection', (sock) => this.serveTcp(sock));
  }

  private serveTcp(sock: Socket): void {
    const source = plainAddress(sock.remoteAddress);
    sock.on('error', () => undefined);
    if (!this.opts.clientFor(source)) {
      sock.destroy();
      return;
    }
    this.tcpSockets.add(sock);
    sock.on('close', () => this.tcpSockets.delete(sock));
    sock.setTimeout(this.opts.tcpIdleTimeoutMs ?? 10_000, () => sock.destroy());
    let buf = Buffer.alloc(0);
    let busy = false;
    const pump = async () => {
      if (busy) return;
      busy = true;
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0) && !sock.destroyed) {
        const n = buf.readUInt16BE(0);
        const msg = buf.subarray(2, 2 + n);
        buf = buf.subarray(2 + n);
        const reply = await this.answer(msg, source, 'tcp');
        if (!reply) {
          sock.destroy();
          break;
        }
        const len = Buffer.alloc(2);
        len.writeUInt16BE(reply.length);
        sock.write(Buffer.concat([len, reply]));
      }
      busy = false;
    };
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      // A client that sends much more than it reads is not a resolver client.
      if (buf.length > 4 * 65_537) sock.destroy();
      else void pump();
    });
  }

  /**
   * The reply to one query from `source`, or undefined for no reply (unknown source, overloaded,
   * unparseable). Never rejects.
   */
  async answer(packet: Buffer, source: string, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    const client = this.opts.clientFor(source);
    if (!client || this.closed) return undefined;
    const mine = this.perClient.get(source) ?? 0;
    if (this.inFlight >= (this.opts.maxInFlight ?? 256) || mine >= (this.opts.maxInFlightPerClient ?? 32))
      return transport === 'tcp' ? errorResponseFor(packet, DNS_RCODE.SERVFAIL) : undefined;
    this.inFlight++;
    this.perClient.set(source, mine + 1);
    try {
      return await this.answerFor(client, packet, transport);
    } catch (e) {
      this.log.warn('DNS query failed', { source, error: (e as Error).message });
      return errorResponseFor(packet, DNS_RCODE.SERVFAIL);
    } finally {
      this.inFlight--;
      const left = (this.perClient.get(source) ?? 1) - 1;
      if (left > 0) this.perClient.set(source, left);
      else this.perClient.delete(source);
    }
  }

  private async answerFor(
    client: DnsClient,
    packet: Buffer,
    transport: 'udp' | 'tcp',
  ): Promise<Buffer | undefined> {
    let query: DnsMessage;
    try {
      query = parseMessage(packet);
    } catch (e) {
      if (e instanceof DnsFormatError) return errorResponseFor(packet, DNS_RCODE.FORMERR);
      throw e;
    }
    if (query.isResponse) return undefined;
    if (query.opcode !== 0) return buildResponse(query, DNS_RCODE.NOTIMP);
    if (query.questions.length !== 1) return buildResponse(query, DNS_RCODE.FORMERR);
    const name = query.questions[0]!.name;
    const covered = client.policy.allow.some(
      (r) => r.hostname !== undefined && hostnameMatches(r.hostname, name),
    );
    if (!client.policy.internet && !covered) return buildResponse(query, DNS_RCODE.REFUSED);
    const reply = await this.forward(query, packet, transport);
    if (!reply) return buildResponse(query, DNS_RCODE.SERVFAIL);
    if (covered) {
      const { addresses, ttlSeconds } = ipv4AnswersFor(reply.msg, name);
      if (addresses.length) {
        await withTimeout(
          client.learn(name, addresses, ttlSeconds),
          this.opts.learnTimeoutMs ?? 2_000,
          'learn',
        ).catch((e: Error) =>
          this.log.warn('could not allow the addresses of a DNS answer', { name, error: e.message }),
        );
      }
    }
    return reply.raw;
  }

  /**
   * Asks the upstreams in turn until one answers the same question (bounded by queryTimeoutMs).
   * Undefined if none does.
   */
  private async forward(
    query: DnsMessage,
    packet: Buffer,
    transport: 'udp' | 'tcp',
  ): Promise<{ raw: Buffer; msg: DnsMessage } | undefined> {
    const deadline = Date.now() + (this.opts.queryTimeoutMs ?? 4_000);
    const q = query.questions[0]!;
    for (const up of this.opts.upstreams) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      const timeoutMs = Math.min(left, this.opts.attemptTimeoutMs ?? 1_500);
      try {
        const raw = await (transport === 'tcp' ? exchangeTcp : exchangeUdp)(up, packet, timeoutMs);
        const msg = parseMessage(raw);
        const rq = msg.questions[0];
        if (!msg.isResponse || !rq || rq.name !== q.name || rq.type !== q.type) continue;
        return { raw, msg };
      } catch (e) {
        this.log.debug('DNS upstream did not answer', { upstream: up.address, error: (e as Error).message });
      }
    }
    return undefined;
  }

  /**
   * Resolves a name's IPv4 addresses on the host, through the same upstreams (for allow sets when
   * a VM gets its network). Empty if it does not resolve within timeoutMs.
   */
  async resolveIpv4(name: string, timeoutMs: number): Promise<{ addresses: string[]; ttlSeconds: number }> {
    const id = Math.floor(Math.random() * 0x10000);
    let packet: Buffer;
    try {
      packet = buildQuery(id, name, DNS_TYPE.A);
    } catch {
      return { addresses: [], ttlSeconds: 0 };
    }
    const deadline = Date.now() + timeoutMs;
    for (const up of this.opts.upstreams) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      try {
        let raw = await exchangeUdp(up, packet, Math.min(left, this.opts.attemptTimeoutMs ?? 1_500));
        let msg = parseMessage(raw);
        if (msg.truncated) {
          raw = await exchangeTcp(up, packet, Math.max(1, deadline - Date.now()));
          msg = parseMessage(raw);
        }
        if (msg.rcode === DNS_RCODE.NOERROR || msg.rcode === DNS_RCODE.NXDOMAIN)
          return ipv4AnswersFor(msg, name);
      } catch {
        /* next upstream */
      }
    }
    return { addresses: [], ttlSeconds: 0 };
  }

  /** Closes the sockets and every TCP connection. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.tcpSockets) s.destroy();
    await Promise.all([
      new Promise<void>((r) => this.tcp.close(() => r())),
      new Promise<void>((r) => this.udp.close(() => r())),
    ]);
  }
}
