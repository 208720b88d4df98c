#!/usr/bin/env -S node --max-semi-space-size=4
// Runs the compiled CLI (built by `npm install`/`npm ci` through the "prepare" script).
//
// The flag on the first line caps V8's young generation at two 4 MB semi-spaces (Node's default is
// 16 MB each): a worker's peak RSS is tens of MB lower at the same CPU per line (README "Bounded
// memory"). It applies when this file is run as a program (`embedq …`, `npx embedq …`, the
// container's entrypoint); `node bin/embedq.js …` must pass it itself.
import '../dist/workers/cli.js';
