//! What the proxy's tasks share: the running configuration, swapped whole and read without a
//! lock, and the xDS status.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::{ads::XdsStatus, config::Runtime};

/// Shared by the ADS task, the listeners, the request path and the admin server.
#[derive(Debug)]
pub struct State {
    runtime: ArcSwap<Runtime>,
    /// Bumped on every publish; listeners and caches wait on it.
    generation: watch::Sender<u64>,
    pub xds: XdsStatus,
    /// Set by the admin `POST /healthcheck/fail`: the proxy reports not ready and closes
    /// HTTP/1.1 connections after each response, so clients move elsewhere (Envoy's drain).
    draining: AtomicBool,
}

impl Default for State {
    fn default() -> Self {
        State {
            runtime: ArcSwap::from_pointee(Runtime::default()),
            generation: watch::Sender::new(0),
            xds: XdsStatus::default(),
            draining: AtomicBool::new(false),
        }
    }
}

impl State {
    /// The configuration now. A request loads it once and keeps it to the end, so it sees one
    /// consistent configuration even if a new one arrives meanwhile.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Swaps in a new configuration; requests already running keep the one they loaded.
    pub fn publish(&self, runtime: Runtime) {
        self.runtime.store(Arc::new(runtime));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Whether the proxy was told to fail its health check and drain.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// A receiver that wakes on every publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
