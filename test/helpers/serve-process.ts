// `plughost serve` as a child process on 127.0.0.1 (ports picked by the OS), for the
// tests that kill or signal the whole service: SIGKILL durability and SIGTERM draining.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

export interface ServeProcess {
  child: ChildProcess;
  address: string;
  /** The admin token, when this start created it. */
  token: string | undefined;
  stderr(): string;
  /** Its stdout (the JSON log), when started with `stdout: true`; else ''. */
  stdout(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `examples: true` starts it as `npm start` does, pushing examples/ on the first start. */
export async function startServeProcess(dataDir: string, env: Record<string, string> = {}, options: { examples?: boolean; stdout?: boolean } = {}): Promise<ServeProcess> {
  const flags = ['serve', '--listen', '127.0.0.1:0', '--data', dataDir, ...(options.examples ? [] : ['--no-examples'])];
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...flags], {
    env: { ...process.env, PLUGHOST_METRICS__LISTEN: '', PLUGHOST_LOG__LEVEL: 'warn', PLUGHOST_WORKERS: '2', ...env },
    stdio: ['ignore', options.stdout ? 'pipe' : 'ignore', 'pipe'],
  });
  let err = '';
  let out = '';
  child.stderr!.on('data', (d: Buffer) => (err += d));
  child.stdout?.on('data', (d: Buffer) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  const until = Date.now() + 30_000;
  while (!/listening on (\S+)/.test(err)) {
    if (child.exitCode !== null || Date.now() > until) {
      child.kill('SIGKILL');
      throw new Error(`plughost serve did not start: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  // the token, when made, is printed right after the listening line
  await new Promise((r) => setTimeout(r, 50));
  return {
    child,
    address: /listening on (\S+)/.exec(err)![1]!,
    token: /shown once; only its hash is stored\):\s+(ph_\S+)/.exec(err)?.[1],
    stderr: () => err,
    stdout: () => out,
    exited,
  };
}
