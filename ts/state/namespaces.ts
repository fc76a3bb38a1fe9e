/**
 * Namespaces: what the registry records of one, the options it is created with, and
 * the checks on both. Isolation itself lives in the native core (a namespace's id is
 * part of every key it writes, `native/core/src/store/space.rs`); this file only
 * describes namespaces to TypeScript.
 */
import { InvalidArgumentError } from '../errors.js';
import type { NativeNamespace } from '../internal/native.js';

/** A namespace of a database. */
export interface NamespaceInfo {
  /** Its name (1 to 64 characters `a-z 0-9 _ - .`, starting with a letter or digit). */
  readonly name: string;
  /** Its id in the key encoding: never 0 (the database itself), never reused. */
  readonly id: number;
  /** When it was created. */
  readonly createdAt: Date;
  /** The labels it was created with. */
  readonly labels: Readonly<Record<string, string>>;
}

/** Options of `db.namespaces.create(name, options)`. */
export interface NamespaceOptions {
  /** Free-form labels kept with the namespace (e.g. `{ tenant: 'Acme GmbH' }`): at most 32, each value at most 256 characters. */
  labels?: Record<string, string>;
}

/** Options of `db.namespace(name, options)`. */
export interface OpenNamespaceOptions extends NamespaceOptions {
  /** Create the namespace when it does not exist (default false: `NotFoundError`). */
  create?: boolean;
}

const NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

/** Checks a namespace name as the core does, so a bad one fails before any native call. @internal */
export function checkNamespaceName(name: unknown): string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new InvalidArgumentError(`namespace name ${JSON.stringify(name)} is not valid: use 1 to 64 characters a-z, 0-9, '_', '-', '.', starting with a letter or digit`);
  }
  if (name === 'default') throw new InvalidArgumentError("'default' is the database itself: use the database handle, not db.namespace('default')");
  return name;
}

/** Checks creation options; returns the JSON text the registry stores. @internal */
export function encodeNamespaceOptions(options: unknown): string {
  if (options === undefined) return '{}';
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw new InvalidArgumentError('namespace options must be an object { labels?, create? }');
  const { labels, create, ...rest } = options as Record<string, unknown>;
  if (Object.keys(rest).length > 0) throw new InvalidArgumentError(`unknown namespace options ${Object.keys(rest).join(', ')}; use labels (and create, when opening)`);
  if (create !== undefined && typeof create !== 'boolean') throw new InvalidArgumentError('namespace option create must be a boolean');
  if (labels === undefined) return '{}';
  if (labels === null || typeof labels !== 'object' || Array.isArray(labels)) throw new InvalidArgumentError('namespace labels must be an object of strings');
  const entries = Object.entries(labels as Record<string, unknown>);
  if (entries.length > 32) throw new InvalidArgumentError(`a namespace has at most 32 labels, got ${entries.length}`);
  for (const [k, v] of entries) {
    if (typeof v !== 'string' || v.length > 256 || k.length === 0 || k.length > 64) throw new InvalidArgumentError(`namespace label ${JSON.stringify(k)} must be a string of at most 256 characters, under a name of 1 to 64 characters`);
  }
  return JSON.stringify({ labels: Object.fromEntries(entries) });
}

/** A registry record as TypeScript sees it. @internal */
export function namespaceInfo(n: NativeNamespace): NamespaceInfo {
  const o = JSON.parse(n.options) as { labels?: Record<string, string> };
  return Object.freeze({ name: n.name, id: n.id, createdAt: new Date(n.createdAtMs), labels: Object.freeze({ ...(o.labels ?? {}) }) });
}
