/**
 * What user callbacks (handlers, migration steps, progress and log callbacks) throw
 * can be anything: a string, `null`, a Symbol, an object without `toString`, a
 * revoked proxy. These helpers turn it into an Error without ever throwing
 * themselves, so the caller's error handling (error strategies, rollbacks) runs. @internal
 */
import { types } from 'node:util';
import { AthanorError, HandlerError } from '../errors.js';

/** A short description of any value, for an error message; never throws. */
export function describeThrown(v: unknown): string {
  try {
    if (typeof v === 'string') return JSON.stringify(v.length > 200 ? `${v.slice(0, 200)}…` : v);
    if (typeof v === 'symbol') return v.toString();
    if (v === null || typeof v !== 'object') return String(v);
    if (types.isProxy(v)) return 'a proxy';
    if (v instanceof Error) return String(v.message);
    const s = String(v);
    return s === '[object Object]' ? 'an object' : s;
  } catch {
    return 'a value that cannot be described';
  }
}

/** A genuine Error (not a proxy, with a readable string message), or `undefined`. */
function realError(v: unknown): Error | undefined {
  try {
    if (v !== null && typeof v === 'object' && !types.isProxy(v) && v instanceof Error && typeof v.message === 'string') return v;
  } catch {
    /* a getter or trap threw: not usable as is */
  }
  return undefined;
}

/**
 * What a user callback threw, as an Error: a real Error stays as it is; anything else
 * becomes a {@link HandlerError} (`ERR_HANDLER`) whose cause is the thrown value.
 * `what` names the callback (e.g. `the handler for Deposited`).
 */
export function thrownError(v: unknown, what: string, eventId?: bigint): Error {
  return realError(v) ?? new HandlerError(`${what} threw ${describeThrown(v)}`, { cause: v, ...(eventId !== undefined ? { eventId } : {}) });
}

/** Like {@link thrownError}, but only athanor's own errors stay as they are: a user's Error becomes the cause of an `ERR_HANDLER`. */
export function handlerError(v: unknown, what: string, eventId?: bigint): AthanorError {
  const e = realError(v);
  if (e instanceof AthanorError) return e;
  return new HandlerError(`${what} threw ${describeThrown(v)}`, { cause: v, ...(eventId !== undefined ? { eventId } : {}) });
}
