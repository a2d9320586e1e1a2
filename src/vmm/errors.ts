import { HearthError } from '../errors.js';

/** A QMP command or the QMP connection failed. `qmpClass` is QEMU's error class when QEMU replied. */
export class QmpError extends HearthError {
  readonly code = 'VMM_QMP_ERROR';
  constructor(
    readonly command: string,
    message: string,
    readonly qmpClass?: string,
  ) {
    super(`QMP ${command}: ${message}`);
  }
}

/** QEMU did not answer a QMP command within its deadline. */
export class QmpTimeoutError extends HearthError {
  readonly code = 'VMM_QMP_TIMEOUT';
  constructor(
    readonly command: string,
    readonly timeoutMs: number,
  ) {
    super(`QMP ${command} got no reply within ${timeoutMs} ms`, {
      hint: 'QEMU may be hung; stop the VM forcefully',
    });
  }
}

/** The guest agent (qemu-ga) did not answer within its deadline, or its connection failed. */
export class GuestAgentError extends HearthError {
  readonly code = 'VMM_GUEST_AGENT_ERROR';
  constructor(
    readonly command: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`guest agent ${command}: ${message}`, {
      ...options,
      hint: 'the guest may be overloaded or its agent may have died; see the VM console log',
    });
  }
}

/** A command run in the guest through the agent did not finish in time. */
export class GuestExecTimeoutError extends HearthError {
  readonly code = 'VMM_GUEST_EXEC_TIMEOUT';
  constructor(
    readonly path: string,
    readonly timeoutMs: number,
  ) {
    super(`guest command ${path} did not finish within ${timeoutMs} ms`);
  }
}

/** Hearth's guest init refused or failed a control request (restore hygiene, poweroff). */
export class GuestControlError extends HearthError {
  readonly code = 'VMM_GUEST_CONTROL_ERROR';
  constructor(
    readonly command: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`guest control ${command}: ${message}`, options);
  }
}

/** The QEMU process exited (or could not start) while Hearth still needed it. */
export class QemuExitedError extends HearthError {
  readonly code = 'VMM_QEMU_EXITED';
  constructor(
    readonly vmId: string,
    readonly exitCode: number | null,
    readonly signal: string | null,
    readonly stderrTail: string,
  ) {
    super(
      `QEMU for ${vmId} exited (${signal ? `signal ${signal}` : `code ${exitCode}`})${stderrTail ? `: ${stderrTail}` : ''}`,
      { hint: "see the VM's console log and QEMU's message above" },
    );
  }
}

/** An operation was asked of a VM in a state that does not allow it. Nothing was changed. */
export class InvalidVmStateError extends HearthError {
  readonly code = 'VMM_INVALID_STATE';
  constructor(
    readonly vmId: string,
    readonly operation: string,
    readonly state: string,
    readonly allowed: readonly string[],
  ) {
    super(`cannot ${operation} VM ${vmId} in state ${state}; allowed in: ${allowed.join(', ')}`);
  }
}

/** A snapshot file is missing, truncated or does not match its manifest's checksum. Nothing was started. */
export class SnapshotCorruptError extends HearthError {
  readonly code = 'VMM_SNAPSHOT_CORRUPT';
  constructor(
    readonly snapshotPath: string,
    detail: string,
  ) {
    super(`snapshot ${snapshotPath} is unusable: ${detail}`, {
      hint: 'the files were changed or damaged after they were written; restore from another snapshot or relaunch from the image',
    });
  }
}

/** A snapshot was made on a host or QEMU it cannot be restored on (accelerator, QEMU version, machine). */
export class SnapshotIncompatibleError extends HearthError {
  readonly code = 'VMM_SNAPSHOT_INCOMPATIBLE';
  constructor(
    readonly snapshotPath: string,
    detail: string,
    hint?: string,
  ) {
    super(`snapshot ${snapshotPath} cannot be restored here: ${detail}`, hint === undefined ? {} : { hint });
  }
}

/**
 * Suspend did not complete. If `vmKeptRunning` the VM is running as before; otherwise the VM's
 * process is gone and its last committed snapshot (if any) is untouched.
 */
export class SuspendFailedError extends HearthError {
  readonly code = 'VMM_SUSPEND_FAILED';
  constructor(
    readonly vmId: string,
    readonly step: string,
    readonly vmKeptRunning: boolean,
    options?: { cause?: unknown },
  ) {
    super(
      `suspend of ${vmId} failed at step '${step}'${vmKeptRunning ? '; the VM is still running' : '; the VM process is gone'}`,
      options,
    );
  }
}

/** The guest did not become reachable (port or agent) within its boot deadline. */
export class BootTimeoutError extends HearthError {
  readonly code = 'VMM_BOOT_TIMEOUT';
  constructor(
    readonly vmId: string,
    readonly waitedFor: string,
    readonly timeoutMs: number,
    readonly consoleTail: string,
    options?: { cause?: unknown },
  ) {
    const cause = options?.cause instanceof Error ? ` (${options.cause.message})` : '';
    super(
      `VM ${vmId}: ${waitedFor} not ready within ${timeoutMs} ms${cause}. Last console lines:\n${consoleTail}`,
      options,
    );
  }
}

/** No usable accelerator: QEMU could not boot a guest with KVM or with TCG. */
export class AcceleratorUnavailableError extends HearthError {
  readonly code = 'VMM_NO_ACCELERATOR';
  constructor(detail: string) {
    super(`no accelerator can boot a guest on this host: ${detail}`, {
      hint: 'check that qemu-system-x86 is installed and that `hearth setup` completed',
    });
  }
}
