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
}

fn closed() -> Error {
    Error::new(
        Code::Closed,
        "the database is closed; open it again with Athanor.open()",
    )
}

#[napi]
impl NativeSql {
    /// Opens (creating if needed) `<dir>/projection.db` for the handle `db`.
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
            let s = Spec::compile(&spec)?;
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
    #[napi(
        ts_return_type = "Promise<{ consumed: number; cursor: bigint; failedEventId: bigint | null; errorCode: string | null; errorMessage: string | null }>"
    )]
    pub fn declarative_batch(
        &self,
        env: Env,
        spec_id: u32,
        limit: u32,
    ) -> Result<AsyncTask<Guarded<DeclTask>>> {
        self.decl_task(&env, spec_id, DeclOp::Batch(limit.max(1) as usize))
    }

    /// Re-applies a dead letter of a declarative projection (and deletes it), off the JS thread.
    #[napi(
        ts_return_type = "Promise<{ consumed: number; cursor: bigint; failedEventId: bigint | null; errorCode: string | null; errorMessage: string | null }>"
    )]
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

/// A dead letter as the addon hands it to `ts/sql/bookkeeping.ts`.
#[napi(object)]
pub struct NativeDeadLetter {
    pub id: i64,
    pub processor: String,
    pub event_id: BigInt,
    pub event_type: String,
    pub error_code: String,
    pub error: String,
    pub attempts: i64,
    pub first_failed_at: i64,
    pub last_failed_at: i64,
}

impl From<DeadLetter> for NativeDeadLetter {
    fn from(d: DeadLetter) -> Self {
        NativeDeadLetter {
            id: d.id,
            processor: d.processor,
            event_id: BigInt::from(d.event_id),
            event_type: d.event_type,
            error_code: d.error_code,
            error: d.error,
            attempts: d.attempts,
            first_failed_at: d.first_failed_at,
            last_failed_at: d.last_failed_at,
        }
    }
}

/// An event a processor gives up on, to keep as a dead letter.
#[napi(object)]
pub struct NativeFailedEvent {
    pub processor: String,
    pub event_id: BigInt,
    pub event_type: String,
    pub attempts: u32,
    pub error_code: String,
    pub error: String,
}

/// An applied migration as it crosses the addon.
#[napi(object)]
pub struct NativeMigration {
    pub version: i64,
    pub name: String,
    pub checksum: String,
    pub applied_at: i64,
}

impl From<AppliedMigration> for NativeMigration {
    fn from(m: AppliedMigration) -> Self {
        NativeMigration {
            version: m.version,
            name: m.name,
            checksum: m.checksum,
            applied_at: m.applied_at,
        }
    }
}

impl From<NativeMigration> for AppliedMigration {
    fn from(m: NativeMigration) -> Self {
        AppliedMigration {
            version: m.version,
            name: m.name,
            checksum: m.checksum,
            applied_at: m.applied_at,
        }
    }
}

fn event_id(b: BigInt) -> CoreResult<u64> {
    let (signed, v, lossless) = b.get_u64();
    if signed || !lossless {
        return Err(Error::invalid(
            "an event id must be a non-negative 64-bit integer",
        ));
    }
    Ok(v)
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

/// Read-pool query task.
pub struct QueryTask {
    pool: Arc<ReadPool>,
    sql: String,
    params: Params,
    safe_integers: bool,
}

/// A JS value built by hand in `resolve`.
pub struct RawJs(sys::napi_value);

impl TypeName for RawJs {
    fn type_name() -> &'static str {
        "unknown"
    }
    fn value_type() -> ValueType {
        ValueType::Unknown
    }
}

impl ToNapiValue for RawJs {
    unsafe fn to_napi_value(_env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        Ok(val.0)
    }
}

// SAFETY: the task only carries owned Rust data across threads; `RawJs` is created
// and consumed on the JS thread in `resolve`.
unsafe impl Send for RawJs {}

impl Work for QueryTask {
    type Output = Rows;
    type JsValue = RawJs;
    fn compute(&mut self) -> CoreResult<Rows> {
        self.pool.query(&self.sql, &self.params)
    }
    fn resolve(&mut self, env: Env, rows: Rows) -> Result<RawJs> {
        let env = env.raw();
        let names: Vec<CString> = rows
            .columns
            .iter()
            .map(|c| CString::new(c.replace('\0', "")).unwrap_or_default())
            .collect();
        let mut arr = ptr::null_mut();
        unsafe { sys::napi_create_array_with_length(env, rows.rows.len(), &mut arr) };
        for (ri, row) in rows.rows.iter().enumerate() {
            let mut obj = ptr::null_mut();
            unsafe { sys::napi_create_object(env, &mut obj) };
            for (ci, v) in row.iter().enumerate() {
                let r = match v {
                    SqlValue::Null => ColumnRef::Null,
                    SqlValue::Int(i) => ColumnRef::Int(*i),
                    SqlValue::Real(f) => ColumnRef::Real(*f),
                    SqlValue::Text(t) => ColumnRef::Text(t.as_bytes()),
                    SqlValue::Blob(b) => ColumnRef::Blob(b),
                };
                let jv = unsafe { to_js(env, r, self.safe_integers) };
                unsafe { sys::napi_set_named_property(env, obj, names[ci].as_ptr(), jv) };
            }
            unsafe { sys::napi_set_element(env, arr, ri as u32, obj) };
        }
        Ok(RawJs(arr))
    }
}

enum DeclOp {
    Batch(usize),
    Retry(i64),
}

/// A declarative batch (or dead-letter retry) on the background connection.
pub struct DeclTask {
    engine: Arc<Engine>,
    bg: Arc<Background>,
    spec: Arc<Spec>,
    op: DeclOp,
}

/// What a declarative batch reports to JS.
#[napi(object)]
pub struct DeclResult {
    pub consumed: u32,
    pub cursor: BigInt,
    pub failed_event_id: Option<BigInt>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

impl Work for DeclTask {
    type Output = DeclResult;
    type JsValue = DeclResult;
    fn compute(&mut self) -> CoreResult<DeclResult> {
        match self.op {
            DeclOp::Batch(limit) => {
                let o = self.bg.run_batch(&self.engine, &self.spec, limit)?;
                let (fid, code, msg) = match o.failure {
                    Some(f) => (
                        Some(BigInt::from(f.event_id)),
                        Some(f.error.code.as_str().to_string()),
                        Some(f.error.message),
                    ),
                    None => (None, None, None),
                };
                Ok(DeclResult {
                    consumed: o.consumed,
                    cursor: BigInt::from(o.cursor),
                    failed_event_id: fid,
                    error_code: code,
                    error_message: msg,
                })
            }
            DeclOp::Retry(id) => {
                let r = self.bg.retry_dead_letter(&self.engine, &self.spec, id)?;
                Ok(DeclResult {
                    consumed: r.is_none() as u32,
                    cursor: BigInt::from(0u64),
                    failed_event_id: None,
                    error_code: r.as_ref().map(|e| e.code.as_str().to_string()),
                    error_message: r.map(|e| e.message),
                })
            }
        }
    }
    fn resolve(&mut self, _env: Env, out: DeclResult) -> Result<DeclResult> {
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// JS values <-> SQL values

// Thread-local scratch for string parameters (SQLite copies them at bind).
thread_local! {
    static TEXT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// What JS threw while a parameter was read, attached as the cause of the error
    /// `throw` raises (valid only within the current native call).
    static CAUSE: Cell<sys::napi_value> = const { Cell::new(ptr::null_mut()) };
}

/// Turns a JS exception raised while reading `what` (a throwing getter, a revoked
/// proxy) into a typed error, keeping the thrown value for the error's cause.
unsafe fn js_threw(env: sys::napi_env, what: &str) -> Error {
    let mut exc = ptr::null_mut();
    let mut pending = false;
    unsafe { sys::napi_is_exception_pending(env, &mut pending) };
    if pending {
        unsafe { sys::napi_get_and_clear_last_exception(env, &mut exc) };
    }
    CAUSE.with(|c| c.set(exc));
    bad(format!(
        "reading {what} threw (a getter that throws, a revoked proxy?); pass plain values. The thrown value is this error's cause"
    ))
}

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid(msg)
}

unsafe fn type_of(env: sys::napi_env, v: sys::napi_value) -> sys::napi_valuetype {
    let mut t = 0;
    unsafe { sys::napi_typeof(env, v, &mut t) };
    t
}

/// Bytes of a Buffer / TypedArray / DataView, or None if `v` is none of those.
unsafe fn bytes_of<'a>(env: sys::napi_env, v: sys::napi_value) -> Option<&'a [u8]> {
    let mut is = false;
    unsafe { sys::napi_is_typedarray(env, v, &mut is) };
    if is {
        let mut ty = 0;
        let mut len = 0usize;
        let mut data: *mut c_void = ptr::null_mut();
        let mut ab = ptr::null_mut();
        let mut off = 0usize;
        unsafe {
            sys::napi_get_typedarray_info(env, v, &mut ty, &mut len, &mut data, &mut ab, &mut off)
        };
        let elem = match ty {
            sys::TypedarrayType::int8_array
            | sys::TypedarrayType::uint8_array
            | sys::TypedarrayType::uint8_clamped_array => 1,
            sys::TypedarrayType::int16_array | sys::TypedarrayType::uint16_array => 2,
            sys::TypedarrayType::int32_array
            | sys::TypedarrayType::uint32_array
            | sys::TypedarrayType::float32_array => 4,
            _ => 8,
        };
        return Some(if data.is_null() {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(data as *const u8, len * elem) }
        });
    }
    unsafe { sys::napi_is_dataview(env, v, &mut is) };
    if is {
        let mut len = 0usize;
        let mut data: *mut c_void = ptr::null_mut();
        let mut ab = ptr::null_mut();
        let mut off = 0usize;
        unsafe { sys::napi_get_dataview_info(env, v, &mut len, &mut data, &mut ab, &mut off) };
        return Some(if data.is_null() {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(data as *const u8, len) }
        });
    }
    None
}

/// Reads a JS string into `buf` (UTF-8).
unsafe fn read_string(env: sys::napi_env, v: sys::napi_value, buf: &mut Vec<u8>) {
    let mut len = 0usize;
    unsafe { sys::napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut len) };
    buf.clear();
    buf.reserve(len + 1);
    let mut written = 0usize;
    unsafe {
        sys::napi_get_value_string_utf8(env, v, buf.as_mut_ptr() as *mut _, len + 1, &mut written)
    };
    unsafe { buf.set_len(written) };
}

/// Converts one JS value to a SQL value (for the read pool, which binds later on another thread).
unsafe fn js_value(env: sys::napi_env, v: sys::napi_value) -> std::result::Result<SqlValue, Error> {
    match unsafe { type_of(env, v) } {
        sys::ValueType::napi_number => {
            let mut d = 0f64;
            unsafe { sys::napi_get_value_double(env, v, &mut d) };
            Ok(if d.fract() == 0.0 && d.abs() < 9.2e18 { SqlValue::Int(d as i64) } else { SqlValue::Real(d) })
        }
        sys::ValueType::napi_string => {
            let mut b = Vec::new();
            unsafe { read_string(env, v, &mut b) };
            Ok(SqlValue::Text(String::from_utf8(b).unwrap_or_default()))
        }
        sys::ValueType::napi_bigint => {
            let mut x = 0i64;
            let mut lossless = false;
            unsafe { sys::napi_get_value_bigint_int64(env, v, &mut x, &mut lossless) };
            if !lossless {
                return Err(bad("a bigint parameter is outside the signed 64-bit range SQLite stores"));
            }
            Ok(SqlValue::Int(x))
        }
        sys::ValueType::napi_boolean => {
            let mut b = false;
            unsafe { sys::napi_get_value_bool(env, v, &mut b) };
            Ok(SqlValue::Int(b as i64))
        }
        sys::ValueType::napi_null | sys::ValueType::napi_undefined => Ok(SqlValue::Null),
        sys::ValueType::napi_object => match unsafe { bytes_of(env, v) } {
            Some(b) => Ok(SqlValue::Blob(b.to_vec())),
            None => Err(bad(
                "SQL parameters must be numbers, strings, bigints, booleans, null or Uint8Array/Buffer; pass named parameters as one plain object",
            )),
        },
        _ => Err(bad("SQL parameters must be numbers, strings, bigints, booleans, null or Uint8Array/Buffer")),
    }
}

/// Binds one JS value to parameter `i`, without intermediate allocation.
unsafe fn bind_js(
    env: sys::napi_env,
    stmt: &RawStmt,
    i: usize,
    v: sys::napi_value,
) -> std::result::Result<(), Error> {
    match unsafe { type_of(env, v) } {
        sys::ValueType::napi_number => {
            let mut d = 0f64;
            unsafe { sys::napi_get_value_double(env, v, &mut d) };
            if d.fract() == 0.0 && d.abs() < 9.2e18 {
                stmt.bind_i64(i, d as i64)
            } else {
                stmt.bind_f64(i, d)
            }
        }
        sys::ValueType::napi_string => TEXT.with(|t| {
            let mut buf = t.borrow_mut();
            unsafe { read_string(env, v, &mut buf) };
            stmt.bind_text(i, &buf)
        }),
        sys::ValueType::napi_object => match unsafe { bytes_of(env, v) } {
            Some(b) => stmt.bind_blob(i, b),
            None => Err(bad(
                "SQL parameters must be numbers, strings, bigints, booleans, null or Uint8Array/Buffer; pass named parameters as one plain object",
            )),
        },
        _ => stmt.bind_value(i, &unsafe { js_value(env, v) }?),
    }
}

unsafe fn is_plain_object(env: sys::napi_env, v: sys::napi_value) -> bool {
    if unsafe { type_of(env, v) } != sys::ValueType::napi_object {
        return false;
    }
    let mut arr = false;
    unsafe { sys::napi_is_array(env, v, &mut arr) };
    !arr && unsafe { bytes_of(env, v) }.is_none()
}

unsafe fn is_array(env: sys::napi_env, v: sys::napi_value) -> bool {
    let mut arr = false;
    unsafe { sys::napi_is_array(env, v, &mut arr) };
    arr
}

unsafe fn array_items(
    env: sys::napi_env,
    v: sys::napi_value,
) -> std::result::Result<Vec<sys::napi_value>, Error> {
    let mut n = 0u32;
    unsafe { sys::napi_get_array_length(env, v, &mut n) };
    (0..n)
        .map(|i| {
            let mut e = ptr::null_mut();
            if unsafe { sys::napi_get_element(env, v, i, &mut e) } != sys::Status::napi_ok {
                return Err(unsafe { js_threw(env, "a parameter of the list") });
            }
            Ok(e)
        })
        .collect()
}

/// Binds `args` (the call's parameters) to `stmt`: one plain object = named, one
/// array = positional list, otherwise each argument is one positional parameter.
unsafe fn bind_args(
    env: sys::napi_env,
    stmt: &RawStmt,
    args: &[sys::napi_value],
) -> std::result::Result<(), Error> {
    let n = stmt.param_count();
    if args.len() == 1 && unsafe { is_plain_object(env, args[0]) } {
        let obj = args[0];
        for i in 1..=n {
            let name = stmt.param_name_ptr(i);
            if name.is_null() {
                return Err(bad("the statement uses positional parameters (?) but an object of named parameters was given"));
            }
            // SAFETY: the name is NUL-terminated and starts with its one-byte prefix.
            let bare = unsafe { name.add(1) };
            let mut has = false;
            let mut key = ptr::null_mut();
            unsafe { sys::napi_create_string_utf8(env, bare, -1isize, &mut key) };
            if unsafe { sys::napi_has_property(env, obj, key, &mut has) } != sys::Status::napi_ok {
                return Err(unsafe { js_threw(env, "the named parameters") });
            }
            if !has {
                return Err(bad(format!(
                    "missing named parameter {:?}",
                    stmt.param_name(i).map(|s| &s[1..]).unwrap_or("")
                )));
            }
            let mut v = ptr::null_mut();
            if unsafe { sys::napi_get_property(env, obj, key, &mut v) } != sys::Status::napi_ok {
                return Err(unsafe { js_threw(env, "a named parameter") });
            }
            unsafe { bind_js(env, stmt, i, v) }?;
        }
        return Ok(());
    }
    let items;
    let list: &[sys::napi_value] = if args.len() == 1 && unsafe { is_array(env, args[0]) } {
        items = unsafe { array_items(env, args[0]) }?;
        &items
    } else {
        args
    };
    if list.len() != n {
        return Err(bad(format!(
            "the statement has {n} parameter(s) but {} were given",
            list.len()
        )));
    }
    for (i, v) in list.iter().enumerate() {
        unsafe { bind_js(env, stmt, i + 1, *v) }?;
    }
    Ok(())
}

/// Parameters for the read pool.
unsafe fn js_params(env: sys::napi_env, v: sys::napi_value) -> std::result::Result<Params, Error> {
    match unsafe { type_of(env, v) } {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => Ok(Params::None),
        _ if unsafe { is_array(env, v) } => Ok(Params::Positional(
            unsafe { array_items(env, v) }?
                .into_iter()
                .map(|e| unsafe { js_value(env, e) })
                .collect::<std::result::Result<_, _>>()?,
        )),
        _ if unsafe { is_plain_object(env, v) } => {
            let mut keys = ptr::null_mut();
            if unsafe { sys::napi_get_property_names(env, v, &mut keys) } != sys::Status::napi_ok {
                return Err(unsafe { js_threw(env, "the named parameters") });
            }
            let mut out = Vec::new();
            for k in unsafe { array_items(env, keys) }? {
                let mut name = Vec::new();
                unsafe { read_string(env, k, &mut name) };
                let mut val = ptr::null_mut();
                if unsafe { sys::napi_get_property(env, v, k, &mut val) } != sys::Status::napi_ok {
                    return Err(unsafe { js_threw(env, "a named parameter") });
                }
                out.push((String::from_utf8(name).unwrap_or_default(), unsafe {
                    js_value(env, val)
                }?));
            }
            Ok(Params::Named(out))
        }
        _ => Err(bad(
            "query parameters must be an array (positional) or a plain object (named)",
        )),
    }
}

unsafe fn to_js(env: sys::napi_env, c: ColumnRef<'_>, safe_integers: bool) -> sys::napi_value {
    let mut out = ptr::null_mut();
    unsafe {
        match c {
            ColumnRef::Null => sys::napi_get_null(env, &mut out),
            ColumnRef::Int(i) if safe_integers || !(-MAX_SAFE..=MAX_SAFE).contains(&i) => {
                sys::napi_create_bigint_int64(env, i, &mut out)
            }
            ColumnRef::Int(i) => sys::napi_create_int64(env, i, &mut out),
            ColumnRef::Real(f) => sys::napi_create_double(env, f, &mut out),
            ColumnRef::Text(t) => sys::napi_create_string_utf8(
                env,
                t.as_ptr() as *const _,
                t.len() as isize,
                &mut out,
            ),
            ColumnRef::Blob(b) => sys::napi_create_buffer_copy(
                env,
                b.len(),
                b.as_ptr() as *const c_void,
                ptr::null_mut(),
                &mut out,
            ),
        };
    }
    out
}

unsafe fn row_object(env: sys::napi_env, stmt: &RawStmt, safe: bool) -> sys::napi_value {
    let mut obj = ptr::null_mut();
    unsafe { sys::napi_create_object(env, &mut obj) };
    for i in 0..stmt.column_count() {
        let v = unsafe { to_js(env, stmt.column(i), safe) };
        unsafe { sys::napi_set_named_property(env, obj, stmt.column_name_ptr(i), v) };
    }
    obj
}

// ---------------------------------------------------------------------------
// raw statement functions

/// Throws `e` (see `guard::throw`), with the JS value a parameter getter threw as its cause.
fn throw(env: sys::napi_env, e: &Error) -> sys::napi_value {
    let cause = CAUSE.with(|c| c.replace(ptr::null_mut()));
    let mut pending = false;
    // SAFETY: JS thread, live env.
    unsafe { sys::napi_is_exception_pending(env, &mut pending) };
    if pending {
        return ptr::null_mut();
    }
    if cause.is_null() {
        return guard::throw(env, e);
    }
    // SAFETY: JS thread, live env; `cause` is a value of the current call.
    unsafe {
        let error = guard::js_error(env, e);
        if !error.is_null() {
            sys::napi_set_named_property(env, error, c"cause".as_ptr(), cause);
            sys::napi_throw(env, error);
        }
    }
    ptr::null_mut()
}

const MAX_ARGS: usize = 32;

type StmtFn = unsafe fn(
    sys::napi_env,
    &SqlCtx,
    &mut RawStmt,
    bool,
    &[sys::napi_value],
) -> std::result::Result<sys::napi_value, Error>;

/// Whether a raw call starts running a statement (checked against the transaction
/// athanor owns) or continues an iteration already started.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    Run,
    Continue,
}

unsafe fn dispatch(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    f: StmtFn,
    start: Start,
) -> sys::napi_value {
    let mut argv = [ptr::null_mut(); MAX_ARGS];
    let mut argc = MAX_ARGS;
    let mut data: *mut c_void = ptr::null_mut();
    if unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            &mut data,
        )
    } != sys::Status::napi_ok
        || data.is_null()
    {
        return throw(env, &bad("bad call"));
    }
    if argc > MAX_ARGS {
        // More arguments than the stack array: take them all from a heap array.
        let mut big = vec![ptr::null_mut(); argc];
        let mut n = argc;
        unsafe {
            sys::napi_get_cb_info(
                env,
                info,
                &mut n,
                big.as_mut_ptr(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        return unsafe { dispatch_args(env, data, &big[..n], f, start) };
    }
    unsafe { dispatch_args(env, data, &argv[..argc], f, start) }
}

unsafe fn dispatch_args(
    env: sys::napi_env,
    data: *mut c_void,
    args: &[sys::napi_value],
    f: StmtFn,
    start: Start,
) -> sys::napi_value {
    CAUSE.with(|c| c.set(ptr::null_mut()));
    // SAFETY: `data` is the boxed Rc<SqlCtx> installed by `install`, freed only by the
    // function's finalizer.
    let ctx: &Rc<SqlCtx> = unsafe { &*(data as *const Rc<SqlCtx>) };
    let mut handle = 0u32;
    if args.is_empty()
        || unsafe { sys::napi_get_value_uint32(env, args[0], &mut handle) } != sys::Status::napi_ok
    {
        return throw(env, &bad("expected a statement handle"));
    }
    let r = catch(|| {
        ctx.with(|conn| {
            let stmt = match start {
                Start::Run => conn.runnable_stmt(handle >> 1)?,
                Start::Continue => conn.stmt(handle >> 1)?,
            };
            unsafe { f(env, ctx, stmt, handle & 1 == 1, &args[1..]) }
        })
    });
    match r {
        Ok(v) => v,
        Err(e) => throw(env, &e),
    }
}

unsafe fn do_run(
    env: sys::napi_env,
    ctx: &SqlCtx,
    stmt: &mut RawStmt,
    _safe: bool,
    args: &[sys::napi_value],
) -> std::result::Result<sys::napi_value, Error> {
    stmt.reset();
    unsafe { bind_args(env, stmt, args) }?;
    while stmt.step()? {}
    stmt.reset();
    let changes = if stmt.readonly() { 0 } else { stmt.changes() };
    let rowid = stmt.last_insert_rowid();
    let p = ctx.rowid.get();
    if !p.is_null() {
        // SAFETY: the JS wrapper keeps the 16-byte scratch alive as long as the handle.
        unsafe {
            (p as *mut f64).write_unaligned(rowid as f64);
            (p.add(8) as *mut i64).write_unaligned(rowid);
        }
    }
    let mut out = ptr::null_mut();
    unsafe { sys::napi_create_double(env, changes as f64, &mut out) };
    Ok(out)
}

unsafe fn do_get(
    env: sys::napi_env,
    _ctx: &SqlCtx,
    stmt: &mut RawStmt,
    safe: bool,
    args: &[sys::napi_value],
) -> std::result::Result<sys::napi_value, Error> {
    stmt.reset();
    unsafe { bind_args(env, stmt, args) }?;
    let out = if stmt.step()? {
        unsafe { row_object(env, stmt, safe) }
    } else {
        let mut u = ptr::null_mut();
        unsafe { sys::napi_get_undefined(env, &mut u) };
        u
    };
    stmt.reset();
    Ok(out)
}

unsafe fn do_all(
    env: sys::napi_env,
    _ctx: &SqlCtx,
    stmt: &mut RawStmt,
    safe: bool,
    args: &[sys::napi_value],
) -> std::result::Result<sys::napi_value, Error> {
    stmt.reset();
    unsafe { bind_args(env, stmt, args) }?;
    let mut arr = ptr::null_mut();
    unsafe { sys::napi_create_array(env, &mut arr) };
    let mut i = 0u32;
    while stmt.step()? {
        let row = unsafe { row_object(env, stmt, safe) };
        unsafe { sys::napi_set_element(env, arr, i, row) };
        i += 1;
    }
    stmt.reset();
    Ok(arr)
}

/// Binds for an iteration; returns the statement's generation, which `iterNext` checks.
unsafe fn do_iter_start(
    env: sys::napi_env,
    _ctx: &SqlCtx,
    stmt: &mut RawStmt,
    _safe: bool,
    args: &[sys::napi_value],
) -> std::result::Result<sys::napi_value, Error> {
    stmt.reset();
    unsafe { bind_args(env, stmt, args) }?;
    let mut out = ptr::null_mut();
    unsafe { sys::napi_create_uint32(env, stmt.generation(), &mut out) };
    Ok(out)
}

/// Next row of an iteration, or undefined at the end (the statement is then reset).
unsafe fn do_iter_next(
    env: sys::napi_env,
    _ctx: &SqlCtx,
    stmt: &mut RawStmt,
    safe: bool,
    args: &[sys::napi_value],
) -> std::result::Result<sys::napi_value, Error> {
    let mut gen = 0u32;
    if args.len() != 1
        || unsafe { sys::napi_get_value_uint32(env, args[0], &mut gen) } != sys::Status::napi_ok
    {
        return Err(bad("iterNext expects the generation"));
    }
    if gen != stmt.generation() {
        return Err(bad("the statement was run again while this iteration was open; finish an iterate() loop before reusing its statement"));
    }
    if stmt.step()? {
        Ok(unsafe { row_object(env, stmt, safe) })
    } else {
        stmt.reset();
        let mut u = ptr::null_mut();
        unsafe { sys::napi_get_undefined(env, &mut u) };
        Ok(u)
    }
}

unsafe extern "C" fn raw_run(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    unsafe { dispatch(env, info, do_run, Start::Run) }
}
unsafe extern "C" fn raw_get(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    unsafe { dispatch(env, info, do_get, Start::Run) }
}
unsafe extern "C" fn raw_all(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    unsafe { dispatch(env, info, do_all, Start::Run) }
}
unsafe extern "C" fn raw_iter_start(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    unsafe { dispatch(env, info, do_iter_start, Start::Run) }
}
unsafe extern "C" fn raw_iter_next(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    unsafe { dispatch(env, info, do_iter_next, Start::Continue) }
}

/// Creates the raw statement functions bound to `ctx` and sets them on `target`.
unsafe fn install(
    env: sys::napi_env,
    target: sys::napi_value,
    ctx: &Rc<SqlCtx>,
) -> std::result::Result<(), Error> {
    let fns: [(&str, sys::napi_callback); 5] = [
        ("run", Some(raw_run)),
        ("get", Some(raw_get)),
        ("all", Some(raw_all)),
        ("iterStart", Some(raw_iter_start)),
        ("iterNext", Some(raw_iter_next)),
    ];
    unsafe { crate::fast::install_bound(env, target, ctx, &fns, "SQL statement functions") }
}
