import { describe, expect, it } from 'vitest';

import { ReuseUnavailableError } from '../../src/errors.js';
import { acquireIndexRoom } from '../../workers/split-reuse.js';

const MB = 1024 * 1024;

describe('previous-output index budget of a worker process', () => {
  it('lets one index of any size in, makes a second wait for room, and gives up when the job stops', async () => {
    const huge = await acquireIndexRoom(500 * MB, async () => true); // alone: admitted although over 64 MiB
    let secondIn = false;
    const second = acquireIndexRoom(10 * MB, async () => true).then((release) => {
      secondIn = true;
      return release;
    });
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(secondIn).toBe(false);
    huge();
    huge(); // a second release changes nothing
    const releaseSecond = await second;
    expect(secondIn).toBe(true);
    // Two small ones fit together.
    const third = await acquireIndexRoom(20 * MB, async () => true);
    // One that does not fit, for a job that stopped while it waited.
    await expect(acquireIndexRoom(60 * MB, async () => false)).rejects.toBeInstanceOf(ReuseUnavailableError);
    releaseSecond();
    third();
    const last = await acquireIndexRoom(64 * MB, async () => true);
    last();
  });
});
