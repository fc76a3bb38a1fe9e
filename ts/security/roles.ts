/**
 * Custom roles: named lists of permissions kept durably under athanor's reserved
 * keys (`\0athanor/roles/<name>`), each change recorded in the audit trail in the
 * same commit. The built-in roles (`admin`, `developer`, `viewer`, `auditor`) are
 * fixed and cannot be redefined or dropped.
 */
import { InvalidArgumentError } from '../errors.js';
import { i64, json, type Value } from '../state/codec.js';
import { RESERVED_PREFIX } from '../state/reserved.js';
import type { Tx } from '../state/transaction.js';
import type { AuditTrail, AuditStore } from './audit.js';
import { BUILTIN_ROLES, checkPermissions, describePermission, type Caller, type Permission } from './permissions.js';

/** A role as {@link Roles.list} returns it. */
export interface RoleInfo {
  /** Its name. */
  name: string;
  /** Its grants. */
  permissions: readonly Permission[];
  /** Whether it is one of athanor's own. */
  builtin: boolean;
}

/** What roles need of the database. @internal */
export interface RoleStore extends AuditStore {
  /** One state value. */
  getOpt(key: string): Value | undefined;
}

const ROLE_PREFIX = `${RESERVED_PREFIX}roles/`;
/** Counts role changes, so other processes' handles learn of them when another writer commits. */
const ROLES_VERSION = `${RESERVED_PREFIX}security/roles-version`;
const ROLE_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Shared by every `Roles` of one database: bumped by each role change this process makes or sees. @internal */
export interface RoleVersion {
  value: number;
  /** The store's count of role changes when last read. */
  stored: bigint;
}

/**
 * The version of each database open in this process with roles in use, by its real
 * path, with how many handles hold it: every handle on one database shares one, so a
 * role changed through one reaches the others' callers at once (their commits share
 * one writer, and only other writers' commits make a handle read the roles again).
 */
const versions = new Map<string, { version: RoleVersion; holders: number }>();

/** The version every handle on the database at real path `dir` shares; give it back with {@link releaseRoleVersion}. @internal */
export function acquireRoleVersion(dir: string): RoleVersion {
  let held = versions.get(dir);
  if (held === undefined) {
    held = { version: { value: 0, stored: 0n }, holders: 0 };
    versions.set(dir, held);
  }
  held.holders++;
  return held.version;
}

/** Gives back a version {@link acquireRoleVersion} handed out (at close). @internal */
export function releaseRoleVersion(dir: string): void {
  const held = versions.get(dir);
  if (held !== undefined && --held.holders === 0) versions.delete(dir);
}

function checkName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !ROLE_NAME.test(name)) throw new InvalidArgumentError(`a role name must be 1 to 64 characters of A-Z a-z 0-9 _ . : -, got ${JSON.stringify(name)}`);
}

/** `db.roles`: define, read, list and drop custom roles. */
export class Roles {
  readonly #store: RoleStore;
  readonly #audit: AuditTrail;
  readonly #actor: Caller | undefined;
  readonly #version: RoleVersion;

  /** @internal */
  constructor(store: RoleStore, audit: AuditTrail, version: RoleVersion, actor?: Caller) {
    this.#store = store;
    this.#audit = audit;
    this.#version = version;
    this.#actor = actor;
  }

  /** A number that changes whenever this process changes a role. @internal */
  get version(): number {
    return this.#version.value;
  }

  /**
   * Called after each commit (this process's or another's, see `db.events.subscribe`):
   * a role changed elsewhere makes every handle read its roles again. @internal
   */
  refresh(): void {
    const stored = this.#store.getOpt(ROLES_VERSION)?.asI64() ?? 0n;
    if (stored !== this.#version.stored) {
      this.#version.stored = stored;
      this.#version.value++;
    }
  }

  /** Defines (or replaces) the custom role `name`; durable when the promise resolves. */
  async define(name: string, permissions: readonly Permission[]): Promise<void> {
    checkName(name);
    if (Object.hasOwn(BUILTIN_ROLES, name)) throw new InvalidArgumentError(`${name} is a built-in role and cannot be redefined; define a role of another name`);
    const perms = checkPermissions(permissions, name);
    await this.#change('roles.define', `${name} = [${perms.map(describePermission).join(', ')}]`, (tx) => tx.set(ROLE_PREFIX + name, json({ permissions: perms })));
  }

  /** Drops the custom role `name`; resolves to whether it existed. Callers holding it lose its grants. */
  async drop(name: string): Promise<boolean> {
    checkName(name);
    if (Object.hasOwn(BUILTIN_ROLES, name)) throw new InvalidArgumentError(`${name} is a built-in role and cannot be dropped`);
    if (this.#store.getOpt(ROLE_PREFIX + name) === undefined) return false;
    await this.#change('roles.drop', `${name} dropped`, (tx) => tx.delete(ROLE_PREFIX + name));
    return true;
  }

  async #change(action: string, detail: string, write: (tx: Tx) => void): Promise<void> {
    const actor = this.#actor;
    await this.#store.internalTransaction().execute((tx) => {
      write(tx);
      tx.update(ROLES_VERSION, (v) => i64((v?.asI64() ?? 0n) + 1n));
      this.#audit.inTransaction(tx, {
        at: Date.now(),
        count: 1,
        profile: this.#audit.profile(actor?.id ?? '', actor ? actor.roles : []),
        action,
        permission: actor ? 'admin' : '(application)',
        outcome: 'allow',
        detail,
      });
    });
    this.#version.value++;
  }

  /** The grants of role `name`, built-in or custom; `undefined` when there is none. */
  get(name: string): readonly Permission[] | undefined {
    if (typeof name !== 'string') throw new InvalidArgumentError('a role name must be a string');
    if (Object.hasOwn(BUILTIN_ROLES, name)) return BUILTIN_ROLES[name];
    if (!ROLE_NAME.test(name)) return undefined;
    const v = this.#store.getOpt(ROLE_PREFIX + name);
    return v === undefined ? undefined : checkPermissions(v.asJson<{ permissions: unknown }>().permissions, name);
  }

  /** Every role, built-in first. */
  list(): RoleInfo[] {
    const out: RoleInfo[] = Object.entries(BUILTIN_ROLES).map(([name, permissions]) => ({ name, permissions, builtin: true }));
    for (let after: string | undefined; ; ) {
      const page = this.#store.list({ prefix: ROLE_PREFIX, after, limit: 1000 });
      for (const e of page) {
        const name = e.key.slice(ROLE_PREFIX.length);
        out.push({ name, permissions: checkPermissions(e.value.asJson<{ permissions: unknown }>().permissions, name), builtin: false });
      }
      if (page.length < 1000) return out;
      after = page[page.length - 1]!.key;
    }
  }
}
