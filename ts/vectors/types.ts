/** The shapes of the vector collection API: options, filters, hits, documents, index counters. */
import type { Embedder } from '../embed/embed.js';
import type { Json } from '../state/codec.js';
import type { VectorMetric, VectorQuantization } from '../state/tx-vectors.js';

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
  /**
   * How the built graph holds vectors in memory. Default `'none'`. `'int8'`
   * takes about 0.3x the memory of `'none'`; graph walks compare quantized
   * vectors and rescore their best candidates with the exact vectors read from
   * the store, so results keep exact scores.
   */
  quantization?: VectorQuantization;
}

/** Options of {@link VectorStore.open}. */
export interface OpenCollectionOptions {
  /** The embedder for text methods; must be the model the collection was created with. */
  embedder?: Embedder;
  /** Called as the index loads in the background after open: see {@link VectorCollection.ready}. */
  onProgress?: (progress: LoadProgress) => void;
}

/** How far a collection's index has loaded after open. */
export interface LoadProgress {
  /** `'loading'` while the stored documents (and the dump) are read, then `'ready'`. */
  state: 'loading' | 'ready';
  /** Stored documents read so far (the document count once ready). */
  loaded: number;
  /** Stored documents to read (the document count once ready). */
  total: number;
}

/** A text document for {@link VectorCollection.upsertTexts}. */
export interface TextDocument<M = Json> {
  /** Document id. */
  id: string;
  /** The text to embed. */
  text: string;
  /** Metadata stored with the document (JSON). */
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

/** A scalar a filter compares metadata with. */
export type FilterScalar = string | number | boolean | null;

/** Conditions on one metadata field; all given must hold. Ranges compare numbers with numbers and strings with strings. */
export interface FilterOps {
  /** Equal to. */
  eq?: FilterScalar;
  /** Not equal to (documents without the field match). */
  ne?: FilterScalar;
  /** Equal to one of these. */
  in?: readonly FilterScalar[];
  /** Greater than. */
  gt?: number | string;
  /** At least. */
  gte?: number | string;
  /** Less than. */
  lt?: number | string;
  /** At most. */
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
  /**
   * While the collection's index is still loading after open: `true` (default)
   * waits until it is loaded; `false` fails at once with `NotReadyError`
   * (`ERR_NOT_READY`).
   */
  wait?: boolean;
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
  /** Document id. */
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
  /** Document id. */
  id: string;
  /** The vector as it was written (not normalised). */
  vector: Float32Array;
  /** Its metadata, or `undefined` when none was stored. */
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
  /**
   * Bytes the graph holds in memory: vectors and links of the built graph (kept
   * in one compact form), plus an estimate for documents inserted since its
   * last build. Ids and metadata are not counted.
   */
  graphBytes: number;
  /**
   * `'loading'` while the index loads in the background after open (searches
   * wait for it, or fail with `NotReadyError` given `{ wait: false }`), then `'ready'`.
   */
  state: 'loading' | 'ready';
  /** Stored documents read so far while loading (the document count once ready). */
  loaded: number;
  /** Stored documents to read while loading (the document count once ready). */
  total: number;
}
