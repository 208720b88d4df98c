import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * Paths pino blanks out wherever they appear, so the API key and Authorization headers never
 * reach a log line even when a caller logs a whole config or request object.
 */
export const REDACT_PATHS = [
  'apiKey',
  '*.apiKey',
  '*.*.apiKey',
  'authorization',
  'Authorization',
  '*.authorization',
  '*.Authorization',
  'headers.authorization',
  '*.headers.authorization',
  '*.headers.Authorization',
  'secretAccessKey',
  '*.secretAccessKey',
  '*.*.secretAccessKey',
  '*.*.*.secretAccessKey',
  'sessionToken',
  '*.sessionToken',
  '*.*.sessionToken',
  '*.*.*.sessionToken',
  // Redis URLs may carry a password (`redis://:secret@host:6379`, `?password=secret`), as settings
  // or as the environment variables a child process is given.
  'redisUrl',
  '*.redisUrl',
  'redisClusterNodes',
  '*.redisClusterNodes',
  'REDIS_URL',
  '*.REDIS_URL',
  'REDIS_CLUSTER_NODES',
  '*.REDIS_CLUSTER_NODES',
];

export interface LoggerSettings {
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
}

/** The process's root logger: pino JSON on stdout (or `destination`), with secrets redacted. */
export function createLogger(settings: LoggerSettings, destination?: pino.DestinationStream): Logger {
  const options: LoggerOptions = {
    level: settings.level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers: { err: serializeError },
    base: { pid: process.pid },
  };
  return destination ? pino(options, destination) : pino(options);
}

/**
 * pino's error serializer, without the arguments of the Redis command an ioredis error carries:
 * they hold job payloads (corpus text) and binary options, kilobytes a line. The name stays.
 */
function serializeError(error: Error): ReturnType<typeof pino.stdSerializers.err> {
  const serialized = pino.stdSerializers.err(error);
  const command = (serialized as { command?: unknown }).command;
  if (command && typeof command === 'object' && 'args' in command) {
    (serialized as { command?: unknown }).command = { name: (command as { name?: unknown }).name };
  }
  return serialized;
}
