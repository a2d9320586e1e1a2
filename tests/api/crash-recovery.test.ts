import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GetMicrovmCommand,
  ResumeMicrovmCommand,
  RunMicrovmCommand,
  SuspendMicrovmCommand,
  TerminateMicrovmCommand,
  hearthClient,
  waitForMicrovm,
  type HearthConnection,
  type LambdaMicrovmsClient,
} from '../../src/sdk/index.js';
import { buildFixtureImage, callEndpoint, startTestServer, type TestServer } from '../helpers/server.js';
import { createEndpointToken } from '../../src/sdk/index.js';
import { leftovers } from '../helpers/vm.js';

const CHILD = join(import.meta.dirname, '..', 'fixtures', 'scripts', 'server-child.ts');
const IMAGE = `recovery-${Date.now().toString(36)}`;

/** Starts a server child that SIGKILLs itself at `fault`; returns its client and exit promise. */
async function serverThatCrashesAt(
  fault: string,
): Promise<{ client: LambdaMicrovmsClient; exited: Promise<unknown> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, HEARTH_FAULT: fault, HEARTH_LOG_LEVEL: 'warn' },
  });
  const exited = new Promise((r) => child.on('exit', r));
  for await (const line of createInterface({ input: child.stdout! })) {
    if (line.startsWith('ready ')) {
      const c = JSON.parse(line.slice(6)) as HearthConnection;
      return { client: hearthClient(c), exited };
    }
  }
  throw new Error('the server child exited before it was ready');
}

/** Runs a microVM on the crashing server and waits until it is RUNNING. */
async function runningVm(client: LambdaMicrovmsClient): Promise<string> {
  const run = await client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE }));
  await waitForMicrovm(client, run.microvmId!, ['RUNNING']);
  return run.microvmId!;
}

describe('kill -9 of hearth serve, then a restart', () => {
  beforeAll(async () => {
    const t = await startTestServer();
    try {
      await buildFixtureImage(t.client, IMAGE);
    } finally {
      await t.stop();
    }
  });

  let t: TestServer | undefined;
  afterAll(async () => {
    await t?.stop();
  });

  /** Restarts Hearth in this process and returns the microVM's state after recovery. */
  async function restart(id: string) {
    await t?.stop();
    t = await startTestServer();
    return t.client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
  }

  async function expectAnswers(id: string) {
    const vm = await t!.client.send(new GetMicrovmCommand({ microvmIdentifier: id }));
    const token = await createEndpointToken(t!.client, id);
    const r = await callEndpoint(t!, vm.endpoint!, { token });
    expect(r.status).toBe(200);
    return JSON.parse(r.body) as { count: number };
  }

  async function expectNoOrphans() {
    const running = (await t!.server.store.microvms.listByStates(['RUNNING'])).map((r) => r.microvmId);
    const left = await leftovers(t!.server.engine, running);
    expect(left.qemuPids).toEqual([]);
    expect(left.runDirs).toEqual([]);
    expect(left.networksInUse).toBe(0);
  }

  /** The data directory has one engine at a time: the in-process server stops before a child starts. */
  async function crashAt(fault: string) {
    await t?.stop();
    t = undefined;
    return serverThatCrashesAt(fault);
  }

  it('during a launch: the microVM ends TERMINATED with the reason, nothing left behind', async () => {
    const s = await crashAt('core.launch.after-clone');
    const run = await s.client.send(new RunMicrovmCommand({ imageIdentifier: IMAGE }));
    await s.exited;
    const after = await restart(run.microvmId!);
    expect(after.state).toBe('TERMINATED');
    expect(after.stateReason).toContain('launch was interrupted');
    await expectNoOrphans();
  });

  it('before a suspend reaches the engine: the microVM is adopted RUNNING with its memory', async () => {
    const s = await crashAt('core.suspend.before-engine');
    const id = await runningVm(s.client);
    await s.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
    await s.exited;
    expect((await restart(id)).state).toBe('RUNNING');
    expect((await expectAnswers(id)).count).toBe(2); // continues after the warm-up request of the build
    await expectNoOrphans();
    await t!.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
  });

  it('in the middle of the engine suspend (vCPUs stopped, filesystems frozen): RUNNING again and writable', async () => {
    const s = await crashAt('suspend.after-device-state');
    const id = await runningVm(s.client);
    await s.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
    await s.exited;
    expect((await restart(id)).state).toBe('RUNNING');
    expect((await expectAnswers(id)).count).toBe(2); // after the build's warm-up request; the app also writes a log line: not frozen
    await expectNoOrphans();
    await t!.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
  });

  it('after the snapshot was committed: SUSPENDED with a verified snapshot, and it resumes intact', async () => {
    const s = await crashAt('core.suspend.after-engine');
    const id = await runningVm(s.client);
    await s.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
    await s.exited;
    expect((await restart(id)).state).toBe('SUSPENDED');
    await expectNoOrphans();
    await t!.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
    expect((await expectAnswers(id)).count).toBe(2); // continues after the warm-up request of the build
    await t!.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
  });

  it('during a resume: back to SUSPENDED at its snapshot, and it resumes again', async () => {
    const s = await crashAt('core.resume.after-engine');
    const id = await runningVm(s.client);
    await s.client.send(new SuspendMicrovmCommand({ microvmIdentifier: id }));
    await s.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
    await s.exited;
    expect((await restart(id)).state).toBe('SUSPENDED');
    await expectNoOrphans();
    await t!.client.send(new ResumeMicrovmCommand({ microvmIdentifier: id }));
    expect((await expectAnswers(id)).count).toBe(2); // continues after the warm-up request of the build
    await t!.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id }));
  });

  it('during a terminate: TERMINATED, the VM and its files gone', async () => {
    const s = await crashAt('core.terminate.before-engine');
    const id = await runningVm(s.client);
    await s.client.send(new TerminateMicrovmCommand({ microvmIdentifier: id })).catch(() => undefined);
    await s.exited;
    expect((await restart(id)).state).toBe('TERMINATED');
    await expectNoOrphans();
  });
});
