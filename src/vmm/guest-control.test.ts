import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasCode } from '../errors.js';
import { GuestControlError } from './errors.js';
import { GuestControlClient, type RestoreFixup } from './guest-control.js';

interface CtlRequest {
  id: string;
  cmd: string;
  args: string[];
}

/** What the fake init answers after "<id> ": e.g. "ok pong", "err bad"; undefined for no reply. */
type Handler = (req: CtlRequest, sock: Socket) => string | undefined;

/** A fake hearth-init control port, speaking the line protocol documented in hearth-init.c. */
class FakeInit {
  readonly server: Server;
  readonly sockets: Socket[] = [];
  readonly received: CtlRequest[] = [];
  readonly rawLines: string[] = [];
  handler: Handler = (req) => {
    switch (req.cmd) {
      case 'ping':
        return 'ok pong';
      case 'status':
        return 'ok running 42';
      default:
        return 'ok';
    }
  };

  constructor(readonly path: string) {
    this.server = createServer((sock) => {
      this.sockets.push(sock);
      sock.on('error', () => undefined);
      sock.setEncoding('utf8');
      let buf = '';
      sock.on('data', (chunk: string) => {
        buf += chunk;
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          this.rawLines.push(line);
          const [id, cmd, ...args] = line.split(' ');
          if (!id || !cmd) continue;
          const req = { id, cmd, args };
          this.received.push(req);
          const reply = this.handler(req, sock);
          if (reply !== undefined) sock.write(`${id} ${reply}\n`);
        }
      });
    });
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.path, () => resolve());
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const validFixup = (): RestoreFixup => ({
  realtimeNs: 1_700_000_000_123_456_789n,
  entropy: Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex'),
  hostname: 'clone-7',
  machineId: '0123456789abcdef0123456789abcdef',
});

describe('GuestControlClient', () => {
  let dir: string;
  let sockPath: string;
  let fake: FakeInit;
  const clients: GuestControlClient[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hearth-ctl-'));
    sockPath = join(dir, 'ctl.sock');
    fake = new FakeInit(sockPath);
    await fake.listen();
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await fake.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function connect(): Promise<GuestControlClient> {
    const c = await GuestControlClient.connect(sockPath, { timeoutMs: 2_000 });
    clients.push(c);
    return c;
  }

  it('sends "<id> <cmd>" lines and resolves with the text after "ok "', async () => {
    const c = await connect();
    await expect(c.request('ping')).resolves.toBe('pong');
    await expect(c.ping()).resolves.toBeUndefined();
    expect(fake.rawLines).toHaveLength(2);
    for (const line of fake.rawLines) expect(line).toMatch(/^\S+ ping$/);
  });

  it('resolves with an empty string for a bare "ok"', async () => {
    fake.handler = () => 'ok';
    const c = await connect();
    await expect(c.request('anything', ['a', 'b'])).resolves.toBe('');
    expect(fake.received[0]).toMatchObject({ cmd: 'anything', args: ['a', 'b'] });
  });

  it('uses a different id for every request', async () => {
    const c = await connect();
    await Promise.all([c.ping(), c.ping(), c.ping()]);
    const ids = fake.received.map((r) => r.id);
    expect(new Set(ids).size).toBe(3);
  });

  it('matches replies to requests by id when they arrive out of order', async () => {
    const held: CtlRequest[] = [];
    fake.handler = (req, sock) => {
      held.push(req);
      if (held.length === 2) for (const h of [...held].reverse()) sock.write(`${h.id} ok ${h.args[0]}\n`);
      return undefined;
    };
    const c = await connect();
    await expect(Promise.all([c.request('echo', ['one']), c.request('echo', ['two'])])).resolves.toEqual([
      'one',
      'two',
    ]);
  });

  it('sends fixup with the time in ns, the entropy in hex, the hostname and the machine id', async () => {
    const c = await connect();
    const f = validFixup();
    await c.fixup(f);
    expect(fake.received).toHaveLength(1);
    const req = fake.received[0]!;
    expect(req.cmd).toBe('fixup');
    expect(req.args).toEqual([
      '1700000000123456789',
      f.entropy.toString('hex'),
      'clone-7',
      '0123456789abcdef0123456789abcdef',
    ]);
    expect(req.args[1]).toMatch(/^[0-9a-f]{64}$/);
  });

  it('accepts entropy of exactly 16 and exactly 512 bytes', async () => {
    const c = await connect();
    await c.fixup({ ...validFixup(), entropy: Buffer.alloc(16, 0xab) });
    await c.fixup({ ...validFixup(), entropy: Buffer.alloc(512, 0xcd) });
    expect(fake.received.map((r) => r.args[1]!.length)).toEqual([32, 1024]);
  });

  it('accepts hostnames of 1 and 63 characters with inner hyphens', async () => {
    const c = await connect();
    await c.fixup({ ...validFixup(), hostname: 'a' });
    await c.fixup({ ...validFixup(), hostname: 'a' + '-b'.repeat(31) });
    expect(fake.received.map((r) => r.args[2])).toEqual(['a', 'a' + '-b'.repeat(31)]);
  });

  it('rejects an "err" reply with GuestControlError carrying the message', async () => {
    fake.handler = () => 'err clock_settime: Operation not permitted';
    const c = await connect();
    const err = await c.fixup(validFixup()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestControlError);
    expect((err as GuestControlError).command).toBe('fixup');
    expect((err as Error).message).toBe('guest control fixup: clock_settime: Operation not permitted');
    expect(hasCode(err, 'VMM_GUEST_CONTROL_ERROR')).toBe(true);
  });

  it('rejects invalid hostnames before sending anything', async () => {
    const c = await connect();
    for (const hostname of [
      '',
      '-lead',
      'trail-',
      'has space',
      'under_score',
      'dot.ted',
      'a'.repeat(64),
      'x\ny',
    ]) {
      await expect(c.fixup({ ...validFixup(), hostname }), JSON.stringify(hostname)).rejects.toThrow(
        /invalid hostname/,
      );
    }
    await c.ping();
    expect(fake.received.map((r) => r.cmd)).toEqual(['ping']);
  });

  it('rejects machine ids that are not 32 lowercase hex digits before sending anything', async () => {
    const c = await connect();
    for (const machineId of [
      '',
      '0123456789abcdef0123456789abcde',
      '0123456789abcdef0123456789abcdef0',
      '0123456789ABCDEF0123456789ABCDEF',
      'g123456789abcdef0123456789abcdef',
    ]) {
      await expect(c.fixup({ ...validFixup(), machineId }), machineId).rejects.toThrow(
        /machine id must be 32 hex digits/,
      );
    }
    await c.ping();
    expect(fake.received.map((r) => r.cmd)).toEqual(['ping']);
  });

  it('rejects entropy shorter than 16 or longer than 512 bytes before sending anything', async () => {
    const c = await connect();
    for (const n of [0, 15, 513]) {
      const err = await c.fixup({ ...validFixup(), entropy: Buffer.alloc(n, 1) }).catch((e: unknown) => e);
      expect(err, String(n)).toBeInstanceOf(GuestControlError);
      expect((err as Error).message).toMatch(/entropy must be 16-512 bytes/);
    }
    await c.ping();
    expect(fake.received.map((r) => r.cmd)).toEqual(['ping']);
  });

  it('ignores replies with unknown ids and lines it cannot parse', async () => {
    fake.handler = (req, sock) => {
      sock.write('stale-id-from-an-earlier-connection ok pong\n');
      sock.write('junk\n');
      sock.write(`${req.id}x err wrong id\n`);
      return 'ok pong';
    };
    const c = await connect();
    await expect(c.request('ping')).resolves.toBe('pong');
  });

  it('parses status "running <pid>"', async () => {
    fake.handler = () => 'ok running 1234';
    const c = await connect();
    await expect(c.status()).resolves.toEqual({ state: 'running', pid: 1234 });
  });

  it('parses status "exited <code>"', async () => {
    fake.handler = () => 'ok exited 137';
    const c = await connect();
    await expect(c.status()).resolves.toEqual({ state: 'exited', exitCode: 137 });
  });

  it('parses status "none"', async () => {
    fake.handler = () => 'ok none';
    const c = await connect();
    await expect(c.status()).resolves.toEqual({ state: 'none' });
  });

  it('sends poweroff with the grace period in ms', async () => {
    const c = await connect();
    await c.poweroff(2500);
    expect(fake.received[0]).toMatchObject({ cmd: 'poweroff', args: ['2500'] });
  });

  it('rejects with GuestControlError when there is no reply in time, and later requests still work', async () => {
    let first = true;
    fake.handler = () => {
      if (first) {
        first = false;
        return undefined;
      }
      return 'ok pong';
    };
    const c = await connect();
    const err = await c.request('ping', [], 50).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestControlError);
    expect((err as Error).message).toMatch(/no reply within 50 ms/);
    await expect(c.request('ping')).resolves.toBe('pong');
  });

  it('ignores a late reply to a request that timed out', async () => {
    let late: CtlRequest | undefined;
    fake.handler = (req, sock) => {
      if (!late) {
        late = req;
        return undefined;
      }
      sock.write(`${late.id} ok late\n`);
      return 'ok fresh';
    };
    const c = await connect();
    await expect(c.request('a', [], 30)).rejects.toBeInstanceOf(GuestControlError);
    await expect(c.request('b')).resolves.toBe('fresh');
  });

  it('rejects pending requests with GuestControlError when the connection closes', async () => {
    fake.handler = (_req, sock) => {
      setTimeout(() => sock.destroy(), 10);
      return undefined;
    };
    const c = await connect();
    const err = await c.request('ping', [], 1_500).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestControlError);
    expect((err as Error).message).toMatch(/connection closed/);
  });

  // BUG: unlike QmpClient and GuestAgentClient, GuestControlClient keeps no "closed" state: a request
  // made after the connection closed (QEMU exited, or close() was called) is written to a destroyed
  // socket and waits for its whole timeout (10 s by default), then reports a misleading "no reply".
  it('rejects a request at once with "connection closed" after the connection closed', async () => {
    const c = await connect();
    await c.ping();
    for (const s of fake.sockets) s.destroy();
    await new Promise((r) => setTimeout(r, 30));
    const t0 = Date.now();
    const err = await c.request('ping', [], 300).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestControlError);
    expect((err as Error).message).toMatch(/connection closed/);
    expect(Date.now() - t0).toBeLessThan(100);
  });
});
