/**
 * Callers, roles and permissions: what a caller handle (`db.as(caller)`) may do.
 * The checks themselves run in `handle.ts`; this file is the vocabulary and the matcher.
 */
import { InvalidArgumentError } from '../errors.js';

/** What a permission lets a caller do. `admin` implies every other action. */
export type Action = 'read' | 'write' | 'admin' | 'audit';

/** The kinds of resource a permission can be narrowed to, each by a name prefix. */
export type ResourceKind = 'key' | 'event' | 'collection' | 'table';

/** A set of resources: every `kind` whose name starts with `prefix` (`''`: all of them). */
export interface Resource {
  /** State keys, event types, vector collections, or SQL tables. */
  kind: ResourceKind;
  /** Names starting with this string. */
  prefix: string;
}

/**
 * One grant. Without `resource` it covers every resource of the namespace; with one,
 * only that kind and prefix (an operation on all resources, e.g. reading the whole
 * log or SQL, then needs an unnarrowed grant).
 */
export interface Permission {
  /** The action granted. */
  action: Action;
  /** The namespace it applies to (`'default'`: the database's own), `'*'` (the default) for all. */
  namespace?: string;
  /** Narrows the grant to resources of one kind and prefix. */
  resource?: Resource;
}

/**
 * Who is calling: an id the application has authenticated (athanor does not
 * authenticate callers; it enforces what their roles allow) and the names of
 * their roles, built-in (`admin`, `developer`, `viewer`, `auditor`) or defined
 * with `db.roles.define`.
 */
export interface Caller {
  /** The caller's id, recorded in the audit trail. */
  id: string;
  /** Role names. */
  roles: readonly string[];
}

/** What one operation needs. @internal */
export interface Need {
  action: Action;
  /** Absent: the operation touches every resource (or none in particular). */
  kind?: ResourceKind;
  name?: string;
}

/** The name permissions give the database's own namespace (what `db.as(caller)` reaches; `db.as(caller).namespace(name)` reaches the others). */
export const DEFAULT_NAMESPACE = 'default';

/** The built-in roles: their grants can be read, never redefined. */
export const BUILTIN_ROLES: Readonly<Record<string, readonly Permission[]>> = Object.freeze({
  /** Everything, including roles, processors, backups and the audit trail. */
  admin: Object.freeze([{ action: 'admin' }]) as readonly Permission[],
  /** Reads and writes state, events, vectors and SQL. */
  developer: Object.freeze([{ action: 'read' }, { action: 'write' }]) as readonly Permission[],
  /** Reads state, events, vectors and SQL. */
  viewer: Object.freeze([{ action: 'read' }]) as readonly Permission[],
  /** Reads the audit trail and the event log (and checks its chain), nothing else. */
  auditor: Object.freeze([{ action: 'audit' }, { action: 'read', resource: { kind: 'event', prefix: '' } }]) as readonly Permission[],
});

const ACTIONS: readonly Action[] = ['read', 'write', 'admin', 'audit'];
const KINDS: readonly ResourceKind[] = ['key', 'event', 'collection', 'table'];

/** Whether `p` applies in `namespace`. @internal */
export function appliesIn(p: Permission, namespace: string): boolean {
  return p.namespace === undefined || p.namespace === '*' || p.namespace === namespace;
}

/** Whether `p` grants `n` in `namespace`. @internal */
export function grants(p: Permission, n: Need, namespace: string = DEFAULT_NAMESPACE): boolean {
  if (p.action !== n.action && p.action !== 'admin') return false;
  if (!appliesIn(p, namespace)) return false;
  if (p.resource === undefined) return true;
  return n.kind === p.resource.kind && n.name !== undefined && n.name.startsWith(p.resource.prefix);
}

/** How a need reads in an error and in the audit trail, e.g. `write key:"orders/1"`. @internal */
export function describeNeed(n: Need): string {
  return n.kind === undefined ? n.action : `${n.action} ${n.kind}:${JSON.stringify(n.name ?? '')}`;
}

/** How a grant reads in the audit trail, e.g. `read key:"orders/"*`. @internal */
export function describePermission(p: Permission): string {
  const ns = p.namespace !== undefined && p.namespace !== '*' ? ` in ${p.namespace}` : '';
  return p.resource === undefined ? `${p.action}${ns}` : `${p.action} ${p.resource.kind}:${JSON.stringify(p.resource.prefix)}*${ns}`;
}

/** Checks a role's permission list as a user passed it; returns a frozen copy. @internal */
export function checkPermissions(perms: unknown, role: string): readonly Permission[] {
  if (!Array.isArray(perms)) throw new InvalidArgumentError(`the permissions of role ${JSON.stringify(role)} must be an array of { action, namespace?, resource? }`);
  return Object.freeze(
    perms.map((p: unknown, i): Permission => {
      const at = `permission ${i} of role ${JSON.stringify(role)}`;
      if (p === null || typeof p !== 'object') throw new InvalidArgumentError(`${at} must be an object { action, namespace?, resource? }`);
      const { action, namespace, resource, ...rest } = p as Record<string, unknown>;
      if (Object.keys(rest).length > 0) throw new InvalidArgumentError(`${at} has unknown fields ${Object.keys(rest).join(', ')}; use action, namespace, resource`);
      if (!ACTIONS.includes(action as Action)) throw new InvalidArgumentError(`${at}: action must be one of ${ACTIONS.join(', ')}`);
      if (namespace !== undefined && (typeof namespace !== 'string' || namespace.length === 0)) throw new InvalidArgumentError(`${at}: namespace must be a non-empty string ('*' for all)`);
      const out: Permission = { action: action as Action };
      if (namespace !== undefined) out.namespace = namespace as string;
      if (resource !== undefined) {
        const r = resource as Record<string, unknown> | null;
        if (r === null || typeof r !== 'object' || !KINDS.includes(r.kind as ResourceKind) || typeof r.prefix !== 'string') {
          throw new InvalidArgumentError(`${at}: resource must be { kind: ${KINDS.map((k) => `'${k}'`).join(' | ')}, prefix: string }`);
        }
        if (action === 'admin' || action === 'audit') throw new InvalidArgumentError(`${at}: ${action as string} cannot be narrowed to a resource`);
        out.resource = Object.freeze({ kind: r.kind as ResourceKind, prefix: r.prefix });
      }
      return Object.freeze(out);
    }),
  );
}

/** Checks a caller as a user passed it. @internal */
export function checkCaller(caller: unknown): Caller {
  if (caller === null || typeof caller !== 'object') throw new InvalidArgumentError('db.as() needs a caller { id, roles }');
  const { id, roles } = caller as Record<string, unknown>;
  if (typeof id !== 'string' || id.length === 0 || id.length > 256) throw new InvalidArgumentError('caller.id must be a non-empty string of at most 256 characters');
  if (!Array.isArray(roles) || roles.some((r) => typeof r !== 'string' || r.length === 0)) throw new InvalidArgumentError('caller.roles must be an array of role names');
  return Object.freeze({ id, roles: Object.freeze([...(roles as string[])]) });
}
