/** Declarative projections: event types mapped to SQL, applied by native code with no JS call per event. */
import { AthanorError, fromNative } from '../errors.js';
import type { NativeSql } from '../internal/native.js';
import type { Sql } from '../sql/sql.js';
import type { Applier, Failure, ProcessorHost, ProcessorOptions } from './types.js';

/**
 * Where a declarative parameter comes from: a JSON path into the payload (`'$'` is the
 * whole payload as JSON text, `'$.a.b'`, `'$.items[0]'`, `'$["odd key"]'`; missing → NULL),
 * event metadata (`'@id'`, `'@type'`, `'@at'`, `'@commitSeq'`) or a constant.
 */
export type ParamSource = `$${string}` | '@id' | '@type' | '@at' | '@commitSeq' | {
  /** A constant. */
  value: string | number | boolean | null;
};

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

/** The applier of a declarative projection. @internal */
export class DeclarativeApplier implements Applier {
  readonly #host: ProcessorHost;
  readonly #native: NativeSql;
  readonly #spec: number;

  constructor(host: ProcessorHost, n: NativeSql, spec: number) {
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
    return { consumed: r.consumed, cursor: r.cursor, failure: { event, error: failureOf(r.error) } };
  }

  async retryDeadLetter(id: number): Promise<Error | undefined> {
    this.#host.sql.assertOpen();
    let r;
    try {
      r = await this.#native.declarativeRetry(this.#spec, id);
    } catch (e) {
      throw fromNative(e);
    }
    return r.error === null || r.error === undefined ? undefined : failureOf(r.error);
  }
}

/** The typed error of a failed event, with the SQLite code and causes the addon attached. */
function failureOf(error: Error | null | undefined): Error {
  if (error === null || error === undefined) return new AthanorError('ERR_INTERNAL', 'the declarative projection reported a failure without an error (a bug in athanor: please report it)');
  return fromNative(error);
}
