//! The controller's admin port: `/healthz`, `/readyz` and Prometheus `/metrics`.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::xds::{metrics::XdsMetrics, status::ProxyStatuses};

#[cfg(test)]
mod tests;

/// Upper bounds of the reconcile-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// Counters and gauges of the controller. Updated from the event loop; read by `/metrics`.
#[derive(Debug, Default)]
pub struct ControllerMetrics {
    reconciles: AtomicU64,
    /// Per bucket (and +Inf last), sum in microseconds.
    duration_buckets: [AtomicU64; BUCKETS.len() + 1],
    duration_sum_us: AtomicU64,
    watch_restarts: Mutex<BTreeMap<String, u64>>,
    decode_errors: Mutex<BTreeMap<String, u64>>,
    status_writes_ok: AtomicU64,
    status_writes_failed: AtomicU64,
    events: AtomicU64,
    proxies_published: AtomicU64,
    leader: AtomicBool,
    synced: AtomicBool,
}

// === impl ControllerMetrics ===

impl ControllerMetrics {
    /// One pass of the event loop: a batch of watch events applied and published.
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn watch_restarted(&self, kind: &str) {
        bump(&self.watch_restarts, kind);
    }

    pub fn decode_failed(&self, kind: &str) {
        bump(&self.decode_errors, kind);
    }

    pub fn status_written(&self, ok: bool) {
        if ok {
            &self.status_writes_ok
        } else {
            &self.status_writes_failed
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn event_emitted(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_proxies(&self, n: usize) {
        self.proxies_published
            .store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// Every watch delivered its first complete list.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Prometheus text format 0.0.4.
    pub fn render(&self, xds: &XdsMetrics) -> String {
        let mut out = String::new();
        let x = xds.snapshot();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        counter(
            &mut out,
            "switchyard_reconciles_total",
            "Batches of watch events applied and published.",
            self.reconciles.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP switchyard_reconcile_duration_seconds Time to apply and publish one batch.\n\
             # TYPE switchyard_reconcile_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, upper) in BUCKETS.iter().enumerate() {
            cumulative += self.duration_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "switchyard_reconcile_duration_seconds_bucket{{le=\"{upper}\"}} {cumulative}"
            );
        }
        cumulative += self.duration_buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "switchyard_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}\n\
             switchyard_reconcile_duration_seconds_sum {}\n\
             switchyard_reconcile_duration_seconds_count {cumulative}",
            self.duration_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        labelled(
            &mut out,
            "switchyard_watch_restarts_total",
            "Watches that (re)started with a full list, by kind.",
            &self.watch_restarts,
        );
        labelled(
            &mut out,
            "switchyard_decode_errors_total",
            "Objects that did not decode (reported, never applied), by kind.",
            &self.decode_errors,
        );
        let _ = writeln!(
            out,
            "# HELP switchyard_status_writes_total Status writes to SMI objects, by result.\n\
             # TYPE switchyard_status_writes_total counter\n\
             switchyard_status_writes_total{{result=\"ok\"}} {}\n\
             switchyard_status_writes_total{{result=\"error\"}} {}",
            self.status_writes_ok.load(Ordering::Relaxed),
            self.status_writes_failed.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "switchyard_events_total",
            "Kubernetes Events emitted.",
            self.events.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "switchyard_leader",
            "1 when this replica holds the status-writer lease.",
            u64::from(self.leader.load(Ordering::Relaxed)),
        );
        gauge(
            &mut out,
            "switchyard_proxies",
            "Proxies (Pods) the index knows.",
            self.proxies_published.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "switchyard_xds_connected_proxies",
            "xDS streams open now.",
            x.connected_streams,
        );
        counter(
            &mut out,
            "switchyard_xds_streams_total",
            "xDS streams accepted.",
            x.streams_total,
        );
        counter(
            &mut out,
            "switchyard_xds_pushes_total",
            "Discovery responses sent, of every type.",
            x.pushes,
        );
        counter(
            &mut out,
            "switchyard_xds_config_pushes_total",
            "Discovery responses sent with listeners, routes, clusters or endpoints.",
            x.pushes - x.secret_pushes,
        );
        counter(
            &mut out,
            "switchyard_xds_endpoint_pushes_total",
            "Discovery responses sent with endpoints (EDS), a part of the config pushes.",
            x.endpoint_pushes,
        );
        counter(
            &mut out,
            "switchyard_xds_secret_pushes_total",
            "Discovery responses sent with certificates.",
            x.secret_pushes,
        );
        counter(
            &mut out,
            "switchyard_xds_nacks_total",
            "Discovery requests that rejected a response.",
            x.nacks,
        );
        counter(
            &mut out,
            "switchyard_xds_auth_failures_total",
            "xDS streams refused by authentication.",
            x.auth_failures,
        );
        out
    }
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
    if let Ok(mut m) = map.lock() {
        *m.entry(key.to_string()).or_default() += 1;
    }
}

fn labelled(out: &mut String, name: &str, help: &str, map: &Mutex<BTreeMap<String, u64>>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    if let Ok(m) = map.lock() {
        for (kind, v) in m.iter() {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {v}");
        }
    }
}

/// Where the admin port lists the proxies connected to this replica.
pub const PROXIES_PATH: &str = "/proxies";

/// What `/readyz` checks besides the watches' first sync.
#[derive(Clone, Debug)]
pub struct Admin {
    pub metrics: Arc<ControllerMetrics>,
    pub xds: Arc<XdsMetrics>,
    /// `GET /proxies`: the proxies connected to this replica, per xDS type (JSON, for
    /// `switchyard proxy-status`).
    pub proxies: Arc<ProxyStatuses>,
}

/// Serves the admin port until the task is dropped.
pub async fn serve(listener: TcpListener, admin: Admin) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(respond(&admin, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One admin response; plain function so tests need no socket.
pub fn respond(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    route(admin, req.method() == hyper::Method::GET, req.uri().path())
}

fn route(admin: &Admin, get: bool, path: &str) -> Response<Full<Bytes>> {
    if get && path == PROXIES_PATH {
        let body = serde_json::to_vec(&admin.proxies.list()).unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        return resp;
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
    resp
}
