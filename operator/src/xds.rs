//! The xDS server: per-proxy snapshots served over ADS (state-of-the-world and delta).
//!
//! Layout: [`snapshot`] (resources and content-hash versions), [`store`] (the latest snapshot
//! per proxy, as `watch` channels), [`auth`] (credentials → proxy key), [`sotw`] and [`delta`]
//! (the protocol state machines, plain code without IO), [`acked`] (what each proxy runs, which
//! both record), [`server`] (tonic glue, debounce), [`status`] and [`dump`] (what the admin port
//! shows of each stream), [`render`] (resources as redacted proto3 JSON).
//!
//! To serve a proxy, build a [`Snapshot`] from its resources and [`SnapshotStore::set`] it under
//! the proxy's [`ProxyKey`]; streams authenticated as that key are pushed the difference.

pub mod acked;
pub mod auth;
pub mod beside;
pub mod delta;
pub mod dump;
pub mod metrics;
pub mod render;
pub mod server;
pub mod snapshot;
pub mod sotw;
pub mod status;
pub mod store;
pub mod stream;

#[cfg(test)]
mod fixtures;

pub use self::{
    auth::{Authenticate, StaticTokens},
    dump::{ConfigDump, TypeFilter},
    metrics::{MetricsSnapshot, XdsMetrics},
    server::{
        DrainHandle, ServeError, XdsConfig, XdsServer, serve, serve_listener, serve_listener_tls,
    },
    snapshot::{
        Inconsistency, Snapshot, SnapshotBuilder, SnapshotError, TypeUrl, Version,
        VersionedResource, to_any,
    },
    status::{LiveConfig, ProxyStatus, ProxyStatuses},
    store::{ProxyKey, SnapshotStore, SnapshotSubscription},
    stream::TypeSync,
};
