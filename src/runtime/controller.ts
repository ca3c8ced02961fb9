// The main-thread handle of one live instance. The instance itself lives in its worker,
// and is made there by the first call that uses it (instantiation and init run inside
// that call's hand-off and time budget).
import type { WorkerHost } from './worker-host.js';

export type DropReason = 'trap' | 'timeout' | 'memory' | 'init' | 'other';

export class Controller {
  /** The worker has instantiated it (and run its init). */
  started = false;
  /** Its worker was lost: the instance no longer exists. */
  lost = false;
  lastUsed = Date.now();
  calls = 0;
  /** Checked out and counted in its worker's load until its call is handed over. */
  claimed = false;
  constructor(
    readonly id: number,
    readonly worker: WorkerHost,
  ) {}
}
