/**
 * Names that belong to athanor. State keys under {@link RESERVED_PREFIX} hold
 * athanor's own records (vector projection cursors, collection model bindings,
 * scheduler tasks); users may read them but never write them. Only code holding
 * {@link INTERNAL} (never exported from the package) can make a transaction that does.
 * @internal
 */
import { InvalidArgumentError } from '../errors.js';

/** The prefix of athanor's own state keys. @internal */
export const RESERVED_PREFIX = '\u0000athanor/';

/** The capability to write reserved keys: a symbol only athanor's modules can name. @internal */
export const INTERNAL: unique symbol = Symbol('athanor.internal');

/** Throws unless `key` may be written by a user transaction. @internal */
export function checkWritableKey(key: string): void {
  if (key.startsWith(RESERVED_PREFIX)) {
    throw new InvalidArgumentError(
      `keys starting with "\\0athanor/" are reserved for athanor's own records (projection cursors, model bindings, schedules): choose another key than ${JSON.stringify(key)}`,
    );
  }
}
