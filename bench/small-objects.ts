import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { listCorpus, type CorpusObject } from '../src/corpus/list-corpus.js';
import { readAhead } from '../src/corpus/read-ahead.js';
import { readCorpusLines } from '../src/corpus/read-lines.js';
import { sleep } from '../src/sleep.js';
import type { ObjectStore } from '../src/storage/object-store.js';

export interface SmallObjectsFigures {
  objects: number;
  lines: number;
  getLatencyMs: number;
  serialSeconds: number;
  readAheadSeconds: number;
}

/**
 * Scenario 9: a corpus of many small objects (a document per file), read as the split reads it,
 * one object after another (as before read-ahead) and read ahead, in the same run. Each open
 * waits `getLatencyMs` first, as an S3 GET does (the bench has no S3; a local folder answers in
 * microseconds). No workers and no emulator: only the reading is measured.
 */
export async function smallObjectsScenario(folder: string, objects: number, getLatencyMs = 30): Promise<SmallObjectsFigures> {
  const corpus = path.join(folder, `small-objects-${objects}`);
  await mkdir(corpus, { recursive: true });
  for (let index = 0; index < objects; index += 1) {
    const lines = Array.from({ length: 1 + (index % 3) }, (_, line) => `document ${index}, paragraph ${line}: about the weather and the harvest`);
    await writeFile(path.join(corpus, `doc-${String(index).padStart(6, '0')}.txt`), `${lines.join('\n')}\n`);
  }
  const read = async (ahead: boolean): Promise<{ lines: number; seconds: number }> => {
    const started = performance.now();
    const listed = withLatency(listCorpus(corpus), getLatencyMs);
    let lines = 0;
    for await (const object of ahead ? readAhead(listed) : listed) {
      for await (const line of readCorpusLines(object)) if (line.kind === 'text') lines += 1;
    }
    return { lines, seconds: (performance.now() - started) / 1000 };
  };
  const serial = await read(false);
  const ahead = await read(true);
  if (serial.lines !== ahead.lines) throw new Error(`read ahead gave ${ahead.lines} lines, serial ${serial.lines}`);
  return { objects, lines: serial.lines, getLatencyMs, serialSeconds: serial.seconds, readAheadSeconds: ahead.seconds };
}

async function* withLatency(objects: AsyncIterable<CorpusObject>, latencyMs: number): AsyncGenerator<CorpusObject> {
  for await (const object of objects) yield { ...object, store: delayedOpen(object.store, latencyMs) };
}

function delayedOpen(store: ObjectStore, latencyMs: number): ObjectStore {
  return new Proxy(store, {
    get(target, property) {
      if (property === 'open') {
        return async (key: string) => {
          await sleep(latencyMs);
          return target.open(key);
        };
      }
      const value: unknown = Reflect.get(target, property);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
