//! What the proxy's tasks share: the running configuration, swapped whole and read without a
//! lock, and the xDS status the ADS task writes and the admin server reads.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::{
    access_log::Buckets,
    config::{AccessLog, NetworkFilter, Runtime},
};

/// Shared by the ADS task, the listeners, the request path and the admin server.
#[derive(Debug)]
pub struct State {
    runtime: ArcSwap<Runtime>,
    /// Bumped on every publish; listeners and caches wait on it.
    generation: watch::Sender<u64>,
    /// Bumped on a publish that changes some HTTP connection manager's access logs (a tap
    /// started or ended): what open connections wait on, so an endpoint change wakes none.
    access_logs: watch::Sender<u64>,
    pub xds: XdsStatus,
    /// The token buckets of access logs' `process_ratelimit` filters, by name: one per name
    /// in the process, brought in line with each configuration as it is published (before
    /// any connection sees it).
    pub buckets: Buckets,
    /// Set by the admin `POST /healthcheck/fail`: the proxy reports not ready and closes
    /// HTTP/1.1 connections after each response, so clients move elsewhere (Envoy's drain).
    draining: AtomicBool,
}

impl Default for State {
    fn default() -> Self {
        State {
            runtime: ArcSwap::from_pointee(Runtime::default()),
            generation: watch::Sender::new(0),
            access_logs: watch::Sender::new(0),
            xds: XdsStatus::default(),
            buckets: Buckets::default(),
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
        let logs_changed = access_logs(&self.runtime.load()) != access_logs(&runtime);
        self.buckets.configure(&runtime.buckets);
        self.runtime.store(Arc::new(runtime));
        self.generation.send_modify(|g| *g += 1);
        if logs_changed {
            self.access_logs.send_modify(|g| *g += 1);
        }
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

    /// A receiver that wakes on a publish that changes some connection manager's access logs.
    pub fn subscribe_access_logs(&self) -> watch::Receiver<u64> {
        self.access_logs.subscribe()
    }
}

/// Every HTTP connection manager's access logs, by listener and chain.
fn access_logs(runtime: &Runtime) -> Vec<(&str, &str, &[AccessLog])> {
    runtime
        .listeners
        .iter()
        .flat_map(|(name, listener)| {
            listener
                .chains
                .iter()
                .filter_map(move |chain| match &chain.filter {
                    NetworkFilter::Http(m) => {
                        Some((name.as_str(), chain.name.as_str(), &m.access_logs[..]))
                    }
                    NetworkFilter::Tcp(_) | NetworkFilter::Close => None,
                })
        })
        .collect()
}

/// The xDS side of the proxy's health, for `/ready` and `/metrics`.
#[derive(Debug, Default)]
pub struct XdsStatus {
    connected: AtomicBool,
    synced: AtomicBool,
    accepted: AtomicU64,
    rejected: AtomicU64,
    streams: AtomicU64,
    /// Milliseconds since the Unix epoch of the last accepted change; 0 before the first.
    last_change_ms: AtomicU64,
    /// Milliseconds since the Unix epoch when the last stream ended; 0 while connected.
    disconnected_since_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

// === impl XdsStatus ===

impl XdsStatus {
    /// Whether a stream to the control plane is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether every subscribed type was answered at least once: the proxy has a whole
    /// configuration to serve. Stays true while the control plane is away.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Responses accepted (ACKed).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Responses rejected (NACKed).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Streams opened, the first included.
    pub fn streams(&self) -> u64 {
        self.streams.load(Ordering::Relaxed)
    }

    /// When the last accepted change arrived.
    pub fn last_change(&self) -> Option<SystemTime> {
        from_ms(self.last_change_ms.load(Ordering::Relaxed))
    }

    /// Since when the control plane is unreachable; `None` while connected or before the first
    /// stream.
    pub fn disconnected_since(&self) -> Option<SystemTime> {
        from_ms(self.disconnected_since_ms.load(Ordering::Relaxed))
    }

    /// The last NACK reason or stream error.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub(crate) fn record_stream(&self) {
        self.streams.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a NACK and keeps its reason as the last error.
    pub(crate) fn record_rejected(&self, error: String) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.set_error(error);
    }

    /// Records that the accepted configuration changed now.
    pub(crate) fn record_change(&self) {
        self.last_change_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn set_error(&self, error: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error);
        }
    }

    /// Records that a whole configuration arrived; whether this is the first time.
    pub(crate) fn mark_synced(&self) -> bool {
        !self.synced.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        let since = if connected { 0 } else { now_ms() };
        self.disconnected_since_ms.store(since, Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}
