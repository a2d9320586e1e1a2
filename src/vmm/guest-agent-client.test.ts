import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import { GuestAgentError, GuestExecTimeoutError } from './errors.js';
import { GuestAgentClient } from './guest-agent-client.js';

interface GaRequest {
  execute: string;
  arguments?: Record<string, unknown>;
}

/** A reply to write (a JSON value, or raw bytes), or undefined for none. */
type Reply = Record<string, unknown> | Buffer | undefined;
type Handler = (req: GaRequest, sock: Socket) => Reply | Promise<Reply>;

/**
 * A fake qemu-ga on a Unix socket. Like the real agent it handles requests one at a time, in order;
 * a 0xFF byte makes it drop any partial input; guest-sync-delimited is answered with 0xFF followed by
 * {"return": id}. Other commands go to `handler`.
 */
class FakeAgent {
  readonly server: Server;
  readonly sockets: Socket[] = [];
  readonly received: GaRequest[] = [];
  handler: Handler = () => ({ return: {} });
  /** Called when a connection opens, before anything is read: lets a test write stale data. */
  onConnect: (sock: Socket) => void = () => undefined;
  /** Written just before the 0xFF of each sync reply: stale replies still queued in the guest. */
  beforeSyncReply: Buffer | undefined;
  syncs = 0;

  constructor(readonly path: string) {
    this.server = createServer((sock) => {
      this.sockets.push(sock);
      sock.on('error', () => undefined);
      this.onConnect(sock);
      let buf = Buffer.alloc(0);
      let chain: Promise<void> = Promise.resolve();
      sock.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        const ff = buf.lastIndexOf(0xff);
        if (ff >= 0) buf = buf.subarray(ff + 1); // drop partial input, like qemu-ga
        let nl: number;
        while ((nl = buf.indexOf(0x0a)) >= 0) {
          const line = buf.subarray(0, nl).toString('utf8');
          buf = buf.subarray(nl + 1);
          if (!line.trim()) continue;
          const req = JSON.parse(line) as GaRequest;
          chain = chain.then(() => this.handle(req, sock));
        }
      });
    });
  }

  private async handle(req: GaRequest, sock: Socket): Promise<void> {
    this.received.push(req);
    if (req.execute === 'guest-sync-delimited') {
      this.syncs++;
      if (this.beforeSyncReply) sock.write(this.beforeSyncReply);
      sock.write(
        Buffer.concat([
          Buffer.from([0xff]),
          Buffer.from(JSON.stringify({ return: req.arguments?.id }) + '\n'),
        ]),
      );
      return;
    }
    const reply = await this.handler(req, sock);
    if (reply === undefined || sock.destroyed) return;
    sock.write(Buffer.isBuffer(reply) ? reply : JSON.stringify(reply) + '\n');
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.path, () => resolve());
    });
  }

  commands(): string[] {
    return this.received.map((r) => r.execute);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('GuestAgentClient', () => {
  let dir: string;
  let sockPath: string;
  let fake: FakeAgent;
  const clients: GuestAgentClient[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-ga-'));
    sockPath = join(dir, 'agent.sock');
    fake = new FakeAgent(sockPath);
    await fake.listen();
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await fake.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function connect(timeoutMs = 2_000): Promise<GuestAgentClient> {
    const c = await GuestAgentClient.connect(sockPath, { timeoutMs });
    clients.push(c);
    return c;
  }

  it('synchronises with guest-sync-delimited preceded by a 0xFF byte when connecting', async () => {
    const raw: Buffer[] = [];
    fake.onConnect = (sock) => sock.on('data', (d: Buffer) => raw.push(d));
    await connect();
    const bytes = Buffer.concat(raw);
    expect(bytes[0]).toBe(0xff);
    const req = JSON.parse(bytes.subarray(1).toString('utf8')) as GaRequest;
    expect(req.execute).toBe('guest-sync-delimited');
    expect(typeof req.arguments?.id).toBe('number');
    expect(fake.syncs).toBe(1);
  });

  it('discards stale replies and garbage sent before the sync reply', async () => {
    fake.onConnect = (sock) => {
      // Replies to requests of an earlier session, an old sync reply and a partial line.
      sock.write('{"return": {"pid": 4242}}\n');
      sock.write('not json at all\n');
      sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from('{"return": 1}\n')]));
      sock.write('{"error": {"class": "GenericError", "desc": "old"}}\n');
    };
    // More stale output queued just before the real sync reply, ending in a partial line.
    fake.beforeSyncReply = Buffer.from('{"return": "stale"}\n{"return": 99}\n{"retu');
    fake.handler = (req) => (req.execute === 'guest-fsfreeze-status' ? { return: 'thawed' } : { return: {} });
    const c = await connect();
    await expect(c.fsfreezeStatus()).resolves.toBe('thawed');
    await expect(c.ping()).resolves.toBeUndefined();
    expect(fake.commands()).toEqual(['guest-sync-delimited', 'guest-fsfreeze-status', 'guest-ping']);
  });

  it('resynchronises on demand with sync()', async () => {
    const c = await connect();
    await c.sync(1_000);
    expect(fake.syncs).toBe(2);
  });

  it('runs commands one at a time, in order: the next request is sent only after the previous reply', async () => {
    let linesArrived = 0;
    fake.onConnect = (sock) =>
      sock.on('data', (d: Buffer) => (linesArrived += d.filter((b) => b === 0x0a).length));
    let pipelined = false;
    fake.handler = async (req) => {
      await sleep(5);
      // Requests arrived so far: this one and those before it (the sync included), none after it.
      if (linesArrived !== fake.received.length) pipelined = true;
      if (req.execute === 'guest-fsfreeze-freeze') return { return: 2 };
      if (req.execute === 'guest-fsfreeze-thaw') return { return: 2 };
      if (req.execute === 'guest-fsfreeze-status') return { return: 'thawed' };
      return { return: {} };
    };
    const c = await connect();
    const results = await Promise.all([c.fsfreezeFreeze(), c.fsfreezeThaw(), c.fsfreezeStatus(), c.ping()]);
    expect(results).toEqual([2, 2, 'thawed', undefined]);
    expect(fake.commands().slice(1)).toEqual([
      'guest-fsfreeze-freeze',
      'guest-fsfreeze-thaw',
      'guest-fsfreeze-status',
      'guest-ping',
    ]);
    expect(pipelined).toBe(false);
  });

  it('runs a command with guest-exec and polls guest-exec-status until it exits', async () => {
    let polls = 0;
    fake.handler = (req) => {
      if (req.execute === 'guest-exec') return { return: { pid: 321 } };
      if (req.execute === 'guest-exec-status') {
        expect(req.arguments).toEqual({ pid: 321 });
        polls++;
        if (polls < 3) return { return: { exited: false } };
        return {
          return: {
            exited: true,
            exitcode: 3,
            'out-data': Buffer.from('hello\nworld\n').toString('base64'),
            'err-data': Buffer.from([0xde, 0xad, 0xbe, 0xef]).toString('base64'),
          },
        };
      }
      return { return: {} };
    };
    const c = await connect();
    const r = await c.exec('/bin/sh', ['-c', 'echo hello; echo world; exit 3'], {
      env: ['A=1'],
      input: 'stdin data',
      timeoutMs: 1_000,
    });
    expect(r.exitCode).toBe(3);
    expect(r.signal).toBeUndefined();
    expect(r.stdout.toString()).toBe('hello\nworld\n');
    expect([...r.stderr]).toEqual([0xde, 0xad, 0xbe, 0xef]);
    expect(r.truncated).toBe(false);
    expect(polls).toBe(3);
    const exec = fake.received.find((q) => q.execute === 'guest-exec')!;
    expect(exec.arguments).toEqual({
      path: '/bin/sh',
      arg: ['-c', 'echo hello; echo world; exit 3'],
      env: ['A=1'],
      'input-data': Buffer.from('stdin data').toString('base64'),
      'capture-output': true,
    });
  });

  it('reports a process killed by a signal and truncated output', async () => {
    fake.handler = (req) => {
      if (req.execute === 'guest-exec') return { return: { pid: 1 } };
      return { return: { exited: true, signal: 9, 'out-truncated': true } };
    };
    const c = await connect();
    const r = await c.exec('/bin/yes');
    expect(r).toMatchObject({ exitCode: -1, signal: 9, truncated: true });
    expect(r.stdout.length).toBe(0);
    expect(r.stderr.length).toBe(0);
    const exec = fake.received.find((q) => q.execute === 'guest-exec')!;
    expect(exec.arguments).not.toHaveProperty('env');
    expect(exec.arguments).not.toHaveProperty('input-data');
  });

  it('rejects exec with GuestExecTimeoutError when the process runs too long', async () => {
    fake.handler = (req) =>
      req.execute === 'guest-exec' ? { return: { pid: 7 } } : { return: { exited: false } };
    const c = await connect();
    const err = await c.exec('/bin/sleep', ['100'], { timeoutMs: 40 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestExecTimeoutError);
    expect(hasCode(err, 'VMM_GUEST_EXEC_TIMEOUT')).toBe(true);
  });

  it('reads a file over several guest-file-read chunks until eof, then closes it', async () => {
    const content = Buffer.alloc(120_000);
    for (let i = 0; i < content.length; i++) content[i] = (i * 7 + 3) & 0xff;
    let pos = 0;
    const counts: unknown[] = [];
    fake.handler = (req) => {
      const a = req.arguments ?? {};
      switch (req.execute) {
        case 'guest-file-open':
          expect(a).toEqual({ path: '/etc/data.bin', mode: 'r' });
          return { return: 1000 };
        case 'guest-file-read': {
          expect(a.handle).toBe(1000);
          counts.push(a.count);
          const n = Math.min(a.count as number, content.length - pos);
          const chunk = content.subarray(pos, pos + n);
          pos += n;
          return { return: { count: n, 'buf-b64': chunk.toString('base64'), eof: pos >= content.length } };
        }
        case 'guest-file-close':
          expect(a).toEqual({ handle: 1000 });
          return { return: {} };
        default:
          return { error: { class: 'CommandNotFound', desc: req.execute } };
      }
    };
    const c = await connect();
    const got = await c.readFile('/etc/data.bin');
    expect(got.equals(content)).toBe(true);
    expect(counts.length).toBe(3);
    expect(fake.commands().slice(1)).toEqual([
      'guest-file-open',
      'guest-file-read',
      'guest-file-read',
      'guest-file-read',
      'guest-file-close',
    ]);
  });

  it('stops reading at a zero-length read even without eof', async () => {
    let reads = 0;
    fake.handler = (req) => {
      if (req.execute === 'guest-file-open') return { return: 5 };
      if (req.execute === 'guest-file-read') {
        reads++;
        return reads === 1
          ? { return: { count: 3, 'buf-b64': Buffer.from('abc').toString('base64'), eof: false } }
          : { return: { count: 0, 'buf-b64': '', eof: false } };
      }
      return { return: {} };
    };
    const c = await connect();
    expect((await c.readFile('/x')).toString()).toBe('abc');
    expect(reads).toBe(2);
  });

  it('rejects readFile of a file larger than maxBytes and still closes the handle', async () => {
    fake.handler = (req) => {
      if (req.execute === 'guest-file-open') return { return: 9 };
      if (req.execute === 'guest-file-read')
        return { return: { count: 100, 'buf-b64': Buffer.alloc(100).toString('base64'), eof: false } };
      return { return: {} };
    };
    const c = await connect();
    const err = await c.readFile('/big', 150).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestAgentError);
    expect((err as Error).message).toMatch(/larger than 150 bytes/);
    expect(fake.commands().slice(-1)).toEqual(['guest-file-close']);
  });

  it('writes a file as base64 guest-file-write chunks, then flushes and closes it', async () => {
    const data = Buffer.alloc(110_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 13) & 0xff;
    const written: Buffer[] = [];
    fake.handler = (req) => {
      const a = req.arguments ?? {};
      switch (req.execute) {
        case 'guest-file-open':
          expect(a).toEqual({ path: '/tmp/out', mode: 'w' });
          return { return: 77 };
        case 'guest-file-write': {
          expect(a.handle).toBe(77);
          const b = Buffer.from(a['buf-b64'] as string, 'base64');
          written.push(b);
          return { return: { count: b.length, eof: false } };
        }
        default:
          expect(a).toEqual({ handle: 77 });
          return { return: {} };
      }
    };
    const c = await connect();
    await c.writeFile('/tmp/out', data);
    expect(written.length).toBe(3);
    expect(written.map((b) => b.length)).toEqual([49_152, 49_152, 110_000 - 2 * 49_152]);
    expect(Buffer.concat(written).equals(data)).toBe(true);
    expect(fake.commands().slice(1)).toEqual([
      'guest-file-open',
      'guest-file-write',
      'guest-file-write',
      'guest-file-write',
      'guest-file-flush',
      'guest-file-close',
    ]);
  });

  it('writes an empty file without any guest-file-write', async () => {
    fake.handler = (req) => (req.execute === 'guest-file-open' ? { return: 1 } : { return: {} });
    const c = await connect();
    await c.writeFile('/tmp/empty', '');
    expect(fake.commands().slice(1)).toEqual(['guest-file-open', 'guest-file-flush', 'guest-file-close']);
  });

  it('rejects with GuestAgentError when the agent replies with an error', async () => {
    fake.handler = () => ({
      error: { class: 'GenericError', desc: "failed to open file '/nope': No such file or directory" },
    });
    const c = await connect();
    const err = await c.readFile('/nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestAgentError);
    expect((err as GuestAgentError).command).toBe('guest-file-open');
    expect((err as Error).message).toContain('No such file or directory');
    expect(hasCode(err, 'VMM_GUEST_AGENT_ERROR')).toBe(true);
  });

  it('rejects a command that gets no reply with GuestAgentError, and the next command still works', async () => {
    let pings = 0;
    fake.handler = (req) => {
      if (req.execute === 'guest-ping' && pings++ === 0) return undefined; // swallowed
      if (req.execute === 'guest-info') return { return: { version: '8.2.0', supported_commands: [] } };
      return { return: {} };
    };
    const c = await connect();
    const t0 = Date.now();
    const err = await c.ping(50).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestAgentError);
    expect((err as Error).message).toMatch(/no reply within 50 ms/);
    expect(Date.now() - t0).toBeLessThan(1_000);
    await expect(c.info()).resolves.toEqual({ version: '8.2.0', supported_commands: [] });
    await expect(c.ping(500)).resolves.toBeUndefined();
  });

  // BUG: after a command times out the client does not resynchronise. When the agent's reply to the
  // timed-out command arrives later (qemu-ga answers every command, in order), it is taken as the reply
  // to the next command, and every later reply stays shifted by one. vm-suspend.ts hits this: a slow
  // guest-fsfreeze-freeze times out, then thawQuietly's guest-fsfreeze-thaw receives the freeze reply.
  it('does not take a late reply to a timed-out command as the reply to the next command', async () => {
    fake.handler = async (req) => {
      if (req.execute === 'guest-fsfreeze-freeze') {
        await sleep(80);
        return { return: 2 };
      }
      if (req.execute === 'guest-fsfreeze-status') return { return: 'frozen' };
      return { return: {} };
    };
    const c = await connect();
    await expect(c.fsfreezeFreeze(30)).rejects.toBeInstanceOf(GuestAgentError);
    await expect(c.fsfreezeStatus()).resolves.toBe('frozen');
  });

  it('rejects the pending command with GuestAgentError when the connection closes', async () => {
    fake.handler = (req, sock) => {
      setTimeout(() => sock.destroy(), 10);
      return undefined;
    };
    const c = await connect();
    const err = await c.ping(1_500).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestAgentError);
    expect((err as Error).message).toMatch(/connection closed/);
    await expect(c.ping(1_500)).rejects.toThrow(/connection closed/);
  });

  it('rejects commands after close()', async () => {
    const c = await connect();
    c.close();
    await expect(c.ping(1_000)).rejects.toThrow(/connection closed/);
  });

  it('rejects connect with GuestAgentError when the agent never answers the sync', async () => {
    await fake.close();
    const silent = createServer((s) => s.on('error', () => undefined));
    const socks: Socket[] = [];
    silent.on('connection', (s) => socks.push(s));
    await new Promise<void>((r) => silent.listen(sockPath, () => r()));
    try {
      const t0 = Date.now();
      const err = await GuestAgentClient.connect(sockPath, { timeoutMs: 100 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GuestAgentError);
      expect((err as GuestAgentError).command).toBe('guest-sync-delimited');
      expect(Date.now() - t0).toBeLessThan(1_000);
    } finally {
      for (const s of socks) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
      fake = new FakeAgent(sockPath); // so afterEach has something to close
      await fake.listen();
    }
  });

  it('retries connecting until the socket appears', async () => {
    await fake.close();
    const p = GuestAgentClient.connect(sockPath, { timeoutMs: 2_000 });
    await sleep(100);
    fake = new FakeAgent(sockPath);
    await fake.listen();
    const c = await p;
    clients.push(c);
    await expect(c.ping()).resolves.toBeUndefined();
  });

  it('passes setTime as nanoseconds', async () => {
    const c = await connect();
    await c.setTime(1_700_000_000_123_456_789n);
    const req = fake.received.find((r) => r.execute === 'guest-set-time')!;
    expect(req.arguments).toEqual({ time: Number(1_700_000_000_123_456_789n) });
  });
});
