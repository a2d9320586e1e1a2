import type { Kysely, Selectable, Updateable } from 'kysely';
import type { IdlePolicy, MicrovmRecord, MicrovmState } from '../core/model.js';
import type { MicrovmUsage } from '../core/usage.js';
import { compact, fromJson, opt, patchValue, toJsonOrNull, type Patch } from './codec.js';
import { StoreConflictError, StoreNotFoundError } from './errors.js';
import { decodeCursor, pageLimit, toPage, type Page, type PageRequest } from './pagination.js';
import type { Database, MicrovmsTable } from './schema.js';
import { isUniqueViolation } from './sql-errors.js';

/**
 * The fields of a microVM that change after launch. `updatedAt` defaults to now. The id, image,
 * `startedAt` (the listing's sort key) and `clientToken` are fixed at creation.
 */
export type MicrovmPatch = Patch<
  MicrovmRecord,
  | 'state'
  | 'stateReason'
  | 'idlePolicy'
  | 'maximumDurationInSeconds'
  | 'runHookPayload'
  | 'ingressNetworkConnectors'
  | 'egressNetworkConnectors'
  | 'tokenGeneration'
  | 'suspendedAt'
  | 'terminatedAt'
  | 'updatedAt'
  | 'usage'
>;

export interface MicrovmUpdateOptions {
  /**
   * Apply the patch only if the microVM is in this state (or one of these states), checked and
   * written in one statement; otherwise StoreConflictError and nothing changes.
   */
  expectedState?: MicrovmState | readonly MicrovmState[];
}

export interface MicrovmListRequest extends PageRequest {
  imageName?: string;
  imageVersion?: string;
  state?: MicrovmState;
}

const LISTING = 'microvms';

export class MicrovmRepository {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly now: () => Date,
  ) {}

  /** Inserts a new microVM; StoreConflictError if the id is taken. */
  async create(vm: MicrovmRecord): Promise<MicrovmRecord> {
    try {
      const row = await this.db
        .insertInto('microvms')
        .values({
          microvm_id: vm.microvmId,
          image_name: vm.imageName,
          image_version: vm.imageVersion,
          state: vm.state,
          state_reason: vm.stateReason ?? null,
          idle_policy: toJsonOrNull(vm.idlePolicy),
          maximum_duration_in_seconds: vm.maximumDurationInSeconds,
          run_hook_payload: vm.runHookPayload ?? null,
          ingress_network_connectors: JSON.stringify(vm.ingressNetworkConnectors),
          egress_network_connectors: JSON.stringify(vm.egressNetworkConnectors),
          client_token: vm.clientToken ?? null,
          token_generation: vm.tokenGeneration,
          started_at: vm.startedAt,
          suspended_at: vm.suspendedAt ?? null,
          terminated_at: vm.terminatedAt ?? null,
          updated_at: vm.updatedAt,
          usage: toJsonOrNull(vm.usage),
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      return toMicrovm(row);
    } catch (e) {
      if (isUniqueViolation(e))
        throw new StoreConflictError('microvm', vm.microvmId, 'a microVM with this id exists', { cause: e });
      throw e;
    }
  }

  async get(microvmId: string): Promise<MicrovmRecord | undefined> {
    const row = await this.db
      .selectFrom('microvms')
      .selectAll()
      .where('microvm_id', '=', microvmId)
      .executeTakeFirst();
    return row && toMicrovm(row);
  }

  /** MicroVMs matching every filter given, oldest first (by startedAt, then id). */
  async list(req: MicrovmListRequest = {}): Promise<Page<MicrovmRecord>> {
    const limit = pageLimit(req);
    let q = this.db.selectFrom('microvms').selectAll();
    if (req.imageName !== undefined) q = q.where('image_name', '=', req.imageName);
    if (req.imageVersion !== undefined) q = q.where('image_version', '=', req.imageVersion);
    if (req.state !== undefined) q = q.where('state', '=', req.state);
    if (req.cursor !== undefined) {
      const [startedAt, id] = decodeCursor<[string, string]>(LISTING, req.cursor, ['string', 'string']);
      q = q.where((eb) => eb(eb.refTuple('started_at', 'microvm_id'), '>', eb.tuple(startedAt, id)));
    }
    const rows = await q
      .orderBy('started_at')
      .orderBy('microvm_id')
      .limit(limit + 1)
      .execute();
    return toPage(rows, limit, LISTING, (r) => [r.started_at, r.microvm_id], toMicrovm);
  }

  /** Every microVM in one of `states`, oldest first, unpaginated: for recovery after a restart. */
  /**
   * Deletes TERMINATED microVMs that ended before `before` (ISO time): they stay visible for a
   * retention period, then go. Returns how many were deleted.
   */
  async deleteTerminatedBefore(before: string): Promise<number> {
    const res = await this.db
      .deleteFrom('microvms')
      .where('state', '=', 'TERMINATED')
      .where('terminated_at', '<', before)
      .executeTakeFirst();
    return Number(res.numDeletedRows);
  }

  async listByStates(states: readonly MicrovmState[]): Promise<MicrovmRecord[]> {
    if (states.length === 0) return [];
    const rows = await this.db
      .selectFrom('microvms')
      .selectAll()
      .where('state', 'in', states)
      .orderBy('started_at')
      .orderBy('microvm_id')
      .execute();
    return rows.map(toMicrovm);
  }

  /**
   * Applies `patch`, optionally only if the microVM is in `expectedState` (compare-and-set in the
   * UPDATE's WHERE clause, so two concurrent transitions cannot both succeed). Returns the updated
   * record. StoreNotFoundError if there is no such microVM; StoreConflictError if its state is not
   * the expected one.
   */
  async update(
    microvmId: string,
    patch: MicrovmPatch,
    options: MicrovmUpdateOptions = {},
  ): Promise<MicrovmRecord> {
    const set: Updateable<MicrovmsTable> = {
      state: patch.state,
      state_reason: patchValue(patch.stateReason, String),
      idle_policy: patchValue(patch.idlePolicy, (p: IdlePolicy) => JSON.stringify(p)),
      maximum_duration_in_seconds: patch.maximumDurationInSeconds,
      run_hook_payload: patchValue(patch.runHookPayload, String),
      ingress_network_connectors:
        patch.ingressNetworkConnectors === undefined
          ? undefined
          : JSON.stringify(patch.ingressNetworkConnectors),
      egress_network_connectors:
        patch.egressNetworkConnectors === undefined
          ? undefined
          : JSON.stringify(patch.egressNetworkConnectors),
      token_generation: patch.tokenGeneration,
      suspended_at: patchValue(patch.suspendedAt, String),
      terminated_at: patchValue(patch.terminatedAt, String),
      updated_at: patch.updatedAt ?? this.now().toISOString(),
      usage: patchValue(patch.usage, (u: MicrovmUsage) => JSON.stringify(u)),
    };
    const expected = options.expectedState;
    const expectedStates: readonly MicrovmState[] | undefined =
      expected === undefined ? undefined : typeof expected === 'string' ? [expected] : expected;
    let q = this.db.updateTable('microvms').set(compact(set)).where('microvm_id', '=', microvmId);
    if (expectedStates !== undefined) q = q.where('state', 'in', expectedStates);
    // An empty list of expected states matches nothing: a conflict, like any other mismatch.
    const row = expectedStates?.length === 0 ? undefined : await q.returningAll().executeTakeFirst();
    if (row) return toMicrovm(row);

    const current = await this.db
      .selectFrom('microvms')
      .select('state')
      .where('microvm_id', '=', microvmId)
      .executeTakeFirst();
    if (!current) throw new StoreNotFoundError('microvm', microvmId);
    throw new StoreConflictError(
      'microvm',
      microvmId,
      `state is ${current.state}, expected ${expectedStates?.join(' or ') || 'none'}`,
    );
  }
}

function toMicrovm(row: Selectable<MicrovmsTable>): MicrovmRecord {
  return compact({
    microvmId: row.microvm_id,
    imageName: row.image_name,
    imageVersion: row.image_version,
    state: row.state as MicrovmState,
    stateReason: opt(row.state_reason),
    idlePolicy:
      row.idle_policy === null ? undefined : fromJson<IdlePolicy>(row.idle_policy, 'microvms', 'idle_policy'),
    maximumDurationInSeconds: row.maximum_duration_in_seconds,
    runHookPayload: opt(row.run_hook_payload),
    ingressNetworkConnectors: fromJson<string[]>(
      row.ingress_network_connectors,
      'microvms',
      'ingress_network_connectors',
    ),
    egressNetworkConnectors: fromJson<string[]>(
      row.egress_network_connectors,
      'microvms',
      'egress_network_connectors',
    ),
    clientToken: opt(row.client_token),
    tokenGeneration: row.token_generation,
    startedAt: row.started_at,
    suspendedAt: opt(row.suspended_at),
    terminatedAt: opt(row.terminated_at),
    updatedAt: row.updated_at,
    usage: row.usage === null ? undefined : fromJson<MicrovmUsage>(row.usage, 'microvms', 'usage'),
  });
}
