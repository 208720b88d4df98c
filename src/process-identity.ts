import { hostname } from 'node:os';

/**
 * How this process is named wherever an operator must find it: the dashboard's worker list and
 * heartbeats, and the failure of a job (a worker with credentials or settings of its own fails the
 * jobs it takes, and the message must say which machine to look at).
 */
export function processIdentity(): string {
  return `${hostname()}:${process.pid}`;
}
