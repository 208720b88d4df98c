import type { AddressInfo } from 'node:net';

import { buildDashboard, type Dashboard } from '../../workers/dashboard/server.js';
import type { Services } from '../../workers/services.js';

/** A real dashboard server on a free loopback port, over the world's services. */
export async function startDashboard(services: Services, token?: string): Promise<{ url: string; dashboard: Dashboard; close(): Promise<void> }> {
  const dashboard = await buildDashboard(services, { host: '127.0.0.1', token, refreshMs: 500 });
  await dashboard.app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = dashboard.app.server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, dashboard, close: () => dashboard.app.close() };
}
