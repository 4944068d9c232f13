use std::time::Duration;

use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};

use super::*;

/// Runs `f` on the worker's runtime and returns what it gives.
fn on_worker<T: Send + 'static>(worker: &Worker, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    worker.handle().spawn(async move {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap()
}

/// The calling thread's scheduling policy and nice value.
fn priority() -> (ThreadSchedulePolicy, i32) {
    let policy = thread_priority::thread_schedule_policy().unwrap();
    let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
    (policy, nice)
}

#[test]
fn the_thread_is_named_and_runs_at_the_lowest_priority() {
    let before = priority();
    let worker = Worker::start().unwrap();
    let (name, (policy, nice)) = on_worker(&worker, || {
        let name = std::thread::current().name().map(str::to_owned);
        (name, priority())
    });
    assert_eq!(name.as_deref(), Some(THREAD_NAME));
    assert_eq!(
        policy,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
    );
    assert_eq!(nice, NICE);
    // Only that thread: the caller's policy and priority are untouched.
    assert_eq!(priority(), before);
}

#[test]
fn dropping_the_worker_ends_its_tasks() {
    struct Signal(std::sync::mpsc::Sender<()>);
    impl Drop for Signal {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let worker = Worker::start().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    worker.handle().spawn(async move {
        let _signal = Signal(tx);
        let _ = started_tx.send(());
        std::future::pending::<()>().await;
    });
    started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        rx.try_recv().is_err(),
        "the task runs until the worker is dropped"
    );
    drop(worker);
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the runtime shut down and dropped the task");
}
