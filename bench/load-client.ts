// The benchmark's load process: so that the load never shares an event loop with the
// server it measures, it runs as a child and takes one job at a time over IPC.
import { runLoad, type LoadJob } from '../src/cli/load.js';

if (process.send) {
  process.on('message', (job: LoadJob) => {
    runLoad(job).then(
      (result) => process.send!({ result }),
      (e: unknown) => process.send!({ error: e instanceof Error ? e.message : String(e) }),
    );
  });
  process.on('disconnect', () => process.exit(0));
}
