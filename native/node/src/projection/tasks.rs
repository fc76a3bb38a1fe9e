//! Work off the JS thread: read-pool queries and declarative batches.

use super::*;

/// Read-pool query task.
pub struct QueryTask {
    pub(super) pool: Arc<ReadPool>,
    pub(super) sql: String,
    pub(super) params: Params,
    pub(super) safe_integers: bool,
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

pub(super) enum DeclOp {
    Batch(usize),
    Retry(i64),
}

/// A declarative batch (or dead-letter retry) on the background connection.
pub struct DeclTask {
    pub(super) engine: Arc<Engine>,
    pub(super) bg: Arc<Background>,
    pub(super) spec: Arc<Spec>,
    pub(super) op: DeclOp,
}

/// What a declarative batch (or dead-letter retry) did, before it is turned into JS.
pub struct DeclOutcome {
    consumed: u32,
    cursor: u64,
    failed_event_id: Option<u64>,
    error: Option<Error>,
}

/// What a declarative batch reports to JS.
#[napi(object, object_from_js = false)]
pub struct DeclResult {
    pub consumed: u32,
    pub cursor: BigInt,
    pub failed_event_id: Option<BigInt>,
    /// Why the event failed (a batch) or failed again (a retry): the same `Error` a
    /// thrown engine error is, with `code`, `sqliteCode` and its `cause` chain.
    #[napi(ts_type = "Error")]
    pub error: Option<RawJs>,
}

impl Work for DeclTask {
    type Output = DeclOutcome;
    type JsValue = DeclResult;
    fn compute(&mut self) -> CoreResult<DeclOutcome> {
        match self.op {
            DeclOp::Batch(limit) => {
                let o = self.bg.run_batch(&self.engine, &self.spec, limit)?;
                let (failed_event_id, error) = match o.failure {
                    Some(f) => (Some(f.event_id), Some(f.error)),
                    None => (None, None),
                };
                Ok(DeclOutcome {
                    consumed: o.consumed,
                    cursor: o.cursor,
                    failed_event_id,
                    error,
                })
            }
            DeclOp::Retry(id) => {
                let error = self.bg.retry_dead_letter(&self.engine, &self.spec, id)?;
                Ok(DeclOutcome {
                    consumed: error.is_none() as u32,
                    cursor: 0,
                    failed_event_id: None,
                    error,
                })
            }
        }
    }
    fn resolve(&mut self, env: Env, out: DeclOutcome) -> Result<DeclResult> {
        let error = match out.error {
            Some(e) => {
                // SAFETY: `resolve` runs on the JS thread with the env of the call.
                let value = unsafe { guard::js_error(env.raw(), &e) };
                if value.is_null() {
                    return Err(guard::to_napi(env.raw(), &e));
                }
                Some(RawJs(value))
            }
            None => None,
        };
        Ok(DeclResult {
            consumed: out.consumed,
            cursor: BigInt::from(out.cursor),
            failed_event_id: out.failed_event_id.map(BigInt::from),
            error,
        })
    }
}
