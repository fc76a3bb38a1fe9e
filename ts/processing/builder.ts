/** The step-by-step way to make a processor: `db.processor('name').on(...).build()`. */
import type { Sql } from '../sql/sql.js';
import type { StoredEvent } from '../state/events.js';
import type { Processor } from './processor.js';
import type { ErrorStrategy, EventHandler, HandleFn, ProcessorOptions } from './types.js';

/** Builds a {@link Processor} step by step: `db.processor('name').on('Type', fn).batchSize(500).build()`. */
export class ProcessorBuilder {
  readonly #name: string;
  readonly #make: (name: string, o: ProcessorOptions) => Processor;
  readonly #o: ProcessorOptions & { handlers: EventHandler<never>[] } = { handlers: [] };

  /** @internal */
  constructor(name: string, make: (name: string, o: ProcessorOptions) => Processor) {
    this.#name = name;
    this.#make = make;
  }

  /** Adds a handler for one event type, a list of types, or `'*'`. */
  on<P = unknown>(eventType: string | readonly string[], handle: HandleFn<P>, validate?: (payload: unknown) => boolean | void): this {
    return this.handler<P>(validate === undefined ? { eventType, handle } : { eventType, handle, validate });
  }

  /** Adds a handler object. */
  handler<P = unknown>(h: EventHandler<P>): this {
    this.#o.handlers.push(h as EventHandler<never>);
    return this;
  }

  /** Events per batch (one SQLite transaction). */
  batchSize(n: number): this {
    this.#o.batchSize = n;
    return this;
  }

  /** A poll of `run()` for file systems where watching files does not work, ms (default 0: off; other processes' commits are watched). */
  pollInterval(ms: number): this {
    this.#o.pollIntervalMs = ms;
    return this;
  }

  /** The error strategy. */
  onError(strategy: ErrorStrategy): this {
    this.#o.onError = strategy;
    return this;
  }

  /** Where skip/retry messages go. */
  onLog(log: (message: string, error: Error, event: StoredEvent) => void): this {
    this.#o.onLog = log;
    return this;
  }

  /** The reset hook used by `rebuild()`. */
  reset(fn: (sql: Sql) => void): this {
    this.#o.reset = fn;
    return this;
  }

  /** Lets the processor start while migrations are pending. */
  allowPendingMigrations(on = true): this {
    this.#o.allowPendingMigrations = on;
    return this;
  }

  /** Validates everything and returns the processor. */
  build(): Processor {
    return this.#make(this.#name, this.#o);
  }
}
