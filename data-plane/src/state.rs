//! What the proxy's tasks share: the running configuration, swapped whole and read without a
//! lock, and the xDS status.

use std::sync::Arc;

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
}

impl Default for State {
    fn default() -> Self {
        State {
            runtime: ArcSwap::from_pointee(Runtime::default()),
            generation: watch::Sender::new(0),
            xds: XdsStatus::default(),
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

    /// A receiver that wakes on every publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
