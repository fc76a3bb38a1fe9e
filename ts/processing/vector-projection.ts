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
import type { Embedder } from '../embed/embed.js';
import type { Json } from '../state/codec.js';
import type { StoredEvent } from '../state/events.js';
import type { VectorCollection } from '../vectors/collection.js';
import type { CollectionOptions } from '../vectors/types.js';
import { Processor } from './processor.js';
import type { ProcessorOptions } from './types.js';


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
/** What a vector projection's applier hands out: the collection it writes. @internal */
export interface CollectionSource {
  collection<M>(): VectorCollection<M>;
}

export class VectorProjection<M = Json> extends Processor {
  /**
   * The collection the projection writes, opened with its embedder: `searchText`
   * works, hits carry the `eventId` of their source event, and with
   * `{ withText: true }` the text that was embedded.
   */
  get collection(): VectorCollection<M> {
    return (this.applier as unknown as CollectionSource).collection<M>();
  }
}
