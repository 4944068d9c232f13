//! Counters for the xDS server, and their Prometheus families (the controller's `/metrics`).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

use super::snapshot::TypeUrl;

/// Server-wide counters. Cheap to update from every stream: relaxed atomics.
#[derive(Debug, Default)]
pub struct XdsMetrics {
    connected_streams: AtomicU64,
    streams_total: AtomicU64,
    pushes: AtomicU64,
    secret_pushes: AtomicU64,
    endpoint_pushes: AtomicU64,
    nacks: AtomicU64,
    auth_failures: AtomicU64,
    secrets_refused: AtomicU64,
}

/// A point-in-time copy of [`XdsMetrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Streams open now.
    pub connected_streams: u64,
    /// Streams accepted since start.
    pub streams_total: u64,
    /// Discovery responses sent, of every type.
    pub pushes: u64,
    /// Of [`MetricsSnapshot::pushes`], those carrying secrets (certificates).
    pub secret_pushes: u64,
    /// Of [`MetricsSnapshot::pushes`], those carrying endpoints (EDS).
    pub endpoint_pushes: u64,
    /// Requests that carried `error_detail`.
    pub nacks: u64,
    /// Streams refused by the authenticator.
    pub auth_failures: u64,
    /// Secret names requested that are not the requesting proxy's.
    pub secrets_refused: u64,
}

/// Counts a stream as connected until dropped.
#[derive(Debug)]
pub(crate) struct StreamGuard(Arc<XdsMetrics>);

// === impl XdsMetrics ===

impl XdsMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            connected_streams: self.connected_streams.load(Ordering::Relaxed),
            streams_total: self.streams_total.load(Ordering::Relaxed),
            pushes: self.pushes.load(Ordering::Relaxed),
            secret_pushes: self.secret_pushes.load(Ordering::Relaxed),
            endpoint_pushes: self.endpoint_pushes.load(Ordering::Relaxed),
            nacks: self.nacks.load(Ordering::Relaxed),
            auth_failures: self.auth_failures.load(Ordering::Relaxed),
            secrets_refused: self.secrets_refused.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.connected_streams.fetch_add(1, Ordering::Relaxed);
        self.streams_total.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    /// Counts one discovery response of `type_url` (`None`: a type this server does not name).
    pub(crate) fn pushed(&self, type_url: Option<TypeUrl>) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
        match type_url {
            Some(TypeUrl::Secret) => {
                self.secret_pushes.fetch_add(1, Ordering::Relaxed);
            }
            Some(TypeUrl::ClusterLoadAssignment) => {
                self.endpoint_pushes.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    pub(crate) fn nacked(&self) {
        self.nacks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn secret_refused(&self) {
        self.secrets_refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// The xDS families of `/metrics`, named without the registry's prefix; counters get
/// `_total` from the encoder.
impl Collector for MetricsSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let connected = ConstGauge::new(i64::try_from(self.connected_streams).unwrap_or(i64::MAX));
        connected.encode(encoder.encode_descriptor(
            "xds_connected_proxies",
            "xDS streams open now.",
            None,
            connected.metric_type(),
        )?)?;
        let counters = [
            ("xds_streams", "xDS streams accepted.", self.streams_total),
            (
                "xds_pushes",
                "Discovery responses sent, of every type.",
                self.pushes,
            ),
            (
                "xds_config_pushes",
                "Discovery responses sent with listeners, routes, clusters or endpoints.",
                self.pushes.saturating_sub(self.secret_pushes),
            ),
            (
                "xds_endpoint_pushes",
                "Discovery responses sent with endpoints (EDS), a part of the config pushes.",
                self.endpoint_pushes,
            ),
            (
                "xds_secret_pushes",
                "Discovery responses sent with certificates.",
                self.secret_pushes,
            ),
            (
                "xds_nacks",
                "Discovery requests that rejected a response.",
                self.nacks,
            ),
            (
                "xds_auth_failures",
                "xDS streams refused by authentication.",
                self.auth_failures,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.connected_streams.fetch_sub(1, Ordering::Relaxed);
    }
}
