//! Metric conventions every proxy shares with the control plane: one definition for the bundled
//! proxy's histograms, the Envoy bootstrap's `histogram_bucket_settings` and the operator's
//! decoding of what either pushes.

use std::fmt::Write as _;

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

/// The `stat_prefix` of an inbound route that counts one named match of an HTTPRouteGroup
/// (Envoy's route stats, `vhost.<virtual host>.route.<stat_prefix>.*`): the route group's name
/// and the match's, each escaped, joined by `__`.
///
/// Envoy's tag extraction takes the prefix as one dot-free segment of the stat name, and a
/// route group's name may hold dots (a DNS subdomain) and a match's name anything; so every
/// byte outside `[A-Za-z0-9-]` is written `_` and two lower-case hex digits (`.` is `_2e`, `_`
/// is `_5f`, `é` is `_c3_a9`). An escaped name never holds `__` nor ends with `_`, so the
/// first `__` is the separator, and every name has exactly one prefix: [`parse`] takes back
/// exactly what [`Display`](std::fmt::Display) writes, and refuses anything else.
///
/// [`parse`]: RouteStatName::parse
///
/// ```
/// use switchyard_proxy_config::metrics::RouteStatName;
/// let r = RouteStatName::new("web.routes", "get_books");
/// assert_eq!(r.to_string(), "web_2eroutes__get_5fbooks");
/// assert_eq!(RouteStatName::parse("web_2eroutes__get_5fbooks"), Some(r));
/// assert_eq!(RouteStatName::parse("web.routes__get"), None);
/// assert_eq!(RouteStatName::parse("no-separator"), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteStatName {
    /// The HTTPRouteGroup's name (in the destination's namespace, as a TrafficTarget's rules
    /// name it).
    pub group: String,
    /// The name of the match within the group.
    pub name: String,
}

impl RouteStatName {
    const SEPARATOR: &str = "__";

    pub fn new(group: impl Into<String>, name: impl Into<String>) -> Self {
        RouteStatName {
            group: group.into(),
            name: name.into(),
        }
    }

    /// The name a `stat_prefix` written by [`Display`](std::fmt::Display) stands for, or
    /// `None` for any other string.
    pub fn parse(stat_prefix: &str) -> Option<Self> {
        let (group, name) = stat_prefix.split_once(Self::SEPARATOR)?;
        Some(RouteStatName {
            group: unescape(group)?,
            name: unescape(name)?,
        })
    }
}

impl std::fmt::Display for RouteStatName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        escape(&self.group, f)?;
        f.write_str(Self::SEPARATOR)?;
        escape(&self.name, f)
    }
}

/// Whether a byte stands for itself in an escaped name.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn escape(s: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    for b in s.bytes() {
        if plain(b) {
            f.write_char(char::from(b))?;
        } else {
            write!(f, "_{b:02x}")?;
        }
    }
    Ok(())
}

/// The name an escaped one stands for; `None` unless `escaped` is exactly what [`escape`]
/// writes for some string.
fn unescape(escaped: &str) -> Option<String> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.bytes();
    while let Some(b) = bytes.next() {
        if plain(b) {
            out.push(b);
        } else if b == b'_' {
            let byte = hex(bytes.next()?)? << 4 | hex(bytes.next()?)?;
            // A byte that stands for itself is never escaped.
            if plain(byte) {
                return None;
            }
            out.push(byte);
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
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

    /// Requests a route with a `stat_prefix` sent to its cluster, by status class (counter;
    /// [`RESPONSE_CODE_CLASS`], [`VIRTUAL_HOST`], [`ROUTE`]): Envoy's router charges them where
    /// it charges the cluster's `upstream_rq_<class>`, so a route's requests are a part of its
    /// cluster's.
    pub const ROUTE_UPSTREAM_RQ_XX: &str = "vhost.route.upstream_rq_xx";
    /// Those requests' times in milliseconds, as the cluster's `upstream_rq_time` (histogram;
    /// [`VIRTUAL_HOST`], [`ROUTE`]).
    pub const ROUTE_UPSTREAM_RQ_TIME: &str = "vhost.route.upstream_rq_time";

    /// The cluster's name (`alt_stat_name` when set).
    pub const CLUSTER_NAME: &str = "envoy.cluster_name";
    /// The HTTP connection manager's `stat_prefix`.
    pub const HTTP_CONN_MANAGER_PREFIX: &str = "envoy.http_conn_manager_prefix";
    /// The status class's digit, `1` to `5`.
    pub const RESPONSE_CODE_CLASS: &str = "envoy.response_code_class";
    /// A virtual host's name (for the inbound routes, `inbound|<port>`).
    pub const VIRTUAL_HOST: &str = "envoy.virtual_host";
    /// A route's `stat_prefix` (for the inbound routes, a
    /// [`RouteStatName`](super::RouteStatName)).
    pub const ROUTE: &str = "envoy.route";

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
    /// leaves out the `external.`/`internal.` copies of `upstream_rq_<class>`. Route stats exist
    /// only for routes with a `stat_prefix` (the mesh sets one on the inbound routes of named
    /// matches only).
    pub const STATS_INCLUSION: [&str; 3] = [
        r"^cluster\.[^.]+\.(upstream_rq_[1-5]xx|upstream_rq_time|upstream_cx_total|upstream_cx_active|upstream_cx_rx_bytes_total|upstream_cx_tx_bytes_total)$",
        r"^http\.[^.]+\.(downstream_rq_[1-5]xx|downstream_rq_time)$",
        r"^vhost\.[^.]+\.route\.[^.]+\.(upstream_rq_[1-5]xx|upstream_rq_time)$",
    ];
}

#[cfg(test)]
mod tests;
