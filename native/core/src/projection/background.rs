//! The background connection declarative projections run on: opened on first use (off
//! the JS thread), one batch at a time, closed with the database handle. Kept apart
//! from the handle's own connection so a batch never waits for the JS thread and JS
//! statements never wait for a batch (SQLite's write lock orders the two).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::declarative::{BatchOutcome, DeclConn, Spec};
use super::sql::{Role, SqlConn};
use crate::engine::Engine;
use crate::error::{Code, Error, Result};

enum State {
    /// Not opened yet (opened by the first batch).
    Idle,
    Open(Box<DeclConn>),
    Closed,
}

/// The background connection of one database handle.
pub struct Background {
    path: PathBuf,
    state: Mutex<State>,
    /// Set by [`Background::close`]; the batch in flight, if any, closes the connection when it ends.
    closing: AtomicBool,
}

fn closed() -> Error {
    Error::new(
        Code::Closed,
        "the database is closed; open it again with Athanor.open()",
    )
}

impl Background {
    /// A background connection to `<dir>/projection.db`, opened on first use.
    pub fn new(dir: &Path) -> Background {
        Background {
            path: super::file_path(dir),
            state: Mutex::new(State::Idle),
            closing: AtomicBool::new(false),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut DeclConn) -> Result<T>) -> Result<T> {
        let mut state = self.state.lock();
        if self.closing.load(Ordering::Acquire) {
            *state = State::Closed;
        }
        if matches!(*state, State::Idle) {
            *state = State::Open(Box::new(DeclConn::new(SqlConn::open(
                &self.path,
                Role::ReadWrite,
            )?)));
        }
        let r = match &mut *state {
            State::Open(conn) => f(conn),
            _ => Err(closed()),
        };
        if self.closing.load(Ordering::Acquire) {
            *state = State::Closed;
        }
        r
    }

    /// Applies the next batch of `spec` (see [`DeclConn::run_batch`]). Blocks while
    /// another batch runs on this connection.
    pub fn run_batch(&self, engine: &Engine, spec: &Spec, limit: usize) -> Result<BatchOutcome> {
        self.with(|c| c.run_batch(engine, spec, limit))
    }

    /// Re-applies dead letter `id` of `spec` (see [`DeclConn::retry_dead_letter`]).
    pub fn retry_dead_letter(
        &self,
        engine: &Engine,
        spec: &Spec,
        id: i64,
    ) -> Result<Option<Error>> {
        self.with(|c| c.retry_dead_letter(engine, spec, id))
    }

    /// Closes the connection; later batches fail with `ERR_CLOSED`. Never waits: a
    /// batch in flight ends its transaction and closes the connection itself.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        if let Some(mut state) = self.state.try_lock() {
            *state = State::Closed;
        }
    }
}
