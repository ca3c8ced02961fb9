// The main-thread handle of one live instance. The instance itself lives in its worker.
import type { WorkerHost } from './worker-host.js';

export type DropReason = 'trap' | 'timeout' | 'memory' | 'init' | 'other';

export class Controller {
  /** Set when its worker was lost: the instance no longer exists. */
  lost = false;
  lastUsed = Date.now();
  calls = 0;
  constructor(
    readonly id: number,
    readonly worker: WorkerHost,
  ) {}
}
