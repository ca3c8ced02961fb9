// Bearer tokens, kept in one JSON file in the data directory. Only each token's SHA-256
// is stored, so the file does not let anyone call the service; the token itself is shown
// once, when it is created.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { PlughostError } from '../errors.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { Identity, type Grant } from './identity.js';

interface StoredToken extends Grant {
  id: string;
  sha256: string;
  createdAt: number;
}

const KV = new Set(['none', 'read', 'write']);
const RELOAD_CHECK_MS = 1000;
const sha256 = (token: string) => createHash('sha256').update(token).digest('hex');

export class TokenStore {
  private tokens: StoredToken[];
  private byHash = new Map<string, Identity>();

  /** The file's mtime when last read, and when it was last looked at. */
  private mtimeMs = 0;
  private checkedAt = 0;

  constructor(private readonly path: string) {
    this.tokens = [];
    this.reload();
  }

  /** The identity a presented token grants, or undefined. */
  authenticate(token: string): Identity | undefined {
    this.reloadIfChanged();
    return this.byHash.get(sha256(token));
  }

  /**
   * `plughost tokens add|rm` edits the file while the server runs: look at its mtime at most
   * once a second, so a new token works (and a removed one stops) within a second.
   */
  private reloadIfChanged(): void {
    const now = Date.now();
    if (now - this.checkedAt < RELOAD_CHECK_MS) return;
    this.checkedAt = now;
    let mtimeMs = 0;
    try {
      mtimeMs = statSync(this.path).mtimeMs;
    } catch {
      // no file (yet): keep what we have
      return;
    }
    if (mtimeMs !== this.mtimeMs) this.reload();
  }

  private reload(): void {
    if (existsSync(this.path)) {
      this.mtimeMs = statSync(this.path).mtimeMs;
      const parsed = JSON.parse(readFileSync(this.path, 'utf8')) as { tokens?: StoredToken[] };
      if (!Array.isArray(parsed.tokens)) throw new PlughostError('INVALID_ARGUMENT', `${this.path} is not a plughost token file (no "tokens" list)`);
      this.tokens = parsed.tokens;
    }
    this.reindex();
  }

  /** Adds a token; returns it in clear, the only time it is ever shown. */
  add(grant: Grant): { id: string; token: string } {
    if (!grant.subject) throw new PlughostError('INVALID_ARGUMENT', 'a token needs a subject');
    if (!grant.tenant) throw new PlughostError('INVALID_ARGUMENT', 'a token needs a tenant');
    if (!KV.has(grant.kv)) throw new PlughostError('INVALID_ARGUMENT', `kv access must be none, read or write, not ${JSON.stringify(grant.kv)}`);
    this.reload(); // another process may have changed the file since
    const token = `ph_${randomBytes(24).toString('base64url')}`;
    const id = randomBytes(4).toString('hex');
    this.tokens.push({ ...grant, id, sha256: sha256(token), createdAt: Date.now() });
    this.save();
    return { id, token };
  }

  /** Tokens without their hashes. */
  list(): (Grant & { id: string; createdAt: number })[] {
    return this.tokens.map(({ sha256: _, ...t }) => t);
  }

  remove(id: string): boolean {
    this.reload();
    const before = this.tokens.length;
    this.tokens = this.tokens.filter((t) => t.id !== id);
    if (this.tokens.length === before) return false;
    this.save();
    return true;
  }

  get size(): number {
    return this.tokens.length;
  }

  private save(): void {
    writeFileAtomic(this.path, JSON.stringify({ tokens: this.tokens }, null, 2), 0o600);
    this.mtimeMs = statSync(this.path).mtimeMs;
    this.reindex();
  }

  private reindex(): void {
    this.byHash = new Map(this.tokens.map((t) => [t.sha256, new Identity(t)]));
  }
}

/** The grant of the admin token made on first start: everything, in tenant `default`. */
export const ADMIN_GRANT: Grant = { subject: 'admin', tenant: 'default', admin: true, modules: ['*'], kv: 'write' };
