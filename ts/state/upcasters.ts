/**
 * Event schema versions and upcasters. An event logged with `schemaVersion: n`
 * keeps its stored bytes forever; readers bring it to the newest version of its
 * type by running the registered upcasters `n -> n+1 -> ...` on every read path
 * (`events.read/tail/get`, `streams.read`, processors' handlers, vector projections).
 * Declarative projections read payloads in Rust, as stored: one over a type that has
 * upcasters is refused, and so is an upcaster for a type a declarative projection handles.
 */
import type { StoredEvent } from '../internal/event-pack.js';
import { InvalidArgumentError, UpcastError } from '../errors.js';
import { thrownError } from '../internal/thrown.js';

/** An upcaster: a pure function from a payload of version `n` to one of version `n + 1`. */
export type Upcaster = (payload: unknown) => unknown;

/** The upcasters of one handle. @internal */
export class Upcasters {
  /** type -> (fromVersion -> fn) */
  readonly #byType = new Map<string, Map<number, Upcaster>>();
  /** type -> newest version (the highest fromVersion + 1) */
  readonly #latest = new Map<string, number>();
  /** Event types declarative projections of this handle handle ('*': all), with a projection's name. */
  readonly #declarative = new Map<string, string>();

  /** Whether any upcaster is registered (the read paths' fast exit). */
  get empty(): boolean {
    return this.#byType.size === 0;
  }

  register(type: string, fromVersion: number, fn: Upcaster): void {
    if (typeof type !== 'string' || type.length === 0) throw new InvalidArgumentError('upcaster() needs an event type');
    if (!Number.isSafeInteger(fromVersion) || fromVersion < 1 || fromVersion >= 2 ** 32 - 1) throw new InvalidArgumentError(`fromVersion must be an integer in 1..2^32-2, got ${String(fromVersion)}`);
    if (typeof fn !== 'function') throw new InvalidArgumentError('upcaster() needs a function (payload) => payload of the next version');
    const projection = this.#declarative.get(type) ?? this.#declarative.get('*');
    if (projection !== undefined) {
      throw new InvalidArgumentError(
        `declarative projection ${JSON.stringify(projection)} reads ${JSON.stringify(type)} events as stored, in Rust, and cannot see upcasted payloads; register upcasters before defining it, and handle the type with a processor (TypeScript handlers) instead`,
      );
    }
    let steps = this.#byType.get(type);
    if (steps === undefined) this.#byType.set(type, (steps = new Map()));
    if (steps.has(fromVersion)) throw new InvalidArgumentError(`an upcaster for ${JSON.stringify(type)} from version ${fromVersion} is already registered`);
    steps.set(fromVersion, fn);
    this.#latest.set(type, Math.max(this.#latest.get(type) ?? 1, fromVersion + 1));
  }

  /** Refuses a declarative projection over types that have upcasters; remembers its types. */
  claimForDeclarative(name: string, types: readonly string[]): void {
    for (const t of types) {
      const hit = t === '*' ? [...this.#byType.keys()][0] : this.#byType.has(t) ? t : undefined;
      if (hit !== undefined) {
        throw new InvalidArgumentError(
          `declarative projection ${JSON.stringify(name)} would read ${JSON.stringify(hit)} events as stored, in Rust, but that type has upcasters: handle it with a processor (TypeScript handlers), which sees upcasted payloads`,
        );
      }
    }
    for (const t of types) this.#declarative.set(t, name);
  }

  /** Brings each event to its type's newest schema version, in place; `ERR_UPCAST` when a step is missing or throws. */
  apply<E extends StoredEvent>(events: E[]): E[] {
    if (this.#byType.size === 0) return events;
    for (const e of events) {
      const latest = this.#latest.get(e.type);
      if (latest === undefined) continue;
      let v = e.schemaVersion ?? 1;
      if (v >= latest) continue;
      const steps = this.#byType.get(e.type)!;
      let payload: unknown = e.payload;
      for (; v < latest; v++) {
        const fn = steps.get(v);
        if (fn === undefined) {
          throw new UpcastError(`event ${e.id} of type ${JSON.stringify(e.type)} is at schema version ${v} and no upcaster from version ${v} is registered (the newest is ${latest}); register it with db.events.upcaster(${JSON.stringify(e.type)}, ${v}, fn)`);
        }
        try {
          payload = fn(payload);
        } catch (err) {
          throw new UpcastError(`the upcaster of ${JSON.stringify(e.type)} from version ${v} threw on event ${e.id}`, { cause: thrownError(err, 'upcaster', e.id) });
        }
      }
      e.payload = payload;
      e.schemaVersion = latest;
    }
    return events;
  }
}
