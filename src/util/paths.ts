// Files the service reads from its own package (examples/, the compiled workers), found
// from where this module is: src/util/ when run from the sources (tests, tsx), or
// dist/src/util/ when run compiled (`npm start`, an installed package).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The package's directory: the nearest one above this module with a package.json (dist/ has none). */
export const PACKAGE_ROOT = findPackageRoot(dirname(fileURLToPath(import.meta.url)));

function findPackageRoot(from: string): string {
  for (let dir = from; ; ) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${from}`);
    dir = up;
  }
}

const checked = new Map<string, URL>();

/**
 * The URL to start a worker thread from: `specifier` (the worker module, `.js`, as an
 * import would name it) relative to `from` (the spawning module's import.meta.url).
 *
 * Compiled (dist/), that is the .js file next to the spawning module. Run from the sources
 * (the tests, bench and scripts load src/*.ts through tsx), it is the compiled worker in
 * dist/ instead: Node 20 runs no loader such as tsx inside worker threads, so a worker
 * cannot load .ts there (Node 22.18+ could strip types itself, but plughost supports 20.19
 * too, and one mechanism serves every version). `npm run build` makes dist/ (`npm test`
 * runs it first); a missing or older compiled worker is an error rather than a worker
 * that silently runs other code than the sources under test.
 */
export function workerUrl(specifier: string, from: string): URL {
  const url = new URL(specifier, from);
  if (!from.endsWith('.ts')) return url;
  const key = url.href;
  let compiled = checked.get(key);
  if (!compiled) {
    compiled = compiledWorker(fileURLToPath(url));
    checked.set(key, compiled);
  }
  return compiled;
}

/** The compiled counterpart in dist/ of a worker under src/ (its path with .js), checked to be no older than its sources. */
function compiledWorker(jsPath: string): URL {
  const source = jsPath.replace(/\.js$/, '.ts');
  const compiledOf = (ts: string) => join(PACKAGE_ROOT, 'dist', relative(PACKAGE_ROOT, ts)).replace(/\.ts$/, '.js');
  const show = (p: string) => relative(PACKAGE_ROOT, p);
  const entry = compiledOf(source);
  if (!existsSync(entry)) throw new Error(`${show(entry)} is missing: run npm run build (worker threads run the compiled code, also when the sources run through tsx)`);
  // the worker's own sources: it and what it imports from the package, transitively
  const seen = new Set<string>();
  const queue = [source];
  while (queue.length > 0) {
    const ts = queue.pop()!;
    if (seen.has(ts) || !existsSync(ts)) continue;
    seen.add(ts);
    const out = compiledOf(ts);
    if (!existsSync(out) || statSync(out).mtimeMs < statSync(ts).mtimeMs) {
      throw new Error(`${show(out)} is older than ${show(ts)} (or missing): run npm run build (worker threads run the compiled code, also when the sources run through tsx)`);
    }
    for (const m of readFileSync(ts, 'utf8').matchAll(/^\s*(?:import|export)\s[^'"]*?['"](\.\.?\/[^'"]+)\.js['"]/gm)) {
      if (!/^\s*(?:import|export)\s+type\s/.test(m[0])) queue.push(join(dirname(ts), `${m[1]}.ts`));
    }
  }
  return pathToFileURL(entry);
}
