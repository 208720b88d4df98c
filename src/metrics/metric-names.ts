/**
 * Every Prometheus metric embedq exposes, in one place: the dashboard's `/metrics`, the worker-side
 * recorder, the Grafana dashboard (infra/grafana/embedq.json) and the KEDA trigger name them from
 * here, and test/integration/deploy-files.test.ts checks those files against this list.
 */
export interface MetricDefinition {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  labels: readonly string[];
  /** Histogram bucket upper bounds (seconds). */
  buckets?: readonly number[];
  /**
   * A counter's label sets known in advance, exposed as 0 until counted, so rate() and increase()
   * see a series' first increments (Default: the one series of a counter without labels).
   */
  series?: readonly Record<string, string>[];
}

const define = <const T extends Record<string, MetricDefinition>>(definitions: T): T => definitions;

export const METRICS = define({
  lines: {
    name: 'embedq_lines_total',
    help: 'Input lines by outcome: embedded (as each batch is stored), failed and blank (as each shard is written).',
    type: 'counter',
    labels: ['outcome'],
    series: [{ outcome: 'embedded' }, { outcome: 'failed' }, { outcome: 'blank' }],
  },
  tokens: { name: 'embedq_tokens_total', help: 'Tokens DashScope billed (usage.total_tokens).', type: 'counter', labels: [] },
  requests: {
    name: 'embedq_requests_total',
    help: 'DashScope requests by outcome (ok, rate_limited, rejected, unavailable, account, invalid, aborted by a cancel or a stopping worker, other) and HTTP status (none for network errors and aborted requests).',
    type: 'counter',
    labels: ['outcome', 'status'],
    // The status of other outcomes is not known in advance.
    series: [
      { outcome: 'ok', status: '200' },
      { outcome: 'rate_limited', status: '429' },
    ],
  },
  requestDuration: {
    name: 'embedq_request_duration_seconds',
    help: 'DashScope request latency (rate-gate waits excluded), every outcome.',
    type: 'histogram',
    labels: [],
    buckets: [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30, 60],
  },
  shardWriteDuration: {
    name: 'embedq_shard_write_duration_seconds',
    help: 'Time to encode and store one shard file.',
    type: 'histogram',
    labels: [],
    buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80],
  },
  queueJobs: {
    name: 'embedq_queue_jobs',
    help: 'BullMQ jobs per queue (split, embed-v4, embed-v3, write, schedule, and embed: the legacy queue older workers hand steps back to) and state (waiting, prioritized, delayed, active).',
    type: 'gauge',
    labels: ['queue', 'state'],
  },
  embedBacklog: {
    name: 'embedq_embed_backlog',
    help: 'Embed jobs not yet started (waiting + prioritized + delayed): what KEDA scales workers on.',
    type: 'gauge',
    labels: [],
  },
  corpusJobs: { name: 'embedq_corpus_jobs', help: 'Corpus jobs by state: every queued and running one, the ended ones among the newest 1,000.', type: 'gauge', labels: ['state'] },
  rateConfigured: {
    name: 'embedq_rate_configured_per_minute',
    help: 'Configured account limit per model (unit: requests or tokens per minute).',
    type: 'gauge',
    labels: ['model', 'unit'],
  },
  rateLearned: {
    name: 'embedq_rate_learned_limit_per_minute',
    help: 'The limit the rate gate learned from the provider, per model and unit (absent until learned).',
    type: 'gauge',
    labels: ['model', 'unit'],
  },
  rateInForce: {
    name: 'embedq_rate_in_force_per_minute',
    help: 'The rate the gate lets through now, per model and unit.',
    type: 'gauge',
    labels: ['model', 'unit'],
  },
  workers: { name: 'embedq_workers', help: 'Worker processes that reported in the last 20 s.', type: 'gauge', labels: [] },
  redisUsed: { name: 'embedq_redis_memory_used_bytes', help: "Redis's used_memory (on a cluster, the fullest primary's).", type: 'gauge', labels: [] },
  redisMax: {
    name: 'embedq_redis_maxmemory_bytes',
    help: "Redis's maxmemory (0: no limit). At it, under noeviction, Redis refuses writes and no job makes progress.",
    type: 'gauge',
    labels: [],
  },
});

export type MetricKey = keyof typeof METRICS;

/** The BullMQ queue states that count as backlog (KEDA's redis list scaler sees only `wait`). */
export const BACKLOG_STATES = ['waiting', 'prioritized', 'delayed'] as const;
export const QUEUE_DEPTH_STATES = [...BACKLOG_STATES, 'active'] as const;
