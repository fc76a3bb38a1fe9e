/**
 * SQL projections of a database handle: the lazily opened projection.db, its
 * migrations, processors with TypeScript handlers, and declarative projections
 * executed natively. Reached through `db.sql`, `db.query()`, `db.processor()`,
 * `db.projection()` and `db.migrations`.
 */
import { types } from 'node:util';
import { ClosedError, errorFor, fromNative, InvalidArgumentError } from '../errors.js';
import { decodeEvents, type StoredEvent } from '../state/events.js';
import type { Core } from '../state/core.js';
import { Migrations } from './migrations.js';
import { native } from '../internal/native.js';
import {
  checkOptions,
  HandlerApplier,
  Processor,
  ProcessorBuilder,
  type Applier,
  type EventHandler,
  type Failure,
  type ProcessorHost,
  type ProcessorOptions,
} from '../processing/processor.js';
import { Sql, type Row, type SqlBindable, type NamedParams } from './sql.js';
import type { TransactionBuilder } from '../state/transaction.js';
import { VectorApplier, VectorProjection, checkVectorSpec, type VectorProjectionSpec } from '../processing/vector-projection.js';
import type { VectorStore } from '../vectors/vector.js';
import { describeThrown } from '../internal/thrown.js';
import type * as Binding from '../../native/node/binding.cjs';

/**
 * Where a declarative parameter comes from: a JSON path into the payload (`'$'` is the
 * whole payload as JSON text, `'$.a.b'`, `'$.items[0]'`, `'$["odd key"]'`; missing → NULL),
 * event metadata (`'@id'`, `'@type'`, `'@at'`, `'@commitSeq'`) or a constant.
 */
export type ParamSource = `$${string}` | '@id' | '@type' | '@at' | '@commitSeq' | { value: string | number | boolean | null };

/** One SQL statement run for an event. */
export interface SqlAction {
  /** One statement with `?` or named (`:name`) parameters. */
  sql: string;
  /** Positional sources (a list) or named ones (`{ name: source }` binds `:name`/`@name`/`$name`). */
  params?: readonly ParamSource[] | { readonly [name: string]: ParamSource };
}

/** A declarative projection: event types mapped to SQL, applied in Rust with no JS call per event. */
export interface DeclarativeSpec extends Omit<ProcessorOptions, 'handlers' | 'reset'> {
  /** Name: its cursor's and dead letters' key (shared namespace with processors). */
  name: string;
  /** Event type (or `'*'`) → one action or a list of them, run in order. */
  on: { readonly [eventType: string]: SqlAction | readonly SqlAction[] };
  /** Drops the projection's data for `rebuild()`: a SQL script or a function. */
  reset?: string | ((sql: Sql) => void);
}

class DeclarativeApplier implements Applier {
  readonly #host: ProcessorHost;
  readonly #native: Binding.NativeSql;
  readonly #spec: number;

  constructor(host: ProcessorHost, n: Binding.NativeSql, spec: number) {
    this.#host = host;
    this.#native = n;
    this.#spec = spec;
  }

  async batch(limit: number): Promise<{ consumed: number; cursor: bigint; failure?: Failure }> {
    this.#host.sql.assertOpen();
    let r;
    try {
      r = await this.#native.declarativeBatch(this.#spec, limit);
    } catch (e) {
      throw fromNative(e);
    }
    if (r.failedEventId === null || r.failedEventId === undefined) return { consumed: r.consumed, cursor: r.cursor };
    const id = r.failedEventId;
    const event = this.#host.event(id) ?? { id, type: '', payload: undefined, at: 0, commitSeq: 0n };
    return { consumed: r.consumed, cursor: r.cursor, failure: { event, error: errorFor(r.errorCode ?? 'ERR_HANDLER', r.errorMessage ?? 'failed') } };
  }

  async retryDeadLetter(id: number): Promise<Error | undefined> {
    this.#host.sql.assertOpen();
    let r;
    try {
      r = await this.#native.declarativeRetry(this.#spec, id);
    } catch (e) {
      throw fromNative(e);
    }
    return r.errorCode === null || r.errorCode === undefined ? undefined : errorFor(r.errorCode, r.errorMessage ?? 'failed');
  }
}

/**
 * A shallow copy of processor options (and of each handler), read once: validation
 * and use then see the same values, and a getter or proxy that throws becomes
 * `ERR_INVALID_ARGUMENT` with the thrown value as its cause.
 */
function plainOptions<O extends object>(o: O, what = 'processor options'): O {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError(`${what} must be an object`);
  try {
    const copy = { ...o } as O & { handlers?: unknown };
    if (Array.isArray(copy.handlers)) {
      copy.handlers = Array.from(copy.handlers as unknown[], (h) => (h !== null && typeof h === 'object' ? { ...h } : h));
    }
    return copy;
  } catch (e) {
    throw new InvalidArgumentError(`reading the ${what} threw ${describeThrown(e)}; pass plain objects`, { cause: e });
  }
}

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
  readonly #db: Binding.NativeDb;
  #native: Binding.NativeSql | null = null;
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

  #nativeSql(): Binding.NativeSql {
    void this.sql;
    return this.#native!;
  }

  event(id: bigint): StoredEvent | undefined {
    try {
      return decodeEvents(this.core.native.readEvents(id, id, null, 1, false))[0];
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
    this.#claim(name);
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
