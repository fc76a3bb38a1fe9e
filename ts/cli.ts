#!/usr/bin/env node
/**
 * The athanor command line: a demo and a few operator tools over a database
 * directory. Arguments are parsed by Node's own `util.parseArgs` (strict, per command),
 * which covers what these few commands need without a dependency.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { defaultCacheDir } from './embed/hub.js';
import { stringifyStrict } from './internal/json.js';
import { INTERNAL } from './state/reserved.js';
import { checkNamespaceName } from './state/namespaces.js';
import { Athanor, AthanorError, Embedder, PreflightError, i64, type BackupProgress, type StoredEvent, type Value } from './index.js';

const DEFAULT_DIR = '.athanor-data';

/** Exit codes: 0 done, 1 the command failed, 2 the command line was wrong. */
const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

const HELP = `athanor <command> [dir] [options]

Commands:
  demo [dir]                 run a small ledger in dir (created if needed) and print what happened
  init [dir]                 create a new, empty database in dir
  stats [dir]                print counters of an existing database
  verify [dir]               check an existing database (--deep: in a child process)
  get <key> [dir]            print one state value (also: state get <key>)
  state list [dir]           print state entries in key order (--prefix, --after, --limit)
  events [list] [dir]        print events (--type, --from, --limit, --reverse)
  events get <id> [dir]      print one event
  events tail [dir] [-f]     print the newest events; -f follows new commits until Ctrl-C
  query <sql> [dir]          run a read-only SQL query on projection.db
  namespaces [dir]           print the namespaces (get, state, events, query take --namespace <name>)
  metrics [dir]              print db.metrics() (--prometheus: the Prometheus text)
  migrate status [dir]       print the applied projection.db migrations (and pending, with --migrations)
  migrate up [dir]           apply the pending migrations of a --migrations folder
  migrate down [dir]         roll back the newest migration (--to <version>: down to it)
  schedule list [dir]        print the scheduled tasks
  schedule history <task>    print a task's runs
  schedule pause <task>      pause a task (resume <task> runs it again)
  dlq list <processor> [dir] print a processor's dead letters
  dlq retry <processor>      run dead letters through the handlers of --handlers <module> again
  dlq remove <processor>     delete dead letters without applying them (--event <id> or --all)
  backup <target> [dir]      take an online backup into target (--compress, --key-file)
  restore <backup> <target>  restore a backup into target (--overwrite, --key-file)

dir is a positional argument or --dir <path> (default ${DEFAULT_DIR}). Only demo and
init create a database (restore writes its target); the other commands fail on a
directory that holds none. Inspecting commands take --json (bigints as strings).
\`athanor <command> --help\` describes one command. Exit codes: 0 ok, 1 failure, 2 usage.
`;

type OptionSpec = { type: 'string' | 'boolean'; short?: string; default?: string | boolean };

/** One command: its usage text, its options, how many positionals precede `dir`. */
interface CommandSpec {
  usage: string;
  options: Record<string, OptionSpec>;
  /** Names of the positionals that come before the optional dir. */
  args: readonly string[];
  /** The command takes no database directory (restore names its own). */
  noDir?: boolean;
}

const DIR_OPTION = { dir: { type: 'string' } } as const satisfies Record<string, OptionSpec>;
const JSON_OPTION = { json: { type: 'boolean', default: false } } as const satisfies Record<string, OptionSpec>;
const INSPECT = { ...DIR_OPTION, ...JSON_OPTION };
/** The reading commands' options: these read one namespace with --namespace. */
const SCOPED = { ...INSPECT, namespace: { type: 'string' } } as const satisfies Record<string, OptionSpec>;
const SCOPED_NOTE = `--namespace <name> reads that namespace (db.namespace(name)) instead of the database's own data.
`;
const EVENT_FILTERS = { type: { type: 'string' }, from: { type: 'string' }, limit: { type: 'string', default: '20' }, reverse: { type: 'boolean', default: false } } as const satisfies Record<string, OptionSpec>;

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
  init: {
    usage: `athanor init [dir] [--dir <path>] [--json]

Creates a new, empty database in dir (default ${DEFAULT_DIR}). Fails (exit 1) when dir
exists and is not empty.
`,
    options: { ...INSPECT },
    args: [],
  },
  stats: {
    usage: `athanor stats [dir] [--dir <path>] [--json]

Prints the counters of the database in dir (default ${DEFAULT_DIR}); creates nothing.
`,
    options: { ...INSPECT },
    args: [],
  },
  verify: {
    usage: `athanor verify [dir] [--dir <path>] [--deep] [--json]

Checks the database in dir (default ${DEFAULT_DIR}): the store's pages and invariants,
projection.db (processor cursors and dead letters within the log) and the index dumps,
and prints the counts and every violation found (--json: the whole report). --deep runs
the check in a child process, so damage LMDB cannot read safely is reported
(ERR_CORRUPT) instead of crashing. The event log's hash chain, when the database has
one, is checked link by link (a keyed chain needs its key in ATHANOR_HMAC_KEY).
Creates nothing. Exit code 0 when the database is intact, 1 otherwise.
`,
    options: { ...INSPECT, deep: { type: 'boolean', default: false } },
    args: [],
  },
  get: {
    usage: `athanor get <key> [dir] [--dir <path>] [--namespace <name>] [--json]

Prints the state value of key in the database in dir (default ${DEFAULT_DIR}).
Exit code 1 when the key is absent.
${SCOPED_NOTE}`,
    options: { ...SCOPED },
    args: ['key'],
  },
  'state get': {
    usage: `athanor state get <key> [dir] [--dir <path>] [--namespace <name>] [--json]

Prints the state value of key (the same as \`athanor get\`). Exit code 1 when the key is absent.
${SCOPED_NOTE}`,
    options: { ...SCOPED },
    args: ['key'],
  },
  'state list': {
    usage: `athanor state list [dir] [--dir <path>] [--prefix <p>] [--after <key>] [--limit <n>] [--namespace <name>] [--json]

Prints state entries of the database in dir in key order (UTF-8 byte order): only keys
starting with --prefix, after the key --after (to page on from the last key printed),
at most --limit (default 100, at most 100000). With --json, one JSON object per line.
${SCOPED_NOTE}`,
    options: { ...SCOPED, prefix: { type: 'string', default: '' }, after: { type: 'string' }, limit: { type: 'string', default: '100' } },
    args: [],
  },
  'events list': {
    usage: `athanor events [list] [dir] [--dir <path>] [--type <name>] [--from <id>] [--limit <n>] [--reverse] [--namespace <name>] [--json]

Prints events of the database in dir (default ${DEFAULT_DIR}): only those of --type,
from event id --from, at most --limit (default 20), newest first with --reverse.
${SCOPED_NOTE}`,
    options: { ...SCOPED, ...EVENT_FILTERS },
    args: [],
  },
  'events get': {
    usage: `athanor events get <id> [dir] [--dir <path>] [--namespace <name>] [--json]

Prints the event with id <id>. Exit code 1 when there is none.
${SCOPED_NOTE}`,
    options: { ...SCOPED },
    args: ['id'],
  },
  'events tail': {
    usage: `athanor events tail [dir] [--dir <path>] [--limit <n>] [-f|--follow] [--namespace <name>] [--json]

Prints the newest --limit (default 10) events, oldest first. With -f, keeps printing
each new event as commits land (from this or any other process) until Ctrl-C.
${SCOPED_NOTE}`,
    options: { ...SCOPED, limit: { type: 'string', default: '10' }, follow: { type: 'boolean', short: 'f', default: false } },
    args: [],
  },
  query: {
    usage: `athanor query <sql> [dir] [--dir <path>] [--namespace <name>] [--json]

Runs one read-only SQL statement on projection.db of the database in dir (through
db.query, on a read-only connection) and prints the rows (tab-separated, with a header).
${SCOPED_NOTE}`,
    options: { ...SCOPED },
    args: ['sql'],
  },
  namespaces: {
    usage: `athanor namespaces [dir] [--dir <path>] [--json]

Prints the namespaces of the database in dir (default ${DEFAULT_DIR}): name, id, when
it was created and its labels. Read one with --namespace <name> on get, state, events
and query.
`,
    options: { ...INSPECT },
    args: [],
  },
  metrics: {
    usage: `athanor metrics [dir] [--dir <path>] [--prometheus | --json]

Prints db.metrics() of a handle opened on dir: store sizes and heads, processors'
cursors, lag and dead letters, scheduler runs, vector index sizes. Counters of commits
are this short-lived handle's own, so they read zero. --prometheus prints the text
exposition.
`,
    options: { ...INSPECT, prometheus: { type: 'boolean', default: false } },
    args: [],
  },
  'migrate status': {
    usage: `athanor migrate status [dir] [--dir <path>] [--migrations <folder>] [--json]

Prints the schema version of projection.db and the migrations applied to it. With
--migrations (a folder of NNNN_name.sql and NNNN_name.down.sql files, as
db.migrations.loadDir() reads), also the pending ones.
`,
    options: { ...INSPECT, migrations: { type: 'string' } },
    args: [],
  },
  'migrate up': {
    usage: `athanor migrate up [dir] --migrations <folder> [--dir <path>] [--json]

Applies the pending migrations of --migrations (NNNN_name.sql files) to projection.db,
each in its own transaction, in version order; stops at the first that fails (exit 1).
Refuses to run when an applied migration's file changed (drift).
`,
    options: { ...INSPECT, migrations: { type: 'string' } },
    args: [],
  },
  'migrate down': {
    usage: `athanor migrate down [dir] --migrations <folder> [--to <version>] [--dir <path>] [--json]

Rolls back the newest applied migration with its NNNN_name.down.sql step; with --to,
every migration above that version (0: all), all in one transaction or none.
`,
    options: { ...INSPECT, migrations: { type: 'string' }, to: { type: 'string' } },
    args: [],
  },
  'schedule list': {
    usage: `athanor schedule list [dir] [--dir <path>] [--json]

Prints every stored scheduled task: schedule, next run, paused, last run.
`,
    options: { ...INSPECT },
    args: [],
  },
  'schedule history': {
    usage: `athanor schedule history <task> [dir] [--dir <path>] [--limit <n>] [--json]

Prints a task's runs, newest first (at most --limit, default 50).
`,
    options: { ...INSPECT, limit: { type: 'string', default: '50' } },
    args: ['task'],
  },
  'schedule pause': {
    usage: `athanor schedule pause <task> [dir] [--dir <path>] [--json]

Pauses a stored task: no scheduler runs it until \`schedule resume\`.
`,
    options: { ...INSPECT },
    args: ['task'],
  },
  'schedule resume': {
    usage: `athanor schedule resume <task> [dir] [--dir <path>] [--json]

Resumes a paused task; occurrences missed meanwhile follow its missed-run policy.
`,
    options: { ...INSPECT },
    args: ['task'],
  },
  'dlq list': {
    usage: `athanor dlq list <processor> [dir] [--dir <path>] [--limit <n>] [--json]

Prints the dead letters of a processor (events its handler failed on), oldest first,
read from projection.db; the processor's handlers are not needed.
`,
    options: { ...INSPECT, limit: { type: 'string', default: '100' } },
    args: ['processor'],
  },
  'dlq retry': {
    usage: `athanor dlq retry <processor> [dir] --handlers <module> (--event <id> | --all) [--dir <path>] [--json]

Runs dead letters of <processor> through its handlers again: the one of event --event,
or every one with --all, oldest first. The handlers are the application's code:
--handlers names an ES module whose default export is a function (db) => processor(s),
e.g. \`export default (db) => db.processor('orders').on('placed', handle).build()\`.
A dead letter whose retry succeeds is removed with its effects applied; one that fails
again stays (its attempts counted). Exit code 1 when any retry failed.
`,
    options: { ...INSPECT, handlers: { type: 'string' }, event: { type: 'string' }, all: { type: 'boolean', default: false } },
    args: ['processor'],
  },
  'dlq remove': {
    usage: `athanor dlq remove <processor> [dir] (--event <id> | --all) [--dir <path>] [--json]

Deletes the dead letter of event --event of <processor>, or all of its dead letters with
--all, without applying them. Exit code 1 when --event names no dead letter.
`,
    options: { ...INSPECT, event: { type: 'string' }, all: { type: 'boolean', default: false } },
    args: ['processor'],
  },
  backup: {
    usage: `athanor backup <target> [dir] [--dir <path>] [--compress] [--key-file <path>] [--json]

Takes an online backup of the database in dir into target (new or empty). --compress
zstd-compresses it; --key-file names a file holding a 32-byte key (raw, or 64 hex digits)
to encrypt it with AES-256-GCM. Keys are never taken on the command line.
`,
    options: { ...INSPECT, compress: { type: 'boolean', default: false }, 'key-file': { type: 'string' } },
    args: ['target'],
  },
  restore: {
    usage: `athanor restore <backup> <target> [--overwrite] [--key-file <path>] [--json]

Checks the backup in <backup> and restores it into <target>, which must be empty unless
--overwrite. --key-file names the file with the key of an encrypted backup.
`,
    options: { ...JSON_OPTION, overwrite: { type: 'boolean', default: false }, 'key-file': { type: 'string' } },
    args: ['backup', 'target'],
    noDir: true,
  },
};

/** Commands made of a group and a subcommand; `events` alone means `events list`. */
const GROUPS: Record<string, { subs: readonly string[]; default?: string }> = {
  events: { subs: ['list', 'get', 'tail'], default: 'list' },
  state: { subs: ['get', 'list'] },
  migrate: { subs: ['status', 'up', 'down'] },
  schedule: { subs: ['list', 'history', 'pause', 'resume'] },
  dlq: { subs: ['list', 'retry', 'remove'] },
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

/** JSON text of any result: bigints as strings, Sets as arrays, byte arrays as their length. */
function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, x: unknown) =>
    typeof x === 'bigint' ? x.toString() : x instanceof Set ? [...x] : x instanceof Uint8Array ? { bytes: x.length } : x,
  );
}

/** Colours only for a terminal, and never with NO_COLOR set (https://no-color.org). */
const COLOUR = process.stdout.isTTY === true && (process.env.NO_COLOR ?? '') === '';
const paint = (code: number) => (s: string): string => (COLOUR ? `\u001b[${code}m${s}\u001b[0m` : s);
const dim = paint(2);
const bold = paint(1);
const green = paint(32);

function out(s: string): void {
  process.stdout.write(s + '\n');
}

function eventJson(e: StoredEvent): Record<string, unknown> {
  return { id: e.id, at: new Date(e.at).toISOString(), type: e.type, commitSeq: e.commitSeq, payload: e.payload };
}

function showEvent(e: StoredEvent, json: boolean): string {
  if (json) return toJson(eventJson(e));
  const [id, at, ...rest] = line(e).split(' ');
  return `${bold(id!)} ${dim(at!)} ${rest.join(' ')}`;
}

/** `path value` lines of a nested object, for the text form of metrics. */
function flatten(value: unknown, prefix: string, into: string[]): string[] {
  if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix === '' ? k : `${prefix}.${k}`, into);
  } else {
    into.push(`${prefix} ${typeof value === 'bigint' ? value.toString() : JSON.stringify(value)}`);
  }
  return into;
}

function positiveInt(name: string, text: string | undefined): number {
  const n = Number(text);
  if (text === undefined || !/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive integer, got ${text}`);
  return n;
}

function eventId(name: string, text: string): bigint {
  if (!/^\d+$/.test(text)) throw new UsageError(`${name} must be an event id (a non-negative integer), got ${text}`);
  return BigInt(text);
}

/** The encryption key in `file`: 32 raw bytes, or 64 hex digits (surrounding whitespace ignored). */
function readKey(file: string): Uint8Array {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new Error(`cannot read --key-file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (bytes.length === 32) return new Uint8Array(bytes);
  const text = bytes.toString('utf8').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return new Uint8Array(Buffer.from(text, 'hex'));
  throw new Error(`--key-file ${file} must hold a 32-byte key: 32 raw bytes or 64 hex digits`);
}

/** A one-line progress display on a terminal (stderr), nothing otherwise. */
function progress(json: boolean): { onProgress?: (p: BackupProgress) => void; done: () => void } {
  if (json || process.stderr.isTTY !== true) return { done: () => {} };
  let shown = false;
  return {
    onProgress: (p) => {
      shown = true;
      process.stderr.write(`\r\u001b[2K${p.phase} ${p.filesDone}/${p.totalFiles}`);
    },
    done: () => {
      if (shown) process.stderr.write('\r\u001b[2K');
    },
  };
}

/** Prints the newest events, then (with follow) each new one until SIGINT/SIGTERM. */
async function tail(db: Athanor, limit: number, follow: boolean, json: boolean): Promise<void> {
  let printed = 0n;
  const printFrom = (from: bigint): void => {
    for (const e of db.events.read({ from })) {
      out(showEvent(e, json));
      printed = e.id;
    }
  };
  // Subscribe before the first read, so a commit landing in between is not missed.
  let wake: (() => void) | undefined;
  const unsubscribe = follow ? db.events.subscribe(() => wake?.()) : undefined;
  try {
    for (const e of [...db.events.read({ reverse: true, limit })].reverse()) {
      out(showEvent(e, json));
      printed = e.id;
    }
    if (!follow) return;
    if (process.stderr.isTTY === true) process.stderr.write(dim('following new events; Ctrl-C to stop') + '\n');
    await new Promise<void>((resolve) => {
      // The file watcher behind subscribe() does not hold the process open; this does.
      const keepAlive = setInterval(() => {}, 1 << 30);
      const stop = (): void => {
        clearInterval(keepAlive);
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        resolve();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      wake = () => printFrom(printed + 1n);
      wake();
    });
  } finally {
    unsubscribe?.();
  }
}

/** Splits `group sub ...` into the command's key and the rest of the line. */
function resolveCommand(command: string, rest: readonly string[]): [string, readonly string[]] {
  const group = GROUPS[command];
  if (group === undefined) return [command, rest];
  const sub = rest[0];
  if (sub !== undefined && group.subs.includes(sub)) return [`${command} ${sub}`, rest.slice(1)];
  if (sub === '-h' || sub === '--help') return [command, rest];
  // `events <dir>` predates the subcommands: a word that is none of them is the directory.
  if (group.default !== undefined) return [`${command} ${group.default}`, rest];
  throw new UsageError(`${command} needs one of: ${group.subs.join(', ')}${sub === undefined ? '' : `; got ${JSON.stringify(sub)}`}\n\n${groupUsage(command)}`);
}

function groupUsage(group: string): string {
  return Object.entries(COMMANDS)
    .filter(([k]) => k.startsWith(group + ' '))
    .map(([, c]) => c.usage.split('\n')[0])
    .join('\n') + '\n';
}

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...afterCommand] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(HELP);
    return command === undefined ? EXIT_USAGE : EXIT_OK;
  }
  const known = [...new Set(Object.keys(COMMANDS).map((k) => k.split(' ')[0]!))];
  if (!known.includes(command)) throw new UsageError(`unknown command ${JSON.stringify(command)}; the commands are ${known.join(', ')}`);
  const [key, rest] = resolveCommand(command, afterCommand);
  const spec = COMMANDS[key];
  if (spec === undefined) {
    // A group asked for its help without a subcommand.
    process.stdout.write(groupUsage(command));
    return EXIT_OK;
  }
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
  const maxPositionals = spec.args.length + (spec.noDir === true ? 0 : 1);
  if (positionals.length < spec.args.length) throw new UsageError(`missing <${spec.args[positionals.length]}>\n\n${spec.usage}`);
  if (positionals.length > maxPositionals) throw new UsageError(`too many arguments: ${positionals.slice(maxPositionals).join(' ')}\n\n${spec.usage}`);
  const positionalDir = positionals[spec.args.length];
  const optionDir = values.dir as string | undefined;
  if (positionalDir !== undefined && optionDir !== undefined && path.resolve(positionalDir) !== path.resolve(optionDir)) {
    throw new UsageError(`two directories given (${positionalDir} and --dir ${optionDir}); give one`);
  }
  const dir = positionalDir ?? optionDir ?? DEFAULT_DIR;
  const str = (name: string): string | undefined => values[name] as string | undefined;
  const json = values.json === true;
  const arg = (i: number): string => positionals[i]!;

  // Every check of the command line comes before anything is opened or written.
  let limit = 20;
  let from: bigint | undefined;
  let id: bigint | undefined;
  if (key === 'events list' || key === 'events tail' || key === 'schedule history' || key === 'dlq list' || key === 'state list') limit = positiveInt('limit', str('limit'));
  if (key === 'state list' && limit > 100_000) throw new UsageError(`--limit must be at most 100000, got ${limit}\n\n${spec.usage}`);
  if ((key === 'migrate up' || key === 'migrate down') && str('migrations') === undefined) throw new UsageError(`${key} needs --migrations <folder>\n\n${spec.usage}`);
  const downTo = key === 'migrate down' && str('to') !== undefined ? nonNegativeInt('--to', str('to')!) : undefined;
  let dlqEvent: bigint | undefined;
  if (key === 'dlq retry' || key === 'dlq remove') {
    if ((str('event') === undefined) === (values.all !== true)) throw new UsageError(`${key} needs --event <id> or --all (one of them)\n\n${spec.usage}`);
    if (str('event') !== undefined) dlqEvent = eventId('--event', str('event')!);
    if (key === 'dlq retry' && str('handlers') === undefined) throw new UsageError(`dlq retry needs --handlers <module>: the processor's handlers are the application's code\n\n${spec.usage}`);
  }
  if (key === 'events list' && str('from') !== undefined) from = eventId('--from', str('from')!);
  if (key === 'events get') id = eventId('<id>', arg(0));
  if (key === 'metrics' && json && values.prometheus === true) throw new UsageError(`give --json or --prometheus, not both\n\n${spec.usage}`);
  const namespace = str('namespace');
  if (namespace !== undefined) {
    try {
      checkNamespaceName(namespace);
    } catch (e) {
      throw new UsageError(`--namespace: ${(e as Error).message}\n\n${spec.usage}`);
    }
  }
  const keyFile = str('key-file');
  const encryptionKey = keyFile === undefined ? undefined : readKey(keyFile);

  if (key === 'restore') {
    const bar = progress(json);
    let digest;
    try {
      digest = await Athanor.restore(arg(0), arg(1), { overwrite: values.overwrite === true, encryptionKey, onProgress: bar.onProgress });
    } finally {
      bar.done();
    }
    out(json ? toJson({ restored: path.resolve(arg(1)), digest }) : `${green('restored')} ${path.resolve(arg(1))}: ${digest.events} events, ${digest.stateKeys} keys, sha256 ${digest.sha256}`);
    return EXIT_OK;
  }
  if (key === 'init') {
    let entries: string[] = [];
    try {
      entries = fs.readdirSync(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot use ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (entries.length > 0) throw new Error(`${path.resolve(dir)} is not empty; init creates a database only in a new or empty directory`);
  }

  // Only demo and init create a database: the other commands inspect one that must exist.
  // A keyed hash chain is verified with the key from the environment, never from the command line (ps shows it).
  const hmacKey = process.env.ATHANOR_HMAC_KEY;
  const opened = await Athanor.open(dir, { create: key === 'demo' || key === 'init', hmacKey: hmacKey === undefined || hmacKey === '' ? undefined : hmacKey });
  // A secure database is used through a caller: the operator at the files, recorded in its audit trail.
  const db = opened.secure ? opened.as({ id: 'athanor-cli', roles: ['admin'] }) : opened;
  try {
    // What the reading commands read: the database, or one of its namespaces.
    const scoped = namespace === undefined ? db : db.namespace(namespace);
    switch (key) {
      case 'demo':
        await demo(db, str('model'));
        return EXIT_OK;
      case 'init':
        out(json ? toJson({ created: db.dir }) : `${green('created')} an empty athanor database in ${db.dir}`);
        return EXIT_OK;
      case 'stats': {
        const s = db.stats();
        if (json) out(toJson({ dir: db.dir, ...s }));
        else process.stdout.write(`dir ${db.dir}\ncommitSeq ${s.commitSeq}\nlastEventId ${s.lastEventId}\nmapSize ${s.mapSize}\n`);
        return EXIT_OK;
      }
      case 'verify': {
        const report = values.deep === true ? await db.verify({ report: true, deep: true }) : db.verify({ report: true });
        if (json) out(toJson({ dir: db.dir, ...report }));
        else {
          const r = report;
          const counts =
            `${r.events} events, ${r.stateKeys} state keys, ${r.typeIndexEntries} type index entries, ${r.idempotencyRecords} idempotency records, ` +
            `${r.processors.length} processor(s), ${r.deadLetters} dead letter(s), ${r.vectorCollections.length} vector collection(s) with ${r.vectorDocuments} documents, ${r.indexDumps} index dump(s)`;
          out(r.ok ? `${green('ok')}: ${db.dir}, ${counts}` : `${bold('NOT OK')}: ${db.dir}, ${r.violations.length} violation(s); ${counts}`);
          for (const p of r.processors) out(`  processor ${p.name} at event ${p.cursor}`);
          for (const v of r.violations) out(`  ${bold(v.kind)}: ${v.detail}`);
        }
        return report.ok ? EXIT_OK : EXIT_FAILURE;
      }
      case 'get':
      case 'state get': {
        const v = scoped.getOpt(arg(0));
        if (json) out(toJson(v === undefined ? { key: arg(0), found: false } : { key: arg(0), found: true, type: v.type, value: v.toJS() }));
        else out(v === undefined ? '(absent)' : show(v));
        return v === undefined ? EXIT_FAILURE : EXIT_OK;
      }
      case 'state list': {
        const entries = scoped.list({ prefix: str('prefix'), after: str('after'), limit });
        // Keys with control characters (athanor's own start with NUL) are printed quoted.
        const shown = (k: string): string => (/[\u0000-\u001f\u007f\s]/.test(k) ? JSON.stringify(k) : k);
        for (const { key: k, value: v } of entries) out(json ? toJson({ key: k, type: v.type, value: v.toJS() }) : `${bold(shown(k))} ${show(v)}`);
        if (!json && entries.length === 0 && process.stdout.isTTY === true) out(dim('(no keys)'));
        return EXIT_OK;
      }
      case 'events list': {
        for (const e of scoped.events.read({ type: str('type'), from, limit, reverse: values.reverse === true })) out(showEvent(e, json));
        return EXIT_OK;
      }
      case 'events get': {
        const [e] = [...scoped.events.read({ from: id, to: id })];
        if (e === undefined) throw new Error(`no event #${id} (the newest is #${scoped.events.lastId})`);
        out(showEvent(e, json));
        return EXIT_OK;
      }
      case 'events tail':
        await tail(scoped, limit, values.follow === true, json);
        return EXIT_OK;
      case 'query': {
        const rows = await scoped.query<Record<string, unknown>>(arg(0));
        if (json) out(toJson(rows));
        else {
          const columns = rows.length === 0 ? [] : Object.keys(rows[0]!);
          if (columns.length > 0) out(bold(columns.join('\t')));
          for (const r of rows) out(columns.map((c) => (typeof r[c] === 'string' ? (r[c] as string) : toJson(r[c]))).join('\t'));
          if (process.stdout.isTTY === true) out(dim(`(${rows.length} row${rows.length === 1 ? '' : 's'})`));
        }
        return EXIT_OK;
      }
      case 'namespaces': {
        const all = db.namespaces.list();
        for (const n of all) {
          out(json ? toJson({ name: n.name, id: n.id, createdAt: n.createdAt.toISOString(), labels: n.labels }) : `${bold(n.name)} id ${n.id} created ${n.createdAt.toISOString()}${Object.keys(n.labels).length > 0 ? ` labels ${toJson(n.labels)}` : ''}`);
        }
        if (!json && all.length === 0 && process.stdout.isTTY === true) out(dim('(no namespaces)'));
        return EXIT_OK;
      }
      case 'metrics': {
        if (values.prometheus === true) process.stdout.write(await db.metrics({ format: 'prometheus' }));
        else {
          const m = await db.metrics();
          out(json ? toJson(m) : flatten(m, '', []).join('\n'));
        }
        return EXIT_OK;
      }
      case 'migrate status': {
        const hasSql = hasProjectionDb(db);
        const folder = str('migrations');
        if (folder !== undefined) db.migrations.loadDir(folder);
        const applied = hasSql ? db.migrations.history() : [];
        const version = hasSql ? db.migrations.schemaVersion() : 0;
        const done = new Set(applied.map((m) => m.version));
        const pending = folder === undefined ? undefined : db.migrations.registered().filter((m) => !done.has(m.version)).map((m) => ({ version: m.version, name: m.name, down: m.down !== undefined }));
        if (json) out(toJson({ schemaVersion: version, applied, ...(pending === undefined ? {} : { pending }) }));
        else {
          out(`schema version ${version}, ${applied.length} migration(s) applied${pending === undefined ? '' : `, ${pending.length} pending`}`);
          for (const m of applied) out(`  ${bold(String(m.version))} ${m.name} ${dim(new Date(m.appliedAt).toISOString())}`);
          for (const m of pending ?? []) out(`  ${bold(String(m.version))} ${m.name} ${dim('pending')}`);
        }
        return EXIT_OK;
      }
      case 'migrate up': {
        db.migrations.loadDir(str('migrations')!);
        const applied = db.migrations.run();
        const version = db.migrations.schemaVersion();
        if (json) out(toJson({ schemaVersion: version, applied }));
        else {
          out(`${green('schema version')} ${version}: ${applied.length} migration(s) applied now`);
          for (const m of applied) out(`  ${bold(String(m.version))} ${m.name}`);
        }
        return EXIT_OK;
      }
      case 'migrate down': {
        db.migrations.loadDir(str('migrations')!);
        const reverted = hasProjectionDb(db) ? (downTo === undefined ? [db.migrations.rollbackLast()].filter((m) => m !== undefined) : db.migrations.rollbackTo(downTo)) : [];
        const version = hasProjectionDb(db) ? db.migrations.schemaVersion() : 0;
        if (json) out(toJson({ schemaVersion: version, reverted }));
        else {
          out(`${green('schema version')} ${version}: ${reverted.length} migration(s) rolled back`);
          for (const m of reverted) out(`  ${bold(String(m.version))} ${m.name}`);
        }
        return EXIT_OK;
      }
      case 'schedule list': {
        const tasks = db.scheduler.list();
        if (json) out(toJson(tasks));
        else {
          for (const t of tasks) {
            const next = t.nextRunAt === null ? 'none' : new Date(t.nextRunAt).toISOString();
            out(`${bold(t.name)} ${toJson(t.schedule)} next ${next}${t.paused ? ' paused' : ''}${t.lastRun === null ? '' : ` last ${t.lastRun.outcome}`}`);
          }
          if (tasks.length === 0) out('(no scheduled tasks)');
        }
        return EXIT_OK;
      }
      case 'schedule history': {
        const name = arg(0);
        if (db.scheduler.get(name) === undefined) throw new Error(`no scheduled task named ${JSON.stringify(name)}`);
        const runs = db.scheduler.history(name, { limit });
        if (json) out(toJson(runs));
        else for (const r of runs) out(`${dim(new Date(r.scheduledAt).toISOString())} ${r.outcome} attempt ${r.attempt} by ${r.owner}${r.error === undefined ? '' : `: ${r.error}`}`);
        return EXIT_OK;
      }
      case 'schedule pause':
      case 'schedule resume': {
        const name = arg(0);
        if (key === 'schedule pause') await db.scheduler.pause(name);
        else await db.scheduler.resume(name);
        const paused = db.scheduler.get(name)?.paused === true;
        out(json ? toJson({ task: name, paused }) : `${name}: ${paused ? 'paused' : 'resumed'}`);
        return EXIT_OK;
      }
      case 'dlq list': {
        const letters = deadLetters(db, arg(0), limit);
        if (json) out(toJson(letters));
        else {
          for (const d of letters) out(`${bold(`#${d.event_id}`)} ${d.event_type} ${d.error_code}: ${d.error} (${d.attempts} attempt(s), last ${new Date(d.last_failed_at).toISOString()})`);
          if (letters.length === 0) out('(no dead letters)');
        }
        return EXIT_OK;
      }
      case 'dlq retry': {
        const letters = deadLetters(db, arg(0), dlqEvent === undefined ? -1 : 1, dlqEvent);
        if (dlqEvent !== undefined && letters.length === 0) throw new Error(`processor ${JSON.stringify(arg(0))} has no dead letter for event #${dlqEvent}`);
        const results: Array<{ event: number; retried: boolean }> = [];
        // The module is loaded only when there is something to retry.
        const processor = letters.length === 0 ? undefined : await loadProcessor(db, str('handlers')!, arg(0));
        if (processor !== undefined) for (const d of letters) results.push({ event: d.event_id, retried: await processor.deadLetters.retry(d.id) });
        const failed = results.filter((r) => !r.retried).length;
        if (json) out(toJson({ processor: arg(0), retried: results.length - failed, failed, results }));
        else {
          for (const r of results) out(`#${r.event} ${r.retried ? green('applied') : 'failed again (still a dead letter)'}`);
          out(`${results.length - failed} retried, ${failed} failed`);
        }
        return failed === 0 ? EXIT_OK : EXIT_FAILURE;
      }
      case 'dlq remove': {
        const letters = deadLetters(db, arg(0), dlqEvent === undefined ? -1 : 1, dlqEvent);
        if (dlqEvent !== undefined && letters.length === 0) throw new Error(`processor ${JSON.stringify(arg(0))} has no dead letter for event #${dlqEvent}`);
        let removed = 0;
        if (letters.length > 0) {
          const own = db.sql[INTERNAL]();
          db.sql.transaction(() => {
            for (const d of letters) if (own.removeDeadLetter(arg(0), d.id)) removed++;
          })();
        }
        out(json ? toJson({ processor: arg(0), removed }) : `${removed} dead letter(s) of ${arg(0)} removed`);
        return EXIT_OK;
      }
      case 'backup': {
        const bar = progress(json);
        let manifest;
        try {
          manifest = await db.backup(arg(0), { compress: values.compress === true, encryptionKey, onProgress: bar.onProgress });
        } finally {
          bar.done();
        }
        out(json ? toJson({ backup: path.resolve(arg(0)), manifest }) : `${green('backed up')} ${db.dir} into ${path.resolve(arg(0))}: ${manifest.contentDigest.events} events, ${manifest.files.length} file(s)`);
        return EXIT_OK;
      }
      default:
        throw new UsageError(`unknown command ${key}`);
    }
  } finally {
    await db.close();
  }
}

/** Whether projection.db exists: reading the SQL side would create it, and inspecting creates nothing. */
function hasProjectionDb(db: Athanor): boolean {
  return fs.existsSync(path.join(db.dir, 'projection.db'));
}

interface DeadLetterRow {
  id: number;
  processor: string;
  event_id: number;
  event_type: string;
  error_code: string;
  error: string;
  attempts: number;
  first_failed_at: number;
  last_failed_at: number;
}

/**
 * A processor's dead letters, read through athanor's bookkeeping: `processor.deadLetters`
 * needs the processor built with its handlers, which live in the application's code.
 */
function deadLetters(db: Athanor, processor: string, limit: number, event?: bigint): DeadLetterRow[] {
  if (!hasProjectionDb(db)) return [];
  const own = db.sql[INTERNAL]();
  let rows = own.deadLetters(processor, limit, 0);
  if (event !== undefined) {
    const one = own.deadLetterForEvent(processor, event);
    rows = one === undefined ? [] : [one];
  }
  return rows.map((r) => ({
    id: r.id,
    processor: r.processor,
    event_id: Number(r.eventId),
    event_type: r.eventType,
    error_code: r.errorCode,
    error: r.error,
    attempts: r.attempts,
    first_failed_at: r.firstFailedAt,
    last_failed_at: r.lastFailedAt,
  }));
}

/** A processor as the application builds it: what a --handlers module returns. */
type BuiltProcessor = { name: string; deadLetters: { retry(id: number): Promise<boolean> } };

function isProcessor(x: unknown): x is BuiltProcessor {
  return x !== null && typeof x === 'object' && typeof (x as { name?: unknown }).name === 'string' && typeof (x as { deadLetters?: { retry?: unknown } }).deadLetters?.retry === 'function';
}

/**
 * Imports the --handlers module and calls its default export with `db`; returns the
 * processor named `name` among those it returns (one, or an array).
 */
async function loadProcessor(db: Athanor, file: string, name: string): Promise<BuiltProcessor> {
  let mod: { default?: unknown };
  try {
    mod = (await import(pathToFileURL(path.resolve(file)).href)) as { default?: unknown };
  } catch (e) {
    throw new Error(`cannot load --handlers ${file}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
  }
  if (typeof mod.default !== 'function') throw new Error(`--handlers ${file} must default-export a function (db) => processor(s), e.g. export default (db) => db.processor('${name}').on(...).build()`);
  const made: unknown = await (mod.default as (db: Athanor) => unknown)(db);
  const found = (Array.isArray(made) ? made : [made]).find((p) => isProcessor(p) && p.name === name);
  if (found === undefined || !isProcessor(found)) throw new Error(`--handlers ${file} built no processor named ${JSON.stringify(name)}`);
  return found;
}

function nonNegativeInt(name: string, text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n)) throw new UsageError(`${name} must be a non-negative integer, got ${text}`);
  return n;
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
