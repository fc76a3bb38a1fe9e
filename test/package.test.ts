// The package as users get it: CommonJS and ESM entries, the loader's error for a missing
// platform package, one version everywhere, and (on linux-x64) the packed tarballs installed
// into an empty project without Rust, running the smoke script (scripts/package-test.mjs --local).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { nativeLoadError, platformName } from '../ts/internal/native.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

describe('package', () => {
  it('require("athanor") gives the same API as import', async () => {
    const require = createRequire(join(root, 'package.json'));
    const cjs = require('athanor') as Record<string, unknown>;
    const esm = (await import(join(root, 'dist', 'index.js'))) as Record<string, unknown>;
    expect(Object.keys(cjs).sort()).toEqual(Object.keys(esm).sort());
    expect(typeof (cjs.Athanor as { open?: unknown }).open).toBe('function');
  });

  it('names the platform package to install when the addon cannot load', () => {
    const e = nativeLoadError(new Error('Cannot find module'), 'linux-x64-musl', '1.2.3');
    expect(e.code).toBe('ERR_NATIVE');
    expect(e.message).toContain('npm install athanor-linux-x64-musl@1.2.3');
    const unsupported = nativeLoadError(new Error('x'), 'freebsd-x64', '1.2.3');
    expect(unsupported.message).toContain('no prebuilt addon for freebsd-x64');
    expect(platformName('linux', 'arm64', () => true)).toBe('linux-arm64-musl');
    expect(platformName('win32', 'x64')).toBe('win32-x64-msvc');
    expect(platformName('darwin', 'arm64')).toBe('darwin-arm64');
  });

  it('has one version in every package, the Cargo workspace and the lockfile', () => {
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'set-version.mjs'), '--check'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it.runIf(process.platform === 'linux' && process.arch === 'x64')(
    'installs from the packed tarballs into an empty project without Rust and passes the smoke test',
    () => {
      const r = spawnSync(process.execPath, [join(root, 'scripts', 'package-test.mjs'), '--local'], { encoding: 'utf8', cwd: root });
      const out = `${r.stdout}\n${r.stderr}`;
      expect(out).toContain('smoke: ok');
      expect(out).toContain('missing platform package: ERR_NATIVE naming athanor-linux-x64-gnu');
      expect(r.status, out).toBe(0);
    },
    300_000,
  );
});
