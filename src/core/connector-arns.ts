/**
 * Names and ARNs of network connectors. Pure functions, shared by the control plane, the SDK and
 * the CLI.
 *
 *   managed (always there):  arn:hearth:lambda:<region>:hearth:network-connector:<NAME>
 *   same, as AWS spells it:  arn:aws:lambda:<region>:aws:network-connector:aws-network-connector:<NAME>
 *   user (egress allow-list): arn:hearth:lambda:<region>:<account>:network-connector:<name>
 */

export const MANAGED_INGRESS_CONNECTORS = ['ALL_INGRESS', 'HTTP_INGRESS', 'NO_INGRESS'] as const;
export const MANAGED_EGRESS_CONNECTORS = ['INTERNET_EGRESS'] as const;
export type ManagedIngressName = (typeof MANAGED_INGRESS_CONNECTORS)[number];
export type ManagedEgressName = (typeof MANAGED_EGRESS_CONNECTORS)[number];
export type ManagedConnectorName = ManagedIngressName | ManagedEgressName;

/** The ingress connector a microVM gets when RunMicrovm names none (AWS attaches it the same way). */
export const DEFAULT_INGRESS_CONNECTOR: ManagedIngressName = 'HTTP_INGRESS';

/** The account field of managed connectors' ARNs (as `aws` is on AWS). */
const MANAGED_ACCOUNT = 'hearth';

export function isManagedConnectorName(name: string): name is ManagedConnectorName {
  return isManagedIngress(name) || (MANAGED_EGRESS_CONNECTORS as readonly string[]).includes(name);
}

export function isManagedIngress(name: string): name is ManagedIngressName {
  return (MANAGED_INGRESS_CONNECTORS as readonly string[]).includes(name);
}

/** The Hearth ARN of a managed connector in `region`. */
export function managedConnectorArn(region: string, name: ManagedConnectorName): string {
  return `arn:hearth:lambda:${region}:${MANAGED_ACCOUNT}:network-connector:${name}`;
}

/** The ARN of the user connector `name` of this server. */
export function userConnectorArn(region: string, accountId: string, name: string): string {
  return `arn:hearth:lambda:${region}:${accountId}:network-connector:${name}`;
}

/**
 * What a connector ARN names. `managed` names may be unknown ones (e.g. SHELL_INGRESS): the caller
 * decides what to say about them. Region and account are as written in the ARN.
 */
export type ParsedConnectorArn =
  { kind: 'managed'; name: string } | { kind: 'user'; name: string; region: string; accountId: string };

const HEARTH_ARN = /^arn:hearth:lambda:([^:]+):([^:]+):network-connector:([^:]+)$/;
const AWS_MANAGED_ARN = /^arn:aws:lambda:[^:]+:aws:network-connector:aws-network-connector:([^:]+)$/;

/** Parses a connector ARN of either form above; undefined when `text` is not one. */
export function parseConnectorArn(text: string): ParsedConnectorArn | undefined {
  const aws = AWS_MANAGED_ARN.exec(text);
  if (aws) return { kind: 'managed', name: aws[1] as string };
  const m = HEARTH_ARN.exec(text);
  if (!m) return undefined;
  const [, region, accountId, name] = m as unknown as [string, string, string, string];
  return accountId === MANAGED_ACCOUNT
    ? { kind: 'managed', name }
    : { kind: 'user', name, region, accountId };
}

/** Who may reach a microVM's endpoint: HTTP only (HTTP_INGRESS), every protocol, or nobody. */
export type IngressMode = 'http' | 'all' | 'none';

/**
 * The ingress mode of a microVM's ingress connectors (ARNs in either form; others are ignored):
 * `none` with NO_INGRESS, else `all` with ALL_INGRESS, else `http` (also for an empty list: the
 * default connector is HTTP_INGRESS).
 */
export function ingressModeOf(arns: readonly string[]): IngressMode {
  const names = new Set(
    arns.map((a) => parseConnectorArn(a)).flatMap((p) => (p?.kind === 'managed' ? [p.name] : [])),
  );
  if (names.has('NO_INGRESS')) return 'none';
  if (names.has('ALL_INGRESS')) return 'all';
  return 'http';
}
