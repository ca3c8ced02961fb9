// Builds the example plugins: source -> core wasm module (AssemblyScript's asc, or Debian's
// clang + wasi-libc) -> component of world plughost:plugin/plugin (jco's componentEmbed and
// componentNew, offline). Writes examples/<name>/plugin.wasm, which is committed so that
// `npm start` can push the examples on a machine with no toolchain.
//   npx tsx examples/build.ts [name...]     build (all when none named)
//   npx tsx examples/build.ts --check       rebuild in a temp dir; fail if a committed plugin.wasm differs
import { componentEmbed, componentNew, parse, print } from '@bytecodealliance/jco';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const witSource = readFileSync(join(here, '../wit/plugin.wit'), 'utf8');

interface Example {
  name: string;
  /** Core module bytes from the sources in `dir`, built in `tmp`. */
  core(dir: string, tmp: string): Uint8Array;
}

/** AssemblyScript cannot export names with '-': its exports are renamed to the ABI's (`list_functions` to `list-functions`). */
const AS_RENAMES: Record<string, string> = {
  list_functions: 'list-functions',
  function_args: 'function-args',
  function_returns: 'function-returns',
  function_writeable: 'function-writeable',
  function_comment: 'function-comment',
  invoke_batch: 'invoke-batch',
  cabi_post_invoke_batch: 'cabi_post_invoke-batch',
};

const EXAMPLES: Example[] = [
  {
    name: 'text-as',
    core(dir, tmp) {
      const out = join(tmp, 'core.wasm');
      const asc = join(here, '../node_modules/.bin/asc');
      // no `env.abort` import (a failed assertion traps instead), incremental GC for managed
      // strings; the canonical ABI's buffers live in unmanaged memory (heap.alloc)
      execFileSync(asc, [join(dir, 'plugin.ts'), '-o', out, '-O3', '--runtime', 'incremental', '--use', 'abort=', '--noAssert'], { stdio: 'inherit' });
      return readFileSync(out);
    },
  },
  {
    name: 'stats-c',
    core(dir, tmp) {
      const out = join(tmp, 'core.wasm');
      execFileSync('clang', [
        '--target=wasm32-wasi', '--sysroot=/usr', '-O2', '-nostartfiles', '-Wl,--no-entry', '-Wl,--strip-all',
        '-Wall', '-Wextra', '-Werror', '-o', out, join(dir, 'plugin.c'),
      ], { stdio: 'inherit' });
      return readFileSync(out);
    },
  },
];

async function componentize(core: Uint8Array, renames: Record<string, string>): Promise<Uint8Array> {
  let module = core;
  if (Object.keys(renames).length) {
    let wat = await print(core);
    for (const [from, to] of Object.entries(renames)) wat = wat.replaceAll(`(export "${from}"`, `(export "${to}"`);
    module = await parse(wat);
  }
  const embedded = await componentEmbed({ binary: module, witSource, world: 'plugin', stringEncoding: 'utf8' });
  return componentNew(embedded);
}

export async function buildExample(name: string): Promise<Uint8Array> {
  const ex = EXAMPLES.find((e) => e.name === name);
  if (!ex) throw new Error(`no example ${name}; there are: ${EXAMPLES.map((e) => e.name).join(', ')}`);
  const tmp = mkdtempSync(join(tmpdir(), `plughost-${name}-`));
  try {
    return await componentize(ex.core(join(here, name), tmp), name.endsWith('-as') ? AS_RENAMES : {});
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const check = process.argv.includes('--check');
  const names = process.argv.slice(2).filter((a) => !a.startsWith('--'));
  let stale = 0;
  for (const ex of EXAMPLES.filter((e) => names.length === 0 || names.includes(e.name))) {
    const bytes = await buildExample(ex.name);
    const target = join(here, ex.name, 'plugin.wasm');
    if (check) {
      const same = existsSync(target) && Buffer.compare(readFileSync(target), bytes) === 0;
      console.log(`${ex.name}: ${same ? 'plugin.wasm is what the sources build' : 'STALE: plugin.wasm differs from what the sources build'}`);
      if (!same) stale++;
    } else {
      writeFileSync(target, bytes);
      console.log(`${ex.name}: wrote ${target} (${bytes.length} bytes)`);
    }
  }
  if (stale) {
    console.error(`${stale} example(s) stale: run 'npm run examples' and commit the result`);
    process.exit(1);
  }
}
