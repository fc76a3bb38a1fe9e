/** Checking a chain proof (`db.events.proof(id)`) the way an outside party would. */
import { createHash, createHmac } from 'node:crypto';
import { InvalidArgumentError } from '../errors.js';
import type { EventProof } from '../state/events.js';

/**
 * Recomputes the link of `proof` from its record and previous link and compares
 * it with its `hash`. An `hmac-sha256` proof needs the database's key. This is
 * the whole algorithm; nothing of athanor is needed to run it elsewhere:
 * `hash = H(prevHash || id as u64 big-endian || record)`.
 */
export function verifyProof(proof: EventProof, hmacKey?: Uint8Array | string): boolean {
  if (proof === null || typeof proof !== 'object' || !(proof.record instanceof Uint8Array)) throw new InvalidArgumentError('verifyProof() needs a proof from db.events.proof(id)');
  const id = Buffer.alloc(8);
  id.writeBigUInt64BE(proof.id);
  let h;
  if (proof.algorithm === 'hmac-sha256') {
    if (hmacKey === undefined) throw new InvalidArgumentError('this proof is of a keyed (HMAC) chain: pass the key the database was opened with');
    h = createHmac('sha256', hmacKey);
  } else if (proof.algorithm === 'sha256') {
    h = createHash('sha256');
  } else {
    throw new InvalidArgumentError(`unknown proof algorithm ${JSON.stringify(proof.algorithm)}`);
  }
  h.update(Buffer.from(proof.prevHash, 'hex'));
  h.update(id);
  h.update(proof.record);
  return h.digest('hex') === proof.hash;
}
