/**
 * Publishing a primary's commits to a NATS JetStream stream: `db.replication.publish()`.
 *
 * Every commit is logged in LMDB, in its own write transaction, as a commit record
 * (native/core/src/wire/commit_record.rs) once publishing was turned on, so commits
 * never wait for NATS: the log is the buffer, and how far it is behind is the
 * `pending` metric. The publisher sends the records in commit order, one message
 * each with `Nats-Msg-Id` = `<databaseId>:<commitSeq>` (a re-send after a crash is
 * de-duplicated by the server), and once the stream acknowledged them records the
 * published position in LMDB and drops their records.
 */
import { AthanorError, ClosedError, InvalidArgumentError } from '../errors.js';
import type { Core } from '../state/core.js';
import { describeThrown } from '../internal/thrown.js';
import { loadNats, type NatsModules } from './peers.js';
import { Bell, backoffMs } from './backoff.js';

/** Options of {@link Replication.publish}. */
export interface PublishOptions {
  /** NATS server URL(s), e.g. `'nats://127.0.0.1:4222'`. */
  servers: string | string[];
  /** The JetStream stream's name; created when missing. */
  stream: string;
  /** The subject commits are published on (the stream must capture it). */
  subject: string;
  /**
   * Stream configuration used when the stream is created (JetStream's `StreamConfig`
   * fields: `num_replicas`, `retention`, `max_age` in nanoseconds, `duplicate_window`,
   * `storage`...). An existing stream is used as it is.
   */
  streamOptions?: Record<string, unknown>;
  /** Most commits sent before waiting for their acknowledgements (default 256). */
  batchSize?: number;
  /** Longest wait between reconnection attempts, ms (default 5000). */
  maxBackoffMs?: number;
}

/** A publisher's progress and health. */
export interface PublisherMetrics {
  /** Whether it is connected to NATS now. */
  connected: boolean;
  /** The newest commit seq the stream acknowledged (durable in LMDB). */
  publishedSeq: bigint;
  /** The newest commit seq of the database. */
  commitSeq: bigint;
  /** Commits logged and not yet acknowledged by the stream (`commitSeq - publishedSeq`). */
  pending: number;
  /** Failures so far (connection, stream, publish), each followed by a retry with backoff. */
  errors: number;
  /** The newest failure's message, if any. */
  lastError: string | undefined;
}

type Js = ReturnType<NatsModules['jetstream']['jetstream']>;
type Conn = Awaited<ReturnType<NatsModules['transport']['connect']>>;

/** Publishes a database's commits to JetStream until {@link stop}. */
export class Publisher {
  readonly #core: Core;
  readonly #o: Required<Omit<PublishOptions, 'streamOptions'>> & { streamOptions: Record<string, unknown> };
  readonly #databaseId: string;
  readonly #bell = new Bell();
  readonly #unsubscribe: () => void;
  readonly #waiters: { seq: bigint; resolve: () => void; reject: (e: Error) => void }[] = [];
  #published: bigint;
  #conn: Conn | undefined;
  #stopped = false;
  #errors = 0;
  #lastError: string | undefined;
  readonly #done: Promise<void>;

  /** @internal Use {@link Replication.publish}. */
  constructor(core: Core, o: Required<Omit<PublishOptions, 'streamOptions'>> & { streamOptions: Record<string, unknown> }, nats: NatsModules) {
    this.#core = core;
    this.#o = o;
    const info = core.native.enableCommitLog();
    this.#databaseId = info.databaseId!;
    this.#published = BigInt(info.publishedSeq);
    this.#unsubscribe = core.subscribe(() => this.#bell.ring());
    this.#done = this.#run(nats);
  }

  /** The database id commits are published under (the first half of each `Nats-Msg-Id`). */
  get databaseId(): string {
    return this.#databaseId;
  }

  /** Progress and health: published position, pending commits, errors. */
  metrics(): PublisherMetrics {
    const commitSeq = this.#core.closed ? this.#published : this.#core.newestCommitSeq();
    return {
      connected: this.#conn !== undefined && !this.#conn.isClosed(),
      publishedSeq: this.#published,
      commitSeq,
      pending: Number(commitSeq - this.#published),
      errors: this.#errors,
      lastError: this.#lastError,
    };
  }

  /** Resolves once the stream acknowledged every commit up to `commitSeq` (e.g. a commit's `commitSeq`). */
  waitPublished(commitSeq: bigint | number): Promise<void> {
    const seq = BigInt(commitSeq);
    if (seq <= this.#published) return Promise.resolve();
    if (this.#stopped) return Promise.reject(new ClosedError('the publisher is stopped'));
    return new Promise((resolve, reject) => this.#waiters.push({ seq, resolve, reject }));
  }

  /** Stops publishing (commits go on being logged, and the next publisher sends them). Idempotent. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unsubscribe();
    this.#bell.ring();
    await this.#conn?.close().catch(() => undefined);
    await this.#done;
    for (const w of this.#waiters.splice(0)) w.reject(new ClosedError('the publisher was stopped before the commit was published'));
  }

  async #run(nats: NatsModules): Promise<void> {
    let attempt = 0;
    while (!this.#stopped) {
      try {
        const js = await this.#connect(nats);
        attempt = 0;
        await this.#pump(js);
      } catch (e) {
        if (this.#stopped) break;
        this.#errors++;
        this.#lastError = describeThrown(e);
        const conn = this.#conn;
        this.#conn = undefined;
        await conn?.close().catch(() => undefined);
        await this.#bell.wait(backoffMs(attempt++, this.#o.maxBackoffMs));
      }
    }
  }

  async #connect(nats: NatsModules): Promise<Js> {
    const conn = await nats.transport.connect({ servers: this.#o.servers, name: `athanor-publisher-${this.#databaseId}`, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    this.#conn = conn;
    if (this.#stopped) throw new ClosedError('stopped');
    const jsm = await nats.jetstream.jetstreamManager(conn);
    try {
      await jsm.streams.info(this.#o.stream);
    } catch (e) {
      if (!(e instanceof nats.jetstream.JetStreamApiError) || e.code !== 10059) throw e;
      await jsm.streams.add({ ...this.#o.streamOptions, name: this.#o.stream, subjects: [this.#o.subject] });
    }
    return nats.jetstream.jetstream(conn);
  }

  async #pump(js: Js): Promise<void> {
    while (!this.#stopped) {
      const rows = this.#core.native.commitLogAfter(Number(this.#published), this.#o.batchSize);
      if (rows.length === 0) {
        await this.#bell.wait(1000);
        continue;
      }
      // Sent together, acknowledged in order: one connection keeps them in order.
      const acks = rows.map((r) => js.publish(this.#o.subject, r.record, { msgID: `${this.#databaseId}:${r.commitSeq}` }));
      await Promise.all(acks);
      const last = BigInt(rows[rows.length - 1]!.commitSeq);
      await this.#core.native.markPublished(Number(last));
      this.#published = last;
      for (let i = this.#waiters.length - 1; i >= 0; i--) {
        const w = this.#waiters[i]!;
        if (w.seq <= last) {
          this.#waiters.splice(i, 1);
          w.resolve();
        }
      }
    }
  }
}

/** `db.replication`: publishing this database's commits. */
export class Replication {
  readonly #core: Core;
  #publisher: Publisher | undefined;

  /** @internal */
  constructor(core: Core) {
    this.#core = core;
  }

  /**
   * Starts publishing every commit, in commit order, to the JetStream stream
   * `stream` on `subject` (creating the stream with `streamOptions` when missing).
   * From the first call on, the database logs each commit for the publisher, also
   * while none runs (after a restart, call `publish` again: it resumes where the
   * stream's acknowledgements left off). Commits made before the first call are not
   * published: a replica of such a database starts from a backup taken after them.
   * NATS being down never blocks commits; the publisher retries with backoff.
   */
  async publish(options: PublishOptions): Promise<Publisher> {
    this.#core.assertOpen();
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('publish options must be an object { servers, stream, subject }');
    const o = checkPublishOptions(options);
    if (this.#publisher !== undefined) throw new InvalidArgumentError('this handle already publishes; stop() the publisher first');
    const nats = await loadNats('db.replication.publish()');
    try {
      this.#publisher = new Publisher(this.#core, o, nats);
    } catch (e) {
      throw e instanceof AthanorError ? e : new AthanorError('ERR_INTERNAL', describeThrown(e), { cause: e });
    }
    const p = this.#publisher;
    const stop = p.stop.bind(p);
    p.stop = async () => {
      if (this.#publisher === p) this.#publisher = undefined;
      await stop();
    };
    return p;
  }

  /** The running publisher, if any. */
  get publisher(): Publisher | undefined {
    return this.#publisher;
  }

  /** @internal Stops the publisher (at close). */
  async close(): Promise<void> {
    await this.#publisher?.stop();
  }
}

function checkPublishOptions(o: PublishOptions): Required<Omit<PublishOptions, 'streamOptions'>> & { streamOptions: Record<string, unknown> } {
  const servers = checkServers(o.servers);
  checkName(o.stream, 'stream');
  if (typeof o.subject !== 'string' || o.subject.length === 0 || /[\s*>]/.test(o.subject)) throw new InvalidArgumentError('subject must be a NATS subject without wildcards or spaces, e.g. "athanor.orders.commits"');
  if (o.streamOptions !== undefined && (o.streamOptions === null || typeof o.streamOptions !== 'object')) throw new InvalidArgumentError('streamOptions must be an object of JetStream stream settings');
  const batchSize = o.batchSize ?? 256;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) throw new InvalidArgumentError('batchSize must be an integer from 1 to 10000');
  const maxBackoffMs = o.maxBackoffMs ?? 5000;
  if (!Number.isInteger(maxBackoffMs) || maxBackoffMs < 100) throw new InvalidArgumentError('maxBackoffMs must be an integer of at least 100');
  return { servers, stream: o.stream, subject: o.subject, streamOptions: o.streamOptions ?? {}, batchSize, maxBackoffMs };
}

/** Checks a `servers` option: one URL or a non-empty list. */
export function checkServers(servers: unknown): string[] {
  const list = typeof servers === 'string' ? [servers] : servers;
  if (!Array.isArray(list) || list.length === 0 || !list.every((s) => typeof s === 'string' && s.length > 0)) {
    throw new InvalidArgumentError('servers must be a NATS URL or a non-empty list of them, e.g. "nats://127.0.0.1:4222"');
  }
  return list as string[];
}

/** Checks a stream or consumer name (JetStream refuses `.`, `*`, `>`, spaces). */
export function checkName(name: unknown, what: string): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > 200 || /[\s.*>/\\]/.test(name)) {
    throw new InvalidArgumentError(`${what} must be a non-empty name without spaces, '.', '*', '>', '/' or '\\\\', got ${describeThrown(name)}`);
  }
}
