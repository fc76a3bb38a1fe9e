/**
 * The optional packages replication uses, loaded only when a feature needs them:
 * `@nats-io/transport-node` and `@nats-io/jetstream` (the commit stream, replicas)
 * and `pg` (PostgreSQL projections). A missing one is a `MissingPackageError` naming it.
 */
import { MissingPackageError } from '../errors.js';

/** The NATS client modules. */
export interface NatsModules {
  transport: typeof import('@nats-io/transport-node');
  jetstream: typeof import('@nats-io/jetstream');
}

async function load<T>(name: string, feature: string, importer: () => Promise<T>): Promise<T> {
  try {
    return await importer();
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new MissingPackageError(`${feature} needs the package ${name}, which is not installed: npm install ${name}`, { cause: e });
    }
    throw e;
  }
}

/** Loads the NATS client (transport and JetStream). */
export async function loadNats(feature: string): Promise<NatsModules> {
  const transport = await load('@nats-io/transport-node', feature, () => import('@nats-io/transport-node'));
  const jetstream = await load('@nats-io/jetstream', feature, () => import('@nats-io/jetstream'));
  return { transport, jetstream };
}
