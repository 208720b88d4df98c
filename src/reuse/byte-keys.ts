/** Positions (row numbers in a PreviousIndex) ordered by fixed-width byte keys, without boxing. */

export function selectPositions(size: number, include: (position: number) => boolean): Uint32Array {
  let count = 0;
  for (let p = 0; p < size; p++) if (include(p)) count++;
  const positions = new Uint32Array(count);
  let next = 0;
  for (let p = 0; p < size; p++) if (include(p)) positions[next++] = p;
  return positions;
}

/**
 * Sorts positions by their `width`-byte keys. A comparator sort of a million positions made V8
 * box every element (tens of MB); the keys are hash bytes, uniformly spread, so a two-pass radix
 * sort on the first four bytes (one 4 MB scratch array) does it, and the rare runs that share
 * those four bytes are finished by insertion sort on the whole key.
 */
export function sortByBytes(positions: Uint32Array, keys: Uint8Array, width: number): Uint32Array {
  const scratch = new Uint32Array(positions.length);
  const counts = new Uint32Array(65_537);
  const digit = (p: number, byte: number): number => (keys[p * width + byte]! << 8) | keys[p * width + byte + 1]!;
  for (const [from, to, byte] of [[positions, scratch, 2], [scratch, positions, 0]] as const) {
    counts.fill(0);
    for (const p of from) counts[digit(p, byte) + 1]!++;
    for (let i = 1; i < counts.length; i++) counts[i]! += counts[i - 1]!;
    for (const p of from) to[counts[digit(p, byte)]!++] = p;
  }
  for (let i = 1; i < positions.length; i++) {
    const p = positions[i]!;
    if (digit(p, 0) !== digit(positions[i - 1]!, 0) || digit(p, 2) !== digit(positions[i - 1]!, 2)) continue;
    let j = i - 1;
    while (j >= 0 && digit(positions[j]!, 0) === digit(p, 0) && digit(positions[j]!, 2) === digit(p, 2) && compareBytes(keys, positions[j]!, p, width) > 0) {
      positions[j + 1] = positions[j]!;
      j--;
    }
    positions[j + 1] = p;
  }
  return positions;
}

/** Lowercase hex (already checked) into `target` at `offset`, `bytes` bytes, without a Buffer per row. */
export function decodeHex(hex: string, target: Uint8Array, offset: number, bytes: number): void {
  for (let i = 0; i < bytes; i++) {
    const high = hex.charCodeAt(i * 2);
    const low = hex.charCodeAt(i * 2 + 1);
    target[offset + i] = ((high > 57 ? high - 87 : high - 48) << 4) | (low > 57 ? low - 87 : low - 48);
  }
}

export function compareBytes(values: Uint8Array, a: number, b: number, width: number): number {
  for (let i = 0; i < width; i++) {
    const difference = values[a * width + i]! - values[b * width + i]!;
    if (difference !== 0) return difference;
  }
  return 0;
}

export function compareWith(values: Uint8Array, position: number, key: Uint8Array, width: number): number {
  for (let i = 0; i < width; i++) {
    const difference = values[position * width + i]! - key[i]!;
    if (difference !== 0) return difference;
  }
  return 0;
}

export function equalBytes(values: Uint8Array, position: number, key: Uint8Array, width: number): boolean {
  return compareWith(values, position, key, width) === 0;
}

/** First index of `sorted` whose entry does not compare below the key. */
export function lowerBound(sorted: Uint32Array, compareToKey: (position: number) => number): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (compareToKey(sorted[middle]!) < 0) low = middle + 1;
    else high = middle;
  }
  return low;
}
