// Structured JSON logs (pino). Every line of one request carries its `reqId` (the
// client's x-request-id, or a new one), so an operator can follow a call through.
import { pino, type DestinationStream, type Logger, type Level } from 'pino';

export type { Logger };

export function createLogger(level: Level | 'silent', destination?: DestinationStream): Logger {
  return pino({ level, base: { service: 'plughost' }, timestamp: pino.stdTimeFunctions.isoTime }, destination ?? pino.destination({ fd: 1, sync: false }));
}
