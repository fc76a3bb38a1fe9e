/** Metadata filters (the vector collections' {@link MetadataFilter} language) evaluated on plain JSON in TS. @internal */
import { InvalidArgumentError } from '../errors.js';
import type { FilterOps, FilterScalar, MetadataFilter } from '../vectors/types.js';

const OPS = new Set(['eq', 'ne', 'in', 'gt', 'gte', 'lt', 'lte']);

/** Throws unless `filter` is a well-formed metadata filter. @internal */
export function checkFilter(filter: unknown): MetadataFilter {
  if (filter === null || typeof filter !== 'object' || Array.isArray(filter)) throw new InvalidArgumentError('a metadata filter is an object { field: value | { eq, ne, in, gt, gte, lt, lte } }');
  for (const [field, cond] of Object.entries(filter)) {
    if (field.length === 0) throw new InvalidArgumentError('a metadata filter field must not be empty');
    if (cond !== null && typeof cond === 'object') {
      for (const op of Object.keys(cond)) if (!OPS.has(op)) throw new InvalidArgumentError(`unknown filter operator ${JSON.stringify(op)} on ${JSON.stringify(field)}; expected eq, ne, in, gt, gte, lt, lte`);
      const inList = (cond as FilterOps).in;
      if (inList !== undefined && !Array.isArray(inList)) throw new InvalidArgumentError(`"in" on ${JSON.stringify(field)} must be an array`);
    }
  }
  return filter as MetadataFilter;
}

function at(meta: unknown, path: string): unknown {
  let cur: unknown = meta;
  const direct = cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>)[path] : undefined;
  if (direct !== undefined) return direct;
  for (const seg of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

function eq(v: unknown, x: FilterScalar): boolean {
  return Array.isArray(v) ? v.includes(x) : v === x;
}

function cmp(v: unknown, x: number | string): number | undefined {
  if (typeof v === 'number' && typeof x === 'number') return v - x;
  if (typeof v === 'string' && typeof x === 'string') return v < x ? -1 : v > x ? 1 : 0;
  return undefined;
}

/** Whether `meta` matches every condition of `filter` (no metadata never matches). @internal */
export function matchesFilter(meta: unknown, filter: MetadataFilter): boolean {
  if (meta === null || meta === undefined || typeof meta !== 'object') return false;
  for (const [field, cond] of Object.entries(filter)) {
    const v = at(meta, field);
    if (cond === null || typeof cond !== 'object') {
      if (!eq(v, cond)) return false;
      continue;
    }
    const o = cond as FilterOps;
    if (o.eq !== undefined && !eq(v, o.eq)) return false;
    if (o.ne !== undefined && eq(v, o.ne)) return false;
    if (o.in !== undefined && !o.in.some((x) => eq(v, x))) return false;
    for (const [op, bound] of [['gt', o.gt], ['gte', o.gte], ['lt', o.lt], ['lte', o.lte]] as const) {
      if (bound === undefined) continue;
      const c = cmp(v, bound);
      if (c === undefined) return false;
      if ((op === 'gt' && !(c > 0)) || (op === 'gte' && !(c >= 0)) || (op === 'lt' && !(c < 0)) || (op === 'lte' && !(c <= 0))) return false;
    }
  }
  return true;
}
