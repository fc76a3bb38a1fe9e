/** The applier of TypeScript handlers: runs them on the JS thread inside the batch's SQLite transaction. */
import { INTERNAL } from '../state/reserved.js';
import { HandlerError, InvalidArgumentError, SqlError, fromNative } from '../errors.js';
import { decodeEvents } from '../internal/event-pack.js';
import type { StoredEvent } from '../internal/event-pack.js';
import type { Sql } from '../sql/sql.js';
import { describeThrown, thrownError } from '../internal/thrown.js';
import { deadLetterEvent, deadLetterFailedAgain, readCursor, writeCursor } from './bookkeeping.js';
import type { Applier, EventHandler, Failure, ProcessorHost } from './types.js';


/** Fatal (not per-event) problems: the batch is rolled back and processBatch rejects. */
class Fatal {
  constructor(readonly error: Error) {}
}

/** What one attempt at a batch found, before its transaction ends. */
interface Attempt {
  consumed: number;
  cursor: bigint;
  start: bigint;
  failure?: Failure;
  /** Whether the attempt's effects and cursor are to be committed. */
  commit: boolean;
}

/** The applier of TypeScript handlers (runs on the JS thread). @internal */
export class HandlerApplier implements Applier {
  readonly #host: ProcessorHost;
  readonly #name: string;
  readonly #byType = new Map<string, EventHandler<unknown>[]>();
  readonly #wildcard: EventHandler<unknown>[] = [];

  constructor(host: ProcessorHost, name: string, handlers: readonly EventHandler<unknown>[]) {
    this.#host = host;
    this.#name = name;
    for (const h of handlers) {
      const types = typeof h.eventType === 'string' ? [h.eventType] : h.eventType;
      for (const t of types) {
        if (t === '*') this.#wildcard.push(h);
        else {
          let list = this.#byType.get(t);
          if (list === undefined) this.#byType.set(t, (list = []));
          list.push(h);
        }
      }
    }
  }

  /** Runs the handlers of one event; throws the handler's error (as an Error) or a Fatal. */
  #dispatch(event: StoredEvent): void {
    const sql = this.#host.sql;
    const list = this.#byType.get(event.type);
    if (list !== undefined) for (const h of list) this.#one(h, sql, event);
    for (const h of this.#wildcard) this.#one(h, sql, event);
  }

  #one(h: EventHandler<unknown>, sql: Sql, event: StoredEvent): void {
    const what = `the handler for ${event.type}`;
    if (h.validate !== undefined) {
      let ok: boolean | void;
      try {
        ok = h.validate(event.payload);
      } catch (e) {
        this.#checkTransaction(event);
        throw new HandlerError(`event ${event.id} (${event.type}) failed validation: ${describeThrown(e)}`, { cause: e, eventId: event.id });
      }
      if (ok === false) throw new HandlerError(`event ${event.id} (${event.type}) failed validation`, { eventId: event.id });
    }
    let r: unknown;
    try {
      r = h.handle(sql, event);
    } catch (e) {
      this.#checkTransaction(event);
      throw thrownError(e, what, event.id);
    }
    if (r !== undefined && r !== null && typeof (r as { then?: unknown }).then === 'function') {
      throw new Fatal(
        new InvalidArgumentError(
          `the handler for ${event.type} returned a Promise; handlers must be synchronous (they run inside one SQLite transaction, which cannot span an await)`,
        ),
      );
    }
    this.#checkTransaction(event);
  }

  /**
   * A handler that tried to end the batch's transaction is a bug in it, whatever it did
   * with the refusal: stop. One whose statement rolled the transaction back (`INSERT OR
   * ROLLBACK`) failed on this event: the error strategy decides.
   */
  #checkTransaction(event: StoredEvent): void {
    const state = this.#host.sql.txState();
    if (state === 'violated') {
      throw new Fatal(
        new InvalidArgumentError(
          `the handler for ${event.type} tried to end the batch's transaction (BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE); athanor commits it with the cursor: use sql.transaction() for nested work`,
        ),
      );
    }
    if (state === 'lost') {
      throw new SqlError(
        `a statement of the handler for ${event.type} (ON CONFLICT ROLLBACK or RAISE(ROLLBACK)) rolled back the batch's transaction at event ${event.id}; nothing of the batch was written`,
      );
    }
  }

  /** Inside the batch's transaction: cursor, events, handlers, cursor. `limit` caps the events; `expect` guards a prefix re-run. */
  #apply(limit: number, expect: bigint | null): Attempt {
    const sql = this.#host.sql;
    const start = readCursor(sql, this.#name);
    if (expect !== null && start !== expect) return { consumed: 0, cursor: start, start, commit: false };
    let events: StoredEvent[];
    try {
      events = this.#host.core.upcasters.apply(decodeEvents(this.#host.core.native.readEvents(start + 1n, null, null, limit, false)));
    } catch (e) {
      throw fromNative(e);
    }
    let cursor = start;
    for (let i = 0; i < events.length; i++) {
      const ev = events[i]!;
      try {
        this.#dispatch(ev);
      } catch (e) {
        if (e instanceof Fatal) throw e.error;
        return { consumed: i, cursor, start, failure: { event: ev, error: e as Error }, commit: false };
      }
      cursor = ev.id;
    }
    if (cursor !== start) writeCursor(sql, this.#name, cursor);
    return { consumed: events.length, cursor, start, commit: true };
  }

  /** One transaction around {@link #apply}; `committed` says whether it was committed. */
  #attempt(limit: number, expect: bigint | null): Attempt & { committed: boolean } {
    const sql = this.#host.sql;
    sql.txBegin(true);
    let r: Attempt;
    try {
      r = this.#apply(limit, expect);
    } catch (e) {
      sql.txAbandon();
      throw e;
    }
    sql.txEnd(r.commit);
    return { ...r, committed: r.commit };
  }

  batch(limit: number): Promise<{ consumed: number; cursor: bigint; failure?: Failure }> {
    try {
      const r = this.#attempt(limit, null);
      if (r.failure === undefined || r.consumed === 0) return Promise.resolve(r);
      // Commit the events before the failing one (their effects were rolled back with it).
      const p = this.#attempt(r.consumed, r.start);
      if (p.committed && p.failure === undefined && p.consumed === r.consumed) return Promise.resolve({ consumed: p.consumed, cursor: p.cursor, failure: r.failure });
      return Promise.resolve({ consumed: 0, cursor: p.start });
    } catch (e) {
      return Promise.reject(fromNative(e));
    }
  }

  /** Inside the retry's transaction: the dead letter's event through the handlers. */
  #retry(id: number): { failure?: Error } {
    const sql = this.#host.sql;
    const eventId = deadLetterEvent(sql, this.#name, id);
    if (eventId === undefined) throw new InvalidArgumentError(`processor ${JSON.stringify(this.#name)} has no dead letter ${id}`);
    const ev = this.#host.event(eventId);
    if (ev === undefined) throw new InvalidArgumentError(`event ${eventId} of dead letter ${id} is not in the log`);
    try {
      this.#dispatch(ev);
    } catch (e) {
      if (e instanceof Fatal) throw e.error;
      return { failure: e as Error };
    }
    sql[INTERNAL]().removeDeadLetter(this.#name, id);
    return {};
  }

  retryDeadLetter(id: number): Promise<Error | undefined> {
    const sql = this.#host.sql;
    try {
      sql.txBegin(true);
      let r: { failure?: Error };
      try {
        r = this.#retry(id);
      } catch (e) {
        sql.txAbandon();
        throw e;
      }
      sql.txEnd(r.failure === undefined);
      if (r.failure === undefined) return Promise.resolve(undefined);
      const failure = r.failure;
      deadLetterFailedAgain(sql, id, failure);
      return Promise.resolve(failure);
    } catch (e) {
      return Promise.reject(fromNative(e));
    }
  }
}
