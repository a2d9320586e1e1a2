import { join } from 'node:path';
import {
  CreateMicrovmImageCommand,
  GetMicrovmImageCommand,
  UpdateMicrovmImageCommand,
  waitForImageVersion,
  type LambdaMicrovmsClient,
} from '../src/sdk/index.js';

/** The image the API and gateway benchmarks launch: examples/flask, 512 MiB. */
export const BENCH_IMAGE = 'bench-flask';

/**
 * Makes sure BENCH_IMAGE has an ACTIVE version: builds it the first time, and builds a new version
 * when it has none (a failed build, or a snapshot made for another QEMU or CPU model).
 */
export async function ensureFlaskImage(client: LambdaMicrovmsClient): Promise<void> {
  const image = await client
    .send(new GetMicrovmImageCommand({ imageIdentifier: BENCH_IMAGE }))
    .catch(() => undefined);
  if (image?.latestActiveImageVersion) return;
  const input = {
    codeArtifact: { uri: join(import.meta.dirname, '..', 'examples', 'flask') },
    baseImageArn: 'arn:hearth:lambda:local:hearth:microvm-image:bookworm',
    buildRoleArn: 'arn:hearth:iam::000000000000:role/bench',
    resources: [{ minimumMemoryInMiB: 512 }],
  };
  const c = image
    ? await client.send(new UpdateMicrovmImageCommand({ imageIdentifier: BENCH_IMAGE, ...input }))
    : await client.send(new CreateMicrovmImageCommand({ name: BENCH_IMAGE, ...input }));
  const v = await waitForImageVersion(client, BENCH_IMAGE, c.imageVersion!);
  if (v.state !== 'SUCCESSFUL') throw new Error(`building ${BENCH_IMAGE} failed: ${v.stateReason}`);
}
