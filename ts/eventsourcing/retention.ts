/**
 * Retention (`db.events.compact`): which events may go, the optional archive, and the
 * core's deletion (`store/compact.rs`).
 *
 * An event may go only when every durable reader of the log has passed it: each
 * processor's cursor in projection.db, each vector projection's cursor (a reserved
 * state key), each consumer group's position and oldest pending delivery. Queues hold
 * no event ids. The bound is computed from the newest committed state just before the
 * deletion; a processor that starts after it (a new name, cursor 0) finds the oldest
 * events gone and fails with `ERR_COMPACTED`, as it should.
 */
import { createWriteStream, existsSync, rmSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { finished } from 'node:stream/promises';
import { InvalidArgumentError, fromNative } from '../errors.js';
import { stringifyStrict } from '../internal/json.js';
import { RESERVED_PREFIX } from '../state/reserved.js';
import type { CompactOptions, CompactResult, StoredEvent } from '../state/events.js';
import { pages, type StoreHost } from './records.js';

/** What compaction needs from the handle. @internal */
export interface RetentionHost extends StoreHost {
  /** Processors' cursors in projection.db (none when it does not exist). */
  processorCursors(): { name: string; cursor: bigint }[];
  /** Events by id range, oldest first. */
  readEvents(from: bigint, to: bigint): Iterable<StoredEvent>;
  /** The oldest event id kept and the newest. */
  heads(): { first: bigint; last: bigint };
  /** The core's deletion: `[deleted, firstId]`. */
  compactEvents(before: bigint, types: string[] | null): [bigint, bigint];
  /** zstd-compresses a file into a new one. */
  compressFile(src: string, dst: string, level: number): Promise<{ bytes: number; sha256: string }>;
}

/** The lowest event id some durable cursor still needs, and whose it is. */
function holds(host: RetentionHost): { needed: bigint; by: string }[] {
  const out: { needed: bigint; by: string }[] = [];
  for (const p of host.processorCursors()) out.push({ needed: p.cursor + 1n, by: `processor:${p.name}` });
  const vp = `${RESERVED_PREFIX}vector-projection/`;
  for (const e of pages(host, vp)) out.push({ needed: e.value.asI64() + 1n, by: `vector-projection:${e.key.slice(vp.length)}` });
  const cg = `${RESERVED_PREFIX}cg/`;
  const groups = new Map<string, bigint>();
  for (const e of pages(host, cg)) {
    const rest = e.key.slice(cg.length);
    const slash = rest.indexOf('/');
    const name = rest.slice(0, slash);
    const kind = rest.slice(slash + 1);
    let needed: bigint | undefined;
    if (kind === 'pos') needed = e.value.asI64() + 1n;
    else if (kind.startsWith('p/')) needed = BigInt(kind.slice(2));
    if (needed !== undefined) groups.set(name, groups.has(name) ? (needed < groups.get(name)! ? needed : groups.get(name)!) : needed);
  }
  for (const [name, needed] of groups) out.push({ needed, by: `consumer-group:${name}` });
  return out;
}

function toBefore(v: unknown): bigint {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'bigint' && v >= 0n && v < 2n ** 64n) return v;
  throw new InvalidArgumentError('before must be a non-negative event id (bigint or safe integer)');
}

/** `db.events.compact()`. @internal */
export async function compactEvents(host: RetentionHost, options: CompactOptions): Promise<CompactResult> {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('compact options must be an object { before, types, archiveTo }');
  const asked = toBefore(options.before);
  const types = options.types ?? null;
  if (types !== null && (!Array.isArray(types) || types.length === 0 || types.some((t) => typeof t !== 'string' || t.length === 0))) {
    throw new InvalidArgumentError('types must be a non-empty array of event type names (omit it for every type)');
  }
  const archiveTo = options.archiveTo;
  if (archiveTo !== undefined && (typeof archiveTo !== 'string' || archiveTo.length === 0)) throw new InvalidArgumentError('archiveTo must be a file path');
  if (archiveTo !== undefined && (existsSync(archiveTo) || existsSync(`${archiveTo}.sha256`))) {
    throw new InvalidArgumentError(`archiveTo ${JSON.stringify(archiveTo)} exists: choose a new file (an archive is never overwritten)`);
  }
  host.assertOpen();
  let before = asked;
  let heldBy: string | null = null;
  for (const h of holds(host)) {
    if (h.needed < before) {
      before = h.needed;
      heldBy = h.by;
    }
  }
  const { first, last } = host.heads();
  if (before > last + 1n) before = last + 1n;
  let archive: CompactResult['archive'] = null;
  if (archiveTo !== undefined) {
    const tmp = `${archiveTo}.tmp-${process.pid}`;
    let events = 0;
    try {
      const out = createWriteStream(tmp);
      const wanted = types === null ? null : new Set(types);
      if (before > first) {
        for (const e of host.readEvents(first, before - 1n)) {
          if (wanted !== null && !wanted.has(e.type)) continue;
          const payload = e.payload instanceof Uint8Array ? { bytes: Buffer.from(e.payload).toString('base64') } : { json: e.payload };
          const line = stringifyStrict({ id: e.id, commitSeq: e.commitSeq, at: e.at, type: e.type, ...payload }, 'an archived event');
          if (!out.write(`${line}\n`)) await new Promise<void>((r) => out.once('drain', () => r()));
          events++;
        }
      }
      out.end();
      await finished(out);
      const written = await host.compressFile(tmp, archiveTo, 3);
      writeFileSync(`${archiveTo}.sha256`, `${written.sha256}  ${basename(archiveTo)}\n`);
      archive = { path: archiveTo, events, bytes: written.bytes, sha256: written.sha256 };
    } finally {
      rmSync(tmp, { force: true });
    }
  }
  let deleted: bigint;
  let firstId: bigint;
  try {
    [deleted, firstId] = host.compactEvents(before, types);
  } catch (e) {
    throw fromNative(e);
  }
  return { deleted: Number(deleted), firstId, before, heldBy, archive };
}
