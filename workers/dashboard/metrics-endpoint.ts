import { Registry } from 'prom-client';

import { METRICS, QUEUE_DEPTH_STATES, type MetricDefinition } from '../../src/metrics/metric-names.js';
import { metricField } from '../../src/metrics/metrics-keys.js';
import { liveWorkers, readWorkerMetrics, type MetricSample } from '../../src/metrics/read-metrics.js';
import { readRedisMemory } from '../../src/redis/redis-memory.js';
import type { Services } from '../services.js';
import { backlogOf, DEPTH_QUEUES, embedDepth, readQueueDepths } from './snapshot.js';
import type { RateSource } from './sources.js';

interface Value {
  value: number;
  labels: Record<string, string>;
  metricName?: string;
}

/**
 * `/metrics`: the workers' counters and histograms (flushed to Redis, see MetricsRecorder) next to
 * what the dashboard reads directly at scrape time (queue depths, corpus jobs by state, rates, live
 * workers, Redis memory), then BullMQ's own `exportPrometheusMetrics` per queue (`bullmq_job_count`).
 */
export function createMetricsEndpoint(services: Services, rates: RateSource) {
  let samples: MetricSample[] = [];
  let samplesByField = new Map<string, number>();
  let direct = new Map<string, Value[]>();
  const registry = new Registry();

  const stored = (name: string, labels: Record<string, string> = {}): number => samplesByField.get(metricField(name, labels)) ?? 0;

  const fromWorkers = (metric: MetricDefinition): Value[] => {
    if (metric.type === 'histogram') {
      // The recorder writes only the buckets an observation reached (histograms have no labels),
      // but every scrape must show every bucket, ascending, then _sum and _count: a bucket that
      // first appears later starts as a new series, and rate() loses its first increments.
      const bounds = [...(metric.buckets ?? []).map(String), '+Inf'];
      return [
        ...bounds.map((le) => ({ metricName: `${metric.name}_bucket`, labels: { le }, value: stored(`${metric.name}_bucket`, { le }) })),
        { metricName: `${metric.name}_sum`, labels: {}, value: stored(`${metric.name}_sum`) },
        { metricName: `${metric.name}_count`, labels: {}, value: stored(`${metric.name}_count`) },
      ];
    }
    // Likewise a counter's known series show as 0 before anything is counted.
    const known = metric.series ?? (metric.labels.length === 0 ? [{}] : []);
    const knownFields = new Set(known.map((labels) => metricField(metric.name, labels)));
    const others = samples.filter((sample) => sample.name === metric.name && !knownFields.has(metricField(sample.name, sample.labels)));
    return [...known.map((labels) => ({ labels, value: stored(metric.name, labels) })), ...others.map(({ labels, value }) => ({ labels, value }))];
  };

  for (const metric of Object.values(METRICS) as MetricDefinition[]) {
    registry.registerMetric({
      name: metric.name,
      help: metric.help,
      type: metric.type,
      get: async () => ({ name: metric.name, help: metric.help, type: metric.type, values: direct.get(metric.name) ?? fromWorkers(metric) }),
    } as never);
  }

  async function readDirect(): Promise<Map<string, Value[]>> {
    const [depths, records, figures, workers, memory] = await Promise.all([
      readQueueDepths(services),
      services.corpora.jobs.listWithActive(1_000),
      rates.read(),
      liveWorkers(services.redis, services.settings.redisPrefix),
      readRedisMemory(services.redis),
    ]);
    const map = new Map<string, Value[]>();
    map.set(
      METRICS.queueJobs.name,
      DEPTH_QUEUES.flatMap((queue) => QUEUE_DEPTH_STATES.map((state) => ({ value: depths[queue][state], labels: { queue, state } }))),
    );
    map.set(METRICS.embedBacklog.name, [{ value: backlogOf(embedDepth(depths)), labels: {} }]);
    const states = ['queued', 'running', 'completed', 'failed', 'cancelled'];
    map.set(
      METRICS.corpusJobs.name,
      states.map((state) => ({ value: records.filter((record) => record.state === state).length, labels: { state } })),
    );
    // A unit without a figure (a limit not learned) has no series.
    const perModel = (pick: (figure: (typeof figures)[number]) => { requests: number | null; tokens: number | null } | null): Value[] =>
      figures.flatMap((figure) => {
        const value = pick(figure);
        return (['requests', 'tokens'] as const).flatMap((unit) =>
          value === null || value[unit] === null ? [] : [{ value: value[unit], labels: { model: figure.model, unit } }],
        );
      });
    map.set(METRICS.rateConfigured.name, perModel((figure) => figure.configured));
    map.set(METRICS.rateLearned.name, perModel((figure) => figure.learned));
    map.set(METRICS.rateInForce.name, perModel((figure) => figure.inForce));
    map.set(METRICS.workers.name, [{ value: workers.length, labels: {} }]);
    map.set(METRICS.redisUsed.name, [{ value: memory.usedBytes, labels: {} }]);
    map.set(METRICS.redisMax.name, [{ value: memory.maxBytes, labels: {} }]);
    return map;
  }

  return {
    contentType: registry.contentType,
    /** One scrape: reads Redis, then renders the text format. */
    async render(): Promise<string> {
      [samples, direct] = await Promise.all([readWorkerMetrics(services.redis, services.settings.redisPrefix), readDirect()]);
      samplesByField = new Map(samples.map((sample) => [metricField(sample.name, sample.labels), sample.value]));
      const bullmq = await Promise.all(DEPTH_QUEUES.map((name) => services.queues[name].exportPrometheusMetrics()));
      return `${await registry.metrics()}\n${mergeFamilies(bullmq)}`;
    },
  };
}

/**
 * BullMQ renders each queue on its own, with the same HELP/TYPE lines each time; the text format
 * wants one block per metric family, so the queues' lines are regrouped by family.
 */
export function mergeFamilies(texts: readonly string[]): string {
  const families = new Map<string, { header: string[]; samples: string[] }>();
  const family = (name: string) => {
    let entry = families.get(name);
    if (!entry) families.set(name, (entry = { header: [], samples: [] }));
    return entry;
  };
  for (let line of texts.flatMap((text) => text.split('\n'))) {
    const header = /^# (HELP|TYPE) (\S+)/.exec(line);
    if (header) {
      const entry = family(header[2]!);
      if (!entry.header.some((existing) => existing.startsWith(`# ${header[1]} `))) entry.header.push(line);
    } else if (line.trim() !== '') {
      // BullMQ writes `{queue="a", state="b"}`; strict parsers want no space after the comma.
      line = line.replace(/", /g, '",');
      family(/^[^{\s]+/.exec(line)![0]).samples.push(line);
    }
  }
  return [...families.values()].map((entry) => [...entry.header, ...entry.samples].join('\n') + '\n').join('');
}
