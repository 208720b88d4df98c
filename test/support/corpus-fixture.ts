import { gzipSync } from 'node:zlib';

/**
 * A small corpus with every kind of line the pipeline must handle, and what must become of each:
 * text (embedded), blank (skipped, numbered), error (input problem), rejected (moderation), truncated.
 */
export type ExpectedKind = 'text' | 'blank' | 'error' | 'rejected' | 'truncated';

export interface ExpectedLine {
  row: number;
  source: string;
  line: number;
  kind: ExpectedKind;
  /** The text as read (before truncation). */
  text?: string;
  id?: string | null;
  /** Error code for `error` and `rejected`. */
  code?: string;
}

export interface FixtureObject {
  key: string;
  body: Buffer;
}

export const MODERATION_WORD = 'EMBEDQ_BLOCKED';

const WORDS = ['river', 'market', 'compiler', 'garden', 'orbit', 'harvest', 'violin', 'glacier', 'ledger', 'lantern', 'football', 'recipe'];
const CHINESE = ['春眠不觉晓', '处处闻啼鸟', '夜来风雨声', '花落知多少', '床前明月光', '疑是地上霜'];

function sentence(index: number): string {
  if (index % 5 === 3) return `${CHINESE[index % CHINESE.length]}，第${index}行：数据工程与向量检索。`;
  const a = WORDS[index % WORDS.length]!;
  const b = WORDS[(index * 7 + 3) % WORDS.length]!;
  return `Line ${index}: the ${a} near the ${b} was described in report number ${index * 13}.`;
}

/**
 * Builds the objects (put them under `prefix`) and the expected fate of every line, rows numbered
 * over the objects in key order. `textLines` sets the size of the plain-text object.
 */
export function buildCorpus(prefix: string, options: { textLines: number; longLine?: string; otherEncodings?: boolean }): { objects: FixtureObject[]; expected: ExpectedLine[] } {
  const expected: ExpectedLine[] = [];
  let row = 0;
  const objects: FixtureObject[] = [];

  // a.txt: plain text with blank lines, Chinese, one line the moderation refuses.
  {
    const source = `${prefix}a.txt`;
    const lines: string[] = [];
    for (let index = 0; index < options.textLines; index += 1) {
      let text = sentence(index);
      let kind: ExpectedKind = 'text';
      if (index % 17 === 5) {
        text = index % 2 === 0 ? '' : '   \t ';
        kind = 'blank';
      } else if (index === 11) {
        text = `This line carries ${MODERATION_WORD} and the provider refuses it.`;
        kind = 'rejected';
      }
      lines.push(text);
      expected.push({ row: row++, source, line: index, kind, ...(kind === 'blank' ? {} : { text, id: null }), ...(kind === 'rejected' ? { code: 'CONTENT_REJECTED' } : {}) });
    }
    objects.push({ key: source, body: Buffer.from(`${lines.join('\r\n')}\n`) });
  }

  // b.jsonl.gz: JSON Lines, gzip, with ids, a malformed line, a missing field, a blank text.
  {
    const source = `${prefix}b.jsonl.gz`;
    const lines: string[] = [];
    const add = (raw: string, fate: Omit<ExpectedLine, 'row' | 'source' | 'line'>): void => {
      expected.push({ row: row++, source, line: lines.length, ...fate });
      lines.push(raw);
    };
    for (let index = 0; index < 23; index += 1) {
      const text = `${sentence(index + 1000)} (json ${index})`;
      add(JSON.stringify({ id: `b-${index}`, text, lang: 'en' }), { kind: 'text', text, id: `b-${index}` });
      if (index === 4) add('{"id": "b-bad", "text": "unterminated', { kind: 'error', code: 'INVALID_JSON' });
      if (index === 9) add(JSON.stringify({ id: 'b-nobody', body: 'no text field' }), { kind: 'error', code: 'MISSING_TEXT_FIELD' });
      if (index === 14) add(JSON.stringify({ id: 'b-blank', text: '   ' }), { kind: 'blank' });
      if (index === 18) add(JSON.stringify({ id: 77, text: '数字编号的文本' }), { kind: 'text', text: '数字编号的文本', id: '77' });
    }
    objects.push({ key: source, body: gzipSync(Buffer.from(lines.join('\n'))) });
  }

  // c.txt: invalid UTF-8 in the middle, and (optionally) a line over 8,192 tokens.
  {
    const source = `${prefix}c.txt`;
    const parts: Buffer[] = [];
    const texts = ['Before the broken line.', null, 'After the broken line, still embedded.', 'Last line without a newline'];
    if (options.longLine) texts.splice(3, 0, options.longLine);
    texts.forEach((text, index) => {
      if (text === null) {
        parts.push(Buffer.from([0x62, 0x61, 0x64, 0xff, 0xfe, 0x0a]));
        expected.push({ row: row++, source, line: index, kind: 'error', code: 'INVALID_UTF8' });
      } else {
        parts.push(Buffer.from(index === texts.length - 1 ? text : `${text}\n`));
        expected.push({ row: row++, source, line: index, kind: text === options.longLine ? 'truncated' : 'text', text, id: null });
      }
    });
    objects.push({ key: source, body: Buffer.concat(parts) });
  }

  if (options.otherEncodings) {
    // d-mac.txt: lines that end in a lone \r (classic Mac); e-windows.txt: UTF-16LE with its mark and \r\n.
    const mac = [sentence(2000), '', sentence(2001), CHINESE[0]!];
    const windows = [`${sentence(2002)} é`, '😀 嵌入', '', sentence(2003)];
    for (const [name, texts, body] of [
      ['d-mac.txt', mac, Buffer.from(`${mac.join('\r')}\r`)],
      ['e-windows.txt', windows, Buffer.concat([Buffer.of(0xff, 0xfe), Buffer.from(`${windows.join('\r\n')}\r\n`, 'utf16le')])],
    ] as const) {
      const source = `${prefix}${name}`;
      texts.forEach((text, line) => expected.push({ row: row++, source, line, ...(text === '' ? { kind: 'blank' } : { kind: 'text', text, id: null }) }));
      objects.push({ key: source, body });
    }
  }
  return { objects, expected };
}
