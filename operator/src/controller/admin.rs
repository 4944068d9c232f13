//! The controller's admin port (and local mode's): `/healthz`, `/readyz`, Prometheus
//! `/metrics`, and where [`Admin::proxies`] is set, `/proxies` (`switchyard proxy-status`) and
//! `/proxies/{proxy}/config` (`switchyard proxy-config`).
//!
//! ```text
//!  kubelet, Prometheus ──▶ Pod IP :9090      /healthz /readyz /metrics
//!  CLI ─pods/portforward─▶ 127.0.0.1:9091    /proxies /proxies/{proxy}/config (+ the above)
//! ```
//!
//! What each proxy runs (its services, endpoints and routes) is for the mesh's operators, not
//! for every Pod that can reach the operator: in a cluster it is served on loopback only, which
//! the API server reaches for a user allowed to port-forward to the operator's Pods.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use tokio::net::TcpListener;

use crate::index::Workloads;
use crate::telemetry::Telemetry;
use crate::xds::{
    ConfigDump, TypeFilter, dump::MAX_DUMP_BYTES, metrics::XdsMetrics, status::ProxyStatuses,
};

#[cfg(test)]
mod tests;

/// Upper bounds of the reconcile-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// The prefix of every metric the operator exports.
const PREFIX: &str = "switchyard";

/// Counters and gauges of the controller. Updated from the event loop; read by `/metrics`.
#[derive(Debug)]
pub struct ControllerMetrics {
    /// Holds the metrics below (each a shared handle), in `/metrics` order.
    registry: Registry,
    reconciles: Counter,
    reconcile_duration: Histogram,
    watch_restarts: Family<KindLabels, Counter>,
    decode_errors: Family<KindLabels, Counter>,
    status_writes: Family<ResultLabels, Counter>,
    events: Counter,
    leader: Gauge,
    proxies: Gauge,
    synced: AtomicBool,
}

/// The kind of object a watch or decode counter is about (`pod`, `trafficsplit`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// How a status write went: `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

// === impl ControllerMetrics ===

impl Default for ControllerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let reconciles = Counter::default();
        let reconcile_duration = Histogram::new(BUCKETS);
        let watch_restarts = Family::default();
        let decode_errors = Family::default();
        let status_writes = Family::<ResultLabels, Counter>::default();
        // Both results from the start, so a scrape sees a zero rather than no series.
        for result in ["ok", "error"] {
            let _ = status_writes.get_or_create(&ResultLabels { result });
        }
        let events = Counter::default();
        let leader = Gauge::default();
        let proxies = Gauge::default();
        // Help texts without the final period: the registry adds it.
        registry.register(
            "reconciles",
            "Batches of watch events applied and published",
            reconciles.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time to apply and publish one batch",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register(
            "watch_restarts",
            "Watches that (re)started with a full list, by kind",
            watch_restarts.clone(),
        );
        registry.register(
            "decode_errors",
            "Objects that did not decode (reported, never applied), by kind",
            decode_errors.clone(),
        );
        registry.register(
            "status_writes",
            "Status writes to SMI objects, by result",
            status_writes.clone(),
        );
        registry.register("events", "Kubernetes Events emitted", events.clone());
        registry.register(
            "leader",
            "1 when this replica holds the status-writer lease",
            leader.clone(),
        );
        registry.register("proxies", "Proxies (Pods) the index knows", proxies.clone());
        ControllerMetrics {
            registry,
            reconciles,
            reconcile_duration,
            watch_restarts,
            decode_errors,
            status_writes,
            events,
            leader,
            proxies,
            synced: AtomicBool::new(false),
        }
    }
}

impl ControllerMetrics {
    /// One pass of the event loop: a batch of watch events applied and published.
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn watch_restarted(&self, kind: &str) {
        self.watch_restarts.get_or_create(&kind_labels(kind)).inc();
    }

    pub fn decode_failed(&self, kind: &str) {
        self.decode_errors.get_or_create(&kind_labels(kind)).inc();
    }

    pub fn status_written(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.status_writes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn event_emitted(&self) {
        self.events.inc();
    }

    pub fn set_proxies(&self, n: usize) {
        self.proxies.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Every watch delivered its first complete list.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Prometheus text format 0.0.4 ([`prometheus_text::CONTENT_TYPE`]): the controller's
    /// metrics, then the xDS server's as they are now.
    pub fn render(&self, xds: &XdsMetrics) -> String {
        let mut xds_registry = Registry::with_prefix(PREFIX);
        xds_registry.register_collector(Box::new(xds.snapshot()));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_text::encode(&mut out, &xds_registry);
        out
    }
}

fn kind_labels(kind: &str) -> KindLabels {
    KindLabels {
        kind: kind.to_owned(),
    }
}

/// Where the admin port lists the proxies connected to this replica.
pub const PROXIES_PATH: &str = "/proxies";

/// `GET /proxies/{proxy}/config[?type=cds|eds|lds|rds|sds|tbds|all]`: what one proxy runs, as
/// [`ConfigDump`] JSON; `{proxy}` is `<namespace>/<pod>` (or a local-mode workload name),
/// percent-encoded as one segment (`shop%2Fweb-0`) or not.
pub const CONFIG_SUFFIX: &str = "/config";

/// What a proxy's name keeps unencoded in its path segment: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The path of one proxy's configuration.
pub fn config_path(proxy: &str, filter: TypeFilter) -> String {
    let proxy = percent_encoding::utf8_percent_encode(proxy, SEGMENT);
    format!(
        "{PROXIES_PATH}/{proxy}{CONFIG_SUFFIX}?type={}",
        filter.as_str()
    )
}

/// What `/readyz` checks besides the watches' first sync.
#[derive(Clone, Debug)]
pub struct Admin {
    pub metrics: Arc<ControllerMetrics>,
    pub xds: Arc<XdsMetrics>,
    /// `GET /proxies`: the proxies connected to this replica, per xDS type (JSON, for
    /// `switchyard proxy-status`); `GET /proxies/{proxy}/config`: what one runs. `None` on a
    /// port other Pods can reach: both answer 404 there.
    pub proxies: Option<Arc<ProxyStatuses>>,
    /// `GET /apis/metrics.smi-spec.io/v1alpha1/...`: the SMI Traffic Metrics API (and
    /// Switchyard's `edges` beside it) over the golden metrics the proxies pushed to this
    /// control plane, all of them: local mode only (in a cluster the aggregated API merges every
    /// replica's, see [`super::metrics_api`]). `None`: 404.
    pub telemetry: Option<Arc<Telemetry>>,
    /// What the control plane compiled for each proxy, which `edges` names identities with;
    /// none known without it.
    pub peers: Option<crate::edges::SharedPeers>,
    /// The index's view of workloads, Services and TrafficSplits the Traffic Metrics API
    /// resolves into Pods. `None`: none is known (Pods and namespaces are still answered).
    pub workloads: Option<tokio::sync::watch::Receiver<Arc<Workloads>>>,
    /// `GET /tap?namespace=<ns>&…`: the requests of the proxies a session selects, one JSON
    /// line each, while the client reads (for `switchyard tap`). `None`: 404.
    pub taps: Option<Arc<crate::tap::Hub>>,
}

/// Serves the admin port until the task is dropped.
pub async fn serve(listener: TcpListener, admin: Admin) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let admin = admin.clone();
                async move {
                    let tap = (req.method() == hyper::Method::GET
                        && req.uri().path() == crate::tap::TAP_PATH)
                        .then_some(admin.taps.as_ref())
                        .flatten();
                    Ok::<_, Infallible>(match tap {
                        Some(hub) => crate::tap::stream::respond(hub, req.uri().query()),
                        None => respond(&admin, &req).map(http_body_util::BodyExt::boxed_unsync),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One admin response; plain function so tests need no socket.
pub fn respond(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let get = req.method() == hyper::Method::GET;
    answer(admin, get, req.uri().path(), req.uri().query())
}

fn answer(admin: &Admin, get: bool, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    if let (true, Some(telemetry)) = (get, admin.telemetry.as_deref())
        && path.starts_with(TRAFFIC_METRICS_PREFIX)
    {
        let workloads = admin
            .workloads
            .as_ref()
            .map(|w| w.borrow().clone())
            .unwrap_or_default();
        let peers = admin.peers.as_ref().map(|p| p.get()).unwrap_or_default();
        return traffic_metrics(telemetry, &workloads, &peers, path, query);
    }
    match (get, admin.proxies.as_deref(), config_of(path)) {
        (true, Some(proxies), Some(proxy)) => proxy_config(proxies, &proxy, query),
        _ => route(admin, get, path),
    }
}

/// The proxy a `/proxies/{proxy}/config` path names, decoded.
fn config_of(path: &str) -> Option<String> {
    let proxy = path
        .strip_prefix(PROXIES_PATH)?
        .strip_prefix('/')?
        .strip_suffix(CONFIG_SUFFIX)?;
    let decoded = percent_encoding::percent_decode_str(proxy)
        .decode_utf8()
        .ok()?;
    (!decoded.is_empty()).then(|| decoded.into_owned())
}

fn proxy_config(
    proxies: &ProxyStatuses,
    proxy: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let filter = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("type="))
        .map_or(Ok(TypeFilter::All), TypeFilter::parse);
    let filter = match filter {
        Ok(filter) => filter,
        Err(error) => return text(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let Some(live) = proxies.config(proxy) else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "no xds stream from proxy {proxy:?} on this control plane (GET {PROXIES_PATH} lists the connected ones)"
            ),
        );
    };
    json(&ConfigDump::of(&live, filter, MAX_DUMP_BYTES))
}

/// Where the Traffic Metrics API's paths start.
const TRAFFIC_METRICS_PREFIX: &str = "/apis/metrics.smi-spec.io/";

/// Answers a Traffic Metrics API request over every proxy's metrics in `telemetry` (one
/// control plane holding them all).
fn traffic_metrics(
    telemetry: &Telemetry,
    workloads: &Workloads,
    peers: &crate::edges::Peers,
    path: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    use crate::traffic_metrics::{Request, answer};
    let answered = Request::parse(path, query).and_then(|request| {
        let data = match request.window() {
            Some(window) => telemetry.snapshot(window, |p| request.proxies().contains(p)),
            None => crate::telemetry::Snapshot::empty(std::time::Duration::ZERO),
        };
        answer(&data, workloads, peers, &request, &timestamp())
    });
    traffic_metrics_response(answered)
}

/// Now, as the Traffic Metrics API writes its items' timestamps: RFC 3339, UTC, seconds.
pub(crate) fn timestamp() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_default()
        .to_string()
}

/// A Traffic Metrics API answer: the object, or a `Status` with the error's code.
pub(crate) fn traffic_metrics_response(
    answered: Result<serde_json::Value, crate::traffic_metrics::RequestError>,
) -> Response<Full<Bytes>> {
    match answered {
        Ok(value) => json(&value),
        Err(error) => {
            let mut resp = json(&error.to_status());
            *resp.status_mut() = error.status();
            resp
        }
    }
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

fn route(admin: &Admin, get: bool, path: &str) -> Response<Full<Bytes>> {
    if let (true, PROXIES_PATH, Some(proxies)) = (get, path, &admin.proxies) {
        return json(&proxies.list());
    }
    let (status, body) = match (get, path) {
        (true, "/healthz") => (StatusCode::OK, "ok".to_string()),
        (true, "/readyz") if admin.metrics.is_synced() => (StatusCode::OK, "ok".to_string()),
        (true, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "watches not synced yet".to_string(),
        ),
        (true, "/metrics") => (StatusCode::OK, admin.metrics.render(&admin.xds)),
        (false, _) => (StatusCode::METHOD_NOT_ALLOWED, "GET only".to_string()),
        _ => (StatusCode::NOT_FOUND, "not found".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if get && path == "/metrics" {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
        );
    }
    resp
}
