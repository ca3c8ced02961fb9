// Bearer tokens. Only each token's SHA-256 is stored, so the store does not let anyone call
// the service; the token itself is shown once, when it is created. Two stores: one JSON
// file in the data directory (FileTokenStore, here), or the shared PostgreSQL
// (pg-tokens.ts). The service reads either through TokenStore.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { PlughostError } from '../errors.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { Identity, type Grant } from './identity.js';

export interface StoredToken extends Grant {
  id: string;
  sha256: string;
  createdAt: number;
}

/** A token as listed: never its hash. */
export type TokenInfo = Grant & { id: string; createdAt: number };

/** What the service and the `tokens` command need of a token store. */
export interface TokenStore {
  /** The identity a presented token grants, or undefined (synchronous: from what the store last read). */
  authenticate(token: string): Identity | undefined;
  /** Adds a token; returns it in clear, the only time it is ever shown. */
  add(grant: Grant): Promise<{ id: string; token: string }>;
  /** Adds a token only if the store holds none (the admin token of a first start, once however many replicas start). */
  addFirst(grant: Grant): Promise<{ id: string; token: string } | undefined>;
  list(): Promise<TokenInfo[]>;
  remove(id: string): Promise<boolean>;
}

const KV = new Set(['none', 'read', 'write']);
const RELOAD_CHECK_MS = 1000;
export const sha256 = (token: string) => createHash('sha256').update(token).digest('hex');

/** A new token for a checked grant: the clear token and what is stored of it. */
export function newToken(grant: Grant): { token: string; stored: StoredToken } {
  if (!grant.subject) throw new PlughostError('INVALID_ARGUMENT', 'a token needs a subject');
  if (!grant.tenant) throw new PlughostError('INVALID_ARGUMENT', 'a token needs a tenant');
  if (!KV.has(grant.kv)) throw new PlughostError('INVALID_ARGUMENT', `kv access must be none, read or write, not ${JSON.stringify(grant.kv)}`);
  const token = `ph_${randomBytes(24).toString('base64url')}`;
  const { subject, tenant, admin, modules, kv } = grant;
  return { token, stored: { subject, tenant, admin, modules, kv, id: randomBytes(4).toString('hex'), sha256: sha256(token), createdAt: Date.now() } };
}

export class FileTokenStore implements TokenStore {
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
  async add(grant: Grant): Promise<{ id: string; token: string }> {
    const { token, stored } = newToken(grant);
    this.reload(); // another process may have changed the file since
    this.tokens.push(stored);
    this.save();
    return { id: stored.id, token };
  }

  async addFirst(grant: Grant): Promise<{ id: string; token: string } | undefined> {
    this.reload();
    return this.tokens.length === 0 ? this.add(grant) : undefined;
  }

  /** Tokens without their hashes. */
  async list(): Promise<TokenInfo[]> {
    this.reload();
    return this.tokens.map(({ sha256: _, ...t }) => t);
  }

  async remove(id: string): Promise<boolean> {
    this.reload();
    const before = this.tokens.length;
    this.tokens = this.tokens.filter((t) => t.id !== id);
    if (this.tokens.length === before) return false;
    this.save();
    return true;
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
