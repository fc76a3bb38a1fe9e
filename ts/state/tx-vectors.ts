/**
 * The vector section of a transaction batch (native/core/src/txn.rs): `tx.vectors(name)`
 * buffers upserts and deletes already encoded, so they commit with the transaction's
 * state writes and events. Also the collection facts those writes are checked against.
 * The collection API (`db.vectors`) builds on this in vectors/.
 */
import { InvalidArgumentError, NotFoundError, VectorDimensionError, fromNative } from '../errors.js';
import { ByteWriter } from '../internal/bytes.js';
import { stringifyStrict } from '../internal/json.js';
import type { NativeCollectionInfo, NativeDb } from '../internal/native.js';
import type { Json } from './codec.js';
import { RESERVED_PREFIX } from './reserved.js';

/** How vectors are compared. */
export type VectorMetric =
  /** Cosine similarity. Vectors are normalised on insert; zero vectors are refused. */
  | 'cosine'
  /** Inner product (maximum inner product search). */
  | 'dot'
  /** Euclidean distance. */
  | 'l2';

/** A collection's stored definition. */
export interface CollectionInfo {
  /** Its name. */
  name: string;
  /** Components of every vector. */
  dimension: number;
  /** How vectors are compared. */
  metric: VectorMetric;
  /** HNSW links per node and layer. */
  m: number;
  /** Candidate list size while building the graph. */
  efConstruction: number;
  /** Default candidate list size while searching. */
  efSearch: number;
  /** How the built graph holds vectors in memory (see {@link VectorQuantization}). */
  quantization: VectorQuantization;
}

/**
 * How a collection's built graph holds its vectors in memory: `'none'` (exact
 * `f32`), `'int8'` (a byte per component, about a quarter of the memory) or
 * `'binary'` (a bit per component). Quantized walks rescore their best
 * candidates with the exact vectors from the store.
 */
export type VectorQuantization = 'none' | 'int8' | 'binary';

/** Metadata key where a vector projection records the id of the event a document came from (decimal string). @internal */
export const SOURCE_EVENT_KEY = `${RESERVED_PREFIX}event`;
/** Metadata key holding a projected document's metadata when it is not an object. @internal */
export const SOURCE_VALUE_KEY = `${RESERVED_PREFIX}metadata`;

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

/** @internal */
export function infoOf(n: NativeCollectionInfo): CollectionInfo {
  return { name: n.name, dimension: n.dimension, metric: n.metric as VectorMetric, m: n.m, efConstruction: n.efConstruction, efSearch: n.efSearch, quantization: n.quantization as VectorQuantization };
}

/** Checks a collection name. @internal */
export function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('collection name must be a non-empty string');
  // Lone surrogates would reach Rust as U+FFFD: two different names would alias one collection.
  if (!name.isWellFormed()) throw new InvalidArgumentError('collection name has lone surrogates, which UTF-8 cannot store; use well-formed Unicode');
  return name;
}

/** Looks a collection's definition up for `tx.vectors(name)`. @internal */
export function collectionInfo(db: NativeDb, name: string): CollectionInfo {
  checkName(name);
  let n: NativeCollectionInfo | null;
  try {
    n = db.vectorInfo(name);
  } catch (e) {
    throw fromNative(e);
  }
  if (n === null) throw new NotFoundError(`vector collection ${JSON.stringify(name)} does not exist; create it with db.vectors.create()`);
  return infoOf(n);
}
