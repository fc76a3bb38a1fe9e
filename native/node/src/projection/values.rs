//! JS values <-> SQL values, read and written straight through N-API.

use super::*;

// Thread-local scratch for string parameters (SQLite copies them at bind).
thread_local! {
    pub(super) static TEXT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// What JS threw while a parameter was read, attached as the cause of the error
    /// `throw` raises (valid only within the current native call).
    pub(super) static CAUSE: Cell<sys::napi_value> = const { Cell::new(ptr::null_mut()) };
}

/// Turns a JS exception raised while reading `what` (a throwing getter, a revoked
/// proxy) into a typed error, keeping the thrown value for the error's cause.
pub(super) unsafe fn js_threw(env: sys::napi_env, what: &str) -> Error {
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

pub(super) fn bad(msg: impl Into<String>) -> Error {
    Error::invalid(msg)
}

pub(super) unsafe fn type_of(env: sys::napi_env, v: sys::napi_value) -> sys::napi_valuetype {
    let mut t = 0;
    unsafe { sys::napi_typeof(env, v, &mut t) };
    t
}

/// Bytes of a Buffer / TypedArray / DataView, or None if `v` is none of those.
pub(super) unsafe fn bytes_of<'a>(env: sys::napi_env, v: sys::napi_value) -> Option<&'a [u8]> {
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
pub(super) unsafe fn read_string(env: sys::napi_env, v: sys::napi_value, buf: &mut Vec<u8>) {
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
pub(super) unsafe fn js_value(
    env: sys::napi_env,
    v: sys::napi_value,
) -> std::result::Result<SqlValue, Error> {
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
pub(super) unsafe fn bind_js(
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

pub(super) unsafe fn is_plain_object(env: sys::napi_env, v: sys::napi_value) -> bool {
    if unsafe { type_of(env, v) } != sys::ValueType::napi_object {
        return false;
    }
    let mut arr = false;
    unsafe { sys::napi_is_array(env, v, &mut arr) };
    !arr && unsafe { bytes_of(env, v) }.is_none()
}

pub(super) unsafe fn is_array(env: sys::napi_env, v: sys::napi_value) -> bool {
    let mut arr = false;
    unsafe { sys::napi_is_array(env, v, &mut arr) };
    arr
}

pub(super) unsafe fn array_items(
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
pub(super) unsafe fn bind_args(
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
pub(super) unsafe fn js_params(
    env: sys::napi_env,
    v: sys::napi_value,
) -> std::result::Result<Params, Error> {
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

pub(super) unsafe fn to_js(
    env: sys::napi_env,
    c: ColumnRef<'_>,
    safe_integers: bool,
) -> sys::napi_value {
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

pub(super) unsafe fn row_object(env: sys::napi_env, stmt: &RawStmt, safe: bool) -> sys::napi_value {
    let mut obj = ptr::null_mut();
    unsafe { sys::napi_create_object(env, &mut obj) };
    for i in 0..stmt.column_count() {
        let v = unsafe { to_js(env, stmt.column(i), safe) };
        unsafe { sys::napi_set_named_property(env, obj, stmt.column_name_ptr(i), v) };
    }
    obj
}
