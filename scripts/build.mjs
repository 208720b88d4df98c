// Builds dist/: the CLI (`bin/embedq.js` loads dist/cli.js) and the two worker threads, bundled
// with their libraries by esbuild. Type checking is `npm run typecheck` (and `npm test`'s pretest).
//
// Why a bundle rather than tsc's one file per source: every `embedq` process (each command, each
// worker, the emulator) paid ~0.4 s of CPU at start in Node's ESM and CommonJS loaders, reading and
// linking ~590 files (BullMQ alone 172, zod 99) for `embedq status`. From a few large chunks the
// same start costs about 30% less CPU. Code splitting keeps cli.ts's lazy loading: a command still loads
// only its own chunks (the dashboard's fastify, the emulator's server).
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { build } from 'esbuild';

const root = path.resolve(import.meta.dirname, '..');
const outdir = path.join(root, 'dist');

/**
 * ioredis finds its version for CLIENT SETINFO by reading `__dirname/../../package.json` at run
 * time, and an ES module bundle has no `__dirname` (Redis was told "error-fetching-version"). Left
 * in node_modules instead, its ~40 CommonJS files and their dependencies cost every process ~0.1 s
 * of CPU at start in Node's loaders (`embedq list`: 0.82 → 0.69 s, mean of six runs each). So it
 * is bundled, its version written in. Each replacement must find its text: a new ioredis that reads
 * it another way fails the build here instead of shipping a bundle that throws a ReferenceError.
 */
const ioredisVersion = JSON.parse(await readFile(path.join(root, 'node_modules/ioredis/package.json'), 'utf8')).version;
const IOREDIS_REWRITES = [
  {
    file: /ioredis[\\/]built[\\/]utils[\\/]index\.js$/,
    replace: [
      ['(0, path_1.resolve)(__dirname, "..", "..", "package.json")', 'null'],
      ['await fs_1.promises.readFile(filePath, "utf8")', JSON.stringify(JSON.stringify({ version: ioredisVersion }))],
    ],
  },
  // Only with `showFriendlyErrorStack` (embedq leaves it off): frames under this folder are cut from stacks.
  { file: /ioredis[\\/]built[\\/]Command\.js$/, replace: [['__dirname', JSON.stringify('node_modules/ioredis/built')]] },
];
const ioredisWithoutDirname = {
  name: 'ioredis-without-dirname',
  setup(build) {
    for (const { file, replace } of IOREDIS_REWRITES) {
      build.onLoad({ filter: file }, async (args) => {
        let contents = await readFile(args.path, 'utf8');
        for (const [from, to] of replace) {
          if (!contents.includes(from)) throw new Error(`${args.path} no longer contains ${from}: see ioredisWithoutDirname in scripts/build.mjs`);
          contents = contents.replaceAll(from, to);
        }
        if (contents.includes('__dirname')) throw new Error(`${args.path} still uses __dirname: see ioredisWithoutDirname in scripts/build.mjs`);
        return { contents, loader: 'js' };
      });
    }
  },
};

const result = await build({
  absWorkingDir: root,
  // One folder, no subfolders: src/threads/start-thread.ts finds a thread's file as
  // `new URL('./<name>-thread.js', import.meta.url)` beside the chunk that starts it.
  entryPoints: {
    cli: 'workers/cli.ts',
    'token-thread': 'src/tokens/token-thread.ts',
    'shard-thread': 'src/shards/shard-thread.ts',
  },
  outdir,
  chunkNames: 'chunk-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Left in node_modules: parquet-wasm reads its .wasm file beside its own module;
  // msgpackr-extract (BullMQ's optional native decoder) is a compiled addon; undici is CommonJS
  // loaded by import(), which in a split bundle keeps only its default export (`Agent` was undefined).
  external: ['parquet-wasm', 'msgpackr-extract', 'undici'],
  plugins: [ioredisWithoutDirname],
  // The CommonJS libraries in the bundle (the AWS SDK, pino, commander…) call require() for Node's
  // built-in modules, which an ES module has no binding for.
  banner: { js: "import { createRequire as __embedqCreateRequire } from 'node:module'; const require = __embedqCreateRequire(import.meta.url);" },
  logLevel: 'warning',
  // Read only with `node --enable-source-maps` (NODE_OPTIONS): stack traces then name the sources.
  sourcemap: 'linked',
  metafile: true,
});

// Chunks are named by their content and loaded lazily (a `--reuse` split, the dashboard), so a
// process started before a rebuild still needs its build's chunks: deleting dist/ first failed such
// a worker's steps with "Cannot find module chunk-…" until it restarted. The files of this build and
// the one before it stay; older ones go.
const BUILD_FILES = path.join(outdir, '.build-files.json');
const built = Object.keys(result.metafile.outputs).map((file) => path.relative(outdir, path.join(root, file)));
// Without a list (a dist/ from tsc, one file per source in subfolders, or none) only this build stays.
const before = await readFile(BUILD_FILES, 'utf8').then(JSON.parse, () => ({ current: [] }));
const keep = new Set([...built, ...before.current, path.basename(BUILD_FILES)]);
for (const file of await readdir(outdir)) if (!keep.has(file)) await rm(path.join(outdir, file), { recursive: true, force: true });
await writeFile(BUILD_FILES, JSON.stringify({ current: built }));
