/**
 * A processor's rows in projection.db: its cursor in `_athanor_cursors` and its
 * dead letters in `_athanor_dead_letters`, written in the batch's own transaction.
 */
import { INTERNAL } from '../state/reserved.js';
import { AthanorError } from '../errors.js';
import type { StoredEvent } from '../state/events.js';
import type { Sql } from '../sql/sql.js';


const CURSOR_GET = 'SELECT last_event_id AS id FROM _athanor_cursors WHERE name = ?';
/** Moves a cursor: name, last event id, time. @internal */
export const CURSOR_SET =
  'INSERT INTO _athanor_cursors(name, last_event_id, updated_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET last_event_id = excluded.last_event_id, updated_at = excluded.updated_at';
/** Records a dead letter or adds to its attempts. */
const DLQ_UPSERT =
  'INSERT INTO _athanor_dead_letters(processor, event_id, event_type, error_code, error, attempts, first_failed_at, last_failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ' +
  'ON CONFLICT(processor, event_id) DO UPDATE SET error_code = excluded.error_code, error = excluded.error, attempts = attempts + excluded.attempts, last_failed_at = excluded.last_failed_at';

/** Reads a processor's cursor (0n when it never ran). @internal */
export function readCursor(sql: Sql, name: string): bigint {
  const row = sql.get<{ id: number | bigint }>(CURSOR_GET, [name]);
  return row === undefined ? 0n : BigInt(row.id);
}


/** Records (or updates) a dead letter in projection.db. @internal */
export function recordDeadLetter(sql: Sql, processor: string, event: StoredEvent, error: Error, attempts: number): void {
  const now = Date.now();
  sql[INTERNAL]().run(DLQ_UPSERT, [processor, event.id, event.type, codeOf(error), error.message, attempts, now, now]);
}

/** The error code a dead letter records for `e`. @internal */
export function codeOf(e: Error): string {
  return e instanceof AthanorError ? e.code : 'ERR_HANDLER';
}
