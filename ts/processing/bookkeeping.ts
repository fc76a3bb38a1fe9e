/**
 * A processor's rows in projection.db (its cursor and its dead letters), kept by
 * native/core on the SQL connection, inside the batch's own transaction.
 */
import { INTERNAL } from '../state/reserved.js';
import { AthanorError } from '../errors.js';
import type { StoredEvent } from '../state/events.js';
import type { Sql } from '../sql/sql.js';

/** Reads a processor's cursor (0n when it never ran). @internal */
export function readCursor(sql: Sql, name: string): bigint {
  return sql[INTERNAL]().cursor(name);
}

/** Moves a processor's cursor (inside the open transaction). @internal */
export function writeCursor(sql: Sql, name: string, id: bigint): void {
  sql[INTERNAL]().setCursor(name, id);
}

/** Records (or updates) a dead letter in projection.db. @internal */
export function recordDeadLetter(sql: Sql, processor: string, event: StoredEvent, error: Error, attempts: number): void {
  sql[INTERNAL]().recordDeadLetter({ processor, eventId: event.id, eventType: event.type, attempts, errorCode: codeOf(error), error: error.message });
}

/** Counts one more failed retry of dead letter `id`. @internal */
export function deadLetterFailedAgain(sql: Sql, id: number, error: Error): void {
  sql[INTERNAL]().deadLetterFailedAgain(id, codeOf(error), error.message);
}

/** The event id dead letter `id` of `processor` keeps, or `undefined`. @internal */
export function deadLetterEvent(sql: Sql, processor: string, id: number): bigint | undefined {
  return sql[INTERNAL]().deadLetter(processor, id)?.eventId;
}

/** The error code a dead letter records for `e`. @internal */
export function codeOf(e: Error): string {
  return e instanceof AthanorError ? e.code : 'ERR_HANDLER';
}
