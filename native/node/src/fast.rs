//! The point-read hot path as raw N-API callbacks.
//!
//! A napi-rs class method pays for argument marshalling and `this` unwrapping on
//! every call (about 250 ns here, more than the LMDB lookup itself). Point reads
//! are the calls users make millions of times, so `get` and `txGet` are plain
//! N-API functions whose callback data points straight at the handle's read
//! context: one `napi_get_cb_info`, one `napi_get_value_uint32`, the lookup, one
//! `napi_create_int64`.

use std::cell::{Cell, RefCell};
use std::ffi::{c_void, CString};
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;

use athanor_core::{wire, CachedReader, Engine, Error, StateEntry};
use napi::sys;

use crate::guard::{catch, throw};

/// Shared scratch memory between JS and Rust for allocation-free point reads:
/// JS writes the key into `key`, Rust writes the value into `val`.
#[derive(Clone, Copy)]
pub(crate) struct Scratch {
    key: *const u8,
    key_cap: usize,
    val: *mut u8,
    pub(crate) val_cap: usize,
}

impl Scratch {
    pub(crate) const EMPTY: Scratch = Scratch {
        key: ptr::null(),
        key_cap: 0,
        val: ptr::null_mut(),
        val_cap: 0,
    };

    pub(crate) fn new(key: &[u8], val: &[u8]) -> Scratch {
        // The value buffer is JS memory that JS never reads while Rust writes it.
        Scratch {
            key: key.as_ptr(),
            key_cap: key.len(),
            val: val.as_ptr() as *mut u8,
            val_cap: val.len(),
        }
    }

    pub(crate) fn key(&self, len: u32) -> Result<&[u8], Error> {
        let len = len as usize;
        if self.key.is_null() || len > self.key_cap {
            return Err(Error::invalid("key does not fit the scratch buffer"));
        }
        // SAFETY: the JS wrapper keeps the scratch buffers alive as long as this handle,
        // calls only from the JS thread, and `len` is bounds-checked above.
        Ok(unsafe { std::slice::from_raw_parts(self.key, len) })
    }

    /// Copies `parts` back to back into the value scratch if they fit; returns the total length.
    pub(crate) fn put(&self, parts: &[&[u8]]) -> i64 {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total <= self.val_cap {
            let mut off = 0;
            for p in parts {
                // SAFETY: as above; `off + p.len() <= total <= val_cap`.
                unsafe { ptr::copy_nonoverlapping(p.as_ptr(), self.val.add(off), p.len()) };
                off += p.len();
            }
        }
        total as i64
    }
}

/// Everything a point read needs, shared by the handle and its fast functions.
pub(crate) struct ReadCtx {
    pub(crate) engine: RefCell<Option<Arc<Engine>>>,
    /// Renewed whenever a newer commit exists: top-level reads.
    pub(crate) reader: RefCell<CachedReader>,
    /// Renewed only at the start of each transaction attempt: one snapshot per callback.
    pub(crate) tx_reader: RefCell<CachedReader>,
    pub(crate) scratch: Cell<Scratch>,
    /// The namespace this handle reads and writes (0: the default namespace).
    pub(crate) ns: u32,
}

impl ReadCtx {
    pub(crate) fn engine(&self) -> Result<Arc<Engine>, Error> {
        self.engine.borrow().clone().ok_or_else(Error::closed)
    }

    /// Looks `key_len` bytes of the key scratch up, on the newest state or (`pinned`)
    /// on the transaction's snapshot, and hands the entry to `f` under the map guard.
    fn with_entry<T>(
        &self,
        pinned: bool,
        key_len: u32,
        f: impl FnOnce(Option<StateEntry<'_>>, &Scratch) -> T,
    ) -> Result<T, Error> {
        let engine = self.engine.borrow();
        let engine = engine.as_ref().ok_or_else(Error::closed)?;
        let scratch = self.scratch.get();
        let key = scratch.key(key_len)?;
        let store = engine.store();
        let mut reader = if pinned {
            self.tx_reader.borrow_mut()
        } else {
            self.reader.borrow_mut()
        };
        let txn = if pinned {
            reader.pinned(store)?
        } else {
            reader.fresh(store)?
        };
        let _g = store.guard();
        Ok(f(store.space(self.ns).get(txn, key)?, &scratch))
    }

    /// Newest-state read; value into scratch; -1 when absent.
    pub(crate) fn get(&self, key_len: u32) -> Result<i64, Error> {
        self.with_entry(false, key_len, |e, s| e.map_or(-1, |e| s.put(&[e.value])))
    }

    /// Read on the transaction's pinned snapshot; the entry ([`wire::entry`]) into scratch; -1 when absent.
    pub(crate) fn tx_get(&self, key_len: u32) -> Result<i64, Error> {
        self.with_entry(true, key_len, |e, s| {
            e.map_or(-1, |e| s.put(&[&wire::entry::header(e.version), e.value]))
        })
    }

    /// `get` for values larger than the scratch: returns a copy.
    pub(crate) fn get_copy(&self, key_len: u32) -> Result<Option<Vec<u8>>, Error> {
        self.with_entry(false, key_len, |e, _| e.map(|e| e.value.to_vec()))
    }

    /// `tx_get` for entries larger than the scratch: returns the entry ([`wire::entry`]).
    pub(crate) fn tx_get_copy(&self, key_len: u32) -> Result<Option<Vec<u8>>, Error> {
        self.with_entry(true, key_len, |e, _| {
            e.map(|e| wire::entry::pack(e.version, e.value))
        })
    }
}

impl ReadCtx {
    /// Starts a transaction attempt: renews the pinned read transaction to the
    /// newest state and returns the commit seq it reflects.
    pub(crate) fn tx_begin(&self) -> Result<u64, Error> {
        let engine = self.engine.borrow();
        let engine = engine.as_ref().ok_or_else(Error::closed)?;
        let store = engine.store();
        let mut reader = self.tx_reader.borrow_mut();
        let txn = reader.fresh(store)?;
        let _g = store.guard();
        store.commit_seq(txn)
    }
}

unsafe fn ctx_of<'a>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    argv: &mut [sys::napi_value],
) -> Option<(&'a Rc<ReadCtx>, usize)> {
    let mut argc = argv.len();
    let mut data: *mut c_void = ptr::null_mut();
    let ok = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            &mut data,
        )
    } == sys::Status::napi_ok;
    if !ok || data.is_null() {
        return None;
    }
    // SAFETY: `data` is the boxed Rc<ReadCtx> installed by `install`, freed only by the
    // function's finalizer, after which this callback can no longer run.
    Some((unsafe { &*(data as *const Rc<ReadCtx>) }, argc))
}

unsafe extern "C" fn raw_tx_begin(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let mut argv: [sys::napi_value; 0] = [];
    let Some((ctx, _)) = (unsafe { ctx_of(env, info, &mut argv) }) else {
        return throw(env, &Error::invalid("bad call"));
    };
    match catch(|| ctx.tx_begin()) {
        Ok(seq) => {
            let mut out = ptr::null_mut();
            unsafe { sys::napi_create_bigint_uint64(env, seq, &mut out) };
            out
        }
        Err(e) => throw(env, &e),
    }
}

type ReadFn = fn(&ReadCtx, u32) -> Result<i64, Error>;

unsafe fn call(env: sys::napi_env, info: sys::napi_callback_info, f: ReadFn) -> sys::napi_value {
    let mut argv = [ptr::null_mut(); 1];
    let mut len: u32 = 0;
    let ctx = match unsafe { ctx_of(env, info, &mut argv) } {
        Some((ctx, argc))
            if argc >= 1
                && unsafe { sys::napi_get_value_uint32(env, argv[0], &mut len) }
                    == sys::Status::napi_ok =>
        {
            ctx
        }
        _ => return throw(env, &Error::invalid("expected one key length argument")),
    };
    match catch(|| f(ctx, len)) {
        Ok(n) => {
            let mut out = ptr::null_mut();
            unsafe { sys::napi_create_int64(env, n, &mut out) };
            out
        }
        Err(e) => throw(env, &e),
    }
}

unsafe extern "C" fn raw_get(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    unsafe { call(env, info, ReadCtx::get) }
}

unsafe extern "C" fn raw_tx_get(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    unsafe { call(env, info, ReadCtx::tx_get) }
}

unsafe extern "C" fn finalize<T>(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` came from Box::into_raw in `install_bound` and is finalized exactly once.
    drop(unsafe { Box::from_raw(data as *mut Rc<T>) });
}

/// Creates raw N-API functions, each bound to its own reference to `ctx` (released
/// when the function is collected), and sets them on `target` under their names.
/// `what` names the set in the error raised if N-API refuses.
pub(crate) unsafe fn install_bound<T: 'static>(
    env: sys::napi_env,
    target: sys::napi_value,
    ctx: &Rc<T>,
    fns: &[(&str, sys::napi_callback)],
    what: &str,
) -> Result<(), Error> {
    for &(name, cb) in fns {
        let data = Box::into_raw(Box::new(ctx.clone())) as *mut c_void;
        let mut f = ptr::null_mut();
        let cname = CString::new(name).unwrap();
        let ok = unsafe {
            sys::napi_create_function(env, cname.as_ptr(), name.len() as isize, cb, data, &mut f)
                == sys::Status::napi_ok
                && sys::napi_add_finalizer(
                    env,
                    f,
                    data,
                    Some(finalize::<T>),
                    ptr::null_mut(),
                    ptr::null_mut(),
                ) == sys::Status::napi_ok
                && sys::napi_set_named_property(env, target, cname.as_ptr(), f)
                    == sys::Status::napi_ok
        };
        if !ok {
            return Err(Error::new(
                athanor_core::Code::Io,
                format!("could not create the {what}"),
            ));
        }
    }
    Ok(())
}

/// Creates the `get`, `txGet` and `txBegin` functions bound to `ctx` and sets them on `target`.
pub(crate) unsafe fn install(
    env: sys::napi_env,
    target: sys::napi_value,
    ctx: &Rc<ReadCtx>,
) -> Result<(), Error> {
    let fns: [(&str, sys::napi_callback); 3] = [
        ("get", Some(raw_get)),
        ("txGet", Some(raw_tx_get)),
        ("txBegin", Some(raw_tx_begin)),
    ];
    unsafe { install_bound(env, target, ctx, &fns, "fast read functions") }
}
