/**
 * Schema migrations for projection.db: code-defined or loaded from a directory of
 * `NNNN_name.sql` / `NNNN_name.down.sql` files. Each migration runs in its own
 * transaction together with its history row; an applied migration whose
 * definition changed is refused (drift), so every copy of the app agrees on the schema.
 */
import { INTERNAL } from '../state/reserved.js';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AthanorError, InvalidArgumentError, IoError, MigrationDriftError } from '../errors.js';
import type { Sql } from './sql.js';
import { describeThrown, handlerError } from '../internal/thrown.js';

/** SQL text, or a function doing the work through the connection. */
export type MigrationStep = string | ((sql: Sql) => void);

/** One schema change. */
export interface Migration {
  /** Positive integer; migrations apply in ascending order. */
  version: number;
  /** Short name (letters, digits, `_`, `-`). */
  name: string;
  /** Applies the change. */
  up: MigrationStep;
  /** Reverts it (needed by `rollbackLast()` and migration-based rebuilds). */
  down?: MigrationStep;
  /** Checks the result inside the migration's transaction; `false` or a throw rolls it back. */
  verify?: (sql: Sql) => boolean | void;
}

/** A migration recorded as applied. */
export interface AppliedMigration {
  /** Its version. */
  version: number;
  /** Its name. */
  name: string;
  /** When it was applied, ms since the epoch. */
  appliedAt: number;
  /** SHA-256 (hex) of its name and `up` step. */
  checksum: string;
}

const NAME = /^[A-Za-z0-9_-]+$/;
/** Longest migration name: with its number and `.down.sql` it stays well under every file system's name limit. */
const NAME_MAX = 200;

/** File-system errors that mean the path given is unusable (the caller's to fix), not that the disk failed. */
const PATH_ERRORS = new Set(['ENOENT', 'ENOTDIR', 'EISDIR', 'ENAMETOOLONG', 'EEXIST', 'ELOOP', 'EINVAL']);

/** A typed error for a failed file-system call on `file` while `doing` something. */
function fsError(e: unknown, doing: string, file: string): AthanorError {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  const detail = `${doing} ${file}: ${describeThrown(e)}`;
  if (code !== undefined && PATH_ERRORS.has(code)) return new InvalidArgumentError(`cannot ${detail}; check the path`, { cause: e });
  const io = new IoError(`cannot ${detail}`);
  Object.defineProperty(io, 'cause', { value: e, writable: true, configurable: true });
  return io;
}

function checkDir(dir: unknown): asserts dir is string {
  if (typeof dir !== 'string' || dir.length === 0 || dir.includes('\0')) throw new InvalidArgumentError('the migrations directory must be a non-empty path string');
}
const FILE = /^(\d+)_([A-Za-z0-9_-]+?)(\.down)?\.sql$/;

function stepText(s: MigrationStep): string {
  return typeof s === 'string' ? s : `fn:${s.toString()}`;
}

/** The checksum recorded for a migration: SHA-256 of its name and `up` (text, or the function's source). */
export function checksumOf(m: Pick<Migration, 'name' | 'up'>): string {
  return createHash('sha256').update(`${m.name}\n${stepText(m.up)}`).digest('hex');
}

/** The migrations of projection.db (`db.migrations`). */
export class Migrations {
  readonly #sql: () => Sql;
  readonly #list = new Map<number, Migration>();

  /** @internal */
  constructor(sql: () => Sql) {
    this.#sql = sql;
  }

  /** Registers migrations; rejects bad shapes and duplicate versions. */
  add(...migrations: Migration[]): this {
    const versions = new Set<number>();
    // Validate and keep copies: a getter or proxy cannot change a migration after its checks.
    const copies = migrations.map((m) => {
      if (m === null || typeof m !== 'object') throw new InvalidArgumentError('a migration must be an object { version, name, up, down?, verify? }');
      try {
        return { ...m };
      } catch (e) {
        throw new InvalidArgumentError(`reading a migration threw ${describeThrown(e)}; pass a plain object { version, name, up, down?, verify? }`, { cause: e });
      }
    });
    for (const m of copies) {
      for (const k of Object.keys(m)) if (!['version', 'name', 'up', 'down', 'verify'].includes(k)) throw new InvalidArgumentError(`unknown migration key ${JSON.stringify(k)}`);
      if (!Number.isSafeInteger(m.version) || m.version < 1) throw new InvalidArgumentError(`migration version must be a positive integer, got ${describeThrown(m.version)}`);
      if (typeof m.name !== 'string' || !NAME.test(m.name)) throw new InvalidArgumentError(`migration ${m.version}: name must be letters, digits, '_' or '-'`);
      for (const k of ['up', 'down'] as const) {
        const s = m[k];
        if (s === undefined && k === 'down') continue;
        if (typeof s !== 'string' && typeof s !== 'function') throw new InvalidArgumentError(`migration ${m.version}: ${k} must be SQL text or a function (sql) => void`);
      }
      if (m.verify !== undefined && typeof m.verify !== 'function') throw new InvalidArgumentError(`migration ${m.version}: verify must be a function`);
      if (this.#list.has(m.version)) throw new InvalidArgumentError(`migration version ${m.version} is registered twice (${this.#list.get(m.version)!.name} and ${m.name})`);
      if (versions.has(m.version)) throw new InvalidArgumentError(`migration version ${m.version} appears twice in this call`);
      versions.add(m.version);
    }
    for (const m of copies) this.#list.set(m.version, m);
    return this;
  }

  /** Registers every `NNNN_name.sql` (with optional `NNNN_name.down.sql`) in `dir`. */
  loadDir(dir: string): this {
    checkDir(dir);
    let files: string[];
    try {
      files = fs.readdirSync(dir);
    } catch (e) {
      throw fsError(e, 'read the migrations directory', dir);
    }
    const read = (file: string): string => {
      try {
        return fs.readFileSync(path.join(dir, file), 'utf8');
      } catch (e) {
        throw fsError(e, 'read the migration file', path.join(dir, file));
      }
    };
    const ups = new Map<number, { name: string; file: string }>();
    const downs = new Map<number, string>();
    for (const f of files.sort()) {
      const m = FILE.exec(f);
      if (!m) continue;
      const version = Number(m[1]);
      if (m[3]) downs.set(version, f);
      else {
        if (ups.has(version)) throw new InvalidArgumentError(`two migration files have version ${version}: ${ups.get(version)!.file} and ${f}`);
        ups.set(version, { name: m[2]!, file: f });
      }
    }
    const list: Migration[] = [];
    for (const [version, { name, file }] of ups) {
      const down = downs.get(version);
      list.push({
        version,
        name,
        up: read(file),
        ...(down !== undefined ? { down: read(down) } : {}),
      });
    }
    for (const v of downs.keys()) if (!ups.has(v)) throw new InvalidArgumentError(`migration ${v} has a .down.sql file but no up file`);
    return this.add(...list);
  }

  /**
   * Creates `NNNN_name.sql` and `NNNN_name.down.sql` in `dir` (created if needed), numbered
   * one after the highest version there. Returns the two paths.
   */
  static generate(dir: string, name: string): {
    /** The new version number. */
    version: number;
    /** Path of the new up file. */
    up: string;
    /** Path of the new down file. */
    down: string;
  } {
    checkDir(dir);
    if (typeof name !== 'string' || !NAME.test(name) || name.length > NAME_MAX) {
      throw new InvalidArgumentError(`a migration name must be 1 to ${NAME_MAX} letters, digits, '_' or '-'`);
    }
    let files: string[];
    try {
      fs.mkdirSync(dir, { recursive: true });
      files = fs.readdirSync(dir);
    } catch (e) {
      throw fsError(e, 'use the migrations directory', dir);
    }
    let max = 0;
    for (const f of files) {
      const m = FILE.exec(f);
      if (m) max = Math.max(max, Number(m[1]));
    }
    const version = max + 1;
    if (!Number.isSafeInteger(version)) throw new InvalidArgumentError(`the migration files in ${dir} are numbered up to ${max}; no next version fits`);
    const base = `${describeThrown(version).padStart(4, '0')}_${name}`;
    const up = path.join(dir, `${base}.sql`);
    const down = path.join(dir, `${base}.down.sql`);
    try {
      fs.writeFileSync(up, `-- Migration ${version}: ${name}\n-- Write the schema change here.\n`, { flag: 'wx' });
    } catch (e) {
      throw fsError(e, 'create', up);
    }
    try {
      fs.writeFileSync(down, `-- Revert migration ${version}: ${name}\n`, { flag: 'wx' });
    } catch (e) {
      fs.rmSync(up, { force: true });
      throw fsError(e, 'create', down);
    }
    return { version, up, down };
  }

  /** Registered migrations, by version. */
  registered(): Migration[] {
    return [...this.#list.values()].sort((a, b) => a.version - b.version);
  }

  /** Applied migrations, by version. */
  history(): AppliedMigration[] {
    return this.#sql()
      [INTERNAL]()
      .migrations()
      .map((r) => ({ version: r.version, name: r.name, appliedAt: r.appliedAt, checksum: r.checksum }));
  }

  /** The highest applied version (0 when none). */
  schemaVersion(): number {
    const applied = this.#sql()[INTERNAL]().migrations();
    return applied.length === 0 ? 0 : applied[applied.length - 1]!.version;
  }

  /** Throws MigrationDriftError if an applied migration's registered definition changed. */
  checkDrift(): void {
    for (const h of this.history()) {
      const m = this.#list.get(h.version);
      if (m === undefined) continue;
      const sum = checksumOf(m);
      if (sum !== h.checksum) {
        throw new MigrationDriftError(
          `migration ${h.version} (${h.name}) was applied with checksum ${h.checksum.slice(0, 12)}… but its definition now hashes to ${sum.slice(0, 12)}…; never edit an applied migration: restore it and add a new one`,
        );
      }
    }
  }

  /** Registered migrations not applied yet, by version (after a drift check). */
  pending(): Migration[] {
    this.checkDrift();
    const applied = new Set(this.history().map((h) => h.version));
    return this.registered().filter((m) => !applied.has(m.version));
  }

  /**
   * Applies every pending migration in version order, all in one transaction; returns
   * those applied. A failure (a step's error, a failed verification) is rethrown and rolls
   * back every migration of the call, so the schema is left as it was (like `rollbackTo`).
   */
  run(): AppliedMigration[] {
    const sql = this.#sql();
    const pending = this.pending();
    return sql
      .transaction(() => {
        const out: AppliedMigration[] = [];
        for (const m of pending) this.#apply(sql, m, out);
        return out;
      })
      .immediate();
  }

  /** One migration's up step, verification and history row, in a transaction nested in the caller's. */
  #apply(sql: Sql, m: Migration, out: AppliedMigration[]): void {
    const rec: AppliedMigration = { version: m.version, name: m.name, appliedAt: Date.now(), checksum: checksumOf(m) };
    sql.transaction(() => {
      step(sql, m.up, m, 'up');
      if (m.verify !== undefined) {
        let ok: boolean | void;
        try {
          ok = m.verify(sql);
        } catch (e) {
          throw new InvalidArgumentError(`migration ${m.version} (${m.name}) failed verification: ${describeThrown(e)}; it was rolled back`, { cause: e });
        }
        if (ok === false) throw new InvalidArgumentError(`migration ${m.version} (${m.name}) failed verification; it was rolled back`);
      }
      sql[INTERNAL]().recordMigration(rec);
    }).immediate();
    out.push(rec);
  }

  /** Reverts the newest applied migration with its `down` step; returns it, or `undefined` when none is applied. */
  rollbackLast(): AppliedMigration | undefined {
    const sql = this.#sql();
    const last = this.history().pop();
    if (last === undefined) return undefined;
    const [m] = this.#downs([last]);
    const down = m!.down!;
    sql.transaction(() => {
      step(sql, down, m!, 'down');
      sql[INTERNAL]().unrecordMigration(m!.version);
    }).immediate();
    return last;
  }

  /** The registered migrations that revert `applied`, after checking each can (registered, with a `down`, no drift). */
  #downs(applied: readonly AppliedMigration[]): Migration[] {
    const out: Migration[] = [];
    for (const a of applied) {
      const m = this.#list.get(a.version);
      if (m === undefined) throw new InvalidArgumentError(`migration ${a.version} (${a.name}) is applied but not registered; register it to roll it back`);
      if (m.down === undefined) throw new InvalidArgumentError(`migration ${m.version} (${m.name}) has no down step; it cannot be rolled back`);
      out.push(m);
    }
    this.checkDrift();
    return out;
  }

  /**
   * Rolls back applied migrations, newest first, until the schema version is at most
   * `version` (a non-negative integer; 0 rolls back every migration). All or nothing:
   * every migration to revert is checked first, and they are reverted in one transaction.
   */
  rollbackTo(version: number): AppliedMigration[] {
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 0) {
      throw new InvalidArgumentError(`rollbackTo() needs a schema version: a non-negative integer (0 rolls back every migration), got ${describeThrown(version)}`);
    }
    const sql = this.#sql();
    const undo = this.history()
      .filter((h) => h.version > version)
      .reverse();
    this.#downs(undo);
    return sql
      .transaction(() => {
        const out: AppliedMigration[] = [];
        for (const h of undo) {
          const last = this.rollbackLast();
          if (last?.version !== h.version) throw new InvalidArgumentError(`migration history changed while rolling back to ${version}; nothing was rolled back`);
          out.push(last);
        }
        return out;
      })
      .immediate();
  }

  /** Throws unless a migrations rebuild can run: migrations registered, every applied one revertible. @internal */
  checkRebuild(): void {
    if (this.#list.size === 0) throw new InvalidArgumentError('rebuild with { schema: "migrations" } needs registered migrations (db.migrations.add / loadDir)');
    this.#downs(this.history());
    this.pending();
  }
}

function step(sql: Sql, s: MigrationStep, m: Migration, which: string): void {
  try {
    if (typeof s === 'string') sql.exec(s);
    else {
      const r: unknown = s(sql);
      if (r !== undefined && r !== null && typeof (r as { then?: unknown }).then === 'function') {
        throw new InvalidArgumentError(`migration ${m.version} (${m.name}) ${which} returned a Promise; migration steps must be synchronous`);
      }
    }
  } catch (e) {
    const err = handlerError(e, 'it');
    err.message = `migration ${m.version} (${m.name}) ${which} failed: ${err.message}; it was rolled back`;
    throw err;
  }
}
