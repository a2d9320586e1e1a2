import { HearthError } from '../errors.js';

/** A host command Hearth ran exited non-zero, was killed, or did not finish in time. */
export class CommandFailedError extends HearthError {
  readonly code = 'HOST_COMMAND_FAILED';
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly stderrTail: string,
    options?: { cause?: unknown; hint?: string },
  ) {
    super(
      `'${command}' failed${exitCode === null ? '' : ` with exit code ${exitCode}`}${stderrTail ? `: ${stderrTail}` : ''}`,
      options,
    );
  }
}

/** A host command did not finish within its deadline and was killed. */
export class CommandTimeoutError extends HearthError {
  readonly code = 'HOST_COMMAND_TIMEOUT';
  constructor(
    readonly command: string,
    readonly timeoutMs: number,
  ) {
    super(`'${command}' did not finish within ${timeoutMs} ms and was killed`);
  }
}
