//! Entries made off the request thread: a finished request's [`Pending`] waits here, and a
//! task on the access log's own thread ([`super::worker`]) makes and queues its entries.
//!
//! ```text
//!  response body done ─▶ Deferred::push(Box<Pending>) ─▶ drain, every DRAIN_INTERVAL
//!  (request thread: a pointer into a Vec, no wake-up)     (access-log thread): entry ─▶ Sink
//! ```
//!
//! Building and encoding an entry costs a few µs; on the request thread it ran between the
//! response's write and the thread's return to its event loop, so the next hop of the request,
//! on the same CPU, waited for it. The request thread does not wake the drain task per
//! request (a wake-up is a syscall): the task takes what waits every [`DRAIN_INTERVAL`], or
//! once [`WAKE_AT`] requests wait. The queue is bounded ([`MAX_DEFERRED`]): past it a
//! request's entries are dropped and counted (`access_log_entries_dropped_total`), as when the
//! sink's buffer is full, so a starved thread never makes the request thread build them.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::{runtime::Handle, sync::Notify, time::MissedTickBehavior};

use super::Pending;

/// The most finished requests that wait for their entries: 1,024, about half a second of a
/// sidecar at 2,000 requests a second.
pub const MAX_DEFERRED: usize = 1024;

/// How often the drain task takes what waits: 10 ms. Entries then wait in their sink's
/// buffer for its flush interval (200 ms for a tap) anyway.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// This many waiting requests wake the drain task before its interval is up.
pub const WAKE_AT: usize = 128;

/// Finished requests whose entries are still to be made.
#[derive(Debug, Default)]
pub struct Deferred {
    inner: Mutex<Inner>,
    /// Wakes the drain task: [`WAKE_AT`] requests wait, or the sinks are gone.
    ready: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    #[expect(
        clippy::vec_box,
        reason = "the request path hands over the box it has: a pointer, not a copy of the request"
    )]
    waiting: Vec<Box<Pending>>,
    /// Whether a drain task runs (and will take what is pushed).
    draining: bool,
    /// The sinks are gone: the task makes what waits and ends; later requests' entries are
    /// made where they finish.
    closed: bool,
}

impl Deferred {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the task that makes the entries on `runtime`, once; until then, entries are made
    /// where requests finish.
    pub(crate) fn start(self: &Arc<Self>, runtime: &Handle) {
        let mut inner = self.lock();
        if inner.draining || inner.closed {
            return;
        }
        inner.draining = true;
        drop(inner);
        runtime.spawn(Arc::clone(self).drain());
    }

    /// `pending`'s entries are made by the drain task; here, when none runs; dropped and
    /// counted when [`MAX_DEFERRED`] wait.
    pub(crate) fn push(&self, pending: Box<Pending>) {
        let mut inner = self.lock();
        if !inner.draining || inner.closed {
            drop(inner);
            drop(pending);
            return;
        }
        if inner.waiting.len() >= MAX_DEFERRED {
            drop(inner);
            pending.discard();
            return;
        }
        inner.waiting.push(pending);
        let wake = inner.waiting.len() == WAKE_AT;
        drop(inner);
        if wake {
            self.ready.notify_one();
        }
    }

    /// No more sinks: the drain task makes what waits, then ends.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    async fn drain(self: Arc<Self>) {
        // The first turn one interval in: a request finished as the task starts waits too.
        let first = tokio::time::Instant::now() + DRAIN_INTERVAL;
        let mut ticks = tokio::time::interval_at(first, DRAIN_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Swapped with the queue at every turn, so neither side reallocates in steady state.
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.ready.notified() => {}
            }
            let closed = {
                let mut inner = self.lock();
                std::mem::swap(&mut inner.waiting, &mut batch);
                inner.closed
            };
            // Dropping a `Pending` makes its entries and queues them in their sinks.
            batch.clear();
            // Once closed nothing is queued any more (`push` makes it inline).
            if closed {
                return;
            }
        }
    }
}
