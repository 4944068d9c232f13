//! Entries made off the request thread: a finished request's `Pending` waits here, and a
//! task on the access log's own thread ([`super::worker`]) makes and queues its entries.
//!
//! ```text
//!  response body done ─▶ Deferred::push(Box<Pending>) ─▶ drain, every DRAIN_INTERVAL
//!  (request thread: a pointer into a lock-free array,     (access-log thread): entry ─▶ Sink
//!   no lock, no wake-up)
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
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
    time::Duration,
};

use crossbeam_queue::ArrayQueue;
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
///
/// Lock-free: the drain task runs at the lowest priority ([`super::worker`]), and a request
/// thread that waited for a lock it held would wait for whatever else the CPU runs first.
#[derive(Debug)]
pub struct Deferred {
    /// The request path hands over the box it has: a pointer, not a copy of the request.
    waiting: ArrayQueue<Box<Pending>>,
    /// Whether a drain task runs (and will take what is pushed); set once.
    draining: AtomicBool,
    /// The sinks are gone: the task makes what waits and ends; later requests' entries are
    /// made where they finish. Set once.
    closed: AtomicBool,
    /// Wakes the drain task: [`WAKE_AT`] requests wait, or the sinks are gone.
    ready: Notify,
}

impl Default for Deferred {
    fn default() -> Self {
        Deferred {
            waiting: ArrayQueue::new(MAX_DEFERRED),
            draining: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            ready: Notify::new(),
        }
    }
}

impl Deferred {
    /// Starts the task that makes the entries on `runtime`, once; until then, entries are made
    /// where requests finish.
    pub(crate) fn start(self: &Arc<Self>, runtime: &Handle) {
        if self.closed.load(SeqCst) || self.draining.swap(true, SeqCst) {
            return;
        }
        runtime.spawn(Arc::clone(self).drain());
    }

    /// `pending`'s entries are made by the drain task; here, when none runs; dropped and
    /// counted when [`MAX_DEFERRED`] wait.
    pub(crate) fn push(&self, pending: Box<Pending>) {
        if !self.draining.load(SeqCst) || self.closed.load(SeqCst) {
            drop(pending);
            return;
        }
        if let Err(pending) = self.waiting.push(pending) {
            pending.discard();
            return;
        }
        // Closed since the check above: the task may have ended before this push, so what
        // waits is made here (closing is not on a request's path).
        if self.closed.load(SeqCst) {
            self.make_waiting();
        } else if self.waiting.len() >= WAKE_AT {
            self.ready.notify_one();
        }
    }

    /// No more sinks: the drain task makes what waits, then ends.
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
        self.ready.notify_one();
    }

    /// Makes the entries of what waits now (at most [`MAX_DEFERRED`], so a steady stream of
    /// pushes cannot keep one turn going).
    fn make_waiting(&self) {
        for _ in 0..MAX_DEFERRED {
            // Dropping a `Pending` makes its entries and queues them in their sinks.
            let Some(pending) = self.waiting.pop() else {
                return;
            };
            drop(pending);
        }
    }

    async fn drain(self: Arc<Self>) {
        // The first turn one interval in: a request finished as the task starts waits too.
        let first = tokio::time::Instant::now() + DRAIN_INTERVAL;
        let mut ticks = tokio::time::interval_at(first, DRAIN_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.ready.notified() => {}
            }
            // Read before the queue: a push that saw the queue open is then taken here, and
            // one that came later saw it closed and made its own.
            let closed = self.closed.load(SeqCst);
            self.make_waiting();
            if closed {
                return;
            }
        }
    }
}
