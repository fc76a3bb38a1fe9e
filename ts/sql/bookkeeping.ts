/**
 * athanor's own rows in projection.db (processor cursors, dead letters, the migration
 * history), read and written by native/core (`projection/bookkeeping.rs`, their one
 * writer) on the handle's connection: inside whatever transaction is open there, so a
 * batch's effects, its cursor and its dead letters commit together.
 * @internal
 */
import { fromNative } from '../errors.js';
import type { NativeDeadLetter, NativeMigration, NativeSql } from '../internal/native.js';

/** A dead letter's row as kept in projection.db. @internal */
export type DeadLetterRow = NativeDeadLetter;
/** An applied migration's row. @internal */
export type MigrationRow = NativeMigration;

/** An event a processor gives up on. @internal */
export interface FailedEvent {
  processor: string;
  eventId: bigint;
  eventType: string;
  attempts: number;
  errorCode: string;
  error: string;
}

/** athanor's bookkeeping on one connection (`Sql[INTERNAL]()`). @internal */
export class Bookkeeping {
  readonly #native: NativeSql;
  readonly #assertOpen: () => void;

  /** @internal */
  constructor(native: NativeSql, assertOpen: () => void) {
    this.#native = native;
    this.#assertOpen = assertOpen;
  }

  #call<T>(f: (n: NativeSql) => T): T {
    this.#assertOpen();
    try {
      return f(this.#native);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** A processor's cursor (0n when it never ran). */
  cursor(name: string): bigint {
    return this.#call((n) => n.cursor(name));
  }

  /** Every processor's cursor, by name. */
  cursors(): { name: string; cursor: bigint }[] {
    return this.#call((n) => n.cursors().map(([name, cursor]) => ({ name, cursor })));
  }

  /** Moves a processor's cursor. */
  setCursor(name: string, id: bigint): void {
    this.#call((n) => n.setCursor(name, id));
  }

  /** Drops the cursor and dead letters of processor `name`, or of every processor. */
  resetProcessors(name?: string): void {
    this.#call((n) => n.resetProcessors(name));
  }

  /** Keeps a dead letter (or adds `attempts` to the one kept for that event). */
  recordDeadLetter(d: FailedEvent): void {
    this.#call((n) => n.recordDeadLetter(d));
  }

  /** Counts one more failed retry of dead letter `id`. */
  deadLetterFailedAgain(id: number, errorCode: string, error: string): void {
    this.#call((n) => n.deadLetterFailedAgain(id, errorCode, error));
  }

  /** Deletes dead letter `id` of `processor`; whether it existed. */
  removeDeadLetter(processor: string, id: number): boolean {
    return this.#call((n) => n.removeDeadLetter(processor, id));
  }

  /** Deletes every dead letter of `processor`; how many. */
  removeDeadLetters(processor: string): number {
    return this.#call((n) => n.removeDeadLetters(processor));
  }

  /** Dead letters of `processor`, oldest event first (`limit` < 0: all). */
  deadLetters(processor: string, limit: number, offset: number): DeadLetterRow[] {
    return this.#call((n) => n.deadLetters(processor, limit, offset));
  }

  /** Dead letter `id` of `processor`, if it keeps one. */
  deadLetter(processor: string, id: number): DeadLetterRow | undefined {
    return this.#call((n) => n.deadLetter(processor, id)) ?? undefined;
  }

  /** The dead letter `processor` keeps for event `eventId`, if any. */
  deadLetterForEvent(processor: string, eventId: bigint): DeadLetterRow | undefined {
    return this.#call((n) => n.deadLetterForEvent(processor, eventId)) ?? undefined;
  }

  /** How many dead letters `processor` keeps. */
  deadLetterCount(processor: string): number {
    return this.#call((n) => n.deadLetterCount(processor));
  }

  /** Records an applied migration. */
  recordMigration(m: MigrationRow): void {
    this.#call((n) => n.recordMigration(m));
  }

  /** Forgets migration `version`. */
  unrecordMigration(version: number): void {
    this.#call((n) => n.unrecordMigration(version));
  }

  /** The applied migrations, by version. */
  migrations(): MigrationRow[] {
    return this.#call((n) => n.migrations());
  }
}
