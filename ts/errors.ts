/**
 * Typed errors. Every error athanor throws is an {@link AthanorError} with a
 * stable string `code`; switch on `code` (or use `instanceof` on the subclasses).
 */

/** The stable error codes. Never renamed once released. */
export type ErrorCode =
  | 'ERR_PREFLIGHT'
  | 'ERR_CONFLICT'
  | 'ERR_NOT_FOUND'
  | 'ERR_TYPE'
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_MAP_FULL'
  | 'ERR_CORRUPT'
  | 'ERR_CLOSED'
  | 'ERR_VERSION'
  | 'ERR_IO'
  | 'ERR_SQL'
  | 'ERR_SQL_CONSTRAINT'
  | 'ERR_SQL_BUSY'
  | 'ERR_SQL_SYNTAX'
  | 'ERR_HANDLER'
  | 'ERR_MIGRATION_DRIFT'
  | 'ERR_MIGRATIONS_PENDING'
  | 'ERR_VECTOR_DIMENSION'
  | 'ERR_MODEL'
  | 'ERR_RUNTIME'
  | 'ERR_PROVIDER'
  | 'ERR_DOWNLOAD'
  | 'ERR_INTEGRITY'
  | 'ERR_NOT_READY'
  | 'ERR_NATIVE'
  | 'ERR_INTERNAL'
  | 'ERR_BOUNDS'
  | 'ERR_STALE_LEASE'
  | 'ERR_COMPACTED'
  | 'ERR_READ_ONLY'
  | 'ERR_MISSING_PACKAGE'
  | 'ERR_WRONG_EXPECTED_VERSION'
  | 'ERR_UPCAST'
  | 'ERR_FORBIDDEN';

/** Base class of every error athanor throws. */
export class AthanorError extends Error {
  /** Stable machine-readable code, e.g. `ERR_CONFLICT`. */
  readonly code: ErrorCode;
  /**
   * SQLite's extended result code when SQLite raised the error on projection.db
   * (e.g. `2067` for `SQLITE_CONSTRAINT_UNIQUE`, `13` for `SQLITE_FULL`); absent otherwise.
   */
  declare readonly sqliteCode?: number;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A `require*` check failed on the snapshot; nothing was written. */
export class PreflightError extends AthanorError {
  /** The key whose check failed. */
  readonly key: string;
  constructor(key: string, message: string) {
    super('ERR_PREFLIGHT', message);
    this.key = key;
  }
}

/** The transaction kept conflicting with concurrent commits and gave up; nothing was written. */
export class ConflictError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CONFLICT', message, options);
  }
}

/** A key or event that must exist does not. */
export class NotFoundError extends AthanorError {
  constructor(message: string) {
    super('ERR_NOT_FOUND', message);
  }
}

/** A value was read as the wrong type (e.g. `asI64()` on a string) or is malformed. */
export class ValueTypeError extends AthanorError {
  constructor(message: string) {
    super('ERR_TYPE', message);
  }
}

/** An argument is unusable (empty key, oversized key, non-serialisable payload, bad option...). */
export class InvalidArgumentError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INVALID_ARGUMENT', message, options);
  }
}

/** The storage map could not grow (disk full or the configured limit reached). */
export class MapFullError extends AthanorError {
  constructor(message: string) {
    super('ERR_MAP_FULL', message);
  }
}

/** Stored data is damaged or not what athanor wrote. */
export class CorruptError extends AthanorError {
  constructor(message: string) {
    super('ERR_CORRUPT', message);
  }
}

/** The database, snapshot or handle was closed. */
export class ClosedError extends AthanorError {
  constructor(message = 'the database is closed; open it again with Athanor.open()') {
    super('ERR_CLOSED', message);
  }
}

/** The data on disk was written by a newer version of athanor. */
export class VersionError extends AthanorError {
  constructor(message: string) {
    super('ERR_VERSION', message);
  }
}

/** An operating-system level failure (permissions, disk). */
export class IoError extends AthanorError {
  constructor(message: string) {
    super('ERR_IO', message);
  }
}

/** SQLite refused a statement on projection.db. Subclasses narrow the reason; `code` says which. */
export class SqlError extends AthanorError {
  constructor(message: string, code: 'ERR_SQL' | 'ERR_SQL_CONSTRAINT' | 'ERR_SQL_BUSY' | 'ERR_SQL_SYNTAX' = 'ERR_SQL') {
    super(code, message);
  }
}

/** A UNIQUE / NOT NULL / CHECK / FOREIGN KEY constraint was violated; the statement was not applied. */
export class SqlConstraintError extends SqlError {
  constructor(message: string) {
    super(message, 'ERR_SQL_CONSTRAINT');
  }
}

/** Another connection held projection.db's write lock past the busy timeout; retry later. */
export class SqlBusyError extends SqlError {
  constructor(message: string) {
    super(message, 'ERR_SQL_BUSY');
  }
}

/** The SQL text does not parse. */
export class SqlSyntaxError extends SqlError {
  constructor(message: string) {
    super(message, 'ERR_SQL_SYNTAX');
  }
}

/** A projection handler failed on an event (the processor's error strategy said stop). */
export class HandlerError extends AthanorError {
  /** Id of the event the handler failed on, when known. */
  readonly eventId: bigint | undefined;
  constructor(message: string, options?: { cause?: unknown; eventId?: bigint }) {
    super('ERR_HANDLER', message, options);
    this.eventId = options?.eventId;
  }
}

/** An applied migration's definition changed since it was applied (checksum mismatch). */
export class MigrationDriftError extends AthanorError {
  constructor(message: string) {
    super('ERR_MIGRATION_DRIFT', message);
  }
}

/** Registered migrations are not applied yet; run `db.migrations.run()` first. */
export class MigrationsPendingError extends AthanorError {
  constructor(message: string) {
    super('ERR_MIGRATIONS_PENDING', message);
  }
}

/** A vector's (or query's) dimension differs from its collection's; nothing was written. */
export class VectorDimensionError extends AthanorError {
  constructor(message: string) {
    super('ERR_VECTOR_DIMENSION', message);
  }
}

/** A model directory is unusable: a missing or malformed `model.onnx`, `tokenizer.json` or config, or a model whose inputs/outputs are not a text encoder's. */
export class ModelError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_MODEL', message, options);
  }
}

/** The ONNX Runtime shared library could not be found or loaded (wrong path, wrong version, wrong architecture). */
export class RuntimeLoadError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_RUNTIME', message, options);
  }
}

/** A requested execution provider (CUDA, CoreML) is not available and fallback was not allowed. */
export class ProviderError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_PROVIDER', message, options);
  }
}

/** A model download failed (network error, HTTP status, interrupted transfer); what was fetched so far is kept for a resume. */
export class DownloadError extends AthanorError {
  /** HTTP status, when the server answered. */
  readonly status: number | undefined;
  constructor(message: string, options?: { cause?: unknown; status?: number }) {
    super('ERR_DOWNLOAD', message, options);
    this.status = options?.status;
  }
}

/** A downloaded or cached file does not match its expected size or SHA-256; it was not used. */
export class IntegrityError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INTEGRITY', message, options);
  }
}

/** athanor's native addon for this platform is not installed or cannot be loaded; the message names the package to install. */
export class NativeLoadError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_NATIVE', message, options);
  }
}

/** A numeric bound would be crossed (an accumulator's value leaving its type's range, an exposure beyond what is available); nothing was written. */
export class BoundsError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_BOUNDS', message, options);
  }
}

/** A lease's fencing token is no longer current (it expired and the job or event was taken again); nothing was written. */
export class StaleLeaseError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_STALE_LEASE', message, options);
  }
}

/** A read asked for events that compaction removed from the log (below `events.firstId`). */
export class CompactedError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_COMPACTED', message, options);
  }
}

/** A write on a read replica: a replica changes only by applying its primary's commits; write on the primary, then `replica.waitFor(commitSeq)`. */
export class ReadOnlyError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_READ_ONLY', message, options);
  }
}

/** An optional package a feature needs (e.g. `pg` for PostgreSQL projections, `@nats-io/jetstream` for replication) is not installed; the message names it. */
export class MissingPackageError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_MISSING_PACKAGE', message, options);
  }
}

/**
 * A stream append's `expectedVersion` did not match the stream's version when the
 * writer applied it; nothing of the transaction was written. Not retried: re-read
 * the stream and decide again.
 */
export class WrongExpectedVersionError extends AthanorError {
  /** The stream (or agent memory record: agent, task) whose version did not match. */
  readonly streamId: string;
  /** What the append expected: a version, `'none'` or `'any'`. */
  readonly expectedVersion: number | 'none' | 'any';
  /** The stream's version when the writer checked. */
  readonly actualVersion: number;
  constructor(message: string, streamId = '', expectedVersion: number | 'none' | 'any' = 'any', actualVersion = 0) {
    super('ERR_WRONG_EXPECTED_VERSION', message);
    this.streamId = streamId;
    this.expectedVersion = expectedVersion;
    this.actualVersion = actualVersion;
  }
}

/** An event's schema version has no upcaster to bring it to the newest version; the message names the type and version. */
export class UpcastError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_UPCAST', message, options);
  }
}

/** The writer's message for a wrong expected version: `stream "<id>" expected version <v|none|any>, found <n>: ...`. */
const WRONG_VERSION = /^stream ("(?:[^"\\]|\\.)*") expected version (none|any|\d+), found (\d+)/;

function wrongExpectedVersion(message: string): WrongExpectedVersionError {
  const m = WRONG_VERSION.exec(message);
  if (!m) return new WrongExpectedVersionError(message);
  const expected = m[2] === 'none' || m[2] === 'any' ? m[2] : Number(m[2]);
  return new WrongExpectedVersionError(message, JSON.parse(m[1]!) as string, expected, Number(m[3]));
}

/** The caller's roles do not grant the permission the operation needs (named in the message and in `permission`); nothing was done. */
export class ForbiddenError extends AthanorError {
  /** The missing permission, e.g. `write key:orders/` or `admin`. */
  readonly permission: string | undefined;
  constructor(message: string, options?: { permission?: string }) {
    super('ERR_FORBIDDEN', message);
    this.permission = options?.permission;
  }
}

/** A vector collection's index is still loading after open and the search asked not to wait (`{ wait: false }`). */
export class NotReadyError extends AthanorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_NOT_READY', message, options);
  }
}

/** Builds the typed error for a code and message. */
export function errorFor(code: string, message: string): AthanorError {
  switch (code) {
    case 'ERR_PREFLIGHT':
      return new PreflightError('', message);
    case 'ERR_CONFLICT':
      return new ConflictError(message);
    case 'ERR_NOT_FOUND':
      return new NotFoundError(message);
    case 'ERR_TYPE':
      return new ValueTypeError(message);
    case 'ERR_INVALID_ARGUMENT':
      return new InvalidArgumentError(message);
    case 'ERR_MAP_FULL':
      return new MapFullError(message);
    case 'ERR_CORRUPT':
      return new CorruptError(message);
    case 'ERR_CLOSED':
      return new ClosedError(message);
    case 'ERR_VERSION':
      return new VersionError(message);
    case 'ERR_IO':
      return new IoError(message);
    case 'ERR_SQL':
      return new SqlError(message);
    case 'ERR_SQL_CONSTRAINT':
      return new SqlConstraintError(message);
    case 'ERR_SQL_BUSY':
      return new SqlBusyError(message);
    case 'ERR_SQL_SYNTAX':
      return new SqlSyntaxError(message);
    case 'ERR_HANDLER':
      return new HandlerError(message);
    case 'ERR_VECTOR_DIMENSION':
      return new VectorDimensionError(message);
    case 'ERR_MODEL':
      return new ModelError(message);
    case 'ERR_RUNTIME':
      return new RuntimeLoadError(message);
    case 'ERR_PROVIDER':
      return new ProviderError(message);
    case 'ERR_DOWNLOAD':
      return new DownloadError(message);
    case 'ERR_INTEGRITY':
      return new IntegrityError(message);
    case 'ERR_BOUNDS':
      return new BoundsError(message);
    case 'ERR_STALE_LEASE':
      return new StaleLeaseError(message);
    case 'ERR_COMPACTED':
      return new CompactedError(message);
    case 'ERR_READ_ONLY':
      return new ReadOnlyError(message);
    case 'ERR_MISSING_PACKAGE':
      return new MissingPackageError(message);
    case 'ERR_WRONG_EXPECTED_VERSION':
      return wrongExpectedVersion(message);
    case 'ERR_UPCAST':
      return new UpcastError(message);
    case 'ERR_FORBIDDEN':
      return new ForbiddenError(message);
    case 'ERR_NOT_READY':
      return new NotReadyError(message);
    default:
      return new AthanorError('ERR_INTERNAL', message);
  }
}

/**
 * Fallback for an error that reaches JS with its code only in its text
 * (`ERR_X: message`): the code is read from the message.
 */
const NATIVE_MESSAGE = /^(ERR_[A-Z_]+): ([\s\S]*)$/;

/** What the addon attaches to the errors it throws (see native/node/src/guard.rs). */
interface NativeErrorData {
  code?: unknown;
  sqliteCode?: unknown;
  cause?: unknown;
}

/**
 * Converts an error thrown by the native addon into its typed class. The addon
 * sets `code` (and `sqliteCode`, `cause`) on the error it throws; the typed error
 * keeps them, with the message less its `ERR_X: ` prefix.
 */
export function fromNative(e: unknown): Error {
  if (e instanceof AthanorError) return e;
  if (e instanceof Error) {
    const data = e as Error & NativeErrorData;
    let typed: AthanorError;
    if (typeof data.code === 'string' && data.code.startsWith('ERR_')) {
      const prefix = `${data.code}: `;
      typed = errorFor(data.code, e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message);
    } else {
      const m = NATIVE_MESSAGE.exec(e.message);
      if (!m) return new AthanorError('ERR_INTERNAL', e.message, { cause: e });
      typed = errorFor(m[1]!, m[2]!);
    }
    if (typeof data.sqliteCode === 'number') {
      Object.defineProperty(typed, 'sqliteCode', { value: data.sqliteCode, enumerable: true, configurable: true });
    }
    if (data.cause !== undefined) {
      Object.defineProperty(typed, 'cause', { value: data.cause, writable: true, configurable: true });
    }
    return typed;
  }
  return new AthanorError('ERR_INTERNAL', String(e));
}
