import type { Settings } from '../../src/config.js';
import { ReuseUnavailableError } from '../../src/errors.js';
import { embeddingParameters, type JobOptions } from '../../src/job-options.js';
import { contentKey } from '../../src/reuse/content-key.js';
import { PreviousErrorIds } from '../../src/reuse/previous-errors.js';
import { PreviousIndex } from '../../src/reuse/previous-index.js';
import { resolvePreviousOutput } from '../../src/reuse/previous-output.js';
import { openStore, parseLocation } from '../../src/storage/locations.js';
import { loadS3Client } from '../../src/storage/s3-store.js';

/**
 * `embedq plan --reuse`: the same index and matching as the split step (workers/split-reuse.ts),
 * so the plan counts what the run would send. A previous output that cannot be used is reported
 * as the run would report it; the plan then counts every line.
 */
export async function openReuse(
  options: JobOptions,
  settings: Readonly<Settings>,
): Promise<{ from?: string; error?: string; reusable?: (source: string, line: number, text: string) => boolean }> {
  const s3 = options.reuse!.startsWith('s3://') ? loadS3Client(settings.s3) : undefined;
  try {
    const previous = await resolvePreviousOutput(options.reuse!, (location) => openStore(parseLocation(location), s3));
    const index = await PreviousIndex.build(previous);
    // The run reads the previous `_errors.jsonl` too with --id-field, and embeds everything if it cannot.
    if (options.idField !== undefined) await PreviousErrorIds.build(previous);
    const parameters = embeddingParameters(options);
    return { from: previous.location, reusable: (source, line, text) => index.match(source, line, contentKey(text, parameters)) !== -1 };
  } catch (error) {
    if (error instanceof ReuseUnavailableError) return { error: error.message };
    throw error;
  } finally {
    (await s3)?.destroy();
  }
}
