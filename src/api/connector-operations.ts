/**
 * Hearth's network connector operations (extension routes under /hearth/v1/, SigV4-signed like the
 * AWS API and served by the same server: routing, validation, serialization and the OpenAPI
 * document come from the same table machinery). Connectors are immutable: there is no update.
 */
import {
  Arn,
  COMMON_ERRORS,
  ClientToken,
  Description,
  Identifier,
  LIMITS,
  MaxResults,
  NextToken,
  PortRange,
  READ,
  TagMap,
  WRITE,
  op,
} from './operation-common.js';
import {
  enumOf,
  int,
  label,
  list,
  optional,
  query,
  required,
  str,
  struct,
  timestamp,
  union,
} from './shapes.js';

export const CONNECTOR_LIMITS = {
  nameMaxLength: 64,
  egressRules: [1, 50],
  /** Port specifications per rule. */
  ports: 20,
} as const;

const ConnectorName = str({
  minLength: 1,
  maxLength: CONNECTOR_LIMITS.nameMaxLength,
  pattern: '^[a-zA-Z0-9_-]+$',
});

export const ConnectorPort = union(
  'NetworkConnectorPort',
  { port: int({ min: LIMITS.port[0], max: LIMITS.port[1] }), range: PortRange },
  'A destination port or an inclusive range of them',
);

export const EgressRule = struct(
  'EgressRule',
  {
    cidr: optional(str({ minLength: 9, maxLength: 18 }), {
      doc: 'A canonical IPv4 network, e.g. 10.0.5.0/24 or 10.0.5.7/32; not loopback, link-local, 0.0.0.0/8, multicast, reserved or the server VM subnet.',
    }),
    hostname: optional(str({ minLength: 1, maxLength: 253 }), {
      doc: "A DNS name, e.g. db.internal, or '*.' + a name for any name below it (not the name itself).",
    }),
    protocol: optional(enumOf(['TCP', 'UDP', 'ALL']), { doc: 'Default ALL (with no ports: ICMP too).' }),
    ports: optional(list(ConnectorPort, { maxItems: CONNECTOR_LIMITS.ports }), {
      doc: 'Destination ports; absent or empty: every port.',
    }),
  },
  { doc: 'One allowed destination: exactly one of cidr and hostname.' },
);

export const NetworkConnectorType = enumOf(['MANAGED_INGRESS', 'MANAGED_EGRESS', 'EGRESS_ALLOW_LIST']);

const connectorOutput = {
  connectorArn: required(Arn),
  name: required(str()),
  type: required(NetworkConnectorType),
  state: required(enumOf(['ACTIVE'])),
  description: optional(str()),
  egressRules: optional(list(EgressRule), { doc: 'The allow-list (EGRESS_ALLOW_LIST connectors).' }),
  createdAt: optional(timestamp(), { doc: 'Absent for managed connectors.' }),
  tags: optional(TagMap),
} as const;

export const NetworkConnector = struct('NetworkConnector', connectorOutput);

const V1 = '/hearth/v1/network-connectors';
const connectorIdentifier = label(Identifier, {
  doc: 'Name or ARN of the connector (managed: e.g. INTERNET_EGRESS).',
});

export const CONNECTOR_OPERATIONS = {
  CreateNetworkConnector: op({
    method: 'POST',
    path: V1,
    successStatus: 201,
    input: {
      name: required(ConnectorName),
      description: optional(Description),
      egressRules: required(
        list(EgressRule, {
          minItems: CONNECTOR_LIMITS.egressRules[0],
          maxItems: CONNECTOR_LIMITS.egressRules[1],
        }),
      ),
      tags: optional(TagMap),
      clientToken: optional(ClientToken, { idempotencyToken: true }),
    },
    output: connectorOutput,
    errors: WRITE,
    doc: 'Creates an egress allow-list connector for RunMicrovm.egressNetworkConnectors (Hearth extension).',
    hearthExtension: true,
  }),
  DeleteNetworkConnector: op({
    method: 'DELETE',
    path: `${V1}/{connectorIdentifier}`,
    successStatus: 204,
    input: { connectorIdentifier },
    output: null,
    errors: WRITE,
    doc: 'Deletes a user connector no microVM that is not TERMINATED uses (Hearth extension).',
    hearthExtension: true,
  }),
  GetNetworkConnector: op({
    method: 'GET',
    path: `${V1}/{connectorIdentifier}`,
    successStatus: 200,
    input: { connectorIdentifier },
    output: connectorOutput,
    errors: READ,
    doc: 'Describes a network connector, managed or user (Hearth extension).',
    hearthExtension: true,
  }),
  ListNetworkConnectors: op({
    method: 'GET',
    path: V1,
    successStatus: 200,
    input: { maxResults: query(MaxResults, 'maxResults'), nextToken: query(NextToken, 'nextToken') },
    output: { networkConnectors: required(list(NetworkConnector)), nextToken: optional(str()) },
    errors: COMMON_ERRORS,
    doc: 'Lists the managed connectors, then the user connectors by name (Hearth extension).',
    hearthExtension: true,
  }),
} as const;
