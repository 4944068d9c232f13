//! Metric conventions every proxy shares with the control plane: one definition for the bundled
//! proxy's histograms, the Envoy bootstrap's `histogram_bucket_settings` and the operator's
//! decoding of what either pushes.

/// Upper bounds (inclusive) of the latency histogram buckets in microseconds: 0.5 ms to 10 s.
/// A last `+Inf` bucket takes the rest, so a histogram has `LATENCY_BUCKETS_MICROS.len() + 1`
/// buckets. Envoy records request times in whole milliseconds: its bootstrap gets these bounds
/// divided by 1,000 (see [`latency_buckets_millis`]).
pub const LATENCY_BUCKETS_MICROS: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// The number of latency buckets, `+Inf` included.
pub const LATENCY_BUCKET_COUNT: usize = LATENCY_BUCKETS_MICROS.len() + 1;

/// [`LATENCY_BUCKETS_MICROS`] in milliseconds, the unit of Envoy's `*_rq_time` histograms (for
/// `stats_config.histogram_bucket_settings`).
pub fn latency_buckets_millis() -> impl ExactSizeIterator<Item = f64> {
    LATENCY_BUCKETS_MICROS
        .iter()
        .map(|&micros| micros as f64 / 1e3)
}

/// The `stat_prefix` of an inbound port's HTTP connection manager and TCP proxy: the port, and
/// whether the connection came over the mesh's mTLS (`inbound_8080_mtls`) or not
/// (`inbound_8080`), so a server's series tell its meshed callers from the others (permissive
/// mode lets both in). Envoy's tag extraction takes a connection manager's prefix up to its
/// first dot, so the prefix has none.
///
/// ```
/// use switchyard_proxy_config::metrics::InboundStatPrefix;
/// let p = InboundStatPrefix { port: 8080, mtls: true };
/// assert_eq!(p.to_string(), "inbound_8080_mtls");
/// assert_eq!(InboundStatPrefix::parse("inbound_8080_mtls"), Some(p));
/// assert_eq!(InboundStatPrefix::parse("outbound_http"), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InboundStatPrefix {
    /// The Service's target port the connection arrived on.
    pub port: u16,
    /// Whether it came over the mesh's mTLS (a verified client certificate).
    pub mtls: bool,
}

impl InboundStatPrefix {
    const PREFIX: &str = "inbound_";
    const MTLS: &str = "_mtls";

    /// The prefix `stat_prefix` writes, or `None` for any other connection manager's.
    pub fn parse(stat_prefix: &str) -> Option<Self> {
        let rest = stat_prefix.strip_prefix(Self::PREFIX)?;
        let (port, mtls) = match rest.strip_suffix(Self::MTLS) {
            Some(port) => (port, true),
            None => (rest, false),
        };
        // `u16::from_str` takes a leading `+`; a prefix is written without one.
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            port: port.parse().ok()?,
            mtls,
        })
    }
}

impl std::fmt::Display for InboundStatPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mtls = if self.mtls { Self::MTLS } else { "" };
        write!(f, "{}{}{mtls}", Self::PREFIX, self.port)
    }
}

/// The golden metrics as Envoy's `envoy.stat_sinks.metrics_service` sink sends them with
/// `emit_tags_as_labels: true` (observed with Envoy 1.40): the tag-extracted name, the
/// extracted tags as labels. The bundled proxy's metrics service client sends the same names.
pub mod envoy {
    /// Requests an upstream cluster answered, by status class (counter; labels
    /// [`CLUSTER_NAME`], [`RESPONSE_CODE_CLASS`]).
    pub const UPSTREAM_RQ_XX: &str = "cluster.upstream_rq_xx";
    /// An upstream cluster's request times in milliseconds (histogram; [`CLUSTER_NAME`]).
    pub const UPSTREAM_RQ_TIME: &str = "cluster.upstream_rq_time";
    /// Connections opened to an upstream cluster (counter; [`CLUSTER_NAME`]).
    pub const UPSTREAM_CX_TOTAL: &str = "cluster.upstream_cx_total";
    /// Connections open to an upstream cluster (gauge; [`CLUSTER_NAME`]).
    pub const UPSTREAM_CX_ACTIVE: &str = "cluster.upstream_cx_active";
    /// Bytes received from an upstream cluster (counter; [`CLUSTER_NAME`]).
    pub const UPSTREAM_CX_RX_BYTES_TOTAL: &str = "cluster.upstream_cx_rx_bytes_total";
    /// Bytes sent to an upstream cluster (counter; [`CLUSTER_NAME`]).
    pub const UPSTREAM_CX_TX_BYTES_TOTAL: &str = "cluster.upstream_cx_tx_bytes_total";
    /// Requests an HTTP connection manager answered, by status class (counter;
    /// [`HTTP_CONN_MANAGER_PREFIX`], [`RESPONSE_CODE_CLASS`]).
    pub const DOWNSTREAM_RQ_XX: &str = "http.downstream_rq_xx";
    /// An HTTP connection manager's request times in milliseconds (histogram;
    /// [`HTTP_CONN_MANAGER_PREFIX`]).
    pub const DOWNSTREAM_RQ_TIME: &str = "http.downstream_rq_time";

    /// The cluster's name (`alt_stat_name` when set).
    pub const CLUSTER_NAME: &str = "envoy.cluster_name";
    /// The HTTP connection manager's `stat_prefix`.
    pub const HTTP_CONN_MANAGER_PREFIX: &str = "envoy.http_conn_manager_prefix";
    /// The status class's digit, `1` to `5`.
    pub const RESPONSE_CODE_CLASS: &str = "envoy.response_code_class";

    /// The latency bucket (an index into [`LATENCY_BUCKETS_MICROS`](super::LATENCY_BUCKETS_MICROS),
    /// the last being `+Inf`) in which Envoy's `*_rq_time` histograms count a request of
    /// `millis` whole milliseconds (Envoy truncates a request's time to whole milliseconds).
    ///
    /// Envoy keeps histograms as circllhist bins (two significant digits: 120 ms is the bin
    /// [120, 130)) and reports under a bound the bins whose upper edge is at most that bound, so
    /// a whole number of milliseconds counts under the first bound strictly above it: 0 ms
    /// under 0.5 ms (the 1 ms bucket stays empty), 1 ms under 2.5 ms, 100 ms under 250 ms.
    pub fn time_bucket(millis: u64) -> usize {
        let micros = millis.saturating_mul(1_000);
        super::LATENCY_BUCKETS_MICROS.partition_point(|&bound| bound <= micros)
    }

    /// `stats_config.stats_matcher.inclusion_list` (RE2 `safe_regex` patterns on the full stat
    /// name): only the golden stats are kept, flushed and sent.
    ///
    /// A name segment is `[^.]+`: Envoy's tag extraction takes a cluster's name up to its
    /// first dot (`cluster.demo/db|80|127.0.0.1.upstream_rq_2xx` becomes
    /// `cluster.0.0.1.upstream_rq_xx` with `envoy.cluster_name=demo/db|80|127`), so a cluster
    /// whose name has a dot needs a dot-free `alt_stat_name` to be counted; the same segment
    /// leaves out the `external.`/`internal.` copies of `upstream_rq_<class>`.
    pub const STATS_INCLUSION: [&str; 2] = [
        r"^cluster\.[^.]+\.(upstream_rq_[1-5]xx|upstream_rq_time|upstream_cx_total|upstream_cx_active|upstream_cx_rx_bytes_total|upstream_cx_tx_bytes_total)$",
        r"^http\.[^.]+\.(downstream_rq_[1-5]xx|downstream_rq_time)$",
    ];
}
