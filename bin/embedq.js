#!/usr/bin/env node
// Runs the compiled CLI (built by `npm install`/`npm ci` through the "prepare" script).
import '../dist/workers/cli.js';
