/**
 * Projections into PostgreSQL: `db.pgProjection({ name, pool, on })` applies the
 * database's events, in id order, to PostgreSQL tables. Each batch runs in one
 * PostgreSQL transaction together with the move of the projection's cursor row
 * (`athanor_pg_cursors`), so every event is applied exactly once whatever crashes; a
 * runner holds a session advisory lock per projection while it runs, so a second
 * runner (another process or machine) waits for it instead of contending. Holding
 * the lock, the runner reads the cursor once and keeps it in memory: each batch is
 * `BEGIN` together with the cursor's move (guarded by its expected old value, which
 * also locks the row), the handlers' statements, `COMMIT`: two round trips besides
 * the handlers'. Declarative actions of consecutive events run as one statement per
 * run (a batch of inserts: one multi-row `INSERT`), so a batch of them costs three.
 * It runs from a primary or from a replica.
 */
import { createHash } from 'node:crypto';
import { ClosedError, ConflictError, HandlerError, InvalidArgumentError, MigrationDriftError } from '../errors.js';
import type { EventLog } from '../state/events.js';
import type { StoredEvent } from '../internal/event-pack.js';
import { describeThrown } from '../internal/thrown.js';
import { stringifyStrict } from '../internal/json.js';
import type { ParamSource } from '../processing/declarative.js';
import { Bell, backoffMs } from './backoff.js';

/** What athanor needs of a `pg` query result. */
export interface PgResult {
  /** The rows. */
  rows: Record<string, unknown>[];
  /** Rows changed, for writes. */
  rowCount: number | null;
}

/** What athanor needs of a `pg` client (a `PoolClient` of `pg`). */
export interface PgClient {
  /** Runs one statement (athanor's own text without values may hold several: `pg` answers the list of their results). */
  query(text: string, values?: unknown[]): Promise<PgResult>;
  /** Runs one statement prepared under `name` on this connection (parsed and planned once per connection). */
  query(config: { name: string; text: string; values: unknown[] }): Promise<PgResult>;
  /** Returns the client to its pool; `true` (or an error) destroys its connection. */
  release(destroy?: boolean | Error): void;
  /** `pg` clients emit `error` when their connection breaks while idle (a server restart). */
  on?(event: 'error', listener: (e: Error) => void): unknown;
  /** Removes the listener added by `on` (a client returned to its pool keeps no listener of ours). */
  removeListener?(event: 'error', listener: (e: Error) => void): unknown;
}

/** What athanor needs of a `pg` pool (`new pg.Pool({...})`). */
export interface PgPool {
  /** Checks a client out. */
  connect(): Promise<PgClient>;
}

/** Applies one event inside the batch's PostgreSQL transaction, through `client`. */
export type PgHandler = (event: StoredEvent, client: PgClient) => Promise<unknown> | void;

/**
 * A handler of runs: called once per run of consecutive events (in id order) that map
 * to it within a batch, inside the batch's transaction, so that it can write the whole
 * run in one statement (`INSERT ... SELECT * FROM unnest($1::bigint[], $2::text[])`).
 */
export interface PgRunHandler {
  /** Applies `events` (one or more, consecutive in the log) through `client`. */
  run(events: readonly StoredEvent[], client: PgClient): Promise<unknown> | void;
}

/**
 * A declarative action: one PostgreSQL statement with `$1..$n` parameters taken from
 * the event as in a SQLite declarative projection (`'@id'`, `'@type'`, `'@at'`,
 * `'@commitSeq'`, `'$'` the payload as JSON text, `'$.a.b'`, `'$.items[0]'`,
 * `'$["odd key"]'`, missing → NULL; objects and arrays as JSON text; `{ value }` a constant).
 */
export interface PgAction {
  /** One statement with `$1..$n` parameters. */
  sql: string;
  /** The sources of `$1..$n`, in order. */
  params?: readonly ParamSource[];
}

/** The spec of {@link PgProjection}. */
export interface PgProjectionSpec {
  /** The projection's name: its cursor row and advisory lock (letters, digits, `_`, `-`, `.`). */
  name: string;
  /** The PostgreSQL pool (`pg.Pool`). */
  pool: PgPool;
  /**
   * Per event type (or `'*'`: every type without an entry of its own): a handler, a
   * handler of runs (`{ run(events, client) }`), or declarative actions run in order.
   * Other types only advance the cursor.
   */
  on: Record<string, PgHandler | PgRunHandler | PgAction | readonly PgAction[]>;
  /** Most events per PostgreSQL transaction (default 500). */
  batchSize?: number;
  /** Longest wait between retries, ms (default 5000). */
  maxBackoffMs?: number;
  /** Consecutive failures of a handler on the same batch before the projection stops (default 10). */
  maxHandlerRetries?: number;
  /**
   * Run declarative actions as named prepared statements, parsed and planned once per
   * connection (default `true`). Set `false` behind a pooler in transaction mode that
   * does not keep prepared statements (PgBouncer before 1.21).
   */
  prepare?: boolean;
  /**
   * Merge the declarative actions of consecutive events into one statement per run
   * (default `true`): a run of the same `INSERT ... VALUES ($1, ...)` action becomes one
   * multi-row `INSERT`, a run of the same `DELETE ... WHERE col = $1` one
   * `DELETE ... WHERE col IN (...)` (split where an upsert's key repeats, and at 65,535
   * parameters); the tables end as event-by-event application leaves them. Set `false`
   * when row triggers on the projected tables must fire once per statement, or when a
   * function called in `ON CONFLICT` reads the table being written.
   */
  mergeStatements?: boolean;
}

/** A PostgreSQL projection's progress and health. */
export interface PgProjectionMetrics {
  /** Id of the newest event applied (as this runner knows it). */
  cursor: bigint;
  /** Events in the log not applied yet. */
  lag: number;
  /** Whether this runner holds the projection's advisory lock (it is the one applying). */
  holdsLock: boolean;
  /** Failures so far (connection, handler), each followed by a retry with backoff. */
  errors: number;
  /** The newest failure's message. */
  lastError: string | undefined;
  /** Stopped after `maxHandlerRetries` handler failures on one batch. */
  failed: boolean;
}

const NAME = /^[A-Za-z0-9_.-]{1,200}$/;

const CURSOR_TABLE = `CREATE TABLE IF NOT EXISTS athanor_pg_cursors (
  name text PRIMARY KEY,
  cursor bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
)`;

/** A stable 64-bit advisory lock key for a name (PostgreSQL takes a signed bigint). */
function lockKey(kind: string, name: string): string {
  return createHash('sha256').update(`athanor:${kind}:${name}`).digest().readBigInt64BE(0).toString();
}

/** A projection of the event log into PostgreSQL; see {@link PgProjectionSpec}. */
export class PgProjection {
  /** The projection's name. */
  readonly name: string;
  readonly #log: EventLog;
  readonly #pool: PgPool;
  readonly #on: Record<string, PgHandler | PgRunHandler | readonly CompiledAction[]>;
  readonly #merge: boolean;
  readonly #batchSize: number;
  readonly #maxBackoffMs: number;
  readonly #maxHandlerRetries: number;
  readonly #bell = new Bell();
  readonly #unsubscribe: () => void;
  readonly #waiters: { id: bigint; resolve: () => void; reject: (e: Error) => void }[] = [];
  #client: PgClient | undefined;
  #onClientError: (e: Error) => void = () => undefined;
  #holdsLock = false;
  #cursor = 0n;
  #stopped = false;
  #failed: Error | undefined;
  #errors = 0;
  #lastError: string | undefined;
  readonly #done: Promise<void>;
  readonly #onStop: (() => void) | undefined;

  /** @internal Use `db.pgProjection()`. */
  constructor(log: EventLog, spec: PgProjectionSpec, onStop?: () => void) {
    if (spec === null || typeof spec !== 'object') throw new InvalidArgumentError('pgProjection needs a spec { name, pool, on }');
    if (typeof spec.name !== 'string' || !NAME.test(spec.name)) throw new InvalidArgumentError('name must be 1 to 200 letters, digits, "_", "-" or "."');
    if (spec.pool === null || typeof spec.pool !== 'object' || typeof spec.pool.connect !== 'function') throw new InvalidArgumentError('pool must be a pg Pool (new pg.Pool({...}))');
    if (spec.on === null || typeof spec.on !== 'object') throw new InvalidArgumentError('on must map event types to handlers (event, client) => Promise<void>, to { run(events, client) } or to actions { sql, params }');
    const batchSize = spec.batchSize ?? 500;
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 100_000) throw new InvalidArgumentError('batchSize must be an integer from 1 to 100000');
    const maxBackoffMs = spec.maxBackoffMs ?? 5000;
    if (!Number.isInteger(maxBackoffMs) || maxBackoffMs < 100) throw new InvalidArgumentError('maxBackoffMs must be an integer of at least 100');
    const maxHandlerRetries = spec.maxHandlerRetries ?? 10;
    const prepare = spec.prepare ?? true;
    if (typeof prepare !== 'boolean') throw new InvalidArgumentError('prepare must be true or false');
    const merge = spec.mergeStatements ?? true;
    if (typeof merge !== 'boolean') throw new InvalidArgumentError('mergeStatements must be true or false');
    if (!Number.isInteger(maxHandlerRetries) || maxHandlerRetries < 0) throw new InvalidArgumentError('maxHandlerRetries must be a non-negative integer');
    this.name = spec.name;
    this.#onStop = onStop;
    this.#log = log;
    this.#pool = spec.pool;
    this.#on = Object.fromEntries(Object.entries(spec.on).map(([type, h]) => [type, compileHandler(type, h, prepare)]));
    this.#merge = merge;
    this.#batchSize = batchSize;
    this.#maxBackoffMs = maxBackoffMs;
    this.#maxHandlerRetries = maxHandlerRetries;
    this.#unsubscribe = log.subscribe(() => this.#bell.ring());
    this.#done = this.#run();
  }

  /** Progress and health. */
  metrics(): PgProjectionMetrics {
    let last = this.#cursor;
    try {
      last = this.#log.lastId;
    } catch {
      /* closed: report the cursor alone */
    }
    return { cursor: this.#cursor, lag: Number(last > this.#cursor ? last - this.#cursor : 0n), holdsLock: this.#holdsLock, errors: this.#errors, lastError: this.#lastError, failed: this.#failed !== undefined };
  }

  /** Resolves once every event logged before the call is applied in PostgreSQL (by this runner). */
  catchUp(): Promise<void> {
    const target = this.#log.lastId;
    if (target <= this.#cursor) return Promise.resolve();
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    if (this.#stopped) return Promise.reject(new ClosedError(`PostgreSQL projection ${this.name} is stopped`));
    return new Promise((resolve, reject) => this.#waiters.push({ id: target, resolve, reject }));
  }

  /** Stops applying (after the batch in flight), releases the lock and its client. Idempotent. */
  async stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      this.#onStop?.();
      this.#unsubscribe();
      this.#bell.ring();
      // A runner waiting for the lock waits inside a query: only dropping its connection ends it.
      if (!this.#holdsLock) this.#dropClient();
    }
    await this.#done;
    this.#settle(new ClosedError(`PostgreSQL projection ${this.name} was stopped`));
  }

  #settle(error?: Error): void {
    for (let i = this.#waiters.length - 1; i >= 0; i--) {
      const w = this.#waiters[i]!;
      if (error !== undefined) w.reject(error);
      else if (w.id <= this.#cursor) w.resolve();
      else continue;
      this.#waiters.splice(i, 1);
    }
  }

  #dropClient(): void {
    const c = this.#client;
    this.#client = undefined;
    this.#holdsLock = false;
    try {
      c?.release(true);
    } catch {
      /* already released */
    }
  }

  async #run(): Promise<void> {
    let attempt = 0;
    let handlerFailures = 0;
    while (!this.#stopped) {
      try {
        const client = await this.#pool.connect();
        this.#client = client;
        // Between batches the client sits idle and no query would notice its connection
        // break (with the session, the advisory lock is gone): pg reports it here
        // (unhandled, it would end the process), and the loop reconnects at once.
        let broken: Error | undefined;
        this.#onClientError = (e) => {
          if (this.#client !== client) return;
          broken = e;
          this.#holdsLock = false;
          this.#bell.ring();
        };
        client.on?.('error', this.#onClientError);
        if (this.#stopped) break;
        await client.query('SELECT pg_advisory_lock($1)', [lockKey('projection', this.name)]);
        this.#holdsLock = true;
        if (this.#stopped) break;
        // The cursor cannot move under another runner while we hold the lock: read it once.
        this.#cursor = cursorOf(await client.query(`${CURSOR_TABLE}; INSERT INTO athanor_pg_cursors (name, cursor) VALUES ('${this.name}', 0) ON CONFLICT (name) DO NOTHING; SELECT cursor FROM athanor_pg_cursors WHERE name = '${this.name}'`));
        this.#settle();
        while (!this.#stopped) {
          if (broken !== undefined) throw broken;
          const applied = await this.#batch(client);
          attempt = 0;
          handlerFailures = 0;
          if (!applied) await this.#bell.wait(1000);
        }
      } catch (e) {
        if (this.#stopped) break;
        this.#errors++;
        this.#lastError = describeThrown(e);
        if (e instanceof HandlerError && ++handlerFailures > this.#maxHandlerRetries) {
          this.#failed = e;
          this.#settle(e);
          break;
        }
        this.#dropClient();
        await this.#bell.wait(backoffMs(attempt++, this.#maxBackoffMs));
      }
    }
    // Releasing the session ends the advisory lock too.
    if (this.#client !== undefined) {
      const c = this.#client;
      this.#client = undefined;
      if (this.#holdsLock) {
        this.#holdsLock = false;
        const reuse = () => {
          // Back in the pool, the client would otherwise keep a listener of ours per projection run.
          c.removeListener?.('error', this.#onClientError);
          c.release();
        };
        await c.query('SELECT pg_advisory_unlock($1)', [lockKey('projection', this.name)]).then(reuse, () => c.release(true));
      } else c.release(true);
    }
  }

  /** Applies one batch in one transaction; `false` when there was nothing to apply. */
  async #batch(client: PgClient): Promise<boolean> {
    const from = this.#cursor;
    const events = [...this.#log.read({ from: from + 1n, limit: this.#batchSize })];
    if (events.length === 0) return false;
    const last = events[events.length - 1]!.id;
    try {
      await this.#transaction(client, events, from, last, this.#merge);
    } catch (e) {
      if (!(e instanceof MergedStatementFailed)) throw e;
      // A merged statement failed (a key PostgreSQL saw as repeated where JavaScript saw
      // two, a bad value somewhere in the run): the batch again, event by event, which
      // either applies it as it should or names the event that fails.
      await this.#transaction(client, events, from, last, false);
    }
    this.#cursor = last;
    this.#settle();
    return true;
  }

  /** `events` and the cursor's move from `from` to `last`, in one transaction. */
  async #transaction(client: PgClient, events: readonly StoredEvent[], from: bigint, last: bigint, merge: boolean): Promise<void> {
    // The name is checked against NAME and the cursors are bigints: safe as literals,
    // which lets BEGIN and the cursor's move share one round trip (a simple query).
    const moved = await client.query(`BEGIN; UPDATE athanor_pg_cursors SET cursor = ${last}, updated_at = now() WHERE name = '${this.name}' AND cursor = ${from}`);
    try {
      if (rowCountOf(moved) !== 1) {
        throw new ConflictError(`PostgreSQL projection ${this.name}: its cursor row no longer says ${from} (moved or deleted by something other than this runner, which holds the advisory lock); the runner reads it again`);
      }
      await this.#apply(client, events, merge);
      await client.query('COMMIT');
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw e;
    }
  }

  /**
   * Runs the handlers and actions of `events` in order. With `merge`, consecutive
   * runs of one mergeable action become one statement (split where its conflict key
   * repeats, and at PostgreSQL's parameter limit); everything else runs as it comes.
   */
  async #apply(client: PgClient, events: readonly StoredEvent[], merge: boolean): Promise<void> {
    let run: Run | undefined;
    let handled: { handler: PgRunHandler; events: StoredEvent[] } | undefined;
    const flush = async () => {
      if (handled !== undefined) {
        const h = handled;
        handled = undefined;
        try {
          await h.handler.run(h.events, client);
        } catch (err) {
          throw this.#handlerError(h.events, err);
        }
      }
      if (run === undefined) return;
      const r = run;
      run = undefined;
      if (r.rows.length === 1) await this.#runOne(client, r.action, r.rows[0]!, r.events[0]!);
      else await runMerged(client, r);
    };
    for (const e of events) {
      const h = this.#on[e.type] ?? this.#on['*'];
      if (h === undefined) continue;
      if (typeof h === 'function') {
        await flush();
        try {
          await h(e, client);
        } catch (err) {
          throw this.#handlerError([e], err);
        }
        continue;
      }
      if (!Array.isArray(h)) {
        const runHandler = h as PgRunHandler;
        if (handled?.handler !== runHandler) {
          await flush();
          handled = { handler: runHandler, events: [] };
        }
        handled.events.push(e);
        continue;
      }
      for (const a of h as readonly CompiledAction[]) {
        const values = a.params.map((get) => get(e));
        const shape = a.merge;
        if (!merge || shape === undefined) {
          await flush();
          await this.#runOne(client, a, values, e);
          continue;
        }
        const key = shape.keyOf(values);
        if (handled !== undefined || (run !== undefined && (run.action !== a || run.rows.length >= shape.maxRows || (key !== undefined && run.keys.has(key))))) await flush();
        run ??= { action: a, shape, rows: [], events: [], keys: new Set() };
        run.rows.push(values);
        run.events.push(e);
        if (key !== undefined) run.keys.add(key);
      }
    }
    await flush();
  }

  async #runOne(client: PgClient, a: CompiledAction, values: unknown[], e: StoredEvent): Promise<void> {
    try {
      await (a.name === undefined ? client.query(a.sql, values) : client.query({ name: a.name, text: a.sql, values }));
    } catch (err) {
      throw this.#handlerError([e], err);
    }
  }

  /** The error of a handler (or action) that failed on `events` (one, or a run: named by its first and last). */
  #handlerError(events: readonly StoredEvent[], err: unknown): HandlerError {
    const e = events[0]!;
    const where = events.length === 1 ? `event ${e.id}` : `the run of events ${e.id} to ${events[events.length - 1]!.id}`;
    return new HandlerError(`PostgreSQL projection ${this.name}: the handler of ${e.type} failed on ${where}: ${describeThrown(err)}; the batch was rolled back and will be retried`, { cause: err, eventId: e.id });
  }
}

/** Consecutive uses of one mergeable action, waiting to run as one statement. */
interface Run {
  action: CompiledAction;
  shape: MergeShape;
  rows: unknown[][];
  events: StoredEvent[];
  keys: Set<string>;
}

/** A merged statement failed: the batch is redone event by event (internal to a batch, never surfaced). */
class MergedStatementFailed extends Error {}

async function runMerged(client: PgClient, r: Run): Promise<void> {
  const values: unknown[] = [];
  for (const row of r.rows) for (const i of r.shape.used) values.push(row[i]);
  try {
    await client.query(r.shape.text(r.rows.length), values);
  } catch (err) {
    throw new MergedStatementFailed(describeThrown(err), { cause: err });
  }
}

/** The result of the last statement of a simple query (`pg` answers a list when the text held several). */
function lastResult(r: PgResult | PgResult[]): PgResult {
  return Array.isArray(r) ? r[r.length - 1]! : r;
}

function rowCountOf(r: PgResult | PgResult[]): number | null {
  return lastResult(r).rowCount;
}

function cursorOf(r: PgResult | PgResult[]): bigint {
  const row = lastResult(r).rows[0];
  if (row === undefined) throw new Error('the projection\'s row in athanor_pg_cursors is missing right after it was inserted');
  return BigInt(row['cursor'] as string | number);
}

/** A declarative action, checked and compiled. */
interface CompiledAction {
  sql: string;
  /** Its prepared statement's name, unless `prepare: false`. */
  name: string | undefined;
  params: Getter[];
  /** How runs of it merge into one statement; `undefined` when its shape is not one that merges. */
  merge: MergeShape | undefined;
}

/** Handlers as they are; declarative actions compiled. Bad actions are refused here, before anything runs. */
function compileHandler(type: string, h: unknown, prepare: boolean): PgHandler | PgRunHandler | CompiledAction[] {
  if (typeof h === 'function') return h as PgHandler;
  if (h !== null && typeof h === 'object' && 'run' in h) {
    if (typeof (h as PgRunHandler).run !== 'function') throw new InvalidArgumentError(`on[${JSON.stringify(type)}].run must be a function (events, client) => Promise<void>`);
    return h as PgRunHandler;
  }
  const list = Array.isArray(h) ? (h as unknown[]) : [h];
  if (list.length === 0) throw new InvalidArgumentError(`on[${JSON.stringify(type)}]: an empty list of actions`);
  return list.map((a, i) => {
    const where = `on[${JSON.stringify(type)}]${Array.isArray(h) ? `[${i}]` : ''}`;
    if (a === null || typeof a !== 'object' || typeof (a as PgAction).sql !== 'string' || (a as PgAction).sql.trim() === '') {
      throw new InvalidArgumentError(`${where} must be a handler function, { run(events, client) } or an action { sql, params }`);
    }
    const { sql, params = [] } = a as PgAction;
    if (!Array.isArray(params)) throw new InvalidArgumentError(`${where}.params must be a list of sources for $1..$n ('@id', '$.path', { value })`);
    // Named by the text: one name never stands for two statements on a connection.
    const name = prepare ? `athanor_${createHash('sha256').update(sql).digest('hex').slice(0, 32)}` : undefined;
    return { sql, name, params: params.map((p, j) => compileParam(p, `${where}.params[${j}]`)), merge: mergeShapeOf(sql, params.length) };
  });
}

/**
 * How a run of one action becomes one statement: `text(n)` for `n` rows, whose
 * parameters are, row after row, the action's values at `used`; `keyOf` the row's
 * conflict key (a run is split where one repeats), `undefined` when none matters.
 */
interface MergeShape {
  text(rows: number): string;
  used: number[];
  maxRows: number;
  keyOf(values: unknown[]): string | undefined;
}

/** PostgreSQL's most parameters in one statement. */
const MAX_PARAMS = 65_535;
const IDENT = String.raw`(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`;
const TYPE = String.raw`[A-Za-z_][A-Za-z0-9_]*(?:\s*\(\s*\d+\s*(?:,\s*\d+\s*)?\))?(?:\[\])*`;
/** One value of the VALUES tuple: a parameter, perhaps cast (captures its number and cast). */
const ITEM = String.raw`\$(\d+)(\s*::\s*${TYPE})?`;
const ANY_ITEM = String.raw`\$\d+(?:\s*::\s*${TYPE})?`;
const INSERT = new RegExp(String.raw`^\s*INSERT\s+INTO\s+(${IDENT}(?:\s*\.\s*${IDENT})?(?:\s+AS\s+${IDENT})?)\s*(\(\s*${IDENT}(?:\s*,\s*${IDENT})*\s*\))?\s*VALUES\s*\(\s*(${ANY_ITEM}(?:\s*,\s*${ANY_ITEM})*)\s*\)([^;]*?);?\s*$`, 'is');
const DELETE = new RegExp(String.raw`^\s*DELETE\s+FROM\s+(${IDENT}(?:\s*\.\s*${IDENT})?)\s+WHERE\s+(${IDENT}\s*=\s*\$\d+(?:\s+AND\s+${IDENT}\s*=\s*\$\d+)*)\s*;?\s*$`, 'is');

/** Splits a comma-separated list of identifiers, unquoting and case-folding them as PostgreSQL does. */
function identifiers(list: string): string[] {
  return [...list.matchAll(new RegExp(IDENT, 'g'))].map(([m]) => (m.startsWith('"') ? m.slice(1, -1).replace(/""/g, '"') : m.toLowerCase()));
}

/**
 * The merge shape of an action, for the two shapes whose multi-row form gives what the
 * statements one by one give: `INSERT INTO t [(cols)] VALUES ($i[::type], ...)` with an
 * optional tail free of parameters and subqueries (`ON CONFLICT ... DO NOTHING`, or
 * `ON CONFLICT (cols) DO UPDATE SET ... EXCLUDED...` whose key columns are among the
 * inserted ones), and `DELETE FROM t WHERE col = $i [AND ...]`. Anything else runs
 * statement by statement.
 */
function mergeShapeOf(sql: string, paramCount: number): MergeShape | undefined {
  const keyOf = (positions: number[]) => (values: unknown[]) => JSON.stringify(positions.map((i) => normalizeKey(values[i])));
  const ins = INSERT.exec(sql);
  if (ins !== null) {
    const [, table, columns, tuple, tail] = ins as unknown as [string, string, string | undefined, string, string];
    // Per-row values or subqueries in the tail would not mean the same once merged.
    if (tail.includes('$') || /\bselect\b/i.test(tail)) return undefined;
    const items = [...tuple.matchAll(new RegExp(ITEM, 'g'))].map((m) => ({ index: Number(m[1]) - 1, cast: m[2] ?? '' }));
    if (items.some((it) => it.index < 0 || it.index >= paramCount)) return undefined;
    const used = [...new Set(items.map((it) => it.index))];
    const slot = new Map(used.map((i, k) => [i, k]));
    let key: ((values: unknown[]) => string) | undefined;
    const conflict = /^\s*ON\s+CONFLICT\b(.*)$/is.exec(tail);
    if (conflict !== null) {
      const update = /\bDO\s+UPDATE\b/i.test(conflict[1]!);
      const target = /^\s*\(([^()]*)\)/.exec(conflict[1]!);
      const cols = columns === undefined ? undefined : identifiers(columns.slice(1, -1));
      if (target !== null && cols !== undefined) {
        const positions = identifiers(target[1]!).map((c) => cols.indexOf(c));
        if (positions.every((p) => p >= 0 && p < items.length)) key = keyOf(positions.map((p) => items[p]!.index));
      }
      // DO UPDATE may not touch a row twice in one statement: without a known key, no merging.
      if (update && key === undefined) return undefined;
    } else if (tail.trim() !== '' && !/^\s*RETURNING\b/i.test(tail)) return undefined;
    const head = `INSERT INTO ${table} ${columns ?? ''} VALUES `;
    const width = used.length;
    return {
      used,
      maxRows: Math.max(1, Math.floor(MAX_PARAMS / Math.max(1, width))),
      keyOf: key ?? (() => undefined),
      text: (rows) => {
        const parts: string[] = [];
        for (let r = 0; r < rows; r++) parts.push(`(${items.map((it) => `$${r * width + slot.get(it.index)! + 1}${it.cast}`).join(', ')})`);
        return `${head}${parts.join(', ')}${tail}`;
      },
    };
  }
  const del = DELETE.exec(sql);
  if (del !== null) {
    const [, table, where] = del as unknown as [string, string, string];
    const pairs = [...where.matchAll(new RegExp(String.raw`(${IDENT})\s*=\s*\$(\d+)`, 'g'))].map((m) => ({ column: m[1]!, index: Number(m[2]) - 1 }));
    if (pairs.some((p) => p.index < 0 || p.index >= paramCount)) return undefined;
    const used = pairs.map((p) => p.index);
    const width = used.length;
    const lhs = width === 1 ? pairs[0]!.column : `(${pairs.map((p) => p.column).join(', ')})`;
    return {
      used,
      maxRows: Math.max(1, Math.floor(MAX_PARAMS / width)),
      // Deleting a key twice deletes it once: repeats need no split.
      keyOf: () => undefined,
      text: (rows) => {
        const parts: string[] = [];
        for (let r = 0; r < rows; r++) parts.push(width === 1 ? `$${r + 1}` : `(${used.map((_, k) => `$${r * width + k + 1}`).join(', ')})`);
        return `DELETE FROM ${table} WHERE ${lhs} IN (${parts.join(', ')})`;
      },
    };
  }
  return undefined;
}

/** A key value as PostgreSQL would likely compare it (`1` and `'1'` alike); where it compares otherwise, the merged statement fails and the batch is redone event by event. */
function normalizeKey(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return v.toString('hex');
  return String(v);
}

type Getter = (e: StoredEvent) => unknown;

/** A parameter's source compiled into a getter (the syntax of SQLite declarative projections). */
function compileParam(p: unknown, where: string): Getter {
  if (p !== null && typeof p === 'object' && 'value' in p) {
    const v = (p as { value: unknown }).value;
    if (v !== null && typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') throw new InvalidArgumentError(`${where}: a constant must be a string, number, boolean or null`);
    return () => v;
  }
  switch (p) {
    case '@id':
      return (e) => e.id.toString();
    case '@type':
      return (e) => e.type;
    case '@at':
      return (e) => e.at;
    case '@commitSeq':
      return (e) => e.commitSeq.toString();
    case '$':
      return (e) => (e.payload instanceof Uint8Array ? Buffer.from(e.payload) : stringifyStrict(e.payload, 'the payload'));
  }
  if (typeof p !== 'string' || !p.startsWith('$')) throw new InvalidArgumentError(`${where}: a source is '@id', '@type', '@at', '@commitSeq', a JSON path ('$', '$.a.b', '$.items[0]') or { value }, got ${describeThrown(p)}`);
  const steps = parsePath(p, where);
  return (e) => {
    let v: unknown = e.payload instanceof Uint8Array ? undefined : e.payload;
    for (const s of steps) {
      if (v === null || typeof v !== 'object') return null;
      v = (v as Record<string | number, unknown>)[s];
    }
    if (v === undefined || v === null) return null;
    if (typeof v === 'bigint') return v.toString();
    if (typeof v === 'object') return stringifyStrict(v, 'a payload value');
    return v;
  };
}

/** `$.a.b`, `$.items[0]`, `$["odd key"]` into its steps. */
function parsePath(path: string, where: string): (string | number)[] {
  const steps: (string | number)[] = [];
  const bad = () => new InvalidArgumentError(`${where}: ${JSON.stringify(path)} is not a JSON path like '$.a.b', '$.items[0]' or '$["odd key"]'`);
  let i = 1;
  while (i < path.length) {
    if (path[i] === '.') {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(path.slice(i + 1));
      if (!m) throw bad();
      steps.push(m[0]);
      i += 1 + m[0].length;
    } else if (path[i] === '[') {
      const m = /^\[(\d+)\]|^\[("(?:[^"\\]|\\.)*")\]/.exec(path.slice(i));
      if (!m) throw bad();
      steps.push(m[1] !== undefined ? Number(m[1]) : (JSON.parse(m[2]!) as string));
      i += m[0].length;
    } else throw bad();
  }
  return steps;
}

/** One PostgreSQL schema change (the shape of projection.db's `Migration`, async and for PostgreSQL). */
export interface PgMigration {
  /** Positive integer; migrations apply in ascending order. */
  version: number;
  /** Short name (letters, digits, `_`, `-`). */
  name: string;
  /** Applies the change: SQL text, or a function given the client (inside the migration's transaction). */
  up: string | ((client: PgClient) => Promise<void>);
  /** Reverts it (needed by `rollbackLast()`). */
  down?: string | ((client: PgClient) => Promise<void>);
}

/** A PostgreSQL migration recorded as applied (`athanor_pg_migrations`). */
export interface PgAppliedMigration {
  /** Its version. */
  version: number;
  /** Its name. */
  name: string;
  /** When it was applied, ms since the epoch. */
  appliedAt: number;
  /** SHA-256 (hex) of its name and `up` step. */
  checksum: string;
}

const MIGRATION_TABLE = `CREATE TABLE IF NOT EXISTS athanor_pg_migrations (
  version integer PRIMARY KEY,
  name text NOT NULL,
  applied_at bigint NOT NULL,
  checksum text NOT NULL
)`;

const MIGRATION_NAME = /^[A-Za-z0-9_-]+$/;

function checksum(m: Pick<PgMigration, 'name' | 'up'>): string {
  return createHash('sha256').update(`${m.name}\n${typeof m.up === 'string' ? m.up : `fn:${m.up.toString()}`}`).digest('hex');
}

async function runStep(client: PgClient, s: string | ((client: PgClient) => Promise<void>)): Promise<void> {
  if (typeof s === 'string') await client.query(s);
  else await s(client);
}

/**
 * Schema migrations of a PostgreSQL database, with the API of `db.migrations`
 * (`add`, `registered`, `history`, `pending`, `run`, `rollbackLast`), async. Each
 * migration runs in its own transaction together with its history row, under a
 * transaction-level advisory lock, so two processes migrating at once apply each
 * migration once.
 */
export class PgMigrations {
  readonly #pool: PgPool;
  readonly #list: PgMigration[] = [];

  constructor(pool: PgPool) {
    if (pool === null || typeof pool !== 'object' || typeof pool.connect !== 'function') throw new InvalidArgumentError('PgMigrations needs a pg Pool (new pg.Pool({...}))');
    this.#pool = pool;
  }

  /** Registers migrations (checked: versions unique positive integers, names plain). */
  add(...migrations: PgMigration[]): this {
    for (const m of migrations) {
      if (m === null || typeof m !== 'object' || !Number.isInteger(m.version) || m.version < 1) throw new InvalidArgumentError('a migration needs a positive integer version');
      if (typeof m.name !== 'string' || !MIGRATION_NAME.test(m.name)) throw new InvalidArgumentError(`migration ${m.version}: name must be letters, digits, "_" or "-"`);
      if (typeof m.up !== 'string' && typeof m.up !== 'function') throw new InvalidArgumentError(`migration ${m.version}: up must be SQL text or a function`);
      if (this.#list.some((x) => x.version === m.version)) throw new InvalidArgumentError(`migration version ${m.version} is registered twice`);
    }
    this.#list.push(...migrations);
    this.#list.sort((a, b) => a.version - b.version);
    return this;
  }

  /** The registered migrations, by version. */
  registered(): PgMigration[] {
    return [...this.#list];
  }

  /** The applied migrations recorded in PostgreSQL, by version. */
  async history(): Promise<PgAppliedMigration[]> {
    return this.#with(async (c) => this.#history(c));
  }

  /** Registered migrations not applied yet; `MigrationDriftError` when an applied one changed. */
  async pending(): Promise<PgMigration[]> {
    return this.#with(async (c) => this.#pending(await this.#history(c)));
  }

  /** Applies every pending migration, each in its own transaction; returns those applied. Stops at the first failure (rethrown, that migration rolled back). */
  async run(): Promise<PgAppliedMigration[]> {
    return this.#with(async (c) => {
      const out: PgAppliedMigration[] = [];
      for (const m of this.#list) {
        await c.query('BEGIN');
        try {
          await c.query('SELECT pg_advisory_xact_lock($1)', [lockKey('migrations', 'schema')]);
          // Read under the lock: another process may have applied it meanwhile.
          const pending = this.#pending(await this.#history(c));
          if (!pending.some((p) => p.version === m.version)) {
            await c.query('COMMIT');
            continue;
          }
          await runStep(c, m.up);
          const rec: PgAppliedMigration = { version: m.version, name: m.name, appliedAt: Date.now(), checksum: checksum(m) };
          await c.query('INSERT INTO athanor_pg_migrations (version, name, applied_at, checksum) VALUES ($1, $2, $3, $4)', [rec.version, rec.name, rec.appliedAt, rec.checksum]);
          await c.query('COMMIT');
          out.push(rec);
        } catch (e) {
          await c.query('ROLLBACK').catch(() => undefined);
          throw e;
        }
      }
      return out;
    });
  }

  /** Reverts the newest applied migration with its `down` step; returns it, or `undefined` when none is applied. */
  async rollbackLast(): Promise<PgAppliedMigration | undefined> {
    return this.#with(async (c) => {
      await c.query('BEGIN');
      try {
        await c.query('SELECT pg_advisory_xact_lock($1)', [lockKey('migrations', 'schema')]);
        const h = await this.#history(c);
        const last = h[h.length - 1];
        if (last === undefined) {
          await c.query('COMMIT');
          return undefined;
        }
        const m = this.#list.find((x) => x.version === last.version);
        if (m?.down === undefined) throw new InvalidArgumentError(`migration ${last.version} (${last.name}) has no down step registered; add one to roll it back`);
        await runStep(c, m.down);
        await c.query('DELETE FROM athanor_pg_migrations WHERE version = $1', [last.version]);
        await c.query('COMMIT');
        return last;
      } catch (e) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw e;
      }
    });
  }

  #pending(history: PgAppliedMigration[]): PgMigration[] {
    const byVersion = new Map(history.map((h) => [h.version, h]));
    for (const m of this.#list) {
      const h = byVersion.get(m.version);
      if (h !== undefined && h.checksum !== checksum(m)) throw new MigrationDriftError(`PostgreSQL migration ${m.version} (${m.name}) changed since it was applied (checksum differs); add a new migration instead of editing an applied one`);
    }
    return this.#list.filter((m) => !byVersion.has(m.version));
  }

  async #history(c: PgClient): Promise<PgAppliedMigration[]> {
    await c.query(MIGRATION_TABLE);
    const r = await c.query('SELECT version, name, applied_at, checksum FROM athanor_pg_migrations ORDER BY version');
    return r.rows.map((x) => ({ version: Number(x['version']), name: String(x['name']), appliedAt: Number(x['applied_at']), checksum: String(x['checksum']) }));
  }

  async #with<T>(f: (c: PgClient) => Promise<T>): Promise<T> {
    const c = await this.#pool.connect();
    try {
      return await f(c);
    } finally {
      c.release();
    }
  }
}
