//! Where outcomes go: the sinks registered with the engine, and the routing of a
//! group's outcomes to them.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::outcome::{CommitInfo, CommitNotice, Completion};
use super::queue::{Reply, Request};
use crate::error::Result;

/// Receives outcomes and commit notices on the writer thread. Implementations must
/// not block (the bindings hand them to the JS thread through a threadsafe function).
pub trait CommitSink: Send + Sync {
    /// Takes a group's notice and the outcomes of this sink's transactions in it.
    fn deliver(&self, notice: CommitNotice, completions: Vec<Completion>);
    /// Whether this sink wants notices for groups that carry none of its completions.
    fn wants_notices(&self) -> bool;
}

/// What the writer shares with the engine that owns it: the sinks commits are reported to.
pub(crate) struct Shared {
    pub(crate) sinks: RwLock<Vec<(u64, Arc<dyn CommitSink>)>>,
}

/// Hands each request's result to its channel or sink, and the notice to every
/// sink that wants it.
pub(super) fn deliver(
    shared: &Shared,
    requests: Vec<Request>,
    results: Vec<Result<CommitInfo>>,
    notice: CommitNotice,
    applied_any: bool,
) {
    let mut by_sink: HashMap<u64, Vec<Completion>> = HashMap::new();
    for (req, result) in requests.into_iter().zip(results) {
        match req.reply {
            Reply::Channel(tx) => {
                let _ = tx.send(result);
            }
            Reply::Sink { sink, token } => by_sink
                .entry(sink)
                .or_default()
                .push(Completion { token, result }),
        }
    }
    let sinks = shared.sinks.read();
    for (id, sink) in sinks.iter() {
        let completions = by_sink.remove(id).unwrap_or_default();
        if !completions.is_empty() || (applied_any && sink.wants_notices()) {
            sink.deliver(notice, completions);
        }
    }
}
