/**
 * SQL projections of a database handle: the lazily opened projection.db, its
 * migrations, processors with TypeScript handlers, and declarative projections
 * executed natively. Reached through `db.sql`, `db.query()`, `db.processor()`,
 * `db.projection()` and `db.migrations`.
 */
import { types } from 'node:util';
import { ClosedError, fromNative, InvalidArgumentError } from '../errors.js';
import { decodeEvents, type StoredEvent } from '../internal/event-pack.js';
import { native, type NativeDb, type NativeSql } from '../internal/native.js';
import type { Core } from '../state/core.js';
import type { TransactionBuilder } from '../state/transaction.js';
import { Migrations } from '../sql/migrations.js';
import { checkUserSql } from '../sql/reserved-tables.js';
import { Sql, type Row, type SqlBindable, type NamedParams } from '../sql/sql.js';
import type { VectorStore } from '../vectors/store.js';
import { ProcessorBuilder } from './builder.js';
import { DeclarativeApplier, type DeclarativeSpec } from './declarative.js';
import { HandlerApplier } from './handler-applier.js';
import { checkOptions, plainOptions } from './options.js';
import { Processor } from './processor.js';
import type { EventHandler, ProcessorHost, ProcessorOptions } from './types.js';
import { VectorApplier } from './vector-applier.js';
import { VectorProjection, type VectorProjectionSpec } from './vector-projection.js';
import { checkVectorSpec } from './vector-spec.js';

/**
 * A copy of `db.query()` parameters made of plain values, so the read (which happens
 * later, off the JS thread) never runs a getter or a proxy trap; what those throw
 * becomes `ERR_INVALID_ARGUMENT` with the thrown value as its cause.
 */
function plainParams(p: unknown): unknown {
  if (p === undefined || p === null) return p;
  try {
    if (Array.isArray(p)) return Array.from(p as unknown[]);
    if (typeof p === 'object' && !ArrayBuffer.isView(p)) return { ...p };
  } catch (e) {
    throw new InvalidArgumentError('reading the query parameters threw (a getter that throws, a revoked proxy?); pass plain values. The thrown value is the cause', { cause: e });
  }
  return p;
}

/** Options of `db.query()`. */
export interface QueryOptions {
  /** Return every integer as bigint (default: only those beyond ±(2^53-1)). */
  safeIntegers?: boolean;
}

/** @internal */
export class Projections implements ProcessorHost {
  readonly core: Core;
  readonly #dir: string;
  readonly #db: NativeDb;
  #native: NativeSql | null = null;
  #sql: Sql | null = null;
  readonly migrations: Migrations;
  readonly #processors = new Map<string, Processor>();

  /** The processors and projections made through this handle and not closed. */
  processors(): Processor[] {
    return [...this.#processors.values()];
  }

  constructor(core: Core, dir: string) {
    this.core = core;
    this.#dir = dir;
    this.#db = core.native;
    this.migrations = new Migrations(() => this.sql);
  }

  get sql(): Sql {
    this.core.assertOpen();
    if (this.#sql === null) {
      try {
        this.#native = new native.NativeSql(this.#db, this.#dir);
      } catch (e) {
        throw fromNative(e);
      }
      this.#sql = new Sql(this.#native, () => {
        this.core.assertOpen();
        if (this.#sql === null || this.#sql.closed) throw new ClosedError();
      });
    }
    return this.#sql;
  }

  #nativeSql(): NativeSql {
    void this.sql;
    return this.#native!;
  }

  event(id: bigint): StoredEvent | undefined {
    try {
      return this.core.upcasters.apply(decodeEvents(this.core.native.readEvents(id, id, null, 1, false)))[0];
    } catch (e) {
      throw fromNative(e);
    }
  }

  unregister(name: string): void {
    this.#processors.delete(name);
  }

  async query<R = Row>(sql: string, params?: readonly SqlBindable[] | NamedParams, options: QueryOptions = {}): Promise<R[]> {
    if (typeof sql !== 'string') throw new InvalidArgumentError('SQL text must be a string');
    const o = plainOptions(options, 'query() options');
    for (const k of Object.keys(o)) if (k !== 'safeIntegers') throw new InvalidArgumentError(`unknown query() option ${JSON.stringify(k)}; expected safeIntegers`);
    const safe = o.safeIntegers ?? false;
    if (typeof safe !== 'boolean') throw new InvalidArgumentError('query() option safeIntegers must be a boolean');
    const plain = plainParams(params);
    const n = this.#nativeSql();
    try {
      return (await n.query(sql, plain, safe)) as R[];
    } catch (e) {
      throw fromNative(e);
    }
  }

  #claim(name: string): void {
    if (this.#processors.has(name)) {
      throw new InvalidArgumentError(`a processor or projection named ${JSON.stringify(name)} already exists on this handle; close() it first or pick another name`);
    }
  }

  processor(name: string, options?: ProcessorOptions): Processor | ProcessorBuilder {
    if (options === undefined) return new ProcessorBuilder(name, (n, o) => this.#build(n, o));
    return this.#build(name, options);
  }

  #build(name: string, options: ProcessorOptions): Processor {
    const o = plainOptions(options);
    checkOptions(name, o, true);
    this.#claim(name);
    const applier = new HandlerApplier(this, name, (o.handlers ?? []) as readonly EventHandler<unknown>[]);
    const p = new Processor(this, name, applier, o);
    void this.sql;
    this.#processors.set(name, p);
    return p;
  }

  projection(spec: DeclarativeSpec): Processor {
    if (spec === null || typeof spec !== 'object') throw new InvalidArgumentError('a declarative projection is an object { name, on, ... }');
    const { name, on, reset, ...rest } = plainOptions(spec);
    checkOptions(name, rest, false);
    if (on === null || typeof on !== 'object' || types.isProxy(on) || Object.keys(on).length === 0) throw new InvalidArgumentError(`projection ${JSON.stringify(name)} needs \`on\`: event type → { sql, params }`);
    if (reset !== undefined && typeof reset !== 'string' && typeof reset !== 'function') throw new InvalidArgumentError('reset must be a SQL script or a function (sql) => void');
    // Shapes are checked natively at compile; here only what the texts would change.
    for (const actions of Object.values(on) as unknown[]) {
      for (const action of Array.isArray(actions) ? actions : [actions]) {
        let text: unknown;
        try {
          text = (action as { sql?: unknown } | null)?.sql;
        } catch (e) {
          throw new InvalidArgumentError(`reading the actions of projection ${JSON.stringify(name)} threw; pass plain objects`, { cause: e });
        }
        if (typeof text === 'string') checkUserSql(text);
      }
    }
    if (typeof reset === 'string') checkUserSql(reset);
    this.#claim(name);
    this.core.upcasters.claimForDeclarative(name, Object.keys(on));
    let json: string;
    try {
      json = JSON.stringify({ name, on });
    } catch (e) {
      throw new InvalidArgumentError(`projection ${JSON.stringify(name)} cannot be serialised (constants must be strings, numbers, booleans or null): ${(e as Error).message}`);
    }
    let id: number;
    try {
      id = this.#nativeSql().compileProjection(json);
    } catch (e) {
      throw fromNative(e);
    }
    const resetFn = typeof reset === 'string' ? (sql: Sql) => sql.exec(reset) : reset;
    const p = new Processor(this, name, new DeclarativeApplier(this, this.#native!, id), { ...rest, ...(resetFn ? { reset: resetFn } : {}) });
    this.#processors.set(name, p);
    return p;
  }

  vectorProjection<M>(spec: VectorProjectionSpec<M>, vectors: VectorStore, tx: () => TransactionBuilder): VectorProjection<M> {
    checkVectorSpec(spec);
    this.#claim(spec.name);
    void this.sql;
    const { name, on: _on, collection: _c, embedder: _e, collectionOptions: _o, ...rest } = spec;
    const applier = new VectorApplier(this, spec as VectorProjectionSpec<unknown>, vectors, tx);
    const p = new VectorProjection<M>(this, name, applier, { batchSize: 256, ...rest }, applier);
    this.#processors.set(name, p);
    return p;
  }

  /** Stops the processors, waits for batches in flight, and closes projection.db. Never throws. */
  async close(): Promise<void> {
    for (const p of [...this.#processors.values()]) {
      try {
        await p.halt();
      } catch {
        /* a batch that failed has rolled back; closing goes on */
      }
    }
    this.#processors.clear();
    try {
      this.#sql?.close();
    } finally {
      this.#sql = null;
      this.#native = null;
    }
  }
}
