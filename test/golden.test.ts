/**
 * The golden files of native/core/tests/golden (written and checked by the Rust tests in
 * native/core/tests/golden.rs), checked from TypeScript: the TS codec encodes and decodes
 * every pinned value byte for byte as Rust does, and the golden LMDB store opens and
 * reads back through the addon; the TypeScript decoders of ts/internal/ read every
 * wire-<format>.json (bytes the Rust encoders of native/core/src/wire/ wrote) as the
 * values it records. Plus a fuzz test of the TS value decoder on arbitrary
 * bytes: a typed error or a value, never anything else, and never a different reading
 * of bytes the Rust decoder accepts.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { AthanorError, Value, ValueTypeError, array, bool, bytes, decodeValue, encodeValue, f64, i64, json, set, str, u256 } from '../dist/index.js';
import { Sandbox, expectRejects } from './helpers.js';
import { ByteWriter } from '../ts/internal/bytes.js';
import { beginFrame, endFrame, readFailures } from '../ts/internal/commit-frames.js';
import { GROUP_HEADER, TOKEN_LEN, readCompletion, readGroupNotice, readGroupSize, readToken } from '../ts/internal/completion.js';
import { readEntry } from '../ts/internal/entry.js';
import { readCommitRecordHead } from '../ts/internal/commit-record.js';
import { decodeEvents } from '../ts/internal/event-pack.js';
import { readStreamList, readStreamPage } from '../ts/state/streams.js';
import { parseJson } from '../ts/internal/json.js';
import { readStateList } from '../ts/internal/state-list.js';
import { readDocument, readHitBatch, readHits } from '../ts/internal/vector-pack.js';
import { decodeValue as decodeSourceValue, i64 as sourceI64 } from '../ts/state/codec.js';
import type { Core } from '../ts/state/core.js';
import { TxImpl } from '../ts/state/transaction.js';
import { TRAIL, TRAIL_COUNT } from '../ts/state/reserved.js';

const require = createRequire(import.meta.url);
const binding = require('../native/node/binding.cjs') as {
  codecRoundTrip(bytes: Uint8Array): [string, Buffer];
  NativeDb: new (
    dir: string,
    options: { durability: string; syncIntervalMs: number; mapSize: number; idempotencyWindowMs: number },
    onCommit: (buf: Buffer) => void,
  ) => { commitMany(packed: Uint8Array, tokens: number[]): Buffer; close(): void };
};
const GOLDEN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'native', 'core', 'tests', 'golden');

/** A value as values.json describes it: one key naming the type. */
type Described =
  | { i64: string }
  | { u256: string }
  | { f64: string }
  | { bool: boolean }
  | { string: string }
  | { bytes: string }
  | { json: string }
  | { set: string[] }
  | { array: Described[] };

interface ValuesGolden {
  format: number;
  values: { name: string; value: Described; hex: string }[];
}

function build(d: Described): Value {
  if ('i64' in d) return i64(BigInt(d.i64));
  if ('u256' in d) return u256(BigInt(`0x${d.u256}`));
  if ('f64' in d) return f64(Buffer.from(d.f64, 'hex').readDoubleBE(0));
  if ('bool' in d) return bool(d.bool);
  if ('string' in d) return str(d.string);
  if ('bytes' in d) return bytes(Buffer.from(d.bytes, 'hex'));
  if ('json' in d) return json(JSON.parse(d.json));
  if ('set' in d) return set(d.set);
  return array(d.array.map(build));
}

const sandbox = new Sandbox();
afterEach(() => sandbox.cleanup());

describe('golden files', () => {
  const golden = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'values.json'), 'utf8')) as ValuesGolden;

  it('the TypeScript codec writes and reads every pinned value encoding', () => {
    expect(golden.values.length).toBeGreaterThan(20);
    const types = new Set<string>();
    for (const { name, value, hex } of golden.values) {
      const v = build(value);
      types.add(v.type);
      expect(encodeValue(v).toString('hex'), name).toBe(hex);
      const bytesIn = Buffer.from(hex, 'hex');
      const back = decodeValue(bytesIn, 0, bytesIn.length);
      expect(back.type, name).toBe(v.type);
      expect(encodeValue(back).toString('hex'), name).toBe(hex);
    }
    expect(types.size).toBe(9);
  });

  it('the golden store of each format opens through the addon and reads back what it holds', async () => {
    const stores = fs.readdirSync(GOLDEN).filter((n) => /^store-v\d+$/.test(n));
    expect(stores.length).toBeGreaterThan(0);
    for (const name of stores) {
      const expected = JSON.parse(fs.readFileSync(path.join(GOLDEN, `${name}.json`), 'utf8')) as {
        state: Record<string, { version: number; value: string } | null>;
        events: { id: number; commit_seq: number; type: string; record: string }[];
        last_event_id: number;
      };
      // Opening writes to the directory: work on a copy.
      const dir = sandbox.dir();
      fs.cpSync(path.join(GOLDEN, name), dir, { recursive: true });
      const db = await sandbox.open(dir);
      expect(db.verify().events, name).toBe(expected.last_event_id);
      for (const [key, entry] of Object.entries(expected.state)) {
        const v = db.getOpt(key);
        if (entry === null) expect(v, `${name} ${key}`).toBeUndefined();
        else expect(v && encodeValue(v).toString('hex'), `${name} ${key}`).toBe(entry.value);
      }
      const events = [...db.events.read()];
      expect(events.map((e) => [Number(e.id), Number(e.commitSeq), e.type])).toEqual(expected.events.map((e) => [e.id, e.commit_seq, e.type]));
      events.forEach((e, i) => {
        // [format][kind][commit_seq u64][at_ms u64][type_len u16][type][payload]
        const record = Buffer.from(expected.events[i]!.record, 'hex');
        expect(e.at).toBe(Number(record.readBigUInt64BE(10)));
        expect(e.payload).toEqual(JSON.parse(record.subarray(20 + record.readUInt16BE(18)).toString()));
      });
    }
  });
});

/** A wire-<format>.json golden (native/core/tests/golden.rs `wire_golden`). */
function wire<T>(format: string): T {
  return JSON.parse(fs.readFileSync(path.join(GOLDEN, `wire-${format}.json`), 'utf8')) as T;
}

/** A `wire-<format>-large.bin` golden: one case whose u32 lengths pass 65535. */
function large(name: string): Buffer {
  return fs.readFileSync(path.join(GOLDEN, name));
}

/** `len` bytes counting up modulo 251, as native/core/tests/golden.rs `filler` makes them. */
function filler(len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = i % 251;
  return b;
}

const hexOf = (s: string): Buffer => Buffer.from(s, 'hex');
const f32 = (bits: string): number => hexOf(bits).readFloatBE(0);

type RecordDecoded =
  | { status: 'applied' | 'duplicate'; commit_seq: string; first_event_id: string; event_count: number }
  | { status: 'failed'; code: string; message: string; sqlite_code: number | null; causes: string[] };

/** The messages down an error's `cause` chain, outermost first. */
function causeTexts(e: Error): string[] {
  const out: string[] = [];
  for (let c = e.cause; c instanceof Error; c = c.cause) out.push(c.message);
  return out;
}

/** What readCompletion must give for a record the golden describes. */
function expectRecord(r: { info?: unknown; error?: Error }, d: RecordDecoded, name: string): void {
  if (d.status === 'failed') {
    expect(r.info, name).toBeUndefined();
    // The decoder comes from ts/ (its decoders are internal to dist/), so its error classes are not dist's.
    expect(r.error, name).toBeInstanceOf(Error);
    const e = r.error as Error & { code?: unknown; sqliteCode?: unknown };
    expect([e.code, e.message, e.sqliteCode, causeTexts(e)], name).toEqual([d.code, d.message, d.sqlite_code ?? undefined, d.causes]);
  } else {
    expect(r.error, name).toBeUndefined();
    expect(r.info, name).toEqual({
      outcome: d.status,
      commitSeq: BigInt(d.commit_seq),
      firstEventId: d.event_count > 0 ? BigInt(d.first_event_id) : null,
      eventCount: d.event_count,
    });
  }
}

type HitDescribed = { id: string; score_bits: string; metadata: 'none' | { json: string } };
const expectedHit = (h: HitDescribed) => ({ id: h.id, score: f32(h.score_bits), metadata: h.metadata === 'none' ? undefined : parseJson(h.metadata.json) });
const hitOf = (id: string, score: number, metadata: unknown) => ({ id, score, metadata });

describe('the transaction batch: the TypeScript transaction encodes what Rust pinned', () => {
  it('reads, writes, deletes, trail puts and counts, JSON and bytes events, vector upsert and delete, idempotency key, stream appends, numeric ops', () => {
    const g = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'txn-batch-v5.json'), 'utf8')) as {
      reads: [string, string][];
      writes: ({ key: string; value: string } | { key: string; delete: true } | { key: string; trail: string } | { key: string; trail_count: string; at: string })[];
      events: ({ type: string; json: string } | { type: string; bytes: string })[];
      vectors: ({ collection: string; upsert: string; vector_bits: string[]; metadata: string } | { collection: string; delete: string })[];
      idempotency_key: string;
      appends: { stream: string; expected: string; events: { type: string; json: string }[] }[];
      numeric: { op: 'add' | 'sub' | 'max' | 'min'; key: string; type?: 'i64' | 'u256'; operand: string; min?: string; max?: string }[];
      hex: string;
    };
    // Only what the transaction asks its handle: the versions of the keys it reads, the collection's definition.
    const versions = new Map(g.reads.map(([k, v]) => [k, BigInt(v)]));
    const core = {
      assertOpen: () => undefined,
      txBegin: () => 1n,
      txGet: (key: string) => (versions.get(key)! === 0n ? undefined : { version: versions.get(key)!, value: sourceI64(0n) }),
      native: { vectorInfo: (name: string) => ({ name, dimension: 3, metric: 'cosine', m: 16, efConstruction: 200, efSearch: 50, quantization: 'none' }) },
    } as unknown as Core;
    const tx = new TxImpl(core);
    for (const [key] of g.reads) tx.getOpt(key);
    for (const w of g.writes) {
      if ('delete' in w) tx.delete(w.key);
      else if ('trail' in w) tx[TRAIL](w.key, decodeSourceValue(hexOf(w.trail), 0, w.trail.length / 2));
      else if ('trail_count' in w) tx[TRAIL_COUNT](w.key, Number(w.at), decodeSourceValue(hexOf(w.trail_count), 0, w.trail_count.length / 2));
      else tx.set(w.key, decodeSourceValue(hexOf(w.value), 0, w.value.length / 2));
    }
    for (const e of g.events) tx.log(e.type, 'json' in e ? JSON.parse(e.json) : new Uint8Array(hexOf(e.bytes)));
    for (const v of g.vectors) {
      if ('delete' in v) tx.vectors(v.collection).delete(v.delete);
      else tx.vectors(v.collection).upsert(v.upsert, Float32Array.from(v.vector_bits.map(f32)), JSON.parse(v.metadata));
    }
    for (const a of g.appends) {
      const expectedVersion = a.expected === 'none' || a.expected === 'any' ? a.expected : Number(a.expected);
      tx.append(a.stream, a.events.map((e) => ({ type: e.type, payload: JSON.parse(e.json) as unknown })), { expectedVersion });
    }
    for (const n of g.numeric) {
      tx[n.op](n.key, BigInt(n.operand), {
        ...(n.type === undefined ? {} : { type: n.type }),
        ...(n.min === undefined ? {} : { min: BigInt(n.min) }),
        ...(n.max === undefined ? {} : { max: BigInt(n.max) }),
      });
    }
    const w = new ByteWriter(4);
    tx.encode(w, g.idempotency_key);
    expect(w.view().toString('hex')).toBe(g.hex);
  });
});

describe('wire formats: the TypeScript decoders read the bytes the Rust encoders wrote', () => {
  it('commit completions: each record, and a group with its notice and tokens', () => {
    const g = wire<{
      records: { name: string; decoded: RecordDecoded; hex: string }[];
      group: { commit_seq: string; last_event_id: string; tokens: number[]; records: RecordDecoded[]; hex: string };
      large: { code: string; message_x_times: number; cause_y_times: number; bin: string };
    }>('completion');
    const big = large(g.large.bin);
    const r = readCompletion(big, 0);
    expectRecord(r, { status: 'failed', code: g.large.code, message: 'x'.repeat(g.large.message_x_times), sqlite_code: null, causes: ['y'.repeat(g.large.cause_y_times)] }, 'large');
    expect(r.end).toBe(big.length);
    expect(g.records.map((r) => r.decoded.status).sort()).toEqual(['applied', 'applied', 'duplicate', 'failed', 'failed']);
    expect(g.records.some((r) => r.decoded.status === 'failed' && r.decoded.sqlite_code !== null && r.decoded.causes.length > 1), 'a record with a SQLite code and a chain of causes').toBe(true);
    for (const { name, decoded, hex } of g.records) {
      const buf = hexOf(hex);
      const r = readCompletion(buf, 0);
      expectRecord(r, decoded, name);
      expect(r.end, name).toBe(buf.length);
    }
    const buf = hexOf(g.group.hex);
    expect(readGroupNotice(buf)).toEqual({ commitSeq: BigInt(g.group.commit_seq), lastEventId: BigInt(g.group.last_event_id) });
    expect(readGroupSize(buf)).toBe(g.group.tokens.length);
    let off = GROUP_HEADER;
    g.group.tokens.forEach((token, i) => {
      expect(readToken(buf, off)).toBe(token);
      const r = readCompletion(buf, off + TOKEN_LEN);
      expectRecord(r, g.group.records[i]!, `group record ${i}`);
      off = r.end;
    });
    expect(off).toBe(buf.length);
  });

  it('commitMany: the TypeScript encoder writes the frames byte for byte, and reads the answer', () => {
    const g = wire<{
      frames: { token: number; batch: string }[];
      hex: string;
      answer: { tokens: number[]; codes: string[]; messages: string[]; hex: string };
      large: { token: number; batch_filler: number; bin: string };
    }>('commit-many');
    const big = new ByteWriter(4);
    const at = beginFrame(big, g.large.token);
    big.bytes(filler(g.large.batch_filler));
    endFrame(big, at);
    expect(big.view().equals(large(g.large.bin))).toBe(true);
    const w = new ByteWriter(4);
    for (const { token, batch } of g.frames) {
      const at = beginFrame(w, token);
      w.bytes(hexOf(batch));
      endFrame(w, at);
    }
    expect(w.view().toString('hex')).toBe(g.hex);
    const failed: [number, unknown, string][] = [];
    readFailures(hexOf(g.answer.hex), (token, error) => failed.push([token, (error as Error & { code?: unknown }).code, error.message]));
    expect(failed).toEqual(g.answer.tokens.map((t, i) => [t, g.answer.codes[i], g.answer.messages[i]]));
  });

  it("the addon's commitMany answer: a batch it refuses fails alone with its code; broken framing fails the rest", () => {
    const batch = hexOf(JSON.parse(fs.readFileSync(path.join(GOLDEN, 'txn-batch-v2.json'), 'utf8')).hex as string);
    const handle = new binding.NativeDb(sandbox.dir(), { durability: 'none', syncIntervalMs: 0, mapSize: 1 << 24, idempotencyWindowMs: 60_000 }, () => undefined);
    try {
      const frames = (list: [number, Uint8Array][]): Buffer => {
        const w = new ByteWriter(64);
        for (const [token, body] of list) {
          const at = beginFrame(w, token);
          w.bytes(body);
          endFrame(w, at);
        }
        return Buffer.from(w.view());
      };
      const answer = (packed: Buffer, tokens: number[]): [number, unknown][] => {
        const failed: [number, unknown][] = [];
        readFailures(handle.commitMany(packed, tokens), (token, error) => failed.push([token, (error as Error & { code?: unknown }).code]));
        return failed;
      };
      // Token 1: not a batch. Token 2: a batch whose vector collection does not exist.
      expect(answer(frames([[1, Buffer.from([0xff])], [2, batch]]), [1, 2])).toEqual([
        [1, 'ERR_INVALID_ARGUMENT'],
        [2, 'ERR_NOT_FOUND'],
      ]);
      // The second frame carries another token than announced: it and every later one fail.
      expect(answer(frames([[3, Buffer.from([0xff])], [9, batch], [5, batch]]), [3, 4, 5])).toEqual([
        [3, 'ERR_INVALID_ARGUMENT'],
        [4, 'ERR_INTERNAL'],
        [5, 'ERR_INTERNAL'],
      ]);
    } finally {
      handle.close();
    }
  });

  it('packed events', () => {
    const g = wire<{
      events: { id: string; commit_seq: string; at_ms: number; kind: number; type: string; payload: string }[];
      hex: string;
      empty: string;
      large: { event: { id: string; commit_seq: string; at_ms: number; type: string; payload_filler: number }; bin: string };
    }>('events');
    const e = g.large.event;
    expect(decodeEvents(large(g.large.bin))).toEqual([
      { id: BigInt(e.id), commitSeq: BigInt(e.commit_seq), at: e.at_ms, type: e.type, payload: new Uint8Array(filler(e.payload_filler)) },
    ]);
    expect(decodeEvents(hexOf(g.empty))).toEqual([]);
    expect(decodeEvents(hexOf(g.hex))).toEqual(
      g.events.map((e) => ({
        id: BigInt(e.id),
        commitSeq: BigInt(e.commit_seq),
        at: e.at_ms,
        type: e.type,
        payload: e.kind === 1 ? parseJson(hexOf(e.payload).toString('utf8')) : new Uint8Array(hexOf(e.payload)),
      })),
    );
  });

  it('a page of state entries', () => {
    const g = wire<{ entries: { key: string; value: string }[]; hex: string; large: { key_k_times: number; value_bytes_filler: number; bin: string } }>('state-list');
    const asHex = (key: string, buf: Buffer, off: number, len: number) => ({ key, value: buf.toString('hex', off, off + len) });
    const [big, ...rest] = readStateList(large(g.large.bin), asHex);
    expect(rest).toEqual([]);
    expect(big!.key).toBe('k'.repeat(g.large.key_k_times));
    expect(decodeValue(hexOf(big!.value), 0, big!.value.length / 2).asBytes()).toEqual(new Uint8Array(filler(g.large.value_bytes_filler)));
    const read = readStateList(hexOf(g.hex), asHex);
    expect(read).toEqual(g.entries);
    // The values are what the value codec reads.
    expect(read.map((e) => decodeValue(hexOf(e.value), 0, e.value.length / 2).type)).toEqual(['i64', 'string', 'bytes']);
  });

  it('search hits, one search and a batch', () => {
    const g = wire<{
      hits: HitDescribed[];
      hex: string;
      batch: { queries: HitDescribed[][]; hex: string };
      large: { id: string; score_bits: string; metadata_string_x_times: number; bin: string };
    }>('hits');
    const bigHits: ReturnType<typeof hitOf>[] = [];
    readHits(large(g.large.bin), 0, bigHits, hitOf);
    expect(bigHits).toEqual([{ id: g.large.id, score: f32(g.large.score_bits), metadata: 'x'.repeat(g.large.metadata_string_x_times) }]);
    const buf = hexOf(g.hex);
    const out: ReturnType<typeof hitOf>[] = [];
    expect(readHits(buf, 0, out, hitOf)).toBe(buf.length);
    expect(out).toEqual(g.hits.map(expectedHit));
    expect(readHitBatch(hexOf(g.batch.hex), hitOf)).toEqual(g.batch.queries.map((q) => q.map(expectedHit)));
  });

  it('a stored document, with and without metadata', () => {
    const g = wire<{ dimension: number; documents: { vector_bits: string[]; metadata: string; hex: string }[] }>('document');
    for (const d of g.documents) {
      const { vector, metadata } = readDocument(hexOf(d.hex), g.dimension);
      expect(Array.from(vector)).toEqual(d.vector_bits.map(f32));
      expect(metadata).toEqual(d.metadata === '' ? undefined : parseJson(d.metadata));
    }
  });

  it("a transaction's entry read, alone and at the start of a longer scratch buffer", () => {
    const g = wire<{ version: string; value: string; hex: string }>('entry');
    const exact = hexOf(g.hex);
    const scratch = Buffer.concat([exact, Buffer.alloc(16, 0xee)]);
    for (const buf of [exact, scratch]) {
      expect(readEntry(buf, exact.length, (b, off, len) => b.toString('hex', off, off + len))).toEqual({ version: BigInt(g.version), value: g.value });
    }
  });
});

describe('the commit record (native/core/src/wire/commit_record.rs)', () => {
  it("its head read by the replica's follower, and where the batch starts", () => {
    const g = wire<{ format: number; database_id: string; commit_seq: string; at_ms: string; first_event_id: string; collections: { name: string; def: string }[]; batch: string; hex: string }>('commit-record');
    const bytes = hexOf(g.hex);
    const head = readCommitRecordHead(bytes);
    expect(head).toEqual({ databaseId: g.database_id, commitSeq: BigInt(g.commit_seq), atMs: Number(g.at_ms), firstEventId: BigInt(g.first_event_id), collections: g.collections.map((c) => c.name), batchOffset: bytes.length - g.batch.length / 2 });
    expect(bytes.subarray(head.batchOffset).toString('hex')).toBe(g.batch);
    expect(bytes[0]).toBe(g.format);
  });
});

describe('wire formats: stream reads', () => {
  it('a stream page and a list of streams', () => {
    const g = wire<{
      page: { first_version: string; event: { id: string; commit_seq: string; at_ms: number; type: string; json: string }; hex: string };
      list: { rows: [string, string][]; hex: string };
    }>('streams');
    const e = g.page.event;
    expect(readStreamPage(hexOf(g.page.hex))).toEqual({
      firstVersion: Number(g.page.first_version),
      events: [{ id: BigInt(e.id), commitSeq: BigInt(e.commit_seq), at: e.at_ms, type: e.type, payload: parseJson(e.json) }],
    });
    expect(readStreamList(hexOf(g.list.hex))).toEqual(g.list.rows.map(([streamId, v]) => ({ streamId, version: Number(v) })));
  });
});

describe('the TypeScript value decoder on arbitrary bytes', () => {
  /**
   * Decodes, or returns the error; anything but a typed ERR_TYPE error (ERR_VERSION for
   * an unknown format byte) fails the property.
   */
  function decodeOrError(b: Buffer): Value | AthanorError {
    try {
      return decodeValue(b, 0, b.length);
    } catch (e) {
      expect(e).toBeInstanceOf(AthanorError);
      expect((e as AthanorError).code).toBe(b.length > 0 && b[0] !== 1 ? 'ERR_VERSION' : 'ERR_TYPE');
      return e as AthanorError;
    }
  }

  /** Rust's reading of the bytes (type and canonical encoding), or the code it refuses them with. */
  function rust(b: Buffer): [string, string] | { code: unknown } {
    try {
      const [type, canonical] = binding.codecRoundTrip(b);
      return [type, Buffer.from(canonical).toString('hex')];
    } catch (e) {
      return { code: (e as { code?: unknown }).code };
    }
  }

  /**
   * The value rebuilt through the constructors, which sort set members: Rust accepts a set
   * whose members arrive unsorted and re-encodes it sorted; TypeScript keeps the order it read.
   */
  function canonical(v: Value): Value {
    if (v.type === 'set') return set(v.asSet());
    if (v.type === 'array') return array(v.asArray().map(canonical));
    return v;
  }

  function check(b: Buffer): void {
    const ts = decodeOrError(b);
    const r = rust(b);
    // What Rust accepts (every value on disk), TypeScript reads as the same value;
    // what Rust refuses, TypeScript refuses with the same code.
    if (Array.isArray(r)) {
      expect(ts).toBeInstanceOf(Value);
      expect([(ts as Value).type, encodeValue(canonical(ts as Value)).toString('hex')]).toEqual(r);
    } else {
      expect(ts).toBeInstanceOf(AthanorError);
      expect((ts as AthanorError).code).toBe(r.code);
    }
  }

  it('arbitrary bytes: a typed error or a value, never a different reading than Rust', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (raw) => check(Buffer.from(raw))),
      { numRuns: 3000 },
    );
  });

  it('bytes that start like a value (format byte and a known tag)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9 }), fc.uint8Array({ maxLength: 48 }), (tag, body) => check(Buffer.concat([Buffer.from([1, tag]), body]))),
      { numRuns: 3000 },
    );
  });

  it('pinned values with bytes flipped, cut or added', () => {
    const encodings = golden().values.map((v) => Buffer.from(v.hex, 'hex'));
    fc.assert(
      fc.property(
        fc.constantFrom(...encodings),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'cut', 'insert')), { minLength: 1, maxLength: 3 }),
        (enc, edits) => {
          let b = Buffer.from(enc);
          for (const [at, byte, op] of edits) {
            const i = at % (b.length + 1);
            if (op === 'set' && i < b.length) b[i] = byte;
            else if (op === 'cut') b = b.subarray(0, i);
            else b = Buffer.concat([b.subarray(0, i), Buffer.from([byte]), b.subarray(i)]);
          }
          check(b);
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe('array nesting', () => {
  it('a value nested deeper than 128 arrays is refused with ERR_TYPE before anything is written', async () => {
    const db = await sandbox.open(undefined, { durability: 'none' });
    const nest = (depth: number): Value => {
      let v = bool(true);
      for (let i = 0; i < depth; i++) v = array([v]);
      return v;
    };
    await db.transaction().execute((tx) => tx.set('ok', nest(128)));
    const e = await expectRejects(db.transaction().execute((tx) => {
      tx.set('deep', nest(129));
      tx.log('never', {});
    }), ValueTypeError, 'ERR_TYPE');
    expect(e.message).toMatch(/nest at most 128/);
    expect(db.getOpt('deep')).toBeUndefined();
    expect(db.events.lastId).toBe(0n);
    expect(encodeValue(db.get('ok')).equals(encodeValue(nest(128)))).toBe(true);
  });
});

function golden(): ValuesGolden {
  return JSON.parse(fs.readFileSync(path.join(GOLDEN, 'values.json'), 'utf8')) as ValuesGolden;
}
