/**
 * The durable scheduler: tasks run on a cron expression, a fixed interval or once at
 * a time, with their schedule, lease and run history stored in the database itself.
 *
 * Why it is exactly once: every occurrence is claimed by a transaction that takes a
 * lease (owner, expiry, fencing token) on the task's record, and the task's own
 * writes commit in one transaction with the record of the run and the move to the
 * next occurrence, after checking that the lease still carries the claimer's token.
 * Two processes that race for one occurrence conflict on the task record (the
 * writer validates what each read), so one wins; a runner whose lease expired and
 * was taken over finds a newer token and commits nothing.
 */
import { describeThrown } from '../internal/thrown.js';
import { hostname } from 'node:os';
import { Cron } from 'croner';
import { json, type Value } from '../state/codec.js';
import { AthanorError, ConflictError, InvalidArgumentError, NotFoundError } from '../errors.js';
import type { TransactionBuilder, Tx } from '../state/transaction.js';
import type { RunObserver } from './metrics.js';

/** Where the scheduler reads the time and waits; inject one in tests to move time by hand. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /** Calls `fn` after about `ms` milliseconds; returns a handle for {@link Clock.clearTimeout}. */
  setTimeout(fn: () => void, ms: number): unknown;
  /** Cancels a pending {@link Clock.setTimeout}. */
  clearTimeout(handle: unknown): void;
}

/** The wall clock and Node's timers (timers are unref'd: a scheduler alone keeps no process alive). */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** What to do with occurrences that fell due while no scheduler was running. */
export type MissedRunPolicy = 'skip' | 'runOnce' | 'runAll';

/** When a task runs: exactly one of `cron`, `every` or `at`. */
export interface Schedule {
  /** A cron expression of 5 fields (minute first) or 6 (seconds first), as croner reads it. */
  cron?: string;
  /** IANA time zone the cron expression is read in (default: the process's). */
  timezone?: string;
  /** A fixed interval in milliseconds (at least 1), counted from the task's first registration. */
  every?: number;
  /** Run once, at this time. */
  at?: Date | number;
}

/** Retries of a failing run, with exponential backoff. */
export interface TaskRetryPolicy {
  /** Attempts per occurrence, the first included (default 3). */
  maxAttempts?: number;
  /** Delay before the second attempt (default 1,000 ms); it doubles after each failure. */
  initialDelayMs?: number;
  /** Upper bound of the delay (default 60,000 ms). */
  maxDelayMs?: number;
}

/** What a run is told about itself. */
export interface RunInfo {
  /** The task's name. */
  readonly task: string;
  /** The occurrence being run (ms since the epoch): the time it was scheduled for, not when it started. */
  readonly scheduledAt: number;
  /** 1 for the first attempt of this occurrence. */
  readonly attempt: number;
  /** Increases with every claim of the task; a write guarded by an older token is refused. */
  readonly fencingToken: number;
  /** When this attempt started. */
  readonly startedAt: number;
}

/** A task: when it runs, and what it does. */
export interface TaskOptions<P = void> extends Schedule {
  /**
   * The run, inside a transaction: its writes and events commit together with the
   * record of the run and the move to the next occurrence, or not at all. Synchronous,
   * like every transaction callback; do slow or asynchronous work in `prepare`.
   */
  run: (tx: Tx, run: RunInfo, prepared: P) => void;
  /**
   * Optional asynchronous work before the transaction (a fetch, a computation); its
   * result is passed to `run`. The lease is renewed while it runs.
   */
  prepare?: (run: RunInfo) => P | Promise<P>;
  /** Occurrences missed while no scheduler ran (default `'runOnce'`). */
  missed?: MissedRunPolicy;
  /** With `runAll`: at most this many missed occurrences are run, the newest ones (default 100). */
  maxCatchUp?: number;
  /** An occurrence later than this is "missed" (default 5,000 ms). */
  misfireGraceMs?: number;
  /** Retries of a failing run (default 3 attempts, 1 s doubling to 60 s). */
  retry?: TaskRetryPolicy;
  /** How long a claim holds before another process may take the occurrence over (default 60,000 ms). */
  leaseMs?: number;
}

/** One line of a task's history. */
export interface RunRecord {
  /** The occurrence. */
  scheduledAt: number;
  /** Start of the attempt (for `skipped`, when the skip was decided). */
  startedAt: number;
  /** When the outcome was committed. */
  finishedAt: number;
  /** `ok`: the run's writes committed; `retrying`/`failed`: it threw (nothing of it was written); `skipped`: missed and not run. */
  outcome: 'ok' | 'retrying' | 'failed' | 'skipped';
  /** Attempt number of this occurrence. */
  attempt: number;
  /** The lease's fencing token. */
  fencingToken: number;
  /** The process that ran it. */
  owner: string;
  /** What the run threw, as text. */
  error?: string;
  /** For `skipped`: how many occurrences this line stands for. */
  count?: number;
}

/** A task as stored. */
export interface TaskInfo {
  /** The task's name. */
  name: string;
  /** Its schedule. */
  schedule: {
    /** A cron expression (croner syntax). */
    cron?: string;
    /** The time zone of the cron expression (IANA name). */
    timezone?: string;
    /** An interval, ms. */
    every?: number;
    /** One run at this time, ms since the Unix epoch. */
    at?: number;
  };
  /** The next occurrence, or `null` when a one-shot task has run. */
  nextRunAt: number | null;
  /** When a failed attempt is retried, if one is waiting. */
  retryAt: number | null;
  /** Paused tasks are not run (their missed occurrences follow the policy on resume). */
  paused: boolean;
  /** The current claim, while a run is in progress somewhere. */
  lease: {
    /** Who holds it (host and process). */
    owner: string;
    /** When it expires, ms since the Unix epoch. */
    expiresAt: number;
    /** Grows with each new lease: a stale holder sees a smaller one. */
    fencingToken: number;
  } | null;
  /** The newest history line. */
  lastRun: RunRecord | null;
  /** Whether this process has registered a handler for it. */
  registered: boolean;
}

/** Options of the scheduler. */
export interface SchedulerOptions {
  /** The time source (default: the wall clock). */
  clock?: Clock;
  /** This process's name in leases and history (default `<host>:<pid>:<random>`). */
  owner?: string;
  /** History lines kept per task, newest first (default 200). */
  historyLimit?: number;
  /** The longest the timer sleeps before looking again, for tasks other processes change (default 30,000 ms). */
  maxSleepMs?: number;
}

/** How the scheduler reaches the database. @internal */
export interface SchedulerHost {
  /** Counts runs for `db.metrics()`. */
  observer?: RunObserver;
  transaction(): TransactionBuilder;
  getOpt(key: string): Value | undefined;
  assertOpen(): void;
}

/** The stored record of a task (JSON under a reserved state key). */
interface TaskState {
  v: 1;
  schedule: TaskInfo['schedule'];
  /** Anchor of `every` schedules. */
  anchor: number;
  nextAt: number | null;
  paused: boolean;
  token: number;
  lease: { owner: string; expiresAt: number; token: number; occurrence: number; attempt: number } | null;
  pending: { occurrence: number; attempt: number; retryAt: number } | null;
}

const PREFIX = '\0athanor/scheduler/';
const taskKey = (name: string): string => `${PREFIX}task/${name}`;
const historyKey = (name: string): string => `${PREFIX}history/${name}`;
const INDEX_KEY = `${PREFIX}index`;

type Registered = Required<Pick<TaskOptions<unknown>, 'missed' | 'maxCatchUp' | 'misfireGraceMs' | 'leaseMs'>> & {
  options: TaskOptions<unknown>;
  retry: Required<TaskRetryPolicy>;
  cron: Cron | undefined;
};

/**
 * Durable tasks on a schedule (`db.scheduler`). Register tasks, then `start()`; or
 * drive it with `tick()` (what the timer calls), e.g. from tests with a manual clock.
 *
 * ```ts
 * db.scheduler.register('nightly-interest', {
 *   cron: '0 2 * * *', timezone: 'Europe/Paris', missed: 'runOnce',
 *   run: (tx, run) => { tx.log('interest.accrued', { at: run.scheduledAt }); },
 * });
 * db.scheduler.start();
 * ```
 */
export class Scheduler {
  readonly #host: SchedulerHost;
  readonly #tasks = new Map<string, Registered>();
  readonly #running = new Map<string, Promise<void>>();
  #clock: Clock;
  #owner: string;
  #historyLimit: number;
  #maxSleepMs: number;
  #timer: unknown = undefined;
  #started = false;
  #ticking: Promise<RunRecord[]> | undefined;

  /** @internal */
  constructor(host: SchedulerHost, options: SchedulerOptions = {}) {
    this.#host = host;
    const o = checkSchedulerOptions(options);
    this.#clock = o.clock;
    this.#owner = o.owner;
    this.#historyLimit = o.historyLimit;
    this.#maxSleepMs = o.maxSleepMs;
  }

  /** This process's name in leases and history. */
  get owner(): string {
    return this.#owner;
  }

  /**
   * Changes the clock, owner or limits. Only before the first `register`, `start` or `tick`,
   * so that no decision was taken on the old clock.
   */
  configure(options: SchedulerOptions): this {
    if (this.#tasks.size > 0 || this.#started) throw new InvalidArgumentError('configure the scheduler before registering tasks or starting it');
    const o = checkSchedulerOptions({ clock: this.#clock, owner: this.#owner, historyLimit: this.#historyLimit, maxSleepMs: this.#maxSleepMs, ...options });
    this.#clock = o.clock;
    this.#owner = o.owner;
    this.#historyLimit = o.historyLimit;
    this.#maxSleepMs = o.maxSleepMs;
    return this;
  }

  /**
   * Registers the handler of a task and stores its schedule (a changed schedule
   * replaces the stored one and recomputes the next run). Every process that should
   * run the task registers it; the stored state is shared.
   */
  async register<P = void>(name: string, options: TaskOptions<P>): Promise<TaskInfo> {
    this.#host.assertOpen();
    checkName(name);
    const reg = checkTaskOptions(options as TaskOptions<unknown>);
    const schedule = scheduleOf(options);
    const now = this.#clock.now();
    await this.#host.transaction().execute((tx) => {
      const cur = readState(tx.getOpt(taskKey(name)));
      if (cur !== undefined && sameSchedule(cur.schedule, schedule)) return;
      const anchor = schedule.every !== undefined ? (cur?.schedule.every === schedule.every ? cur.anchor : now) : now;
      const next: TaskState = {
        v: 1,
        schedule,
        anchor,
        nextAt: firstOccurrence(reg, schedule, anchor, now),
        paused: cur?.paused ?? false,
        token: cur?.token ?? 0,
        lease: cur?.lease ?? null,
        pending: null,
      };
      tx.set(taskKey(name), json(next));
      const index = readIndex(tx.getOpt(INDEX_KEY));
      if (!index.includes(name)) tx.set(INDEX_KEY, json([...index, name].sort()));
    });
    this.#tasks.set(name, reg);
    if (this.#started) this.#arm();
    return this.#info(name)!;
  }

  /** Starts the timer: due tasks run as their time comes. Idempotent. */
  start(): void {
    this.#host.assertOpen();
    this.#started = true;
    this.#arm();
  }

  /** Stops the timer and waits for runs in progress to finish. */
  async stop(): Promise<void> {
    this.#started = false;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#ticking?.catch(() => undefined);
    await Promise.allSettled([...this.#running.values()]);
  }

  /**
   * Runs every registered task that is due now (one occurrence each; call again for
   * the next), and returns the history lines this produced. What the timer calls.
   */
  async tick(): Promise<RunRecord[]> {
    this.#host.assertOpen();
    if (this.#ticking) return this.#ticking;
    const p = this.#tickOnce();
    this.#ticking = p;
    try {
      return await p;
    } finally {
      this.#ticking = undefined;
    }
  }

  /** Runs due tasks until none is due now (a bounded number of rounds); returns all history lines. */
  async runDue(maxRounds = 1000): Promise<RunRecord[]> {
    const all: RunRecord[] = [];
    for (let i = 0; i < maxRounds; i++) {
      const lines = await this.tick();
      if (lines.length === 0) break;
      all.push(...lines);
    }
    return all;
  }

  /** Stops running a task until {@link resume}; a run in progress finishes. */
  async pause(name: string): Promise<void> {
    await this.#update(name, (s) => ({ ...s, paused: true }));
  }

  /** Runs a paused task again; occurrences missed meanwhile follow its missed-run policy. */
  async resume(name: string): Promise<void> {
    await this.#update(name, (s) => ({ ...s, paused: false }));
    if (this.#started) this.#arm();
  }

  /** Removes a task's schedule and history (a run in progress commits nothing). */
  async remove(name: string): Promise<void> {
    this.#host.assertOpen();
    checkName(name);
    await this.#host.transaction().execute((tx) => {
      if (tx.getOpt(taskKey(name)) === undefined) throw new NotFoundError(`no scheduled task named ${JSON.stringify(name)}`);
      tx.delete(taskKey(name));
      tx.delete(historyKey(name));
      tx.set(INDEX_KEY, json(readIndex(tx.getOpt(INDEX_KEY)).filter((n) => n !== name)));
    });
    this.#tasks.delete(name);
  }

  /** Every stored task, registered in this process or not, by name. */
  list(): TaskInfo[] {
    this.#host.assertOpen();
    return readIndex(this.#host.getOpt(INDEX_KEY))
      .map((n) => this.#info(n))
      .filter((t): t is TaskInfo => t !== undefined);
  }

  /** One task, or `undefined`. */
  get(name: string): TaskInfo | undefined {
    this.#host.assertOpen();
    checkName(name);
    return this.#info(name);
  }

  /** A task's history, newest first (at most `limit`, default 50). */
  history(name: string, options: { limit?: number } = {}): RunRecord[] {
    this.#host.assertOpen();
    checkName(name);
    const limit = options.limit ?? 50;
    if (!Number.isInteger(limit) || limit < 1) throw new InvalidArgumentError('limit must be a positive integer');
    return readHistory(this.#host.getOpt(historyKey(name))).slice(0, limit);
  }

  #info(name: string): TaskInfo | undefined {
    const s = readState(this.#host.getOpt(taskKey(name)));
    if (s === undefined) return undefined;
    const now = this.#clock.now();
    const lease = s.lease && s.lease.expiresAt > now ? { owner: s.lease.owner, expiresAt: s.lease.expiresAt, fencingToken: s.lease.token } : null;
    return {
      name,
      schedule: s.schedule,
      nextRunAt: s.nextAt,
      retryAt: s.pending?.retryAt ?? null,
      paused: s.paused,
      lease,
      lastRun: readHistory(this.#host.getOpt(historyKey(name)))[0] ?? null,
      registered: this.#tasks.has(name),
    };
  }

  async #update(name: string, f: (s: TaskState) => TaskState): Promise<void> {
    this.#host.assertOpen();
    checkName(name);
    await this.#host.transaction().execute((tx) => {
      const s = readState(tx.getOpt(taskKey(name)));
      if (s === undefined) throw new NotFoundError(`no scheduled task named ${JSON.stringify(name)}`);
      tx.set(taskKey(name), json(f(s)));
    });
  }

  /** Sleeps until the earliest due time among registered tasks (bounded), then ticks. */
  #arm(): void {
    if (!this.#started) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    const now = this.#clock.now();
    let wake = now + this.#maxSleepMs;
    for (const name of this.#tasks.keys()) {
      const s = readState(this.#host.getOpt(taskKey(name)));
      const due = s === undefined ? undefined : dueAt(s);
      if (due !== undefined) wake = Math.min(wake, s!.lease && s!.lease.expiresAt > due ? s!.lease.expiresAt : due);
    }
    this.#timer = this.#clock.setTimeout(
      () => {
        this.#timer = undefined;
        if (!this.#started) return;
        this.runDue(100)
          .catch((e: unknown) => process.emitWarning(`athanor scheduler: ${describe(e)}`))
          .finally(() => this.#arm());
      },
      Math.max(0, wake - now),
    );
  }

  async #tickOnce(): Promise<RunRecord[]> {
    const lines: RunRecord[] = [];
    const runs: Promise<void>[] = [];
    for (const [name, reg] of this.#tasks) {
      if (this.#running.has(name)) continue; // no overlap within this process
      // Each history line this task produces is returned, and counted for db.metrics().
      const note = (r: RunRecord): void => {
        lines.push(r);
        this.#host.observer?.ran(name, r.outcome);
      };
      const claim = await this.#claim(name, reg, note);
      if (claim === undefined) continue;
      const p = this.#execute(name, reg, claim, note).finally(() => this.#running.delete(name));
      this.#running.set(name, p);
      runs.push(p);
    }
    await Promise.all(runs);
    return lines;
  }

  /**
   * Takes the lease on the task's due occurrence, in a transaction: the writer's read
   * validation makes one claimer win. Occurrences the policy skips are recorded here.
   */
  async #claim(name: string, reg: Registered, note: (r: RunRecord) => void): Promise<{ occurrence: number; attempt: number; token: number; startedAt: number } | undefined> {
    let claimed: { occurrence: number; attempt: number; token: number; startedAt: number } | undefined;
    let skipped: RunRecord | undefined;
    try {
      await this.#host.transaction().execute((tx) => {
        claimed = undefined;
        skipped = undefined;
        const now = this.#clock.now();
        const s = readState(tx.getOpt(taskKey(name)));
        if (s === undefined || s.paused) return;
        if (s.lease && s.lease.expiresAt > now) return; // running elsewhere
        let occurrence: number;
        let attempt = 1;
        let state = s;
        if (s.lease) {
          // Its runner died or overran its lease: the same occurrence, next attempt.
          occurrence = s.lease.occurrence;
          attempt = s.lease.attempt + 1;
          if (attempt > reg.retry.maxAttempts) {
            const failed: RunRecord = {
              scheduledAt: occurrence,
              startedAt: now,
              finishedAt: now,
              outcome: 'failed',
              attempt: s.lease.attempt,
              fencingToken: s.lease.token,
              owner: s.lease.owner,
              error: `the lease of ${s.lease.owner} expired ${attempt - 1} time(s) without the run committing (the process died or overran leaseMs)`,
            };
            appendHistory(tx, name, failed, this.#historyLimit);
            tx.set(taskKey(name), json(advance(reg, s, occurrence, now)));
            skipped = failed;
            return;
          }
        } else if (s.pending) {
          if (s.pending.retryAt > now) return;
          occurrence = s.pending.occurrence;
          attempt = s.pending.attempt;
        } else {
          if (s.nextAt === null || s.nextAt > now) return;
          const plan = planMissed(reg, s, now);
          if (plan.skipped > 0) {
            skipped = { scheduledAt: s.nextAt, startedAt: now, finishedAt: now, outcome: 'skipped', attempt: 0, fencingToken: s.token, owner: this.#owner, count: plan.skipped };
            appendHistory(tx, name, skipped, this.#historyLimit);
          }
          if (plan.run === null) {
            tx.set(taskKey(name), json({ ...s, nextAt: plan.next }));
            return;
          }
          occurrence = plan.run;
          state = { ...s, nextAt: plan.run };
        }
        const token = s.token + 1;
        tx.set(taskKey(name), json({ ...state, token, lease: { owner: this.#owner, expiresAt: now + reg.leaseMs, token, occurrence, attempt }, pending: null }));
        claimed = { occurrence, attempt, token, startedAt: now };
      });
    } catch (e) {
      if (e instanceof ConflictError) return undefined; // another process claimed it
      throw e;
    }
    if (skipped) note(skipped);
    return claimed;
  }

  async #execute(name: string, reg: Registered, claim: { occurrence: number; attempt: number; token: number; startedAt: number }, note: (r: RunRecord) => void): Promise<void> {
    const info: RunInfo = Object.freeze({ task: name, scheduledAt: claim.occurrence, attempt: claim.attempt, fencingToken: claim.token, startedAt: claim.startedAt });
    let prepared: unknown;
    let failure: unknown;
    let failed = false;
    if (reg.options.prepare) {
      const renew = this.#keepLease(name, reg, claim.token);
      try {
        prepared = await reg.options.prepare(info);
      } catch (e) {
        failed = true;
        failure = e;
      } finally {
        renew();
      }
    }
    if (!failed) {
      try {
        let record: RunRecord | undefined;
        await this.#host.transaction().execute((tx) => {
          record = undefined;
          const s = readState(tx.getOpt(taskKey(name)));
          if (!holds(s, this.#owner, claim.token)) return; // taken over: commit nothing
          reg.options.run(tx, info, prepared);
          const now = this.#clock.now();
          record = { scheduledAt: claim.occurrence, startedAt: claim.startedAt, finishedAt: now, outcome: 'ok', attempt: claim.attempt, fencingToken: claim.token, owner: this.#owner };
          tx.set(taskKey(name), json(advance(reg, s!, claim.occurrence, now)));
          appendHistory(tx, name, record, this.#historyLimit);
        });
        if (record) note(record);
        return;
      } catch (e) {
        failed = true;
        failure = e;
      }
    }
    await this.#recordFailure(name, reg, claim, failure, note);
  }

  /** Records a failed attempt (the run's own writes were not committed) and schedules its retry. */
  async #recordFailure(name: string, reg: Registered, claim: { occurrence: number; attempt: number; token: number; startedAt: number }, failure: unknown, note: (r: RunRecord) => void): Promise<void> {
    let record: RunRecord | undefined;
    await this.#host.transaction().execute((tx) => {
      record = undefined;
      const s = readState(tx.getOpt(taskKey(name)));
      if (!holds(s, this.#owner, claim.token)) return;
      const now = this.#clock.now();
      const again = claim.attempt < reg.retry.maxAttempts;
      record = {
        scheduledAt: claim.occurrence,
        startedAt: claim.startedAt,
        finishedAt: now,
        outcome: again ? 'retrying' : 'failed',
        attempt: claim.attempt,
        fencingToken: claim.token,
        owner: this.#owner,
        error: describe(failure),
      };
      const delay = Math.min(reg.retry.maxDelayMs, reg.retry.initialDelayMs * 2 ** (claim.attempt - 1));
      const next: TaskState = again
        ? { ...s!, lease: null, pending: { occurrence: claim.occurrence, attempt: claim.attempt + 1, retryAt: now + delay } }
        : advance(reg, s!, claim.occurrence, now);
      tx.set(taskKey(name), json(next));
      appendHistory(tx, name, record, this.#historyLimit);
    });
    if (record) note(record);
  }

  /** Extends the lease every third of its length while `prepare` runs; returns the stopper. */
  #keepLease(name: string, reg: Registered, token: number): () => void {
    let stopped = false;
    let handle: unknown;
    const beat = (): void => {
      handle = this.#clock.setTimeout(() => {
        if (stopped) return;
        this.#host
          .transaction()
          .execute((tx) => {
            const s = readState(tx.getOpt(taskKey(name)));
            if (!holds(s, this.#owner, token)) return;
            tx.set(taskKey(name), json({ ...s!, lease: { ...s!.lease!, expiresAt: this.#clock.now() + reg.leaseMs } }));
          })
          .catch(() => undefined) // a lost renewal shows at commit, through the token check
          .finally(() => {
            if (!stopped) beat();
          });
      }, reg.leaseMs / 3);
    };
    beat();
    return () => {
      stopped = true;
      this.#clock.clearTimeout(handle);
    };
  }
}

function holds(s: TaskState | undefined, owner: string, token: number): boolean {
  return s !== undefined && s.lease !== null && s.lease.token === token && s.lease.owner === owner;
}

/** When the task is next due (retry or occurrence), or undefined when never. */
function dueAt(s: TaskState): number | undefined {
  if (s.paused) return undefined;
  if (s.pending) return s.pending.retryAt;
  return s.nextAt ?? undefined;
}

/** The state after an occurrence is done (ran or finally failed): lease released, next occurrence set. */
function advance(reg: Registered, s: TaskState, occurrence: number, now: number): TaskState {
  let next = occurrenceAfter(reg, s.schedule, s.anchor, occurrence);
  // runAll walks the missed occurrences one by one; the other policies jump to the future.
  if (reg.missed !== 'runAll') while (next !== null && next <= now - reg.misfireGraceMs) next = occurrenceAfter(reg, s.schedule, s.anchor, next);
  return { ...s, nextAt: next, lease: null, pending: null };
}

/** Which due occurrence runs now, how many are skipped, and where the schedule goes next. */
function planMissed(reg: Registered, s: TaskState, now: number): { run: number | null; skipped: number; next: number | null } {
  const first = s.nextAt!;
  if (now - first <= reg.misfireGraceMs) return { run: first, skipped: 0, next: first };
  // Walk the missed occurrences (bounded: at most maxCatchUp kept, counting the rest).
  const window: number[] = [];
  let skipped = 0;
  let occ: number | null = first;
  let walked = 0;
  while (occ !== null && occ <= now) {
    window.push(occ);
    if (window.length > reg.maxCatchUp) {
      window.shift();
      skipped++;
    }
    if (++walked > 1_000_000) break; // a pathological schedule; what remains counts as skipped below
    occ = occurrenceAfter(reg, s.schedule, s.anchor, occ);
  }
  const future = occ;
  switch (reg.missed) {
    case 'skip':
      return { run: null, skipped: skipped + window.length, next: future };
    case 'runOnce':
      return { run: window[window.length - 1]!, skipped: skipped + window.length - 1, next: future };
    case 'runAll':
      return { run: window[0]!, skipped, next: window[0]! };
  }
}

function firstOccurrence(reg: Registered, schedule: TaskInfo['schedule'], anchor: number, now: number): number | null {
  if (schedule.at !== undefined) return schedule.at;
  if (schedule.every !== undefined) return anchor + schedule.every;
  return reg.cron!.nextRun(new Date(now))?.getTime() ?? null;
}

function occurrenceAfter(reg: Registered, schedule: TaskInfo['schedule'], anchor: number, after: number): number | null {
  if (schedule.at !== undefined) return null;
  if (schedule.every !== undefined) return anchor + (Math.floor((after - anchor) / schedule.every) + 1) * schedule.every;
  return reg.cron!.nextRun(new Date(after))?.getTime() ?? null;
}

function scheduleOf(o: Schedule): TaskInfo['schedule'] {
  if (o.cron !== undefined) return o.timezone === undefined ? { cron: o.cron } : { cron: o.cron, timezone: o.timezone };
  if (o.every !== undefined) return { every: o.every };
  return { at: o.at instanceof Date ? o.at.getTime() : (o.at as number) };
}

function sameSchedule(a: TaskInfo['schedule'], b: TaskInfo['schedule']): boolean {
  return a.cron === b.cron && a.timezone === b.timezone && a.every === b.every && a.at === b.at;
}

function readState(v: Value | undefined): TaskState | undefined {
  return v === undefined ? undefined : (v.toJS() as TaskState);
}

function readIndex(v: Value | undefined): string[] {
  return v === undefined ? [] : (v.toJS() as string[]);
}

function readHistory(v: Value | undefined): RunRecord[] {
  return v === undefined ? [] : (v.toJS() as RunRecord[]);
}

function appendHistory(tx: Tx, name: string, record: RunRecord, limit: number): void {
  const h = readHistory(tx.getOpt(historyKey(name)));
  h.unshift(record);
  if (h.length > limit) h.length = limit;
  tx.set(historyKey(name), json(h));
}

function describe(e: unknown): string {
  if (e instanceof Error) return e instanceof AthanorError ? `${e.code}: ${e.message}` : `${e.name}: ${e.message}`;
  try {
    return String(e);
  } catch {
    return Object.prototype.toString.call(e);
  }
}

function checkName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('a task name must be a non-empty string');
  if (!name.isWellFormed()) throw new InvalidArgumentError('a task name must not contain lone surrogates');
  if (Buffer.byteLength(name) > 200) throw new InvalidArgumentError('a task name is at most 200 UTF-8 bytes');
  if (name.includes('\0')) throw new InvalidArgumentError('a task name must not contain NUL');
}

function positiveInt(v: unknown, what: string, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new InvalidArgumentError(`${what} must be an integer of at least ${min}, got ${describeThrown(v)}`);
  return v;
}

function checkTaskOptions(o: TaskOptions<unknown>): Registered {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError('task options must be an object with a schedule (cron, every or at) and run');
  if (typeof o.run !== 'function') throw new InvalidArgumentError('a task needs run(tx, run, prepared), a synchronous function');
  if (o.prepare !== undefined && typeof o.prepare !== 'function') throw new InvalidArgumentError('prepare must be a function');
  const kinds = [o.cron, o.every, o.at].filter((x) => x !== undefined).length;
  if (kinds !== 1) throw new InvalidArgumentError('a task needs exactly one of cron, every or at');
  let cron: Cron | undefined;
  if (o.cron !== undefined) {
    if (typeof o.cron !== 'string') throw new InvalidArgumentError('cron must be a string of 5 or 6 fields');
    const fields = o.cron.trim().split(/\s+/).length;
    if (fields !== 5 && fields !== 6) throw new InvalidArgumentError(`cron ${JSON.stringify(o.cron)} has ${fields} fields; use 5 (minute hour day month weekday) or 6 (seconds first)`);
    if (o.timezone !== undefined && typeof o.timezone !== 'string') throw new InvalidArgumentError('timezone must be an IANA zone name such as "Europe/Paris"');
    if (o.timezone !== undefined) {
      try {
        new Intl.DateTimeFormat('en-US', { timeZone: o.timezone });
      } catch {
        throw new InvalidArgumentError(`unknown time zone ${JSON.stringify(o.timezone)}: use an IANA name such as "Europe/Paris"`);
      }
    }
    try {
      cron = new Cron(o.cron, { paused: true, ...(o.timezone === undefined ? {} : { timezone: o.timezone }) });
    } catch (e) {
      throw new InvalidArgumentError(`cron ${JSON.stringify(o.cron)} is not valid: ${(e as Error).message}`, { cause: e });
    }
  } else if (o.timezone !== undefined) {
    throw new InvalidArgumentError('timezone applies to cron schedules only');
  }
  if (o.every !== undefined) positiveInt(o.every, 'every (ms)', 0);
  if (o.at !== undefined) {
    const t = o.at instanceof Date ? o.at.getTime() : o.at;
    if (typeof t !== 'number' || !Number.isFinite(t)) throw new InvalidArgumentError('at must be a Date or a time in ms since the epoch');
  }
  const missed = o.missed ?? 'runOnce';
  if (missed !== 'skip' && missed !== 'runOnce' && missed !== 'runAll') throw new InvalidArgumentError("missed must be 'skip', 'runOnce' or 'runAll'");
  const r = o.retry ?? {};
  if (r === null || typeof r !== 'object') throw new InvalidArgumentError('retry must be an object { maxAttempts, initialDelayMs, maxDelayMs }');
  return {
    options: o,
    cron,
    missed,
    maxCatchUp: positiveInt(o.maxCatchUp, 'maxCatchUp', 100),
    misfireGraceMs: positiveInt(o.misfireGraceMs, 'misfireGraceMs', 5000, 0),
    leaseMs: positiveInt(o.leaseMs, 'leaseMs', 60_000, 10),
    retry: {
      maxAttempts: positiveInt(r.maxAttempts, 'retry.maxAttempts', 3),
      initialDelayMs: positiveInt(r.initialDelayMs, 'retry.initialDelayMs', 1000, 0),
      maxDelayMs: positiveInt(r.maxDelayMs, 'retry.maxDelayMs', 60_000, 0),
    },
  };
}

function checkSchedulerOptions(o: SchedulerOptions): Required<SchedulerOptions> {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError('scheduler options must be an object');
  const clock = o.clock ?? systemClock;
  if (typeof clock?.now !== 'function' || typeof clock.setTimeout !== 'function' || typeof clock.clearTimeout !== 'function') {
    throw new InvalidArgumentError('clock must have now(), setTimeout(fn, ms) and clearTimeout(handle)');
  }
  const owner = o.owner ?? `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
  if (typeof owner !== 'string' || owner.length === 0) throw new InvalidArgumentError('owner must be a non-empty string');
  return {
    clock,
    owner,
    historyLimit: positiveInt(o.historyLimit, 'historyLimit', 200),
    maxSleepMs: positiveInt(o.maxSleepMs, 'maxSleepMs', 30_000),
  };
}
