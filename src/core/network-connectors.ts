/**
 * Network connectors: the managed ones (ingress ALL_INGRESS, HTTP_INGRESS, NO_INGRESS; egress
 * INTERNET_EGRESS), which always exist, and user egress allow-lists, kept in the store and immutable
 * but for their tags. RunMicrovm names connectors by ARN; `resolveForRun` checks the lists and turns
 * them into the engine's EgressPolicy.
 */
import type { EgressPolicy } from '../net/policy.js';
import type { Store, StoreRepositories } from '../store/database.js';
import { decodeCursor, encodeCursor, pageLimit, type Page, type PageRequest } from '../store/pagination.js';
import { oncePerClientToken } from './client-token.js';
import {
  DEFAULT_INGRESS_CONNECTOR,
  MANAGED_EGRESS_CONNECTORS,
  MANAGED_INGRESS_CONNECTORS,
  isManagedConnectorName,
  isManagedIngress,
  managedConnectorArn,
  parseConnectorArn,
  userConnectorArn,
  type ManagedConnectorName,
} from './connector-arns.js';
import { checkEgressRules, checkPolicy, egressPolicyOf, type EgressRuleInput } from './egress-rules.js';
import { NetworkConnectorConflictError, NetworkConnectorNotFoundError } from './errors.js';
import { ValidationError } from './image-spec.js';
import type { ConnectorEgressRule, NetworkConnectorRecord } from './model.js';
import { withTags, withoutTags } from './tags.js';

export type NetworkConnectorType = 'MANAGED_INGRESS' | 'MANAGED_EGRESS' | 'EGRESS_ALLOW_LIST';

/** A connector as the API returns it. Managed ones have no rules, tags or creation time. */
export interface NetworkConnectorView {
  connectorArn: string;
  name: string;
  type: NetworkConnectorType;
  description?: string;
  egressRules?: ConnectorEgressRule[];
  state: 'ACTIVE';
  createdAt?: string;
  tags?: Record<string, string>;
}

export interface NewNetworkConnector {
  name: string;
  description?: string;
  egressRules: EgressRuleInput[];
  tags?: Record<string, string>;
  clientToken?: string;
}

/** What RunMicrovm's connector lists come to. */
export interface RunConnectors {
  /** Canonical ARNs; HTTP_INGRESS when the request named no ingress connector. */
  ingress: string[];
  egress: string[];
  egressPolicy: EgressPolicy;
  /** Names of the user connectors used: lock them while recording the microVM (lockUserConnectors). */
  userConnectors: string[];
}

export interface NetworkConnectorServiceOptions {
  store: Store;
  region: string;
  accountId: string;
  /** The server's VM subnet (HEARTH_VM_SUBNET), which no rule may open. */
  vmSubnet: string;
  now?: () => number;
}

const LISTING = 'network-connector-views';
const MANAGED_DESCRIPTIONS: Record<ManagedConnectorName, string> = {
  ALL_INGRESS: 'Every protocol may reach the endpoint (HTTP, HTTP/2, gRPC, WebSockets).',
  HTTP_INGRESS: 'HTTP requests may reach the endpoint (the default).',
  NO_INGRESS: 'The endpoint accepts no traffic.',
  INTERNET_EGRESS: 'The microVM may reach public internet addresses (never private, link-local or the host).',
};
const MANAGED_NAMES: readonly ManagedConnectorName[] = [
  ...MANAGED_INGRESS_CONNECTORS,
  ...MANAGED_EGRESS_CONNECTORS,
];

/** A connector named in a request, resolved. */
type Resolved = { managed: ManagedConnectorName } | { user: NetworkConnectorRecord };

export class NetworkConnectorService {
  constructor(private readonly o: NetworkConnectorServiceOptions) {}

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  managedArn(name: ManagedConnectorName): string {
    return managedConnectorArn(this.o.region, name);
  }

  arnOf(name: string): string {
    return userConnectorArn(this.o.region, this.o.accountId, name);
  }

  /** Whether `arn` has the form of a connector ARN (any connector, known or not). */
  isConnectorArn(arn: string): boolean {
    return parseConnectorArn(arn) !== undefined;
  }

  /**
   * Creates an egress allow-list. ValidationError for a bad rule (naming it and the limit),
   * NetworkConnectorConflictError if the name is taken (managed names included). A repeated
   * clientToken with the same parameters returns the first call's connector.
   */
  async create(input: NewNetworkConnector): Promise<NetworkConnectorView> {
    const { clientToken, ...request } = input;
    const { value } = await oncePerClientToken({
      store: this.o.store,
      scope: 'CreateNetworkConnector',
      clientToken,
      request,
      now: this.now(),
      create: () => this.insert(request),
      resultOf: (v) => ({ name: v.name }),
      replay: (r) => this.get((r as { name: string }).name),
    });
    return value;
  }

  private async insert(input: Omit<NewNetworkConnector, 'clientToken'>): Promise<NetworkConnectorView> {
    if (isManagedConnectorName(input.name))
      throw new NetworkConnectorConflictError(`${input.name} is the name of a managed connector`);
    const egressRules = checkEgressRules(input.egressRules, this.o.vmSubnet);
    try {
      const rec = await this.o.store.networkConnectors.create({
        name: input.name,
        arn: this.arnOf(input.name),
        ...(input.description !== undefined ? { description: input.description } : {}),
        egressRules,
        tags: input.tags ?? {},
        createdAt: new Date(this.now()).toISOString(),
      });
      return userView(rec);
    } catch (e) {
      if ((e as { code?: string }).code === 'STORE_CONFLICT')
        throw new NetworkConnectorConflictError(
          `a network connector named ${input.name} already exists`,
          'connectors are immutable: create one with another name, or delete this one first',
        );
      throw e;
    }
  }

  /** A connector by name or ARN (managed or user); NetworkConnectorNotFoundError if unknown. */
  async get(identifier: string): Promise<NetworkConnectorView> {
    const r = await this.find(identifier, 'connectorIdentifier');
    return 'managed' in r ? this.managedView(r.managed) : userView(r.user);
  }

  /**
   * The managed connectors first, then the user connectors by name. The cursor says which part
   * comes next: ['m', index of the next managed one] or ['u', the store's cursor].
   */
  async list(req: PageRequest = {}): Promise<Page<NetworkConnectorView>> {
    const limit = pageLimit(req);
    const [part, position] =
      req.cursor === undefined
        ? ['m', '0']
        : decodeCursor<[string, string]>(LISTING, req.cursor, ['string', 'string']);
    const items: NetworkConnectorView[] = [];
    let next = part === 'm' ? Number(position) : MANAGED_NAMES.length;
    for (; next < MANAGED_NAMES.length && items.length < limit; next++)
      items.push(this.managedView(MANAGED_NAMES[next] as ManagedConnectorName));
    if (items.length === limit) {
      const more =
        next < MANAGED_NAMES.length ||
        (await this.o.store.networkConnectors.list({ limit: 1 })).items.length > 0;
      return more ? { items, nextCursor: encodeCursor(LISTING, ['m', String(next)]) } : { items };
    }
    const page = await this.o.store.networkConnectors.list({
      limit: limit - items.length,
      ...(part === 'u' ? { cursor: position } : {}),
    });
    items.push(...page.items.map(userView));
    return page.nextCursor ? { items, nextCursor: encodeCursor(LISTING, ['u', page.nextCursor]) } : { items };
  }

  /**
   * Deletes a user connector. ValidationError for a managed one; NetworkConnectorConflictError
   * naming the microVMs (not TERMINATED) that use it; NetworkConnectorNotFoundError if unknown.
   */
  async delete(identifier: string): Promise<void> {
    const { name } = await this.userRecord(identifier, 'connectorIdentifier', 'deleted');
    await this.o.store.transaction(async (tx) => {
      if (!(await tx.networkConnectors.lock(name))) throw new NetworkConnectorNotFoundError(name);
      const users = await tx.networkConnectors.usedBy(this.arnOf(name));
      if (users.length > 0)
        throw new NetworkConnectorConflictError(
          `network connector ${name} is used by ${users.length} microVM${users.length === 1 ? '' : 's'} that ${users.length === 1 ? 'is' : 'are'} not TERMINATED: ${users.slice(0, 10).join(', ')}${users.length > 10 ? ', ...' : ''}`,
          'terminate them first (hearth rm <id>)',
        );
      await tx.networkConnectors.delete(name);
    });
  }

  /** The tags of a user connector. */
  async tags(arn: string): Promise<Record<string, string>> {
    return (await this.userRecord(arn, 'Resource', 'tagged')).tags;
  }

  /** Adds or replaces tags (at most 50 in all). */
  async tag(arn: string, tags: Record<string, string>): Promise<void> {
    const rec = await this.userRecord(arn, 'Resource', 'tagged');
    await this.o.store.networkConnectors.setTags(rec.name, withTags(rec.tags, tags, 'a network connector'));
  }

  /** Removes tags (absent keys are ignored). */
  async untag(arn: string, keys: readonly string[]): Promise<void> {
    const rec = await this.userRecord(arn, 'Resource', 'tagged');
    await this.o.store.networkConnectors.setTags(rec.name, withoutTags(rec.tags, keys));
  }

  /**
   * Checks RunMicrovm's connector lists: every entry a connector ARN (ValidationError for a bare
   * name, with the ARN to use), known (NetworkConnectorNotFoundError), on the right side (ingress
   * connectors only in the ingress list, egress ones only in the egress list), no duplicates, and
   * NO_INGRESS alone. No ingress connector means HTTP_INGRESS. The egress policy: the internet with
   * INTERNET_EGRESS, plus the rules of every allow-list; nothing otherwise. ValidationError if the
   * network side would refuse the policy as a whole (too many rules from several connectors).
   */
  async resolveForRun(
    ingress: readonly string[] = [],
    egress: readonly string[] = [],
  ): Promise<RunConnectors> {
    const ingressArns: string[] = [];
    for (const [i, text] of ingress.entries()) {
      const field = `ingressNetworkConnectors.${i + 1}.member`;
      const r = await this.find(text, field, true);
      if (!('managed' in r) || !isManagedIngress(r.managed))
        throw new ValidationError(field, `${text} is an egress connector; put it in egressNetworkConnectors`);
      ingressArns.push(this.managedArn(r.managed));
    }
    checkUnique(ingressArns, 'ingressNetworkConnectors');
    if (ingressArns.length > 1 && ingressArns.includes(this.managedArn('NO_INGRESS')))
      throw new ValidationError(
        'ingressNetworkConnectors',
        'NO_INGRESS cannot be combined with another ingress connector',
      );
    if (ingressArns.length === 0) ingressArns.push(this.managedArn(DEFAULT_INGRESS_CONNECTOR));

    const egressArns: string[] = [];
    const rules: ConnectorEgressRule[] = [];
    const userConnectors: string[] = [];
    let internet = false;
    for (const [i, text] of egress.entries()) {
      const field = `egressNetworkConnectors.${i + 1}.member`;
      const r = await this.find(text, field, true);
      if ('managed' in r) {
        if (isManagedIngress(r.managed))
          throw new ValidationError(
            field,
            `${text} is an ingress connector; put it in ingressNetworkConnectors`,
          );
        internet = true;
        egressArns.push(this.managedArn(r.managed));
      } else {
        rules.push(...r.user.egressRules);
        userConnectors.push(r.user.name);
        egressArns.push(r.user.arn);
      }
    }
    checkUnique(egressArns, 'egressNetworkConnectors');
    // Each connector passed on its own; together they must too (the network side caps the rules).
    const egressPolicy = checkPolicy(
      egressPolicyOf(internet, rules),
      this.o.vmSubnet,
      'egressNetworkConnectors',
    );
    return { ingress: ingressArns, egress: egressArns, egressPolicy, userConnectors };
  }

  /**
   * Locks the named user connectors in `tx` (see NetworkConnectorRepository.lock): a delete waits
   * for the transaction and then sees its microVM. NetworkConnectorNotFoundError if one is gone.
   */
  async lockUserConnectors(tx: StoreRepositories, names: readonly string[]): Promise<void> {
    for (const name of names)
      if (!(await tx.networkConnectors.lock(name))) throw new NetworkConnectorNotFoundError(this.arnOf(name));
  }

  private managedView(name: ManagedConnectorName): NetworkConnectorView {
    return {
      connectorArn: this.managedArn(name),
      name,
      type: isManagedIngress(name) ? 'MANAGED_INGRESS' : 'MANAGED_EGRESS',
      description: MANAGED_DESCRIPTIONS[name],
      state: 'ACTIVE',
    };
  }

  /**
   * Resolves a name or ARN. With `arnOnly` (RunMicrovm, as AWS) a bare name is a ValidationError
   * giving the ARN to use. Another server's user ARN is a ValidationError; an unknown connector a
   * NetworkConnectorNotFoundError.
   */
  private async find(text: string, field: string, arnOnly = false): Promise<Resolved> {
    const parsed = parseConnectorArn(text);
    if (!parsed && text.startsWith('arn:'))
      throw new ValidationError(
        field,
        `'${text}' is not a network connector ARN (${this.managedArn('HTTP_INGRESS')}, or ${this.arnOf('<name>')})`,
      );
    const kind = parsed?.kind ?? (isManagedConnectorName(text) ? 'managed' : 'user');
    const name = parsed?.name ?? text;
    if (!parsed && arnOnly) {
      const arn = kind === 'managed' ? this.managedArn(name as ManagedConnectorName) : this.arnOf(name);
      throw new ValidationError(field, `'${text}' is a name; connectors are given by ARN: use ${arn}`);
    }
    if (kind === 'managed') {
      if (!isManagedConnectorName(name))
        throw new NetworkConnectorNotFoundError(
          `'${name}' (managed)`,
          `the managed connectors are ${MANAGED_NAMES.join(', ')}`,
        );
      return { managed: name };
    }
    if (parsed?.kind === 'user' && (parsed.region !== this.o.region || parsed.accountId !== this.o.accountId))
      throw new ValidationError(
        field,
        `'${text}' is not a connector of this Hearth (${this.arnOf('<name>')})`,
      );
    const user = await this.o.store.networkConnectors.get(name);
    if (!user) throw new NetworkConnectorNotFoundError(parsed ? text : name);
    return { user };
  }

  /** A user connector by name or ARN; ValidationError for a managed one (it cannot be `changed`). */
  private async userRecord(
    identifier: string,
    field: string,
    changed: string,
  ): Promise<NetworkConnectorRecord> {
    const r = await this.find(identifier, field);
    if ('managed' in r)
      throw new ValidationError(field, `${r.managed} is a managed connector: it cannot be ${changed}`);
    return r.user;
  }
}

function userView(rec: NetworkConnectorRecord): NetworkConnectorView {
  return {
    connectorArn: rec.arn,
    name: rec.name,
    type: 'EGRESS_ALLOW_LIST',
    ...(rec.description !== undefined ? { description: rec.description } : {}),
    egressRules: rec.egressRules,
    state: 'ACTIVE',
    createdAt: rec.createdAt,
    tags: rec.tags,
  };
}

function checkUnique(arns: readonly string[], field: string): void {
  const dup = arns.find((a, i) => arns.indexOf(a) !== i);
  if (dup !== undefined) throw new ValidationError(field, `${dup} is listed twice`);
}
