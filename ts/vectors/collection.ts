/** One vector collection: writes, searches, text methods, index upkeep. */
import { InvalidArgumentError, VectorDimensionError, fromNative } from '../errors.js';
import type { Embedder } from '../embed/embed.js';
import { stringifyStrict } from '../internal/json.js';
import { readDocument, readHitBatch, readHits } from '../internal/vector-pack.js';
import type { NativeCollection } from '../internal/native.js';
import { describeThrown } from '../internal/thrown.js';
import type { Json } from '../state/codec.js';
import type { TransactionBuilder } from '../state/transaction.js';
import { checkDocId, infoOf, type CollectionInfo } from '../state/tx-vectors.js';
import { toHit, unwrapMeta } from './hits.js';
import type { IndexStats, LoadProgress, MetadataFilter, SearchExplain, SearchOptions, TextDocument, TextUpsertOptions, VectorDocument, VectorHit } from './types.js';

const DEFAULT_K = 10;
/** How often {@link VectorCollection.ready} reads the loading progress. */
const LOAD_POLL_MS = 20;

/** @internal */
export function intIn(v: unknown, lo: number, hi: number, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw new InvalidArgumentError(`${what} must be an integer between ${lo} and ${hi}, got ${describeThrown(v)}`);
  return v;
}

/**
 * One vector collection. Writes are transactions of their own (group-committed,
 * durable when the promise resolves); to write vectors together with state and
 * events, use `tx.vectors(name)` inside `db.transaction().execute(...)`.
 * Searches see every commit whose promise has resolved.
 */
export class VectorCollection<M = Json> {
  readonly #native: NativeCollection;
  readonly #tx: () => TransactionBuilder;
  /** The collection's definition. */
  readonly info: CollectionInfo;
  /** The embedder of the text methods, when the collection was created or opened with one. */
  readonly embedder: Embedder | undefined;
  readonly #textOf: ((eventId: bigint) => string | undefined) | undefined;

  /** @internal `textOf` gives the embedded text of a source event (collections of vector projections). */
  constructor(native: NativeCollection, tx: () => TransactionBuilder, embedder?: Embedder, textOf?: (eventId: bigint) => string | undefined) {
    this.#native = native;
    this.#tx = tx;
    this.info = infoOf(native.info());
    this.embedder = embedder;
    this.#textOf = textOf;
  }

  /** @internal */
  get native(): NativeCollection {
    return this.#native;
  }

  #textEmbedder(): Embedder {
    if (this.embedder === undefined) {
      throw new InvalidArgumentError(`collection ${JSON.stringify(this.info.name)} has no embedder: create or open it with { embedder } to use the text methods`);
    }
    return this.embedder;
  }

  /** Embeds `text` with the collection's embedder and inserts or replaces the document. Resolves once committed. */
  async upsertText(id: string, text: string, metadata?: M): Promise<void> {
    checkDocId(id);
    if (typeof text !== 'string') throw new InvalidArgumentError(`text must be a string, got ${text === null ? 'null' : typeof text}`);
    const v = await this.#textEmbedder().embed(text);
    await this.upsert(id, v, metadata);
  }

  /**
   * Embeds and upserts many text documents, in chunks: each chunk is one embedding
   * call (batched, on the thread pool) and one transaction. Every document is checked
   * before the first chunk runs, so bad input writes nothing. An abort or a failure
   * leaves earlier chunks committed; upserts are idempotent, so re-running is safe.
   */
  async upsertTexts(docs: readonly TextDocument<M>[], options: TextUpsertOptions = {}): Promise<{
    /** Documents committed. */
    upserted: number;
  }> {
    const embedder = this.#textEmbedder();
    if (!Array.isArray(docs)) throw new InvalidArgumentError('upsertTexts() takes an array of { id, text, metadata? }');
    for (let i = 0; i < docs.length; i++) {
      const d = docs[i];
      if (d === null || typeof d !== 'object') throw new InvalidArgumentError(`docs[${i}] must be an object { id, text, metadata? }`);
      try {
        checkDocId(d.id);
      } catch (e) {
        throw new InvalidArgumentError(`docs[${i}].id: ${(e as Error).message}`);
      }
      if (typeof d.text !== 'string') throw new InvalidArgumentError(`docs[${i}].text must be a string, got ${d.text === null ? 'null' : typeof d.text}`);
    }
    const chunk = options.chunkSize ?? 512;
    if (!Number.isInteger(chunk) || chunk < 1) throw new InvalidArgumentError('chunkSize must be a positive integer');
    let committed = 0;
    for (let i = 0; i < docs.length; i += chunk) {
      options.signal?.throwIfAborted();
      const part = docs.slice(i, i + chunk);
      const flat = await embedder.embedFlat(part.map((d) => d.text));
      options.onProgress?.({ embedded: i + part.length, committed, total: docs.length });
      options.signal?.throwIfAborted();
      const metas = part.some((d) => d.metadata !== undefined) ? part.map((d) => d.metadata) : undefined;
      await this.upsertMany(
        part.map((d) => d.id),
        flat,
        metas,
      );
      committed += part.length;
      options.onProgress?.({ embedded: i + part.length, committed, total: docs.length });
    }
    return { upserted: committed };
  }

  /**
   * The k documents nearest to the embedding of `query`, best first:
   * `searchText('reset my password', 5, { lang: 'en' })` or `searchText(q, { k, filter, efSearch })`.
   */
  async searchText(query: string, k?: number | SearchOptions, filter?: MetadataFilter): Promise<VectorHit<M>[]> {
    if (typeof query !== 'string') throw new InvalidArgumentError(`query must be a string, got ${query === null ? 'null' : typeof query}`);
    if (query.length === 0) throw new InvalidArgumentError('query is an empty string, which has nothing to search for; pass the text to search for');
    const options: SearchOptions = typeof k === 'object' && k !== null ? k : { ...(k !== undefined ? { k } : {}), ...(filter !== undefined ? { filter } : {}) };
    this.#options(options);
    const v = await this.#textEmbedder().embed(query);
    return this.search(v, options);
  }

  /** The collection's name. */
  get name(): string {
    return this.info.name;
  }

  /** Inserts or replaces a document. Resolves once committed. */
  async upsert(id: string, vector: Float32Array | readonly number[], metadata?: M): Promise<void> {
    await this.#tx().execute((tx) => tx.vectors<M>(this.info.name).upsert(id, vector, metadata));
  }

  /**
   * Inserts or replaces many documents in one transaction: `vectors` holds
   * `ids.length × dimension` values, document i's at `[i·dimension, (i+1)·dimension)`.
   * Resolves once committed; the index catches up in the background (in parallel
   * on all cores), and searches meanwhile scan what is not indexed yet. Await
   * {@link waitIndexed} to know when the graph holds everything.
   */
  async upsertMany(ids: readonly string[], vectors: Float32Array, metadatas?: readonly (M | undefined)[]): Promise<void> {
    await this.#tx().execute((tx) => tx.vectors<M>(this.info.name).upsertMany(ids, vectors, metadatas));
  }

  /** Deletes a document (no error when absent). Resolves once committed. */
  async delete(id: string): Promise<void> {
    await this.#tx().execute((tx) => tx.vectors<M>(this.info.name).delete(id));
  }

  /** Reads a document as stored, or `undefined`. */
  get(id: string): VectorDocument<M> | undefined {
    checkDocId(id);
    let b: Buffer | null;
    try {
      b = this.#native.get(id);
    } catch (e) {
      throw fromNative(e);
    }
    if (b === null) return undefined;
    const { vector, metadata } = readDocument(b, this.info.dimension);
    return { id, vector, ...(metadata === undefined ? { metadata: undefined } : unwrapMeta<M>(metadata)) };
  }

  /** Number of documents. */
  count(): number {
    try {
      return this.#native.count();
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** The k nearest documents to `vector`, best first. Synchronous. */
  search(vector: Float32Array | readonly number[], options: SearchOptions = {}): VectorHit<M>[] {
    const q = vector instanceof Float32Array ? vector : this.#query(vector);
    const [k, ef, exact, filter, wait] = this.#options(options);
    let buf: Buffer;
    try {
      buf = this.#native.search(q, k, ef, exact, filter, wait);
    } catch (e) {
      throw fromNative(e);
    }
    const out: VectorHit<M>[] = [];
    readHits(buf, 0, out, toHit<M>);
    if (options.withText === true) this.#addTexts(out);
    return out;
  }

  /**
   * How a search with these options would run now, without running it: the
   * plan (`'exact'` scan or `'graph'` walk), why, and the estimates behind it.
   * A filter's selectivity is estimated from the documents' metadata; the exact
   * scan is chosen whenever it is estimated cheaper than the filtered graph walk.
   */
  explain(options: SearchOptions = {}): SearchExplain {
    const [k, ef, exact, filter] = this.#options(options);
    try {
      const p = this.#native.explain(k, ef, exact, filter);
      return { plan: p.plan as SearchExplain['plan'], reason: p.reason as SearchExplain['reason'], selectivity: p.selectivity, exactCost: p.exactCost, graphCost: p.graphCost, graphVisits: p.graphVisits };
    } catch (e) {
      throw fromNative(e);
    }
  }

  #addTexts(hits: VectorHit<M>[]): void {
    for (const h of hits) {
      const text = h.eventId === undefined ? undefined : this.#textOf!(h.eventId);
      if (text !== undefined) h.text = text;
    }
  }

  /**
   * Searches many queries at once on all cores, off the main thread. `queries`
   * holds n × dimension values; resolves to n result lists, in query order.
   */
  async searchBatch(queries: Float32Array, options: SearchOptions = {}): Promise<VectorHit<M>[][]> {
    if (!(queries instanceof Float32Array)) throw new InvalidArgumentError('searchBatch() needs the queries as one Float32Array (n × dimension values)');
    if (queries.length % this.info.dimension !== 0) {
      throw new VectorDimensionError(`searchBatch() got ${queries.length} values, not a multiple of the dimension ${this.info.dimension}`);
    }
    const [k, ef, exact, filter, wait] = this.#options(options);
    let buf: Buffer;
    try {
      buf = await this.#native.searchBatch(queries, k, ef, exact, filter, wait);
    } catch (e) {
      throw fromNative(e);
    }
    const all = readHitBatch(buf, toHit<M>);
    if (options.withText === true) for (const hits of all) this.#addTexts(hits);
    return all;
  }

  /**
   * Rebuilds the graph from the live documents in the background, dropping its
   * tombstones (this also happens by itself when tombstones pass 20% of the graph).
   * Searches keep working meanwhile. Await {@link waitIndexed} for completion.
   */
  rebuild(): void {
    try {
      this.#native.rebuild();
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * Resolves `true` once every document committed so far is in the graph (and a
   * requested rebuild is done), or `false` when `timeoutMs` passes first.
   */
  async waitIndexed(timeoutMs = 600_000): Promise<boolean> {
    intIn(timeoutMs, 0, 2 ** 32 - 1, 'timeoutMs');
    try {
      return await this.#native.waitIndexed(timeoutMs);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * Resolves `true` once the indexer is idle for this collection: every document
   * committed so far is in the graph and the background dump that was due, if
   * any, is written (`false` when `timeoutMs` passes first). Useful before copying
   * the database directory, and in tests of dumping.
   */
  async waitIdle(timeoutMs = 600_000): Promise<boolean> {
    intIn(timeoutMs, 0, 2 ** 32 - 1, 'timeoutMs');
    try {
      return await this.#native.waitIdle(timeoutMs);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Index counters. */
  stats(): IndexStats {
    try {
      const s = this.#native.stats();
      return { ...s, state: s.state as IndexStats['state'] };
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * Resolves once the index has loaded after open (at once when it has),
   * calling `onProgress` whenever the count of documents read changes and a
   * last time with state `'ready'`. The event loop runs meanwhile: loading
   * happens on a background thread.
   */
  async ready(onProgress?: (progress: LoadProgress) => void): Promise<void> {
    let last = -1;
    for (;;) {
      const { state, loaded, total } = this.stats();
      if (onProgress !== undefined && (loaded !== last || state === 'ready')) {
        last = loaded;
        onProgress({ state, loaded, total });
      }
      if (state === 'ready') return;
      await new Promise((resolve) => setTimeout(resolve, LOAD_POLL_MS));
    }
  }

  /**
   * Checks that the index and the stored documents agree (same ids; every record
   * decodes). Throws `CorruptError` if not. Run it with no write in flight.
   */
  verify(): {
    /** Documents checked. */
    documents: number;
  } {
    try {
      return { documents: this.#native.verify() };
    } catch (e) {
      throw fromNative(e);
    }
  }

  #query(v: readonly number[]): Float32Array {
    if (!Array.isArray(v)) throw new InvalidArgumentError('the query must be a Float32Array (or an array of numbers)');
    return Float32Array.from(v);
  }

  #options(o: SearchOptions): [number, number, boolean, string | undefined, boolean] {
    if (o === null || typeof o !== 'object') throw new InvalidArgumentError('search options must be an object');
    const k = o.k === undefined ? DEFAULT_K : intIn(o.k, 1, 10_000, 'k');
    const ef = o.efSearch === undefined ? 0 : intIn(o.efSearch, 1, 10_000, 'efSearch');
    if (o.exact !== undefined && typeof o.exact !== 'boolean') throw new InvalidArgumentError('exact must be a boolean');
    if (o.withText !== undefined && typeof o.withText !== 'boolean') throw new InvalidArgumentError('withText must be a boolean');
    if (o.withText === true && this.#textOf === undefined) {
      throw new InvalidArgumentError(`collection ${JSON.stringify(this.info.name)} has no texts to return: withText works on the collection of a vector projection (projection.collection)`);
    }
    let filter: string | undefined;
    if (o.filter !== undefined) {
      if (o.filter === null || typeof o.filter !== 'object' || Array.isArray(o.filter)) {
        throw new InvalidArgumentError('filter must be an object like { field: value } or { field: { in: [...] } }');
      }
      filter = stringifyStrict(o.filter, 'filter');
    }
    if (o.wait !== undefined && typeof o.wait !== 'boolean') throw new InvalidArgumentError('wait must be a boolean');
    return [k, ef, o.exact === true, filter, o.wait !== false];
  }
}
