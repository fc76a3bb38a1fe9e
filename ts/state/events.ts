/** The event log: read by id range, by type, newest first; subscribe to commits. */
import { decodeEvents, type StoredEvent } from '../internal/event-pack.js';
import { InvalidArgumentError, fromNative } from '../errors.js';
import type { Core, CommitNotice } from './core.js';

export type { StoredEvent };


/** A chain proof of one event ({@link EventLog.proof}). */
export interface EventProof {
  /** The event id. */
  id: bigint;
  /** The event's stored record, byte for byte (its format: native/core/src/codec.rs). */
  record: Uint8Array;
  /** The previous link, hex (64 zeros for the chain's first event). */
  prevHash: string;
  /** This event's link, hex. */
  hash: string;
  /** How links are computed. */
  algorithm: 'sha256' | 'hmac-sha256';
  /** The first event the chain covers. */
  chainFrom: bigint;
}

/** Which events {@link EventLog.read} returns. */
export interface ReadOptions {
  /** First id, inclusive (default 1n). */
  from?: bigint | number;
  /** Last id, inclusive (default: the newest). */
  to?: bigint | number;
  /** Only this event type (served by the type index). */
  type?: string;
  /** At most this many events. */
  limit?: number;
  /** Newest first (default false). */
  reverse?: boolean;
}

/** Something that can read packed events: a database handle or a snapshot. @internal */
export interface EventSource {
  readEvents(from: bigint, to: bigint | null, type: string | null, limit: number, reverse: boolean): Buffer;
  heads(): bigint[];
}

const PAGE = 1024;

function toId(v: bigint | number | undefined, what: string, dflt: bigint): bigint {
  if (v === undefined) return dflt;
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) throw new InvalidArgumentError(`${what} must be a non-negative integer id, got ${v}`);
    return BigInt(v);
  }
  if (typeof v !== 'bigint' || v < 0n || v >= 2n ** 64n) throw new InvalidArgumentError(`${what} must be a non-negative 64-bit id`);
  return v;
}

/** Validates read options and returns a lazy reader over a source. @internal */
export function readFrom(src: EventSource, options: ReadOptions, upcast: (events: StoredEvent[]) => StoredEvent[] = (e) => e): Generator<StoredEvent, void, undefined> {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('read options must be an object');
  // Without `from`, reads start at the oldest event kept (1 until a compaction).
  const from = options.from === undefined ? (src.heads()[2] ?? 1n) : toId(options.from, 'from', 1n);
  const to = options.to === undefined ? null : toId(options.to, 'to', 0n);
  const type = options.type ?? null;
  if (type !== null && (typeof type !== 'string' || type.length === 0 || type.includes('\0'))) throw new InvalidArgumentError('type must be a non-empty string without NUL');
  const limit = options.limit ?? Infinity;
  if (limit !== Infinity && (!Number.isInteger(limit) || limit < 0)) throw new InvalidArgumentError('limit must be a non-negative integer');
  const reverse = options.reverse ?? false;
  if (typeof reverse !== 'boolean') throw new InvalidArgumentError('reverse must be a boolean');
  return pages(src, from, to, type, limit, reverse, upcast);
}

function* pages(src: EventSource, from: bigint, to: bigint | null, type: string | null, limit: number, reverse: boolean, upcast: (events: StoredEvent[]) => StoredEvent[]): Generator<StoredEvent, void, undefined> {
  let remaining = limit;
  if (reverse && to === null) to = src.heads()[0]!;
  while (remaining > 0) {
    const n = Math.min(PAGE, remaining);
    let page: StoredEvent[];
    try {
      page = decodeEvents(src.readEvents(from, to, type, n, reverse));
    } catch (e) {
      throw fromNative(e);
    }
    upcast(page);
    for (const e of page) yield e;
    remaining -= page.length;
    if (page.length < n) return;
    const last = page[page.length - 1]!.id;
    if (reverse) {
      if (last <= from) return;
      to = last - 1n;
    } else {
      from = last + 1n;
    }
  }
}

/** What {@link EventLog.compact} deletes. */
export interface CompactOptions {
  /** Delete events with ids below this one (held back to what every durable cursor has passed). */
  before: bigint | number;
  /** Only events of these types (others stay, so the log may have gaps below `before`). */
  types?: string[];
  /** First write the deleted events to this new file: zstd-compressed JSON lines, its SHA-256 in `<archiveTo>.sha256`. */
  archiveTo?: string;
}

/** The archive file a compaction wrote before deleting. */
export interface CompactArchive {
  /** The archive's path (zstd-compressed JSON lines). */
  path: string;
  /** Events written to it. */
  events: number;
  /** Its size in bytes. */
  bytes: number;
  /** The SHA-256 of the file, also written to `<path>.sha256`. */
  sha256: string;
}

/** What {@link EventLog.compact} did. */
export interface CompactResult {
  /** Events deleted. */
  deleted: number;
  /** The oldest event id kept now (`events.firstId`). */
  firstId: bigint;
  /** The bound actually used: `before`, or lower when a durable cursor had not passed it. */
  before: bigint;
  /** The cursor that held `before` back (`processor:<name>`, `vector-projection:<name>`, `consumer-group:<name>`), if one did. */
  heldBy: string | null;
  /** The archive written, if asked. */
  archive: CompactArchive | null;
}

/** Deletes old events; the handle supplies it (it needs the cursors of the layers above). @internal */
export type Compactor = (options: CompactOptions) => Promise<CompactResult>;

/** The database's event log. */
export class EventLog {
  readonly #core: Core;
  readonly #src: EventSource;
  #compactor: Compactor | undefined;

  /** @internal */
  setCompactor(compactor: Compactor): void {
    this.#compactor = compactor;
  }

  /**
   * Deletes the events below `before` (of `types` only, when given), but never one a
   * durable cursor still needs: processors' cursors in projection.db, vector
   * projections, consumer groups (their position and pending deliveries). Optionally
   * archives them first. Ids are never reused; a read below {@link firstId} then fails
   * with `ERR_COMPACTED`.
   */
  compact(options: CompactOptions): Promise<CompactResult> {
    this.#core.assertOpen();
    if (this.#compactor === undefined) throw new InvalidArgumentError('this event log cannot be compacted (no database handle behind it)');
    return this.#compactor(options);
  }

  /** The oldest event id kept: 1 until a compaction deleted older ones (then `lastId + 1` when none is left). */
  get firstId(): bigint {
    try {
      return this.#src.heads()[2] ?? 1n;
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** @internal */
  constructor(core: Core) {
    this.#core = core;
    this.#src = {
      readEvents: (f, t, ty, l, r) => {
        core.assertOpen();
        return core.native.readEvents(f, t, ty, l, r);
      },
      heads: () => {
        core.assertOpen();
        return core.native.heads();
      },
    };
  }

  /** Iterates events by id range, optionally of one type, oldest first unless `reverse`. Lazy: pages of 1024. */
  read<P = unknown>(options: ReadOptions = {}): IterableIterator<StoredEvent<P>> {
    this.#core.assertOpen();
    return readFrom(this.#src, options, (e) => this.#core.upcasters.apply(e)) as IterableIterator<StoredEvent<P>>;
  }

  /**
   * Registers an upcaster: a pure function from a payload of `type` at schema version
   * `fromVersion` to one at `fromVersion + 1`. Every read path of this handle then
   * sees events of `type` at its newest version (the highest `fromVersion` + 1); the
   * stored bytes never change. An event at a version with no upcaster on its way up
   * fails the read with `UpcastError` (`ERR_UPCAST`) naming the type and version.
   * Register upcasters at startup, before reading; a type a declarative projection
   * of this handle handles is refused (`ERR_INVALID_ARGUMENT`): those read payloads as stored.
   */
  upcaster(type: string, fromVersion: number, fn: (payload: unknown) => unknown): void {
    this.#core.assertOpen();
    this.#core.upcasters.register(type, fromVersion, fn);
  }

  /** The newest `n` events (optionally of one type), newest first. */
  tail<P = unknown>(n: number, options: { type?: string } = {}): StoredEvent<P>[] {
    return [...this.read<P>({ ...options, limit: n, reverse: true })];
  }

  /** One event by id, or `undefined`. */
  get<P = unknown>(id: bigint | number): StoredEvent<P> | undefined {
    const i = toId(id, 'id', 0n);
    return this.read<P>({ from: i, to: i, limit: 1 }).next().value as StoredEvent<P> | undefined;
  }

  /**
   * What an outside party needs to check that event `id` is in the hash chain
   * (`undefined` when there is no such event; `InvalidArgumentError` when the
   * database has no chain or the event predates it). To check it:
   * `hash == H(prevHash || id as 8 bytes big-endian || record)`, with H SHA-256 or,
   * for `hmac-sha256`, HMAC-SHA-256 under the database's key; `prevHash` is the
   * previous event's `hash` (32 zero bytes for the chain's first event), so a
   * chain of proofs from a trusted `hash` back to `chainFrom` checks every event in it.
   */
  proof(id: bigint | number): EventProof | undefined {
    this.#core.assertOpen();
    const i = toId(id, 'id', 0n);
    try {
      const p = this.#core.native.eventProof(i);
      if (p === null || p === undefined) return undefined;
      return { id: p.id, record: new Uint8Array(p.record), prevHash: p.prevHash.toString('hex'), hash: p.hash.toString('hex'), algorithm: p.algorithm as EventProof['algorithm'], chainFrom: p.chainFrom };
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Id of the newest event (0n when the log is empty). */
  get lastId(): bigint {
    try {
      return this.#src.heads()[0]!;
    } catch (e) {
      throw fromNative(e);
    }
  }

  /**
   * Calls `listener` on the JS thread after each group commit that applied
   * something (in-process push, no polling). Returns an unsubscribe function.
   * Listeners are isolated: whatever one throws (an Error or any other value) is
   * reported as a process warning, and the other listeners still get the notice.
   */
  subscribe(listener: (notice: CommitNotice) => void): () => void {
    this.#core.assertOpen();
    if (typeof listener !== 'function') throw new InvalidArgumentError('subscribe() needs a function');
    return this.#core.subscribe(listener);
  }
}
