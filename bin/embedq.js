#!/usr/bin/env -S MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 node --max-semi-space-size=8 --heap-growing-percent=100
// Runs the compiled CLI (built by `npm install`/`npm ci` through the "prepare" script).
//
// The first line applies when this file is run as a program (`embedq …`, `npx embedq …`, the
// container's entrypoint); `node bin/embedq.js …` must set them itself. They cut a worker's peak
// RSS (README "Bounded memory"; the bench spawns workers with them):
// - glibc's malloc keeps buffers of 128 KB and more in their own mappings, given back to the OS
//   when freed, and uses two arenas: without them freed response bodies, Redis replies and file
//   chunks stayed in the process's heap arenas (~50 MB more at the peak, same CPU);
// - V8's young generation is two 8 MB semi-spaces instead of Node's 16 MB (~30 MB less for 0-8%
//   more CPU; 4 MB saved little more and cost ~15%);
// - a full collection once the old generation has doubled since the last (V8 picks up to 4×):
//   buffers that outlived two scavenges are freed sooner (~40 MB less at the peak, ~5% more CPU,
//   in V8's concurrent-marking threads; 60% cost ~25%).
import '../dist/cli.js';
