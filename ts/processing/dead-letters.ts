/** The dead-letter queue of a processor, as its users see it (`processor.deadLetters`). */
import { INTERNAL } from '../state/reserved.js';
import { InvalidArgumentError } from '../errors.js';
import { checkCallOptions } from './options.js';
import type { DeadLetterRow } from '../sql/bookkeeping.js';
import type { Applier, DeadLetter, ProcessorHost } from './types.js';

/** The dead-letter queue of one processor. */
export class DeadLetters {
  readonly #p: { readonly name: string; readonly applier: Applier };
  readonly #host: ProcessorHost;

  /** @internal */
  constructor(p: { readonly name: string; readonly applier: Applier }, host: ProcessorHost) {
    this.#p = p;
    this.#host = host;
  }

  #row(r: DeadLetterRow): DeadLetter {
    const event = this.#host.event(r.eventId) ?? { id: r.eventId, type: r.eventType, payload: undefined, at: 0, commitSeq: 0n };
    return {
      id: r.id,
      processor: r.processor,
      event,
      errorCode: r.errorCode,
      error: r.error,
      attempts: r.attempts,
      firstFailedAt: r.firstFailedAt,
      lastFailedAt: r.lastFailedAt,
    };
  }

  /** Dead letters, oldest event first. */
  list(options: { limit?: number; offset?: number } = {}): DeadLetter[] {
    checkCallOptions(options, 'deadLetters.list', ['limit', 'offset']);
    const limit = options.limit ?? -1;
    const offset = options.offset ?? 0;
    if (!Number.isInteger(limit) || !Number.isInteger(offset) || offset < 0) throw new InvalidArgumentError('limit and offset must be integers');
    return this.#host.sql[INTERNAL]()
      .deadLetters(this.#p.name, limit, offset)
      .map((r) => this.#row(r));
  }

  /** One dead letter by id, or `undefined`. */
  get(id: number): DeadLetter | undefined {
    if (!Number.isInteger(id)) throw new InvalidArgumentError('dead letter id must be an integer');
    const r = this.#host.sql[INTERNAL]().deadLetter(this.#p.name, id);
    return r === undefined ? undefined : this.#row(r);
  }

  /** Number of dead letters. */
  count(): number {
    return this.#host.sql[INTERNAL]().deadLetterCount(this.#p.name);
  }

  /**
   * Runs the event through the processor's current handlers again; on success its
   * effects and the dead letter's removal commit together and `true` is returned. On
   * failure nothing is applied, attempts/error/time are updated and `false` is returned.
   */
  async retry(id: number): Promise<boolean> {
    if (!Number.isInteger(id)) throw new InvalidArgumentError('dead letter id must be an integer');
    const e = await this.#p.applier.retryDeadLetter(id);
    return e === undefined;
  }

  /** Retries every dead letter, oldest event first. */
  async retryAll(): Promise<{
    /** Dead letters applied and removed. */
    retried: number;
    /** Dead letters that failed again (kept). */
    failed: number;
  }> {
    let retried = 0;
    let failed = 0;
    for (const d of this.list()) {
      if (await this.retry(d.id)) retried++;
      else failed++;
    }
    return { retried, failed };
  }

  /** Deletes a dead letter without applying it; returns whether it existed. */
  remove(id: number): boolean {
    if (!Number.isInteger(id)) throw new InvalidArgumentError('dead letter id must be an integer');
    return this.#host.sql[INTERNAL]().removeDeadLetter(this.#p.name, id);
  }

  /** Deletes every dead letter of this processor; returns how many. */
  clear(): number {
    return this.#host.sql[INTERNAL]().removeDeadLetters(this.#p.name);
  }
}
