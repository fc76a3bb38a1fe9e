/** Search hits and documents as users see them: the metadata a vector projection wrapped, unwrapped. */
import { SOURCE_EVENT_KEY, SOURCE_VALUE_KEY } from '../state/tx-vectors.js';
import type { VectorHit } from './types.js';

/** Splits stored metadata into the user's and the source event id a projection recorded. @internal */
export function unwrapMeta<M>(stored: unknown): { metadata: M | undefined; eventId?: bigint } {
  if (stored === null || typeof stored !== 'object' || !(SOURCE_EVENT_KEY in stored)) return { metadata: stored as M | undefined };
  const { [SOURCE_EVENT_KEY]: source, [SOURCE_VALUE_KEY]: value, ...rest } = stored as Record<string, unknown>;
  const metadata = (SOURCE_VALUE_KEY in stored ? value : Object.keys(rest).length > 0 ? rest : undefined) as M | undefined;
  return { metadata, eventId: BigInt(source as string) };
}

/** A hit from its packed parts (see internal/vector-pack.ts `readHits`). @internal */
export function toHit<M>(id: string, score: number, stored: unknown): VectorHit<M> {
  return stored === undefined ? { id, score, metadata: undefined } : { id, score, ...unwrapMeta<M>(stored) };
}
