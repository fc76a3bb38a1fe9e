/**
 * Consumer groups: members share a group's events, each pending until acked; an event
 * not acked in time goes to another member; position and pending list are durable.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, InvalidArgumentError, StaleLeaseError } from '../dist/index.js';
import { runEsChild } from './es-helpers.js';
import { Sandbox, expectRejects } from './helpers.js';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

function manualClock(start = 1_700_000_000_000) {
  const c = { t: start, now: () => c.t };
  return c;
}

async function logOrders(db: Athanor, n: number): Promise<void> {
  await db.transaction().execute((tx) => {
    for (let i = 0; i < n; i++) {
      tx.log('order.placed', { i });
      tx.log('audit', { i });
    }
  });
}

describe('consumer groups', () => {
  it('splits events of its types between members, redelivers the unacked after the timeout, refuses a stale ack', async () => {
    const db = await sb.open();
    const clock = manualClock();
    const a = db.consumerGroup('g', { types: ['order.placed'], ackTimeoutMs: 1000, member: 'a', clock });
    const b = db.consumerGroup('g', { types: ['order.placed'], ackTimeoutMs: 1000, member: 'b', clock });
    await logOrders(db, 5);
    const da = await a.pull({ max: 2 });
    const dbb = await b.pull({ max: 10 });
    expect(da.map((d) => d.event.payload)).toEqual([{ i: 0 }, { i: 1 }]);
    expect(dbb.map((d) => d.event.payload)).toEqual([{ i: 2 }, { i: 3 }, { i: 4 }]);
    expect(new Set([...da, ...dbb].map((d) => d.event.type))).toEqual(new Set(['order.placed']));
    for (const d of dbb) await b.ack(d);
    await a.ack(da[0]!);
    expect(await b.pull()).toEqual([]);
    clock.t += 1000; // a's second event timed out
    const again = await b.pull();
    expect(again.map((d) => [d.event.id, d.deliveries])).toEqual([[da[1]!.event.id, 2]]);
    expect(a.pending()).toEqual([{ eventId: da[1]!.event.id, member: 'b', deliveries: 2, deadline: clock.t + 1000 }]);
    await expectRejects(a.ack(da[1]!), StaleLeaseError, 'ERR_STALE_LEASE');
    await b.nack(again[0]!, { delayMs: 10 });
    expect(await a.pull()).toEqual([]);
    clock.t += 10;
    const third = await a.pull();
    expect(third[0]!.deliveries).toBe(3);
    await a.ack(third[0]!);
    expect(a.pending()).toEqual([]);
    expect(a.position).toBe(db.events.lastId); // scanned past the other types too
  });

  it('keeps each group its own position, and refuses bad options', async () => {
    const db = await sb.open();
    await logOrders(db, 3);
    const all = db.consumerGroup('everything');
    expect((await all.pull({ max: 100 })).length).toBe(6);
    const orders = db.consumerGroup('orders', { types: ['order.placed'] });
    expect((await orders.pull({ max: 100 })).length).toBe(3);
    expect(() => db.consumerGroup('x', { types: [] })).toThrow(InvalidArgumentError);
    expect(() => db.consumerGroup('x', { ackTimeoutMs: 0 })).toThrow(InvalidArgumentError);
    await expectRejects(() => orders.pull({ max: 0 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });

  it('a member that dies holding events: another member gets them after the timeout; position and pending survive reopen', async () => {
    const dir = sb.dir();
    {
      const db = await Athanor.open(dir);
      await logOrders(db, 10);
      await db.close();
    }
    const child = await runEsChild([dir, 'pull', '4'], (line) => line === 'waiting');
    expect(child.signal, child.stderr).toBe('SIGKILL');
    const held = child.lines.filter((l) => l.startsWith('pulled')).map((l) => BigInt(l.split(' ')[1]!));
    expect(held).toHaveLength(4);
    const db = await sb.open(dir);
    const early = db.consumerGroup('g', { types: ['order.placed'], member: 'parent' });
    expect(early.pending().map((p) => [p.eventId, p.member])).toEqual(held.map((id) => [id, 'child']));
    const fresh = await early.pull({ max: 100 });
    expect(fresh.map((d) => d.event.id).filter((id) => held.includes(id))).toEqual([]); // not yet timed out
    expect(fresh).toHaveLength(6);
    for (const d of fresh) await early.ack(d);
    const late = db.consumerGroup('g', { types: ['order.placed'], member: 'parent', clock: { now: () => Date.now() + 120_000 } });
    const redelivered = await late.pull({ max: 100 });
    expect(redelivered.map((d) => d.event.id)).toEqual(held);
    expect(redelivered.every((d) => d.deliveries === 2)).toBe(true);
    for (const d of redelivered) await late.ack(d);
    expect(late.pending()).toEqual([]);
  }, 60_000);
});
