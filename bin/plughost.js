#!/usr/bin/env node
// The installed `plughost` command: the compiled code in dist/, run by plain node (no
// TypeScript loader at run time). dist/ is made by `npm run build`, which npm runs itself
// (`prepare`) after `npm ci` or `npm install` in the repository and before `npm pack`.
import { existsSync } from 'node:fs';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write(`plughost: ${main.pathname} is missing: run npm run build\n`);
  process.exit(1);
}
await import(main.href);
