#!/usr/bin/env node
/**
 * The athanor command line: a demo and a few operator tools over a database
 * directory. Arguments are parsed by Node's own `util.parseArgs` (strict, per command),
 * which covers what these few commands need without a dependency.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { defaultCacheDir } from './hub.js';
import { stringifyStrict } from './codec.js';
import { Athanor, AthanorError, Embedder, PreflightError, i64, type StoredEvent, type Value } from './index.js';

const DEFAULT_DIR = '.athanor-data';

/** Exit codes: 0 done, 1 the command failed, 2 the command line was wrong. */
const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

const HELP = `athanor <command> [dir] [options]

Commands:
  demo [dir]           run a small ledger in dir (created if needed) and print what happened
  stats [dir]          print counters of an existing database
  verify [dir]         check an existing database (--deep: in a child process)
  get <key> [dir]      print one state value
  events [dir]         print events (--type, --from, --limit, --reverse)

dir is a positional argument or --dir <path> (default ${DEFAULT_DIR}). Only demo
creates a database; the other commands fail on a directory that holds none.
\`athanor <command> --help\` describes one command. Exit codes: 0 ok, 1 failure, 2 usage.
`;

type OptionSpec = { type: 'string' | 'boolean'; short?: string; default?: string | boolean };

/** One command: its usage text, its options, how many positionals precede `dir`. */
interface CommandSpec {
  usage: string;
  options: Record<string, OptionSpec>;
  /** Names of the positionals that come before the optional dir. */
  args: readonly string[];
}

const DIR_OPTION = { dir: { type: 'string' } } as const satisfies Record<string, OptionSpec>;

const COMMANDS: Record<string, CommandSpec> = {
  demo: {
    usage: `athanor demo [dir] [--dir <path>] [--model <path>]

Runs a small ledger against dir (default ${DEFAULT_DIR}; created if needed) and prints
what happened. --model names a sentence-embedding model directory (default: the one
\`npm start\` fetches, <cache>/test-models/all-MiniLM-L6-v2-int8).
`,
    options: { ...DIR_OPTION, model: { type: 'string' } },
    args: [],
  },
  stats: {
    usage: `athanor stats [dir] [--dir <path>]

Prints the counters of the database in dir (default ${DEFAULT_DIR}); creates nothing.
`,
    options: { ...DIR_OPTION },
    args: [],
  },
  verify: {
    usage: `athanor verify [dir] [--dir <path>] [--deep]

Checks the database in dir (default ${DEFAULT_DIR}): the store's pages and invariants,
projection.db and the index dumps. --deep runs the check in a child process, so damage
LMDB cannot read safely is reported (ERR_CORRUPT) instead of crashing. Creates nothing.
Exit code 0 when the database is intact, 1 otherwise.
`,
    options: { ...DIR_OPTION, deep: { type: 'boolean', default: false } },
    args: [],
  },
  get: {
    usage: `athanor get <key> [dir] [--dir <path>]

Prints the state value of key in the database in dir (default ${DEFAULT_DIR}).
Exit code 1 when the key is absent.
`,
    options: { ...DIR_OPTION },
    args: ['key'],
  },
  events: {
    usage: `athanor events [dir] [--dir <path>] [--type <name>] [--from <id>] [--limit <n>] [--reverse]

Prints events of the database in dir (default ${DEFAULT_DIR}): only those of --type,
from event id --from, at most --limit (default 20), newest first with --reverse.
`,
    options: { ...DIR_OPTION, type: { type: 'string' }, from: { type: 'string' }, limit: { type: 'string', default: '20' }, reverse: { type: 'boolean', default: false } },
    args: [],
  },
};

/** A command line that cannot run: printed with the command's usage, exit code 2. */
class UsageError extends Error {}

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

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(HELP);
    return command === undefined ? EXIT_USAGE : EXIT_OK;
  }
  const spec = COMMANDS[command];
  if (spec === undefined) throw new UsageError(`unknown command ${JSON.stringify(command)}; the commands are ${Object.keys(COMMANDS).join(', ')}`);
  let parsed;
  try {
    parsed = parseArgs({ args: [...rest], allowPositionals: true, strict: true, options: { ...spec.options, help: { type: 'boolean', short: 'h', default: false } } });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n\n${spec.usage}`);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values.help === true) {
    process.stdout.write(spec.usage);
    return EXIT_OK;
  }
  const positionals = parsed.positionals;
  if (positionals.length < spec.args.length) throw new UsageError(`missing <${spec.args[positionals.length]}>\n\n${spec.usage}`);
  if (positionals.length > spec.args.length + 1) throw new UsageError(`too many arguments: ${positionals.slice(spec.args.length + 1).join(' ')}\n\n${spec.usage}`);
  const positionalDir = positionals[spec.args.length];
  const optionDir = values.dir as string | undefined;
  if (positionalDir !== undefined && optionDir !== undefined && path.resolve(positionalDir) !== path.resolve(optionDir)) {
    throw new UsageError(`two directories given (${positionalDir} and --dir ${optionDir}); give one`);
  }
  const dir = positionalDir ?? optionDir ?? DEFAULT_DIR;
  const str = (name: string): string | undefined => values[name] as string | undefined;

  let limit = 20;
  let from: bigint | undefined;
  if (command === 'events') {
    limit = Number(str('limit'));
    if (!Number.isSafeInteger(limit) || limit < 1) throw new UsageError(`--limit must be a positive integer, got ${str('limit')}`);
    const f = str('from');
    if (f !== undefined) {
      if (!/^\d+$/.test(f)) throw new UsageError(`--from must be an event id (a non-negative integer), got ${f}`);
      from = BigInt(f);
    }
  }

  // Only the demo creates a database: the other commands inspect one that must exist.
  const db = await Athanor.open(dir, { create: command === 'demo' });
  try {
    switch (command) {
      case 'demo':
        await demo(db, str('model'));
        return EXIT_OK;
      case 'stats': {
        const s = db.stats();
        process.stdout.write(`dir ${db.dir}\ncommitSeq ${s.commitSeq}\nlastEventId ${s.lastEventId}\nmapSize ${s.mapSize}\n`);
        return EXIT_OK;
      }
      case 'verify': {
        const { events } = values.deep === true ? await db.verify({ deep: true }) : db.verify();
        process.stdout.write(`ok: ${db.dir}, ${events} events\n`);
        return EXIT_OK;
      }
      case 'get': {
        const key = positionals[0]!;
        const v = db.getOpt(key);
        process.stdout.write(v === undefined ? '(absent)\n' : show(v) + '\n');
        return v === undefined ? EXIT_FAILURE : EXIT_OK;
      }
      case 'events': {
        for (const e of db.events.read({ type: str('type'), from, limit, reverse: values.reverse === true })) {
          process.stdout.write(line(e) + '\n');
        }
        return EXIT_OK;
      }
      default:
        throw new UsageError(`unknown command ${command}`);
    }
  } finally {
    await db.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    // One line (plus usage for a wrong command line), never a stack trace.
    const usage = e instanceof UsageError;
    const text = e instanceof AthanorError ? `${e.code}: ${e.message}` : e instanceof Error ? e.message : String(e);
    process.stderr.write(`athanor: ${text}\n`);
    process.exit(usage ? EXIT_USAGE : EXIT_FAILURE);
  },
);
