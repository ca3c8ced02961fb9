// Correlates the log lines of one request: the client's `x-request-id`, or a new one.
import type { Metadata } from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';

export function requestIdOf(metadata: Metadata): string {
  const given = metadata.get('x-request-id')[0];
  return typeof given === 'string' && given.length > 0 && given.length <= 128 ? given : randomUUID();
}
