use std::time::Duration;

use super::*;

/// Runs `f` on the worker's runtime and returns what it gives.
fn on_worker<T: Send + 'static>(worker: &Worker, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    worker.handle().spawn(async move {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap()
}

#[test]
fn the_thread_is_named_and_runs_at_the_lowest_priority() {
    let mine = || rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
    let before = mine();
    let worker = Worker::start().unwrap();
    let (name, nice) = on_worker(&worker, || {
        let name = std::thread::current().name().map(str::to_owned);
        let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        (name, nice)
    });
    assert_eq!(name.as_deref(), Some(THREAD_NAME));
    assert_eq!(nice, NICE);
    // Only that thread: the caller's priority is untouched.
    assert_eq!(mine(), before);
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
