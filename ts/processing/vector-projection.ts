/**
 * Event-derived vectors: a declared projection that embeds a field of events of
 * given types into a vector collection, so the collection follows the log and can
 * always be rebuilt from it.
 *
 * Exactly once: the projection's cursor is a reserved state key in LMDB, written in
 * the same commit as the vectors of its batch (invariant 1), after checking that it
 * still holds the value the batch started from. A crash before the commit loses
 * nothing but the embedding work; two processes running the same projection never
 * both commit a batch. Error strategies and dead letters are the SQL processors'.
 */
import { INTERNAL } from '../state/reserved.js';
import { describeThrown } from '../internal/thrown.js';
import { i64, type Json } from '../state/codec.js';
import type { Embedder } from '../embed/embed.js';
import { HandlerError, InvalidArgumentError, fromNative } from '../errors.js';
import type { StoredEvent } from '../state/events.js';
import { decodeEvents } from '../internal/event-pack.js';
import { codeOf, recordDeadLetter } from './bookkeeping.js';
import { checkOptions } from './options.js';
import { Processor } from './processor.js';
import type { Applier, CursorStore, Failure, ProcessorHost, ProcessorOptions } from './types.js';
import type { TransactionBuilder } from '../state/transaction.js';
import { RESERVED_PREFIX, checkNewCollectionName } from '../state/reserved.js';
import { checkDocId, sourcedMetaText, type TxVectorsImpl } from '../state/tx-vectors.js';
import type { VectorCollection } from '../vectors/collection.js';
import type { VectorStore } from '../vectors/store.js';
import type { CollectionOptions } from '../vectors/types.js';

/**
 * Where a field comes from: the event id (`'@id'`) or type (`'@type'`), or a path into
 * the JSON payload: `'$.title'`, `'$.doc.body'`, `'$.items[0]'`, `'$["odd key"]'`.
 */
export type FieldSource = '@id' | '@type' | `$${string}`;

/** Embeds a text of each event of a type into the collection (insert or replace). */
export interface EmbedRule<M = Json> {
  /** Document id (default `'@id'`, the event id). Numbers are turned into strings. */
  id?: FieldSource | ((event: StoredEvent) => string);
  /** The text to embed: a field, or a function of the event (e.g. joining title and body). */
  text: FieldSource | ((event: StoredEvent) => string);
  /** Document metadata: fields by key (`{ lang: '$.lang' }`), or a function of the event. */
  metadata?: { readonly [key: string]: FieldSource } | ((event: StoredEvent) => M | undefined);
}

/** Deletes the document an event names. */
export interface DeleteRule {
  /** Marks the rule as a delete. */
  delete: true;
  /** Document id (default `'@id'`). */
  id?: FieldSource | ((event: StoredEvent) => string);
}

/** A vector projection: event types mapped to embed or delete rules. */
export interface VectorProjectionSpec<M = Json> extends Omit<ProcessorOptions, 'handlers' | 'reset' | 'allowPendingMigrations'> {
  /** Name: the cursor's and the dead letters' key (shared namespace with processors and SQL projections). */
  name: string;
  /** The collection the vectors go to; created with the embedder's dimension when missing. */
  collection: string;
  /** The embedder; the collection remembers its model and refuses another. */
  embedder: Embedder;
  /** Parameters for creating the collection (metric, m, efConstruction, efSearch). */
  collectionOptions?: Omit<CollectionOptions, 'dimension' | 'embedder'>;
  /** Event type → rule. Events of other types only move the cursor. */
  on: { readonly [eventType: string]: EmbedRule<M> | DeleteRule };
  /**
   * Events per batch: one embedding call for the batch's texts and one commit of
   * its vectors with the cursor. Default 256 (embedding is the slow part: smaller
   * batches than a SQL processor's keep each commit, and the work a crash loses, short).
   */
  batchSize?: number;
}

/**
 * A running vector projection: a {@link Processor} (run, catchUp, rebuild, dead
 * letters) that also hands out the collection it writes.
 */
export class VectorProjection<M = Json> extends Processor {
  /**
   * The collection the projection writes, opened with its embedder: `searchText`
   * works, hits carry the `eventId` of their source event, and with
   * `{ withText: true }` the text that was embedded.
   */
  get collection(): VectorCollection<M> {
    return (this.applier as VectorApplier).collection<M>();
  }
}

type Getter = (event: StoredEvent) => unknown;

interface CompiledRule {
  kind: 'upsert' | 'delete';
  id: Getter;
  text?: Getter;
  metadata?: Getter;
}

/** One vector write of a batch, in event order. */
interface Op {
  kind: 'upsert' | 'delete';
  id: string;
  text?: string;
  /** The stored metadata (see `sourcedMetaText`). */
  meta?: string;
}

/** Compiles `'$.a.b[0]["k"]'` / `'@id'` / `'@type'` into a getter. */
function compilePath(src: string, what: string): Getter {
  if (src === '@id') return (e) => String(e.id);
  if (src === '@type') return (e) => e.type;
  if (typeof src !== 'string' || !src.startsWith('$')) throw new InvalidArgumentError(`${what} must be '@id', '@type' or a payload path like '$.text', got ${describeThrown(src)}`);
  const steps: (string | number)[] = [];
  const re = /\.([A-Za-z_$][\w$]*)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]/y;
  let at = 1;
  while (at < src.length) {
    re.lastIndex = at;
    const m = re.exec(src);
    if (m === null) throw new InvalidArgumentError(`${what}: cannot parse path ${describeThrown(src)} at offset ${at}; use $.name, [index] or ["key"]`);
    steps.push(m[1] ?? (m[2] !== undefined ? Number(m[2]) : (JSON.parse(`"${m[3]!}"`) as string)));
    at = re.lastIndex;
  }
  return (e) => {
    let v: unknown = e.payload;
    for (const s of steps) {
      if (v === null || typeof v !== 'object') return undefined;
      v = (v as Record<string | number, unknown>)[s];
    }
    return v;
  };
}

function compileSource(src: unknown, what: string): Getter {
  if (typeof src === 'function') return src as Getter;
  return compilePath(src as string, what);
}

function compileRule(type: string, rule: unknown): CompiledRule {
  const where = `vector projection rule for ${JSON.stringify(type)}`;
  if (rule === null || typeof rule !== 'object') throw new InvalidArgumentError(`${where} must be { text, id?, metadata? } or { delete: true, id? }`);
  const r = rule as Partial<EmbedRule> & Partial<DeleteRule>;
  const id = compileSource(r.id ?? '@id', `${where}: id`);
  if (r.delete === true) return { kind: 'delete', id };
  if (r.text === undefined) throw new InvalidArgumentError(`${where} needs text (a payload path like '$.body' or a function of the event)`);
  const text = compileSource(r.text, `${where}: text`);
  let metadata: Getter | undefined;
  if (typeof r.metadata === 'function') metadata = r.metadata as Getter;
  else if (r.metadata !== undefined) {
    if (r.metadata === null || typeof r.metadata !== 'object') throw new InvalidArgumentError(`${where}: metadata must be { key: source } or a function`);
    const fields = Object.entries(r.metadata).map(([k, s]) => [k, compilePath(s, `${where}: metadata.${k}`)] as const);
    metadata = (e) => {
      const o: Record<string, unknown> = {};
      for (const [k, g] of fields) {
        const v = g(e);
        if (v !== undefined) o[k] = v;
      }
      return o;
    };
  }
  return { kind: 'upsert', id, text, ...(metadata ? { metadata } : {}) };
}

/** A batch found the cursor moved by another process (or handle) before it committed. */
class CursorMoved extends Error {}

/** Applies a vector projection; its cursor lives in LMDB. @internal */
export class VectorApplier implements Applier, CursorStore {
  readonly #host: ProcessorHost;
  readonly #name: string;
  readonly #key: string;
  readonly #rules: Map<string, CompiledRule>;
  readonly #embedder: Embedder;
  readonly #collection: string;
  readonly #collectionOptions: Omit<CollectionOptions, 'dimension' | 'embedder'>;
  readonly #vectors: VectorStore;
  readonly #tx: () => TransactionBuilder;

  constructor(host: ProcessorHost, spec: VectorProjectionSpec<unknown>, vectors: VectorStore, tx: () => TransactionBuilder) {
    this.#host = host;
    this.#name = spec.name;
    this.#key = `${RESERVED_PREFIX}vector-projection/${spec.name}`;
    this.#rules = new Map(Object.entries(spec.on).map(([t, r]) => [t, compileRule(t, r)]));
    this.#embedder = spec.embedder;
    this.#collection = spec.collection;
    this.#collectionOptions = spec.collectionOptions ?? {};
    this.#vectors = vectors;
    this.#tx = tx;
    this.#ensureCollection();
  }

  #ensureCollection(): void {
    if (this.#vectors.has(this.#collection)) this.#vectors.open(this.#collection, { embedder: this.#embedder });
    else this.#vectors.create(this.#collection, { ...this.#collectionOptions, embedder: this.#embedder });
  }

  /** The collection, opened with the embedder and a way back from a hit to its text. */
  collection<M>(): VectorCollection<M> {
    return this.#vectors.openWithTexts<M>(this.#collection, this.#embedder, (eventId) => this.#textOf(eventId));
  }

  /** The text an event gave to embed, read again from the log. */
  #textOf(eventId: bigint): string | undefined {
    const ev = this.#host.event(eventId);
    const rule = ev === undefined ? undefined : this.#rules.get(ev.type);
    if (ev === undefined || rule?.text === undefined) return undefined;
    try {
      const text = rule.text(ev);
      return typeof text === 'string' ? text : undefined;
    } catch {
      return undefined;
    }
  }

  read(): bigint {
    return this.#host.core.get(this.#key)?.asI64() ?? 0n;
  }

  /** The write an event asks for, or undefined for types without a rule; throws HandlerError for a bad event. */
  #op(ev: StoredEvent): Op | undefined {
    const rule = this.#rules.get(ev.type);
    if (rule === undefined) return undefined;
    const fail = (msg: string, cause?: unknown) =>
      new HandlerError(`vector projection ${JSON.stringify(this.#name)}: event ${ev.id} (${ev.type}) ${msg}`, { ...(cause !== undefined ? { cause } : {}), eventId: ev.id });
    let id: unknown;
    try {
      id = rule.id(ev);
    } catch (e) {
      throw fail(`id: ${(e as Error).message}`, e);
    }
    if (typeof id === 'number' && Number.isFinite(id)) id = String(id);
    if (typeof id !== 'string' || id.length === 0) throw fail(`has no usable document id (got ${id === undefined ? 'nothing' : typeof id === 'bigint' ? `${id}n` : JSON.stringify(id)})`);
    // Checked per event, so a bad one goes to the error strategy instead of failing its whole batch.
    try {
      checkDocId(id);
    } catch (e) {
      throw fail(`document id: ${(e as Error).message}`, e);
    }
    if (rule.kind === 'delete') return { kind: 'delete', id };
    let text: unknown;
    let metadata: unknown;
    try {
      text = rule.text!(ev);
      metadata = rule.metadata?.(ev);
    } catch (e) {
      throw fail(`text/metadata: ${(e as Error).message}`, e);
    }
    if (typeof text !== 'string') throw fail(`has no text to embed (got ${text === undefined ? 'nothing' : typeof text})`);
    let meta: string;
    try {
      meta = sourcedMetaText(metadata, ev.id, 'metadata');
    } catch (e) {
      throw fail(`metadata: ${(e as Error).message}`, e);
    }
    return { kind: 'upsert', id, text, meta };
  }

  /** Embeds the upserts of `ops` and commits them with the cursor moved from `expect` to `cursor`. False when the cursor moved meanwhile. */
  async #commit(expect: bigint | null, ops: readonly Op[], cursor: bigint | null): Promise<boolean> {
    const texts = ops.filter((o) => o.kind === 'upsert').map((o) => o.text!);
    const flat = texts.length > 0 ? await this.#embedder.embedFlat(texts) : new Float32Array(0);
    const d = this.#embedder.dimension;
    try {
      await this.#tx().execute((tx) => {
        if (expect !== null && (tx.getOpt(this.#key)?.asI64() ?? 0n) !== expect) throw new CursorMoved();
        const v = tx.vectors(this.#collection) as TxVectorsImpl<unknown>;
        let k = 0;
        for (const o of ops) {
          if (o.kind === 'delete') v.delete(o.id);
          else {
            v.upsertEncoded(o.id, flat.subarray(k * d, (k + 1) * d), o.meta!);
            k++;
          }
        }
        if (cursor !== null) tx.set(this.#key, i64(cursor));
      });
      return true;
    } catch (e) {
      if (e instanceof CursorMoved) return false;
      throw fromNative(e);
    }
  }

  async batch(limit: number): Promise<{ consumed: number; cursor: bigint; failure?: Failure }> {
    const start = this.read();
    let events: StoredEvent[];
    try {
      events = decodeEvents(this.#host.core.native.readEvents(start + 1n, null, null, limit, false));
    } catch (e) {
      throw fromNative(e);
    }
    const ops: Op[] = [];
    let failure: Failure | undefined;
    let consumed = 0;
    for (const ev of events) {
      try {
        const op = this.#op(ev);
        if (op !== undefined) ops.push(op);
      } catch (e) {
        failure = { event: ev, error: e instanceof Error ? e : new Error(String(e)) };
        break;
      }
      consumed++;
    }
    if (consumed === 0) return { consumed: 0, cursor: start, ...(failure ? { failure } : {}) };
    const cursor = events[consumed - 1]!.id;
    if (!(await this.#commit(start, ops, cursor))) return { consumed: 0, cursor: this.read() };
    return { consumed, cursor, ...(failure ? { failure } : {}) };
  }

  async passOver(expect: bigint, event: StoredEvent, dead: { error: Error; attempts: number } | undefined): Promise<boolean> {
    if (this.read() !== expect) return false;
    // The dead letter is keyed by (projection, event): recording it again after a crash between here and the commit only counts an attempt.
    if (dead !== undefined) recordDeadLetter(this.#host.sql, this.#name, event, dead.error, dead.attempts);
    return this.#commit(expect, [], event.id);
  }

  async reset(): Promise<void> {
    // Cursor first: a crash after it leaves stale documents that the replay overwrites or deletes again.
    await this.#tx().execute((tx) => tx.delete(this.#key));
    this.#host.sql[INTERNAL]().run('DELETE FROM _athanor_dead_letters WHERE processor = ?', [this.#name]);
    const info = this.#vectors.open(this.#collection).info;
    this.#vectors.drop(this.#collection);
    this.#vectors.create(this.#collection, { metric: info.metric, m: info.m, efConstruction: info.efConstruction, efSearch: info.efSearch, embedder: this.#embedder });
  }

  async retryDeadLetter(id: number): Promise<Error | undefined> {
    const sql = this.#host.sql;
    const row = sql.get<{ event_id: number | bigint }>('SELECT event_id FROM _athanor_dead_letters WHERE id = ? AND processor = ?', [id, this.#name]);
    if (row === undefined) throw new InvalidArgumentError(`vector projection ${JSON.stringify(this.#name)} has no dead letter ${id}`);
    const ev = this.#host.event(BigInt(row.event_id));
    if (ev === undefined) throw new InvalidArgumentError(`event ${row.event_id} of dead letter ${id} is not in the log`);
    let op: Op | undefined;
    try {
      op = this.#op(ev);
    } catch (e) {
      const err = e as Error;
      sql[INTERNAL]().run('UPDATE _athanor_dead_letters SET attempts = attempts + 1, error_code = ?, error = ?, last_failed_at = ? WHERE id = ?', [codeOf(err), err.message, Date.now(), id]);
      return err;
    }
    if (op !== undefined) await this.#commit(null, [op], null);
    sql[INTERNAL]().run('DELETE FROM _athanor_dead_letters WHERE id = ?', [id]);
    return undefined;
  }
}

/** Checks a spec before anything is created. @internal */
export function checkVectorSpec(spec: unknown): asserts spec is VectorProjectionSpec<unknown> {
  if (spec === null || typeof spec !== 'object') throw new InvalidArgumentError('a vector projection is an object { name, collection, embedder, on }');
  const s = spec as VectorProjectionSpec<unknown>;
  const { name, on, collection, embedder, collectionOptions: _c, ...rest } = s;
  checkOptions(name, rest, false);
  if (typeof collection !== 'string' || collection.length === 0 || !collection.isWellFormed()) {
    throw new InvalidArgumentError(`vector projection ${JSON.stringify(name)} needs collection: the name of a vector collection (well-formed Unicode)`);
  }
  checkNewCollectionName(collection);
  if (embedder === null || typeof embedder !== 'object' || typeof embedder.embedFlat !== 'function') {
    throw new InvalidArgumentError(`vector projection ${JSON.stringify(name)} needs embedder: an Embedder (Embedder.open / fromPretrained)`);
  }
  if (on === null || typeof on !== 'object' || Object.keys(on).length === 0) {
    throw new InvalidArgumentError(`vector projection ${JSON.stringify(name)} needs \`on\`: event type → { text, id?, metadata? } or { delete: true, id? }`);
  }
  for (const [t, r] of Object.entries(on)) compileRule(t, r);
}
