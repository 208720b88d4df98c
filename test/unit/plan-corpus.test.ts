import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { planCorpus } from '../../src/corpus/plan-corpus.js';
import { parseJobOptions } from '../../src/job-options.js';
import { loadTokenizer } from '../../src/tokens/count-tokens.js';
import { ZSTD_SHORT } from '../support/compressed-fixtures.js';

describe('embedq plan', () => {
  let folder: string;
  beforeAll(async () => {
    folder = await mkdtemp(path.join(tmpdir(), 'embedq-plan-'));
    // 25 lines: 2 blank, 1 invalid UTF-8 → 22 texts; shard-rows 12 splits them 11 + 11 → 2 + 2 requests.
    const lines: Buffer[] = [];
    for (let index = 0; index < 25; index += 1) {
      if (index === 3 || index === 17) lines.push(Buffer.from('  \n'));
      else if (index === 9) lines.push(Buffer.from([0xc3, 0x28, 0x0a]));
      else lines.push(Buffer.from(`hello world number ${index}\n`));
    }
    await writeFile(path.join(folder, 'a.txt'), Buffer.concat(lines));
  });
  afterAll(() => rm(folder, { recursive: true, force: true }));

  it('counts lines, requests (never across a shard), exact tokens, cost and time at quota', async () => {
    const options = parseJobOptions({ input: path.join(folder, 'a.txt'), output: 'unused', shardRows: 12 });
    const plan = await planCorpus(options, { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, { exactTokens: true });
    expect(plan).toMatchObject({ objects: 1, lines: 25, blank: 2, invalid: 1, tooLong: 0, exactTokens: true });
    // Rows 0-11 hold 10 texts (row 3 blank, row 9 invalid): 1 request; rows 12-23: 11 texts: 2; row 24: 1.
    expect(plan.requests).toBe(4);
    // Exactly the 22 text lines, counted with the Qwen tokenizer (digits are one token each), as
    // billed: v4 adds an end token to each text (the plan was 22 under the run's tokens), v3 none.
    const tokenizer = await loadTokenizer();
    const texts = Array.from({ length: 25 }, (_, index) => index).filter((index) => ![3, 9, 17].includes(index));
    const bpe = texts.reduce((sum, index) => sum + tokenizer.countTokens(`hello world number ${index}`), 0);
    expect(plan.tokens).toBe(bpe + 22);
    const v3 = await planCorpus(parseJobOptions({ input: path.join(folder, 'a.txt'), output: 'unused', shardRows: 12, model: 'text-embedding-v3', dimension: 512 }), { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, { exactTokens: true });
    expect(v3.tokens).toBe(bpe);
    expect(plan.minutesAtQuota).toBeCloseTo(4 / 60, 5);
    // At $0.07 per million tokens, to a millionth of a dollar (it was rounded to 4 places: 0).
    expect(plan.estimatedCostUsd).toBe(Math.round(plan.tokens * 0.07) / 1e6);
    expect(plan.estimatedCostUsd).toBeGreaterThan(0);
    const estimate = await planCorpus(options, { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, {});
    expect(estimate.exactTokens).toBe(false);
    expect(estimate.tokens).toBeGreaterThanOrEqual(plan.tokens);
  });

  it('warns that --id-field finds no id when the input has no JSON Lines object (plain-text lines have none)', async () => {
    const text = await planCorpus(parseJobOptions({ input: path.join(folder, 'a.txt'), output: 'unused', idField: 'id' }), { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, {});
    expect(text.warnings).toEqual([
      '--id-field id: the input has no JSON Lines object (.jsonl, .ndjson, .json), so each line is read as plain text: embedded whole, with no id (no line is classified and the delta lists no id); give --format jsonl if the files are JSON Lines under other names',
    ]);
    // A --text-field other than the default asks for JSON Lines too: the raw line was embedded without a word.
    const field = await planCorpus(parseJobOptions({ input: path.join(folder, 'a.txt'), output: 'unused', textField: 'content' }), { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, {});
    expect(field.warnings).toEqual([
      '--text-field content: the input has no JSON Lines object (.jsonl, .ndjson, .json), so each line is read as plain text: embedded whole, with no id; give --format jsonl if the files are JSON Lines under other names',
    ]);
    const file = path.join(folder, 'docs.jsonl');
    await writeFile(file, '{"id": "x", "text": "hello"}\n');
    expect((await planCorpus(parseJobOptions({ input: file, output: 'unused', idField: 'id' }), { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, {})).warnings).toEqual([]);
    expect((await planCorpus(parseJobOptions({ input: path.join(folder, 'a.txt'), output: 'unused' }), { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, {})).warnings).toEqual([]);
  });

  it('warns that the run will fail when no line can be read (every line lacks the text field, or is no JSON)', async () => {
    const file = path.join(folder, 'no-text.jsonl');
    await writeFile(file, Array.from({ length: 30 }, (_, index) => JSON.stringify({ doc_id: index, content: `doc ${index}` })).join('\n'));
    const plan = await planCorpus(parseJobOptions({ input: file, output: 'unused' }), { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, {});
    expect(plan).toMatchObject({ lines: 30, invalid: 30, requests: 0 });
    expect(plan.warnings).toEqual([
      `the run will fail with MISSING_TEXT_FIELD: no line has the text field "text": check --text-field, or --format for a text file (all 30 lines were refused; the first: ${file}:1: field "text" is missing (the line has fields "doc_id", "content"))`,
    ]);
    // One readable line: no warning.
    await writeFile(file, `${JSON.stringify({ text: 'one' })}\n{"content": "x"}\n`);
    expect((await planCorpus(parseJobOptions({ input: file, output: 'unused' }), { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, {})).warnings).toEqual([]);
  });

  it('finds a line over 8,192 tokens as the run does, also without --exact (the estimate under-counts digits)', async () => {
    // 9,000 × "1 ": ~6,000 tokens by the estimate, 18,000 by the Qwen tokenizer; the run truncates it.
    const file = path.join(folder, 'long.txt');
    await writeFile(file, `short line
${'1 '.repeat(9_000)}
another short line
`);
    const options = parseJobOptions({ input: file, output: 'unused' });
    const quick = await planCorpus(options, { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, {});
    expect(quick).toMatchObject({ lines: 3, tooLong: 1, requests: 1 });
    const exact = await planCorpus(options, { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, { exactTokens: true });
    expect(exact).toMatchObject({ lines: 3, tooLong: 1 });
    // The long line counts as what is sent: its first 8,191 tokens, 8,192 with the one v4 adds (as every line).
    const tokenizer = await loadTokenizer();
    expect(exact.tokens).toBe(8_192 + tokenizer.countTokens('short line') + 1 + tokenizer.countTokens('another short line') + 1);
    // With --long-lines error the run records it as TEXT_TOO_LONG and sends nothing: no tokens, no slot.
    const refusing = parseJobOptions({ input: file, output: 'unused', longLines: 'error' });
    const refused = await planCorpus(refusing, { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, { exactTokens: true });
    expect(refused).toMatchObject({ lines: 3, tooLong: 1, requests: 1 });
    expect(refused.tokens).toBe(tokenizer.countTokens('short line') + 1 + tokenizer.countTokens('another short line') + 1);
    // Nor does it take a batch slot: the long line and 10 short ones are one request of 10, not two.
    const slots = path.join(folder, 'long-first.txt');
    await writeFile(slots, `${'1 '.repeat(9_000)}\n${'short line\n'.repeat(10)}`);
    const slotsPlan = await planCorpus(parseJobOptions({ input: slots, output: 'unused', longLines: 'error' }), { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, {});
    expect(slotsPlan).toMatchObject({ lines: 11, tooLong: 1, requests: 1 });
  });

  it('counts a compressed object it cannot read (zstd) as the run does: one invalid line, no tokens, no requests', async () => {
    const file = path.join(folder, 'c.txt.zst');
    await writeFile(file, ZSTD_SHORT);
    const plan = await planCorpus(parseJobOptions({ input: file, output: 'unused' }), { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, {});
    expect(plan).toMatchObject({ objects: 1, lines: 1, blank: 0, invalid: 1, tokens: 0, requests: 0 });
  });

  it("estimates the Redis a job's queued lines take at most (the open shards holding the most text), and warns when it is large", async () => {
    // Shards of 10 rows of 100, 1,000, 3,000 and 100 bytes (the last 5 rows): the 2 consecutive shards holding the most are the middle ones.
    const sizes = [...Array(10).fill(100), ...Array(10).fill(1_000), ...Array(10).fill(3_000), ...Array(5).fill(100)] as number[];
    const file = path.join(folder, 'sizes.txt');
    await writeFile(file, sizes.map((size) => 'a'.repeat(size)).join('\n'));
    const asRedisKeepsIt = (size: number): number => Math.ceil((size + 200) * 1.25);
    const plan = await planCorpus(parseJobOptions({ input: file, output: 'unused', shardRows: 10 }), { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, { maxOpenShards: 2 });
    expect(plan.queuedTextBytes).toBe(10 * asRedisKeepsIt(1_000) + 10 * asRedisKeepsIt(3_000));
    expect(plan.warnings).toEqual([]);
    const three = await planCorpus(parseJobOptions({ input: file, output: 'unused', shardRows: 10 }), { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, { maxOpenShards: 3 });
    expect(three.queuedTextBytes).toBe(10 * asRedisKeepsIt(100) + 10 * asRedisKeepsIt(1_000) + 10 * asRedisKeepsIt(3_000));

    // 14,000 lines of 8,000 bytes fit in the two open shards of 10,000 at the defaults: ~140 MB of Redis.
    // The README's bound counted the vectors only, and a long-document corpus took 7× what it said.
    const documents = path.join(folder, 'documents.txt');
    await writeFile(documents, `${'word '.repeat(1_600)}\n`.repeat(14_000));
    const large = await planCorpus(parseJobOptions({ input: documents, output: 'unused' }), { requestsPerMinute: 60, tokensPerMinute: 1_000_000 }, {});
    expect(large.queuedTextBytes).toBe(14_000 * asRedisKeepsIt(8_000));
    expect(large.warnings).toEqual([
      "the job's queued lines will take up to ~137 MB of Redis (the text of 2 shards of 10,000 lines, EMBEDQ_MAX_OPEN_SHARDS × --shard-rows), besides its vectors; lower --shard-rows for a smaller Redis",
    ]);
    await rm(documents);
  });
});
