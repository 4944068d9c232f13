//! The proxy's metrics, served on the admin port's `/metrics` in the Prometheus text format
//! 0.0.4.
//!
//! Recording is atomics only: the data path looks up the [`HttpStats`] or [`TcpStats`] of its
//! labels once (a read lock on a map, taken for a hash lookup), then counts into them. Nothing
//! else ever holds these locks for long; [`Registry::render`] copies the handles out and
//! formats without them.
//!
//! # Metrics
//!
//! Every name starts with [`PREFIX`].
//!
//! | name | type | labels |
//! |---|---|---|
//! | `requests_total` | counter | `direction`, `listener`, `route`, `destination`, `backend`, `peer`, `status_class` |
//! | `request_duration_seconds` | histogram | as `requests_total` without `status_class` |
//! | `tcp_connections_opened_total` | counter | `direction`, `listener`, `backend`, `peer` |
//! | `tcp_connections_active` | gauge | as above |
//! | `tcp_received_bytes_total` | counter | as above; bytes read from the downstream peer |
//! | `tcp_sent_bytes_total` | counter | as above; bytes written to the downstream peer |
//! | `xds_connected` | gauge | 1 while the ADS stream is up |
//! | `xds_synced` | gauge | 1 once every subscribed type was answered |
//! | `xds_streams_total` | counter | ADS streams opened |
//! | `xds_responses_total` | counter | `result`: `accepted` or `rejected` |
//! | `xds_last_accepted_timestamp_seconds` | gauge | Unix time of the last accepted response; absent before it |
//! | `connections_limited_total` | counter | `listener`, `stat_prefix`: connections a chain's connection limit closed |
//! | `timeouts_total` | counter | `listener`, `stat_prefix`, `timeout` ([`Timeout`]) |
//! | `denied_total`, `retries_total`, … | counter | see the helpers on [`Registry`] |
//!
//! `peer` is the peer's SPIFFE ID, empty for a plaintext or unauthenticated peer. A status
//! class is `1xx` to `5xx`; statuses outside 100–599 count in the nearest class. Durations are
//! recorded in microseconds and exported in seconds; the bucket bounds are
//! [`LATENCY_BUCKETS_MICROS`]. Request counts appear per status class once that class has a
//! request. Series are never removed: their number is bounded by the configuration's
//! routes, clusters and peers.
//!
//! # Golden stats
//!
//! Beside these, the registry keeps Envoy's golden stats ([`UpstreamStats`] per upstream
//! cluster, [`HttpManagerStats`] per HTTP connection manager `stat_prefix`, [`RouteStats`] per
//! route with a `stat_prefix`) for the metrics
//! service client ([`crate::metrics_push`]), which says what each counts. They are not on
//! `/metrics`; [`Registry::golden`] copies them out.

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash, Hasher},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use crate::config::Direction;

/// The prefix of every metric name.
pub const PREFIX: &str = "switchyard_proxy_";

use crate::config::metrics::envoy::time_bucket;
pub use crate::config::metrics::{LATENCY_BUCKET_COUNT, LATENCY_BUCKETS_MICROS};

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The labels of an HTTP request's metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLabels {
    pub direction: Direction,
    /// The listener that took the connection.
    pub listener: String,
    /// The route that matched, e.g. `<virtual host>/<route>`.
    pub route: String,
    /// The logical destination: the service (virtual host) the request was for.
    pub destination: String,
    /// The cluster the request went to (after a weighted split).
    pub backend: String,
    /// The peer's SPIFFE ID; empty when unauthenticated.
    pub peer: String,
}

/// The labels of a proxied TCP connection's metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpLabels {
    pub direction: Direction,
    pub listener: String,
    /// The cluster the connection went to.
    pub backend: String,
    /// The peer's SPIFFE ID; empty when unauthenticated.
    pub peer: String,
}

/// A timeout that ends a downstream connection or request (the `timeout` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// `request_headers`: an HTTP/1 request's headers took too long (Envoy:
    /// `http.<stat_prefix>.downstream_rq_header_timeout`).
    RequestHeaders,
    /// `idle`: an HTTP connection had no request in flight for too long
    /// (`http.<stat_prefix>.downstream_cx_idle_timeout`).
    Idle,
    /// `stream_idle`: a request had nothing received or sent for too long
    /// (`http.<stat_prefix>.downstream_rq_idle_timeout`).
    StreamIdle,
    /// `tcp_idle`: a proxied TCP connection had no bytes either way for too long
    /// (`tcp.<stat_prefix>.idle_timeout`).
    TcpIdle,
}

impl Timeout {
    pub fn label(self) -> &'static str {
        match self {
            Timeout::RequestHeaders => "request_headers",
            Timeout::Idle => "idle",
            Timeout::StreamIdle => "stream_idle",
            Timeout::TcpIdle => "tcp_idle",
        }
    }
}

/// All metrics of the proxy. Share it in an `Arc`.
#[derive(Debug, Default)]
pub struct Registry {
    http: RwLock<HashMap<HttpLabels, Arc<HttpStats>>>,
    tcp: RwLock<HashMap<TcpLabels, Arc<TcpStats>>>,
    xds: XdsStats,
    families: RwLock<BTreeMap<&'static str, Family>>,
    /// Golden stats by upstream cluster name.
    upstreams: RwLock<HashMap<String, Arc<UpstreamStats>>>,
    /// Golden stats by HTTP connection manager `stat_prefix`.
    http_managers: RwLock<HashMap<String, Arc<HttpManagerStats>>>,
    /// Golden stats of the routes with a `stat_prefix`, by virtual host, then `stat_prefix`
    /// (two levels, so a request looks its route up by `&str`, allocating nothing).
    routes: RwLock<HashMap<String, HashMap<String, Arc<RouteStats>>>>,
}

/// A route's stats' key: its virtual host's name and its `stat_prefix`.
pub type RouteKey = (String, String);

/// Envoy's golden `vhost.<virtual host>.route.<stat_prefix>.*` stats of one route with a
/// `stat_prefix`: the requests it sent to its cluster by status class (`upstream_rq_<class>`)
/// and their times (`upstream_rq_time`), counted where and as the cluster's
/// [`UpstreamStats`] count them (the proxy's own 503/504 for the cluster included, times of
/// the cluster's answers only).
#[derive(Debug, Default)]
pub struct RouteStats {
    requests: [AtomicU64; 5],
    times: RequestTimes,
}

/// A [`RouteStats`]' values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteValues {
    /// Requests by status class, `1xx` first.
    pub requests: [u64; 5],
    pub times: TimesValues,
}

/// Who answered a request for its cluster: the cluster, and the route's stats when the route
/// has a `stat_prefix`; they time the response to its end.
#[derive(Clone, Debug)]
pub struct Answered {
    pub upstream: Arc<UpstreamStats>,
    pub route: Option<Arc<RouteStats>>,
}

impl From<Arc<UpstreamStats>> for Answered {
    fn from(upstream: Arc<UpstreamStats>) -> Self {
        Answered {
            upstream,
            route: None,
        }
    }
}

/// Envoy's golden `cluster.<name>.*` stats of one upstream cluster: requests by status class
/// (`upstream_rq_<class>`), their times (`upstream_rq_time`), connections opened
/// (`upstream_cx_total`) and open (`upstream_cx_active`), bytes received from and sent to the
/// cluster's endpoints (`upstream_cx_rx_bytes_total`, `upstream_cx_tx_bytes_total`).
#[derive(Debug, Default)]
pub struct UpstreamStats {
    requests: [AtomicU64; 5],
    times: RequestTimes,
    cx_opened: AtomicU64,
    cx_active: AtomicI64,
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
}

/// Envoy's golden `http.<stat_prefix>.*` stats of one HTTP connection manager: responses by
/// status class (`downstream_rq_<class>`) and request times (`downstream_rq_time`).
#[derive(Debug, Default)]
pub struct HttpManagerStats {
    requests: [AtomicU64; 5],
    times: RequestTimes,
}

/// Request times as Envoy keeps its `*_rq_time` histograms: whole milliseconds (truncated),
/// counted per bucket by [`time_bucket`].
#[derive(Debug, Default)]
pub struct RequestTimes {
    /// Not cumulative; the last is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKET_COUNT],
    sum_millis: AtomicU64,
}

/// Records a request's time when dropped: with its response's body, once the response is
/// complete (or abandoned), as Envoy completes `downstream_rq_time` and `upstream_rq_time`
/// with the stream. The status was counted at the response's head.
#[derive(Debug)]
pub struct ResponseTimer {
    started: std::time::Instant,
    manager: Arc<HttpManagerStats>,
    /// The cluster (and route), when it answered (not for the proxy's own answers).
    answered: Option<Answered>,
}

/// An upstream connection, counted open until dropped; from [`UpstreamStats::connecting`].
#[derive(Debug)]
pub struct UpstreamConnection {
    stats: Arc<UpstreamStats>,
}

/// The golden stats at one instant, cumulative since the proxy started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoldenSnapshot {
    /// By upstream cluster name.
    pub upstreams: BTreeMap<String, UpstreamValues>,
    /// By HTTP connection manager `stat_prefix`.
    pub http_managers: BTreeMap<String, HttpManagerValues>,
    /// By virtual host and route `stat_prefix`.
    pub routes: BTreeMap<RouteKey, RouteValues>,
}

/// An [`UpstreamStats`]' values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamValues {
    /// Requests by status class, `1xx` first.
    pub requests: [u64; 5],
    pub times: TimesValues,
    pub cx_opened: u64,
    pub cx_active: i64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// An [`HttpManagerStats`]' values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpManagerValues {
    /// Responses by status class, `1xx` first.
    pub requests: [u64; 5],
    pub times: TimesValues,
}

/// A [`RequestTimes`]' values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimesValues {
    /// Requests per bucket of [`LATENCY_BUCKETS_MICROS`], not cumulative; the last is `+Inf`.
    pub buckets: [u64; LATENCY_BUCKET_COUNT],
    /// The sum of the requests' whole milliseconds.
    pub sum_millis: u64,
}

/// The counters of one set of [`HttpLabels`].
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests by status class, `1xx` first.
    requests: [AtomicU64; 5],
    latency: Histogram,
}

/// A latency histogram over [`LATENCY_BUCKETS_MICROS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKET_COUNT],
    sum_micros: AtomicU64,
}

/// The counters of one set of [`TcpLabels`].
#[derive(Debug, Default)]
pub struct TcpStats {
    opened: AtomicU64,
    active: AtomicI64,
    received: AtomicU64,
    sent: AtomicU64,
}

/// Counts a connection as active until dropped; from [`TcpStats::open`].
#[derive(Debug)]
pub struct OpenConnection {
    stats: Arc<TcpStats>,
}

/// The state of the xDS client.
#[derive(Debug, Default)]
pub struct XdsStats {
    connected: AtomicBool,
    synced: AtomicBool,
    streams: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    /// Seconds since the Unix epoch of the last accepted response; 0 before the first.
    last_accepted_secs: AtomicU64,
}

/// Values copied into [`XdsStats`] at once, for a client that keeps its own counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdsSnapshot {
    pub connected: bool,
    pub synced: bool,
    pub streams: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub last_accepted: Option<SystemTime>,
}

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// A generic metric: a name's help text and its series by label set.
#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    series: HashMap<Vec<(&'static str, String)>, Series>,
}

#[derive(Clone, Debug)]
enum Series {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
}

// === impl HttpLabels ===

impl HttpLabels {
    fn key(&self) -> [&str; 6] {
        [
            direction_label(self.direction),
            &self.listener,
            &self.route,
            &self.destination,
            &self.backend,
            &self.peer,
        ]
    }

    fn render(&self) -> String {
        let [direction, listener, route, destination, backend, peer] = self.key();
        labels(&[
            ("direction", direction),
            ("listener", listener),
            ("route", route),
            ("destination", destination),
            ("backend", backend),
            ("peer", peer),
        ])
    }
}

// `Direction` has no `Hash`; hash what `Eq` compares.
impl Hash for HttpLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

// === impl TcpLabels ===

impl TcpLabels {
    fn key(&self) -> [&str; 4] {
        [
            direction_label(self.direction),
            &self.listener,
            &self.backend,
            &self.peer,
        ]
    }

    fn render(&self) -> String {
        let [direction, listener, backend, peer] = self.key();
        labels(&[
            ("direction", direction),
            ("listener", listener),
            ("backend", backend),
            ("peer", peer),
        ])
    }
}

impl Hash for TcpLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

// === impl Registry ===

impl Registry {
    /// The stats of an HTTP label set, created on first use. Look it up once per request.
    pub fn http(&self, labels: &HttpLabels) -> Arc<HttpStats> {
        get_or_insert(&self.http, labels)
    }

    /// The stats of a TCP label set, created on first use. Look it up once per connection.
    pub fn tcp(&self, labels: &TcpLabels) -> Arc<TcpStats> {
        get_or_insert(&self.tcp, labels)
    }

    /// The golden stats of an upstream cluster, created on first use. Look it up once per
    /// request or connection.
    pub fn upstream(&self, cluster: &str) -> Arc<UpstreamStats> {
        get_or_insert_named(&self.upstreams, cluster)
    }

    /// The golden stats of an HTTP connection manager by `stat_prefix`, created on first use.
    /// Look it up once per connection.
    pub fn http_manager(&self, stat_prefix: &str) -> Arc<HttpManagerStats> {
        get_or_insert_named(&self.http_managers, stat_prefix)
    }

    /// The golden stats of a route with a `stat_prefix`, by its virtual host's name, created
    /// on first use. Look it up once per request.
    pub fn route(&self, virtual_host: &str, stat_prefix: &str) -> Arc<RouteStats> {
        if let Some(stats) = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(virtual_host)
            .and_then(|routes| routes.get(stat_prefix))
        {
            return Arc::clone(stats);
        }
        let mut map = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry(virtual_host.to_owned())
                .or_default()
                .entry(stat_prefix.to_owned())
                .or_default(),
        )
    }

    /// A copy of every golden stat, for the metrics service client.
    pub fn golden(&self) -> GoldenSnapshot {
        let upstreams = self
            .upstreams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, stats)| (name.clone(), stats.values()))
            .collect();
        let http_managers = self
            .http_managers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(prefix, stats)| (prefix.clone(), stats.values()))
            .collect();
        let routes = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|(vhost, routes)| {
                routes
                    .iter()
                    .map(move |(prefix, stats)| ((vhost.clone(), prefix.clone()), stats.values()))
            })
            .collect();
        GoldenSnapshot {
            upstreams,
            http_managers,
            routes,
        }
    }

    /// The xDS client's state.
    pub fn xds(&self) -> &XdsStats {
        &self.xds
    }

    /// A counter named [`PREFIX`] + `name` with these labels, created on first use. `help` is
    /// taken from the first call for a name. A name already used for a gauge gives a counter
    /// that is not exported (and a warning in the log): names must not be shared.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Arc<Counter> {
        match self.series(name, help, Kind::Counter, labels) {
            Some(Series::Counter(counter)) => counter,
            _ => Arc::default(),
        }
    }

    /// A gauge, as [`Registry::counter`].
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Arc<Gauge> {
        match self.series(name, help, Kind::Gauge, labels) {
            Some(Series::Gauge(gauge)) => gauge,
            _ => Arc::default(),
        }
    }

    /// Counts a request or connection that RBAC denied (`denied_total{listener}`).
    pub fn denied(&self, listener: &str) {
        self.counter(
            "denied_total",
            "Requests and connections denied by RBAC.",
            &[("listener", listener)],
        )
        .inc();
    }

    /// Counts a retry sent to a cluster (`retries_total{cluster}`).
    pub fn retry(&self, cluster: &str) {
        self.counter(
            "retries_total",
            "Retried requests, by upstream cluster.",
            &[("cluster", cluster)],
        )
        .inc();
    }

    /// Counts a retry not sent because the retry budget was spent
    /// (`retry_budget_exhausted_total{cluster}`).
    pub fn retry_budget_exhausted(&self, cluster: &str) {
        self.counter(
            "retry_budget_exhausted_total",
            "Retries skipped because the cluster's retry budget was spent.",
            &[("cluster", cluster)],
        )
        .inc();
    }

    /// Counts an endpoint ejection by outlier detection (`ejections_total{cluster}`).
    pub fn ejected(&self, cluster: &str) {
        self.counter(
            "ejections_total",
            "Endpoints ejected by outlier detection.",
            &[("cluster", cluster)],
        )
        .inc();
    }

    /// Counts a failed downstream TLS handshake
    /// (`tls_handshake_errors_total{listener,reason}`). Reasons: `not_tls` (the peer did not
    /// speak TLS), `no_certificate` (no client certificate where one is required),
    /// `bad_certificate` (a certificate the trust bundle does not verify), `timeout`, `other`.
    pub fn tls_handshake_error(&self, listener: &str, reason: &str) {
        self.counter(
            "tls_handshake_errors_total",
            "Downstream TLS handshakes that failed or timed out, by reason.",
            &[("listener", listener), ("reason", reason)],
        )
        .inc();
    }

    /// Counts a completed downstream TLS handshake on a listener
    /// (`tls_handshakes_total{listener}`).
    pub fn tls_handshake(&self, listener: &str) {
        self.counter(
            "tls_handshakes_total",
            "Completed downstream TLS handshakes, by listener.",
            &[("listener", listener)],
        )
        .inc();
    }

    /// Counts a completed upstream TLS handshake (`upstream_tls_handshakes_total{cluster}`).
    pub fn upstream_tls_handshake(&self, cluster: &str) {
        self.counter(
            "upstream_tls_handshakes_total",
            "Completed upstream (client-side) TLS handshakes, by cluster.",
            &[("cluster", cluster)],
        )
        .inc();
    }

    /// Counts a connection a filter chain's connection limit closed
    /// (`connections_limited_total{listener,stat_prefix}`; Envoy's
    /// `connection_limit.<stat_prefix>.limited_connections`).
    pub fn connection_limited(&self, listener: &str, stat_prefix: &str) {
        self.counter(
            "connections_limited_total",
            "Connections closed at once because their filter chain's connection limit was reached.",
            &[("listener", listener), ("stat_prefix", stat_prefix)],
        )
        .inc();
    }

    /// Counts a connection or request a timeout ended
    /// (`timeouts_total{listener,stat_prefix,timeout}`), `stat_prefix` being the HTTP
    /// connection manager's or TCP proxy's; see [`Timeout`] for Envoy's names.
    pub fn timeout(&self, listener: &str, stat_prefix: &str, timeout: Timeout) {
        self.counter(
            "timeouts_total",
            "Downstream connections and requests ended by a timeout, by timeout.",
            &[
                ("listener", listener),
                ("stat_prefix", stat_prefix),
                ("timeout", timeout.label()),
            ],
        )
        .inc();
    }

    /// Counts a failed attempt to bind a listener (`listener_bind_errors_total{listener}`).
    pub fn listener_bind_error(&self, listener: &str) {
        self.counter(
            "listener_bind_errors_total",
            "Failed attempts to bind a listener's socket.",
            &[("listener", listener)],
        )
        .inc();
    }

    fn series(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&'static str, &str)],
    ) -> Option<Series> {
        let key: Vec<(&'static str, String)> = labels
            .iter()
            .map(|(label, value)| (*label, (*value).to_owned()))
            .collect();
        {
            let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(family) = families.get(name) {
                if family.kind != kind {
                    tracing::warn!(metric = name, "metric name used for a counter and a gauge");
                    return None;
                }
                if let Some(series) = family.series.get(&key) {
                    return Some(series.clone());
                }
            }
        }
        let mut families = self
            .families
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: HashMap::new(),
        });
        if family.kind != kind {
            tracing::warn!(metric = name, "metric name used for a counter and a gauge");
            return None;
        }
        let series = family.series.entry(key).or_insert_with(|| match kind {
            Kind::Counter => Series::Counter(Arc::default()),
            Kind::Gauge => Series::Gauge(Arc::default()),
        });
        Some(series.clone())
    }

    /// Every metric in the Prometheus text exposition format 0.0.4, series sorted by labels.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_http(&mut out);
        self.render_tcp(&mut out);
        self.xds.render(&mut out);
        self.render_families(&mut out);
        out
    }

    fn render_http(&self, out: &mut String) {
        let mut http: Vec<(String, Arc<HttpStats>)> = {
            let map = self.http.read().unwrap_or_else(PoisonError::into_inner);
            map.iter()
                .map(|(labels, stats)| (labels.render(), Arc::clone(stats)))
                .collect()
        };
        http.sort_by(|a, b| a.0.cmp(&b.0));

        header(
            out,
            "requests_total",
            "counter",
            "HTTP requests answered, by status class.",
        );
        for (labels, stats) in &http {
            for (class, count) in STATUS_CLASSES.iter().zip(&stats.requests) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let labels = with_label(labels, "status_class", class);
                    sample(out, "requests_total", &labels, &count.to_string());
                }
            }
        }

        header(
            out,
            "request_duration_seconds",
            "histogram",
            "Time from the request to the end of the response head.",
        );
        for (labels, stats) in &http {
            stats
                .latency
                .render(out, "request_duration_seconds", labels);
        }
    }

    fn render_tcp(&self, out: &mut String) {
        let mut tcp: Vec<(String, Arc<TcpStats>)> = {
            let map = self.tcp.read().unwrap_or_else(PoisonError::into_inner);
            map.iter()
                .map(|(labels, stats)| (labels.render(), Arc::clone(stats)))
                .collect()
        };
        tcp.sort_by(|a, b| a.0.cmp(&b.0));

        // Name, type, help, value.
        type TcpFamily = (
            &'static str,
            &'static str,
            &'static str,
            fn(&TcpStats) -> String,
        );
        let families: [TcpFamily; 4] = [
            (
                "tcp_connections_opened_total",
                "counter",
                "Proxied TCP connections opened.",
                |s| s.opened.load(Ordering::Relaxed).to_string(),
            ),
            (
                "tcp_connections_active",
                "gauge",
                "Proxied TCP connections open now.",
                |s| s.active.load(Ordering::Relaxed).to_string(),
            ),
            (
                "tcp_received_bytes_total",
                "counter",
                "Bytes read from the downstream peer of proxied TCP connections.",
                |s| s.received.load(Ordering::Relaxed).to_string(),
            ),
            (
                "tcp_sent_bytes_total",
                "counter",
                "Bytes written to the downstream peer of proxied TCP connections.",
                |s| s.sent.load(Ordering::Relaxed).to_string(),
            ),
        ];
        for (name, kind, help, value) in families {
            header(out, name, kind, help);
            for (labels, stats) in &tcp {
                sample(out, name, labels, &value(stats));
            }
        }
    }

    fn render_families(&self, out: &mut String) {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        for (name, family) in families.iter() {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            header(out, name, kind, family.help);
            let mut series: Vec<(String, String)> = family
                .series
                .iter()
                .map(|(key, series)| {
                    let pairs: Vec<(&str, &str)> = key
                        .iter()
                        .map(|(label, value)| (*label, value.as_str()))
                        .collect();
                    let value = match series {
                        Series::Counter(counter) => counter.get().to_string(),
                        Series::Gauge(gauge) => gauge.get().to_string(),
                    };
                    (labels(&pairs), value)
                })
                .collect();
            series.sort();
            for (labels, value) in &series {
                sample(out, name, labels, value);
            }
        }
    }
}

fn get_or_insert<K, V>(map: &RwLock<HashMap<K, Arc<V>>>, key: &K) -> Arc<V>
where
    K: Eq + Hash + Clone,
    V: Default,
{
    if let Some(value) = map.read().unwrap_or_else(PoisonError::into_inner).get(key) {
        return Arc::clone(value);
    }
    let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(map.entry(key.clone()).or_default())
}

/// [`get_or_insert`] for a map keyed by name, looked up without allocating.
fn get_or_insert_named<V: Default>(map: &RwLock<HashMap<String, Arc<V>>>, name: &str) -> Arc<V> {
    if let Some(value) = map.read().unwrap_or_else(PoisonError::into_inner).get(name) {
        return Arc::clone(value);
    }
    let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(map.entry(name.to_owned()).or_default())
}

/// 0 for 1xx … 4 for 5xx; statuses outside 100–599 count in the nearest class.
fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

fn load<const N: usize>(counts: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| counts[i].load(Ordering::Relaxed))
}

// === impl UpstreamStats ===

impl UpstreamStats {
    /// Counts a request the cluster answered, or that failed on its way to it (the proxy
    /// answered `status` itself), by its status.
    pub fn count(&self, status: u16) {
        self.requests[class_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// [`count`](UpstreamStats::count)s and, for a response of the cluster, records its time.
    pub fn record(&self, status: u16, time: Option<Duration>) {
        self.count(status);
        if let Some(time) = time {
            self.times.observe(time);
        }
    }

    /// Counts a connection to an endpoint of the cluster as opened, and open until the guard
    /// is dropped: from its first attempt (a connection refused counts, as in Envoy).
    pub fn connecting(self: &Arc<Self>) -> UpstreamConnection {
        self.cx_opened.fetch_add(1, Ordering::Relaxed);
        self.cx_active.fetch_add(1, Ordering::Relaxed);
        UpstreamConnection {
            stats: Arc::clone(self),
        }
    }

    /// Adds bytes received from an endpoint.
    pub fn received(&self, bytes: u64) {
        self.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds bytes sent to an endpoint.
    pub fn sent(&self, bytes: u64) {
        self.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn values(&self) -> UpstreamValues {
        UpstreamValues {
            requests: load(&self.requests),
            times: self.times.values(),
            cx_opened: self.cx_opened.load(Ordering::Relaxed),
            cx_active: self.cx_active.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
        }
    }
}

// === impl UpstreamConnection ===

impl UpstreamConnection {
    pub fn stats(&self) -> &UpstreamStats {
        &self.stats
    }
}

impl Drop for UpstreamConnection {
    fn drop(&mut self) {
        self.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl HttpManagerStats ===

impl HttpManagerStats {
    /// Counts a response the connection manager sent, its own answers included, by status.
    pub fn count(&self, status: u16) {
        self.requests[class_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// [`count`](HttpManagerStats::count)s a response and records its time.
    pub fn record(&self, status: u16, time: Duration) {
        self.count(status);
        self.times.observe(time);
    }

    /// A timer of a request that began at `started`, for this connection manager and, when it
    /// answered, the cluster (and route).
    pub fn timer(
        self: &Arc<Self>,
        started: std::time::Instant,
        answered: Option<Answered>,
    ) -> ResponseTimer {
        ResponseTimer {
            started,
            manager: Arc::clone(self),
            answered,
        }
    }

    pub fn values(&self) -> HttpManagerValues {
        HttpManagerValues {
            requests: load(&self.requests),
            times: self.times.values(),
        }
    }
}

// === impl ResponseTimer ===

impl Drop for ResponseTimer {
    fn drop(&mut self) {
        let time = self.started.elapsed();
        self.manager.times.observe(time);
        if let Some(answered) = &self.answered {
            answered.upstream.times.observe(time);
            if let Some(route) = &answered.route {
                route.times.observe(time);
            }
        }
    }
}

// === impl RouteStats ===

impl RouteStats {
    /// Counts a request the route sent to its cluster, as [`UpstreamStats::count`].
    pub fn count(&self, status: u16) {
        self.requests[class_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn values(&self) -> RouteValues {
        RouteValues {
            requests: load(&self.requests),
            times: self.times.values(),
        }
    }
}

// === impl RequestTimes ===

impl RequestTimes {
    /// Records one request's time, in whole milliseconds.
    pub fn observe(&self, time: Duration) {
        let millis = u64::try_from(time.as_millis()).unwrap_or(u64::MAX);
        self.buckets[time_bucket(millis)].fetch_add(1, Ordering::Relaxed);
        self.sum_millis.fetch_add(millis, Ordering::Relaxed);
    }

    pub fn values(&self) -> TimesValues {
        TimesValues {
            buckets: load(&self.buckets),
            sum_millis: self.sum_millis.load(Ordering::Relaxed),
        }
    }
}

impl TimesValues {
    /// How many requests.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

// === impl HttpStats ===

impl HttpStats {
    /// Records one request: its response status and how long it took.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.requests[class_index(status)].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(elapsed);
    }

    /// Requests recorded with a status of this class (`1` for `1xx` … `5` for `5xx`); 0 for
    /// another number.
    pub fn requests(&self, class: u16) -> u64 {
        match class {
            1..=5 => self.requests[usize::from(class) - 1].load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// The latency histogram.
    pub fn latency(&self) -> &Histogram {
        &self.latency
    }
}

// === impl Histogram ===

impl Histogram {
    /// Records one duration, in whole microseconds.
    pub fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the recorded durations, in microseconds.
    pub fn sum_micros(&self) -> u64 {
        self.sum_micros.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0u64;
        // `le` in seconds: 500 µs renders `0.0005`, 1 s `1` (the shortest decimal of the f64).
        let bounds = LATENCY_BUCKETS_MICROS
            .iter()
            .map(|&micros| (micros as f64 / 1e6).to_string())
            .chain(["+Inf".to_owned()]);
        for (le, bucket) in bounds.zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let labels = with_label(labels, "le", &le);
            sample(out, &bucket_name, &labels, &cumulative.to_string());
        }
        let sum = self.sum_micros() as f64 / 1e6;
        sample(out, &format!("{name}_sum"), labels, &sum.to_string());
        sample(
            out,
            &format!("{name}_count"),
            labels,
            &cumulative.to_string(),
        );
    }
}

// === impl TcpStats ===

impl TcpStats {
    /// Counts a connection as opened and active until the guard is dropped.
    pub fn open(self: &Arc<Self>) -> OpenConnection {
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            stats: Arc::clone(self),
        }
    }

    /// Adds bytes read from (`received`) and written to (`sent`) the downstream peer.
    pub fn bytes(&self, received: u64, sent: u64) {
        self.received.fetch_add(received, Ordering::Relaxed);
        self.sent.fetch_add(sent, Ordering::Relaxed);
    }

    /// Connections opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn active(&self) -> i64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Bytes read from and written to the downstream peer so far.
    pub fn total_bytes(&self) -> (u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
        )
    }
}

// === impl OpenConnection ===

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl XdsStats ===

impl XdsStats {
    /// Whether the ADS stream is up.
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    /// Whether every subscribed type has been answered.
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Relaxed);
    }

    /// Counts an ADS stream opened.
    pub fn stream_opened(&self) {
        self.streams.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response, accepted (ACKed) at `now` or rejected (NACKed).
    pub fn response(&self, accepted: bool, now: SystemTime) {
        if accepted {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            self.last_accepted_secs
                .store(unix_secs(now), Ordering::Relaxed);
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Overwrites every value, for a client that keeps its own counts (copied at scrape time).
    pub fn set(&self, snapshot: &XdsSnapshot) {
        self.set_connected(snapshot.connected);
        self.set_synced(snapshot.synced);
        self.streams.store(snapshot.streams, Ordering::Relaxed);
        self.accepted.store(snapshot.accepted, Ordering::Relaxed);
        self.rejected.store(snapshot.rejected, Ordering::Relaxed);
        let last = snapshot.last_accepted.map_or(0, unix_secs);
        self.last_accepted_secs.store(last, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let flag = |b: &AtomicBool| if b.load(Ordering::Relaxed) { "1" } else { "0" };
        header(
            out,
            "xds_connected",
            "gauge",
            "1 while the ADS stream to the control plane is up.",
        );
        sample(out, "xds_connected", "", flag(&self.connected));
        header(
            out,
            "xds_synced",
            "gauge",
            "1 once every subscribed resource type has been answered.",
        );
        sample(out, "xds_synced", "", flag(&self.synced));
        header(out, "xds_streams_total", "counter", "ADS streams opened.");
        let streams = self.streams.load(Ordering::Relaxed);
        sample(out, "xds_streams_total", "", &streams.to_string());
        header(
            out,
            "xds_responses_total",
            "counter",
            "xDS responses, by whether they were accepted.",
        );
        for (result, count) in [("accepted", &self.accepted), ("rejected", &self.rejected)] {
            let labels = labels(&[("result", result)]);
            let count = count.load(Ordering::Relaxed);
            sample(out, "xds_responses_total", &labels, &count.to_string());
        }
        header(
            out,
            "xds_last_accepted_timestamp_seconds",
            "gauge",
            "Unix time of the last accepted xDS response.",
        );
        let last = self.last_accepted_secs.load(Ordering::Relaxed);
        if last > 0 {
            sample(
                out,
                "xds_last_accepted_timestamp_seconds",
                "",
                &last.to_string(),
            );
        }
    }
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === impl Counter ===

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

// === impl Gauge ===

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

// === Rendering ===

fn direction_label(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(PREFIX);
    out.push_str(name);
    out.push(' ');
    // HELP text escapes backslash and newline only.
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(PREFIX);
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// One sample line; `labels` is a rendered `{…}` block or empty.
fn sample(out: &mut String, name: &str, labels: &str, value: &str) {
    out.push_str(PREFIX);
    out.push_str(name);
    out.push_str(labels);
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Renders `{a="x",b="y"}` with escaped values; empty for no labels.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        push_escaped(&mut out, value);
        out.push('"');
    }
    out.push('}');
    out
}

/// Adds one label to a rendered label block.
fn with_label(rendered: &str, name: &str, value: &str) -> String {
    let mut out = match rendered.strip_suffix('}') {
        Some(open) => format!("{open},"),
        None => String::from("{"),
    };
    out.push_str(name);
    out.push_str("=\"");
    push_escaped(&mut out, value);
    out.push_str("\"}");
    out
}

/// Label values escape backslash, double quote and newline.
fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}
