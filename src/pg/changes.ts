// How a change on one replica reaches the others: every change to modules or tokens bumps
// its row in plughost_changes in the same transaction, and each replica polls that small
// table every `pollMs` and reloads what moved. Polling works on every engine that speaks
// the protocol (LISTEN/NOTIFY does not exist on all of them); the bound on propagation is
// one poll interval plus one reload.
import type pg from 'pg';
import type { PgDatabase } from './db.js';

export type ChangeKind = 'modules' | 'tokens';

/** Inside a change's transaction: tells the other replicas (they reload within their poll interval). */
export async function bumpChange(c: pg.PoolClient, what: ChangeKind): Promise<void> {
  await c.query('UPDATE plughost_changes SET version = version + 1 WHERE what = $1', [what]);
}

export class ChangePoller {
  private readonly seen = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private stopped = false;
  /** The last poll failed (the database unreachable): the next one tries again. */
  private failing = false;

  constructor(
    private readonly db: PgDatabase,
    private readonly pollMs: number,
    private readonly reload: Record<ChangeKind, () => Promise<void>>,
    /** Told once when polls start failing, and once when they work again. */
    private readonly onOutage: (e: unknown | undefined) => void = () => {},
  ) {}

  /** Reads the versions as they are now (what the caller has loaded), then polls. */
  async start(): Promise<void> {
    await this.poll(false);
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.polling = this.poll(true).finally(() => this.schedule());
    }, this.pollMs);
    this.timer.unref();
  }

  /** One look at the versions; reloads what changed since the last look. */
  async poll(reload = true): Promise<void> {
    try {
      const rows = (await this.db.query<{ what: ChangeKind; version: string }>('SELECT what, version FROM plughost_changes')).rows;
      for (const { what, version } of rows) {
        const before = this.seen.get(what);
        if (before === String(version)) continue;
        // a version never seen (the first poll failed) counts as a change
        if (reload && this.reload[what]) await this.reload[what]();
        this.seen.set(what, String(version));
      }
      if (this.failing) this.onOutage(undefined);
      this.failing = false;
    } catch (e) {
      if (!this.failing) this.onOutage(e);
      this.failing = true;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.polling;
  }
}
