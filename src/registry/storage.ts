// Where the registry keeps module bytes and its index (records and aliases): files in the
// data directory (here), or the shared PostgreSQL (pg-storage.ts). The registry keeps the
// index in memory and asks its storage for changes; a shared storage also tells it when
// another replica changed the index (it reloads then).
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PlughostError } from '../errors.js';
import type { ModuleLimitsInput } from '../runtime/options.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { aliasOf } from './names.js';

export interface ModuleRecord {
  hash: string;
  sizeBytes: number;
  /** The KV scope of calls by hash: the name the bytes were first pushed under. */
  name: string;
  /** As the manifest asked; lowered to the server's caps when loaded. */
  limits: ModuleLimitsInput;
  pushedAt: number;
}

export interface AliasRecord {
  name: string;
  version: string;
  hash: string;
  pushedAt: number;
}

export interface Index {
  modules: Record<string, ModuleRecord>;
  aliases: Record<string, AliasRecord>;
}

export interface ModuleStorage {
  /** Other processes change it too (the registry reads it again before a change of its own). */
  readonly shared: boolean;
  /** The index as stored now. */
  load(): Promise<Index>;
  /** The index, if it can be read without waiting (files): the registry starts with it. */
  loadSync?(): Index;
  /**
   * Stores an alias, and the module's bytes and record when `module` is given, atomically.
   * ALREADY_EXISTS when the alias names other bytes (another replica pushed it meanwhile).
   */
  add(alias: AliasRecord, module?: { record: ModuleRecord; bytes: Uint8Array }): Promise<void>;
  /**
   * Removes aliases, and the module (record and bytes) when `hash` is given and no alias
   * names it any more; resolves to whether the module went.
   */
  remove(aliases: string[], hash?: string): Promise<boolean>;
  /** A stored module's bytes (NOT_FOUND once it is deleted). */
  bytes(hash: string): Promise<Uint8Array>;
}

/** The index as registry.json and each module as modules/<hex>.wasm, in one data directory. */
export class FileModuleStorage implements ModuleStorage {
  readonly shared = false;
  private readonly indexPath: string;
  private readonly modulesDir: string;
  private index: Index;

  constructor(dir: string) {
    this.modulesDir = join(dir, 'modules');
    mkdirSync(this.modulesDir, { recursive: true });
    this.indexPath = join(dir, 'registry.json');
    this.index = existsSync(this.indexPath) ? (JSON.parse(readFileSync(this.indexPath, 'utf8')) as Index) : { modules: {}, aliases: {} };
  }

  loadSync(): Index {
    return structuredClone(this.index);
  }

  async load(): Promise<Index> {
    return this.loadSync();
  }

  async add(alias: AliasRecord, module?: { record: ModuleRecord; bytes: Uint8Array }): Promise<void> {
    const next = structuredClone(this.index);
    if (module) {
      writeFileAtomic(this.fileOf(module.record.hash), module.bytes);
      next.modules[module.record.hash] = module.record;
    }
    next.aliases[aliasOf(alias.name, alias.version)] = alias;
    this.save(next);
  }

  async remove(aliases: string[], hash?: string): Promise<boolean> {
    const next = structuredClone(this.index);
    for (const a of aliases) delete next.aliases[a];
    if (hash) delete next.modules[hash];
    this.save(next);
    if (hash) rmSync(this.fileOf(hash), { force: true });
    return hash !== undefined;
  }

  async bytes(hash: string): Promise<Uint8Array> {
    if (!this.index.modules[hash]) throw new PlughostError('NOT_FOUND', `no module ${hash}`);
    return readFileSync(this.fileOf(hash));
  }

  private fileOf(hash: string): string {
    return join(this.modulesDir, `${hash.slice('sha256:'.length)}.wasm`);
  }

  private save(next: Index): void {
    writeFileAtomic(this.indexPath, JSON.stringify(next, null, 2));
    this.index = next;
  }
}
