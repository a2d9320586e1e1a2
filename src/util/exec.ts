import { spawn } from 'node:child_process';
import { CommandFailedError, CommandTimeoutError } from './errors.js';

export interface RunOptions {
  /** Kill the command after this long. Default: 10 minutes. */
  timeoutMs?: number;
  /** Bytes written to the command's stdin, which is then closed. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Return instead of throwing when the command exits non-zero. */
  allowFailure?: boolean;
  /** Called with each chunk of output as it arrives (build logs, progress). */
  onOutput?: (chunk: string, stream: 'stdout' | 'stderr') => void;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

const DEFAULT_TIMEOUT_MS = 600_000; // 10 minutes
const STDERR_TAIL_CHARS = 2_000;

/**
 * Runs a host command without a shell (arguments are never interpreted) and collects its output.
 * Throws CommandFailedError on a non-zero exit unless `allowFailure`, CommandTimeoutError on timeout.
 */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const label = [command, ...args].join(' ').slice(0, 300);
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout!.on('data', (b: Buffer) => {
      out.push(b);
      options.onOutput?.(b.toString(), 'stdout');
    });
    child.stderr!.on('data', (b: Buffer) => {
      err.push(b);
      options.onOutput?.(b.toString(), 'stderr');
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new CommandFailedError(label, null, e.message, { cause: e }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result = {
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        exitCode: code ?? -1,
      };
      if (timedOut) return reject(new CommandTimeoutError(label, timeoutMs));
      if ((code !== 0 || signal) && !options.allowFailure) {
        return reject(new CommandFailedError(label, code, result.stderr.trim().slice(-STDERR_TAIL_CHARS)));
      }
      resolve(result);
    });
    if (options.input !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(options.input);
    }
  });
}
