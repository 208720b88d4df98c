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
  // Redis URLs may carry a password (`redis://:secret@host:6379`).
  'redisUrl',
  '*.redisUrl',
  'redisClusterNodes',
  '*.redisClusterNodes',
];

export interface LoggerSettings {
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
}

/** The process's root logger: pino JSON on stdout (or `destination`), with secrets redacted. */
export function createLogger(settings: LoggerSettings, destination?: pino.DestinationStream): Logger {
  const options: LoggerOptions = {
    level: settings.level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { pid: process.pid },
  };
  return destination ? pino(options, destination) : pino(options);
}
