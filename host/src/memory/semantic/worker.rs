//! The index thread: the only one that changes a namespace's state (see
//! [`namespace`](super::namespace)). It takes in inbox events and builds and
//! extends graphs, one namespace step at a time, round robin.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};

use super::index::IndexParams;
use super::namespace::Namespace;

pub(super) enum Job {
    /// Take in the namespace's inbox and do its index work.
    Work(Arc<Namespace>),
    /// Answer once no work is left.
    Flush(Sender<()>),
}

/// The index thread: steps every namespace with work, round robin, until
/// none is left, then waits for more.
pub(super) fn run_worker(jobs: Receiver<Job>, params: IndexParams) {
    let mut busy: Vec<Arc<Namespace>> = Vec::new();
    let mut flushes: Vec<Sender<()>> = Vec::new();
    loop {
        let first = if busy.is_empty() {
            match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        } else {
            match jobs.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        };
        for job in first.into_iter().chain(std::iter::from_fn(|| jobs.try_recv().ok())) {
            match job {
                Job::Work(ns) if !busy.iter().any(|b| Arc::ptr_eq(b, &ns)) => busy.push(ns),
                Job::Work(_) => {}
                Job::Flush(ack) => flushes.push(ack),
            }
        }
        busy.retain(|ns| {
            // Cleared before the step takes the inbox: an event queued after
            // this schedules the namespace again.
            ns.scheduled.store(false, AtomicOrdering::SeqCst);
            match catch_unwind(AssertUnwindSafe(|| ns.step(&params))) {
                Ok(more) => more,
                Err(_) => {
                    // Recall stays right: what is not in a graph is scanned.
                    tracing::error!(
                        namespace = ns.name,
                        "semantic index work panicked; the namespace is searched exactly"
                    );
                    false
                }
            }
        });
        if busy.is_empty() {
            for ack in flushes.drain(..) {
                let _ = ack.send(());
            }
        }
    }
}
