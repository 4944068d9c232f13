//! The HTTP request path: route, authorize, pick a backend and an endpoint, forward with
//! retries and deadlines, and answer locally when the mesh says no.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use super::{
    ConnInfo, Context, headers,
    pool::{SendError, Transport, UpstreamBody},
    routing::{self, Peer, RequestView},
    target,
};
use crate::{
    access_log::{Flag, Routed},
    balance::{self, Outcome},
    config::{ClusterConfig, HttpManager, RetryPolicy, RouteAction, RouteSource, Runtime},
    metrics::{Answered, HttpLabels, UpstreamStats},
};

/// What the proxy answers the client with.
pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Bodies up to this size are kept so a failed attempt can be retried; larger or streaming
/// bodies are sent as they come, and not retried.
const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// A request body the proxy forwards: hyper's, or the same counted for an access log.
pub(crate) trait RequestBody:
    Body<Data = Bytes, Error = hyper::Error> + Send + Sync + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: Body<Data = Bytes, Error = hyper::Error> + Send + Sync + Unpin + 'static
{
}

/// Notes why the proxy answered itself, for the access log.
fn note(log: &mut Option<&mut Routed>, flag: Option<Flag>, details: &'static str) {
    if let Some(log) = log.as_deref_mut() {
        log.flag = flag;
        log.details = details;
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), not forwarded (but `te: trailers`).
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Who answered a forwarded request, which decides what the cluster's golden stats count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnsweredBy {
    /// The cluster: its status, and the time.
    Upstream,
    /// The proxy, for the cluster (no endpoint, a connection failed or reset, a timeout): the
    /// status only, as Envoy's router charges the cluster for its own 503 and 504.
    Proxy,
    /// The proxy, for the client (a request body it could not read): not the cluster's.
    Client,
}

/// Handles one request of a connection whose chain ends in `manager`; `started` is when its
/// head was complete. When a cluster answers, `answered` gets its golden stats, which time the
/// response to its end.
///
/// `log`, when the connection manager has an access log, gets what routing and forwarding
/// learn.
pub(crate) async fn handle<B: RequestBody>(
    ctx: Arc<Context>,
    conn: Arc<ConnInfo>,
    manager: Arc<HttpManager>,
    mut request: Request<B>,
    started: Instant,
    answered: &mut Option<Answered>,
    mut log: Option<&mut Routed>,
) -> Result<Response<ProxyBody>, hyper::Error> {
    if target::head_size(&request) > target::MAX_REQUEST_HEADERS {
        return Ok(local(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large\n",
        ));
    }
    // What the application may trust of the request head, settled before anything reads it:
    // the names `Connection` lists go first, so a `Host` it names is gone before the authority
    // is decided.
    if let Err(r) = headers::sanitize_connection(request.headers_mut()) {
        return Ok(rejected(r));
    }
    // Routing, RBAC and the application all see the normalized target, or nobody sees it.
    let authority = match target::request_target(
        request.uri(),
        request.headers(),
        request.version(),
    ) {
        Ok(target) => {
            if let Some(uri) = target.uri {
                *request.uri_mut() = uri;
            }
            target.authority
        }
        Err(bad) => {
            tracing::debug!(listener = %conn.listener, error = %bad, "refused a request target");
            return Ok(local_owned(StatusCode::BAD_REQUEST, format!("{bad}\n")));
        }
    };
    headers::sanitize_mesh_headers(request.headers_mut(), conn.client_cert_details.as_ref());
    // One configuration for the whole request, whatever arrives meanwhile.
    let runtime = ctx.state.runtime();
    let path = request.uri().path().to_owned();
    let view = RequestView {
        method: request.method(),
        path: &path,
        authority: &authority,
        scheme: if conn.tls { "https" } else { "http" },
        headers: request.headers(),
    };

    let table = match &manager.routes {
        RouteSource::Rds(name) => runtime.routes.get(name).cloned(),
        RouteSource::Inline(table) => Some(table.clone()),
    };
    let Some(table) = table else {
        note(&mut log, Some(Flag::NoRoute), "route_not_found");
        return Ok(local(StatusCode::NOT_FOUND, "no route configuration\n"));
    };
    let Some(vh) = routing::virtual_host(&table, &authority) else {
        note(&mut log, Some(Flag::NoRoute), "route_not_found");
        return Ok(local(StatusCode::NOT_FOUND, ""));
    };
    let route = routing::route(vh, &view);

    let peer = Peer {
        identity: conn.peer_identity.as_deref(),
        local: conn.destination,
    };
    if let Some(rbac) = routing::effective_rbac(&manager, vh, route)
        && !routing::allows(rbac, &peer, Some(&view))
    {
        ctx.metrics.denied(&conn.listener);
        note(&mut log, None, "rbac_access_denied_matched_policy[none]");
        let status = StatusCode::from_u16(manager.denied.status).unwrap_or(StatusCode::FORBIDDEN);
        return Ok(local_owned(status, manager.denied.body.clone()));
    }
    let Some(route) = route else {
        note(&mut log, Some(Flag::NoRoute), "route_not_found");
        return Ok(local(StatusCode::NOT_FOUND, ""));
    };
    if let Some(log) = log.as_deref_mut() {
        log.route_name.clone_from(&route.name);
    }

    let action = &route.action;
    let mut rng = fastrand::Rng::new();
    let Some(cluster_name) = balance::pick_weighted(&action.clusters, &mut rng) else {
        note(
            &mut log,
            Some(Flag::NoHealthyUpstream),
            "no_healthy_upstream",
        );
        return Ok(local(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream",
        ));
    };
    let labels = HttpLabels {
        direction: conn.direction,
        listener: conn.listener.clone(),
        route: format!("{}/{}", vh.name, route.name),
        destination: vh.name.clone(),
        backend: cluster_name.clone(),
        peer: conn.peer_identity.clone().unwrap_or_default(),
    };
    if let Some(log) = log.as_deref_mut() {
        log.cluster.clone_from(cluster_name);
    }
    let Some(cluster) = runtime.clusters.get(cluster_name).cloned() else {
        ctx.metrics.http(&labels).record(503, started.elapsed());
        note(&mut log, Some(Flag::NoCluster), "cluster_not_found");
        return Ok(local(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream",
        ));
    };

    let upstream = ctx.metrics.upstream(&cluster.name);
    let route_stats = route
        .stat_prefix
        .as_deref()
        .map(|prefix| ctx.metrics.route(&vh.name, prefix));
    let (mut response, answered_by) = forward(
        &ctx, &runtime, &cluster, &upstream, action, request, started, log,
    )
    .await;
    if ctx.state.draining() {
        // HTTP/1.1: close after this response; HTTP/2 ignores the header.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    ctx.metrics.http(&labels).record(status, elapsed);
    // A route with a `stat_prefix` counts what its cluster counts, as Envoy's router charges
    // both at once.
    match answered_by {
        AnsweredBy::Upstream | AnsweredBy::Proxy => {
            upstream.count(status);
            if let Some(route) = &route_stats {
                route.count(status);
            }
        }
        AnsweredBy::Client => {}
    }
    if answered_by == AnsweredBy::Upstream {
        *answered = Some(Answered {
            upstream,
            route: route_stats,
        });
    }
    Ok(response)
}

/// Sends the request to the cluster: picks endpoints, retries what the policy allows within
/// the route's deadline, and turns failures into the answers Envoy gives.
#[allow(clippy::too_many_arguments)]
async fn forward<B: RequestBody>(
    ctx: &Context,
    runtime: &Runtime,
    cluster: &Arc<ClusterConfig>,
    stats: &Arc<UpstreamStats>,
    action: &RouteAction,
    request: Request<B>,
    started: Instant,
    mut log: Option<&mut Routed>,
) -> (Response<ProxyBody>, AnsweredBy) {
    let deadline = action.timeout.map(|t| started + t);
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // `Host` for HTTP/1.1 upstreams: the target's authority when it has one (HTTP/2
    // `:authority`, an absolute-form target), which routing and RBAC read, whatever `Host`
    // the client sent beside it (Envoy does the same).
    if let Some(authority) = parts.uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, value);
    }

    let method = parts.method.clone();
    let retry = action.retry.as_ref();
    let (mut body, replayable) = match buffer(body, retry.is_some()).await {
        Ok(b) => b,
        Err(_) => {
            return (
                local(StatusCode::BAD_REQUEST, "could not read the request body\n"),
                AnsweredBy::Client,
            );
        }
    };
    // A body of unknown length (chunked, or HTTP/2 DATA without `content-length`) goes on
    // chunked to an HTTP/1.1 upstream, as Envoy sends it: without the header, hyper sends a
    // GET's, HEAD's or CONNECT's as empty, dropping what the client sent.
    let chunked = body
        .as_ref()
        .is_some_and(|b| b.size_hint().exact().is_none());
    let attempts = 1 + retry
        .filter(|_| replayable.is_some())
        .map_or(0, |r| r.num_retries);
    let balancer = ctx.balancers.get(cluster);
    ctx.budget.deposit(&cluster.name);
    let mut tried: Vec<usize> = Vec::new();
    let mut last_failure = (
        local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
        AnsweredBy::Proxy,
    );

    for attempt in 0..attempts {
        if attempt > 0 && !ctx.budget.withdraw(&cluster.name) {
            ctx.metrics.retry_budget_exhausted(&cluster.name);
            break;
        }
        let now = std::time::Instant::now();
        let exclude: &[usize] = if retry.is_some_and(|r| r.other_hosts) {
            &tried
        } else {
            &[]
        };
        let Some(pick) = balancer.pick(now, exclude) else {
            note(
                &mut log,
                Some(Flag::NoHealthyUpstream),
                "no_healthy_upstream",
            );
            return (
                local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
                AnsweredBy::Proxy,
            );
        };
        tried.push(pick.index());
        let endpoint = pick.endpoint().clone();
        if let Some(log) = log.as_deref_mut() {
            log.upstream = Some(endpoint.address);
            log.attempts += 1;
        }
        let mut transport = match ctx.upstream_transport(runtime, cluster, &endpoint) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(cluster = %cluster.name, error = %e, "no TLS configuration for upstream");
                note(
                    &mut log,
                    Some(Flag::UpstreamConnectionFailure),
                    "upstream_reset_before_response_started{connection_failure}",
                );
                pick.complete(now, Outcome::GatewayFailure);
                last_failure = (
                    local_owned(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "upstream connect error or disconnect/reset before headers. reset reason: TLS error: {e}"
                        ),
                    ),
                    AnsweredBy::Proxy,
                );
                continue;
            }
        };
        if cluster.http_follows_downstream {
            transport.http2 = parts.version == http::Version::HTTP_2;
        }
        // The last attempt takes the request head; earlier ones copy it.
        let head = if attempt + 1 == attempts {
            std::mem::replace(&mut parts, Request::new(()).into_parts().0)
        } else {
            parts.clone()
        };
        let mut req = Request::from_parts(head, ());
        if !transport.http2 {
            // An HTTP/1.1 upstream is spoken to in HTTP/1.1 whatever the client spoke: hyper
            // frames a body by the request's version, and an HTTP/2 one of unknown length it
            // would send as none at all.
            if req.version() == http::Version::HTTP_2 {
                *req.version_mut() = http::Version::HTTP_11;
            }
            if chunked {
                req.headers_mut().insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
            }
        }
        let body_now = match (&replayable, body.take()) {
            (Some(bytes), _) => full_request(bytes.clone()),
            (None, Some(streamed)) => streamed,
            (None, None) => break,
        };
        let req = req.map(|()| body_now);

        let per_try = retry.and_then(|r| r.per_try_timeout);
        let limit = match (deadline, per_try) {
            (Some(d), Some(p)) => Some(d.min(Instant::now() + p)),
            (Some(d), None) => Some(d),
            (None, Some(p)) => Some(Instant::now() + p),
            (None, None) => None,
        };
        let send = ctx.pool.send(endpoint.address, &transport, stats, req, || {
            ctx.metrics.upstream_tls_handshake(&cluster.name);
        });
        let result = match limit {
            Some(limit) => match tokio::time::timeout_at(limit, send).await {
                Ok(r) => r,
                Err(_) => {
                    pick.complete(std::time::Instant::now(), Outcome::GatewayFailure);
                    note(
                        &mut log,
                        Some(Flag::UpstreamRequestTimeout),
                        "response_timeout",
                    );
                    let timeout = (
                        local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
                        AnsweredBy::Proxy,
                    );
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return timeout;
                    }
                    last_failure = timeout;
                    continue;
                }
            },
            None => send.await,
        };
        let elapsed = now.elapsed();
        match result {
            Ok(response) => {
                if let Some(log) = log.as_deref_mut() {
                    log.first_upstream_rx = Some(std::time::Instant::now());
                    log.flag = None;
                    log.details = "via_upstream";
                }
                let status = response.status();
                let outcome = match status.as_u16() {
                    502..=504 => Outcome::GatewayFailure,
                    500..=599 => Outcome::Failure5xx(elapsed),
                    _ => Outcome::Success(elapsed),
                };
                if let Some(ejection) = pick.complete(std::time::Instant::now(), outcome) {
                    ctx.metrics.ejected(&cluster.name);
                    tracing::info!(cluster = %cluster.name, endpoint = %ejection.address, times = ejection.times, "ejected an endpoint");
                }
                if status.is_server_error()
                    && attempt + 1 < attempts
                    && retry.is_some_and(|r| retries_status(r, status, &method))
                {
                    ctx.metrics.retry(&cluster.name);
                    last_failure = (upstream_response(response), AnsweredBy::Upstream);
                    continue;
                }
                return (upstream_response(response), AnsweredBy::Upstream);
            }
            Err(error) => {
                if let Some(ejection) =
                    pick.complete(std::time::Instant::now(), Outcome::GatewayFailure)
                {
                    ctx.metrics.ejected(&cluster.name);
                    tracing::info!(cluster = %cluster.name, endpoint = %ejection.address, times = ejection.times, "ejected an endpoint");
                }
                tracing::debug!(cluster = %cluster.name, endpoint = %endpoint.address, %error, "upstream request failed");
                let retryable = retry.is_some_and(|r| retries_error(r, &error, &method));
                match error {
                    SendError::Connect(_) => note(
                        &mut log,
                        Some(Flag::UpstreamConnectionFailure),
                        "upstream_reset_before_response_started{connection_failure}",
                    ),
                    _ => note(
                        &mut log,
                        Some(Flag::UpstreamRemoteReset),
                        "upstream_reset_before_response_started{remote_reset}",
                    ),
                }
                last_failure = (
                    local_owned(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "upstream connect error or disconnect/reset before headers. reset reason: {error}"
                        ),
                    ),
                    AnsweredBy::Proxy,
                );
                if !retryable {
                    break;
                }
                ctx.metrics.retry(&cluster.name);
            }
        }
    }
    last_failure
}

/// Whether a failed attempt may be retried under the policy.
fn retries_error(policy: &RetryPolicy, error: &SendError, method: &Method) -> bool {
    let on = policy.retry_on;
    match error {
        SendError::Connect(_) => on.connect_failure || on.server_error || on.gateway_error,
        SendError::RefusedStream => on.refused_stream || on.server_error,
        SendError::ResetBeforeRequest(_) => on.reset_before_request || on.server_error,
        // Whichever conditions the policy names: the race with a closing idle connection is
        // the transport's, not the application's (Envoy notices such a close sooner, in its
        // event loop, and so rarely loses the race at all).
        SendError::ClosedWhileIdle(_) => is_idempotent(method),
        // The request may have been processed: only idempotent ones are sent again.
        SendError::Other(_) => (on.server_error || on.gateway_error) && is_idempotent(method),
    }
}

fn retries_status(policy: &RetryPolicy, status: StatusCode, method: &Method) -> bool {
    let on = policy.retry_on;
    let gateway = matches!(status.as_u16(), 502..=504);
    ((on.server_error) || (on.gateway_error && gateway)) && is_idempotent(method)
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Reads a small body into memory when retries may need it again. Returns the body to stream
/// (when it was not buffered) and the buffered bytes (when it was).
async fn buffer<B: RequestBody>(
    body: B,
    want: bool,
) -> Result<(Option<UpstreamBody>, Option<Bytes>), hyper::Error> {
    if body.is_end_stream() {
        return Ok((None, Some(Bytes::new())));
    }
    let small = body
        .size_hint()
        .upper()
        .is_some_and(|n| n <= MAX_BUFFERED_BODY);
    if want && small {
        let bytes = body.collect().await?.to_bytes();
        return Ok((None, Some(bytes)));
    }
    Ok((Some(body.boxed()), None))
}

fn full_request(bytes: Bytes) -> UpstreamBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn upstream_response(response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // `te: trailers` is the one hop-by-hop value that must go on: gRPC servers require it.
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    // Headers named by `Connection` are hop-by-hop too.
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    headers.remove(header::TRANSFER_ENCODING);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The 400 for a request head the proxy does not forward (Envoy's answer to each).
fn rejected(why: headers::Rejected) -> Response<ProxyBody> {
    local_owned(StatusCode::BAD_REQUEST, format!("{why}\n"))
}

/// A reply the proxy makes itself.
pub(crate) fn local(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    local_owned(status, body.to_owned())
}

pub(crate) fn local_owned(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The upstream transport of an endpoint: its transport socket match, else the cluster's
/// default socket.
pub(crate) fn upstream_tls<'c>(
    cluster: &'c ClusterConfig,
    endpoint: &crate::config::Endpoint,
) -> Option<&'c crate::config::UpstreamTls> {
    for m in &cluster.tls_matches {
        if m.labels
            .iter()
            .all(|(k, v)| endpoint.socket_labels.get(k) == Some(v))
        {
            return m.tls.as_ref();
        }
    }
    cluster.tls_default.as_ref()
}

/// A transport description ready for the pool.
pub(crate) fn transport(
    cluster: &ClusterConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Transport {
    Transport {
        tls,
        http2: cluster.http2,
        source: cluster.source_address,
        connect_timeout: if cluster.connect_timeout.is_zero() {
            Duration::from_secs(5)
        } else {
            cluster.connect_timeout
        },
    }
}
