//! The admin server (DESIGN §3, port 15000): `/live`, `/ready`, `/config_dump`, `/metrics`,
//! `/certs`, and `POST /healthcheck/fail` / `POST /healthcheck/ok` to drain and undrain; and
//! the health port (15020), which serves `GET /ready`, `/live` and `/metrics` and nothing else.
//!
//! In a Pod the admin server listens on 127.0.0.1, so only the Pod's own processes can drain the
//! proxy; the kubelet's probes and a metrics scraper use the health port on the Pod's IP.

#[cfg(test)]
mod tests;

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::{
    bootstrap::HealthForward,
    config::{
        AppProtocol, ChainMatch, ForwardClientCert, HeaderMatch, LogFilter, NetworkFilter,
        PathMatch, Permission, Principal, Rbac, RouteSource, Runtime, SecretMaterial, StringMatch,
    },
    metrics::{Registry, XdsSnapshot},
    state::{State, XdsStatus},
};

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    /// All of them, those that change state included.
    Admin,
    /// `GET /ready`, `/live` and `/metrics` only.
    Health,
}

/// Serves the admin endpoints until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<State>, metrics: Arc<Registry>) {
    serve_endpoints(listener, state, metrics, Endpoints::Admin, Arc::default()).await;
}

/// Serves the health port's endpoints until the process ends; `forwards` are the
/// application's probes, answered by the application.
pub async fn serve_health(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    metrics: Arc<Registry>,
    forwards: Vec<HealthForward>,
) {
    serve_endpoints(
        listener,
        state,
        metrics,
        Endpoints::Health,
        Arc::new(forwards),
    )
    .await;
}

async fn serve_endpoints(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    metrics: Arc<Registry>,
    endpoints: Endpoints,
    forwards: Arc<Vec<HealthForward>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let metrics = metrics.clone();
        let forwards = forwards.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (method, path) = (request.method(), request.uri().path());
                let read = method == Method::GET || method == Method::HEAD;
                let forward = forwards
                    .iter()
                    .find(|f| endpoints == Endpoints::Health && read && f.path == path)
                    .cloned();
                let response = match (&forward, endpoints) {
                    (Some(_), _) => None,
                    (None, Endpoints::Admin) => Some(answer(&state, &metrics, method, path)),
                    (None, Endpoints::Health) => {
                        Some(answer_health(&state, &metrics, method, path))
                    }
                };
                let headers = request.headers().clone();
                async move {
                    let response = match (response, forward) {
                        (Some(r), _) => r,
                        (None, Some(f)) => forward_probe(&f, &headers).await,
                        (None, None) => text(StatusCode::NOT_FOUND, String::new()),
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// How long an application probe may take, connect to answer; the kubelet's own timeout
/// (1 s by default) is usually shorter.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// What of a probe's answer is passed back to the kubelet (which reads at most 10 KiB).
const PROBE_BODY_LIMIT: usize = 10 * 1024;

/// Answers a rewritten application probe with the application's own answer: `GET target` on a
/// fresh connection to the application's port on the Pod's IP, from the route's source address
/// (127.0.0.6, which interception lets through to the app), the kubelet's headers passed on. A failure to reach the application is a 503.
async fn forward_probe(
    forward: &HealthForward,
    headers: &http::HeaderMap,
) -> Response<Full<Bytes>> {
    let call = async {
        let socket = if forward.upstream.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(source) = forward.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let tcp = socket.connect(forward.upstream).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        let mut request = Request::get(forward.target.as_str())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(std::io::Error::other)?;
        for (name, value) in headers {
            if name != header::HOST && name != header::CONNECTION {
                request.headers_mut().append(name.clone(), value.clone());
            }
        }
        let host = header::HeaderValue::from_str(&forward.upstream.to_string())
            .map_err(std::io::Error::other)?;
        request.headers_mut().insert(header::HOST, host);
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            response.into_body(),
            PROBE_BODY_LIMIT,
        ))
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, call).await {
        Ok(Ok((status, body))) => {
            let mut r = Response::new(Full::new(body));
            *r.status_mut() = status;
            r
        }
        Ok(Err(e)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("probe of {}{}: {e}\n", forward.upstream, forward.target),
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "probe of {}{}: timed out\n",
                forward.upstream, forward.target
            ),
        ),
    }
}

/// Binds the admin address.
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}

/// The health port: the probes and metrics, read-only; everything else is a 404.
pub(crate) fn answer_health(
    state: &State,
    metrics: &Registry,
    method: &Method,
    path: &str,
) -> Response<Full<Bytes>> {
    let read = method == Method::GET || method == Method::HEAD;
    match path {
        "/ready" | "/live" | "/metrics" if read => answer(state, metrics, method, path),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; this port serves GET /ready, /live and /metrics only\n".to_owned(),
        ),
    }
}

pub(crate) fn answer(
    state: &State,
    metrics: &Registry,
    method: &Method,
    path: &str,
) -> Response<Full<Bytes>> {
    if method == Method::POST {
        return match path {
            "/healthcheck/fail" => {
                state.set_draining(true);
                text(StatusCode::OK, "OK\n".to_owned())
            }
            "/healthcheck/ok" => {
                state.set_draining(false);
                text(StatusCode::OK, "OK\n".to_owned())
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "POST /healthcheck/fail or /healthcheck/ok\n".to_owned(),
            ),
        };
    }
    if method != Method::GET && method != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET or POST only\n".to_owned(),
        );
    }
    match path {
        "/ready" if state.draining() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: the health check was failed by POST /healthcheck/fail\n".to_owned(),
        ),
        "/certs" => json_response(&certs(&state.runtime())),
        "/live" => text(StatusCode::OK, "live\n".to_owned()),
        "/ready" => ready(&state.xds),
        "/config_dump" => json_response(&config_dump(&state.runtime(), &state.xds)),
        "/metrics" => {
            let extra = xds_metrics(&state.xds, metrics);
            let mut body = metrics.render();
            body.push_str(&extra);
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /live, /ready, /config_dump or /metrics\n".to_owned(),
        ),
    }
}

fn json_response(value: &Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_string_pretty(value).unwrap_or_default();
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The certificates the proxy holds, in the shape of Envoy's `/certs`: per certificate
/// secret its chain, per trust bundle its CAs, each with serial number, URI SANs and
/// validity.
pub(crate) fn certs(runtime: &Runtime) -> Value {
    let describe = |pem: &str| -> Vec<Value> {
        rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .filter_map(Result::ok)
            .filter_map(|der| {
                let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
                let uris: Vec<Value> = cert
                    .subject_alternative_name()
                    .ok()
                    .flatten()
                    .map(|san| {
                        san.value
                            .general_names
                            .iter()
                            .filter_map(|n| match n {
                                x509_parser::extensions::GeneralName::URI(u) => {
                                    Some(json!({ "uri": u }))
                                }
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let validity = cert.validity();
                Some(json!({
                    "serial_number": cert.raw_serial_as_string().replace(':', ""),
                    "subject_alt_names": uris,
                    "valid_from": validity.not_before.to_rfc2822().ok(),
                    "expiration_time": validity.not_after.to_rfc2822().ok(),
                    "seconds_until_expiration": validity.time_to_expiration().map(|d| d.whole_seconds()),
                }))
            })
            .collect()
    };
    let certificates: Vec<Value> = runtime
        .secrets
        .iter()
        .map(|(name, secret)| match &**secret {
            SecretMaterial::Certificate { chain_pem, .. } => {
                json!({ "name": name, "cert_chain": describe(chain_pem), "ca_cert": [] })
            }
            SecretMaterial::TrustBundle { ca_pem } => {
                json!({ "name": name, "cert_chain": [], "ca_cert": describe(ca_pem) })
            }
        })
        .collect();
    json!({ "certificates": certificates })
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Ready once a whole configuration arrived; it stays ready while the control plane is away
/// (the last configuration keeps serving), and says so.
fn ready(xds: &XdsStatus) -> Response<Full<Bytes>> {
    if !xds.synced() {
        let mut body =
            "not ready: waiting for the first configuration from the control plane\n".to_owned();
        if let Some(e) = xds.last_error() {
            body.push_str(&format!("last error: {e}\n"));
        }
        return text(StatusCode::SERVICE_UNAVAILABLE, body);
    }
    let mut body = "ready\n".to_owned();
    if !xds.connected() {
        let since = xds
            .disconnected_since()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map_or_else(String::new, |d| format!(" for {:.1}s", d.as_secs_f64()));
        body.push_str(&format!(
            "control plane unreachable{since}; serving the last accepted configuration\n"
        ));
    }
    text(StatusCode::OK, body)
}

fn unix_seconds(t: Option<SystemTime>) -> f64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Copies the xDS state into the registry's xDS metrics, and adds the one gauge the
/// registry does not keep: since when the control plane is unreachable.
fn xds_metrics(xds: &XdsStatus, metrics: &Registry) -> String {
    metrics.xds().set(&XdsSnapshot {
        connected: xds.connected(),
        synced: xds.synced(),
        streams: xds.streams(),
        accepted: xds.accepted(),
        rejected: xds.rejected(),
        last_accepted: xds.last_change(),
    });
    let name = "switchyard_proxy_xds_disconnected_since_timestamp_seconds";
    format!(
        "# HELP {name} Since when the control plane is unreachable, in seconds since the Unix epoch; 0 while connected.\n# TYPE {name} gauge\n{name} {}\n",
        unix_seconds(xds.disconnected_since())
    )
}

/// What the proxy runs now, as JSON. Private keys never appear.
pub(crate) fn config_dump(runtime: &Runtime, xds: &XdsStatus) -> Value {
    let listeners: Vec<Value> = runtime
        .listeners
        .values()
        .map(|l| {
            json!({
                "name": l.name,
                "address": l.address.to_string(),
                "direction": format!("{:?}", l.direction).to_lowercase(),
                "listener_filters": {
                    "original_dst": l.filters.original_dst,
                    "tls_inspector": l.filters.tls_inspector,
                    "http_inspector": l.filters.http_inspector.as_ref().map(|ports| json!({
                        "ports": ports.to_string(),
                    })),
                    "timeout_ms": l.filters.timeout.map(|t| t.as_millis() as u64),
                    "continue_on_timeout": l.filters.continue_on_timeout,
                },
                "filter_chains": l.chains.iter().enumerate().map(|(i, c)| json!({
                    "name": c.name,
                    "default": l.selector.default_chain() == Some(i),
                    "match": chain_match(&c.matches),
                    "tls": c.tls.as_ref().map(|t| json!({
                        "certificate": t.certificate,
                        "trust_bundle": t.trust_bundle,
                        "require_client_certificate": t.require_client_certificate,
                        "alpn": t.alpn,
                    })),
                    "connection_limit": c.connection_limit.as_ref().map(|l| json!({
                        "stat_prefix": l.stat_prefix,
                        "max_connections": l.max_connections,
                    })),
                    "filter": match &c.filter {
                        NetworkFilter::Close => json!({ "close": {} }),
                        NetworkFilter::Tcp(t) => json!({ "tcp_proxy": {
                            "clusters": weights(&t.clusters),
                            "rbac": t.rbac.as_deref().map(rbac),
                            "idle_timeout_ms": millis(t.idle_timeout),
                        }}),
                        NetworkFilter::Http(h) => json!({ "http": {
                            "routes": match &h.routes {
                                RouteSource::Rds(name) => json!({ "rds": name }),
                                RouteSource::Inline(t) => json!({ "inline": t.name }),
                            },
                            "rbac": h.rbac.as_deref().map(rbac),
                            "denied": { "status": h.denied.status, "body": h.denied.body },
                            "forward_client_cert_details": match h.forward_client_cert {
                                ForwardClientCert::Sanitize => json!("SANITIZE"),
                                ForwardClientCert::SanitizeSet { uri } => json!({
                                    "SANITIZE_SET": { "uri": uri },
                                }),
                            },
                            "timeouts_ms": {
                                "request_headers": millis(h.timeouts.request_headers),
                                "idle": millis(h.timeouts.idle),
                                "stream_idle": millis(h.timeouts.stream_idle),
                            },
                            "access_logs": h.access_logs.iter().map(|l| json!({
                                "log_name": l.log_name,
                                "flush_interval_ms": millis(Some(l.flush_interval)),
                                "buffer_size_bytes": l.buffer_bytes,
                                "request_headers": l.request_headers,
                                "response_headers": l.response_headers,
                                "response_trailers": l.response_trailers,
                                "filter": l.filter.as_ref().map(log_filter),
                            })).collect::<Vec<_>>(),
                        }}),
                    },
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let routes: Vec<Value> = runtime
        .routes
        .values()
        .map(|t| {
            json!({
                "name": t.name,
                "virtual_hosts": t.virtual_hosts.iter().map(|vh| json!({
                    "name": vh.name,
                    "domains": vh.domains,
                    "rbac": override_json(&vh.rbac),
                    "routes": vh.routes.iter().map(|r| json!({
                        "name": r.name,
                        "path": match &r.matcher.path {
                            PathMatch::Prefix(p) => json!({ "prefix": p }),
                            PathMatch::Exact(p) => json!({ "exact": p }),
                            PathMatch::Regex(re) => json!({ "regex": re.as_str() }),
                        },
                        "headers": r.matcher.headers.iter().map(|h| json!({
                            "name": h.name, "match": string_match(&h.matcher), "invert": h.invert,
                        })).collect::<Vec<_>>(),
                        "clusters": weights(&r.action.clusters),
                        "timeout_ms": r.action.timeout.map(|t| t.as_millis() as u64),
                        "retry": r.action.retry.as_ref().map(|p| json!({
                            "num_retries": p.num_retries,
                            "retry_on": format!("{:?}", p.retry_on),
                            "other_hosts": p.other_hosts,
                        })),
                        "rbac": override_json(&r.rbac),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let clusters: Vec<Value> = runtime
        .clusters
        .values()
        .map(|c| {
            json!({
                "name": c.name,
                "http2": c.http2,
                "original_dst": c.original_dst,
                "connect_timeout_ms": c.connect_timeout.as_millis() as u64,
                "endpoints": c.endpoints.iter().map(|e| json!({
                    "address": e.address.to_string(),
                    "weight": e.weight,
                    "labels": e.socket_labels,
                })).collect::<Vec<_>>(),
                "tls_matches": c.tls_matches.iter().map(|m| json!({
                    "name": m.name,
                    "labels": m.labels,
                    "tls": m.tls.as_ref().map(|t| json!({
                        "certificate": t.certificate,
                        "trust_bundle": t.trust_bundle,
                        "peer_sans": t.peer_sans,
                        "alpn": t.alpn,
                    })),
                })).collect::<Vec<_>>(),
                "outlier_detection": c.outlier.map(|o| json!({
                    "consecutive_5xx": o.consecutive_5xx,
                    "consecutive_gateway_failure": o.consecutive_gateway_failure,
                    "base_ejection_time_ms": o.base_ejection_time.as_millis() as u64,
                    "max_ejection_percent": o.max_ejection_percent,
                })),
            })
        })
        .collect();
    let secrets: Vec<Value> = runtime
        .secrets
        .iter()
        .map(|(name, s)| match &**s {
            SecretMaterial::Certificate { chain_pem, .. } => json!({
                "name": name, "type": "certificate", "chain_pem": chain_pem,
            }),
            SecretMaterial::TrustBundle { ca_pem } => json!({
                "name": name, "type": "trust_bundle", "ca_pem": ca_pem,
            }),
        })
        .collect();
    json!({
        "xds": {
            "connected": xds.connected(),
            "synced": xds.synced(),
            "accepted": xds.accepted(),
            "rejected": xds.rejected(),
            "last_error": xds.last_error(),
        },
        "listeners": listeners,
        "routes": routes,
        "clusters": clusters,
        "secrets": secrets,
        "warnings": runtime.warnings,
    })
}

/// A chain's match, with the fields it sets.
/// A timeout in milliseconds; `null` for none.
fn millis(timeout: Option<std::time::Duration>) -> Option<u64> {
    timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

fn chain_match(m: &ChainMatch) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(port) = m.destination_port {
        out.insert("destination_port".into(), json!(port));
    }
    if !m.prefix_ranges.is_empty() {
        let ranges: Vec<String> = m.prefix_ranges.iter().map(ToString::to_string).collect();
        out.insert("prefix_ranges".into(), json!(ranges));
    }
    if let Some(t) = m.transport_protocol {
        out.insert("transport_protocol".into(), json!(t.as_str()));
    }
    if !m.application_protocols.is_empty() {
        let names: Vec<&str> = m
            .application_protocols
            .iter()
            .map(|p| AppProtocol::as_str(*p))
            .collect();
        out.insert("application_protocols".into(), json!(names));
    }
    Value::Object(out)
}

fn weights(clusters: &[(String, u32)]) -> Value {
    clusters
        .iter()
        .map(|(name, weight)| json!({ "name": name, "weight": weight }))
        .collect()
}

fn override_json(o: &Option<Option<Arc<Rbac>>>) -> Value {
    match o {
        None => Value::Null,
        Some(None) => json!("disabled"),
        Some(Some(r)) => rbac(r),
    }
}

fn rbac(r: &Rbac) -> Value {
    json!({
        "policies": r.policies.iter().map(|(name, p)| json!({
            "name": name,
            "permissions": p.permissions.iter().map(permission).collect::<Vec<_>>(),
            "principals": p.principals.iter().map(principal).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn permission(p: &Permission) -> Value {
    match p {
        Permission::Any => json!("any"),
        Permission::And(all) => json!({ "and": all.iter().map(permission).collect::<Vec<_>>() }),
        Permission::Or(any) => json!({ "or": any.iter().map(permission).collect::<Vec<_>>() }),
        Permission::Not(p) => json!({ "not": permission(p) }),
        Permission::UrlPath(m) => json!({ "url_path": string_match(m) }),
        Permission::Header(h) => json!({ "header": header_match(h) }),
        Permission::DestinationPort(port) => json!({ "destination_port": port }),
    }
}

fn principal(p: &Principal) -> Value {
    match p {
        Principal::Any => json!("any"),
        Principal::And(all) => json!({ "and": all.iter().map(principal).collect::<Vec<_>>() }),
        Principal::Or(any) => json!({ "or": any.iter().map(principal).collect::<Vec<_>>() }),
        Principal::Not(p) => json!({ "not": principal(p) }),
        Principal::Authenticated(m) => json!({ "authenticated": string_match(m) }),
    }
}

fn log_filter(f: &LogFilter) -> Value {
    match f {
        LogFilter::Bucket(name) => json!({ "process_ratelimit": name.as_str() }),
        LogFilter::Header(h) => json!({ "header": header_match(h) }),
        LogFilter::And(all) => json!({ "and": all.iter().map(log_filter).collect::<Vec<_>>() }),
        LogFilter::Or(any) => json!({ "or": any.iter().map(log_filter).collect::<Vec<_>>() }),
    }
}

fn header_match(h: &HeaderMatch) -> Value {
    json!({ "name": h.name, "match": string_match(&h.matcher), "invert": h.invert })
}

fn string_match(m: &StringMatch) -> Value {
    match m {
        StringMatch::Exact(s) => json!({ "exact": s }),
        StringMatch::Prefix(s) => json!({ "prefix": s }),
        StringMatch::Suffix(s) => json!({ "suffix": s }),
        StringMatch::Contains(s) => json!({ "contains": s }),
        StringMatch::Regex(re) => json!({ "regex": re.as_str() }),
        StringMatch::Present => json!("present"),
    }
}
