/**
 * Real NATS (JetStream) and PostgreSQL servers for the replication suites: started
 * on loopback, on private ports, in temporary directories, and stopped by the
 * suite. `serversMissing()` names what is not installed, so a suite can skip with
 * a clear message (`.ci/run` installs both).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const PG_BIN = '/usr/lib/postgresql/15/bin';

function which(cmd: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(':').concat(['/usr/sbin', '/usr/bin'])) {
    const p = path.join(dir, cmd);
    if (fs.existsSync(p)) return p;
  }
  return undefined;
}

/** What is missing to run the replication suites, or `undefined` when all is there. */
export function serversMissing(): string | undefined {
  const missing = [];
  if (which('nats-server') === undefined) missing.push('nats-server');
  if (!fs.existsSync(path.join(PG_BIN, 'initdb'))) missing.push('postgresql-15');
  return missing.length === 0 ? undefined : `${missing.join(' and ')} not installed (apt-get install nats-server postgresql)`;
}

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitForPort(port: number, what: string, deadlineMs = 30_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => {
        c.end();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`${what} did not listen on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A nats-server with JetStream, its store in a temp dir kept across restarts. */
export class NatsServer {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'athanor-nats-'));
  port = 0;
  #child: ChildProcess | undefined;

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (this.port === 0) this.port = await freePort();
    const child = spawn(which('nats-server')!, ['-js', '-a', '127.0.0.1', '-p', String(this.port), '-sd', this.dir], { stdio: 'ignore' });
    this.#child = child;
    await waitForPort(this.port, 'nats-server');
  }

  /** Stops the server (SIGKILL: as abrupt as a crash) and waits for it to exit. */
  async stop(): Promise<void> {
    const c = this.#child;
    this.#child = undefined;
    if (c === undefined || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.on('exit', () => resolve());
      c.kill('SIGKILL');
    });
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async dispose(): Promise<void> {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A PostgreSQL 15 cluster in a temp dir, trust auth on loopback (run as `postgres` when we are root). */
export class PgServer {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'athanor-pg-'));
  port = 0;
  readonly #asRoot = process.getuid?.() === 0;

  get connectionString(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  #run(bin: string, args: string[]): void {
    const cmd = path.join(PG_BIN, bin);
    if (this.#asRoot) execFileSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { stdio: 'ignore' });
    else execFileSync(cmd, args, { stdio: 'ignore' });
  }

  async start(): Promise<void> {
    const data = path.join(this.dir, 'data');
    if (this.port === 0) {
      this.port = await freePort();
      if (this.#asRoot) execFileSync('chown', ['-R', 'postgres:postgres', this.dir]);
      this.#run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8']);
    }
    this.#run('pg_ctl', ['-D', data, '-w', '-l', path.join(this.dir, 'log'), '-o', `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=on`, 'start']);
    await waitForPort(this.port, 'postgres');
  }

  /** Stops the server immediately (`-m immediate`: like a crash, in-flight transactions lost). */
  async stop(): Promise<void> {
    this.#run('pg_ctl', ['-D', path.join(this.dir, 'data'), '-m', 'immediate', '-w', 'stop']);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async dispose(): Promise<void> {
    try {
      await this.stop();
    } catch {
      /* not running */
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
