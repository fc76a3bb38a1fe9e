import { open } from 'lmdb';
import { Athanor, i64 } from '../dist/index.js';
import { rmSync } from 'node:fs';
rmSync('/tmp/rd1', { recursive: true, force: true }); rmSync('/tmp/rd2', { recursive: true, force: true });
const N = 10000, R = 1_000_000;
const db = await Athanor.open('/tmp/rd1', { durability: 'none' });
await db.transaction().execute((tx) => { for (let i = 0; i < N; i++) tx.set('key:' + i, i64(i)); });
const root = open({ path: '/tmp/rd2', compression: false });
const st = root.openDB('state');
await root.transaction(() => { for (let i = 0; i < N; i++) st.put('key:' + i, i); });
const keys = Array.from({ length: R }, (_, i) => 'key:' + ((i * 7919) % N));
for (let round = 0; round < 3; round++) {
  let t = performance.now(); let s = 0n;
  for (const k of keys) s += db.get(k).asI64();
  const ours = R / ((performance.now() - t) / 1000);
  t = performance.now(); let s2 = 0;
  for (const k of keys) s2 += st.get(k);
  const peer = R / ((performance.now() - t) / 1000);
  console.log(`ours ${ours.toFixed(0)}/s lmdb-js ${peer.toFixed(0)}/s ratio ${(ours / peer).toFixed(2)}`);
}
await db.close(); await root.close();
