/**
 * What agent memory needs of a database handle, and the lazily created projections
 * that keep its SQL views. `db.ts` satisfies {@link MemoryHost}; nothing here imports it.
 * @internal
 */
import type { StoredEvent } from '../internal/event-pack.js';
import type { DeclarativeSpec } from '../processing/declarative.js';
import type { Processor } from '../processing/processor.js';
import type { Sql } from '../sql/sql.js';
import type { Value } from '../state/codec.js';
import type { TransactionBuilder } from '../state/transaction.js';
import { MEMORY_SCHEMA, memorySpec } from './schema.js';

/** The parts of a database handle agent memory uses. @internal */
export interface MemoryHost {
  /** A transaction builder holding the INTERNAL capability (reserved keys and event types). */
  transaction(): TransactionBuilder;
  getOpt(key: string): Value | undefined;
  list(options: { prefix: string; after?: string; limit: number }): Array<{ key: string; value: Value }>;
  readonly sql: Sql;
  projection(spec: DeclarativeSpec): Processor;
  event(id: bigint): StoredEvent | undefined;
  /** The newest event id in the log. */
  head(): bigint;
  assertOpen(): void;
}

/** The shared state of one handle's agent memory: the host and the projection of its views. @internal */
export class Memory {
  readonly host: MemoryHost;
  #processor: Processor | undefined;
  #catching: Promise<unknown> = Promise.resolve();

  constructor(host: MemoryHost) {
    this.host = host;
  }

  /** The declarative projection of the agent views, created (with its tables) on first use. */
  get processor(): Processor {
    this.host.assertOpen();
    if (this.#processor === undefined) {
      this.host.sql.exec(MEMORY_SCHEMA);
      this.#processor = this.host.projection(memorySpec());
    }
    return this.#processor;
  }

  /** Brings the views up to the newest event (one catch-up at a time). */
  async ready(): Promise<void> {
    const p = this.processor;
    const run = this.#catching.then(() => p.catchUp());
    this.#catching = run.catch(() => undefined);
    await run;
  }
}

/** Reads a JSON record stored by agent memory. @internal */
export function readRecord<T>(v: Value | undefined): T | undefined {
  return v === undefined ? undefined : (JSON.parse(v.asJsonText()) as T);
}
