/**
 * The state keys and checks of agent memory. Every key is
 * `\0athanor/agents/<kind>/<namespace>/<id>[/<sub>]` where each component is
 * `encodeURIComponent`-escaped: the escape never yields `/`, and `%`, NUL, quotes and
 * slashes in a name become `%XX`, so no crafted namespace or id can end where another
 * component begins (the encoding is injective, components are separated by a `/` that
 * no escaped component contains).
 * @internal
 */
import { InvalidArgumentError } from '../errors.js';
import { RESERVED_PREFIX } from '../state/reserved.js';

/** The root of agent memory's state keys. @internal */
export const AGENTS_PREFIX = `${RESERVED_PREFIX}agents/`;

/** The kinds of record agent memory keeps in state. @internal */
export type RecordKind = 'agent' | 'snap' | 'snapid' | 'snapmark' | 'session' | 'task';

/** Escapes one key component; callers check well-formedness first. @internal */
export function component(s: string): string {
  return encodeURIComponent(s);
}

/** The key prefix of every record of `kind` in namespace `ns` (ends with `/`). @internal */
export function kindPrefix(kind: RecordKind, ns: string): string {
  return `${AGENTS_PREFIX}${kind}/${component(ns)}/`;
}

/** The key of one record. @internal */
export function recordKey(kind: RecordKind, ns: string, ...ids: string[]): string {
  return kindPrefix(kind, ns) + ids.map(component).join('/');
}

/** Throws unless `id` is a usable identifier (non-empty, well-formed, at most 200 characters). @internal */
export function checkId(id: unknown, what: string): string {
  if (typeof id !== 'string' || id.length === 0) throw new InvalidArgumentError(`${what} must be a non-empty string, got ${id === null ? 'null' : typeof id}`);
  if (id.length > 200) throw new InvalidArgumentError(`${what} is ${id.length} characters; the limit is 200 (hash longer identifiers)`);
  if (!id.isWellFormed()) throw new InvalidArgumentError(`${what} has lone surrogates, which UTF-8 cannot store; pass a well-formed string`);
  return id;
}

/** Throws unless `ns` is a usable namespace name (as an id; `''` is the default namespace, not a name). @internal */
export function checkNamespace(ns: unknown): string {
  return checkId(ns, 'a namespace');
}

/** Throws unless `v` is a JSON-compatible plain value (objects, arrays, strings, finite numbers, booleans, null). @internal */
export function checkJson(v: unknown, what: string, depth = 0): void {
  if (depth > 64) throw new InvalidArgumentError(`${what} is nested more than 64 levels deep`);
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new InvalidArgumentError(`${what} holds ${v}, which JSON cannot store; use null or a string`);
    return;
  }
  if (Array.isArray(v)) {
    for (const x of v) checkJson(x, what, depth + 1);
    return;
  }
  if (typeof v === 'object' && (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null)) {
    for (const x of Object.values(v as Record<string, unknown>)) checkJson(x, what, depth + 1);
    return;
  }
  throw new InvalidArgumentError(`${what} must be plain JSON (objects, arrays, strings, finite numbers, booleans, null); found ${typeof v === 'object' ? (v as object).constructor?.name ?? 'an object' : typeof v}`);
}

/** An opaque, stable page cursor: the last key of a page. @internal */
export function encodeCursor(key: string): string {
  return Buffer.from(key, 'utf8').toString('base64url');
}

/** Reads a cursor made by {@link encodeCursor} for namespace prefix `prefix`. @internal */
export function decodeCursor(cursor: unknown, prefix: string): string {
  if (typeof cursor !== 'string' || cursor.length === 0) throw new InvalidArgumentError('cursor must be the non-empty string a previous page returned as nextCursor');
  const key = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!key.startsWith(prefix)) throw new InvalidArgumentError('cursor does not belong to this list (another namespace or another kind of record); pass the nextCursor of the previous page of the same list');
  return key;
}
