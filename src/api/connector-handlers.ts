import type { NetworkConnectorService } from '../core/network-connectors.js';
import type { OperationHandlers } from './server.js';

type ConnectorOperation =
  'CreateNetworkConnector' | 'DeleteNetworkConnector' | 'GetNetworkConnector' | 'ListNetworkConnectors';

/** Binds Hearth's network connector operations (connector-operations.ts) to the connector service. */
export function connectorHandlers(
  connectors: NetworkConnectorService,
): Pick<OperationHandlers, ConnectorOperation> {
  return {
    CreateNetworkConnector: (i) =>
      connectors.create({
        name: i.name,
        egressRules: i.egressRules,
        ...(i.description !== undefined ? { description: i.description } : {}),
        ...(i.tags ? { tags: i.tags } : {}),
        ...(i.clientToken ? { clientToken: i.clientToken } : {}),
      }),
    GetNetworkConnector: (i) => connectors.get(i.connectorIdentifier),
    async ListNetworkConnectors(i) {
      const page = await connectors.list({
        ...(i.maxResults ? { limit: i.maxResults } : {}),
        ...(i.nextToken ? { cursor: i.nextToken } : {}),
      });
      return {
        networkConnectors: page.items,
        ...(page.nextCursor ? { nextToken: page.nextCursor } : {}),
      };
    },
    DeleteNetworkConnector: (i) => connectors.delete(i.connectorIdentifier),
  };
}
