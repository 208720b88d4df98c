/**
 * The error family. Every error says whether retrying can help (`retryable`) and carries a
 * stable `code` that dashboards, alerts, `_errors.jsonl` and the README key on.
 */
export abstract class EmbedqError extends Error {
  abstract readonly code: string;
  abstract readonly retryable: boolean;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** What DashScope said about a failed request, kept for logs and error records. */
export interface ProviderFailure {
  /** HTTP status, or undefined for network errors and timeouts. */
  status?: number | undefined;
  /** DashScope's code (`Throttling.RateQuota`, `InvalidApiKey`, ...) or the compatible-mode `error.code`. */
  providerCode?: string | undefined;
  requestId?: string | undefined;
}

export type RateLimitKind = 'requests' | 'tokens' | 'burst' | 'other';

/** 429 throttling: waiting helps. `kind` tells which limit (RPM/RPS, TPM/TPS, burst). */
export class ProviderRateLimitedError extends EmbedqError {
  readonly code = 'PROVIDER_RATE_LIMITED';
  readonly retryable = true;
  constructor(
    message: string,
    readonly kind: RateLimitKind,
    readonly failure: ProviderFailure,
    /** From a `Retry-After` header, if the server sent one (DashScope documents none). */
    readonly retryAfterMs?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** 5xx, timeouts, resets, refused connections: retry with backoff. */
export class ProviderUnavailableError extends EmbedqError {
  readonly code = 'PROVIDER_UNAVAILABLE';
  readonly retryable = true;
  constructor(
    message: string,
    readonly failure: ProviderFailure,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * 400 for the request's content (InvalidParameter on an input, a text too long, an empty text):
 * retrying the same request cannot help; splitting the batch can isolate the bad line.
 */
export class ProviderRejectedError extends EmbedqError {
  readonly code: string = 'PROVIDER_REJECTED';
  readonly retryable = false;
  constructor(
    message: string,
    readonly failure: ProviderFailure,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** 400 DataInspectionFailed: the content moderation refused an input. */
export class ContentRejectedError extends ProviderRejectedError {
  override readonly code = 'CONTENT_REJECTED';
}

/**
 * The account or the request setup is wrong (InvalidApiKey, Arrearage, AccessDenied, FreeTierOnly,
 * ModelNotFound, billing 429s, a parameter every request shares): no request can succeed, so the
 * corpus job stops at once instead of burning every batch.
 */
export class ProviderAccountError extends EmbedqError {
  readonly code = 'PROVIDER_ACCOUNT';
  readonly retryable = false;
  constructor(
    message: string,
    readonly failure: ProviderFailure,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The client refused to send a request that breaks a documented limit (the caller's bug). */
export class RequestInvalidError extends EmbedqError {
  readonly code = 'REQUEST_INVALID';
  readonly retryable = false;
}

/**
 * Why a corpus line cannot be embedded. `INVALID_GZIP`: the object's gzip data is corrupt from
 * this line on; it is recorded once, at the first line that could not be read, and the rest of
 * the object is not read.
 */
export type InputLineErrorCode = 'INVALID_UTF8' | 'INVALID_JSON' | 'MISSING_TEXT_FIELD' | 'TEXT_TOO_LONG' | 'INVALID_GZIP';

/** A corpus line that cannot be embedded: names the source, the 0-based line and the reason. */
export class InputLineError extends EmbedqError {
  readonly retryable = false;
  constructor(
    readonly code: InputLineErrorCode,
    readonly source: string,
    readonly line: number,
    reason: string,
  ) {
    super(`${source}:${line + 1}: ${reason}`);
  }
}

/** Object-store trouble that may pass (S3 5xx, SlowDown, network). */
export class StorageUnavailableError extends EmbedqError {
  readonly code = 'STORAGE_UNAVAILABLE';
  readonly retryable = true;
}

/** Object-store trouble that will not pass (no such bucket or key, access denied). */
export class StorageError extends EmbedqError {
  readonly code = 'STORAGE_ERROR';
  readonly retryable = false;
}

/**
 * The corpus is not what this job read before: an object was rewritten, removed, or added among
 * those already read. A split that starts again (its worker stopped or died, Redis restarted,
 * `embedq retry`) goes through the corpus from the start and skips the shards already written by
 * row number; over a changed corpus the rows would shift, and lines be lost or doubled. The job fails.
 */
export class InputChangedError extends EmbedqError {
  readonly code = 'INPUT_CHANGED';
  readonly retryable = false;
}

/**
 * No line of the input could be read (no line has the text field, none is JSON, none is text):
 * the job would "complete" with every line in `_errors.jsonl` (the input-side twin of
 * PROVIDER_REJECTED_SYSTEMATIC), so it fails with the code its lines were refused with.
 */
export class UnreadableInputError extends EmbedqError {
  readonly retryable = false;
  constructor(
    readonly code: InputLineErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A gzip member's data is damaged inside (its checksum or length check failed, or its deflate
 * data broke off mid-stream) after lines inflated from it were passed on: zlib checks a member
 * only at its end, so those lines may be corrupt, and once queued they cannot be taken back. The
 * job fails rather than complete with them.
 */
export class CorruptInputError extends EmbedqError {
  readonly code = 'INVALID_GZIP';
  readonly retryable = false;
}

/** Invalid configuration or options: every problem is listed in the message. */
export class ConfigError extends EmbedqError {
  readonly code = 'CONFIG_INVALID';
  readonly retryable = false;
}

/**
 * `--reuse --id-field`: the input has no line at all while the previous output has ids, so its
 * delta would delete every one of them. An empty corpus is far more often an export that failed
 * than one emptied on purpose; a store fed such a delta lost every vector. The job fails instead.
 */
export class InputEmptyError extends EmbedqError {
  readonly code = 'INPUT_EMPTY';
  readonly retryable = false;
}

/**
 * `--reuse`: the previous output is missing, unfinished, corrupt or made with other settings.
 * Not fatal to the run: it embeds everything and says why (manifest, log, `schedule list`).
 */
export class ReuseUnavailableError extends EmbedqError {
  readonly code = 'REUSE_UNAVAILABLE';
  readonly retryable = false;
}
