/**
 * The bridge to one native handle: scratch buffers for allocation-free reads,
 * the commit queue's promises, and commit notifications. @internal
 */
import { Upcasters } from './upcasters.js';
import { watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { decodeValue, type Value } from './codec.js';
import { ByteWriter } from '../internal/bytes.js';
import { AthanorError, ClosedError, ConflictError, fromNative } from '../errors.js';
import { GROUP_HEADER, TOKEN_LEN, readCompletion, readGroupNotice, readGroupSize, readToken, type CommitInfo, type CommitNotice } from '../internal/completion.js';
import { beginFrame, endFrame, readFailures } from '../internal/commit-frames.js';
import { readEntry } from '../internal/entry.js';
import { native, type NativeDb, type NativeOpenOptions } from '../internal/native.js';
import { checkKey } from './keys.js';

export type { CommitInfo, CommitNotice };

/** What the idempotency record of a key holds. @internal */
export interface IdempotencyEntry extends CommitInfo {
  outcome: 'duplicate';
  /** When the original committed, ms since the Unix epoch. */
  committedAt: number;
}

const KEY_CAP = 2048;

/** Node's Buffer has had `utf8Write` (without `write`'s argument juggling) since v0.x, on every version we support. */
type FastBuffer = Buffer & { utf8Write(s: string, offset: number, length: number): number };
const VAL_CAP = 64 * 1024;

interface Pending {
  resolve: (info: CommitInfo) => void;
  reject: (e: Error) => void;
  /** `performance.now()` at hand-over, for the latency metric. */
  started: number;
}

/** How one hand-over to the writer ended: a conflict is an attempt that is re-run. @internal */
export type CommitOutcome = 'applied' | 'duplicate' | 'conflict' | 'failed';

/** Where a handle reports its commits to (the metrics). @internal */
export interface CommitObserver {
  settled(ms: number, outcome: CommitOutcome): void;
  group(size: number): void;
}

/** A transaction ready for the writer: it appends its batch (native/core/src/txn.rs) to `w`. @internal */
export interface EncodableTx {
  encode(w: ByteWriter, idempotencyKey: string | undefined): void;
}

/** @internal */
export interface CoreOptions {
  durability: 'full' | 'batched' | 'none';
  syncIntervalMs: number;
  mapSize: number;
  idempotencyWindowMs: number;
  create: boolean;
  /** Start the event log's hash chain (native/core/src/store/chain.rs). */
  chain?: boolean;
  /** The chain's HMAC key; the addon copies it. */
  hmacKey?: Buffer | undefined;
}

function nativeOptions(o: CoreOptions): NativeOpenOptions {
  return { durability: o.durability, syncIntervalMs: o.syncIntervalMs, mapSize: o.mapSize, idempotencyWindowMs: o.idempotencyWindowMs, create: o.create, chain: o.chain, hmacKey: o.hmacKey };
}

/** @internal */
export class Core {
  readonly native: NativeDb;
  readonly keyBuf = Buffer.allocUnsafeSlow(KEY_CAP);
  readonly valBuf = Buffer.allocUnsafeSlow(VAL_CAP);
  readonly batchWriter = new ByteWriter(4096);
  /** Fast point reads installed by the addon (raw N-API functions, see native/node/src/fast.rs). */
  readonly #fast: { get: (keyLen: number) => number; txGet: (keyLen: number) => number; txBegin: () => bigint } = {
    get: () => -1,
    txGet: () => -1,
    txBegin: () => 0n,
  };
  inCallback = false;
  /** The upcasters every read path of this handle applies (`db.events.upcaster`). */
  readonly upcasters = new Upcasters();
  /** Where commit latency, group sizes and conflicts are reported (`db.metrics()`). */
  observer: CommitObserver | undefined;
  closed = false;
  readonly #pending = new Map<number, Pending>();
  #nextToken = 1;
  readonly #listeners = new Set<(n: CommitNotice) => void>();
  #lastNotified = 0n;
  #retryTail: Promise<void> = Promise.resolve();

  /** Opens `dir` on the calling thread (`Athanor.openSync`). */
  static openSync(dir: string, o: CoreOptions): Core {
    return new Core(dir, (onCommit) => new native.NativeDb(dir, nativeOptions(o), onCommit));
  }

  /**
   * Opens `dir` on the libuv pool: the LMDB checks and loading every vector collection
   * and index dump would otherwise stall the event loop for as long as they take.
   */
  static async open(dir: string, o: CoreOptions): Promise<Core> {
    // The handle exists before its Core does; no commit can be queued on it until then.
    let deliver: ((buf: Buffer) => void) | undefined;
    let handle: NativeDb;
    try {
      handle = await native.openDb(dir, nativeOptions(o), (buf: Buffer) => deliver?.(buf));
    } catch (e) {
      throw fromNative(e);
    }
    return new Core(dir, (onCommit) => {
      deliver = onCommit;
      return handle;
    });
  }

  /**
   * A handle on namespace `id` of the engine `parent` holds: its own commit sink and
   * read transactions, every read and write confined to the namespace by the core.
   */
  static view(parent: Core, dir: string, id: number): Core {
    return new Core(dir, (onCommit) => parent.native.namespaceView(id, onCommit));
  }

  private constructor(dir: string, handle: (onCommit: (buf: Buffer) => void) => NativeDb) {
    this.#notifyPath = join(dir, 'canonical', 'commits.notify');
    try {
      this.native = handle((buf: Buffer) => this.#onCommit(buf));
    } catch (e) {
      throw fromNative(e);
    }
    this.native.setScratch(this.keyBuf, this.valBuf, this.#fast);
    this.#namespaced = this.native.namespaceId !== 0;
  }

  /** Whether this handle is a namespace's (asked once: notices come with every commit group). */
  readonly #namespaced: boolean;

  assertOpen(): void {
    if (this.closed) throw new ClosedError();
  }

  /** Writes `key` into the key scratch; returns its byte length. */
  writeKey(key: string): number {
    checkKey(key);
    return (this.keyBuf as FastBuffer).utf8Write(key, 0, KEY_CAP);
  }

  /** Point read on the newest state. */
  get(key: string): Value | undefined {
    this.assertOpen();
    const n = this.writeKey(key);
    try {
      return this.decodeRead(this.#fast.get(n), n, this.#getCopy);
    } catch (e) {
      throw fromNative(e);
    }
  }

  readonly #getCopy = (keyLen: number): Buffer | null | undefined => this.native.getCopy(keyLen);

  /**
   * Turns a point read's result into a value: `len` < 0 is absent; a value that
   * fit is in the value scratch; a larger one is fetched again with `copy`.
   */
  decodeRead(len: number, keyLen: number, copy: (keyLen: number) => Buffer | null | undefined): Value | undefined {
    if (len < 0) return undefined;
    if (len <= VAL_CAP) return decodeValue(this.valBuf, 0, len);
    const b = copy(keyLen);
    return b ? decodeValue(b, 0, b.length) : undefined;
  }

  /** Starts a transaction attempt on the newest state; returns its commit seq. */
  txBegin(): bigint {
    this.assertOpen();
    try {
      return this.#fast.txBegin();
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Read inside a transaction attempt (pinned snapshot): value + version. */
  txGet(key: string): { version: bigint; value: Value } | undefined {
    this.assertOpen();
    const n = this.writeKey(key);
    try {
      const len = this.#fast.txGet(n);
      if (len < 0) return undefined;
      const buf = len > VAL_CAP ? this.native.txGetCopy(n) : this.valBuf;
      if (!buf) return undefined;
      return readEntry(buf, len, decodeValue);
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * Queues a batch; resolves when committed (durably, per the durability mode).
   *
   * When the writer has just reported a group of several commits, the
   * transactions their continuations start are held until the end of this
   * event-loop turn and handed over together (`commitMany`), so they share the
   * next group commit instead of the first one going alone. A lone commit is
   * handed over at once.
   */
  commit(tx: EncodableTx, idempotencyKey: string | undefined): Promise<CommitInfo> {
    this.assertOpen();
    const token = this.#nextToken;
    this.#nextToken = token >= 0x7fffffff ? 1 : token + 1;
    let resolve!: (info: CommitInfo) => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<CommitInfo>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    if (!this.#holding && this.#outboxTokens.length === 0) {
      const w = this.batchWriter;
      w.reset();
      try {
        encodeBatch(tx, w, idempotencyKey);
        this.native.commit(w.view(), token);
      } catch (e) {
        return Promise.reject(fromNative(e));
      } finally {
        w.shrink();
      }
    } else {
      // One commitMany frame. The outbox is shared with the other transactions of
      // this turn: a batch that fails to encode is cut off again, so it fails alone
      // and the frames stay whole.
      const w = this.#outbox;
      const frameAt = beginFrame(w, token);
      try {
        encodeBatch(tx, w, idempotencyKey);
      } catch (e) {
        w.pos = frameAt;
        return Promise.reject(fromNative(e));
      }
      endFrame(w, frameAt);
      this.#outboxTokens.push(token);
    }
    if (this.#pending.size === 0) this.native.keepAlive(true);
    this.#pending.set(token, { resolve, reject, started: performance.now() });
    return promise;
  }

  #holding = false;
  #outbox = new ByteWriter(64 * 1024);
  readonly #outboxTokens: number[] = [];

  #holdForThisTurn(): void {
    if (this.#holding) return;
    this.#holding = true;
    setImmediate(() => {
      this.#holding = false;
      this.#flushOutbox();
    });
  }

  #flushOutbox(): void {
    if (this.#outboxTokens.length === 0 || this.closed) return;
    const tokens = this.#outboxTokens.splice(0);
    let answer: Buffer;
    try {
      // Answers every token it does not queue, so none is left pending.
      answer = this.native.commitMany(this.#outbox.view(), tokens);
    } catch (e) {
      const err = fromNative(e);
      for (const t of tokens) this.#settle(t, undefined, err);
      return;
    } finally {
      // Let a burst's large buffer go once it is handed over.
      if (this.#outbox.buf.length > 4 * 1024 * 1024) this.#outbox = new ByteWriter(64 * 1024);
      else this.#outbox.reset();
    }
    readFailures(answer, (token, error) => this.#settle(token, undefined, error));
  }

  #settle(token: number, info: CommitInfo | undefined, error: Error | undefined): void {
    const p = this.#pending.get(token);
    if (p === undefined) return;
    this.#pending.delete(token);
    this.observer?.settled(performance.now() - p.started, error ? (error instanceof ConflictError ? 'conflict' : 'failed') : info!.outcome);
    if (error) p.reject(error);
    else p.resolve(info!);
    if (this.#pending.size === 0) {
      if (!this.closed) this.native.keepAlive(false);
      for (const w of this.#drainWaiters.splice(0)) w();
    }
  }

  /** Commits and blocks until durable. Commits queued earlier are handed over first, so issue order holds. */
  commitSync(tx: EncodableTx, idempotencyKey: string | undefined): CommitInfo {
    this.assertOpen();
    this.#flushOutbox();
    const w = this.batchWriter;
    w.reset();
    let rec: Buffer;
    const started = performance.now();
    try {
      encodeBatch(tx, w, idempotencyKey);
      rec = this.native.commitSync(w.view());
    } catch (e) {
      throw fromNative(e);
    } finally {
      w.shrink();
    }
    const r = readCompletion(rec, 0);
    this.observer?.settled(performance.now() - started, r.error ? (r.error instanceof ConflictError ? 'conflict' : 'failed') : r.info!.outcome);
    if (r.error) throw r.error;
    return r.info!;
  }

  /**
   * The commit that applied an idempotency key while the key is inside the
   * idempotency window: on the newest state, or (`pinned`) on the snapshot of the
   * transaction attempt in progress.
   */
  idempotencyRecord(key: string, pinned = false): IdempotencyEntry | undefined {
    this.assertOpen();
    let r: bigint[] | null;
    try {
      r = this.native.idempotencyRecord(key, pinned);
    } catch (e) {
      throw fromNative(e);
    }
    if (!r) return undefined;
    const eventCount = Number(r[2]!);
    return { outcome: 'duplicate', commitSeq: r[0]!, firstEventId: eventCount > 0 ? r[1]! : null, eventCount, committedAt: Number(r[3]!) };
  }

  /** Commit seq of the newest committed state. */
  newestCommitSeq(): bigint {
    this.assertOpen();
    try {
      return this.native.heads()[1]!;
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Number of commits queued and not yet reported. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  subscribe(listener: (n: CommitNotice) => void): () => void {
    this.#listeners.add(listener);
    this.native.setWantsNotices(true);
    this.#watchOtherProcesses();
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0 && !this.closed) {
        this.native.setWantsNotices(false);
        this.#unwatchIfIdle();
      }
    };
  }

  readonly #wakeListeners = new Set<() => void>();
  /** `native.otherCommits()` when last read (see {@link onOtherCommit}); NaN or undefined: unknown. */
  #otherCommits: number | undefined = Number.NaN;

  /**
   * Calls `listener` once per event-loop turn in which a commit to this database was
   * announced that this process's commit writer did not make (another process's, a
   * replica's apply, an administrative write): a wake-up with no notice, for what only
   * such a commit can change behind this process's back (the roles' version, which
   * this process's own changes bump as they commit). Register it before reading what
   * it re-reads: a commit after registering is never missed. Unlike {@link subscribe},
   * this process's commits cost no notice to JavaScript, and wake no listener.
   */
  onOtherCommit(listener: () => void): () => void {
    // Taken while the writer commits, the baseline is NaN: the first check then wakes the listener.
    if (this.#wakeListeners.size === 0) this.#otherCommits = this.#readOtherCommits();
    this.#wakeListeners.add(listener);
    this.#watchOtherProcesses();
    return () => {
      this.#wakeListeners.delete(listener);
      this.#unwatchIfIdle();
    };
  }

  /**
   * Whether a commit other than this writer's happened since the last reading (true
   * when it cannot tell). While the writer is committing the reading waits: it is
   * taken again shortly (the wake-up is not lost).
   */
  #otherCommitSeen(): boolean {
    const now = this.#readOtherCommits();
    if (now === undefined) return true;
    if (Number.isNaN(now)) {
      this.#checkAgain ??= setTimeout(() => {
        this.#checkAgain = undefined;
        this.#queueCheck();
      }, 1).unref();
      return false;
    }
    const seen = now !== this.#otherCommits;
    this.#otherCommits = now;
    return seen;
  }

  #checkAgain: NodeJS.Timeout | undefined;

  /** `native.otherCommits()`, or `undefined` when it cannot be read (the handle closed). */
  #readOtherCommits(): number | undefined {
    try {
      return this.native.otherCommits();
    } catch {
      return undefined;
    }
  }

  #unwatchIfIdle(): void {
    if (this.#listeners.size === 0 && this.#wakeListeners.size === 0 && !this.closed) {
      this.#watcher?.close();
      this.#watcher = undefined;
    }
  }

  readonly #notifyPath: string;
  #watcher: FSWatcher | undefined;
  #checkQueued = false;

  /**
   * Commits of other processes: every writer rewrites `canonical/commits.notify` after
   * a group commit (native/core/src/announce.rs); watching it (inotify, kqueue) tells
   * this process to read the new heads, with no polling and no CPU while idle. Our own
   * commits change it too; those find nothing newer than what was already delivered.
   */
  #watchOtherProcesses(): void {
    if (this.#watcher !== undefined || this.closed) return;
    try {
      this.#watcher = watch(this.#notifyPath, { persistent: false }, () => this.#queueCheck());
      this.#watcher.on('error', () => {
        this.#watcher?.close();
        this.#watcher = undefined;
      });
    } catch {
      // No watch on this file system (some network mounts): processors' pollInterval still works.
      this.#watcher = undefined;
    }
  }

  #queueCheck(): void {
    if (this.#checkQueued) return;
    this.#checkQueued = true;
    setImmediate(() => {
      this.#checkQueued = false;
      if (this.closed) return;
      if (this.#wakeListeners.size > 0 && this.#otherCommitSeen()) {
        for (const l of this.#wakeListeners) {
          try {
            l();
          } catch (e) {
            warn('a commit listener threw', e);
          }
        }
      }
      if (this.#listeners.size === 0) return;
      try {
        const [lastEventId, commitSeq] = this.native.heads();
        if (commitSeq! > this.#lastNotified) this.#publish({ commitSeq: commitSeq!, lastEventId: lastEventId! });
      } catch (e) {
        warn('could not read the heads after another process committed', e);
      }
    });
  }

  #publish(notice: CommitNotice): void {
    this.#lastNotified = notice.commitSeq;
    // A group's notice carries the default namespace's newest event id; a namespace's
    // listeners (processors) compare it with their cursors in the namespace's own ids.
    if (this.#namespaced) {
      try {
        notice = { commitSeq: notice.commitSeq, lastEventId: this.native.heads()[0]! };
      } catch (e) {
        warn('could not read the namespace heads after a commit', e);
      }
    }
    for (const l of this.#listeners) {
      try {
        l(notice);
      } catch (e) {
        warn('a commit listener threw', e);
      }
    }
  }

  /** Runs on the JS thread for each group. Must never throw (see native/node). */
  #onCommit(buf: Buffer): void {
    try {
      const notice = readGroupNotice(buf);
      const n = readGroupSize(buf);
      let off = GROUP_HEADER;
      if (n > 0) this.observer?.group(n);
      if (n > 1) this.#holdForThisTurn();
      for (let i = 0; i < n; i++) {
        const token = readToken(buf, off);
        const r = readCompletion(buf, off + TOKEN_LEN);
        off = r.end;
        this.#settle(token, r.info, r.error);
      }
      if (!this.closed) this.native.releaseStaleReaders();
      if (notice.commitSeq > this.#lastNotified) this.#publish(notice);
    } catch (e) {
      warn('internal error while delivering commits', e);
    }
  }

  /**
   * Serialises transactions that are being retried after a conflict: each waits
   * for the previous retried one to finish, so contenders on a hot key make
   * progress one commit at a time instead of conflicting with each other forever.
   * Returns the release function.
   */
  async retryTurn(): Promise<() => void> {
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const prev = this.#retryTail;
    this.#retryTail = prev.then(() => mine);
    await prev;
    return release;
  }

  /** Waits for every queued commit of this handle to be reported. */
  async drain(): Promise<void> {
    if (this.#pending.size === 0) return;
    await new Promise<void>((r) => this.#drainWaiters.push(r));
  }

  readonly #drainWaiters: (() => void)[] = [];

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.#listeners.clear();
    this.#wakeListeners.clear();
    this.#watcher?.close();
    this.#watcher = undefined;
    clearTimeout(this.#checkAgain);
    // Commits still held for this turn would otherwise never be answered.
    const held = this.#outboxTokens.splice(0);
    this.#outbox.reset();
    for (const t of held) this.#settle(t, undefined, new ClosedError('the database was closed before this transaction was handed to the writer; nothing was written'));
    this.native.close();
  }
}

/**
 * Encodes a batch; a failure that is not athanor's own typed error means a value
 * slipped past the checks of `tx.set()` and friends.
 */
function encodeBatch(tx: EncodableTx, w: ByteWriter, idempotencyKey: string | undefined): void {
  try {
    tx.encode(w, idempotencyKey);
  } catch (e) {
    if (e instanceof AthanorError) throw e;
    throw new AthanorError('ERR_INTERNAL', `could not encode the transaction (a bug in athanor: please report it): ${stackOf(e)}`, { cause: e });
  }
}

/**
 * Reports what a user callback threw as a process warning. Whatever was thrown
 * (a non-Error, an object without `toString`, a Proxy whose traps throw) must
 * not stop the caller, so describing it can never throw.
 */
function warn(what: string, thrown: unknown): void {
  try {
    process.emitWarning(`athanor: ${what}: ${stackOf(thrown)}`);
  } catch {
    // Nowhere left to report to; the commit path must go on.
  }
}

/** The stack of a thrown Error (else a printable description), for a warning; never throws. */
function stackOf(e: unknown): string {
  try {
    if (e instanceof Error) {
      const stack = e.stack;
      if (typeof stack === 'string') return stack;
    }
    return String(e);
  } catch {
    try {
      return Object.prototype.toString.call(e);
    } catch {
      return 'a value that cannot be printed';
    }
  }
}
