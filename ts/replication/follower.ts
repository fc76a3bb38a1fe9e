/**
 * A read replica's follower: consumes its primary's commit records from a JetStream
 * stream and applies them in order (`NativeDb.applyReplicated`), several in one LMDB
 * transaction together with the stream position of the last one. The position in
 * LMDB is the truth: at every (re)connection the durable consumer is recreated to
 * start right after it, and a redelivered record the replica already holds is
 * skipped by its commit seq, so a replica killed at any moment resumes exactly.
 */
import { AthanorError, ClosedError, fromNative } from '../errors.js';
import type { Core } from '../state/core.js';
import { describeThrown } from '../internal/thrown.js';
import { readCommitRecordHead } from '../internal/commit-record.js';
import type { NatsModules } from './peers.js';
import { Bell, backoffMs } from './backoff.js';
import { checkName, checkServers } from './publisher.js';
import { InvalidArgumentError } from '../errors.js';

/** Options of `Athanor.openReplica`. */
export interface ReplicaOptions {
  /** NATS server URL(s). */
  servers: string | string[];
  /** The stream the primary publishes to. */
  stream: string;
  /** The replica's durable consumer on the stream (one per replica). */
  durableName: string;
  /** Only commits published on this subject (default: the whole stream). */
  subject?: string;
  /** Most commits applied in one LMDB transaction (default 512). */
  batchSize?: number;
  /** Longest wait between reconnection attempts, ms (default 5000). */
  maxBackoffMs?: number;
}

/** How far a replica is behind the stream. */
export interface ReplicaLag {
  /** Commits in the stream the replica has not applied yet (as of the last delivery). */
  commits: number;
  /** How old the oldest commit not yet applied is, ms (0 when caught up). */
  ms: number;
}

/** A replica follower's progress and health. */
export interface ReplicaMetrics extends ReplicaLag {
  /** Whether it is connected to NATS now. */
  connected: boolean;
  /** The replica's commit seq. */
  commitSeq: bigint;
  /** The stream sequence of the newest commit applied. */
  streamSeq: number;
  /** Commit records applied by this follower. */
  applied: number;
  /** Failures so far, each followed by a retry with backoff (unless `failed`). */
  errors: number;
  /** The newest failure's message, if any. */
  lastError: string | undefined;
  /** A failure retrying cannot cure (commits missing from the stream, another database's stream): the follower stopped. */
  failed: boolean;
}

type Msg = { data: Uint8Array; seq: number; info: { pending: number }; ack(): void };
type Conn = Awaited<ReturnType<NatsModules['transport']['connect']>>;

/** Codes of apply failures that no retry cures. */
const FATAL = new Set(['ERR_NOT_FOUND', 'ERR_INVALID_ARGUMENT', 'ERR_CORRUPT', 'ERR_VERSION', 'ERR_READ_ONLY']);

/** @internal Checks `openReplica`'s options. */
export function checkReplicaOptions(o: ReplicaOptions): Required<Omit<ReplicaOptions, 'subject'>> & { subject: string | undefined } {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError('openReplica options must be an object { servers, stream, durableName }');
  const servers = checkServers(o.servers);
  checkName(o.stream, 'stream');
  checkName(o.durableName, 'durableName');
  if (o.subject !== undefined && (typeof o.subject !== 'string' || o.subject.length === 0)) throw new InvalidArgumentError('subject must be a non-empty NATS subject');
  const batchSize = o.batchSize ?? 512;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) throw new InvalidArgumentError('batchSize must be an integer from 1 to 10000');
  const maxBackoffMs = o.maxBackoffMs ?? 5000;
  if (!Number.isInteger(maxBackoffMs) || maxBackoffMs < 100) throw new InvalidArgumentError('maxBackoffMs must be an integer of at least 100');
  return { servers, stream: o.stream, durableName: o.durableName, subject: o.subject, batchSize, maxBackoffMs };
}

/** @internal Follows the stream into a replica's store (owned by its `Replica` handle). */
export class ReplicaFollower {
  readonly #core: Core;
  readonly #o: ReturnType<typeof checkReplicaOptions>;
  readonly #bell = new Bell();
  readonly #waiters: { seq: bigint; resolve: () => void; reject: (e: Error) => void }[] = [];
  #conn: Conn | undefined;
  #stop: (() => void) | undefined;
  #stopped = false;
  #failed: Error | undefined;
  #errors = 0;
  #lastError: string | undefined;
  #applied = 0;
  #streamSeq: number;
  #commitSeq: bigint;
  #replicaOf: string | null;
  #pendingInStream = 0;
  #oldestUnappliedAt: number | undefined;
  readonly #done: Promise<void>;

  constructor(core: Core, o: ReturnType<typeof checkReplicaOptions>, nats: NatsModules) {
    this.#core = core;
    this.#o = o;
    const info = core.native.replicationInfo();
    this.#streamSeq = info.replicaStreamSeq;
    this.#commitSeq = BigInt(info.commitSeq);
    this.#replicaOf = info.replicaOf ?? null;
    this.#done = this.#run(nats);
  }

  /** How far behind the stream the replica is. */
  lag(): ReplicaLag {
    const commits = this.#pendingInStream;
    const ms = commits === 0 || this.#oldestUnappliedAt === undefined ? 0 : Math.max(0, Date.now() - this.#oldestUnappliedAt);
    return { commits, ms };
  }

  metrics(): ReplicaMetrics {
    return {
      ...this.lag(),
      connected: this.#conn !== undefined && !this.#conn.isClosed(),
      commitSeq: this.#commitSeq,
      streamSeq: this.#streamSeq,
      applied: this.#applied,
      errors: this.#errors,
      lastError: this.#lastError,
      failed: this.#failed !== undefined,
    };
  }

  /** Resolves once the replica holds commit `seq` of its primary. */
  waitFor(seq: bigint): Promise<void> {
    if (seq <= this.#commitSeq) return Promise.resolve();
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    if (this.#stopped) return Promise.reject(new ClosedError('the replica is closed'));
    return new Promise((resolve, reject) => this.#waiters.push({ seq, resolve, reject }));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stop?.();
    this.#bell.ring();
    await this.#done;
    const conn = this.#conn;
    this.#conn = undefined;
    await conn?.close().catch(() => undefined);
    this.#settleWaiters(new ClosedError('the replica was closed before it reached the commit'));
  }

  #settleWaiters(error?: Error): void {
    for (let i = this.#waiters.length - 1; i >= 0; i--) {
      const w = this.#waiters[i]!;
      if (error !== undefined) w.reject(error);
      else if (w.seq <= this.#commitSeq) w.resolve();
      else continue;
      this.#waiters.splice(i, 1);
    }
  }

  async #run(nats: NatsModules): Promise<void> {
    let attempt = 0;
    while (!this.#stopped && this.#failed === undefined) {
      try {
        await this.#follow(nats, () => {
          attempt = 0;
        });
      } catch (e) {
        if (this.#stopped) break;
        this.#errors++;
        this.#lastError = describeThrown(e);
        if (e instanceof AthanorError && FATAL.has(e.code)) {
          this.#failed = e;
          this.#settleWaiters(e);
          break;
        }
      }
      const conn = this.#conn;
      this.#conn = undefined;
      await conn?.close().catch(() => undefined);
      if (this.#stopped || this.#failed !== undefined) break;
      await this.#bell.wait(backoffMs(attempt++, this.#o.maxBackoffMs));
    }
  }

  async #follow(nats: NatsModules, connected: () => void): Promise<void> {
    const conn = await nats.transport.connect({ servers: this.#o.servers, name: `athanor-replica-${this.#o.durableName}`, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    this.#conn = conn;
    if (this.#stopped) return;
    const jsm = await nats.jetstream.jetstreamManager(conn);
    // Recreated at every connection to start right after what the store holds: the
    // consumer's own ack floor may be behind (acks lost) or ahead (a restored replica).
    try {
      await jsm.consumers.delete(this.#o.stream, this.#o.durableName);
    } catch (e) {
      if (!(e instanceof nats.jetstream.JetStreamApiError) || e.code !== 10014) throw e;
    }
    await jsm.consumers.add(this.#o.stream, {
      durable_name: this.#o.durableName,
      ack_policy: nats.jetstream.AckPolicy.All,
      deliver_policy: nats.jetstream.DeliverPolicy.StartSequence,
      opt_start_seq: this.#streamSeq + 1,
      ...(this.#o.subject !== undefined ? { filter_subject: this.#o.subject } : {}),
    });
    const consumer = await nats.jetstream.jetstream(conn).consumers.get(this.#o.stream, this.#o.durableName);
    const messages = await consumer.consume({ max_messages: this.#o.batchSize });
    this.#stop = () => void messages.stop();
    if (this.#stopped) messages.stop();
    connected();
    const batch: Msg[] = [];
    for await (const m of messages as AsyncIterable<Msg>) {
      batch.push(m);
      this.#pendingInStream = m.info.pending + batch.length;
      if (this.#oldestUnappliedAt === undefined) this.#oldestUnappliedAt = readCommitRecordHead(m.data).atMs;
      // Apply when the stream has nothing more right now, or the batch is full:
      // one LMDB transaction per burst, no waiting while idle.
      if (m.info.pending === 0 || batch.length >= this.#o.batchSize) {
        await this.#apply(batch.splice(0), m.info.pending);
      }
      if (this.#stopped) break;
    }
  }

  async #apply(batch: Msg[], pendingAfter: number): Promise<void> {
    const last = batch[batch.length - 1]!;
    if (this.#replicaOf === null) {
      const origin = readCommitRecordHead(batch[0]!.data).databaseId;
      try {
        this.#core.native.initReplica(origin);
      } catch (e) {
        throw fromNative(e);
      }
      this.#replicaOf = origin;
    }
    let r;
    try {
      r = await this.#core.native.applyReplicated(
        batch.map((m) => Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength)),
        last.seq,
      );
    } catch (e) {
      throw fromNative(e);
    }
    last.ack();
    this.#applied += r.applied;
    this.#streamSeq = last.seq;
    this.#commitSeq = BigInt(r.commitSeq);
    this.#pendingInStream = pendingAfter;
    this.#oldestUnappliedAt = undefined;
    this.#settleWaiters();
  }
}
