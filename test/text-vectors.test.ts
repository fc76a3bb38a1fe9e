/**
 * Text collections (a collection carrying an embedder) and vector projections
 * (events embedded into a collection with an exactly-once cursor), on the real
 * test model and real files on disk.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Athanor, Embedder, HandlerError, InvalidArgumentError, VectorDimensionError, type StoredEvent } from '../dist/index.js';
import { ensureTestModel } from '../scripts/test-model.mjs';
import { Sandbox, expectRejects, expectThrows } from './helpers.js';

const sb = new Sandbox();
afterEach(() => sb.cleanup());

let embedder: Embedder;
let modelDir = '';
beforeAll(async () => {
  modelDir = await ensureTestModel();
  embedder = await Embedder.open(modelDir);
});
afterAll(() => embedder?.close());

const DOCS = [
  { id: 'pw', text: 'How do I reset my password?', metadata: { team: 'accounts' } },
  { id: 'bill', text: 'I was charged twice on my credit card this month.', metadata: { team: 'billing' } },
  { id: 'ship', text: 'My parcel has not arrived and tracking shows no updates.', metadata: { team: 'logistics' } },
  { id: 'login', text: 'The login page keeps rejecting my credentials.', metadata: { team: 'accounts' } },
  { id: 'refund', text: 'Please refund the duplicate payment.', metadata: { team: 'billing' } },
];

describe('text collections', () => {
  it('embeds on upsert and search, with filters', async () => {
    const db = await sb.open();
    const col = db.vectors.create('tickets', { embedder });
    expect(col.info.dimension).toBe(384);
    await col.upsertText(DOCS[0]!.id, DOCS[0]!.text, DOCS[0]!.metadata);
    const progress: number[] = [];
    const r = await col.upsertTexts(DOCS.slice(1), { chunkSize: 2, onProgress: (p) => progress.push(p.committed) });
    expect(r.upserted).toBe(4);
    expect(progress.at(-1)).toBe(4);
    expect(col.count()).toBe(5);

    const hits = await col.searchText('I forgot my password and cannot sign in', 2);
    expect(hits.map((h) => h.id).sort()).toEqual(['login', 'pw']);
    const billing = await col.searchText('money taken from my card', { k: 1, filter: { team: 'billing' } });
    expect(billing[0]!.id === 'bill' || billing[0]!.id === 'refund').toBe(true);
    const filtered = await col.searchText('password', 3, { team: 'logistics' });
    expect(filtered.map((h) => h.id)).toEqual(['ship']);
    // The stored vector is the embedder's.
    const doc = col.get('pw')!;
    const direct = await embedder.embed(DOCS[0]!.text);
    expect(Array.from(doc.vector).map((x) => x.toFixed(4))).toEqual(Array.from(direct).map((x) => x.toFixed(4)));
    expect(doc.metadata).toEqual({ team: 'accounts' });
  });

  it('checks every document before writing any', async () => {
    const db = await sb.open();
    const col = db.vectors.create('t', { embedder });
    await expectRejects(col.upsertTexts([{ id: 'a', text: 'fine' }, { id: 'b', text: 7 as unknown as string }]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(col.upsertTexts([{ id: '', text: 'x' }]), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(col.upsertText('a', null as unknown as string), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(col.searchText('q', { k: 0 }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    await expectRejects(col.searchText(''), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(col.count()).toBe(0);
  });

  it('remembers its model and refuses another one', async () => {
    const db = await sb.open();
    db.vectors.create('t', { embedder });
    const plain = db.vectors.open('t');
    await expectRejects(plain.searchText('x'), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    const other = await Embedder.open(modelDir, { normalize: false });
    try {
      expect(other.modelId).not.toBe(embedder.modelId);
      expectThrows(() => db.vectors.open('t', { embedder: other }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expectThrows(() => db.vectors.create('t', { embedder: other }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      expectThrows(() => db.vectors.create('u', { embedder, dimension: 12 }), VectorDimensionError, 'ERR_VECTOR_DIMENSION');
      expectThrows(() => db.vectors.create('v', { dimension: 12 }).info && db.vectors.open('v', { embedder }), VectorDimensionError, 'ERR_VECTOR_DIMENSION');
      // Survives reopening; after a drop the name is free for another model.
      await db.close();
      const again = await sb.open(db.dir);
      expect(again.vectors.open('t', { embedder }).embedder).toBe(embedder);
      expectThrows(() => again.vectors.open('t', { embedder: other }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
      again.vectors.drop('t');
      expect(again.vectors.create('t', { embedder: other }).embedder).toBe(other);
    } finally {
      other.close();
    }
  });
});

interface Ticket {
  ticketId: string;
  body?: string;
  team?: string;
}

async function logTickets(db: Athanor, events: { type: string; payload: Ticket }[]): Promise<void> {
  await db.transaction().execute((tx) => {
    for (const e of events) tx.log(e.type, e.payload);
  });
}

function projection(db: Athanor, extra: object = {}) {
  return db.vectorProjection<{ team: string }>({
    name: 'ticket-vectors',
    collection: 'tickets',
    embedder,
    on: {
      TicketOpened: { id: '$.ticketId', text: '$.body', metadata: { team: '$.team' } },
      TicketClosed: { delete: true, id: '$.ticketId' },
    },
    ...extra,
  });
}

describe('vector projections', () => {
  it('embeds events into the collection, deletes on delete events, and moves its cursor once', async () => {
    const db = await sb.open();
    await logTickets(db, [
      ...DOCS.map((d) => ({ type: 'TicketOpened', payload: { ticketId: d.id, body: d.text, team: d.metadata.team } })),
      { type: 'Unrelated', payload: { ticketId: 'x' } },
      { type: 'TicketClosed', payload: { ticketId: 'ship' } },
    ]);
    const p = projection(db);
    const r = await p.catchUp();
    expect(r.processed).toBe(7);
    expect(p.cursor()).toBe(7n);
    expect(p.lag()).toBe(0n);
    const col = db.vectors.open<{ team: string }>('tickets', { embedder });
    expect(col.count()).toBe(4);
    expect(col.get('ship')).toBeUndefined();
    expect(col.get('bill')!.metadata).toEqual({ team: 'billing' });
    const hits = await col.searchText('reset password', 1);
    expect(hits[0]!.id).toBe('pw');
    // Nothing new: nothing happens.
    expect((await p.catchUp()).processed).toBe(0);
    // Live: run() follows new commits.
    const running = p.run();
    await logTickets(db, [{ type: 'TicketOpened', payload: { ticketId: 'new', body: 'The app crashes on startup', team: 'mobile' } }]);
    await p.waitFor();
    expect(col.get('new')!.metadata).toEqual({ team: 'mobile' });
    await p.stop();
    await running;
  });

  it('rebuilds the collection from the log to the same documents', async () => {
    const db = await sb.open();
    await logTickets(db, DOCS.map((d) => ({ type: 'TicketOpened', payload: { ticketId: d.id, body: d.text, team: d.metadata.team } })));
    await logTickets(db, [{ type: 'TicketClosed', payload: { ticketId: 'bill' } }]);
    const p = projection(db, { batchSize: 2 });
    await p.catchUp();
    const col = db.vectors.open('tickets');
    const before = DOCS.map((d) => col.get(d.id)).map((d) => d && { id: d.id, v: Array.from(d.vector).map((x) => x.toFixed(5)), m: d.metadata });
    const progress: bigint[] = [];
    await p.rebuild({ onProgress: (x) => progress.push(x.cursor) });
    const after = db.vectors.open('tickets');
    expect(after.count()).toBe(4);
    expect(DOCS.map((d) => after.get(d.id)).map((d) => d && { id: d.id, v: Array.from(d.vector).map((x) => x.toFixed(5)), m: d.metadata })).toEqual(before);
    expect(progress.at(-1)).toBe(6n);
  });

  it('applies error strategies to events it cannot embed: failFast, skip, deadLetter', async () => {
    const db = await sb.open();
    await logTickets(db, [
      { type: 'TicketOpened', payload: { ticketId: 'a', body: 'first' } },
      { type: 'TicketOpened', payload: { ticketId: 'b' } }, // no body
      { type: 'TicketOpened', payload: { ticketId: 'c', body: 'third' } },
    ]);
    const strict = projection(db);
    const err = await expectRejects(strict.catchUp(), HandlerError, 'ERR_HANDLER');
    expect((err as HandlerError).eventId).toBe(2n);
    expect(strict.cursor()).toBe(1n); // the event before the bad one is committed
    expect(db.vectors.open('tickets').count()).toBe(1);
    await strict.close();

    const dl = projection(db, { onError: 'deadLetter' });
    await dl.catchUp();
    expect(dl.cursor()).toBe(3n);
    expect(db.vectors.open('tickets').count()).toBe(2);
    const letters = dl.deadLetters.list();
    expect(letters).toHaveLength(1);
    expect(letters[0]!.event.id).toBe(2n);
    expect(letters[0]!.errorCode).toBe('ERR_HANDLER');
    expect(await dl.deadLetters.retry(letters[0]!.id)).toBe(false); // still no body
    expect(dl.deadLetters.get(letters[0]!.id)!.attempts).toBe(2);
    await dl.close();

    const db2 = await sb.open();
    await logTickets(db2, [
      { type: 'TicketOpened', payload: { ticketId: 'a' } },
      { type: 'TicketOpened', payload: { ticketId: 'b', body: 'fine' } },
    ]);
    const logs: string[] = [];
    const skip = db2.vectorProjection({ name: 's', collection: 'c', embedder, on: { TicketOpened: { id: '$.ticketId', text: '$.body' } }, onError: 'skip', onLog: (m) => logs.push(m) });
    await skip.catchUp();
    expect(skip.cursor()).toBe(2n);
    expect(db2.vectors.open('c').count()).toBe(1);
    expect(logs.join()).toContain('skipped event 1');
  });

  it('takes text and ids from functions, and the same projection on two handles applies each batch once', async () => {
    const db = await sb.open();
    await logTickets(
      db,
      Array.from({ length: 30 }, (_, i) => ({ type: 'TicketOpened', payload: { ticketId: `t${i}`, body: `ticket number ${i}`, team: i % 2 ? 'odd' : 'even' } })),
    );
    const spec = {
      name: 'fn',
      collection: 'c',
      embedder,
      batchSize: 4,
      on: { TicketOpened: { id: (e: StoredEvent) => `doc-${(e.payload as Ticket).ticketId}`, text: (e: StoredEvent) => `${(e.payload as Ticket).team}: ${(e.payload as Ticket).body}` } },
    };
    const a = db.vectorProjection(spec);
    const other = await sb.open(db.dir);
    const b = other.vectorProjection(spec);
    const seen: bigint[] = [];
    const track = (x: { cursor: bigint }) => seen.push(x.cursor);
    const [ra, rb] = await Promise.all([a.catchUp({ onProgress: track }), b.catchUp({ onProgress: track })]);
    // A batch the other handle committed first is dropped, so every event is counted once.
    expect(ra.processed + rb.processed).toBe(30);
    expect(a.cursor()).toBe(30n);
    expect(db.vectors.open('c').count()).toBe(30);
    expect(db.vectors.open('c').get('doc-t7')).toBeDefined();
  });

  it('sends events whose id or metadata cannot be stored through the error strategy, with the rest of the batch applied', async () => {
    const db = await sb.open();
    await logTickets(db, [
      { type: 'TicketOpened', payload: { ticketId: 'a', body: 'first', team: 'x' } },
      { type: 'TicketOpened', payload: { ticketId: 'b'.repeat(501), body: 'id too long', team: 'x' } },
      { type: 'TicketOpened', payload: { ticketId: 'c', body: 'reserved metadata key', team: 'big' } },
      { type: 'TicketOpened', payload: { ticketId: 'd', body: 'fourth', team: 'x' } },
    ]);
    const spec = (extra: object) => ({
      name: 'strict',
      collection: 'c',
      embedder,
      on: {
        TicketOpened: {
          id: '$.ticketId' as const,
          text: '$.body' as const,
          // A metadata key in athanor's reserved namespace cannot be stored (bigint can: it is valid JSON metadata).
          metadata: (e: StoredEvent) => ((e.payload as Ticket).team === 'big' ? { team: 'big', '\u0000athanor/x': 1 } : { team: (e.payload as Ticket).team, n: 1 }),
        },
      },
      ...extra,
    });
    const strict = db.vectorProjection(spec({}));
    const err = await expectRejects(strict.catchUp(), HandlerError, 'ERR_HANDLER');
    expect((err as HandlerError).eventId).toBe(2n);
    expect(strict.cursor()).toBe(1n);
    expect(db.vectors.open('c').count()).toBe(1);
    await strict.close();

    const dl = db.vectorProjection(spec({ name: 'dl', collection: 'c2', onError: 'deadLetter' }));
    expect((await dl.catchUp()).processed).toBe(4);
    expect(dl.cursor()).toBe(4n);
    const letters = dl.deadLetters.list();
    expect(letters.map((l) => [l.event.id, l.errorCode])).toEqual([
      [2n, 'ERR_HANDLER'],
      [3n, 'ERR_HANDLER'],
    ]);
    const col = db.vectors.open('c2');
    expect(col.count()).toBe(2);
    expect(col.get('a')).toBeDefined();
    expect(col.get('d')).toBeDefined();
  });

  it('hands out its collection, whose hits name their source event and, on request, its text', async () => {
    const db = await sb.open();
    await logTickets(db, DOCS.map((d) => ({ type: 'TicketOpened', payload: { ticketId: d.id, body: d.text, team: d.metadata.team } })));
    // A later event replaces "pw": its hit must name that event.
    await logTickets(db, [{ type: 'TicketOpened', payload: { ticketId: 'pw', body: 'I forgot my password, how do I reset it?', team: 'accounts' } }]);
    const p = projection(db);
    await p.catchUp();
    const col = p.collection;
    expect(col.name).toBe('tickets');
    expect(col.count()).toBe(5);
    const [hit] = await col.searchText('reset my password', { k: 1, withText: true });
    expect(hit).toMatchObject({ id: 'pw', eventId: 6n, text: 'I forgot my password, how do I reset it?', metadata: { team: 'accounts' } });
    const [plain] = await col.searchText('reset my password', 1);
    expect(plain!.eventId).toBe(6n);
    expect(plain!.text).toBeUndefined();
    expect(col.get('bill')).toMatchObject({ metadata: { team: 'billing' }, eventId: 2n });
    // Filters see the user's metadata only.
    const billing = await col.searchText('refund', { k: 5, filter: { team: 'billing' }, withText: true });
    expect(billing.map((h) => h.id).sort()).toEqual(['bill', 'refund']);
    expect(billing.every((h) => h.text === DOCS.find((d) => d.id === h.id)!.text)).toBe(true);
    // Without a projection behind it, a collection has no texts to give.
    await expectRejects(db.vectors.open('tickets', { embedder }).searchText('x', { withText: true }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
  });

  it('refuses bad specs before creating anything', async () => {
    const db = await sb.open();
    expectThrows(() => db.vectorProjection({ name: 'x', collection: 'c', embedder, on: {} }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.vectorProjection({ name: 'x', collection: 'c', embedder, on: { T: { text: 'body' as '$' } } }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.vectorProjection({ name: 'x', collection: 'c', embedder, on: { T: { text: '$.a..b' } } }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.vectorProjection({ name: 'x', collection: 'c', embedder: {} as Embedder, on: { T: { text: '$.a' } } }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expectThrows(() => db.vectorProjection({ name: 'x', collection: '', embedder, on: { T: { text: '$.a' } } }), InvalidArgumentError, 'ERR_INVALID_ARGUMENT');
    expect(db.vectors.has('c')).toBe(false);
  });
});
