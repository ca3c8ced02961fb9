// `authorization: Bearer <token>` metadata -> the caller's Identity, or UNAUTHENTICATED.
import type { Metadata } from '@grpc/grpc-js';
import type { Identity } from '../auth/identity.js';
import type { TokenStore } from '../auth/tokens.js';
import { PlughostError } from '../errors.js';

export function authenticate(metadata: Metadata, tokens: TokenStore): Identity {
  const header = metadata.get('authorization')[0];
  if (header === undefined) throw new PlughostError('UNAUTHENTICATED', 'no token: send the metadata "authorization: Bearer <token>"');
  const m = /^Bearer\s+(\S+)\s*$/i.exec(String(header));
  if (!m) throw new PlughostError('UNAUTHENTICATED', 'the authorization metadata must be "Bearer <token>"');
  const identity = tokens.authenticate(m[1]!);
  if (!identity) throw new PlughostError('UNAUTHENTICATED', 'the token is not valid (unknown or removed)');
  return identity;
}

export function requireAdmin(identity: Identity, action: string): void {
  if (!identity.grant.admin) throw new PlughostError('PERMISSION_DENIED', `${identity.subject} may not ${action}: it needs an admin token`);
}
