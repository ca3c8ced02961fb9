// Where the time of a call goes, per thread, on the hot path:
//
//   npm run bench -- --profile [--seconds 2] [--grpc] [--top 15] [--interval 100] [--keep DIR]
//
// Runs bench/profile-target.ts in a child `node --cpu-prof` (V8's sampling profiler, one
// .cpuprofile per thread: the main thread and each runtime worker), which drives timed
// phases of echo calls: sequential and 16 in flight through the Runtime API, and with
// --grpc also unary Invoke (c=16) and one Stream (64 outstanding) against an in-process
// service. Then, for each phase and each thread busy in it: sampled ms, busy ms (not idle),
// busy µs per call, where it went by area (our code, node internals, packages, wasm, GC),
// and the top functions by self time with file:line, % of the thread's busy time and µs
// per call. --seconds is per phase (the whole run is about 2-3x that plus start-up for the
// runtime phases, twice that with --grpc); --interval is the sampling interval in µs;
// --keep copies the .cpuprofile files to DIR (open them in Chrome DevTools). The child
// is killed if it overruns; the temporary directory is always removed.
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SourceMap } from 'node:module';
import type { Phase, TargetReport } from './profile-target.js';

interface CallFrame {
  functionName: string;
  /** '0' for V8 builtins and native (C++) functions. */
  scriptId: string | number;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame; children?: number[] }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const target = fileURLToPath(new URL('./profile-target.ts', import.meta.url));

/** A file: URL as a short path: repo-relative, or `pkg/...` inside node_modules. */
function shortUrl(url: string): string {
  if (!url) return '';
  let path = url;
  if (url.startsWith('file://')) {
    try {
      path = fileURLToPath(url);
    } catch {
      return url;
    }
    const nm = path.lastIndexOf('/node_modules/');
    if (nm >= 0) return path.slice(nm + '/node_modules/'.length);
    return relative(repoRoot, path);
  }
  return path;
}

const isNative = (f: CallFrame) => !f.url && (f.scriptId === '0' || f.scriptId === 0 || f.scriptId === undefined);

/** The part of the system a frame belongs to, for the by-area line. */
function area(f: CallFrame): string {
  const n = f.functionName;
  if (n === '(garbage collector)') return 'GC';
  if (n === '(program)') return '(program: VM/native)';
  if (n === '(idle)') return '(idle)';
  if (f.url.startsWith('wasm://')) return 'wasm guest';
  if (f.url.startsWith('node:')) return 'node internals';
  if (!f.url) return isNative(f) ? 'native (builtins, C++)' : "eval'd JS (no url: jco glue)";
  const s = shortUrl(f.url);
  if (f.url.startsWith('file://') && f.url.includes('/node_modules/')) {
    const parts = s.split('/');
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  const dir = s.split('/').slice(0, 2).join('/');
  return dir.endsWith('.ts') || dir.endsWith('.js') ? s : `${dir}/`;
}

interface Thread {
  file: string;
  tid: number;
  label: string;
  profile: CpuProfile;
  /** Per sample: its node, timestamp (µs) and weight (µs until the next sample). */
  at: Float64Array;
  weight: Float64Array;
  frameOf: Map<number, CallFrame>;
}

function loadThread(dir: string, file: string): Thread {
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile;
  // CPU.<date>.<time>.<pid>.<threadId>.<seq>.cpuprofile
  const tid = Number(file.split('.')[4] ?? NaN);
  const frameOf = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
  const n = profile.samples.length;
  const at = new Float64Array(n);
  const weight = new Float64Array(n);
  let t = profile.startTime;
  for (let i = 0; i < n; i++) at[i] = t += profile.timeDeltas[i] ?? 0;
  for (let i = 0; i < n; i++) weight[i] = Math.max(0, (i + 1 < n ? at[i + 1]! : profile.endTime) - at[i]!);
  // what the thread runs: its first script of our own (or a package's), by top-level frames
  const scripts = profile.nodes.map((x) => x.callFrame).filter((f) => f.url.startsWith('file://') && f.functionName === '');
  const entry = scripts.find((f) => !f.url.includes('/node_modules/')) ?? scripts[0];
  const label = tid === 0 ? 'main thread' : `thread ${tid}${entry ? ` (${shortUrl(entry.url)})` : ''}`;
  return { file, tid, label, profile, at, weight, frameOf };
}

interface Row {
  frame: CallFrame;
  us: number;
}

function analyse(th: Thread, p: Phase) {
  const byFn = new Map<string, Row>();
  const byArea = new Map<string, number>();
  let sampled = 0;
  let idle = 0;
  for (let i = 0; i < th.at.length; i++) {
    const t = th.at[i]!;
    if (t < p.startUs || t >= p.endUs) continue;
    const w = th.weight[i]!;
    const f = th.frameOf.get(th.profile.samples[i]!)!;
    sampled += w;
    if (f.functionName === '(idle)') {
      idle += w;
      continue;
    }
    const key = `${f.functionName}\0${f.scriptId}\0${f.url}\0${f.lineNumber}\0${f.columnNumber}`;
    const row = byFn.get(key) ?? { frame: f, us: 0 };
    row.us += w;
    byFn.set(key, row);
    const a = area(f);
    byArea.set(a, (byArea.get(a) ?? 0) + w);
  }
  return { sampled, idle, busy: sampled - idle, byFn, byArea };
}

const fmt = (x: number, digits = 1) => x.toFixed(digits);
const pad = (s: string, n: number) => (s.length >= n ? s : ' '.repeat(n - s.length) + s);

/** Source maps of the main thread's TypeScript (tsx's output is one line per file). */
let sourceMaps = new Map<string, SourceMap>();

function where(f: CallFrame): string {
  // callFrame line and column numbers are 0-based
  if (!f.url) return isNative(f) ? '' : `(eval'd script ${f.scriptId}:${f.lineNumber + 1})`;
  const map = sourceMaps.get(f.url);
  if (map) {
    const e = map.findEntry(f.lineNumber, f.columnNumber) as { originalLine?: number; originalSource?: string };
    if (e.originalLine !== undefined) return `${shortUrl(e.originalSource ?? f.url)}:${e.originalLine + 1}`;
    return `${shortUrl(f.url)}:?`;
  }
  return `${shortUrl(f.url)}:${f.lineNumber + 1}`;
}

function report(threads: Thread[], phases: Phase[], top: number): string[] {
  const out: string[] = [];
  for (const p of phases) {
    const ms = (p.endUs - p.startUs) / 1000;
    out.push('', `== ${p.name}: ${p.calls.toLocaleString('en-US')} calls in ${fmt(ms, 0)} ms (${fmt((ms * 1000) / Math.max(1, p.calls), 2)} µs wall per call)${p.errors ? `, ${p.errors} ERRORS (first: ${p.firstError})` : ''}`);
    for (const th of threads) {
      const a = analyse(th, p);
      if (a.sampled === 0) continue;
      const perCall = (us: number) => (p.calls ? us / p.calls : NaN);
      if (a.busy < a.sampled * 0.01) {
        out.push(`-- ${th.label}: idle (${fmt(a.sampled / 1000, 0)} ms sampled, ${fmt(a.busy / 1000)} ms busy)`);
        continue;
      }
      out.push(
        `-- ${th.label}: ${fmt(a.sampled / 1000, 0)} ms sampled, ${fmt(a.busy / 1000, 0)} ms busy (${fmt((100 * a.busy) / a.sampled, 0)}%), ${fmt(perCall(a.busy), 2)} µs busy per call`,
      );
      const areas = [...a.byArea].sort((x, y) => y[1] - x[1]).slice(0, 8);
      out.push(`   by area: ${areas.map(([name, us]) => `${name} ${fmt((100 * us) / a.busy, 0)}%`).join(', ')}`);
      out.push(`   ${pad('self ms', 8)} ${pad('% busy', 6)} ${pad('µs/call', 8)}  function  (file:line)`);
      const rows = [...a.byFn.values()].sort((x, y) => y.us - x.us).slice(0, top);
      for (const r of rows) {
        const name = r.frame.functionName || '(anonymous)';
        const loc = where(r.frame);
        out.push(`   ${pad(fmt(r.us / 1000), 8)} ${pad(fmt((100 * r.us) / a.busy), 6)} ${pad(fmt(perCall(r.us), 2), 8)}  ${name}${loc ? `  ${loc}` : ''}`);
      }
    }
  }
  return out;
}

/** Runs the target under the profiler and prints the report; returns an exit code. */
export async function profile(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: 'string', default: '2' },
      grpc: { type: 'boolean', default: false },
      top: { type: 'string', default: '15' },
      interval: { type: 'string', default: '100' },
      keep: { type: 'string' },
    },
  });
  const seconds = Number(values.seconds);
  const top = Number(values.top);
  const interval = Number(values.interval);
  if (!(seconds > 0 && seconds <= 60) || !(top > 0) || !(interval >= 10)) throw new Error('--seconds must be in (0, 60], --top > 0, --interval >= 10 (µs)');

  const dir = mkdtempSync(join(tmpdir(), 'plughost-profile-'));
  const out = join(dir, 'phases.json');
  try {
    console.error(`profiling (${seconds} s per phase, sampling every ${interval} µs${values.grpc ? ', with gRPC' : ''})...`);
    const child = spawn(
      process.execPath,
      [`--cpu-prof`, `--cpu-prof-dir=${dir}`, `--cpu-prof-interval=${interval}`, '--import', 'tsx', target, out, String(seconds), ...(values.grpc ? ['--grpc'] : [])],
      { cwd: repoRoot, stdio: ['ignore', 'inherit', 'inherit'] },
    );
    const budgetMs = (seconds * (values.grpc ? 6 : 3) + 90) * 1000;
    const killer = setTimeout(() => {
      console.error(`profile target overran ${budgetMs / 1000} s: killing it`);
      child.kill('SIGKILL');
    }, budgetMs);
    const forward = () => child.kill('SIGTERM');
    process.once('SIGINT', forward);
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (c, signal) => resolve(signal ? null : c));
    }).finally(() => {
      clearTimeout(killer);
      process.off('SIGINT', forward);
    });
    if (code !== 0) {
      console.error(`profile target failed (exit ${code ?? 'by signal'})`);
      return 1;
    }

    const { pid, phases, sourceMaps: maps } = JSON.parse(readFileSync(out, 'utf8')) as TargetReport;
    sourceMaps = new Map();
    for (const [url, payload] of Object.entries(maps)) {
      try {
        sourceMaps.set(url, new SourceMap(payload as ConstructorParameters<typeof SourceMap>[0]));
      } catch {
        // unmapped: positions stay tsx's
      }
    }
    const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
    if (values.keep) {
      mkdirSync(values.keep, { recursive: true });
      for (const f of files) copyFileSync(join(dir, f), join(values.keep, f));
      console.error(`profiles kept in ${values.keep}`);
    }
    const threads = files
      .filter((f) => f.split('.')[3] === String(pid))
      .map((f) => loadThread(dir, f))
      .sort((a, b) => a.tid - b.tid);
    const lines = [
      `CPU profile of ${threads.length} threads (${threads.map((t) => t.label).join('; ')}), sampled every ${interval} µs.`,
      'Per phase and thread: sampled = wall time the thread was profiled in the phase; busy = not idle;',
      '% busy and µs/call are of the thread\'s busy time (self time: in that function itself, not its callees).',
      ...report(threads, phases, top),
    ];
    if (lines.some((l) => / __name /.test(l))) lines.push('', '__name: esbuild\'s keepNames helper, which tsx wraps around named functions and classes as they are created (a cost of running under tsx).');
    console.log(lines.join('\n'));
    return phases.some((p) => p.errors > 0) ? 1 : 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) process.exitCode = await profile(process.argv.slice(2));
