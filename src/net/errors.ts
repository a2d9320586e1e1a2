import { HearthError } from '../errors.js';

/** Creating or removing a VM's network (namespace, veth, tap, nftables rules) failed. */
export class NetworkSetupError extends HearthError {
  readonly code = 'NET_SETUP_FAILED';
  constructor(step: string, options?: { cause?: unknown }) {
    super(`VM network setup failed at '${step}'`, {
      ...options,
      hint: 'Hearth needs root (CAP_NET_ADMIN), iproute2 and nftables; see the cause for the command that failed',
    });
  }
}

/** Every network slot of the configured subnet is taken. */
export class NetworkExhaustedError extends HearthError {
  readonly code = 'NET_EXHAUSTED';
  constructor(slots: number) {
    super(`all ${slots} VM network slots are in use`, {
      hint: 'use a larger vmSubnet or run fewer VMs on this host',
    });
  }
}
