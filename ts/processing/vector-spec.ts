/** A vector projection's spec checked and its rules compiled: which events write which documents, from which fields. */
import { InvalidArgumentError } from '../errors.js';
import type { StoredEvent } from '../state/events.js';
import { checkNewCollectionName } from '../state/reserved.js';
import { describeThrown } from '../internal/thrown.js';
import { checkOptions } from './options.js';
import type { DeleteRule, EmbedRule, VectorProjectionSpec } from './vector-projection.js';

/** Reads a field of an event. @internal */
export type Getter = (event: StoredEvent) => unknown;

/** A rule of `on`, compiled. @internal */
export interface CompiledRule {
  kind: 'upsert' | 'delete';
  id: Getter;
  text?: Getter;
  metadata?: Getter;
}

/** Compiles `'$.a.b[0]["k"]'` / `'@id'` / `'@type'` into a getter. */
function compilePath(src: string, what: string): Getter {
  if (src === '@id') return (e) => String(e.id);
  if (src === '@type') return (e) => e.type;
  if (typeof src !== 'string' || !src.startsWith('$')) throw new InvalidArgumentError(`${what} must be '@id', '@type' or a payload path like '$.text', got ${describeThrown(src)}`);
  const steps: (string | number)[] = [];
  const re = /\.([A-Za-z_$][\w$]*)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]/y;
  let at = 1;
  while (at < src.length) {
    re.lastIndex = at;
    const m = re.exec(src);
    if (m === null) throw new InvalidArgumentError(`${what}: cannot parse path ${describeThrown(src)} at offset ${at}; use $.name, [index] or ["key"]`);
    steps.push(m[1] ?? (m[2] !== undefined ? Number(m[2]) : (JSON.parse(`"${m[3]!}"`) as string)));
    at = re.lastIndex;
  }
  return (e) => {
    let v: unknown = e.payload;
    for (const s of steps) {
      if (v === null || typeof v !== 'object') return undefined;
      v = (v as Record<string | number, unknown>)[s];
    }
    return v;
  };
}

function compileSource(src: unknown, what: string): Getter {
  if (typeof src === 'function') return src as Getter;
  return compilePath(src as string, what);
}

/** @internal */
export function compileRule(type: string, rule: unknown): CompiledRule {
  const where = `vector projection rule for ${JSON.stringify(type)}`;
  if (rule === null || typeof rule !== 'object') throw new InvalidArgumentError(`${where} must be { text, id?, metadata? } or { delete: true, id? }`);
  const r = rule as Partial<EmbedRule> & Partial<DeleteRule>;
  const id = compileSource(r.id ?? '@id', `${where}: id`);
  if (r.delete === true) return { kind: 'delete', id };
  if (r.text === undefined) throw new InvalidArgumentError(`${where} needs text (a payload path like '$.body' or a function of the event)`);
  const text = compileSource(r.text, `${where}: text`);
  let metadata: Getter | undefined;
  if (typeof r.metadata === 'function') metadata = r.metadata as Getter;
  else if (r.metadata !== undefined) {
    if (r.metadata === null || typeof r.metadata !== 'object') throw new InvalidArgumentError(`${where}: metadata must be { key: source } or a function`);
    const fields = Object.entries(r.metadata).map(([k, s]) => [k, compilePath(s, `${where}: metadata.${k}`)] as const);
    metadata = (e) => {
      const o: Record<string, unknown> = {};
      for (const [k, g] of fields) {
        const v = g(e);
        if (v !== undefined) o[k] = v;
      }
      return o;
    };
  }
  return { kind: 'upsert', id, text, ...(metadata ? { metadata } : {}) };
}

/** Checks a spec before anything is created. @internal */
export function checkVectorSpec(spec: unknown): asserts spec is VectorProjectionSpec<unknown> {
  if (spec === null || typeof spec !== 'object') throw new InvalidArgumentError('a vector projection is an object { name, collection, embedder, on }');
  const s = spec as VectorProjectionSpec<unknown>;
  const { name, on, collection, embedder, collectionOptions: _c, ...rest } = s;
  checkOptions(name, rest, false);
  if (typeof collection !== 'string' || collection.length === 0 || !collection.isWellFormed()) {
    throw new InvalidArgumentError(`vector projection ${JSON.stringify(name)} needs collection: the name of a vector collection (well-formed Unicode)`);
  }
  checkNewCollectionName(collection);
  if (embedder === null || typeof embedder !== 'object' || typeof embedder.embedFlat !== 'function') {
    throw new InvalidArgumentError(`vector projection ${JSON.stringify(name)} needs embedder: an Embedder (Embedder.open / fromPretrained)`);
  }
  if (on === null || typeof on !== 'object' || Object.keys(on).length === 0) {
    throw new InvalidArgumentError(`vector projection ${JSON.stringify(name)} needs \`on\`: event type → { text, id?, metadata? } or { delete: true, id? }`);
  }
  for (const [t, r] of Object.entries(on)) compileRule(t, r);
}
