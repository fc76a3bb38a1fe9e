/** The vector collections of a database (`db.vectors`): create, open, list, drop; the model each text collection is bound to. */
import { InvalidArgumentError, NotFoundError, VectorDimensionError, fromNative } from '../errors.js';
import type { NativeCollection } from '../internal/native.js';
import { describeThrown } from '../internal/thrown.js';
import type { Embedder } from '../embed/embed.js';
import { str, type Json } from '../state/codec.js';
import type { Core } from '../state/core.js';
import { RESERVED_PREFIX, checkNewCollectionName } from '../state/reserved.js';
import type { TransactionBuilder } from '../state/transaction.js';
import { checkName, infoOf, type CollectionInfo } from '../state/tx-vectors.js';
import { VectorCollection, intIn } from './collection.js';
import type { CollectionOptions, OpenCollectionOptions } from './types.js';

const embedderKey = (collection: string) => `${RESERVED_PREFIX}collection-model/${collection}`;

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
    checkNewCollectionName(name);
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('create() needs options { dimension, metric?, m?, efConstruction?, efSearch?, quantization? }');
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
    const quantization = options.quantization ?? 'none';
    if (quantization !== 'none' && quantization !== 'int8' && quantization !== 'binary') {
      throw new InvalidArgumentError(`quantization must be 'none', 'int8' or 'binary', got ${describeThrown(quantization)}`);
    }
    const existed = embedder !== undefined && this.has(name);
    if (existed) this.#checkModel(name, embedder!);
    let n: NativeCollection;
    try {
      n = this.#core.native.vectorCreate(name, { dimension, metric, m, efConstruction, efSearch, quantization });
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
    const onProgress = options.onProgress;
    if (onProgress !== undefined && typeof onProgress !== 'function') throw new InvalidArgumentError('onProgress must be a function');
    if (embedder !== undefined) {
      if (embedder.dimension !== n.info().dimension) {
        throw new VectorDimensionError(`collection ${JSON.stringify(name)} has dimension ${n.info().dimension}; this embedder produces ${embedder.dimension}`);
      }
      this.#checkModel(name, embedder);
      this.#bindModel(name, embedder, false);
    }
    const c = new VectorCollection<M>(n, this.#tx, embedder);
    // A close while loading ends the reports (stats() then throws ClosedError).
    if (onProgress !== undefined) c.ready(onProgress).catch(() => undefined);
    return c;
  }

  /** Opens a vector projection's collection, whose hits can carry their texts. @internal */
  openWithTexts<M>(name: string, embedder: Embedder, textOf: (eventId: bigint) => string | undefined): VectorCollection<M> {
    const c = this.open<M>(name, { embedder });
    return new VectorCollection<M>(c.native, this.#tx, embedder, textOf);
  }

  /** Whether a collection of that name exists. */
  has(name: string): boolean {
    this.#core.assertOpen();
    checkName(name);
    try {
      return this.#core.native.vectorInfo(name) !== null;
    } catch (e) {
      throw fromNative(e);
    }
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
