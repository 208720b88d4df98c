import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  /** 0-based, in the file V8 ran (a `dist/` chunk). */
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Where a worker's main-thread CPU time goes, by broad category, from V8's `--cpu-prof` output. */
const CATEGORIES: Array<[string, (frame: Pick<CallFrame, 'functionName' | 'url'>) => boolean]> = [
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
  const originalUrl = sourceMapped();
  const totals = new Map<string, number>();
  const functions = new Map<string, number>();
  let busy = 0;
  profile.samples.forEach((id, index) => {
    const ran = byId.get(id)!.callFrame;
    if (ran.functionName === '(idle)' || ran.functionName === '(program)') return;
    const frame = { functionName: ran.functionName, url: originalUrl(ran) };
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

/**
 * The source file a frame's code came from. `dist/` is an esbuild bundle, so V8 names a chunk for
 * embedq's own code and for bundled packages alike (ioredis, BullMQ, Arrow); the chunks' source
 * maps say which file each position was. Frames outside `dist/`, or in no mapped range, keep V8's url.
 */
function sourceMapped(): (frame: CallFrame) => string {
  const maps = new Map<string, { map: SourceMap; folder: string } | undefined>();
  const mapOf = (url: string) => {
    if (!maps.has(url)) {
      const file = url.startsWith('file://') ? fileURLToPath(url) : undefined;
      const mapFile = file && `${file}.map`;
      maps.set(url, mapFile && existsSync(mapFile) ? { map: new SourceMap(JSON.parse(readFileSync(mapFile, 'utf8'))), folder: path.dirname(file) } : undefined);
    }
    return maps.get(url);
  };
  return (frame) => {
    const mapped = mapOf(frame.url);
    if (!mapped) return frame.url;
    // Node 20 answers a position in no mapping with `{}`.
    const entry = mapped.map.findEntry(frame.lineNumber, frame.columnNumber) as { originalSource?: string };
    if (!entry.originalSource) return frame.url;
    const source = entry.originalSource;
    return source.startsWith('file://') ? source : pathToFileURL(path.resolve(mapped.folder, source)).href;
  };
}
