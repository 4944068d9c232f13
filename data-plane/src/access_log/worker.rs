//! The access log's own thread: a single-threaded runtime under `SCHED_IDLE` (and nice 19),
//! where finished requests' entries are made ([`super::deferred`]) and the streams to the
//! control plane run ([`super::sink`]).
//!
//! ```text
//!  request thread ── Box<Pending> ──▶ Deferred ──┐
//!                                                ▼        "access-log" thread, SCHED_IDLE
//!                               drain: build + encode ─▶ Outbox ─▶ stream: h2, TLS, write
//! ```
//!
//! A sidecar runs one request thread and shares its CPU with its app and the node's other
//! sidecars. A response it writes wakes the next hop of the request (often on the same CPU);
//! work the proxy does right after the write, on the same thread, runs before that hop does.
//! On this thread, what a tap costs beyond noting a request's fields runs only when nothing
//! else on the CPU wants to: a waking thread of any other policy preempts a `SCHED_IDLE` one at
//! once, where a nice 19 thread may keep the CPU for the rest of its slice. A thread that gets
//! no CPU for long fills the deferred queue, and further entries are dropped and counted,
//! never built on the request thread. Neither policy needs a privilege to take.

#[cfg(test)]
mod tests;

use tokio::{runtime::Handle, sync::oneshot};

/// The thread's nice value: the lowest, which lowering needs no privilege for. `SCHED_IDLE`
/// ignores it; it holds where that policy is refused (a seccomp profile that denies
/// `sched_setscheduler`).
pub const NICE: i32 = 19;

/// The thread's name, as `ps -L` and `/proc/<pid>/task/*/comm` show it.
pub const THREAD_NAME: &str = "access-log";

/// The running thread; dropping this ends it (and the tasks on its runtime).
#[derive(Debug)]
pub(crate) struct Worker {
    handle: Handle,
    /// Resolves the thread's `block_on` when dropped.
    _stop: oneshot::Sender<()>,
}

impl Worker {
    /// Starts the thread. A thread that cannot lower its priority still runs, and says so.
    pub(crate) fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                lower_priority();
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Worker {
            handle,
            _stop: stop,
        })
    }

    /// Where to spawn the access log's tasks.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Puts the calling thread under `SCHED_IDLE` at nice 19, or as close as it is let.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id, thread_schedule_policy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    // The crate also sets nice 0 after the policy, which fails unprivileged in a proxy that
    // runs niced; the policy read back below is what counts.
    let _ = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle);
    if thread_schedule_policy().ok() != Some(idle) {
        tracing::warn!("access log: its thread could not take SCHED_IDLE; nice 19 only");
    }
    let tid = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(tid), NICE) {
        tracing::warn!(%error, "access log: its thread keeps the proxy's nice value");
    }
}
