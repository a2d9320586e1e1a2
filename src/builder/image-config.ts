import type { WorkloadSpec } from '../guest/workload-config.js';
import type { OciImageConfig } from './buildah.js';

/** The image defines nothing to run (no ENTRYPOINT and no CMD). */
export class NoCommandError extends Error {
  readonly code = 'CONTAINER_BUILD_FAILED';
}

/**
 * What the guest init runs for an image, the way container runtimes read an OCI config:
 * argv = ENTRYPOINT + CMD, the image's ENV (then `extraEnv`, which wins), WORKDIR (default /), USER.
 */
export function workloadFromImage(
  config: OciImageConfig,
  extraEnv: Record<string, string> = {},
): WorkloadSpec {
  const argv = [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])];
  if (argv.length === 0)
    throw new NoCommandError('the image has neither ENTRYPOINT nor CMD: add one to the Dockerfile');
  const env = new Map<string, string>();
  for (const e of config.Env ?? []) {
    const i = e.indexOf('=');
    if (i > 0) env.set(e.slice(0, i), e.slice(i + 1));
  }
  for (const [k, v] of Object.entries(extraEnv)) env.set(k, v);
  return {
    argv,
    env: [...env].map(([k, v]) => `${k}=${v}`),
    cwd: config.WorkingDir || '/',
    ...(config.User ? { user: config.User } : {}),
  };
}
