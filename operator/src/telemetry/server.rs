//! The `MetricsService` the proxies push to, beside ADS on the xDS port: a stream is
//! authenticated exactly as an ADS stream is (the credentials, then the node of its first
//! message against them), and what it sends is recorded under the authenticated proxy, never
//! under the node a message claims.
//!
//! ```text
//!   proxy ──StreamMetrics──► verify(token) ─► first message: identifier.node ─► authenticate
//!                                                                               │ ProxyId
//!             every message ─► decode (golden samples only) ─► Telemetry::record(ProxyId, now)
//!                                                       (the proxy's shard's lock only: shards)
//! ```

use std::{sync::Arc, time::Duration};

use envoy_types::pb::envoy::service::metrics::v3::{
    StreamMetricsMessage, StreamMetricsResponse,
    metrics_service_server::{MetricsService, MetricsServiceServer},
};
use switchyard_adapters::model::ProxyId;
use tokio::{sync::watch, time::Instant};
use tonic::{Request, Response, Status, Streaming};

use super::{Limits, Sample, Shards, Snapshot, StoreStats, decode};
use crate::xds::{auth::Authenticate, beside::Beside};

/// The largest message read: 4 MiB. Envoy sends every used stat of a proxy in one message
/// unless `batch_size` is set; a sidecar's is tens of KiB.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Metric streams open at once (default: one per proxy, up to 16,384 proxies).
const MAX_STREAMS: usize = 16_384;

/// The windows every proxy's pushes are recorded in, shared by the server and whoever answers
/// questions about them: [`Shards`], so that a push waits for a query's read of one shard at
/// most, never of every proxy. Time is measured from the handle's creation.
#[derive(Debug)]
pub struct Telemetry {
    shards: Shards,
    epoch: Instant,
}

impl Telemetry {
    pub fn new(limits: Limits) -> Self {
        Telemetry {
            shards: Shards::new(limits),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Records `samples` from `proxy`, arrived now ([`Shards::record`]: its shard's lock only;
    /// the first push of a minute also sweeps out the silent proxies, a shard at a time).
    pub fn record(&self, proxy: &ProxyId, samples: &[Sample]) {
        self.shards.record(proxy, self.now(), samples);
    }

    /// Every series of the proxies `include` accepts over the `window` ending now
    /// ([`Shards::snapshot`]: a shard's lock at a time).
    pub fn snapshot(&self, window: Duration, include: impl FnMut(&ProxyId) -> bool) -> Snapshot {
        self.shards.snapshot(self.now(), window, include)
    }

    /// Forgets `proxy` (its Pod is gone); whether it was kept.
    pub fn forget(&self, proxy: &ProxyId) -> bool {
        self.shards.forget(proxy)
    }

    /// What the windows dropped so far, over every shard.
    pub fn stats(&self) -> StoreStats {
        self.shards.stats()
    }

    /// The bytes the windows take ([`Shards::memory_bytes`]).
    pub fn memory_bytes(&self) -> usize {
        self.shards.memory_bytes()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new(Limits::default())
    }
}

/// The tonic service.
#[derive(Clone)]
pub struct MetricsServer {
    streams: Beside,
    telemetry: Arc<Telemetry>,
}

impl MetricsServer {
    /// Streams end when `drain` turns true (the xDS server's drain).
    pub fn new(
        auth: Arc<dyn Authenticate>,
        telemetry: Arc<Telemetry>,
        drain: watch::Receiver<bool>,
    ) -> Self {
        MetricsServer {
            streams: Beside::new("StreamMetricsMessage", auth, MAX_STREAMS, drain),
            telemetry,
        }
    }

    pub fn into_service(self) -> MetricsServiceServer<Self> {
        MetricsServiceServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer").finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl MetricsService for MetricsServer {
    async fn stream_metrics(
        &self,
        request: Request<Streaming<StreamMetricsMessage>>,
    ) -> Result<Response<StreamMetricsResponse>, Status> {
        self.streams
            .serve(
                request,
                |m: &StreamMetricsMessage| m.identifier.as_ref().and_then(|i| i.node.as_ref()),
                |_| Ok(()),
                |proxy, message| self.record(proxy, message),
            )
            .await?;
        Ok(Response::new(StreamMetricsResponse {}))
    }
}

impl MetricsServer {
    fn record(&self, proxy: &ProxyId, message: &StreamMetricsMessage) {
        let decoded = decode(message);
        if decoded.truncated > 0 {
            tracing::debug!(%proxy, truncated = decoded.truncated, "metrics beyond the bounds not read");
        }
        self.telemetry.record(proxy, &decoded.samples);
    }
}
