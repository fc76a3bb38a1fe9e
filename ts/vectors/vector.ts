/**
 * Vector collections: documents `{ id, vector, metadata }` stored in the same
 * LMDB commit as state and events, searched through an in-memory HNSW index
 * derived from them.
 */
import { describeThrown } from '../internal/thrown.js';
import { RESERVED_PREFIX } from '../state/reserved.js';
import { ByteWriter } from '../internal/bytes.js';
import { parseJson, str, stringifyStrict, type Json } from '../state/codec.js';
import type { Core } from '../state/core.js';
import type { EmbedManyOptions, Embedder } from '../embed/embed.js';
import { InvalidArgumentError, NotFoundError, VectorDimensionError, fromNative } from '../errors.js';
import type { TransactionBuilder } from '../state/transaction.js';
import type * as Binding from '../../native/node/binding.cjs';

/** How vectors are compared. */
export type VectorMetric =
  /** Cosine similarity. Vectors are normalised on insert; zero vectors are refused. */
  | 'cosine'
  /** Inner product (maximum inner product search). */
  | 'dot'
  /** Euclidean distance. */
  | 'l2';

/** Options of {@link VectorStore.create}. */
export interface CollectionOptions {
  /** Number of components of every vector, 1..4096. Optional with an `embedder` (its dimension). */
  dimension?: number;
  /**
   * The embedder of a text collection: enables `upsertText`, `upsertTexts` and
   * `searchText`. The collection remembers the embedder's model (`modelId`) and
   * refuses another one later, so vectors of two models are never mixed.
   */
  embedder?: Embedder;
  /** Default `'cosine'`. */
  metric?: VectorMetric;
  /** HNSW links per node and layer (level 0 keeps 2·m), 2..128. Default 16. */
  m?: number;
  /** Candidate list size while building the graph, m..10000. Default 200. */
  efConstruction?: number;
  /** Default candidate list size while searching, 1..10000. Default 64. */
  efSearch?: number;
}

/** A collection's stored definition. */
export interface CollectionInfo {
  name: string;
  dimension: number;
  metric: VectorMetric;
  m: number;
  efConstruction: number;
  efSearch: number;
}

/** Options of {@link VectorStore.open}. */
export interface OpenCollectionOptions {
  /** The embedder for text methods; must be the model the collection was created with. */
  embedder?: Embedder;
}

/** A text document for {@link VectorCollection.upsertTexts}. */
export interface TextDocument<M = Json> {
  id: string;
  text: string;
  metadata?: M;
}

/** Progress of {@link VectorCollection.upsertTexts}. */
export interface TextUpsertProgress {
  /** Texts embedded so far. */
  embedded: number;
  /** Documents committed so far (each chunk commits as one transaction). */
  committed: number;
  /** Documents in the call. */
  total: number;
}

/** Options of {@link VectorCollection.upsertTexts}. */
export interface TextUpsertOptions {
  /** Called after each chunk is embedded and after it is committed. */
  onProgress?: (p: TextUpsertProgress) => void;
  /** Stops between chunks; chunks already committed stay. */
  signal?: AbortSignal;
  /** Documents per chunk: one embedding call and one transaction (default 512). */
  chunkSize?: number;
}

/** Reserved state keys (NUL-prefixed, so no user key collides) for what collections remember. @internal */
export { RESERVED_PREFIX } from '../state/reserved.js';
const embedderKey = (collection: string) => `${RESERVED_PREFIX}collection-model/${collection}`;
/** Metadata key where a vector projection records the id of the event a document came from (decimal string). @internal */
export const SOURCE_EVENT_KEY = `${RESERVED_PREFIX}event`;
/** Metadata key holding a projected document's metadata when it is not an object. @internal */
export const SOURCE_VALUE_KEY = `${RESERVED_PREFIX}metadata`;

/** A scalar a filter compares metadata with. */
export type FilterScalar = string | number | boolean | null;

/** Conditions on one metadata field; all given must hold. Ranges compare numbers with numbers and strings with strings. */
export interface FilterOps {
  eq?: FilterScalar;
  ne?: FilterScalar;
  in?: readonly FilterScalar[];
  gt?: number | string;
  gte?: number | string;
  lt?: number | string;
  lte?: number | string;
}

/**
 * A metadata filter: every field must match. A field is a key of the metadata
 * object or a dotted path into nested objects (`'author.name'`). A bare value is
 * equality (for an array field: membership). Documents without metadata never match.
 *
 * ```ts
 * { lang: 'en', year: { gte: 2020, lt: 2024 }, tag: { in: ['a', 'b'] } }
 * ```
 */
export type MetadataFilter = Readonly<Record<string, FilterScalar | FilterOps>>;

/** Options of {@link VectorCollection.search}. */
export interface SearchOptions {
  /** Number of results, 1..10000. Default 10. */
  k?: number;
  /** Candidate list size for this search (higher: better recall, slower). Default: the collection's `efSearch`. */
  efSearch?: number;
  /** Brute force over every document (exact, SIMD). Collections of at most 1000 documents are always searched exactly. */
  exact?: boolean;
  /**
   * Only documents whose metadata matches. The search picks the cheaper plan by
   * estimate (see {@link VectorCollection.explain}): a filter matching few documents
   * is searched by an exact scan, which also returns k results whenever k match.
   */
  filter?: MetadataFilter;
  /**
   * With the collection of a vector projection (`projection.collection`): also
   * return each hit's `text`, the text its source event gave to embed.
   */
  withText?: boolean;
}

/** How a search would run: {@link VectorCollection.explain}. */
export interface SearchExplain {
  /** `'exact'`: a brute-force scan of the (matching) documents; `'graph'`: an HNSW walk. */
  plan: 'exact' | 'graph';
  /**
   * Why: `'requested'` (`exact: true`), `'small'` (at most 1000 documents),
   * `'not-indexed'` (nothing in the graph yet), or `'cost'` (the cheaper estimate).
   */
  reason: 'requested' | 'small' | 'not-indexed' | 'cost';
  /** Estimated fraction of the documents the filter matches (from a sample of their metadata); 1 without a filter. */
  selectivity: number;
  /** Estimated cost of the exact scan (nanoseconds, roughly). */
  exactCost: number;
  /** Estimated cost of the graph walk (nanoseconds, roughly). */
  graphCost: number;
  /** Distance computations the graph walk is expected to make (a filtered walk goes on until it has found efSearch matches). */
  graphVisits: number;
}

/** A search result. */
export interface VectorHit<M = Json> {
  id: string;
  /**
   * Higher is better: cosine similarity (`cosine`), dot product (`dot`), or
   * negative Euclidean distance (`l2`). Results are sorted by it, best first.
   */
  score: number;
  /** The document's metadata, or `undefined` when it has none. */
  metadata: M | undefined;
  /** In a collection written by a vector projection: the id of the event the document came from. */
  eventId?: bigint;
  /** The embedded text, when asked for with `withText` (collections of vector projections only). */
  text?: string;
}

/** A stored document. */
export interface VectorDocument<M = Json> {
  id: string;
  /** The vector as it was written (not normalised). */
  vector: Float32Array;
  metadata: M | undefined;
  /** In a collection written by a vector projection: the id of the event the document came from. */
  eventId?: bigint;
}

/** Counters of a collection's index. */
export interface IndexStats {
  /** Live documents. */
  count: number;
  /** Committed documents not in the graph yet; searches scan them exactly meanwhile. */
  pending: number;
  /** Deleted or replaced documents still in the graph, filtered out of results until a rebuild. */
  tombstones: number;
  /** Points in the graph, live or tombstoned. */
  graphPoints: number;
  /** Rebuilds since the database was opened. */
  rebuilds: number;
  /** Whether the graph at open came from a dump in `<dir>/index/` rather than a rebuild from the documents. */
  loadedFromDump: boolean;
  /**
   * Dumps written since the database was opened: at close, and in the background
   * once the changes since the last dump reach the number of points it held.
   */
  dumps: number;
  /**
   * Bytes those dumps wrote. The background ones stay under twice the final
   * graph's dump, however a bulk load is chunked.
   */
  dumpedBytes: number;
}

/** Vector writes inside a transaction: they commit atomically with its state writes and events. */
export interface TxVectors<M = Json> {
  /** Inserts or replaces a document. */
  upsert(id: string, vector: Float32Array | readonly number[], metadata?: M): void;
  /** Inserts or replaces `ids.length` documents whose vectors lie back to back in `vectors`. */
  upsertMany(ids: readonly string[], vectors: Float32Array, metadatas?: readonly (M | undefined)[]): void;
  /** Deletes a document (no error when absent). */
  delete(id: string): void;
}

const MAX_DOC_ID_BYTES = 500;
const DEFAULT_K = 10;

/** Throws InvalidArgumentError unless `id` is a storable document id. @internal */
export function checkDocId(id: unknown): string {
  if (typeof id !== 'string' || id.length === 0) throw new InvalidArgumentError(`document ids are non-empty strings, got ${id === '' ? 'an empty string' : typeof id}`);
  if (id.length > MAX_DOC_ID_BYTES / 3 && Buffer.byteLength(id) > MAX_DOC_ID_BYTES) {
    throw new InvalidArgumentError(`document id is ${Buffer.byteLength(id)} UTF-8 bytes; the limit is ${MAX_DOC_ID_BYTES}`);
  }
  if (!id.isWellFormed()) throw new InvalidArgumentError('document id has lone surrogates, which UTF-8 cannot store');
  return id;
}

function checkVector(v: unknown, info: CollectionInfo, what: string): Float32Array {
  let f: Float32Array;
  if (v instanceof Float32Array) f = v;
  else if (Array.isArray(v)) f = Float32Array.from(v as number[]);
  else throw new InvalidArgumentError(`${what} must be a Float32Array (or an array of numbers)`);
  if (f.length !== info.dimension) {
    throw new VectorDimensionError(`${what} has ${f.length} dimensions; collection ${JSON.stringify(info.name)} has ${info.dimension}`);
  }
  let zero = true;
  for (let i = 0; i < f.length; i++) {
    const x = f[i]!;
    if (!Number.isFinite(x)) throw new InvalidArgumentError(`${what} has ${x} at component ${i}; vectors must be finite`);
    if (x !== 0) zero = false;
  }
  if (zero && info.metric === 'cosine') throw new InvalidArgumentError(`${what} is all zeros, which has no direction under the cosine metric`);
  return f;
}

function bytesOf(f: Float32Array): Uint8Array {
  return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
}

/** Metadata as stored (JSON text, or '' for none); refuses athanor's reserved keys. @internal */
export function metaText(m: unknown, what: string): string {
  if (m === undefined) return '';
  if (m !== null && typeof m === 'object' && !Array.isArray(m)) {
    for (const key of Object.keys(m)) {
      if (key.startsWith(RESERVED_PREFIX)) throw new InvalidArgumentError(`${what}: key ${JSON.stringify(key)} is reserved (keys starting with "\\0athanor/" belong to athanor)`);
    }
  }
  return stringifyStrict(m, what);
}

/** The stored metadata of a projected document: the user's, plus the source event id. @internal */
export function sourcedMetaText(m: unknown, eventId: bigint, what: string): string {
  const source = String(eventId);
  if (m === undefined) return stringifyStrict({ [SOURCE_EVENT_KEY]: source }, what);
  if (m !== null && typeof m === 'object' && !Array.isArray(m)) {
    metaText(m, what);
    return stringifyStrict({ ...m, [SOURCE_EVENT_KEY]: source }, what);
  }
  return stringifyStrict({ [SOURCE_EVENT_KEY]: source, [SOURCE_VALUE_KEY]: m }, what);
}

/** Splits stored metadata into the user's and the source event id a projection recorded. */
function unwrapMeta<M>(stored: unknown): { metadata: M | undefined; eventId?: bigint } {
  if (stored === null || typeof stored !== 'object' || !(SOURCE_EVENT_KEY in stored)) return { metadata: stored as M | undefined };
  const { [SOURCE_EVENT_KEY]: source, [SOURCE_VALUE_KEY]: value, ...rest } = stored as Record<string, unknown>;
  const metadata = (SOURCE_VALUE_KEY in stored ? value : Object.keys(rest).length > 0 ? rest : undefined) as M | undefined;
  return { metadata, eventId: BigInt(source as string) };
}

/**
 * Buffers a transaction's vector writes already in the wire format
 * (native/core/src/txn.rs), so later changes to the caller's arrays cannot alter them.
 * @internal
 */
export class VectorOps {
  readonly w = new ByteWriter(256);
  count = 0;
}

/** @internal */
export class TxVectorsImpl<M> implements TxVectors<M> {
  readonly #info: CollectionInfo;
  readonly #ops: VectorOps;
  readonly #live: () => void;

  constructor(info: CollectionInfo, ops: VectorOps, live: () => void) {
    this.#info = info;
    this.#ops = ops;
    this.#live = live;
  }

  upsert(id: string, vector: Float32Array | readonly number[], metadata?: M): void {
    this.#live();
    checkDocId(id);
    this.#put(id, vector, metaText(metadata, `metadata of ${JSON.stringify(id)}`));
  }

  /** Upsert of a vector projection: the metadata already encoded by {@link sourcedMetaText}. @internal */
  upsertEncoded(id: string, vector: Float32Array, meta: string): void {
    this.#live();
    checkDocId(id);
    this.#put(id, vector, meta);
  }

  #put(id: string, vector: Float32Array | readonly number[], meta: string): void {
    const v = checkVector(vector, this.#info, `vector of ${JSON.stringify(id)}`);
    const w = this.#ops.w;
    w.u8(1);
    w.str16(this.#info.name);
    w.str16(id);
    w.u32(v.length);
    w.bytes(bytesOf(v));
    w.str32(meta);
    this.#ops.count++;
  }

  upsertMany(ids: readonly string[], vectors: Float32Array, metadatas?: readonly (M | undefined)[]): void {
    this.#live();
    if (!Array.isArray(ids)) throw new InvalidArgumentError('upsertMany() needs an array of ids');
    if (!(vectors instanceof Float32Array)) throw new InvalidArgumentError('upsertMany() needs the vectors as one Float32Array (ids.length × dimension values)');
    const n = ids.length;
    const dim = this.#info.dimension;
    if (vectors.length !== n * dim) {
      throw new VectorDimensionError(`upsertMany() got ${vectors.length} values for ${n} ids; collection ${JSON.stringify(this.#info.name)} needs ${n} × ${dim} = ${n * dim}`);
    }
    if (metadatas !== undefined && (!Array.isArray(metadatas) || metadatas.length !== n)) {
      throw new InvalidArgumentError(`upsertMany() metadatas must be an array of ${n} entries (undefined for none)`);
    }
    if (n === 0) return;
    const metas: string[] = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      checkDocId(ids[i]);
      metas[i] = metadatas === undefined ? '' : metaText(metadatas[i], `metadata of ${JSON.stringify(ids[i])}`);
    }
    const w = this.#ops.w;
    w.ensure(16 + vectors.byteLength + n * 8);
    w.u8(3);
    w.str16(this.#info.name);
    w.u32(n);
    w.u32(dim);
    // NaN, infinities and zero vectors under cosine are checked in Rust before anything is queued.
    w.bytes(bytesOf(vectors));
    for (let i = 0; i < n; i++) w.str16(ids[i]!);
    for (let i = 0; i < n; i++) w.str32(metas[i]!);
    this.#ops.count++;
  }

  delete(id: string): void {
    this.#live();
    checkDocId(id);
    const w = this.#ops.w;
    w.u8(2);
    w.str16(this.#info.name);
    w.str16(id);
    this.#ops.count++;
  }
}

type NativeCollection = Binding.NativeCollection;

function infoOf(n: Binding.NativeCollectionInfo): CollectionInfo {
  return { name: n.name, dimension: n.dimension, metric: n.metric as VectorMetric, m: n.m, efConstruction: n.efConstruction, efSearch: n.efSearch };
}

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('collection name must be a non-empty string');
  // Lone surrogates would reach Rust as U+FFFD: two different names would alias one collection.
  if (!name.isWellFormed()) throw new InvalidArgumentError('collection name has lone surrogates, which UTF-8 cannot store; use well-formed Unicode');
  return name;
}

function intIn(v: unknown, lo: number, hi: number, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw new InvalidArgumentError(`${what} must be an integer between ${lo} and ${hi}, got ${describeThrown(v)}`);
  return v;
}

/** Reads packed hits (see native/node/src/vector.rs `pack_hits`) starting at `off`; returns the offset after them. */
function readHits<M>(buf: Buffer, off: number, out: VectorHit<M>[]): number {
  const n = buf.readUInt32LE(off);
  off += 4;
  for (let i = 0; i < n; i++) {
    const score = buf.readFloatLE(off);
    const idLen = buf.readUInt16LE(off + 4);
    const id = buf.toString('utf8', off + 6, off + 6 + idLen);
    off += 6 + idLen;
    const metaLen = buf.readUInt32LE(off);
    off += 4;
    const hit: VectorHit<M> = metaLen === 0 ? { id, score, metadata: undefined } : { id, score, ...unwrapMeta<M>(parseJson(buf.toString('utf8', off, off + metaLen))) };
    off += metaLen;
    out.push(hit);
  }
  return off;
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
  async upsertTexts(docs: readonly TextDocument<M>[], options: TextUpsertOptions = {}): Promise<{ upserted: number }> {
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
    const n = this.info.dimension * 4;
    const vector = new Float32Array(this.info.dimension);
    new Uint8Array(vector.buffer).set(b.subarray(0, n));
    return { id, vector, ...(b.length > n ? unwrapMeta<M>(parseJson(b.toString('utf8', n))) : { metadata: undefined }) };
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
    const [k, ef, exact, filter] = this.#options(options);
    let buf: Buffer;
    try {
      buf = this.#native.search(q, k, ef, exact, filter);
    } catch (e) {
      throw fromNative(e);
    }
    const out: VectorHit<M>[] = [];
    readHits(buf, 0, out);
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
    const [k, ef, exact, filter] = this.#options(options);
    let buf: Buffer;
    try {
      buf = await this.#native.searchBatch(queries, k, ef, exact, filter);
    } catch (e) {
      throw fromNative(e);
    }
    const nq = buf.readUInt32LE(0);
    const all: VectorHit<M>[][] = [];
    let off = 4;
    for (let i = 0; i < nq; i++) {
      const hits: VectorHit<M>[] = [];
      off = readHits(buf, off, hits);
      if (options.withText === true) this.#addTexts(hits);
      all.push(hits);
    }
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
      return this.#native.stats();
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * Checks that the index and the stored documents agree (same ids; every record
   * decodes). Throws `CorruptError` if not. Run it with no write in flight.
   */
  verify(): { documents: number } {
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

  #options(o: SearchOptions): [number, number, boolean, string | undefined] {
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
    return [k, ef, o.exact === true, filter];
  }
}

/** The vector collections of a database: `db.vectors`. */
export class VectorStore {
  readonly #core: Core;
  readonly #tx: () => TransactionBuilder;

  /** @internal */
  constructor(core: Core, tx: () => TransactionBuilder) {
    this.#core = core;
    this.#tx = tx;
  }

  /**
   * Creates a collection. Creating one that exists with the same parameters
   * returns it; with different parameters throws `InvalidArgumentError`.
   *
   * ```ts
   * const docs = db.vectors.create('docs', { dimension: 384, metric: 'cosine', m: 16, efConstruction: 200 });
   * ```
   */
  create<M = Json>(name: string, options: CollectionOptions): VectorCollection<M> {
    this.#core.assertOpen();
    checkName(name);
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('create() needs options { dimension, metric?, m?, efConstruction?, efSearch? }');
    const metric = options.metric ?? 'cosine';
    if (metric !== 'cosine' && metric !== 'dot' && metric !== 'l2') throw new InvalidArgumentError(`metric must be 'cosine', 'dot' or 'l2', got ${describeThrown(metric)}`);
    const embedder = options.embedder;
    checkEmbedder(embedder);
    if (embedder !== undefined && options.dimension !== undefined && options.dimension !== embedder.dimension) {
      throw new VectorDimensionError(`dimension ${describeThrown(options.dimension)} differs from the embedder's ${embedder.dimension}; leave dimension out to take the embedder's`);
    }
    const dimension = intIn(options.dimension ?? embedder?.dimension, 1, 4096, 'dimension');
    const m = intIn(options.m ?? 16, 2, 128, 'm');
    const efConstruction = intIn(options.efConstruction ?? 200, m, 10_000, 'efConstruction');
    const efSearch = intIn(options.efSearch ?? 64, 1, 10_000, 'efSearch');
    const existed = embedder !== undefined && this.has(name);
    if (existed) this.#checkModel(name, embedder!);
    let n: NativeCollection;
    try {
      n = this.#core.native.vectorCreate(name, { dimension, metric, m, efConstruction, efSearch });
    } catch (e) {
      throw fromNative(e);
    }
    if (embedder !== undefined) this.#bindModel(name, embedder, existed);
    return new VectorCollection<M>(n, this.#tx, embedder);
  }

  /** Throws when the collection remembers another model than `embedder`'s. */
  #checkModel(name: string, embedder: Embedder): void {
    const bound = this.#core.get(embedderKey(name))?.asString();
    if (bound !== undefined && bound !== embedder.modelId) {
      throw new InvalidArgumentError(
        `collection ${JSON.stringify(name)} holds vectors of model ${bound}, but this embedder is ${embedder.modelId}; open it with the same model, or drop and rebuild the collection`,
      );
    }
  }

  /** Records the collection's model (replacing a record left by a dropped collection of the same name). */
  #bindModel(name: string, embedder: Embedder, existed: boolean): void {
    const key = embedderKey(name);
    const bound = this.#core.get(key)?.asString();
    if (bound === embedder.modelId || (existed && bound !== undefined)) return;
    this.#tx().executeSync((tx) => tx.set(key, str(embedder.modelId)));
  }

  /**
   * Opens an existing collection; throws `NotFoundError` when there is none of that
   * name. With `{ embedder }` the text methods work, and the embedder must be the
   * model the collection was created with (`InvalidArgumentError` otherwise).
   */
  open<M = Json>(name: string, options: OpenCollectionOptions = {}): VectorCollection<M> {
    this.#core.assertOpen();
    checkName(name);
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options must be an object');
    const embedder = options.embedder;
    checkEmbedder(embedder);
    let n: NativeCollection | null;
    try {
      n = this.#core.native.vectorOpen(name);
    } catch (e) {
      throw fromNative(e);
    }
    if (n === null) throw new NotFoundError(`vector collection ${JSON.stringify(name)} does not exist; create it with db.vectors.create()`);
    if (embedder !== undefined) {
      if (embedder.dimension !== n.info().dimension) {
        throw new VectorDimensionError(`collection ${JSON.stringify(name)} has dimension ${n.info().dimension}; this embedder produces ${embedder.dimension}`);
      }
      this.#checkModel(name, embedder);
      this.#bindModel(name, embedder, false);
    }
    return new VectorCollection<M>(n, this.#tx, embedder);
  }

  /** Opens a vector projection's collection, whose hits can carry their texts. @internal */
  openWithTexts<M>(name: string, embedder: Embedder, textOf: (eventId: bigint) => string | undefined): VectorCollection<M> {
    const c = this.open<M>(name, { embedder });
    return new VectorCollection<M>(c.native, this.#tx, embedder, textOf);
  }

  /** Whether a collection of that name exists. */
  has(name: string): boolean {
    this.#core.assertOpen();
    return this.#core.native.vectorInfo(checkName(name)) !== null;
  }

  /** Every collection's definition, sorted by name. */
  list(): CollectionInfo[] {
    this.#core.assertOpen();
    try {
      return this.#core.native.vectorList().map(infoOf);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Drops a collection and all its documents; returns whether it existed. Open handles on it throw `NotFoundError` afterwards. */
  drop(name: string): boolean {
    this.#core.assertOpen();
    checkName(name);
    let dropped: boolean;
    try {
      dropped = this.#core.native.vectorDrop(name);
    } catch (e) {
      throw fromNative(e);
    }
    const key = embedderKey(name);
    if (this.#core.get(key) !== undefined) this.#tx().executeSync((tx) => tx.delete(key));
    return dropped;
  }
}

function checkEmbedder(e: unknown): void {
  if (e === undefined) return;
  if (e === null || typeof e !== 'object' || typeof (e as Embedder).embedFlat !== 'function' || typeof (e as Embedder).modelId !== 'string') {
    throw new InvalidArgumentError('embedder must be an Embedder (from Embedder.open or Embedder.fromPretrained)');
  }
}

/** Looks a collection's definition up for `tx.vectors(name)`. @internal */
export function collectionInfo(core: Core, name: string): CollectionInfo {
  checkName(name);
  let n: Binding.NativeCollectionInfo | null;
  try {
    n = core.native.vectorInfo(name);
  } catch (e) {
    throw fromNative(e);
  }
  if (n === null) throw new NotFoundError(`vector collection ${JSON.stringify(name)} does not exist; create it with db.vectors.create()`);
  return infoOf(n);
}
