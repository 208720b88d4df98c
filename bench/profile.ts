import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  hitCount?: number;
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Where a worker's main-thread CPU time goes, by broad category, from V8's `--cpu-prof` output. */
const CATEGORIES: Array<[string, (frame: ProfileNode['callFrame']) => boolean]> = [
  ['response decode (parse-json-bytes, JSON.parse)', ({ url, functionName }) => url.includes('decode-response') || url.includes('parse-json-bytes') || functionName === 'parse'],
  ['HTTP client (undici)', ({ url }) => url.includes('undici') || url.includes('node:internal/deps') || url.includes('dashscope-client')],
  ['Redis client (ioredis)', ({ url }) => url.includes('node_modules/ioredis') || url.includes('redis-parser') || url.includes('node_modules/denque')],
  ['BullMQ', ({ url }) => url.includes('node_modules/bullmq') || url.includes('msgpackr')],
  ['batch codec (Float32 bytes)', ({ url }) => url.includes('batch-codec')],
  ['shard encoding (Arrow, Parquet)', ({ url }) => url.includes('apache-arrow') || url.includes('parquet-wasm') || url.includes('encode-shard') || url.includes('wasm://')],
  ['garbage collection', ({ functionName }) => functionName === '(garbage collector)'],
  ['embedq (other)', ({ url }) => /\/(src|jobs|workers)\//.test(url)],
  ['Node internals, other', () => true],
];

export interface ProfileSummary {
  categories: Array<{ category: string; ms: number; share: number }>;
  /** The busiest functions by self time, `name (file)`. */
  top: Array<{ name: string; ms: number }>;
}

export function summarizeProfile(folder: string): ProfileSummary {
  // `--cpu-prof` writes one profile per thread, `CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile`;
  // thread 0 is the main thread (the shard thread has its own file).
  const file = readdirSync(folder).find((name) => /\.\d+\.0\.\d+\.cpuprofile$/.test(name));
  if (!file) return { categories: [], top: [] };
  const profile = JSON.parse(readFileSync(path.join(folder, file), 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const totals = new Map<string, number>();
  const functions = new Map<string, number>();
  let busy = 0;
  profile.samples.forEach((id, index) => {
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)' || frame.functionName === '(program)') return;
    const micros = profile.timeDeltas[index] ?? 0;
    const category = CATEGORIES.find(([, matches]) => matches(frame))![0];
    totals.set(category, (totals.get(category) ?? 0) + micros);
    const name = `${frame.functionName || '(anonymous)'} (${frame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(src|jobs|workers)\//, '$1/')})`;
    functions.set(name, (functions.get(name) ?? 0) + micros);
    busy += micros;
  });
  return {
    categories: [...totals.entries()]
      .map(([category, micros]) => ({ category, ms: Math.round(micros / 1000), share: micros / busy }))
      .sort((a, b) => b.ms - a.ms),
    top: [...functions.entries()]
      .map(([name, micros]) => ({ name, ms: Math.round(micros / 1000) }))
      .sort((a, b) => b.ms - a.ms)
      .slice(0, 25),
  };
}
