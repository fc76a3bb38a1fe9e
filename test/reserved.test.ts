// Names that belong to athanor: user transactions cannot write the reserved state keys
// (projection cursors, model bindings, schedules live there), while athanor's own writers can.
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, i64 } from '../dist/index.js';
import { Sandbox, expectRejects, expectThrows } from './helpers.js';

const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

describe('reserved names', () => {
  it('refuses user writes of reserved keys before anything is written; reads are allowed', async () => {
    const db = await sandbox.open();
    await db.scheduler.register('nightly', { cron: '0 2 * * *', run: () => {} }); // athanor writes its own record
    const key = '\0athanor/scheduler/task/nightly';
    const before = db.get(key).asJsonText();
    for (const write of [
      (tx: Parameters<Parameters<ReturnType<typeof db.transaction>['execute']>[0]>[0]) => tx.set(key, i64(1n)),
      (tx: Parameters<Parameters<ReturnType<typeof db.transaction>['execute']>[0]>[0]) => tx.delete(key),
      (tx: Parameters<Parameters<ReturnType<typeof db.transaction>['execute']>[0]>[0]) => tx.update(key, () => i64(2n)),
      (tx: Parameters<Parameters<ReturnType<typeof db.transaction>['execute']>[0]>[0]) => tx.set('\0athanor/vector-projection/p', i64(99n)),
    ]) {
      const seq = db.commitSeq;
      await expectRejects(
        db.transaction().execute((tx) => {
          tx.set('ok', i64(1n));
          write(tx);
        }),
        InvalidArgumentError,
        'ERR_INVALID_ARGUMENT',
      );
      expect(db.commitSeq).toBe(seq);
    }
    expectThrows(() => db.transaction().executeSync((tx) => tx.set(key, i64(1n))), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.get(key).asJsonText()).toBe(before);
    expect(db.getOpt('ok')).toBeUndefined();
    // Keys that only look alike are ordinary keys.
    await db.transaction().execute((tx) => {
      tx.set('athanor/x', i64(1n));
      tx.set('\0athanorx', i64(1n));
    });
    expect(db.get('athanor/x').asI64()).toBe(1n);
  });
});
