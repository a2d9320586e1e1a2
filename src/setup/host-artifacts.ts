import { readFile } from 'node:fs/promises';
import { HearthError } from '../errors.js';
import type { DataDir } from '../config/data-dir.js';
import type { BaseDisk } from '../builder/base-rootfs.js';
import type { GuestKernel } from '../guest/kernel.js';
import type { AgentBundle } from '../guest/agent-bundle.js';
import type { AccelChoice } from '../vmm/accel.js';

/** Everything `hearth setup` prepares on a host, as recorded in the data directory. */
export interface HostArtifacts {
  kernel: GuestKernel;
  agent: AgentBundle;
  initramfs: string;
  baseDisk: BaseDisk;
  accel: AccelChoice;
  qemuVersion: string;
  setupAt: string;
}

/** The host has not been set up (or the data directory was moved or wiped). */
export class HostNotSetUpError extends HearthError {
  readonly code = 'HOST_NOT_SET_UP';
  /** `detail`: what is missing, when known. */
  constructor(dataDir: string, detail?: string) {
    super(detail ? `the host is not set up for ${dataDir}: ${detail}` : `no host setup found in ${dataDir}`, {
      hint:
        process.getuid?.() === 0
          ? 'run `hearth setup` first (the README commands do it for you)'
          : `a Hearth without root needs a host prepared by root: hearth setup --for-user <you> --data-dir ${dataDir}`,
    });
  }
}

export async function loadHostArtifacts(dataDir: DataDir): Promise<HostArtifacts> {
  try {
    return JSON.parse(await readFile(dataDir.hostArtifactsFile, 'utf8')) as HostArtifacts;
  } catch {
    throw new HostNotSetUpError(dataDir.root);
  }
}
