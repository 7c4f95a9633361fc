// Builds dist/: the browser bundle (one ESM file, served by the binary at /sdk/mooyaho.js), the
// Node server SDK, and .d.ts files. Output is deterministic so the committed dist/ can be
// checked for staleness with `git status --porcelain dist`.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';

rmSync('dist', { recursive: true, force: true });
const common = { bundle: true, format: 'esm', target: 'es2022', legalComments: 'none', logLevel: 'warning' };
await build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/mooyaho.js', platform: 'browser' });
await build({ ...common, entryPoints: ['src/server.ts'], outfile: 'dist/server.js', platform: 'node' });
execFileSync('node_modules/.bin/tsc', ['-p', '.', '--emitDeclarationOnly'], { stdio: 'inherit' });
