/**
 * The applier of a vector projection: embeds a batch of events and commits the vectors
 * with the cursor (a reserved LMDB key) in one transaction.
 */
import { HandlerError, InvalidArgumentError, fromNative } from '../errors.js';
import type { Embedder } from '../embed/embed.js';
import { decodeEvents } from '../internal/event-pack.js';
import { i64 } from '../state/codec.js';
import type { StoredEvent } from '../state/events.js';
import { INTERNAL, RESERVED_PREFIX } from '../state/reserved.js';
import type { TransactionBuilder } from '../state/transaction.js';
import { checkDocId, sourcedMetaText, type TxVectorsImpl } from '../state/tx-vectors.js';
import type { VectorCollection } from '../vectors/collection.js';
import type { VectorStore } from '../vectors/store.js';
import type { CollectionOptions } from '../vectors/types.js';
import { deadLetterEvent, deadLetterFailedAgain, recordDeadLetter } from './bookkeeping.js';
import type { Applier, CursorStore, Failure, ProcessorHost } from './types.js';
import type { CollectionSource, VectorProjectionSpec } from './vector-projection.js';
import { compileRule, type CompiledRule } from './vector-spec.js';

/** One vector write of a batch, in event order. */
interface Op {
  kind: 'upsert' | 'delete';
  id: string;
  text?: string;
  /** The stored metadata (see `sourcedMetaText`). */
  meta?: string;
}

/** A batch found the cursor moved by another process (or handle) before it committed. */
class CursorMoved extends Error {}

/** Applies a vector projection; its cursor lives in LMDB. @internal */
export class VectorApplier implements Applier, CursorStore, CollectionSource {
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
      events = this.#host.core.upcasters.apply(decodeEvents(this.#host.core.native.readEvents(start + 1n, null, null, limit, false)));
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
    this.#host.sql[INTERNAL]().removeDeadLetters(this.#name);
    const info = this.#vectors.open(this.#collection).info;
    this.#vectors.drop(this.#collection);
    this.#vectors.create(this.#collection, { metric: info.metric, m: info.m, efConstruction: info.efConstruction, efSearch: info.efSearch, embedder: this.#embedder });
  }

  async retryDeadLetter(id: number): Promise<Error | undefined> {
    const sql = this.#host.sql;
    const eventId = deadLetterEvent(sql, this.#name, id);
    if (eventId === undefined) throw new InvalidArgumentError(`vector projection ${JSON.stringify(this.#name)} has no dead letter ${id}`);
    const ev = this.#host.event(eventId);
    if (ev === undefined) throw new InvalidArgumentError(`event ${eventId} of dead letter ${id} is not in the log`);
    let op: Op | undefined;
    try {
      op = this.#op(ev);
    } catch (e) {
      const err = e as Error;
      deadLetterFailedAgain(sql, id, err);
      return err;
    }
    if (op !== undefined) await this.#commit(null, [op], null);
    sql[INTERNAL]().removeDeadLetter(this.#name, id);
    return undefined;
  }
}
