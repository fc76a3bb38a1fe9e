/**
 * Loads the native addon (the napi-rs generated loader picks the prebuilt
 * binary for this platform, or the one built locally by `npm run build:native`).
 * @internal
 */
import { createRequire } from 'node:module';
import type * as Binding from '../native/node/binding.cjs';

const require = createRequire(import.meta.url);

/** The addon's exports. @internal */
export const native: typeof Binding = require('../native/node/binding.cjs') as typeof Binding;

export type NativeDb = Binding.NativeDb;
export type NativeSnapshot = Binding.NativeSnapshot;
