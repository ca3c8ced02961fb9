// Between the API's messages and the layers' own types, in both directions.
import { create } from '@bufbuild/protobuf';
import {
  FunctionInfoSchema,
  ModuleInfoSchema,
  ModuleLimitsSchema,
  PoolStateSchema,
  type FunctionInfo as FunctionInfoMsg,
  type ModuleInfo,
  type ModuleLimits as ModuleLimitsMsg,
  type PoolState,
} from '../../gen/plughost/v1/module_pb.js';
import { PlughostError } from '../errors.js';
import type { ModuleEntry } from '../registry/registry.js';
import type { ModuleLimits, ModuleLimitsInput } from '../runtime/options.js';
import type { FunctionInfo, PoolStats } from '../runtime/runtime.js';

/** A manifest's limits; a present value must be at least 1 (absent means the server's cap). */
export function limitsFromMessage(m: ModuleLimitsMsg | undefined): ModuleLimitsInput {
  if (!m) return {};
  const n = (field: string, v: number | bigint | undefined): number | undefined => {
    if (v === undefined) return undefined;
    if (v < 1 || v > Number.MAX_SAFE_INTEGER) throw new PlughostError('INVALID_ARGUMENT', `manifest limits.${field} must be at least 1 (leave it out to get the server's cap), got ${v}`);
    return Number(v);
  };
  const out: ModuleLimitsInput = {};
  const kv: NonNullable<ModuleLimitsInput['kv']> = {};
  const set = <T extends object>(o: T, k: keyof T, v: number | undefined) => {
    if (v !== undefined) (o as Record<keyof T, number>)[k] = v;
  };
  set(out, 'maxPoolSize', n('max_pool_size', m.maxPoolSize));
  set(out, 'maxMemoryBytes', n('max_memory_bytes', m.maxMemoryBytes));
  set(out, 'maxExecutionMs', n('max_execution_ms', m.maxExecutionMs));
  set(kv, 'maxValueBytes', n('kv_max_value_bytes', m.kvMaxValueBytes));
  set(kv, 'maxEntriesPerScope', n('kv_max_entries', m.kvMaxEntries));
  set(kv, 'maxBatchItems', n('kv_max_batch_items', m.kvMaxBatchItems));
  set(kv, 'maxRangeEntries', n('kv_max_range_entries', m.kvMaxRangeEntries));
  if (Object.keys(kv).length) out.kv = kv;
  return out;
}

export function limitsToMessage(l: ModuleLimits): ModuleLimitsMsg {
  return create(ModuleLimitsSchema, {
    maxPoolSize: l.maxPoolSize,
    maxMemoryBytes: BigInt(l.maxMemoryBytes),
    maxExecutionMs: l.maxExecutionMs,
    kvMaxValueBytes: l.kv.maxValueBytes,
    kvMaxEntries: BigInt(l.kv.maxEntriesPerScope),
    kvMaxBatchItems: l.kv.maxBatchItems,
    kvMaxRangeEntries: l.kv.maxRangeEntries,
  });
}

export function moduleInfo(e: ModuleEntry): ModuleInfo {
  return create(ModuleInfoSchema, {
    hash: e.hash,
    name: e.name,
    version: e.version,
    sizeBytes: BigInt(e.sizeBytes),
    limits: limitsToMessage(e.limits),
    pushedAtUnixMs: BigInt(e.pushedAt),
  });
}

export function functionInfo(f: FunctionInfo): FunctionInfoMsg {
  return create(FunctionInfoSchema, {
    name: f.name,
    args: f.args.map(([name, type]) => ({ name, type })),
    returns: f.returns,
    writeable: f.writeable,
    comment: f.comment,
  });
}

export function poolState(s: PoolStats): PoolState {
  return create(PoolStateSchema, {
    idle: s.idle,
    inUse: s.inUse,
    waiters: s.waiters,
    created: BigInt(s.created),
    reused: BigInt(s.reused),
    droppedTrap: BigInt(s.dropped.trap),
    droppedTimeout: BigInt(s.dropped.timeout),
    droppedMemory: BigInt(s.dropped.memory),
    droppedInit: BigInt(s.dropped.init),
    droppedOther: BigInt(s.dropped.other),
    evicted: BigInt(s.evicted),
  });
}
