//! The one error and panic policy of every export.
//!
//! Every `#[napi]` function and method runs its body through [`guard`] (async
//! work through [`task`], raw N-API callbacks through [`catch`] and [`throw`];
//! an export whose body only builds a task does all its work in the guarded compute):
//! a panic becomes an `ERR_INTERNAL` error carrying the panic message instead of
//! unwinding into Node (which aborts the process), and an engine error reaches
//! JavaScript as an `Error` whose data says what happened:
//!
//! - `code`: athanor's stable code (`ERR_CONFLICT`, ...);
//! - `sqliteCode`: SQLite's extended result code, when SQLite raised it;
//! - `cause`: the foreign error behind it (heed, rusqlite, io), as a chain of
//!   `Error`s whose messages are the causes' texts.
//!
//! The message keeps its `ERR_X: ` prefix, so an error read straight from the
//! binding still says what it is; `ts/errors.ts` takes the code from `code`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use athanor_core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi::sys;

/// The result engine code returns.
pub(crate) type CoreResult<T> = std::result::Result<T, CoreError>;

/// Runs `f` with panics caught: a panic becomes `ERR_INTERNAL` with its message.
pub(crate) fn catch<T>(f: impl FnOnce() -> CoreResult<T>) -> CoreResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        Err(CoreError::internal(format!(
            "internal error (a bug in athanor: please report it): {what}"
        )))
    })
}

/// Runs an export's body: panics caught, an engine error thrown as a JS `Error`
/// carrying `code`, `sqliteCode` and `cause` (see the module comment).
pub(crate) fn guard<T>(env: &Env, f: impl FnOnce() -> CoreResult<T>) -> Result<T> {
    catch(f).map_err(|e| to_napi(env.raw(), &e))
}

/// Like [`guard`] for bodies that already speak `napi::Result` (they convert JS
/// values with napi-rs): panics become `ERR_INTERNAL`, other errors pass through.
pub(crate) fn guard_napi<T>(env: &Env, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut napi_error = None;
    let r = catch(|| {
        f().map_err(|e| {
            napi_error = Some(e);
            CoreError::internal("")
        })
    });
    match (r, napi_error) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(to_napi(env.raw(), &e)),
    }
}

/// The `napi::Error` that throws (or rejects with) the JS error built for `e`.
pub(crate) fn to_napi(env: sys::napi_env, e: &CoreError) -> Error {
    // SAFETY: called on the JS thread with the env of the current call.
    let value = unsafe { js_error(env, e) };
    if value.is_null() {
        // The env could not build an object (it is shutting down): the text still says what.
        return Error::new(
            Status::GenericFailure,
            format!("{}: {}", e.code.as_str(), e.message),
        );
    }
    // SAFETY: `value` is a live JS value of this env.
    Error::from(unsafe { Unknown::from_raw_unchecked(env, value) })
}

/// Throws the JS error for `e` from a raw N-API callback; returns the null value
/// such a callback answers with. Does nothing if an exception is already pending.
pub(crate) fn throw(env: sys::napi_env, e: &CoreError) -> sys::napi_value {
    let mut pending = false;
    // SAFETY: JS thread, live env.
    unsafe { sys::napi_is_exception_pending(env, &mut pending) };
    if !pending {
        let error = unsafe { js_error(env, e) };
        if !error.is_null() {
            unsafe { sys::napi_throw(env, error) };
        }
    }
    ptr::null_mut()
}

unsafe fn string(env: sys::napi_env, s: &str) -> sys::napi_value {
    let mut out = ptr::null_mut();
    unsafe { sys::napi_create_string_utf8(env, s.as_ptr().cast(), s.len() as isize, &mut out) };
    out
}

/// Builds the JS `Error` for `e` (null if the env refuses).
///
/// # Safety
/// JS thread, live env.
pub(crate) unsafe fn js_error(env: sys::napi_env, e: &CoreError) -> sys::napi_value {
    let text = format!("{}: {}", e.code.as_str(), e.message);
    let mut error = ptr::null_mut();
    unsafe {
        let code = string(env, e.code.as_str());
        let msg = string(env, &text);
        if sys::napi_create_error(env, code, msg, &mut error) != sys::Status::napi_ok {
            return ptr::null_mut();
        }
        if let Some(rc) = e.sqlite_code {
            let mut n = ptr::null_mut();
            sys::napi_create_int32(env, rc, &mut n);
            sys::napi_set_named_property(env, error, c"sqliteCode".as_ptr(), n);
        }
        // Innermost cause first, so each link can point at the one below it.
        let mut below: sys::napi_value = ptr::null_mut();
        for cause in e.causes().iter().rev() {
            let mut link = ptr::null_mut();
            if sys::napi_create_error(env, ptr::null_mut(), string(env, cause), &mut link)
                != sys::Status::napi_ok
            {
                break;
            }
            if !below.is_null() {
                sys::napi_set_named_property(env, link, c"cause".as_ptr(), below);
            }
            below = link;
        }
        if !below.is_null() {
            sys::napi_set_named_property(env, error, c"cause".as_ptr(), below);
        }
    }
    error
}

/// Work for the libuv pool that speaks engine errors; [`task`] wraps it in the policy.
pub trait Work: Send + Sized {
    type Output: Send + Sized + 'static;
    type JsValue: ToNapiValue + TypeName;
    /// Runs off the JS thread.
    fn compute(&mut self) -> CoreResult<Self::Output>;
    /// Converts the output on the JS thread.
    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<Self::JsValue>;
}

/// A [`Work`] run under the policy: its panics and errors reject the promise with
/// the same JS error a synchronous call would throw.
pub struct Guarded<W> {
    work: W,
    /// The engine error of a failed `compute`, kept for `reject`, which runs on the
    /// JS thread where the error object can be built.
    failure: Option<CoreError>,
}

/// Wraps `work` for an `AsyncTask`.
pub(crate) fn task<W: Work>(work: W) -> AsyncTask<Guarded<W>> {
    AsyncTask::new(Guarded {
        work,
        failure: None,
    })
}

impl<W: Work> Task for Guarded<W> {
    type Output = W::Output;
    type JsValue = W::JsValue;
    fn compute(&mut self) -> Result<W::Output> {
        let work = &mut self.work;
        catch(|| work.compute()).map_err(|e| {
            let text = format!("{}: {}", e.code.as_str(), e.message);
            self.failure = Some(e);
            Error::new(Status::GenericFailure, text)
        })
    }
    fn resolve(&mut self, env: Env, output: W::Output) -> Result<W::JsValue> {
        let work = &mut self.work;
        guard_napi(&env, || work.resolve(env, output))
    }
    fn reject(&mut self, env: Env, err: Error) -> Result<W::JsValue> {
        Err(match self.failure.take() {
            Some(e) => to_napi(env.raw(), &e),
            None => err,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use athanor_core::Code;

    #[test]
    fn a_panic_becomes_err_internal_with_its_message() {
        let r: CoreResult<()> = catch(|| panic!("index out of range at store.rs"));
        let e = r.unwrap_err();
        assert_eq!(e.code, Code::Internal);
        assert!(
            e.message.contains("index out of range at store.rs"),
            "{}",
            e.message
        );
        let r: CoreResult<()> = catch(|| panic!("{} formatted", 42));
        assert!(r.unwrap_err().message.contains("42 formatted"));
    }

    #[test]
    fn errors_and_values_pass_through() {
        assert_eq!(catch(|| Ok(5)).unwrap(), 5);
        let e = catch::<()>(|| Err(CoreError::invalid("bad"))).unwrap_err();
        assert_eq!(e, CoreError::invalid("bad"));
    }
}
