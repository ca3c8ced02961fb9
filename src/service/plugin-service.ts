// PluginService: Invoke (unary) and Stream (bidi), each a thin edge over the Invoker.
import { create } from '@bufbuild/protobuf';
import type { ServerDuplexStream, ServerUnaryCall, UntypedServiceImplementation, sendUnaryData } from '@grpc/grpc-js';
import { InvokeResponseSchema, type InvokeRequest, type InvokeResponse, type StreamRequest, type StreamResponse } from '../../gen/plughost/v1/plugin_pb.js';
import type { TokenStore } from '../auth/tokens.js';
import { authenticate } from './authenticate.js';
import type { Inflight } from './inflight.js';
import { deadlineOf, type Invoker } from './invoker.js';
import { requestIdOf } from './request-id.js';
import { toServiceError } from './status.js';
import type { HostCallObserver } from './stream-host-calls.js';
import { StreamSession, type StreamLimits } from './stream-session.js';

export interface PluginServiceDeps {
  tokens: TokenStore;
  invoker: Invoker;
  stream: StreamLimits;
  /** Streams still open, so shutdown can drain them. */
  sessions: Set<StreamSession>;
  /** Unary calls being served, so shutdown can drain them. */
  inflight: Inflight;
  /** Counts and times the host calls of streams whose engine serves sql. */
  observeHostCall?: HostCallObserver;
}

export function pluginService(deps: PluginServiceDeps): UntypedServiceImplementation {
  return {
    invoke(call: ServerUnaryCall<InvokeRequest, InvokeResponse>, callback: sendUnaryData<InvokeResponse>) {
      const abort = new AbortController();
      // grpc-js reports 'cancelled' as the stream closes after an answer too; aborting then
      // would only build a DOMException per call for nobody
      let answered = false;
      call.once('cancelled', () => answered || abort.abort());
      deps.inflight.track((async () => {
        deps.inflight.admit();
        const identity = authenticate(call.metadata, deps.tokens);
        const { result, hash } = await deps.invoker.invoke(identity, {
          module: call.request.module,
          fn: call.request.function,
          args: call.request.args,
          deadline: deadlineOf(call.getDeadline()),
          signal: abort.signal,
          requestId: requestIdOf(call.metadata),
        });
        return create(InvokeResponseSchema, {
          result: result.ok ? { case: 'value', value: result.value } : { case: 'guestError', value: result.guestError },
          moduleHash: hash,
        });
      })()).then(
        (response) => {
          answered = true;
          callback(null, response);
        },
        (e) => {
          answered = true;
          callback(toServiceError(e));
        },
      );
    },

    stream(call: ServerDuplexStream<StreamRequest, StreamResponse>) {
      let session: StreamSession;
      try {
        deps.inflight.admit();
        session = new StreamSession(call, authenticate(call.metadata, deps.tokens), deps.invoker, deps.stream, requestIdOf(call.metadata), deps.observeHostCall);
      } catch (e) {
        call.emit('error', toServiceError(e));
        return;
      }
      deps.sessions.add(session);
      session.done.then(() => deps.sessions.delete(session));
    },
  };
}
