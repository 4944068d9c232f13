//! Golden metrics: what every proxy pushes over Envoy's `MetricsService`, decoded and kept in
//! bounded sliding windows, per proxy, for the questions `stat`, `edges` and the SMI Traffic
//! Metrics API ask. Sans-IO: the gRPC server feeds [`decode::decode`]'s samples into a
//! [`window::Store`] with the time of arrival, one store per shard of the proxies
//! ([`shards::Shards`], each shard behind its own lock).
//!
//! # Transport
//!
//! Push, over `envoy.service.metrics.v3.MetricsService/StreamMetrics`: every proxy opens one
//! stream to the operator and sends a `StreamMetricsMessage` every `stats_flush_interval`
//! (Envoy's default 5 s). The cost is proxies × series ÷ interval, whatever the request rate,
//! and the operator never has to reach a Pod's admin port. The bundled proxy implements the
//! same client with the same names and messages (`data-plane/src/metrics_push.rs`, held equal
//! to Envoy's by `data-plane/tests/metrics_push.rs`).
//!
//! # What Envoy 1.40 sends
//!
//! With the sink `envoy.stat_sinks.metrics_service` (`transport_api_version: V3`,
//! `report_counters_as_deltas: true`, `emit_tags_as_labels: true`, `histogram_emit_mode:
//! HISTOGRAM`) and `stats_config.stats_matcher` keeping only
//! [`STATS_INCLUSION`](switchyard_proxy_config::metrics::envoy::STATS_INCLUSION)
//! (checked by `e2e/tests/telemetry_envoy.rs`):
//!
//! - the first message of a stream carries `identifier.node` (the bootstrap's node); later
//!   ones do not;
//! - one `MetricFamily` per tag-extracted name and type, each `Metric` with the extracted tags
//!   as labels and `timestamp_ms`, the wall-clock time of the flush (the same in every metric
//!   of a message);
//! - counters (`type` COUNTER) `cluster.upstream_rq_xx` (labels `envoy.response_code_class`
//!   `1`–`5`, `envoy.cluster_name`), `cluster.upstream_cx_total`,
//!   `cluster.upstream_cx_rx_bytes_total`, `cluster.upstream_cx_tx_bytes_total`
//!   (`envoy.cluster_name`), `http.downstream_rq_xx` (`envoy.response_code_class`,
//!   `envoy.http_conn_manager_prefix`): `counter.value` is the increase since the previous
//!   flush, as a double, 0 when nothing happened;
//! - the gauge (`type` GAUGE) `cluster.upstream_cx_active`: `gauge.value`, the current value;
//! - histograms (`type` HISTOGRAM) `cluster.upstream_rq_time` and `http.downstream_rq_time` in
//!   milliseconds: `sample_count`, `sample_sum` and one `bucket` per bound of
//!   `histogram_bucket_settings` (no `+Inf` bucket: it is `sample_count` minus the last
//!   bucket), `cumulative_count` cumulative over the buckets but, like the counters, **only
//!   over the flush interval** (the next flush after a burst reports 0);
//! - for every route with a `stat_prefix` (the mesh sets one on the inbound routes of named
//!   matches, a [`RouteStatName`](switchyard_proxy_config::metrics::RouteStatName)), the
//!   counter `vhost.route.upstream_rq_xx` (labels `envoy.response_code_class`,
//!   `envoy.virtual_host`, `envoy.route`, in that order) and the histogram
//!   `vhost.route.upstream_rq_time` (`envoy.virtual_host`, `envoy.route`): charged by the router
//!   with its cluster's `upstream_rq_<class>` and `upstream_rq_time` (its own 503 for a refused
//!   connection included), so a route's requests are a part of its cluster's (checked by
//!   `data-plane/tests/metrics_push.rs`);
//! - every stat of every cluster and HTTP connection manager, the admin interface's
//!   (`envoy.http_conn_manager_prefix=admin`) and the metrics sink's own cluster included.
//!
//! The names and labels are defined once in
//! [`switchyard_proxy_config::metrics::envoy`].

pub mod decode;
pub mod server;
pub mod shards;
pub mod snapshot;
pub mod window;

#[cfg(test)]
mod tests;

pub use self::{
    decode::{
        Decoded, Latency, MAX_FAMILIES, MAX_NAME_BYTES, MAX_SERIES, Sample, StatPrefix,
        StatusClass, Subject, UpstreamCluster, Value, VirtualHost, decode,
    },
    server::{MetricsServer, Telemetry},
    shards::Shards,
    snapshot::{Snapshot, SnapshotError},
    window::{Gauge, Golden, Limits, Store, StoreStats, Sums},
};
