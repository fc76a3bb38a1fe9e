/** Checks of the names a transaction carries: state keys, event types, idempotency keys (the limits of native/core/src/txn.rs). */
import { InvalidArgumentError } from '../errors.js';
import { RESERVED_EVENT_PREFIX, checkWritableEventType } from './reserved.js';

const MAX_KEY_BYTES = 511;

/** Validates a state key and returns its UTF-8 byte length. @internal */
export function checkKey(key: unknown): string {
  if (typeof key !== 'string') throw new InvalidArgumentError(`keys are strings, got ${key === null ? 'null' : typeof key}`);
  if (key.length === 0) throw new InvalidArgumentError('keys must not be empty');
  if (key.length > MAX_KEY_BYTES / 3 && Buffer.byteLength(key) > MAX_KEY_BYTES) {
    throw new InvalidArgumentError(`key is ${Buffer.byteLength(key)} UTF-8 bytes; the limit is ${MAX_KEY_BYTES} (hash long identifiers)`);
  }
  if (!key.isWellFormed()) throw new InvalidArgumentError('key has lone surrogates, which UTF-8 cannot store');
  return key;
}

/** Event types repeat; the last one a user transaction passed needs no second check. */
let lastCheckedType = '';

/** Validates an event type name; athanor's reserved types only when `internal`. @internal */
export function checkEventType(type: unknown, internal: boolean): string {
  if (type === lastCheckedType) return type;
  if (typeof type !== 'string' || type.length === 0) throw new InvalidArgumentError('event type must be a non-empty string');
  const n = Buffer.byteLength(type);
  if (n > 200) throw new InvalidArgumentError(`event type is ${n} UTF-8 bytes; the limit is 200`);
  if (type.includes('\0')) throw new InvalidArgumentError('event type must not contain NUL');
  if (!type.isWellFormed()) throw new InvalidArgumentError('event type has lone surrogates');
  if (type.startsWith(RESERVED_EVENT_PREFIX)) {
    if (!internal) checkWritableEventType(type);
    return type;
  }
  lastCheckedType = type;
  return type;
}

/** Validates an idempotency key: a non-empty string of at most 256 UTF-8 bytes. @internal */
export function checkIdempotencyKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length === 0) throw new InvalidArgumentError('idempotencyKey must be a non-empty string');
  if (!key.isWellFormed()) throw new InvalidArgumentError('idempotencyKey has lone surrogates, which UTF-8 cannot store (distinct keys would collide)');
  if (Buffer.byteLength(key) > 256) throw new InvalidArgumentError('idempotencyKey is longer than 256 UTF-8 bytes');
}

/** Largest stream id in UTF-8 bytes (native/core/src/txn.rs, `MAX_STREAM_ID_BYTES`). */
const MAX_STREAM_ID_BYTES = 256;

/** Validates a stream id: a non-empty string of at most 256 UTF-8 bytes without NUL. @internal */
export function checkStreamId(id: unknown): string {
  if (typeof id !== 'string' || id.length === 0) throw new InvalidArgumentError('stream id must be a non-empty string');
  const n = Buffer.byteLength(id);
  if (n > MAX_STREAM_ID_BYTES) throw new InvalidArgumentError(`stream id is ${n} UTF-8 bytes; the limit is ${MAX_STREAM_ID_BYTES} (hash long identifiers)`);
  if (id.includes('\0')) throw new InvalidArgumentError('stream id must not contain NUL');
  if (!id.isWellFormed()) throw new InvalidArgumentError('stream id has lone surrogates, which UTF-8 cannot store');
  return id;
}
