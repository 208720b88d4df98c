import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';

import { writeSampleCorpus } from '../src/demo/sample-corpus.js';

/**
 * A plain-text corpus of `lines` realistic lines (the demo's multilingual sentences, two joined per
 * line, ~250 characters, numbered so no two are equal), written once per size.
 */
export async function benchCorpus(folder: string, lines: number): Promise<string> {
  const file = path.join(folder, `corpus-${lines}.txt`);
  const seed = path.join(folder, 'seed');
  const sample = await writeSampleCorpus(seed);
  const sentences: string[] = [];
  for (const name of sample.files) {
    const raw = await readFile(name);
    const text = name.endsWith('.gz') ? gunzipSync(raw).toString('utf8') : raw.toString('utf8');
    for (const line of text.split('\n').filter(Boolean)) {
      const sentence = name.endsWith('.gz') ? (JSON.parse(line) as { text: string }).text : line;
      if (sentence.trim() && sentence.length < 600) sentences.push(sentence.trim());
    }
  }
  const out: string[] = [];
  for (let index = 0; index < lines; index += 1) {
    out.push(`${sentences[index % sentences.length]} ${sentences[(index * 7 + 3) % sentences.length]} (${index})`);
  }
  await mkdir(folder, { recursive: true });
  await writeFile(file, `${out.join('\n')}\n`);
  return file;
}
