#!/usr/bin/env node
/**
 * The athanor command line: a demo and a few operator tools over a database
 * directory. Argument parsing uses Node's built-in `util.parseArgs` (no dependency).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { defaultCacheDir } from './hub.js';
import { stringifyStrict } from './codec.js';
import { Athanor, AthanorError, Embedder, PreflightError, i64, type StoredEvent, type Value } from './index.js';

const DEFAULT_DIR = '.athanor-data';

const HELP = `athanor <command> [options]

Commands:
  demo                 run a small ledger against the data dir and print what happened
  stats                print counters of the database
  verify               check the canonical store's invariants
  get <key>            print one state value
  events               print events (--type, --from, --limit, --reverse)

Options:
  --dir <path>         database directory (default ${DEFAULT_DIR})
  --model <path>       demo: sentence-embedding model directory (default: the one
                       \`npm start\` fetches, <cache>/test-models/all-MiniLM-L6-v2-int8)
  --type <name>        only events of this type
  --from <id>          first event id
  --limit <n>          at most n events (default 20)
  --reverse            newest first
  -h, --help           this help
`;

function show(v: Value): string {
  const js = v.toJS();
  return `${v.type} ${typeof js === 'bigint' ? js.toString() : JSON.stringify(js, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x instanceof Set ? [...x] : x))}`;
}

function line(e: StoredEvent): string {
  const p = e.payload instanceof Uint8Array ? `<${e.payload.length} bytes>` : stringifyStrict(e.payload, 'payload');
  return `#${e.id} ${new Date(e.at).toISOString()} ${e.type} ${p}`;
}

async function demo(db: Athanor, modelDir: string | undefined): Promise<void> {
  const out = (s: string): void => void process.stdout.write(s + '\n');
  out(`athanor demo: a small ledger in ${db.dir}`);
  const opened = await db.transaction().execute(
    (tx) => {
      for (const who of ['alice', 'bob', 'carol']) {
        if (!tx.exists(`acct:${who}`)) {
          tx.set(`acct:${who}`, i64(1000n));
          tx.log('account.opened', { account: who, balance: 1000 });
        }
      }
    },
    { idempotencyKey: 'demo:open-accounts' },
  );
  out(`open accounts: ${opened.outcome} (commit ${opened.commitSeq}, ${opened.eventCount} events)`);

  const transfer = (from: string, to: string, amount: bigint, id: string) =>
    db.transaction()
      .requireMin(`acct:${from}`, amount)
      .execute(
        (tx) => {
          tx.update(`acct:${from}`, (v) => i64(v!.asI64() - amount));
          tx.update(`acct:${to}`, (v) => i64((v?.asI64() ?? 0n) + amount));
          tx.log('transfer', { from, to, amount: Number(amount) });
        },
        { idempotencyKey: id },
      );

  const runId = Date.now().toString(36);
  const first = await transfer('alice', 'bob', 100n, `demo:${runId}:1`);
  out(`transfer alice->bob 100: ${first.outcome}, event #${first.firstEventId}`);
  const again = await transfer('alice', 'bob', 100n, `demo:${runId}:1`);
  out(`same transfer retried with its idempotency key: ${again.outcome} (nothing applied twice)`);

  try {
    await transfer('carol', 'alice', 1_000_000n, `demo:${runId}:2`);
  } catch (e) {
    if (!(e instanceof PreflightError)) throw e;
    out(`overdraft refused before anything was written: ${e.code} (${e.message})`);
  }

  const results = await Promise.all(
    Array.from({ length: 50 }, (_, i) => transfer(i % 2 ? 'bob' : 'carol', 'alice', 1n, `demo:${runId}:c${i}`)),
  );
  const retried = results.filter((r) => r.attempts > 1).length;
  out(`50 concurrent transfers: all applied, ${retried} retried after an optimistic conflict, group-committed`);

  for (const who of ['alice', 'bob', 'carol']) out(`  acct:${who} = ${db.get(`acct:${who}`).asI64()}`);
  const total = ['alice', 'bob', 'carol'].reduce((n, w) => n + db.get(`acct:${w}`).asI64(), 0n);
  out(`  total = ${total} (money is conserved)`);

  // A SQL read model derived from the events, exactly once, by a TS handler and by a
  // declarative projection run in Rust.
  db.migrations.add({
    version: 1,
    name: 'demo_read_models',
    up: 'CREATE TABLE flows (account TEXT PRIMARY KEY, sent INTEGER NOT NULL DEFAULT 0, received INTEGER NOT NULL DEFAULT 0);' +
      'CREATE TABLE transfers (event_id INTEGER PRIMARY KEY, src TEXT NOT NULL, dst TEXT NOT NULL, amount INTEGER NOT NULL)',
    down: 'DROP TABLE flows; DROP TABLE transfers',
  });
  const applied = db.migrations.run();
  out(`projection.db schema version ${db.migrations.schemaVersion()} (${applied.length} migration(s) applied now)`);
  const flow = db.sql.prepare(
    'INSERT INTO flows (account, sent, received) VALUES (?, ?, ?) ' +
      'ON CONFLICT(account) DO UPDATE SET sent = sent + excluded.sent, received = received + excluded.received',
  );
  const flows = db
    .processor('demo.flows')
    .on<{ from: string; to: string; amount: number }>('transfer', (_sql, e) => {
      flow.run(e.payload.from, e.payload.amount, 0);
      flow.run(e.payload.to, 0, e.payload.amount);
    })
    .build();
  const caught = await flows.catchUp();
  const audit = db.projection({
    name: 'demo.transfers',
    on: { transfer: { sql: 'INSERT INTO transfers VALUES (?, ?, ?, ?)', params: ['@id', '$.from', '$.to', '$.amount'] } },
  });
  await audit.catchUp();
  out(`processor demo.flows applied ${caught.processed} new event(s), cursor at #${flows.cursor()}:`);
  for (const r of db.sql.all<{ account: string; sent: number; received: number }>('SELECT * FROM flows ORDER BY account')) {
    out(`  ${r.account}: sent ${r.sent}, received ${r.received}`);
  }
  const [t] = await db.query<{ n: number; total: number }>('SELECT count(*) AS n, sum(amount) AS total FROM transfers');
  out(`declarative projection demo.transfers: ${t!.n} rows, ${t!.total} moved in all (read off the main thread)`);
  await flows.close();
  await audit.close();

  // Vectors written in the same commit as state and an event, then searched.
  const notes = db.vectors.create<{ account: string }>('demo.notes', { dimension: 4, metric: 'cosine' });
  await db.transaction().execute((tx) => {
    tx.vectors<{ account: string }>('demo.notes').upsert('alice', new Float32Array([0.9, 0.1, 0, 0]), { account: 'alice' });
    tx.vectors<{ account: string }>('demo.notes').upsert('bob', new Float32Array([0.1, 0.9, 0.1, 0]), { account: 'bob' });
    tx.vectors<{ account: string }>('demo.notes').upsert('carol', new Float32Array([0, 0.2, 0.9, 0.1]), { account: 'carol' });
    tx.log('notes.embedded', { count: 3 });
  });
  const hits = notes.search(new Float32Array([1, 0.2, 0, 0]), { k: 2 });
  out(`vector search in demo.notes (${notes.count()} documents): ` + hits.map((h) => `${h.id} ${h.score.toFixed(3)}`).join(', '));

  await textDemo(db, modelDir, out);

  out('newest events:');
  for (const e of db.events.tail(3)) out(`  ${line(e)}`);
  const { events } = db.verify();
  out(`verify: ok (${events} events, ids dense, type index consistent)`);
}

/** Local embeddings: memos logged as events, embedded by a vector projection, searched by meaning. */
async function textDemo(db: Athanor, modelDir: string | undefined, out: (s: string) => void): Promise<void> {
  const dir = modelDir ?? path.join(defaultCacheDir(), 'test-models', 'all-MiniLM-L6-v2-int8');
  if (!fs.existsSync(path.join(dir, 'model.onnx'))) {
    out(`text search skipped: no model at ${dir} (\`npm start\` fetches one; or pass --model <dir>)`);
    return;
  }
  const embedder = await Embedder.open(dir);
  try {
    out(`embedder: ${path.basename(dir)} on ${embedder.provider}, ${embedder.dimension} dimensions`);
    const memos = [
      ['alice', 'rent for the flat in November'],
      ['bob', 'coffee beans and a new grinder'],
      ['carol', 'two tickets for the jazz concert'],
      ['alice', 'electricity and water bill'],
      ['bob', 'birthday present for my sister'],
    ] as const;
    const logged = await db.transaction().execute(
      (tx) => {
        for (const [account, text] of memos) tx.log('memo.added', { account, text });
      },
      { idempotencyKey: 'demo:memos' },
    );
    out(`memos logged as events: ${logged.outcome}`);
    const memoVectors = db.vectorProjection<{ account: string }>({
      name: 'demo.memo-vectors',
      collection: 'demo.memos',
      embedder,
      on: { 'memo.added': { text: '$.text', metadata: { account: '$.account' } } },
    });
    const r = await memoVectors.catchUp();
    out(`vector projection demo.memo-vectors read ${r.processed} new event(s), embedding the memos into demo.memos, cursor at #${memoVectors.cursor()}`);
    const col = db.vectors.open<{ account: string }>('demo.memos', { embedder });
    for (const q of ['paying for the apartment', 'music night out']) {
      const [best] = await col.searchText(q, 1);
      const ev = best === undefined ? undefined : [...db.events.read({ from: BigInt(best.id), to: BigInt(best.id) })][0];
      out(`  searchText(${JSON.stringify(q)}) -> event #${best?.id} ${JSON.stringify((ev?.payload as { text?: string } | undefined)?.text)} (score ${best?.score.toFixed(3)})`);
    }
    await memoVectors.close();
  } finally {
    embedder.close();
  }
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      dir: { type: 'string', default: DEFAULT_DIR },
      model: { type: 'string' },
      type: { type: 'string' },
      from: { type: 'string' },
      limit: { type: 'string', default: '20' },
      reverse: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help || command === undefined) {
    process.stdout.write(HELP);
    return command === undefined && !values.help ? 1 : 0;
  }
  const db = await Athanor.open(values.dir);
  try {
    switch (command) {
      case 'demo':
        await demo(db, values.model);
        return 0;
      case 'stats': {
        const s = db.stats();
        process.stdout.write(`dir ${db.dir}\ncommitSeq ${s.commitSeq}\nlastEventId ${s.lastEventId}\nmapSize ${s.mapSize}\n`);
        return 0;
      }
      case 'verify':
        process.stdout.write(`ok: ${db.verify().events} events\n`);
        return 0;
      case 'get': {
        const key = rest[0];
        if (key === undefined) throw new Error('usage: athanor get <key>');
        const v = db.getOpt(key);
        process.stdout.write(v === undefined ? '(absent)\n' : show(v) + '\n');
        return v === undefined ? 2 : 0;
      }
      case 'events': {
        const limit = Number(values.limit);
        for (const e of db.events.read({ type: values.type, from: values.from ? BigInt(values.from) : undefined, limit, reverse: values.reverse })) {
          process.stdout.write(line(e) + '\n');
        }
        return 0;
      }
      default:
        process.stderr.write(`unknown command ${command}\n${HELP}`);
        return 1;
    }
  } finally {
    await db.close();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`${e instanceof AthanorError ? `${e.code}: ` : ''}${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
