import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');

/** Commands whose first argument is not a key. */
const KEYLESS = new Set(['TIME']);

/**
 * A Redis Cluster routes a script by the keys it declares, and Redis documents that a script
 * must touch only those: a key name built inside Lua (`prefix .. k`) works on one server and
 * breaks (or silently misroutes) on a cluster. This reads every Lua script in src/ and jobs/ and
 * checks that each key argument of `redis.call` is `KEYS[...]`, or a name bound only to
 * `KEYS[...]`: a `local x = KEYS[...]`, or a function parameter every call site fills with one.
 */
describe('Lua scripts declare their keys', () => {
  const files = execFileSync('grep', ['-rl', 'redis.call(', 'src', 'jobs'], { cwd: ROOT, encoding: 'utf8' }).trim().split('\n');
  // Shared Lua functions are defined in one file and called from others: bindings are looked up in all.
  const everything = files.map((file) => readFileSync(path.join(ROOT, file), 'utf8')).join('\n');

  it('finds the scripts', () => {
    expect(files.length).toBeGreaterThanOrEqual(5);
  });

  for (const file of files) {
    it(file, () => {
      const source = readFileSync(path.join(ROOT, file), 'utf8');
      const calls = [...source.matchAll(/redis\.call\('([A-Z]+)',\s*([^,)]+)/g)];
      expect(calls.length).toBeGreaterThan(0);
      for (const [call, command, rawKey] of calls) {
        if (KEYLESS.has(command!)) continue;
        const key = rawKey!.trim();
        if (/^KEYS\[[^\]]+\]$/.test(key)) continue;
        expect(key, `${file}: ${call}`).toMatch(/^[A-Za-z_]\w*$/);
        expect(boundOnlyToKeys(everything, key), `${file}: ${call}: '${key}' must come from KEYS`).toBe(true);
      }
    });
  }
});

const isKeysEntry = (text: string): boolean => /^KEYS\[[^\]]+\]$/.test(text);

/** Whether every binding of `name` takes a `KEYS[...]` value, directly or through other such names. */
function boundOnlyToKeys(source: string, name: string, seen: Set<string> = new Set()): boolean {
  if (seen.has(name)) return true;
  seen.add(name);
  const fromKeys = (value: string): boolean => isKeysEntry(value) || (/^[A-Za-z_]\w*$/.test(value) && boundOnlyToKeys(source, value, seen));
  const locals = [...source.matchAll(new RegExp(`local\\s+${name}\\s*=\\s*([^\\n]+)`, 'g'))].map((match) => match[1]!.trim());
  const functions = [...source.matchAll(/local function (\w+)\(([^)]*)\)/g)]
    .map(([, fn, params]) => ({ fn: fn!, index: params!.split(',').map((param) => param.trim()).indexOf(name) }))
    .filter(({ index }) => index >= 0);
  if (locals.length === 0 && functions.length === 0) return false;
  if (!locals.every(fromKeys)) return false;
  for (const { fn, index } of functions) {
    const sites = [...source.matchAll(new RegExp(`(?<!function )\\b${fn}\\(([^)]*)\\)`, 'g'))].map((match) => match[1]!.split(',')[index]?.trim() ?? '');
    if (sites.length === 0 || !sites.every(fromKeys)) return false;
  }
  return true;
}
