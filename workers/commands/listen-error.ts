import { ConfigError } from '../../src/errors.js';

/**
 * What a command that serves (the dashboard, the emulator) says when it cannot listen: a port in use
 * or refused is the operator's option to change (CONFIG_INVALID, exit 2), not a bug of embedq
 * (the emulator said `INTERNAL: listen EADDRINUSE`, exit 1).
 */
export function listenError(error: unknown, host: string, port: number): unknown {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EADDRINUSE') return new ConfigError(`Invalid options:\n- port: ${host}:${port} is already in use; choose another with --port`);
  if (code === 'EACCES') return new ConfigError(`Invalid options:\n- port: ${host}:${port} may not be used by this user (ports below 1024 need privileges); choose another with --port`);
  return error;
}
