/**
 * Retention: `db.events.compact()` deletes the oldest events (with their type index
 * entries) but never past a durable cursor, optionally archiving them first; reads
 * below `events.firstId` fail with ERR_COMPACTED, ids stay dense for what remains.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Athanor, CompactedError, Embedder, InvalidArgumentError, bytes } from '../dist/index.js';
import { ensureTestModel } from '../scripts/test-model.mjs';
import { Sandbox, expectRejects, expectThrows } from './helpers.js';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

async function logN(db: Athanor, n: number, type = 'tick'): Promise<void> {
  await db.transaction().execute((tx) => {
    for (let i = 0; i < n; i++) tx.log(type, { i });
  });
}

describe('events.compact', () => {
  it('keeps a hash-chained log verifiable: the last removed link becomes the anchor; a chained range is not compacted by type', async () => {
    const dir = sb.dir();
    let db = await Athanor.open(dir, { chain: true });
    await logN(db, 6);
    await logN(db, 4, 'other');
    await expectRejects(db.events.compact({ before: 8, types: ['tick'] }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.events.firstId).toBe(1n);
    const r = await db.events.compact({ before: 5 });
    expect(r).toMatchObject({ deleted: 4, firstId: 5n });
    expect(db.verify().events).toBe(6);
    await logN(db, 2);
    await db.close();
    db = await sb.open(dir, { chain: true });
    expect(db.verify().events).toBe(8);
    expect(db.verify({ report: true }).ok).toBe(true);
  });

  it('deletes the oldest events; reads below firstId fail with ERR_COMPACTED; ids go on; verify passes; reopen keeps it', async () => {
    const dir = sb.dir();
    let db = await Athanor.open(dir);
    await logN(db, 10);
    expect(db.events.firstId).toBe(1n);
    const r = await db.events.compact({ before: 7 });
    expect(r).toMatchObject({ deleted: 6, firstId: 7n, before: 7n, heldBy: null, archive: null });
    expect(db.events.firstId).toBe(7n);
    expect([...db.events.read()].map((e) => e.id)).toEqual([7n, 8n, 9n, 10n]);
    expect(db.events.tail(10).map((e) => e.id)).toEqual([10n, 9n, 8n, 7n]);
    expect([...db.events.read({ type: 'tick' })].map((e) => e.id)).toEqual([7n, 8n, 9n, 10n]);
    expectThrows(() => db.events.get(6), CompactedError, 'ERR_COMPACTED');
    expectThrows(() => [...db.events.read({ from: 1 })], CompactedError, 'ERR_COMPACTED');
    expectThrows(() => [...db.events.read({ from: 3, type: 'tick' })], CompactedError, 'ERR_COMPACTED');
    await logN(db, 1);
    expect(db.events.lastId).toBe(11n);
    expect(db.verify().events).toBe(5);
    expect(db.verify({ report: true }).violations).toEqual([]);
    await db.close();
    db = await sb.open(dir);
    expect(db.events.firstId).toBe(7n);
    // Compacting past the end stops at the end; the log may become empty.
    expect(await db.events.compact({ before: 1000 })).toMatchObject({ deleted: 5, firstId: 12n, before: 12n });
    expect([...db.events.read()]).toEqual([]);
    await logN(db, 1);
    expect(db.events.read().next().value?.id).toBe(12n);
    expect(db.verify({ report: true }).violations).toEqual([]);
  });

  it('never passes a lagging processor cursor or a consumer group position or pending delivery', async () => {
    const db = await sb.open();
    const first = await db.transaction().execute((tx) => tx.log('tick', { i: 0 }), { idempotencyKey: 'pay-1' });
    await logN(db, 4);
    const p = db.processor('slow', { handlers: [{ eventType: 'tick', handle: () => undefined }] });
    await p.catchUp();
    await logN(db, 5);
    let r = await db.events.compact({ before: 11 });
    expect(r).toMatchObject({ deleted: 5, firstId: 6n, before: 6n, heldBy: 'processor:slow' });
    // An idempotent retry of a compacted commit is still a duplicate, with the original ids.
    const again = await db.transaction().execute((tx) => tx.log('tick', { i: 0 }), { idempotencyKey: 'pay-1' });
    expect(again).toMatchObject({ outcome: 'duplicate', commitSeq: first.commitSeq, firstEventId: 1n });
    expect(db.events.lastId).toBe(10n);
    await p.catchUp();
    const g = db.consumerGroup('g');
    const held = await g.pull({ max: 2 }); // events 6 and 7, pending
    await g.ack(held[1]!);
    r = await db.events.compact({ before: 11 });
    expect(r).toMatchObject({ deleted: 0, firstId: 6n, before: 6n, heldBy: 'consumer-group:g' });
    await g.ack(held[0]!);
    r = await db.events.compact({ before: 11 });
    expect(r).toMatchObject({ deleted: 2, firstId: 8n, before: 8n, heldBy: 'consumer-group:g' }); // its position is 7
    // A group created after the compaction starts at the oldest event kept.
    const late = db.consumerGroup('late');
    expect((await late.pull({ max: 100 })).map((d) => d.event.id)).toEqual([8n, 9n, 10n]);
  });

  it('never passes a vector projection cursor', async () => {
    const db = await sb.open();
    const embedder = await Embedder.open(await ensureTestModel());
    try {
      const docs = (from: number) => db.transaction().execute((tx) => [0, 1, 2].forEach((i) => tx.log('Doc', { text: `document ${from + i}` })));
      await docs(0);
      const p = db.vectorProjection({ name: 'vp', collection: 'docs', embedder, on: { Doc: { text: '$.text' } } });
      await p.catchUp();
      await docs(3);
      expect(await db.events.compact({ before: 7 })).toMatchObject({ deleted: 3, firstId: 4n, heldBy: 'vector-projection:vp' });
      await p.catchUp();
      expect(await db.events.compact({ before: 7 })).toMatchObject({ deleted: 3, firstId: 7n, heldBy: null });
    } finally {
      embedder.close();
    }
  }, 60_000);

  it('compacts only the given types, and archives what it deletes to zstd JSON lines with a SHA-256', async () => {
    const db = await sb.open();
    await db.transaction().execute((tx) => {
      tx.log('noise', { n: 1 });
      tx.log('keep', { n: 2 });
      tx.log('noise', { big: 2n ** 64n });
      tx.log('noise', bytes(new Uint8Array([1, 2, 3])).asBytes());
      tx.log('keep', { n: 5 });
    });
    const archiveTo = path.join(sb.dir(), 'noise.jsonl.zst');
    const r = await db.events.compact({ before: 5, types: ['noise'], archiveTo });
    expect(r).toMatchObject({ deleted: 3, firstId: 2n, archive: { path: archiveTo, events: 3 } });
    expect([...db.events.read()].map((e) => [e.id, e.type])).toEqual([[2n, 'keep'], [5n, 'keep']]);
    expect(db.verify({ report: true }).violations).toEqual([]);
    const file = fs.readFileSync(archiveTo);
    const sha = createHash('sha256').update(file).digest('hex');
    expect(r.archive!.sha256).toBe(sha);
    expect(fs.readFileSync(`${archiveTo}.sha256`, 'utf8')).toBe(`${sha}  noise.jsonl.zst\n`);
    const plain = path.join(path.dirname(archiveTo), 'plain.jsonl');
    const binding = createRequire(import.meta.url)('../native/node/binding.cjs') as { decompressFile(src: string, dst: string): Promise<void> };
    await binding.decompressFile(archiveTo, plain);
    const lines = fs.readFileSync(plain, 'utf8').trimEnd().split('\n');
    expect(lines.map((l) => JSON.parse(l) as { id: number; type: string })).toMatchObject([
      { id: 1, type: 'noise', json: { n: 1 } },
      { id: 3, type: 'noise' },
      { id: 4, type: 'noise', bytes: 'AQID' },
    ]);
    expect(lines[1]).toContain('"big":18446744073709551616');
    await expectRejects(db.events.compact({ before: 5, archiveTo }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(db.events.compact({ before: -1 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });
});
