// A throwaway PostgreSQL for the tests that need one: initdb into a temp dir, a server on
// 127.0.0.1 at a free port (its socket in the same dir), stopped and removed at the end.
// PostgreSQL refuses to run as root, so as root (CI, these machines) it runs as the
// `postgres` user that Debian's package creates. No PostgreSQL installed is a failure
// with the command that installs it, never a skipped test.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/** The directory of initdb and pg_ctl: pg_config's, else the newest /usr/lib/postgresql/N/bin. */
export function pgBinDir(): string {
  try {
    const dir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (existsSync(join(dir, 'initdb'))) return dir;
  } catch {
    // no pg_config: look where Debian puts the server
  }
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a)) : [];
  if (!versions[0]) throw new Error('PostgreSQL is not installed (no initdb): run `apt-get install -y postgresql` (bash .ci/run does) to run the PostgreSQL tests');
  return join(root, versions[0], 'bin');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export class PgCluster {
  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly bin: string,
    private readonly owner: { uid: number; gid: number } | undefined,
    private readonly durable: boolean,
  ) {}

  /** initdb and start; ~1 s here. `durable`: fsync on, as a production server (the bench); tests run without. */
  static async start(options: { durable?: boolean } = {}): Promise<PgCluster> {
    const bin = pgBinDir();
    const root = process.getuid?.() === 0;
    // as root, under /tmp itself: the postgres user must be able to reach the directory (a TMPDIR inside root's home would not do)
    const dir = mkdtempSync(join(root ? '/tmp' : tmpdir(), 'plughost-pg-'));
    let owner: { uid: number; gid: number } | undefined;
    if (root) {
      const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
      const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
      owner = { uid, gid };
      chownSync(dir, uid, gid);
    }
    const c = new PgCluster(dir, await freePort(), bin, owner, options.durable === true);
    c.run('initdb', ['-D', join(dir, 'data'), '-A', 'trust', '-U', 'plughost', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions']);
    c.pgCtlStart();
    return c;
  }

  private run(tool: string, args: string[]): void {
    const r = spawnSync(join(this.bin, tool), args, { cwd: this.dir, encoding: 'utf8', ...(this.owner ?? {}) });
    if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}${r.stdout}`);
  }

  /** Runs a tool without blocking this process (a plughost in it goes on serving). */
  private runAsync(tool: string, args: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(join(this.bin, tool), args, { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'], ...(this.owner ?? {}) });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d));
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${tool} ${args.join(' ')} failed (${code}): ${err}`))));
    });
  }

  private startArgs(): string[] {
    // fsync off for tests: their data need not survive the machine, only the server
    const opts = `-c listen_addresses=127.0.0.1 -p ${this.port} -k ${this.dir}${this.durable ? '' : ' -c fsync=off -c full_page_writes=off'} -c max_connections=200`;
    return ['-D', join(this.dir, 'data'), '-l', join(this.dir, 'log'), '-o', opts, '-w', '-t', '60', 'start'];
  }

  private pgCtlStart(): void {
    this.run('pg_ctl', this.startArgs());
  }

  /** Starts the stopped server again, on the same port and data. */
  restart(): Promise<void> {
    return this.runAsync('pg_ctl', this.startArgs());
  }

  /** Stops the server: `fast` rolls back open transactions and closes every connection. */
  stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    return this.runAsync('pg_ctl', ['-D', join(this.dir, 'data'), '-m', mode, '-w', '-t', '60', 'stop']);
  }

  url(db = 'postgres'): string {
    return `postgres://plughost@127.0.0.1:${this.port}/${db}`;
  }

  /** A fresh, empty database; its URL. */
  async createDatabase(name: string): Promise<string> {
    const c = new pg.Client({ connectionString: this.url() });
    await c.connect();
    try {
      await c.query(`CREATE DATABASE ${name}`);
    } finally {
      await c.end();
    }
    return this.url(name);
  }

  private destroyed = false;

  /** Stops the server (if running) and removes its files; once. Synchronous, so a process' 'exit' handler can call it. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      this.run('pg_ctl', ['-D', join(this.dir, 'data'), '-m', 'immediate', '-w', 'stop']);
    } catch {
      // already stopped
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

let counter = 0;
/** A database name unique in this process. */
export const dbName = (what: string) => `${what.replace(/[^a-z0-9_]/g, '_')}_${process.pid}_${++counter}`;

/**
 * One throwaway cluster for a test file: started by its first use (hooks may run at once),
 * stopped and removed after the file's last test. `database()` gives a fresh database.
 */
export function usePgCluster(test: { after: { always(fn: () => void | Promise<void>): void } }): { cluster(): Promise<PgCluster>; database(what?: string): Promise<string> } {
  let starting: Promise<PgCluster> | undefined;
  const cluster = () =>
    (starting ??= PgCluster.start().then((c) => {
      // a test process that dies before its after hooks still stops its server (pg_ctl daemonizes it)
      process.once('exit', () => c.destroy());
      return c;
    }));
  test.after.always(async () => {
    if (starting) (await starting.catch(() => undefined))?.destroy();
  });
  return { cluster, database: async (what = 'plughost') => (await cluster()).createDatabase(dbName(what)) };
}

/** PgDatabase options for a test: a small pool, short timeouts. */
export const testPgOptions = (url: string) => ({ url, poolSize: 8, statementTimeoutMs: 10_000, connectTimeoutMs: 5_000 });
