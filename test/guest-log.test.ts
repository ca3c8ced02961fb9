// Guest `log` lines are rate-limited per module (lines and bytes per second): a guest that
// logs in a loop cannot flood the service's log, and other modules' lines still get through.
import test from 'ava';
import { fixture, withCustomSection } from './fixtures/build.js';
import { ctx, manager } from './helpers/runtime.js';

const enc = (s: string) => new TextEncoder().encode(s);

test('a module over guestLogLinesPerSecond has its lines dropped and counted; another module is not held back', async (t) => {
  const lines: { module: string; message: string }[] = [];
  const m = await manager(t, { guestLogLinesPerSecond: 10, onGuestLog: ({ module, message }) => lines.push({ module, message }) });
  const bytes = await fixture('logger');
  const flooder = await m.load(bytes, { name: 'flooder' });
  const quiet = await m.load(withCustomSection(bytes, 'quiet'), { name: 'quiet' });
  const t0 = performance.now();
  await flooder.invoke(ctx(), 'flood', enc('again')); // 1000 lines in one call
  const seconds = (performance.now() - t0) / 1000;
  const kept = lines.filter((l) => l.module === 'flooder').length;
  // a full bucket (10 lines) plus what refilled while the call ran
  t.true(kept >= 10 && kept <= 10 + Math.ceil(seconds * 10), `${kept} lines kept in ${seconds.toFixed(2)} s`);
  t.is(m.stats().guestLogDropped.flooder, 1000 - kept);
  await quiet.invoke(ctx(), undefined, enc('hello'));
  t.deepEqual(lines.filter((l) => l.module === 'quiet'), [{ module: 'quiet', message: 'hello' }]);
  t.is(m.stats().guestLogDropped.quiet, undefined);
});

test('guestLogBytesPerSecond bounds the bytes too, and 0 lines per second keeps none', async (t) => {
  const lines: string[] = [];
  const m = await manager(t, { guestLogLinesPerSecond: 1000, guestLogBytesPerSecond: 2500, onGuestLog: ({ message }) => lines.push(message) });
  const logger = await m.load(await fixture('logger'), { name: 'logger' });
  const t0 = performance.now();
  await logger.invoke(ctx(), 'flood', new Uint8Array(1000).fill(0x61)); // 1000 lines of 1000 bytes
  const seconds = (performance.now() - t0) / 1000;
  t.true(lines.length >= 2 && lines.length * 1000 <= 2500 + seconds * 2500, `${lines.length} lines of 1000 bytes kept in ${seconds.toFixed(2)} s`);
  t.is(m.stats().guestLogDropped.logger, 1000 - lines.length);

  const none: string[] = [];
  const silent = await manager(t, { guestLogLinesPerSecond: 0, onGuestLog: ({ message }) => none.push(message) });
  await (await silent.load(await fixture('logger'), { name: 'logger' })).invoke(ctx(), undefined, enc('hello'));
  t.deepEqual(none, []);
  t.is(silent.stats().guestLogDropped.logger, 1);
});
