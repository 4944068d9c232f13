//! The admin server (DESIGN §3, port 15000): `/live`, `/ready`, `/config_dump`, `/metrics`,
//! `/certs`, and `POST /healthcheck/fail` / `POST /healthcheck/ok` to drain and undrain.

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
    config::{
        ChainMatch, NetworkFilter, PathMatch, Permission, Principal, Rbac, RouteSource, Runtime,
        SecretMaterial, StringMatch,
    },
    metrics::{Registry, XdsSnapshot},
    state::{State, XdsStatus},
};

/// Serves the admin endpoints until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<State>, metrics: Arc<Registry>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = answer(&state, &metrics, request.method(), request.uri().path());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds the admin address.
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
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
                "filter_chains": l.chains.iter().map(|c| json!({
                    "name": c.name,
                    "match": match c.matches {
                        ChainMatch::Any => "any",
                        ChainMatch::Tls => "tls",
                        ChainMatch::Plaintext => "plaintext",
                    },
                    "tls": c.tls.as_ref().map(|t| json!({
                        "certificate": t.certificate,
                        "trust_bundle": t.trust_bundle,
                        "require_client_certificate": t.require_client_certificate,
                        "alpn": t.alpn,
                    })),
                    "filter": match &c.filter {
                        NetworkFilter::Close => json!({ "close": {} }),
                        NetworkFilter::Tcp(t) => json!({ "tcp_proxy": {
                            "clusters": weights(&t.clusters),
                            "rbac": t.rbac.as_deref().map(rbac),
                        }}),
                        NetworkFilter::Http(h) => json!({ "http": {
                            "routes": match &h.routes {
                                RouteSource::Rds(name) => json!({ "rds": name }),
                                RouteSource::Inline(t) => json!({ "inline": t.name }),
                            },
                            "rbac": h.rbac.as_deref().map(rbac),
                            "denied": { "status": h.denied.status, "body": h.denied.body },
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
        Permission::Header(h) => {
            json!({ "header": { "name": h.name, "match": string_match(&h.matcher), "invert": h.invert } })
        }
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
