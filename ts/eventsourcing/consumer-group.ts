/**
 * Consumer groups on the event log (`db.consumerGroup(name, { types })`): the members
 * of a group share its events, each event handed to one member at a time, and an
 * event not acked within `ackTimeoutMs` is handed again, to whichever member pulls next.
 *
 * Layout, under `\0athanor/cg/<name>/`: `pos` (the last event id handed out: the
 * group's durable position), `p/<20-digit event id>` (a pending delivery: member,
 * deadline, delivery count, fencing token), `t/<16-digit deadline><20-digit event id>`
 * (the pending deliveries by deadline, so a pull finds the expired ones with one
 * prefix scan), `token` (the group's last fencing token). A pull reads `pos`, so two
 * members pulling at once conflict and the second re-runs past what the first took.
 */
import { InvalidArgumentError, StaleLeaseError } from '../errors.js';
import { i64 } from '../state/codec.js';
import type { StoredEvent } from '../state/events.js';
import type { Tx } from '../state/transaction.js';
import { checkName, clockOption, intOption, pad, pages, readRecord, record, recordPrefix, type StoreHost, type TimeSource } from './records.js';

/** Options of a consumer group handle (not stored: every member should pass the same). */
export interface ConsumerGroupOptions {
  /** Only events of these types (default: every type). */
  types?: string[];
  /** An event not acked within this many ms of its delivery is delivered again (default 30,000). */
  ackTimeoutMs?: number;
  /** This member's name in the pending list (default `<pid>:<random>`). */
  member?: string;
  /** Where time is read (default the wall clock). */
  clock?: TimeSource;
}

/** One event handed to a member: ack or nack it. */
export interface Delivery<P = unknown> {
  /** The event. */
  readonly event: StoredEvent<P>;
  /** 1 the first time, then one more per redelivery. */
  readonly deliveries: number;
  /** Grows with every delivery in the group; an ack with an older one is refused. */
  readonly token: number;
  /** When it is delivered again unless acked (ms since the epoch). */
  readonly deadline: number;
}

/** A pending delivery as stored. */
export interface PendingDelivery {
  /** The event's id. */
  eventId: bigint;
  /** The member it was last handed to. */
  member: string;
  /** Deliveries so far. */
  deliveries: number;
  /** When it is delivered again unless acked. */
  deadline: number;
}

/** How a group reads the log: events from an id on, and the oldest id kept. @internal */
export interface ReadEvents {
  read(from: bigint, limit: number): StoredEvent[];
  firstId(): bigint;
}

interface PendingRecord {
  member: string;
  deadline: number;
  deliveries: number;
  token: number;
}

const ID_WIDTH = 20;
const TIME_WIDTH = 16;
/** Events scanned per pull at most, so that a pull over a long stretch of other types stays short. */
const SCAN = 4096;

/** A member of a consumer group. */
export class ConsumerGroup {
  readonly #host: StoreHost;
  readonly #read: ReadEvents;
  readonly #root: string;
  readonly #types: Set<string> | undefined;
  readonly #timeout: number;
  readonly #clock: TimeSource;
  /** The group's name. */
  readonly name: string;
  /** This member's name. */
  readonly member: string;
  #pulling: Promise<unknown> = Promise.resolve();

  /** @internal */
  constructor(host: StoreHost, read: ReadEvents, name: string, options: ConsumerGroupOptions = {}) {
    checkName(name, 'a consumer group name');
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('consumer group options must be an object { types, ackTimeoutMs, member }');
    if (options.types !== undefined) {
      if (!Array.isArray(options.types) || options.types.length === 0 || options.types.some((t) => typeof t !== 'string' || t.length === 0)) {
        throw new InvalidArgumentError('types must be a non-empty array of event type names (omit it for every type)');
      }
    }
    const member = options.member ?? `${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
    if (typeof member !== 'string' || member.length === 0) throw new InvalidArgumentError('member must be a non-empty string');
    this.#host = host;
    this.#read = read;
    this.name = name;
    this.member = member;
    this.#root = `${recordPrefix('cg')}${name}/`;
    this.#types = options.types === undefined ? undefined : new Set(options.types);
    this.#timeout = intOption(options.ackTimeoutMs, 'ackTimeoutMs', 30_000, 1);
    this.#clock = clockOption(options.clock);
  }

  #pending = (id: bigint): string => `${this.#root}p/${id.toString().padStart(ID_WIDTH, '0')}`;
  #timeoutKey = (deadline: number, id: bigint): string => `${this.#root}t/${pad(deadline, TIME_WIDTH)}${id.toString().padStart(ID_WIDTH, '0')}`;

  /** The group's durable position: the last event id handed out (0n before the first pull). */
  get position(): bigint {
    this.#host.assertOpen();
    return this.#host.getOpt(`${this.#root}pos`)?.asI64() ?? 0n;
  }

  /**
   * The oldest event id the group still needs (its first pending event, else the one
   * after its position): compaction must keep it and what follows.
   */
  get neededFrom(): bigint {
    const first = this.#host.list({ prefix: `${this.#root}p/`, limit: 1 })[0];
    return first === undefined ? this.position + 1n : BigInt(first.key.slice(`${this.#root}p/`.length));
  }

  /**
   * Hands this member up to `max` events: first those whose delivery timed out, then
   * new ones after the group's position. Each is pending until acked.
   */
  pull<P = unknown>(options: { max?: number } = {}): Promise<Delivery<P>[]> {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('pull options must be an object { max }');
    const max = intOption(options.max, 'max', 100, 1);
    if (max > 10_000) throw new InvalidArgumentError(`max is at most 10000, got ${max}`);
    this.#host.assertOpen();
    const run = this.#pulling.then(() => this.#host.transaction().execute((tx) => this.#pullIn(tx, max) as Delivery<P>[]));
    this.#pulling = run.catch(() => undefined);
    return run.then((r) => r.value);
  }

  #pullIn(tx: Tx, max: number): Delivery[] {
    const now = this.#clock.now();
    const tokenKey = `${this.#root}token`;
    let token = Number(tx.getOpt(tokenKey)?.asI64() ?? 0n);
    const out: Delivery[] = [];
    const deliver = (event: StoredEvent, prev: PendingRecord | undefined): void => {
      token++;
      const rec: PendingRecord = { member: this.member, deadline: now + this.#timeout, deliveries: (prev?.deliveries ?? 0) + 1, token };
      tx.set(this.#pending(event.id), record(rec));
      tx.set(this.#timeoutKey(rec.deadline, event.id), record(1));
      out.push(Object.freeze({ event, deliveries: rec.deliveries, token, deadline: rec.deadline }));
    };
    const tPrefix = `${this.#root}t/`;
    for (const e of this.#host.list({ prefix: tPrefix, limit: max })) {
      if (Number(e.key.slice(tPrefix.length, tPrefix.length + TIME_WIDTH)) > now) break;
      if (tx.getOpt(e.key) === undefined) continue; // acked since the scan
      const id = BigInt(e.key.slice(tPrefix.length + TIME_WIDTH));
      const prev = readRecord<PendingRecord>(tx.getOpt(this.#pending(id)));
      const event = this.#read.read(id, 1)[0];
      tx.delete(e.key);
      if (prev === undefined || event === undefined || event.id !== id) continue;
      deliver(event, prev);
    }
    if (out.length < max) {
      const posKey = `${this.#root}pos`;
      // A new group starts at the oldest event kept (compaction may have removed older ones).
      let pos = tx.getOpt(posKey)?.asI64() ?? this.#read.firstId() - 1n;
      const start = pos;
      for (const event of this.#read.read(pos + 1n, SCAN)) {
        if (out.length === max) break;
        pos = event.id;
        if (this.#types === undefined || this.#types.has(event.type)) deliver(event, undefined);
      }
      if (pos !== start) tx.set(posKey, i64(pos));
    }
    if (token !== 0) tx.set(tokenKey, i64(BigInt(token)));
    return out;
  }

  #settle(delivery: Delivery, fn: (tx: Tx, rec: PendingRecord) => void): Promise<void> {
    if (delivery === null || typeof delivery !== 'object' || typeof delivery.token !== 'number' || typeof delivery.event?.id !== 'bigint') {
      throw new InvalidArgumentError('pass a delivery that pull() returned');
    }
    this.#host.assertOpen();
    return this.#host
      .transaction()
      .execute((tx) => {
        const id = delivery.event.id;
        const rec = readRecord<PendingRecord>(tx.getOpt(this.#pending(id)));
        if (rec === undefined || rec.token !== delivery.token) {
          throw new StaleLeaseError(
            `event ${id} of consumer group ${JSON.stringify(this.name)} is no longer pending with token ${delivery.token} (${rec === undefined ? 'it was acked' : `it was delivered again, to ${rec.member}`}); nothing was written`,
          );
        }
        tx.delete(this.#timeoutKey(rec.deadline, id));
        fn(tx, rec);
      })
      .then(() => undefined);
  }

  /** Marks a delivered event done (`ERR_STALE_LEASE` when it timed out and was delivered again). */
  ack(delivery: Delivery): Promise<void> {
    return this.#settle(delivery, (tx) => tx.delete(this.#pending(delivery.event.id)));
  }

  /** Hands a delivered event back: it is delivered again after `delayMs` (default 0), to any member. */
  nack(delivery: Delivery, options: { delayMs?: number } = {}): Promise<void> {
    const delay = intOption(options?.delayMs, 'delayMs', 0);
    return this.#settle(delivery, (tx, rec) => {
      const deadline = this.#clock.now() + delay;
      tx.set(this.#pending(delivery.event.id), record({ ...rec, deadline } satisfies PendingRecord));
      tx.set(this.#timeoutKey(deadline, delivery.event.id), record(1));
    });
  }

  /** The pending deliveries, oldest event first. */
  pending(options: { limit?: number } = {}): PendingDelivery[] {
    this.#host.assertOpen();
    const limit = intOption(options.limit, 'limit', 1000, 1);
    const prefix = `${this.#root}p/`;
    const out: PendingDelivery[] = [];
    for (const e of pages(this.#host, prefix)) {
      if (out.length >= limit) break;
      const r = readRecord<PendingRecord>(e.value)!;
      out.push({ eventId: BigInt(e.key.slice(prefix.length)), member: r.member, deliveries: r.deliveries, deadline: r.deadline });
    }
    return out;
  }
}
