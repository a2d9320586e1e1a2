import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { fixtureImage } from '../helpers/images.js';
import { callEndpoint, startTestServer, type TestServer } from '../helpers/server.js';

describe('the hearth CLI', () => {
  let t: TestServer;
  const image = `cli-${Date.now().toString(36)}`;

  const hearth = (...args: string[]) => runCli(t, ...args);

  beforeAll(async () => {
    t = await startTestServer();
  });

  afterAll(async () => {
    await t.stop();
  });

  it('builds an image with the live build log, then lists it (hearth build, hearth images)', async () => {
    const r = await hearth(
      'build',
      fixtureImage('lifecycle'),
      '--name',
      image,
      '--memory',
      '512',
      '--hooks',
      '{"port":9000,"microvmImageHooks":{"ready":"ENABLED"}}',
    );
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('STEP 1/3: FROM hearth/base:bookworm'); // the build log, live
    expect(r.stderr).toMatch(/\[hearth\] build finished in/);
    expect(r.stdout).toMatch(/state\s+SUCCESSFUL/);
    const images = await hearth('images');
    expect(images.stdout).toMatch(new RegExp(`${image}\\s+CREATED\\s+1.0`));
  });

  it('runs, lists, mints a token, suspends, resumes and terminates with AWS names and short aliases', async () => {
    const run = await hearth('run-microvm', '--image-identifier', image, '--wait', '--output', 'json');
    expect(run.code).toBe(0);
    const vm = JSON.parse(run.stdout) as { microvmId: string; state: string; endpoint: string };
    expect(vm.state).toBe('RUNNING');
    expect((await hearth('ls')).stdout).toMatch(new RegExp(`${vm.microvmId}\\s+RUNNING`));
    const token = (await hearth('token', vm.microvmId)).stdout.trim();
    expect((await callEndpoint(t, vm.endpoint, { token })).status).toBe(200);
    expect((await hearth('suspend', vm.microvmId)).stdout).toContain('SUSPENDED');
    expect((await hearth('resume-microvm', vm.microvmId)).stdout).toContain('RUNNING');
    expect((await hearth('get', vm.microvmId, '--output', 'json')).stdout).toContain('"state": "RUNNING"');
    expect((await hearth('rm', vm.microvmId)).stdout).toContain('TERMINATED');
  });

  it('prints the build log of an image version (hearth build-logs)', async () => {
    const r = await hearth('build-logs', image);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('[hearth] build finished');
  });

  it('says what went wrong and what to do, with a non-zero exit', async () => {
    const missing = await hearth('get', 'microvm-00000000-0000-0000-0000-000000000000');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/error \[ResourceNotFoundException\]: microVM .* not found/);
    expect(missing.stderr).toContain('hint: list microVMs');
    const bad = await hearth('run', image, '--idle-policy', '{not json');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--idle-policy must be JSON');
    const unknown = await hearth('frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown command 'frobnicate'");
  });
});
