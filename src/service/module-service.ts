// ModuleService: push (manifest, then chunks), list, describe, delete. Pushing and
// deleting need an admin token; listing and describing need any valid token.
import { create } from '@bufbuild/protobuf';
import type { ServerReadableStream, ServerUnaryCall, UntypedServiceImplementation, sendUnaryData } from '@grpc/grpc-js';
import {
  DeleteModuleResponseSchema,
  DescribeModuleResponseSchema,
  ListModulesResponseSchema,
  PushModuleResponseSchema,
  type DeleteModuleRequest,
  type DeleteModuleResponse,
  type DescribeModuleRequest,
  type DescribeModuleResponse,
  type ListModulesRequest,
  type ListModulesResponse,
  type ModuleManifest,
  type PushModuleRequest,
  type PushModuleResponse,
} from '../../gen/plughost/v1/module_pb.js';
import type { TokenStore } from '../auth/tokens.js';
import { PlughostError } from '../errors.js';
import type { ModuleRegistry } from '../registry/registry.js';
import { authenticate, requireAdmin } from './authenticate.js';
import type { Inflight } from './inflight.js';
import { functionInfo, limitsFromMessage, moduleInfo, poolState } from './convert.js';
import { deadlineOf } from './invoker.js';
import type { Logger } from './logger.js';
import { requestIdOf } from './request-id.js';
import { asPlughostError, toServiceError } from './status.js';

export interface ModuleServiceDeps {
  tokens: TokenStore;
  registry: ModuleRegistry;
  inflight: Inflight;
  logger: Logger;
}

/** Runs a unary handler body and answers with its result or its error's status. */
function unary<Req, Res>(inflight: Inflight, body: (call: ServerUnaryCall<Req, Res>) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    inflight.track((async () => {
      inflight.admit();
      return body(call);
    })()).then(
      (r) => callback(null, r),
      (e) => callback(toServiceError(e)),
    );
  };
}

export function moduleService({ tokens, registry, inflight, logger }: ModuleServiceDeps): UntypedServiceImplementation {
  return {
    pushModule(call: ServerReadableStream<PushModuleRequest, PushModuleResponse>, callback: sendUnaryData<PushModuleResponse>) {
      let answered = false;
      const answer = (e: unknown, r?: PushModuleResponse) => {
        if (answered) return;
        answered = true;
        if (e) {
          call.pause();
          callback(toServiceError(e));
        } else callback(null, r!);
      };
      const reqId = requestIdOf(call.metadata);
      let subject = '';
      try {
        inflight.admit();
        const identity = authenticate(call.metadata, tokens);
        subject = identity.subject;
        requireAdmin(identity, 'push modules');
      } catch (e) {
        return answer(e);
      }
      let manifest: ModuleManifest | undefined;
      const chunks: Uint8Array[] = [];
      let size = 0;
      call.on('data', (req: PushModuleRequest) => {
        if (answered) return;
        try {
          if (req.part.case === 'manifest') {
            if (manifest) throw new PlughostError('INVALID_ARGUMENT', 'the manifest was sent twice: send it once, first');
            manifest = req.part.value;
          } else if (req.part.case === 'chunk') {
            if (!manifest) throw new PlughostError('INVALID_ARGUMENT', 'the first message of a push must be the manifest');
            size += req.part.value.length;
            registry.checkSize(size);
            chunks.push(req.part.value);
          }
        } catch (e) {
          answer(e);
        }
      });
      call.on('end', () => {
        if (answered) return;
        inflight.track((async () => {
          if (!manifest) throw new PlughostError('INVALID_ARGUMENT', 'a push needs a manifest, then the module in chunks');
          const bytes = Buffer.concat(chunks);
          const { entry, created } = await registry.push(
            { name: manifest.name, version: manifest.version, limits: limitsFromMessage(manifest.limits), expectedHash: manifest.expectedHash || undefined },
            bytes,
          );
          logger.info({ reqId, subject, module: `${entry.name}@${entry.version}`, hash: entry.hash, bytes: entry.sizeBytes, created }, 'module pushed');
          return create(PushModuleResponseSchema, { module: moduleInfo(entry), created });
        })()).then(
          (r) => answer(undefined, r),
          (e) => {
            logger.info({ reqId, subject, module: manifest && `${manifest.name}@${manifest.version}`, err: asPlughostError(e).message }, 'push refused');
            answer(e);
          },
        );
      });
      call.on('error', (e) => answer(e));
    },

    listModules: unary<ListModulesRequest, ListModulesResponse>(inflight, async (call) => {
      authenticate(call.metadata, tokens);
      return create(ListModulesResponseSchema, { modules: registry.list(call.request.name || undefined).map(moduleInfo) });
    }),

    describeModule: unary<DescribeModuleRequest, DescribeModuleResponse>(inflight, async (call) => {
      authenticate(call.metadata, tokens);
      const resolved = await registry.resolveLatest(call.request.module);
      const runtime = await registry.runtime(resolved);
      const functions = await runtime.describe({ deadline: deadlineOf(call.getDeadline()) });
      return create(DescribeModuleResponseSchema, {
        module: moduleInfo(registry.entryOf(resolved)),
        functions: functions.map(functionInfo),
        pool: poolState(runtime.stats()),
      });
    }),

    deleteModule: unary<DeleteModuleRequest, DeleteModuleResponse>(inflight, async (call) => {
      const identity = authenticate(call.metadata, tokens);
      requireAdmin(identity, 'delete modules');
      const { removedAliases, moduleRemoved } = await registry.delete(call.request.module);
      logger.info({ reqId: requestIdOf(call.metadata), subject: identity.subject, module: call.request.module, removedAliases, moduleRemoved }, 'module deleted');
      return create(DeleteModuleResponseSchema, { removedAliases, moduleRemoved });
    }),
  };
}
