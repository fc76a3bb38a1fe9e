/**
 * Entity streams: each stream is a sequence of events of the global log, numbered
 * from version 1; the writer indexes them at commit (`tx.append`). Reads come from
 * the newest state (`db.streams`) or a snapshot (`snapshot.streams`).
 */
import { decodeEvents, type StoredEvent } from '../internal/event-pack.js';
import { InvalidArgumentError, fromNative } from '../errors.js';
import { checkStreamId } from './keys.js';
import type { Core } from './core.js';

/** An event of a stream: a stored event of the global log with its version in the stream. */
export interface StreamEvent<P = unknown> extends StoredEvent<P> {
  /** The stream the event belongs to. */
  streamId: string;
  /** Its version in the stream: 1 for the stream's first event. */
  streamVersion: number;
}

/** Which events {@link Streams.read} returns. */
export interface StreamReadOptions {
  /** First version to read: default 1 (forward) or the newest (reverse). */
  fromVersion?: number;
  /** At most this many events. */
  limit?: number;
  /** Newest first (default false). */
  reverse?: boolean;
}

/** Which streams {@link Streams.list} returns. */
export interface StreamListOptions {
  /** Only ids starting with this. */
  prefix?: string;
  /** Only ids after this one (for paging). */
  after?: string;
  /** At most this many (default 1000, at most 10000). */
  limit?: number;
}

/** A stream and its version, as {@link Streams.list} returns them. */
export interface StreamInfo {
  /** The stream's id. */
  streamId: string;
  /** Its number of events. */
  version: number;
}

/** What reads streams: a database handle or a snapshot. @internal */
export interface StreamSource {
  readStream(stream: string, fromVersion: number | null, limit: number, reverse: boolean): Buffer;
  streamVersion(stream: string): bigint;
  listStreams(prefix: string, after: string | null, limit: number): Buffer;
}

const PAGE = 1024;

/** Reads entity streams. */
export class Streams {
  readonly #src: StreamSource;
  readonly #upcast: (events: StoredEvent[]) => StoredEvent[];

  /** @internal */
  constructor(src: StreamSource, upcast: (events: StoredEvent[]) => StoredEvent[] = (e) => e) {
    this.#src = src;
    this.#upcast = upcast;
  }

  /**
   * A stream's events with their global ids and stream versions, oldest first unless
   * `reverse`. Lazy: pages of 1024. A stream with no events reads as empty.
   */
  read<P = unknown>(streamId: string, options: StreamReadOptions = {}): IterableIterator<StreamEvent<P>> {
    checkStreamId(streamId);
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('read options must be an object');
    const { fromVersion, limit = Infinity, reverse = false } = options;
    if (fromVersion !== undefined && (!Number.isSafeInteger(fromVersion) || fromVersion < 0)) throw new InvalidArgumentError(`fromVersion must be a non-negative integer, got ${String(fromVersion)}`);
    if (limit !== Infinity && (!Number.isInteger(limit) || limit < 0)) throw new InvalidArgumentError('limit must be a non-negative integer');
    if (typeof reverse !== 'boolean') throw new InvalidArgumentError('reverse must be a boolean');
    return this.#pages(streamId, fromVersion ?? null, limit, reverse) as IterableIterator<StreamEvent<P>>;
  }

  *#pages(streamId: string, from: number | null, limit: number, reverse: boolean): Generator<StreamEvent, void, undefined> {
    let remaining = limit;
    while (remaining > 0) {
      const n = Math.min(PAGE, remaining);
      let buf: Buffer;
      try {
        buf = this.#src.readStream(streamId, from, n, reverse);
      } catch (e) {
        throw fromNative(e);
      }
      const read = readStreamPage(buf);
      const first = read.firstVersion;
      const page = this.#upcast(read.events);
      for (let i = 0; i < page.length; i++) {
        yield Object.assign(page[i]!, { streamId, streamVersion: reverse ? first - i : first + i });
      }
      remaining -= page.length;
      if (page.length < n) return;
      from = reverse ? first - page.length : first + page.length;
      if (from < 1) return;
    }
  }

  /** A stream's version: its number of events, `0` for a stream that has none (never `undefined`). */
  version(streamId: string): number {
    checkStreamId(streamId);
    try {
      return Number(this.#src.streamVersion(streamId));
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** Streams in id order with their versions. */
  list(options: StreamListOptions = {}): StreamInfo[] {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('list options must be an object');
    const { prefix = '', after, limit = 1000 } = options;
    if (typeof prefix !== 'string') throw new InvalidArgumentError('prefix must be a string');
    if (after !== undefined && typeof after !== 'string') throw new InvalidArgumentError('after must be a string');
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new InvalidArgumentError('limit must be an integer in 1..=10000');
    let buf: Buffer;
    try {
      buf = this.#src.listStreams(prefix, after ?? null, limit);
    } catch (e) {
      throw fromNative(e);
    }
    return readStreamList(buf);
  }
}

/** Reads a stream page (native/core/src/wire/streams.rs): the version of its first event, then an event pack. @internal */
export function readStreamPage(buf: Buffer): { firstVersion: number; events: StoredEvent[] } {
  return { firstVersion: Number(buf.readBigUInt64LE(0)), events: decodeEvents(buf.subarray(8)) };
}

/** Reads a list of streams and their versions (native/core/src/wire/streams.rs). @internal */
export function readStreamList(buf: Buffer): StreamInfo[] {
  const count = buf.readUInt32LE(0);
  const out: StreamInfo[] = [];
  let o = 4;
  for (let i = 0; i < count; i++) {
    const len = buf.readUInt16LE(o);
    const streamId = buf.toString('utf8', o + 2, o + 2 + len);
    o += 2 + len;
    out.push({ streamId, version: Number(buf.readBigUInt64LE(o)) });
    o += 8;
  }
  return out;
}

/** The stream source of a database handle (the newest state). @internal */
export function handleStreams(core: Core): StreamSource {
  return {
    readStream: (s, f, l, r) => {
      core.assertOpen();
      return core.native.readStream(s, f, l, r);
    },
    streamVersion: (s) => {
      core.assertOpen();
      return core.native.streamVersion(s);
    },
    listStreams: (p, a, l) => {
      core.assertOpen();
      return core.native.listStreams(p, a, l);
    },
  };
}
