//! Where every proxy connected to this server stands: per xDS type synced, stale, NACKed (with
//! the proxy's reason) or not sent, as `switchyard proxy-status` shows it; and what it runs
//! (the resources it acknowledged last), as `switchyard proxy-config` shows it.
//!
//! ```text
//!  stream task ──(after every request and push)──▶ ProxyStatuses ──▶ admin GET /proxies ──▶ CLI
//!        └── dropped with the stream: its entry goes        └──▶ GET /proxies/{proxy}/config
//! ```
//!
//! Each stream writes only its own entry; a reader copies the table. The cost is one short
//! mutex hold per request or push of a stream, which is what the stream already pays for its
//! response channel.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use envoy_types::pb::envoy::config::core::v3::{Node, node::UserAgentVersionType};
use serde::{Deserialize, Serialize};

use super::{acked::AckedView, snapshot::TypeUrl, store::ProxyKey, stream::TypeSync};

#[cfg(test)]
mod tests;

/// One connected stream, as `GET /proxies` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// The proxy the stream authenticated as: `<namespace>/<pod>` (a workload name in local
    /// mode).
    pub proxy: String,
    /// The node ID the proxy sent.
    pub node: String,
    /// The data plane, from the node's user agent: `envoy 1.40.0`, `switchyard-proxy 0.1.0`.
    pub data_plane: String,
    /// `sotw` or `delta`.
    pub protocol: String,
    /// When the stream was opened, in seconds since the Unix epoch.
    pub connected_at: u64,
    /// Per type, by its short name (`CDS`, `EDS`, `LDS`, `RDS`, `SDS`).
    pub types: BTreeMap<String, TypeSync>,
}

/// Every open stream's [`ProxyStatus`] and [`LiveConfig`]. Cheap to share.
#[derive(Debug, Default)]
pub struct ProxyStatuses {
    streams: Mutex<BTreeMap<u64, LiveConfig>>,
    next: AtomicU64,
}

/// One stream's status and, per type, what its proxy acknowledged last (the snapshot's own
/// resources, shared) and what it rejected since.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    pub status: ProxyStatus,
    /// In [`TypeUrl::ALL`] order.
    pub types: [AckedView; TypeUrl::ALL.len()],
}

/// A stream's entry in [`ProxyStatuses`]; dropping it (with the stream) removes the entry.
#[derive(Debug)]
pub(crate) struct StatusEntry {
    id: u64,
    statuses: Arc<ProxyStatuses>,
}

impl ProxyStatuses {
    /// The open streams, ordered by proxy then node.
    pub fn list(&self) -> Vec<ProxyStatus> {
        let mut all: Vec<ProxyStatus> = self.lock().values().map(|s| s.status.clone()).collect();
        all.sort_by(|a, b| (&a.proxy, &a.node).cmp(&(&b.proxy, &b.node)));
        all
    }

    /// Registers a stream that authenticated as `key` with `node`; every type starts as not
    /// requested.
    pub(crate) fn open(
        self: &Arc<Self>,
        key: &ProxyKey,
        node: &Node,
        protocol: &str,
    ) -> StatusEntry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let status = ProxyStatus {
            proxy: key.to_string(),
            node: node.id.clone(),
            data_plane: data_plane(node),
            protocol: protocol.to_owned(),
            connected_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            types: TypeUrl::ALL
                .iter()
                .map(|t| (t.short_name().to_owned(), TypeSync::NotRequested))
                .collect(),
        };
        self.lock().insert(
            id,
            LiveConfig {
                status,
                types: Default::default(),
            },
        );
        StatusEntry {
            id,
            statuses: self.clone(),
        }
    }

    /// What `proxy` (`<namespace>/<pod>`, or a workload name in local mode) runs, from its
    /// newest stream (a reconnecting proxy may briefly have two).
    pub fn config(&self, proxy: &str) -> Option<LiveConfig> {
        self.lock()
            .iter()
            .rev()
            .find(|(_, s)| s.status.proxy == proxy)
            .map(|(_, s)| s.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, LiveConfig>> {
        // An entry is replaced whole, so a panic elsewhere cannot leave one half-written.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StatusEntry {
    /// Records where each type stands now and what the proxy runs of it.
    pub(crate) fn update(&self, now: impl Fn(TypeUrl) -> (TypeSync, AckedView)) {
        let mut streams = self.statuses.lock();
        if let Some(live) = streams.get_mut(&self.id) {
            for t in TypeUrl::ALL {
                let (sync, acked) = now(t);
                if live.status.types.get(t.short_name()) != Some(&sync) {
                    live.status.types.insert(t.short_name().to_owned(), sync);
                }
                if live.types[t.index()] != acked {
                    live.types[t.index()] = acked;
                }
            }
        }
    }
}

impl Drop for StatusEntry {
    fn drop(&mut self) {
        self.statuses.lock().remove(&self.id);
    }
}

/// `<user agent> <version>`, as the node says it (Envoy: `envoy` and its semantic version).
fn data_plane(node: &Node) -> String {
    let version = match &node.user_agent_version_type {
        Some(UserAgentVersionType::UserAgentVersion(v)) => v.clone(),
        Some(UserAgentVersionType::UserAgentBuildVersion(b)) => b
            .version
            .as_ref()
            .map(|v| format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
            .unwrap_or_default(),
        None => String::new(),
    };
    let name = if node.user_agent_name.is_empty() {
        "unknown"
    } else {
        node.user_agent_name.as_str()
    };
    if version.is_empty() {
        name.to_owned()
    } else {
        format!("{name} {version}")
    }
}
