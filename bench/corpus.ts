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

/** Common English words, each one token for the Qwen tokenizer with its leading space. */
const COMMON_WORDS = 'people little should around before things number always really another through system family public school follow market across moment person rather simple social spring street strong summer taking thought toward turned united useful wanted window winter within worked writer yellow change second became during enough figure friend ground health nature office police policy'.split(' ');

/**
 * A plain-text corpus of `lines` lines of 600 common words (~600 tokens by the exact count, ~1,400
 * by embedq's estimate of a third of the characters), the same every run.
 */
export async function benchWordsCorpus(folder: string, lines: number): Promise<string> {
  const file = path.join(folder, `words-${lines}.txt`);
  let seed = 1;
  const next = (): number => (seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648) / 2_147_483_648;
  const out = Array.from({ length: lines }, (_, index) => `${index} ${Array.from({ length: 600 }, () => COMMON_WORDS[Math.floor(next() * COMMON_WORDS.length)]).join(' ')}`);
  await mkdir(folder, { recursive: true });
  await writeFile(file, `${out.join('\n')}\n`);
  return file;
}
