import { join } from 'node:path';
import { ensureImage, type LambdaMicrovmsClient } from '../src/sdk/index.js';

/** The image the API and gateway benchmarks launch: examples/flask, 512 MiB. */
export const BENCH_IMAGE = 'bench-flask';

/**
 * Makes sure BENCH_IMAGE has an ACTIVE version: builds it the first time, and builds a new version
 * when it has none (a failed build, or a snapshot made for another QEMU or CPU model).
 */
export async function ensureFlaskImage(client: LambdaMicrovmsClient): Promise<void> {
  await ensureImage(client, BENCH_IMAGE, {
    codeArtifact: { uri: join(import.meta.dirname, '..', 'examples', 'flask') },
    baseImageArn: 'arn:hearth:lambda:local:hearth:microvm-image:bookworm',
    buildRoleArn: 'arn:hearth:iam::000000000000:role/bench',
    resources: [{ minimumMemoryInMiB: 512 }],
  });
}
