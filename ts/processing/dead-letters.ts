/** The dead-letter queue of a processor, as its users see it (`processor.deadLetters`). */
import { INTERNAL } from '../state/reserved.js';
import { InvalidArgumentError } from '../errors.js';
import { checkCallOptions } from './options.js';
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

  #row(r: Record<string, unknown>): DeadLetter {
    const eventId = BigInt(r.event_id as number | bigint);
    const event = this.#host.event(eventId) ?? { id: eventId, type: String(r.event_type), payload: undefined, at: 0, commitSeq: 0n };
    return {
      id: Number(r.id),
      processor: String(r.processor),
      event,
      errorCode: String(r.error_code),
      error: String(r.error),
      attempts: Number(r.attempts),
      firstFailedAt: Number(r.first_failed_at),
      lastFailedAt: Number(r.last_failed_at),
    };
  }

  /** Dead letters, oldest event first. */
  list(options: { limit?: number; offset?: number } = {}): DeadLetter[] {
    checkCallOptions(options, 'deadLetters.list', ['limit', 'offset']);
    const limit = options.limit ?? -1;
    const offset = options.offset ?? 0;
    if (!Number.isInteger(limit) || !Number.isInteger(offset) || offset < 0) throw new InvalidArgumentError('limit and offset must be integers');
    return this.#host.sql
      .all('SELECT * FROM _athanor_dead_letters WHERE processor = ? ORDER BY event_id LIMIT ? OFFSET ?', [this.#p.name, limit, offset])
      .map((r) => this.#row(r));
  }

  /** One dead letter by id, or `undefined`. */
  get(id: number): DeadLetter | undefined {
    if (!Number.isInteger(id)) throw new InvalidArgumentError('dead letter id must be an integer');
    const r = this.#host.sql.get('SELECT * FROM _athanor_dead_letters WHERE id = ? AND processor = ?', [id, this.#p.name]);
    return r === undefined ? undefined : this.#row(r);
  }

  /** Number of dead letters. */
  count(): number {
    return Number(this.#host.sql.get<{ n: number }>('SELECT count(*) AS n FROM _athanor_dead_letters WHERE processor = ?', [this.#p.name])!.n);
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
    return this.#host.sql[INTERNAL]().run('DELETE FROM _athanor_dead_letters WHERE id = ? AND processor = ?', [id, this.#p.name]).changes > 0;
  }

  /** Deletes every dead letter of this processor; returns how many. */
  clear(): number {
    return this.#host.sql[INTERNAL]().run('DELETE FROM _athanor_dead_letters WHERE processor = ?', [this.#p.name]).changes;
  }
}
