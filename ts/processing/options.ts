/** Checks of processor options and of the options of processor calls, before anything runs. */
import { AthanorError, InvalidArgumentError } from '../errors.js';
import { describeThrown } from '../internal/thrown.js';
import { strategyOf } from './strategy.js';
import type { EventHandler, ProcessorOptions } from './types.js';

/**
 * Validates the options object of a processor call before it does anything: an object
 * with only `keys`, `onProgress` a function, `signal` an AbortSignal.
 * @internal
 */
export function checkCallOptions<O extends object>(o: O, call: string, keys: readonly (keyof O & string)[]): O {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError(`${call}() options must be an object`);
  for (const k of Object.keys(o)) {
    if (!keys.includes(k as keyof O & string)) throw new InvalidArgumentError(`unknown ${call}() option ${JSON.stringify(k)}; expected ${keys.join(', ')}`);
  }
  const r = o as { onProgress?: unknown; signal?: unknown };
  if (r.onProgress !== undefined && typeof r.onProgress !== 'function') throw new InvalidArgumentError(`${call}() option onProgress must be a function (progress) => void`);
  if (r.signal !== undefined && !(r.signal instanceof AbortSignal)) throw new InvalidArgumentError(`${call}() option signal must be an AbortSignal`);
  return o;
}


/** Validates processor options; throws InvalidArgumentError naming the problem. @internal */
export function checkOptions(name: unknown, o: ProcessorOptions, needHandlers: boolean): void {
  try {
    checkOptionsOf(name, o, needHandlers);
  } catch (e) {
    if (e instanceof AthanorError) throw e;
    throw new InvalidArgumentError(`reading the processor options threw ${describeThrown(e)}; pass plain objects and arrays`, { cause: e });
  }
}

function checkOptionsOf(name: unknown, o: ProcessorOptions, needHandlers: boolean): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > 200) throw new InvalidArgumentError('a processor needs a name: a non-empty string of at most 200 characters');
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError('processor options must be an object');
  const known = new Set(['handlers', 'batchSize', 'pollIntervalMs', 'onError', 'allowPendingMigrations', 'reset', 'onLog']);
  for (const k of Object.keys(o)) if (!known.has(k)) throw new InvalidArgumentError(`unknown processor option ${JSON.stringify(k)}`);
  if (o.batchSize !== undefined && (!Number.isInteger(o.batchSize) || o.batchSize < 1 || o.batchSize > 1_000_000)) throw new InvalidArgumentError('batchSize must be an integer between 1 and 1000000');
  if (o.pollIntervalMs !== undefined && (!Number.isFinite(o.pollIntervalMs) || o.pollIntervalMs < 0)) throw new InvalidArgumentError('pollIntervalMs must be a non-negative number (0 disables polling)');
  if (o.reset !== undefined && typeof o.reset !== 'function') throw new InvalidArgumentError('reset must be a function (sql) => void');
  if (o.onLog !== undefined && typeof o.onLog !== 'function') throw new InvalidArgumentError('onLog must be a function');
  strategyOf(o.onError ?? 'failFast');
  if (!needHandlers) return;
  const hs = o.handlers ?? [];
  if (!Array.isArray(hs) || hs.length === 0) throw new InvalidArgumentError(`processor ${JSON.stringify(name)} has no handlers; add one with .on(type, fn) or handlers: [...]`);
  const claimed = new Set<string>();
  for (const h of hs as EventHandler<never>[]) {
    if (h === null || typeof h !== 'object') throw new InvalidArgumentError('a handler must be an object { eventType, handle, validate? }');
    for (const k of Object.keys(h)) if (k !== 'eventType' && k !== 'handle' && k !== 'validate') throw new InvalidArgumentError(`unknown handler key ${JSON.stringify(k)}; a handler has eventType, handle and validate`);
    const types = typeof h.eventType === 'string' ? [h.eventType] : h.eventType;
    if (!Array.isArray(types) || types.length === 0 || types.some((t) => typeof t !== 'string' || t.length === 0)) {
      throw new InvalidArgumentError("a handler's eventType must be a non-empty string, a non-empty list of them, or '*'");
    }
    if (new Set(types).size !== types.length) throw new InvalidArgumentError(`a handler lists an event type twice: ${JSON.stringify(types)}`);
    if (typeof h.handle !== 'function') throw new InvalidArgumentError(`the handler for ${JSON.stringify(h.eventType)} needs a handle(sql, event) function`);
    if (h.validate !== undefined && typeof h.validate !== 'function') throw new InvalidArgumentError('validate must be a function (payload) => boolean');
    for (const t of types) {
      if (claimed.has(t)) throw new InvalidArgumentError(`processor ${JSON.stringify(name)} has two handlers for ${JSON.stringify(t)}; one handler per event type (do both things in one handle function)`);
      claimed.add(t);
    }
  }
}

/**
 * A shallow copy of processor options (and of each handler), read once: validation
 * and use then see the same values, and a getter or proxy that throws becomes
 * `ERR_INVALID_ARGUMENT` with the thrown value as its cause.
 * @internal
 */
export function plainOptions<O extends object>(o: O, what = 'processor options'): O {
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
