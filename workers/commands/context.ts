import { loadSettings } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { createServices, type Services } from '../services.js';

/**
 * Builds services for a CLI command, runs it, and always releases them. Commands that never call
 * DashScope (submit, status, ...) do not need an API key.
 */
export async function withServices<T>(
  run: (services: Services) => Promise<T>,
  options: { requireApiKey?: boolean } = {},
): Promise<T> {
  const settings = loadSettings(process.env, { requireApiKey: options.requireApiKey ?? false });
  // CLI commands log to stderr so stdout stays for results (job ids, JSON).
  const logger = createLogger({ level: settings.log.level === 'info' ? 'warn' : settings.log.level }, process.stderr);
  const services = createServices(settings, logger);
  try {
    return await run(services);
  } finally {
    await services.close();
  }
}
