// The module registry: component bytes stored content-addressed, an index of aliases
// (`name@version` -> hash) beside them, and the Runtime of each module compiled on first
// use. Versions are immutable: `name@version` always means one set of bytes until it is
// deleted. Everything survives a restart. The storage is the data directory's files, or a
// PostgreSQL that several replicas share (storage.ts): then each replica keeps the index
// in memory, reloads it when another replica changed it, and compiles a module on its
// first call there; a module deleted elsewhere is unloaded here.
import { hashOf } from '../component/load.js';
import { PlughostError, isPlughostError } from '../errors.js';
import type { RuntimeManager } from '../runtime/manager.js';
import { effectiveLimits, type ModuleLimits, type ModuleLimitsInput } from '../runtime/options.js';
import type { Runtime } from '../runtime/runtime.js';
import { aliasOf, byVersionDesc, checkName, checkVersion, parseRef } from './names.js';
import { FileModuleStorage, type AliasRecord, type Index, type ModuleStorage } from './storage.js';

export interface Manifest {
  name: string;
  version: string;
  limits?: ModuleLimitsInput;
  /** `sha256:<hex>` the pusher expects; a mismatch refuses the push. */
  expectedHash?: string;
}

/** One alias of a module, as list and describe show it. */
export interface ModuleEntry {
  hash: string;
  name: string;
  version: string;
  sizeBytes: number;
  limits: ModuleLimits;
  pushedAt: number;
}

/** What a reference resolved to: the bytes' hash and the name whose KV scope calls use. */
export interface Resolved {
  hash: string;
  name: string;
  version: string | undefined;
}

export interface RegistryOptions {
  /** Directory of the index and the module files (created if missing), when no storage is given. */
  dir?: string;
  /** Where modules are kept (default: files in `dir`); the registry does not close it. */
  storage?: ModuleStorage;
  manager: RuntimeManager;
  /** Largest module accepted, in bytes. */
  maxModuleBytes: number;
}

/** Least time between two reloads a lookup of an unknown module may cause on a shared storage. */
const MISS_RELOAD_MS = 100;

export class ModuleRegistry {
  private readonly storage: ModuleStorage;
  private index: Index;
  /** A reload in progress (single-flight), and when the last one finished. */
  private reloading: Promise<void> | undefined;
  /** When the last reload began (performance.now()). */
  private reloadStartedAt = -Infinity;
  /** Counts this replica's own changes: a reload that began before one must not put back the index it replaced. */
  private generation = 0;
  /** Bytes being read from the storage for a first load, by hash (single-flight). */
  private readonly fetching = new Map<string, Promise<Runtime>>();
  /**
   * Bare-name resolution, name -> its newest alias: filled as names are resolved, emptied
   * whenever the index changes (save). Only names that resolve are kept, so refs that name
   * nothing cannot grow it.
   */
  private readonly newest = new Map<string, AliasRecord>();
  /** Serializes changes to the index. */
  private changing: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: RegistryOptions) {
    if (!options.storage && !options.dir) throw new Error('a registry needs a storage or a directory');
    this.storage = options.storage ?? new FileModuleStorage(options.dir!);
    this.index = this.storage.loadSync?.() ?? { modules: {}, aliases: {} };
  }

  /**
   * Reads the index from the storage again (another replica changed it): new aliases
   * resolve, and modules deleted elsewhere stop resolving and are unloaded here once their
   * calls in flight are done. Concurrent callers share one read.
   */
  reload(): Promise<void> {
    this.reloading ??= (async () => {
      this.reloadStartedAt = performance.now();
      const generation = this.generation;
      try {
        const next = await this.storage.load();
        // a push or delete here meanwhile installed an index newer than this read
        if (this.generation !== generation) return;
        const gone = Object.keys(this.index.modules).filter((h) => !next.modules[h]);
        this.index = next;
        this.newest.clear();
        // not waited for: a deleted module's calls in flight may run long, and the poller (tokens too) must go on
        // (unload only waits and frees: it does not fail; the manager's close waits for what is left)
        for (const h of gone) void this.options.manager.unload(h).catch(() => {});
      } finally {
        this.reloading = undefined;
      }
    })();
    return this.reloading;
  }

  /**
   * resolve(), and on a shared storage a reference this replica does not know yet makes it
   * reload first (a module pushed on another replica is served here at once).
   */
  async resolveLatest(ref: string): Promise<Resolved> {
    try {
      return this.resolve(ref);
    } catch (e) {
      if (!this.storage.shared || !isPlughostError(e, 'NOT_FOUND')) throw e;
      // wait for a read of the index that began after this lookup (one that began before may
      // predate the push being looked for); reads a miss causes are MISS_RELOAD_MS apart, so
      // names nobody pushed cannot flood the database
      const asked = performance.now();
      while (this.reloadStartedAt < asked) {
        if (this.reloading) await this.reloading;
        else {
          const wait = this.reloadStartedAt + MISS_RELOAD_MS - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          else await this.reload();
        }
      }
      if (this.reloading) await this.reloading;
      return this.resolve(ref);
    }
  }

  get maxModuleBytes(): number {
    return this.options.maxModuleBytes;
  }

  /** Verifies, compiles and stores a module under `name@version`. Pushing the same bytes again changes nothing. */
  push(manifest: Manifest, bytes: Uint8Array): Promise<{ entry: ModuleEntry; created: boolean }> {
    const name = checkName(manifest.name);
    const version = checkVersion(manifest.version);
    this.checkSize(bytes.length);
    const hash = hashOf(bytes);
    if (manifest.expectedHash && manifest.expectedHash !== hash) {
      throw new PlughostError('INVALID_ARGUMENT', `the bytes hash to ${hash}, not the expected ${manifest.expectedHash}: the upload is corrupt or incomplete`);
    }
    const limits = manifest.limits ?? {};
    return this.change(async () => {
      if (this.storage.shared) await this.reload();
      const alias = aliasOf(name, version);
      const existing = this.index.aliases[alias];
      if (existing && existing.hash !== hash) {
        throw new PlughostError('ALREADY_EXISTS', `${alias} is already ${existing.hash}; versions are immutable: push a new version, or delete ${alias} first`);
      }
      const known = this.index.modules[hash];
      if (known && JSON.stringify(known.limits) !== JSON.stringify(limits)) {
        throw new PlughostError('FAILED_PRECONDITION', `${hash} is registered with limits ${JSON.stringify(known.limits)}; the same bytes cannot have other limits ${JSON.stringify(limits)}: delete it first`);
      }
      // compiling proves the bytes are a component we can run, before anything is stored
      await this.options.manager.load(bytes, { name: known?.name ?? name, limits });
      if (existing) return { entry: this.entry(existing), created: false };
      const now = Date.now();
      const record = { name, version, hash, pushedAt: now };
      // a shared store gets the bytes every time: another replica may have removed them meanwhile
      const module = { record: { hash, sizeBytes: bytes.length, name: known?.name ?? name, limits, pushedAt: known?.pushedAt ?? now }, bytes };
      await this.storage.add(record, known && !this.storage.shared ? undefined : module);
      this.generation++;
      this.index = await this.storage.load();
      this.newest.clear();
      const stored = this.index.aliases[alias] ?? record;
      return { entry: this.entry(stored), created: true };
    });
  }

  checkSize(size: number): void {
    if (size > this.options.maxModuleBytes) {
      throw new PlughostError('INVALID_ARGUMENT', `the module is over the size cap: ${size} bytes so far, the cap (maxModuleBytes) is ${this.options.maxModuleBytes}`);
    }
    if (size === 0) throw new PlughostError('INVALID_ARGUMENT', 'the module is empty: send its bytes in chunks after the manifest');
  }

  /** `sha256:<hex>`, `name@version` or `name` (highest version) -> the module. */
  resolve(ref: string): Resolved {
    const r = parseRef(ref);
    if (r.kind === 'hash') {
      const m = this.index.modules[r.hash];
      if (!m) throw new PlughostError('NOT_FOUND', `no module ${r.hash}`);
      return { hash: m.hash, name: m.name, version: undefined };
    }
    if (r.version) {
      const a = this.index.aliases[aliasOf(r.name, r.version)];
      if (!a) throw new PlughostError('NOT_FOUND', `no module ${aliasOf(r.name, r.version)}${this.versionsHint(r.name)}`);
      return { hash: a.hash, name: a.name, version: a.version };
    }
    const newest = this.newestOf(r.name);
    if (!newest) throw new PlughostError('NOT_FOUND', `no module named ${r.name}`);
    return { hash: newest.hash, name: newest.name, version: newest.version };
  }

  /** The module's Runtime, compiled on first use (after a restart, from the stored bytes). */
  runtime(resolved: Resolved): Promise<Runtime> {
    const live = this.options.manager.get(resolved.hash);
    if (live) return Promise.resolve(live);
    const m = this.index.modules[resolved.hash];
    if (!m) return Promise.reject(new PlughostError('NOT_FOUND', `no module ${resolved.hash}`));
    // concurrent first calls share one read of the bytes (the manager shares the compile)
    let loading = this.fetching.get(m.hash);
    if (!loading) {
      loading = this.storage.bytes(m.hash).then((bytes) => this.options.manager.load(bytes, { name: m.name, limits: m.limits }));
      this.fetching.set(m.hash, loading);
      const forget = () => this.fetching.delete(m.hash);
      loading.then(forget, forget);
    }
    return loading;
  }

  /** Every alias, sorted by name then newest version first; optionally of one name. */
  list(name?: string): ModuleEntry[] {
    const names = [...new Set(Object.values(this.index.aliases).map((a) => a.name))].sort();
    return names.filter((n) => !name || n === name).flatMap((n) => this.versionsOf(n).map((a) => this.entry(a)));
  }

  /** The entry a reference names (for a hash: its first alias, or a bare record if it has none). */
  entryOf(resolved: Resolved): ModuleEntry {
    const m = this.index.modules[resolved.hash];
    if (!m) throw new PlughostError('NOT_FOUND', `no module ${resolved.hash}`);
    return this.entry({ name: resolved.name, version: resolved.version ?? '', hash: m.hash, pushedAt: m.pushedAt });
  }

  /**
   * Removes `name@version`, or every alias of `sha256:<hex>`. New calls stop resolving at
   * once; when no alias is left, calls in flight finish and then the bytes are removed.
   */
  delete(ref: string): Promise<{ removedAliases: string[]; moduleRemoved: boolean }> {
    const r = parseRef(ref);
    if (r.kind === 'alias' && !r.version) {
      throw new PlughostError('INVALID_ARGUMENT', `delete needs name@version or sha256:<hex>, not the bare name ${r.name} (it would remove every version)`);
    }
    return this.change(async () => {
      if (this.storage.shared) await this.reload();
      const next: Index = structuredClone(this.index);
      let hash: string;
      const removed: string[] = [];
      if (r.kind === 'hash') {
        if (!next.modules[r.hash]) throw new PlughostError('NOT_FOUND', `no module ${r.hash}`);
        hash = r.hash;
        for (const [alias, a] of Object.entries(next.aliases)) if (a.hash === hash) removed.push(alias);
      } else {
        const alias = aliasOf(r.name, r.version!);
        const a = next.aliases[alias];
        if (!a) throw new PlughostError('NOT_FOUND', `no module ${alias}`);
        hash = a.hash;
        removed.push(alias);
      }
      for (const alias of removed) delete next.aliases[alias];
      const orphan = !Object.values(next.aliases).some((a) => a.hash === hash);
      // a shared store decides itself whether the bytes go (other replicas remove aliases too)
      const gone = await this.storage.remove(removed, orphan || this.storage.shared ? hash : undefined);
      if (gone) delete next.modules[hash];
      this.generation++;
      this.index = this.storage.shared ? await this.storage.load() : next;
      this.newest.clear();
      if (gone) await this.options.manager.unload(hash);
      return { removedAliases: removed.sort(), moduleRemoved: gone };
    });
  }

  private newestOf(name: string): AliasRecord | undefined {
    let newest = this.newest.get(name);
    if (!newest) {
      newest = this.versionsOf(name)[0];
      if (newest) this.newest.set(name, newest);
    }
    return newest;
  }

  private versionsOf(name: string): AliasRecord[] {
    return Object.values(this.index.aliases)
      .filter((a) => a.name === name)
      .sort((a, b) => byVersionDesc(a.version, b.version));
  }

  private versionsHint(name: string): string {
    const versions = this.versionsOf(name).map((a) => a.version);
    return versions.length ? ` (versions: ${versions.join(', ')})` : '';
  }

  private entry(a: AliasRecord): ModuleEntry {
    const m = this.index.modules[a.hash]!;
    return {
      hash: a.hash,
      name: a.name,
      version: a.version,
      sizeBytes: m.sizeBytes,
      limits: effectiveLimits(this.options.manager.options.limits, m.limits),
      pushedAt: a.pushedAt,
    };
  }

  private change<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.changing.then(fn, fn);
    this.changing = run.catch(() => undefined);
    return run;
  }
}
