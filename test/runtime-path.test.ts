// Where athanor finds ONNX Runtime: `runtimePath`, else ATHANOR_ORT_LIB, else the library inside
// the optional peer dependency onnxruntime-node. ONNX Runtime loads once per process, so each
// case runs in its own child process.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { bundledRuntimePath } from '../ts/embed/embed.js';
import { testModelDir } from '../scripts/test-model.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bundled = bundledRuntimePath();

/** Opens the test model in a fresh Node process; returns the runtime it used or the error code and message. */
function openInChild(env: Record<string, string | undefined>, runtimePath?: string): { runtime?: string; code?: string; message?: string } {
  const script = `
    const { Embedder } = await import(${JSON.stringify(join(root, 'dist', 'index.js'))});
    try {
      const e = await Embedder.open(${JSON.stringify(testModelDir())}, ${runtimePath === undefined ? '{}' : JSON.stringify({ runtimePath })});
      console.log(JSON.stringify({ runtime: e.runtimePath }));
      e.close();
    } catch (err) {
      console.log(JSON.stringify({ code: err.code, message: err.message }));
    }`;
  const childEnv: Record<string, string | undefined> = { ...process.env, ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete childEnv[k];
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: childEnv });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { runtime?: string; code?: string; message?: string };
}

describe.runIf(bundled !== undefined)('ONNX Runtime path resolution', () => {
  it('uses the bundled library of onnxruntime-node when nothing else is given', () => {
    expect(openInChild({ ATHANOR_ORT_LIB: undefined }).runtime).toBe(bundled);
  });

  it('uses ATHANOR_ORT_LIB over the bundled library, and names it when it is missing', () => {
    expect(openInChild({ ATHANOR_ORT_LIB: bundled }).runtime).toBe(bundled);
    const missing = openInChild({ ATHANOR_ORT_LIB: '/nonexistent/libonnxruntime.so.1' });
    expect(missing.code).toBe('ERR_RUNTIME');
    expect(missing.message).toContain('/nonexistent/libonnxruntime.so.1');
  });

  it('uses runtimePath over ATHANOR_ORT_LIB', () => {
    const r = openInChild({ ATHANOR_ORT_LIB: '/nonexistent/libonnxruntime.so.1' }, bundled);
    expect(r.runtime).toBe(bundled);
  });
});
