/**
 * Loads the native addon (the napi-rs generated loader picks the prebuilt
 * binary for this platform, or the one built locally by `npm run build:native`).
 * A platform without its addon gets a `NativeLoadError` naming the package to install.
 * The only module that names the addon: the rest of ts/ imports its values and types from here.
 * @internal
 */
import { createRequire } from 'node:module';
import type * as Binding from '../../native/node/binding.cjs';
import { NativeLoadError } from '../errors.js';

const require = createRequire(import.meta.url);

/**
 * The package root, from this file: dist/internal/native.js in the ESM build (ts/internal/native.ts
 * under vitest), dist/index.cjs in the CommonJS bundle, which inlines this file.
 */
const ROOT = import.meta.url.endsWith('.cjs') ? '../' : '../../';

/** The platform packages the release publishes, by napi-rs platform name. */
const PUBLISHED = new Set(['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl', 'darwin-arm64', 'win32-x64-msvc']);

/** The napi-rs platform name of this process: `linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`, ... @internal */
export function platformName(
  platform: NodeJS.Platform = process.platform,
  arch: string = process.arch,
  musl: () => boolean = isMusl,
): string {
  if (platform === 'linux') return `linux-${arch}-${musl() ? 'musl' : 'gnu'}`;
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

function isMusl(): boolean {
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return report?.header?.glibcVersionRuntime === undefined;
}

/**
 * The error for an addon that would not load: names the platform package and the
 * command that installs it, or says the platform is not supported. @internal
 */
export function nativeLoadError(cause: unknown, platform: string = platformName(), version: string = packageVersion()): NativeLoadError {
  const pkg = `athanor-${platform}`;
  const message = PUBLISHED.has(platform)
    ? `athanor's native addon for ${platform} could not be loaded: install the package ${pkg} (npm install ${pkg}@${version}). ` +
      'npm skips optional dependencies for other platforms, so a lockfile or node_modules made on another OS or CPU lacks it; ' +
      'from a clone of the repository, `npm run build` builds the addon instead.'
    : `athanor has no prebuilt addon for ${platform}: the supported platforms are ${[...PUBLISHED].join(', ')}; ` +
      'elsewhere build it from source (a clone of the repository, a Rust toolchain, `npm run build`).';
  return new NativeLoadError(message, { cause });
}

function packageVersion(): string {
  try {
    return (require(`${ROOT}package.json`) as { version: string }).version;
  } catch {
    return 'latest';
  }
}

function load(): typeof Binding {
  try {
    return require(`${ROOT}native/node/binding.cjs`) as typeof Binding;
  } catch (e) {
    throw nativeLoadError(e);
  }
}

/** The addon's exports. @internal */
export const native: typeof Binding = load();

export type NativeDb = Binding.NativeDb;
export type NativeSnapshot = Binding.NativeSnapshot;
export type NativeSql = Binding.NativeSql;
export type NativeDeadLetter = Binding.NativeDeadLetter;
export type NativeMigration = Binding.NativeMigration;
export type NativeCollection = Binding.NativeCollection;
export type NativeCollectionInfo = Binding.NativeCollectionInfo;
export type NativeEmbedder = Binding.NativeEmbedder;
export type NativeOpenOptions = Binding.NativeOpenOptions;
export type NativeNamespace = Binding.NativeNamespace;
