//! N-API binding of projection.db (see `athanor_core::projection`). Thin: JS
//! value conversion, error mapping, async tasks. The statement hot path
//! (`run`/`get`/`all`/`iterate`) is raw N-API functions bound to the
//! connection, like `fast.rs`, binding parameters straight from the JS values.

use std::cell::{Cell, RefCell};
use std::ffi::{c_void, CString};
use std::path::PathBuf;
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;

use crate::guard::{self, catch, guard, CoreResult, Guarded, Work};
use crate::NativeDb;
use athanor_core::projection::background::Background;
use athanor_core::projection::bookkeeping::{self, AppliedMigration, DeadLetter, Failed};
use athanor_core::projection::declarative::Spec;
use athanor_core::projection::sql::{ColumnRef, RawStmt, SqlConn, SqlValue};
use athanor_core::projection::{self as proj, Params, ReadPool, Rows};
use athanor_core::{Code, Engine, Error};
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

mod rows;
mod statements;
mod tasks;
mod values;
use rows::*;
use statements::*;
use tasks::*;
use values::*;

/// Integers within ±(2^53 - 1) come back as numbers, others as bigint (unless the
/// statement asks for bigints always).
const MAX_SAFE: i64 = (1 << 53) - 1;

struct SqlCtx {
    conn: RefCell<Option<SqlConn>>,
    /// 16 bytes of JS memory: `[lastInsertRowid f64][lastInsertRowid i64]` after each `run`.
    rowid: Cell<*mut u8>,
}

impl SqlCtx {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut SqlConn) -> std::result::Result<T, Error>,
    ) -> std::result::Result<T, Error> {
        let mut c = self.conn.try_borrow_mut().map_err(|_| {
            Error::invalid("projection.db is busy with another call on this thread (re-entrant use from a row callback?)")
        })?;
        let conn = c.as_mut().ok_or_else(|| {
            Error::new(
                Code::Closed,
                "the SQL connection is closed; open the database again",
            )
        })?;
        f(conn)
    }
}

/// The SQL side of one database handle (internal: wrapped by `ts/sql/sql.ts`).
#[napi]
pub struct NativeSql {
    ctx: Rc<SqlCtx>,
    // Interior mutability keeps every method `&self`: napi-rs refuses a `&mut self`
    // call while another borrow of the object is alive (a query in flight), and
    // `close` must succeed then.
    engine: RefCell<Option<Arc<Engine>>>,
    pool: Arc<ReadPool>,
    bg: Arc<Background>,
    specs: RefCell<Vec<Arc<Spec>>>,
    /// The namespace whose log its declarative projections read.
    ns: u32,
}

fn closed() -> Error {
    Error::new(
        Code::Closed,
        "the database is closed; open it again with Athanor.open()",
    )
}

#[napi]
impl NativeSql {
    /// Opens (creating if needed) `<dir>/projection.db` for the handle `db`: its
    /// declarative projections read the log of `db`'s namespace.
    #[napi(constructor)]
    pub fn new(env: Env, db: &NativeDb, dir: String) -> Result<Self> {
        guard(&env, || {
            let engine = db.ctx.engine()?;
            let dir = PathBuf::from(dir);
            let conn = proj::open_main(&dir)?;
            Ok(NativeSql {
                ctx: Rc::new(SqlCtx {
                    conn: RefCell::new(Some(conn)),
                    rowid: Cell::new(ptr::null_mut()),
                }),
                pool: Arc::new(ReadPool::new(&dir)),
                bg: Arc::new(Background::new(&dir)),
                engine: RefCell::new(Some(engine)),
                specs: RefCell::new(Vec::new()),
                ns: db.ctx.ns,
            })
        })
    }

    /// Registers the 16-byte rowid scratch and installs the raw statement functions
    /// `run`, `get`, `all`, `iterStart`, `iterNext` on `target`. Each takes
    /// `(handle, ...params)` where `handle = statementId * 2 + (safeIntegers ? 1 : 0)`.
    #[napi]
    pub fn install(&self, env: Env, rowid: &[u8], target: Object) -> Result<()> {
        guard(&env, || {
            if rowid.len() < 16 {
                return Err(Error::invalid("rowid scratch must be 16 bytes"));
            }
            self.ctx.rowid.set(rowid.as_ptr() as *mut u8);
            // SAFETY: JS thread, live env and object.
            unsafe { install(env.raw(), target.raw(), &self.ctx) }
        })
    }

    /// Runs a script of zero or more statements (several run inside a savepoint).
    #[napi]
    pub fn exec(&self, env: Env, sql: String) -> Result<()> {
        guard(&env, || self.ctx.with(|c| c.exec_script(&sql)))
    }

    /// Opens a transaction level owned by athanor: BEGIN (IMMEDIATE) or a nested savepoint.
    #[napi]
    pub fn tx_begin(&self, env: Env, immediate: bool) -> Result<()> {
        guard(&env, || self.ctx.with(|c| c.begin_owned(immediate)))
    }

    /// Commits (or rolls back) the innermost level opened by `txBegin`; it is gone either way.
    #[napi]
    pub fn tx_end(&self, env: Env, commit: bool) -> Result<()> {
        guard(&env, || self.ctx.with(|c| c.end_owned(commit)))
    }

    /// The state of the transaction athanor owns, checked after each handler: 0 fine,
    /// 1 a statement was refused for transaction control since the last call (cleared),
    /// 2 a statement (ON CONFLICT ROLLBACK, RAISE(ROLLBACK)) rolled the transaction back.
    #[napi]
    pub fn tx_state(&self, env: Env) -> Result<u32> {
        guard(&env, || {
            self.ctx.with(|c| {
                Ok(if c.take_violation() {
                    1
                } else if c.owns_transaction() && !c.in_transaction() {
                    2
                } else {
                    0
                })
            })
        })
    }

    /// Prepares one statement; returns its id.
    #[napi]
    pub fn prepare(&self, env: Env, sql: String) -> Result<u32> {
        guard(&env, || self.ctx.with(|c| c.prepare(&sql)))
    }

    /// The tables one statement reads and changes, compiled (not run, not kept): each
    /// `[table, write]`; an empty table name stands for what is not one table's (PRAGMA, ATTACH).
    #[napi]
    pub fn table_access(&self, env: Env, sql: String) -> Result<Vec<(String, bool)>> {
        guard(&env, || {
            self.ctx.with(|c| {
                Ok(c.table_access(&sql)?
                    .into_iter()
                    .map(|t| (t.table, t.write))
                    .collect())
            })
        })
    }

    /// `[readonly, paramCount, ...columnNames]` of a prepared statement.
    #[napi]
    pub fn describe(&self, env: Env, id: u32) -> Result<(bool, u32, Vec<String>)> {
        guard(&env, || {
            self.ctx.with(|c| {
                let s = c.stmt(id)?;
                let cols = (0..s.column_count())
                    .map(|i| s.column_name(i).to_string())
                    .collect();
                Ok((s.readonly(), s.param_count() as u32, cols))
            })
        })
    }

    /// Finalizes a statement (its id may be reused).
    #[napi]
    pub fn finalize(&self, env: Env, id: u32) -> Result<()> {
        guard(&env, || {
            // A closed or busy connection has nothing left to finalize.
            let _ = self.ctx.with(|c| {
                c.finalize(id);
                Ok(())
            });
            Ok(())
        })
    }

    /// Resets a statement (ends an iteration).
    #[napi]
    pub fn reset(&self, env: Env, id: u32) -> Result<()> {
        guard(&env, || {
            // A closed connection or an unknown id has no iteration to end.
            let _ = self.ctx.with(|c| {
                c.stmt(id)?.reset();
                Ok(())
            });
            Ok(())
        })
    }

    /// Whether a transaction is open on the handle's connection.
    #[napi]
    pub fn in_transaction(&self, env: Env) -> Result<bool> {
        guard(&env, || self.ctx.with(|c| Ok(c.in_transaction())))
    }

    /// Runs a read-only query on the read pool, off the JS thread. `params` is an
    /// array (positional), an object (named) or undefined.
    #[napi(ts_return_type = "Promise<Record<string, unknown>[]>")]
    pub fn query(
        &self,
        env: Env,
        sql: String,
        params: Unknown,
        safe_integers: bool,
    ) -> Result<AsyncTask<Guarded<QueryTask>>> {
        let params = guard(&env, || {
            if self.engine.borrow().is_none() {
                return Err(closed());
            }
            // SAFETY: JS thread, live env and value.
            let params = unsafe { js_params(env.raw(), params.raw()) };
            // This path reports through napi-rs, which does not carry a JS value as a cause: drop it.
            CAUSE.with(|c| c.set(ptr::null_mut()));
            params
        })?;
        Ok(guard::task(QueryTask {
            pool: self.pool.clone(),
            sql,
            params,
            safe_integers,
        }))
    }

    /// Compiles a declarative projection spec (JSON); returns its id.
    #[napi]
    pub fn compile_projection(&self, env: Env, spec: String) -> Result<u32> {
        guard(&env, || {
            let mut s = Spec::compile(&spec)?;
            s.namespace = self.ns;
            let mut specs = self.specs.borrow_mut();
            specs.push(Arc::new(s));
            Ok((specs.len() - 1) as u32)
        })
    }

    fn spec(&self, id: u32) -> CoreResult<Arc<Spec>> {
        self.specs
            .borrow()
            .get(id as usize)
            .cloned()
            .ok_or_else(|| Error::invalid("unknown projection id"))
    }

    /// Applies the next batch of a declarative projection, off the JS thread.
    #[napi(ts_return_type = "Promise<DeclResult>")]
    pub fn declarative_batch(
        &self,
        env: Env,
        spec_id: u32,
        limit: u32,
    ) -> Result<AsyncTask<Guarded<DeclTask>>> {
        self.decl_task(&env, spec_id, DeclOp::Batch(limit.max(1) as usize))
    }

    /// Re-applies a dead letter of a declarative projection (and deletes it), off the JS thread.
    #[napi(ts_return_type = "Promise<DeclResult>")]
    pub fn declarative_retry(
        &self,
        env: Env,
        spec_id: u32,
        dead_letter_id: i64,
    ) -> Result<AsyncTask<Guarded<DeclTask>>> {
        self.decl_task(&env, spec_id, DeclOp::Retry(dead_letter_id))
    }

    /// A processor's cursor (0 when it never ran), read on the handle's connection.
    #[napi]
    pub fn cursor(&self, env: Env, name: String) -> Result<BigInt> {
        guard(&env, || {
            self.ctx
                .with(|c| Ok(BigInt::from(bookkeeping::read_cursor(c, &name)?)))
        })
    }

    /// Every processor's cursor as `[name, cursor]` pairs, read on the handle's connection.
    #[napi]
    pub fn cursors(&self, env: Env) -> Result<Vec<(String, BigInt)>> {
        guard(&env, || {
            self.ctx.with(|c| {
                Ok(bookkeeping::read_cursors(c)?
                    .into_iter()
                    .map(|(n, id)| (n, BigInt::from(id)))
                    .collect())
            })
        })
    }

    /// Moves a processor's cursor (inside the transaction open on the handle's connection).
    #[napi]
    pub fn set_cursor(&self, env: Env, name: String, id: BigInt) -> Result<()> {
        guard(&env, || {
            let id = event_id(id)?;
            let at = self.now_ms()?;
            self.ctx
                .with(|c| bookkeeping::write_cursor(c, &name, id, at))
        })
    }

    /// Drops the cursor and dead letters of processor `name`, or of every processor.
    #[napi]
    pub fn reset_processors(&self, env: Env, name: Option<String>) -> Result<()> {
        guard(&env, || {
            self.ctx
                .with(|c| bookkeeping::reset_processors(c, name.as_deref()))
        })
    }

    /// Records a dead letter (or adds `attempts` to the one kept for the event).
    #[napi]
    pub fn record_dead_letter(&self, env: Env, d: NativeFailedEvent) -> Result<()> {
        guard(&env, || {
            let id = event_id(d.event_id)?;
            let at_ms = self.now_ms()?;
            self.ctx.with(|c| {
                let failed = Failed {
                    code: &d.error_code,
                    message: &d.error,
                    at_ms,
                };
                bookkeeping::record_dead_letter(
                    c,
                    &d.processor,
                    id,
                    &d.event_type,
                    d.attempts,
                    failed,
                )
            })
        })
    }

    /// Counts one more failed retry of dead letter `id`.
    #[napi]
    pub fn dead_letter_failed_again(
        &self,
        env: Env,
        id: i64,
        error_code: String,
        error: String,
    ) -> Result<()> {
        guard(&env, || {
            let at_ms = self.now_ms()?;
            self.ctx.with(|c| {
                let failed = Failed {
                    code: &error_code,
                    message: &error,
                    at_ms,
                };
                bookkeeping::dead_letter_failed_again(c, id, failed)
            })
        })
    }

    /// Deletes dead letter `id` of `processor`; whether it existed.
    #[napi]
    pub fn remove_dead_letter(&self, env: Env, processor: String, id: i64) -> Result<bool> {
        guard(&env, || {
            self.ctx
                .with(|c| bookkeeping::remove_dead_letter(c, &processor, id))
        })
    }

    /// Deletes every dead letter of `processor`; how many.
    #[napi]
    pub fn remove_dead_letters(&self, env: Env, processor: String) -> Result<i64> {
        guard(&env, || {
            self.ctx
                .with(|c| Ok(bookkeeping::remove_dead_letters(c, &processor)? as i64))
        })
    }

    /// Dead letters of `processor`, oldest event first (`limit` < 0: all).
    #[napi]
    pub fn dead_letters(
        &self,
        env: Env,
        processor: String,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<NativeDeadLetter>> {
        guard(&env, || {
            self.ctx.with(|c| {
                Ok(bookkeeping::dead_letters(c, &processor, limit, offset)?
                    .into_iter()
                    .map(NativeDeadLetter::from)
                    .collect())
            })
        })
    }

    /// Dead letter `id` of `processor`, or null.
    #[napi]
    pub fn dead_letter(
        &self,
        env: Env,
        processor: String,
        id: i64,
    ) -> Result<Option<NativeDeadLetter>> {
        guard(&env, || {
            self.ctx.with(|c| {
                Ok(bookkeeping::dead_letter(c, &processor, id)?.map(NativeDeadLetter::from))
            })
        })
    }

    /// The dead letter `processor` keeps for event `eventId`, or null.
    #[napi]
    pub fn dead_letter_for_event(
        &self,
        env: Env,
        processor: String,
        event_id_: BigInt,
    ) -> Result<Option<NativeDeadLetter>> {
        guard(&env, || {
            let id = event_id(event_id_)?;
            self.ctx.with(|c| {
                Ok(bookkeeping::dead_letter_for_event(c, &processor, id)?
                    .map(NativeDeadLetter::from))
            })
        })
    }

    /// How many dead letters `processor` keeps.
    #[napi]
    pub fn dead_letter_count(&self, env: Env, processor: String) -> Result<i64> {
        guard(&env, || {
            self.ctx
                .with(|c| Ok(bookkeeping::dead_letter_count(c, &processor)? as i64))
        })
    }

    /// Records an applied migration (inside the migration's transaction).
    #[napi]
    pub fn record_migration(&self, env: Env, m: NativeMigration) -> Result<()> {
        guard(&env, || {
            self.ctx
                .with(|c| bookkeeping::record_migration(c, &m.into()))
        })
    }

    /// Forgets migration `version` (inside the transaction its down step ran in).
    #[napi]
    pub fn unrecord_migration(&self, env: Env, version: i64) -> Result<()> {
        guard(&env, || {
            self.ctx
                .with(|c| bookkeeping::unrecord_migration(c, version))
        })
    }

    /// The applied migrations, by version.
    #[napi]
    pub fn migrations(&self, env: Env) -> Result<Vec<NativeMigration>> {
        guard(&env, || {
            self.ctx.with(|c| {
                Ok(bookkeeping::migrations(c)?
                    .into_iter()
                    .map(NativeMigration::from)
                    .collect())
            })
        })
    }

    /// Closes the connection (finalizing its statements; SQLite rolls back a transaction
    /// left open) and releases the engine. Work in flight keeps what it needs until it ends.
    #[napi]
    pub fn close(&self, env: Env) -> Result<()> {
        guard(&env, || {
            if let Ok(mut c) = self.ctx.conn.try_borrow_mut() {
                c.take();
            }
            self.bg.close();
            self.engine.borrow_mut().take();
            Ok(())
        })
    }
}

impl NativeSql {
    /// The store's clock, which stamps athanor's rows.
    fn now_ms(&self) -> CoreResult<u64> {
        Ok(self
            .engine
            .borrow()
            .as_ref()
            .ok_or_else(closed)?
            .store()
            .now_ms())
    }

    fn decl_task(
        &self,
        env: &Env,
        spec_id: u32,
        op: DeclOp,
    ) -> Result<AsyncTask<Guarded<DeclTask>>> {
        let task = guard(env, || {
            Ok(DeclTask {
                engine: self.engine.borrow().clone().ok_or_else(closed)?,
                bg: self.bg.clone(),
                spec: self.spec(spec_id)?,
                op,
            })
        })?;
        Ok(guard::task(task))
    }
}
