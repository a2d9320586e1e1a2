/**
 * GET /hearth/v1/host (Hearth extension, SigV4 like the rest): what this Hearth enforces around its
 * microVMs and what it cannot here, e.g. a Hearth run without root has no jail, no control groups
 * and user-mode networking, so egress connectors are refused (see src/vmm/host-protections.ts).
 */
import { COMMON_ERRORS, op } from './operation-common.js';
import { bool, enumOf, list, required, str } from './shapes.js';
import { PROTECTIONS, type ProtectionName } from '../vmm/host-protections.js';

const Protection = enumOf(Object.keys(PROTECTIONS) as ProtectionName[], 'A protection, by its stable name.');

const hostOutput = {
  accelerator: required(enumOf(['kvm', 'tcg']), { doc: 'How guests run: KVM, or TCG software emulation.' }),
  jail: required(bool(), {
    doc: 'QEMU runs as its own uid per VM in a pivot_root jail (needs root).',
  }),
  cgroups: required(bool(), { doc: 'Each QEMU has memory, task and CPU limits (its own control group).' }),
  network: required(enumOf(['namespaces', 'user-mode']), {
    doc: 'namespaces: a network namespace, tap and nftables per VM (root); user-mode: QEMU user-mode networking, restricted (no root; egress connectors refused).',
  }),
  enforced: required(list(Protection), { doc: 'Protections in force here.' }),
  notEnforced: required(list(Protection), { doc: 'Protections this Hearth cannot give here.' }),
  warnings: required(list(str()), { doc: 'What each missing protection means, one sentence each.' }),
} as const;

export const HOST_OPERATIONS = {
  GetHost: op({
    method: 'GET',
    path: '/hearth/v1/host',
    successStatus: 200,
    input: {},
    output: hostOutput,
    errors: COMMON_ERRORS,
    doc: 'Describes what this Hearth enforces around its microVMs and what it cannot here, e.g. without root (Hearth extension).',
    hearthExtension: true,
  }),
} as const;
