/** Idempotency keys: what a key did, while the database remembers it. */
import type { Core } from './core.js';
import { checkIdempotencyKey } from './keys.js';

/** The original outcome of the transaction that applied an idempotency key. */
export interface IdempotencyRecord {
  /** Commit sequence number of the original commit. */
  commitSeq: bigint;
  /** Id of the first event it logged, or `null` when it logged none. */
  firstEventId: bigint | null;
  /** Number of events it logged. */
  eventCount: number;
  /** When it committed, milliseconds since the Unix epoch. */
  committedAt: number;
}

/** Looks idempotency keys up (`db.idempotency`). */
export class Idempotency {
  readonly #core: Core;

  /** @internal */
  constructor(core: Core) {
    this.#core = core;
  }

  /**
   * What the transaction that applied `key` did, on the newest committed state:
   * the same ids a retry with this key gets in its `'duplicate'` result. `undefined`
   * when no transaction applied the key or when it is older than the database's
   * `idempotencyWindowMs` (then a transaction with this key would apply as new).
   * Throws `ERR_INVALID_ARGUMENT` for a key `execute()` would refuse.
   */
  get(key: string): IdempotencyRecord | undefined {
    checkIdempotencyKey(key);
    const r = this.#core.idempotencyRecord(key);
    if (r === undefined) return undefined;
    return { commitSeq: r.commitSeq, firstEventId: r.firstEventId, eventCount: r.eventCount, committedAt: r.committedAt };
  }
}
