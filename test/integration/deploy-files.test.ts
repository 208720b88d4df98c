import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { inject } from 'vitest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';

import { EMBED_QUEUE_NAMES, embedQueue } from '../../jobs/queues.js';
import { loadSettings } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { METRICS } from '../../src/metrics/metric-names.js';
import { DRAIN_TIMEOUT_MS } from '../../workers/commands/worker.js';
import { buildDashboard } from '../../workers/dashboard/server.js';
import { createServices, type Services } from '../../workers/services.js';
import { EMBEDQ_BIN } from '../support/fresh-build.js';

/**
 * The deployment files against the code, with no cluster: every compose, Prometheus, Grafana and
 * Kubernetes file parses, and the images, commands, flags, ports, environment variables and metric
 * names in them are ones the code has.
 */
const ROOT = path.resolve(import.meta.dirname, '../..');
const INFRA = path.join(ROOT, 'infra');
const read = (file: string): string => readFileSync(path.join(INFRA, file), 'utf8');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = any;
/** What compose's `!reset` tag stands for: the key is removed from what it merges into. */
const RESET = Symbol('!reset');
const yamlDocs = (file: string): Doc[] =>
  parseAllDocuments(read(file), { merge: true, customTags: [{ tag: '!reset', resolve: () => RESET }] }).map((document) => {
    expect(document.errors, file).toEqual([]);
    expect(document.warnings, file).toEqual([]);
    return document.toJS() as Doc;
  });

const K8S_FILES = readdirSync(path.join(INFRA, 'k8s')).filter((file) => file.endsWith('.yaml'));
const k8s: Doc[] = K8S_FILES.flatMap((file) => yamlDocs(`k8s/${file}`));
const find = (kind: string, name: string): Doc => {
  const doc = k8s.find((candidate) => candidate.kind === kind && candidate.metadata?.name === name);
  expect(doc, `${kind}/${name}`).toBeDefined();
  return doc;
};
const compose = yamlDocs('docker-compose.yml')[0];
const composeEmulator = yamlDocs('docker-compose.emulator.yml')[0];

/** `embedq <command> --help`, as the image's entrypoint would run it. */
const helpCache = new Map<string, string>();
function help(command: string): string {
  if (!helpCache.has(command)) {
    helpCache.set(command, execFileSync(process.execPath, [EMBEDQ_BIN, command, '--help'], { cwd: ROOT, encoding: 'utf8' }));
  }
  return helpCache.get(command)!;
}
/** The command exists and every `--flag` it is given is one the command declares. */
function expectValidCommand(args: string[], where: string): void {
  const [command, ...rest] = args;
  expect(help(command!), where).toContain(`Usage: embedq ${command}`);
  for (const flag of rest.filter((arg) => arg.startsWith('--'))) expect(help(command!), `${where}: ${flag}`).toContain(flag);
}
const flagValue = (args: string[], flag: string): string | undefined => args[args.indexOf(flag) + 1];

/** Every environment variable the code reads: the settings schema plus the few read elsewhere. */
const KNOWN_ENV = new Set([
  ...[...readFileSync(path.join(ROOT, 'src/config.ts'), 'utf8').matchAll(/^\s+([A-Z][A-Z0-9_]+): /gm)].map((match) => match[1]!),
  ...execFileSync('grep', ['-rhoE', 'process\\.env\\.[A-Z0-9_]+', 'workers', 'src', 'jobs'], { cwd: ROOT, encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .map((line) => line.replace('process.env.', '')),
  // Issue 9 adds it (refuse plain http to a non-loopback host unless set); the emulator overlay sets it already.
  'EMBEDQ_ALLOW_INSECURE_HTTP',
]);

describe('deployment files agree with the code', () => {
  it('compose: embedq services use the image, commands and flags the CLI has; credentials come from the environment', () => {
    const embedqServices = Object.entries(compose.services as Record<string, Doc>).filter(([, service]) => service.build);
    expect(embedqServices.map(([name]) => name).sort()).toEqual(['cli', 'dashboard', 'worker']);
    for (const [name, service] of [...embedqServices, ['emulator', composeEmulator.services.emulator] as [string, Doc]]) {
      expect(service.image, name).toBe('embedq:local');
      expect(service.build.dockerfile, name).toBe('infra/Dockerfile');
      if (service.command) expectValidCommand(service.command, `compose ${name}`);
    }
    const raw = read('docker-compose.yml');
    // The base file never points a real key at anything but DashScope; only the emulator overlay sets a base URL.
    expect(raw).not.toContain('DASHSCOPE_BASE_URL');
    expect(composeEmulator.services.worker.environment.DASHSCOPE_BASE_URL).toBe(`http://emulator:${flagValue(composeEmulator.services.emulator.command, '--port')}`);
    for (const variable of ['MINIO_ROOT_USER', 'MINIO_ROOT_PASSWORD', 'EMBEDQ_DASHBOARD_TOKEN', 'GRAFANA_ADMIN_PASSWORD']) {
      expect(raw).toContain(`\${${variable}:?`);
    }
    expect(raw).not.toMatch(/minioadmin/);
    const environments = [compose['x-embedq-env'], compose.services.dashboard.environment, composeEmulator['x-emulator-env']];
    for (const environment of environments) for (const key of Object.keys(environment)) expect(KNOWN_ENV, key).toContain(key);
    expect(Number.parseInt(compose.services.worker.stop_grace_period, 10)).toBeGreaterThan(DRAIN_TIMEOUT_MS / 1000);
  });

  it('compose: the dashboard port, the Prometheus target, Redis persistence and the Grafana provisioning line up', () => {
    const port = flagValue(compose.services.dashboard.command, '--port');
    expect(compose.services.dashboard.ports).toEqual([`127.0.0.1:${port}:${port}`]);
    const prometheus = yamlDocs('prometheus/prometheus.yml')[0];
    const scrape = prometheus.scrape_configs[0];
    expect(scrape.static_configs[0].targets).toEqual([`dashboard:${port}`]);
    expect(scrape.metrics_path).toBe('/metrics');
    expect(scrape.authorization.credentials_file).toBe('/run/secrets/dashboard_token');
    expect(compose.secrets.dashboard_token.environment).toBe('EMBEDQ_DASHBOARD_TOKEN');
    for (const conf of [read('redis/redis.conf'), find('ConfigMap', 'embedq-redis-config').data['redis.conf']]) {
      expect(conf).toMatch(/^maxmemory-policy noeviction$/m);
      expect(conf).toMatch(/^appendonly yes$/m);
    }
    // With a container memory limit, maxmemory sits below it: noeviction's refused writes
    // (REDIS_FULL) only happen at a maxmemory, and without one the container was OOM-killed instead.
    const redisPod = find('StatefulSet', 'embedq-redis').spec.template.spec.containers[0];
    const limitMb = Number.parseInt(redisPod.resources.limits.memory, 10) * (redisPod.resources.limits.memory.endsWith('Gi') ? 1024 : 1);
    const maxmemoryMb = Number(/^maxmemory (\d+)mb$/m.exec(find('ConfigMap', 'embedq-redis-config').data['redis.conf'])?.[1]);
    expect(maxmemoryMb).toBeGreaterThan(0);
    expect(maxmemoryMb).toBeLessThanOrEqual(limitMb * 0.8);
    const datasource = yamlDocs('grafana/provisioning/datasources/prometheus.yml')[0].datasources[0];
    const dashboards = yamlDocs('grafana/provisioning/dashboards/embedq.yml')[0].providers[0];
    expect(compose.services.grafana.volumes).toContain(`./grafana/embedq.json:${dashboards.options.path}/embedq.json:ro`);
    const grafana = JSON.parse(read('grafana/embedq.json')) as { panels: Array<{ datasource: { uid: string } }> };
    for (const panel of grafana.panels) expect(panel.datasource.uid).toBe(datasource.uid);
  });

  it('compose: every embedq service, alone and with the emulator overlay, gets an environment the program accepts', () => {
    // As compose does: the overlay's environment merges into the base's key by key, then
    // ${VAR:-default} takes its default and ${VAR:?message} the operator's value (a stand-in here).
    const interpolate = (value: string): string =>
      value.replace(/\$\{([A-Z0-9_]+):([-?])([^}]*)\}/g, (_whole, _name: string, kind: string, rest: string) => (kind === '-' ? rest : 'set-by-the-operator'));
    const environmentOf = (...layers: Array<Record<string, unknown> | undefined>): NodeJS.ProcessEnv =>
      Object.fromEntries(
        Object.entries(Object.assign({}, ...layers) as Record<string, unknown>)
          .filter(([, value]) => value !== RESET)
          .map(([key, value]) => [key, interpolate(String(value))]),
      );
    for (const name of ['worker', 'dashboard', 'cli']) {
      const base = compose.services[name].environment;
      const overlaid = environmentOf(base, composeEmulator.services[name]?.environment);
      // The dashboard needs no API key (k8s runs it without one); the worker and the CLI do, and the
      // base file leaves DASHSCOPE_API_KEY to the operator's shell.
      expect(() => loadSettings(environmentOf(base, { DASHSCOPE_API_KEY: 'sk-operator' })), `${name}`).not.toThrow();
      expect(() => loadSettings(overlaid), `${name} with the emulator overlay`).not.toThrow();
      expect(loadSettings(overlaid).dashscope.baseUrl, name).toBe('http://emulator:8089');
    }
  });

  it('k8s: images, commands, ports, probes, env, grace period and resources', () => {
    const worker = find('Deployment', 'embedq-worker');
    const dashboard = find('Deployment', 'embedq-dashboard');
    const service = find('Service', 'embedq-dashboard');
    for (const deployment of [worker, dashboard]) {
      const container = deployment.spec.template.spec.containers[0];
      expect(container.image.split('/').at(-1).split(':')[0]).toBe('embedq');
      expectValidCommand(container.args, deployment.metadata.name);
      for (const entry of container.env ?? []) expect(KNOWN_ENV, entry.name).toContain(entry.name);
      expect(container.resources.requests.memory).toBeDefined();
      expect(container.resources.limits.memory).toBeDefined();
      expect(deployment.spec.selector.matchLabels).toEqual(deployment.spec.template.metadata.labels);
    }
    expect(worker.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(DRAIN_TIMEOUT_MS / 1000);
    const mebibytes = (value: string): number => Number.parseInt(value, 10) * (value.endsWith('Gi') ? 1024 : 1);
    const workerResources = worker.spec.template.spec.containers[0].resources;
    // The README's measured peak RSS (the bench's MB are MiB) is up to 300.0 at the defaults and
    // 284.0 at dimension 2048 (257.4 and 253.8 since commands load lazily), and up to 340.2
    // reindexing with --reuse (330 by hand at dimension 1024 since the reindex streams): the
    // request covers the first with room, the limit the reindex.
    expect(mebibytes(workerResources.requests.memory)).toBeGreaterThanOrEqual(320);
    expect(mebibytes(workerResources.limits.memory)).toBeGreaterThanOrEqual(341);
    expect(mebibytes(workerResources.limits.memory)).toBeGreaterThan(mebibytes(workerResources.requests.memory));
    const container = dashboard.spec.template.spec.containers[0];
    const port = Number(flagValue(container.args, '--port'));
    expect(container.ports[0].containerPort).toBe(port);
    // Not /healthz, which is 503 while Redis is away: the page must stay up and say so.
    expect(container.readinessProbe.httpGet.path).toBe('/livez');
    expect(container.livenessProbe.httpGet.path).toBe('/livez');
    expect(service.spec.selector).toEqual(dashboard.spec.template.metadata.labels);
    expect(service.spec.ports[0].targetPort).toBe(container.ports[0].name);
    for (const key of Object.keys(find('ConfigMap', 'embedq-config').data)) expect(KNOWN_ENV, key).toContain(key);
    const secret = yamlDocs('k8s/secret.example.yaml')[0];
    for (const key of Object.keys(secret.stringData)) expect(KNOWN_ENV, key).toContain(key);
    expect(find('ConfigMap', 'embedq-config').data.REDIS_URL).toContain(`${find('StatefulSet', 'embedq-redis').metadata.name}-0.${find('Service', 'embedq-redis').metadata.name}`);
  });

  it('every metric name in Grafana, Prometheus and k8s files is one the code exposes, and Grafana shows them all', () => {
    const names = new Set(Object.values(METRICS).map((metric) => metric.name));
    const files = ['grafana/embedq.json', 'prometheus/prometheus.yml', ...K8S_FILES.map((file) => `k8s/${file}`)];
    for (const file of files) {
      for (const [used] of read(file).matchAll(/embedq_[a-z_]+/g)) {
        expect(names, `${file}: ${used}`).toContain(used.replace(/_(bucket|sum|count)$/, ''));
      }
    }
    const grafana = read('grafana/embedq.json');
    for (const name of names) expect(grafana, name).toContain(name);
  });

  describe('KEDA', () => {
    let services: Services;
    beforeAll(() => {
      const settings = loadSettings({ REDIS_URL: inject('redisUrl'), EMBEDQ_REDIS_PREFIX: 'deployfiles', DASHSCOPE_BASE_URL: 'http://127.0.0.1:1' });
      services = createServices(settings, createLogger({ level: 'silent' }));
    });
    afterAll(() => services.close());

    it('scales workers on the embed backlog the dashboard reports, through metrics-api with the token', async () => {
      const scaled = find('ScaledObject', 'embedq-worker');
      expect(scaled.spec.scaleTargetRef.name).toBe('embedq-worker');
      const trigger = scaled.spec.triggers[0];
      expect(['metrics-api', 'prometheus']).toContain(trigger.type);
      expect(scaled.spec.triggers.map((candidate: Doc) => candidate.type)).not.toContain('redis');
      const service = find('Service', 'embedq-dashboard');
      const url = new URL(trigger.metadata.url);
      expect(url.host).toBe(`${service.metadata.name}.${service.metadata.namespace}.svc:${service.spec.ports[0].port}`);
      const auth = find('TriggerAuthentication', trigger.authenticationRef.name);
      expect(auth.spec.secretTargetRef[0]).toMatchObject({ parameter: 'token', key: 'EMBEDQ_DASHBOARD_TOKEN' });
      expect(trigger.metadata.authMode).toBe('bearer');
      // The value KEDA reads is really there in the dashboard's answer, and it is the backlog of
      // every model's embed queue (nothing takes these steps: no worker runs here).
      for (const name of EMBED_QUEUE_NAMES) await services.queues[name].obliterate({ force: true });
      await services.queues[embedQueue('text-embedding-v4')].add('embed-batch', {}, { delay: 60_000 });
      await services.queues[embedQueue('text-embedding-v4')].add('embed-batch', {}, { priority: 3 });
      await services.queues[embedQueue('text-embedding-v3')].add('embed-batch', {});
      const { app } = await buildDashboard(services, { host: '127.0.0.1', token: 't' });
      const response = await app.inject({ method: 'GET', url: url.pathname, headers: { authorization: 'Bearer t' } });
      await app.close();
      expect(response.statusCode).toBe(200);
      const body = response.json() as Record<string, Record<string, number>>;
      const value = (trigger.metadata.valueLocation as string).split('.').reduce<Doc>((node, key) => node?.[key], body);
      expect(typeof value).toBe('number');
      expect(value).toBe(3);
      expect(body['embed-v4']).toMatchObject({ delayed: 1, prioritized: 1, backlog: 2 });
      expect(body['embed-v3']).toMatchObject({ waiting: 1, backlog: 1 });
      expect(body.embed).toMatchObject({ waiting: 1, prioritized: 1, delayed: 1, active: 0, backlog: 3 });
    });
  });
});
