#!/usr/bin/env -S MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 node --max-semi-space-size=8
// Runs the compiled CLI (built by `npm install`/`npm ci` through the "prepare" script).
//
// The first line applies when this file is run as a program (`embedq …`, `npx embedq …`, the
// container's entrypoint); `node bin/embedq.js …` must set them itself. They cut a worker's peak
// RSS (README "Bounded memory"; the bench spawns workers with them):
// - glibc's malloc keeps buffers of 128 KB and more in their own mappings, given back to the OS
//   when freed, and uses two arenas: without them freed response bodies, Redis replies and file
//   chunks stayed in the process's heap arenas (~50 MB more at the peak, same CPU);
// - V8's young generation is two 8 MB semi-spaces instead of Node's 16 MB (~30 MB less for ~7%
//   more CPU; 4 MB saved no more memory and cost ~15%).
import '../dist/workers/cli.js';
