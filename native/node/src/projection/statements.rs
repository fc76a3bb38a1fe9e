//! The raw statement functions (`run`/`get`/`all`/`iterate`) bound to the connection.

use super::*;

/// Throws `e` (see `guard::throw`), with the JS value a parameter getter threw as its cause.
pub(super) fn throw(env: sys::napi_env, e: &Error) -> sys::napi_value {
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

pub(super) const MAX_ARGS: usize = 32;

pub(super) type StmtFn = unsafe fn(
    sys::napi_env,
    &SqlCtx,
    &mut RawStmt,
    bool,
    &[sys::napi_value],
) -> std::result::Result<sys::napi_value, Error>;

/// Whether a raw call starts running a statement (checked against the transaction
/// athanor owns) or continues an iteration already started.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    Run,
    Continue,
}

pub(super) unsafe fn dispatch(
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

pub(super) unsafe fn dispatch_args(
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

pub(super) unsafe fn do_run(
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

pub(super) unsafe fn do_get(
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

pub(super) unsafe fn do_all(
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
pub(super) unsafe fn do_iter_start(
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
pub(super) unsafe fn do_iter_next(
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
pub(super) unsafe fn install(
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
