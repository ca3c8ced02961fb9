// Bearer tokens, kept in one JSON file in the data directory. Only each token's SHA-256
// is stored, so the file does not let anyone call the service; the token itself is shown
// once, when it is created.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { PlughostError } from '../errors.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { Identity, type Grant } from './identity.js';

interface StoredToken extends Grant {
  id: string;
  sha256: string;
  createdAt: number;
}

const KV = new Set(['none', 'read', 'write']);
const sha256 = (token: string) => createHash('sha256').update(token).digest('hex');

export class TokenStore {
  private tokens: StoredToken[];
  private byHash = new Map<string, Identity>();

  constructor(private readonly path: string) {
    this.tokens = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as { tokens: StoredToken[] }).tokens : [];
    this.reindex();
  }

  /** The identity a presented token grants, or undefined. */
  authenticate(token: string): Identity | undefined {
    return this.byHash.get(sha256(token));
  }

  /** Adds a token; returns it in clear, the only time it is ever shown. */
  add(grant: Grant): { id: string; token: string } {
    if (!grant.subject) throw new PlughostError('INVALID_ARGUMENT', 'a token needs a subject');
    if (!grant.tenant) throw new PlughostError('INVALID_ARGUMENT', 'a token needs a tenant');
    if (!KV.has(grant.kv)) throw new PlughostError('INVALID_ARGUMENT', `kv access must be none, read or write, not ${JSON.stringify(grant.kv)}`);
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
    this.reindex();
  }

  private reindex(): void {
    this.byHash = new Map(this.tokens.map((t) => [t.sha256, new Identity(t)]));
  }
}

/** The grant of the admin token made on first start: everything, in tenant `default`. */
export const ADMIN_GRANT: Grant = { subject: 'admin', tenant: 'default', admin: true, modules: ['*'], kv: 'write' };
