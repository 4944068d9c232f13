//! Access logs (`envoy.access_loggers.http_grpc`): every request of an HTTP connection manager
//! with an access log becomes an `HTTPAccessLogEntry`, as Envoy's gRPC access logger fills it,
//! streamed to the control plane ([`sink`]).
//!
//! The request path only gathers what it has at hand into a `Pending` (strings it would
//! otherwise drop, instants, counters). When the response's body is done the `Pending` goes to
//! the access log's own low-priority thread ([`worker`]), which builds the entry, encodes it
//! into the sink's buffer ([`deferred`]) and sends it ([`sink`]); the request thread wakes
//! neither. What every entry of a connection repeats (its addresses, its TLS peer) and the
//! header names to log are made once per connection. A connection manager without an access
//! log (the usual case) costs a request one check of an `Option`.
//!
//! An access log with a filter ([`LogFilter`]) decides as the request starts whether it logs
//! it: header conditions against the request as routing sees it
//! (`proxy::routing::header_matches` over a `RequestView` with the normalized path and the
//! lower-case authority), and `process_ratelimit` leaves, each of which takes a token from its
//! bucket ([`bucket`]) when the request reaches it. `and` and `or` stop at the first filter
//! that settles them, as Envoy's do, so a bucket after a header condition is drawn on by the
//! matching requests only:
//!
//! ```text
//! or ─┬─ and ─┬─ header :path prefix /a    GET /b: fails here, bucket A keeps its tokens
//!     │       └─ bucket A                  GET /a: takes a token from A; logged if it got one
//!     └─ and ─┬─ header :method exact POST GET /b: fails here too: not logged, not counted
//!             └─ bucket B                  not reached when the first term passed
//! ```
//!
//! A request no logger of its connection manager logs costs nothing more (no `Pending`, no
//! strings copied). A request a filter refuses after some bucket it reached had no token is
//! counted in `access_log_entries_rate_limited_total{log_name}`: the tap's rate kept it out. A
//! request that fails header conditions only is not (it was never meant to be logged), nor is
//! one a bucket refused but another term of an `or` let through (it is logged). The filters
//! are resolved once per connection (each bucket to its slot, see `Loggers::limited`); a
//! request evaluates them with no allocation, unless its path is not normal or its authority
//! not lower case, and only a header condition makes it look at the path and authority.
//!
//! # What an entry holds, against Envoy 1.40
//!
//! - `common_properties`: `downstream_remote_address` and `downstream_direct_remote_address`
//!   (the peer), `downstream_local_address` (the original destination on a listener with
//!   `original_dst`, else the socket's), `tls_properties` on TLS connections with the URI SAN
//!   of a verified client certificate in `peer_certificate_properties` (Envoy also fills the
//!   version, cipher, SNI, session and the local certificate), `start_time` (when the proxy
//!   has the request head; Envoy: its first byte), `time_to_last_rx_byte`,
//!   `time_to_first_upstream_rx_byte` (the upstream response head),
//!   `time_to_first_downstream_tx_byte` (the response head handed to the connection),
//!   `time_to_last_downstream_tx_byte` (its last frame), `duration` (the same), `upstream_remote_address` (the
//!   last endpoint tried), `upstream_cluster`, `route_name`, `upstream_request_attempt_count`,
//!   `response_flags` (`NR` no route, `NC` no cluster, `UH` no healthy upstream, `UF` connect
//!   failure, `UR` reset, `UT` upstream timeout, `SI` stream idle timeout),
//!   `access_log_type: DownstreamEnd`. Not filled: upstream send times, upstream local
//!   address, wire byte counts, `stream_id`.
//! - `protocol_version`: HTTP/1.0, HTTP/1.1 or HTTP/2.
//! - `request`: `request_method`, `scheme`, `authority`, `path` (with the query),
//!   `user_agent`, `referer`, `forwarded_for`, `request_headers_bytes` (names and values of
//!   the headers as received, the pseudo-headers `:method`, `:path`, `:authority` and
//!   `:scheme` included; Envoy counts its map at the end, with the headers it added such as
//!   `x-request-id`, `x-forwarded-proto` and `x-envoy-expected-rq-timeout-ms`),
//!   `request_body_bytes` (read from the client), `request_headers` for the configured names.
//!   Not filled: `request_id` (the proxy generates none; Envoy does).
//! - `response`: `response_code` (none when no response was sent), `response_headers_bytes`
//!   (as for the request, `:status` included, of the response as the proxy sends it; Envoy's
//!   adds `x-envoy-upstream-service-time`, `server` and `date`), `response_body_bytes` (sent to
//!   the client), `response_headers` and `response_trailers` for the configured names,
//!   `response_code_details` (`via_upstream`, `route_not_found`, ...).
//!
//! A header sent several times is logged as its values joined by `,`, as Envoy does.
//!
//! # Where it differs from Envoy
//!
//! - Requests hyper refuses before the proxy sees them (a malformed or oversized head) are
//!   not logged; Envoy logs them.
//! - One stream per `log_name` (Envoy: one per worker thread and configuration).
//! - A filter is evaluated when the request starts; Envoy's, when the request is logged (at
//!   its end). A `process_ratelimit` leaf therefore takes its token at the start: requests in
//!   sequence are logged alike; of concurrent ones, another may be the one that gets the last
//!   token.
//! - A `header_filter` matches the request as routing sees it: `:path` is the normalized path
//!   without the query and `:authority` is in lower case, as for a route's header matcher;
//!   Envoy's matches the `:path` header with its query, and `:authority` as sent. A tap's
//!   conditions (`:method` exact, `:authority` exact in lower case, `:path` prefix) match the
//!   same requests unless a client sends an authority in upper case.
//! - The loggers of a connection are those of the chain it was opened under; when a tap
//!   starts or ends the connection is drained (see `proxy`), as Envoy with
//!   `--drain-strategy immediate`.

pub mod bucket;
pub mod deferred;
pub mod sink;
#[cfg(test)]
mod tests;
pub mod worker;

use std::{
    borrow::Cow,
    cell::OnceCell,
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use envoy_types::pb::{
    envoy::{
        config::core::v3::{Address, RequestMethod, SocketAddress, address, socket_address},
        data::accesslog::v3::{
            AccessLogCommon, AccessLogType, HttpAccessLogEntry, HttpRequestProperties,
            HttpResponseProperties, ResponseFlags, TlsProperties, http_access_log_entry,
            tls_properties::{
                CertificateProperties,
                certificate_properties::{SubjectAltName, subject_alt_name::San},
            },
        },
    },
    google::protobuf::{Duration as PbDuration, Timestamp, UInt32Value},
};
use http::{HeaderMap, HeaderName, Method, Request, Uri, Version, header};
use hyper::body::{Body, Frame, SizeHint};

pub use self::{bucket::Buckets, sink::Sinks};
use self::{bucket::Slot, deferred::Deferred};
use crate::{
    config::{AccessLog, HeaderMatch, LogFilter},
    proxy::{
        routing::{self, RequestView},
        target,
    },
};

/// The loggers of one connection manager, resolved once per connection: each configuration
/// with the sink of its `log_name`.
#[derive(Debug)]
pub struct Loggers {
    logs: Vec<(AccessLog, Arc<sink::Sink>)>,
    /// Per logger (as `logs`), the header names it logs, parsed.
    names: Vec<Names>,
    /// Per logger (as `logs`), its filter; empty when no logger has one.
    filters: Vec<Option<Filter>>,
    /// Where a finished request waits for its entries to be made.
    deferred: Arc<Deferred>,
}

/// A logger's [`LogFilter`] with each bucket resolved to its slot, once per connection, so
/// that a request only takes tokens.
#[derive(Debug)]
enum Filter {
    Bucket(Arc<Slot>),
    Header(HeaderMatch),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

/// What a filter reads of a request as it starts. The path and authority as routing sees them
/// are worked out the first time a header condition asks, so a filter of buckets only never
/// looks at them.
struct Seen<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    scheme: &'static str,
    /// The normalized path and the lower-case authority ([`target::preview`]).
    target: OnceCell<(Cow<'a, str>, Cow<'a, str>)>,
}

/// The headers one logger logs; a configured name that is no header name never matches.
#[derive(Debug)]
struct Names {
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
    response_trailers: Vec<HeaderName>,
}

/// What the connection tells every entry of its requests, made once per connection.
#[derive(Clone, Debug)]
pub(crate) struct Downstream {
    tls: bool,
    /// `downstream_remote_address` (also the direct one).
    remote: Address,
    /// `downstream_local_address`.
    local: Address,
    tls_properties: Option<TlsProperties>,
}

/// What routing and forwarding learn, written by the request path as it goes.
#[derive(Debug, Default)]
pub(crate) struct Routed {
    pub(crate) route_name: String,
    pub(crate) cluster: String,
    /// The last endpoint tried.
    pub(crate) upstream: Option<SocketAddr>,
    /// When the upstream response's head arrived.
    pub(crate) first_upstream_rx: Option<Instant>,
    pub(crate) attempts: u32,
    pub(crate) flag: Option<Flag>,
    /// `response_code_details`.
    pub(crate) details: &'static str,
}

/// Why the proxy answered itself (Envoy's response flags the proxy produces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flag {
    /// `NR`: no route.
    NoRoute,
    /// `NC`: the route's cluster does not exist.
    NoCluster,
    /// `UH`: no endpoint to pick.
    NoHealthyUpstream,
    /// `UF`: the upstream connection failed.
    UpstreamConnectionFailure,
    /// `UR`: the upstream reset the request.
    UpstreamRemoteReset,
    /// `UT`: the route's timeout expired.
    UpstreamRequestTimeout,
    /// `SI`: the stream idle timeout expired.
    StreamIdleTimeout,
}

/// The request body, counted: bytes and when its end was read.
#[derive(Debug, Default)]
pub(crate) struct Received {
    bytes: AtomicU64,
    /// Nanoseconds from the request's start to its end, plus one; 0 while not read.
    ended: AtomicU64,
}

/// One request's entry in the making, per logger of its connection manager; queued when
/// dropped (the response sent or abandoned).
#[derive(Debug)]
pub(crate) struct Pending {
    loggers: Arc<Loggers>,
    downstream: Arc<Downstream>,
    start: SystemTime,
    started: Instant,
    protocol: Version,
    method: Method,
    scheme: &'static str,
    authority: String,
    path: String,
    user_agent: String,
    referer: String,
    forwarded_for: String,
    request_headers_bytes: u64,
    /// Per logger, its request headers.
    request_headers: Vec<HashMap<String, String>>,
    received: Arc<Received>,
    pub(crate) routed: Routed,
    response: Option<Response>,
    first_tx: Option<Instant>,
    last_tx: Option<Instant>,
    /// Dropped unlogged (counted by its sinks): dropping it makes no entry.
    discarded: bool,
    /// Per logger, whether it skips the request (its bucket had no token); empty when none
    /// does.
    skipped: Vec<bool>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers_bytes: u64,
    body_bytes: u64,
    /// Per logger, its response headers, then its trailers.
    headers: Vec<HashMap<String, String>>,
    trailers: Vec<HashMap<String, String>>,
}

/// A request body that counts into [`Received`].
#[derive(Debug)]
pub(crate) struct Counted<B> {
    body: B,
    received: Arc<Received>,
    started: Instant,
}

// === impl Loggers ===

impl Loggers {
    pub(crate) fn new(logs: Vec<(AccessLog, Arc<sink::Sink>)>, deferred: Arc<Deferred>) -> Self {
        let parsed = |names: &[String]| {
            names
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect()
        };
        let names = logs
            .iter()
            .map(|(log, _)| Names {
                request_headers: parsed(&log.request_headers),
                response_headers: parsed(&log.response_headers),
                response_trailers: parsed(&log.response_trailers),
            })
            .collect();
        Loggers {
            logs,
            names,
            filters: Vec::new(),
            deferred,
        }
    }

    /// The loggers with their filters, every `process_ratelimit` leaf resolved here to its
    /// bucket's slot in `buckets`. Without this, every logger logs every request.
    pub(crate) fn limited(mut self, buckets: &Buckets) -> Self {
        if self.logs.iter().any(|(log, _)| log.filter.is_some()) {
            self.filters = self
                .logs
                .iter()
                .map(|(log, _)| log.filter.as_ref().map(|f| Filter::resolved(f, buckets)))
                .collect();
        }
        self
    }

    /// Which loggers log a request that starts now: each with a filter evaluates it, and one
    /// whose filter refuses the request skips it (and counts it when some bucket it reached
    /// had no token). `None` when none logs it; else per logger whether it skips it, empty
    /// when none does.
    fn admit(&self, request: &Seen<'_>) -> Option<Vec<bool>> {
        let skips = |(filter, (_, sink)): (&Option<Filter>, &(AccessLog, Arc<sink::Sink>))| {
            let Some(filter) = filter else {
                return false;
            };
            let mut limited = false;
            let skip = !filter.passes(request, &mut limited);
            if skip && limited {
                sink.rate_limited();
            }
            skip
        };
        match &self.filters[..] {
            [] => Some(Vec::new()),
            // The usual case, a tap's one logger: no allocation.
            [one] => (!skips((one, &self.logs[0]))).then(Vec::new),
            all => {
                let skipped: Vec<bool> = all.iter().zip(&self.logs).map(skips).collect();
                if skipped.iter().all(|s| *s) {
                    None
                } else if skipped.iter().any(|s| *s) {
                    Some(skipped)
                } else {
                    Some(Vec::new())
                }
            }
        }
    }
}

// === impl Filter ===

impl Filter {
    fn resolved(filter: &LogFilter, buckets: &Buckets) -> Self {
        let all = |filters: &[LogFilter]| -> Vec<Filter> {
            filters.iter().map(|f| Self::resolved(f, buckets)).collect()
        };
        match filter {
            LogFilter::Bucket(name) => Filter::Bucket(buckets.slot(name.as_str())),
            LogFilter::Header(h) => Filter::Header(h.clone()),
            LogFilter::And(filters) => Filter::And(all(filters)),
            LogFilter::Or(filters) => Filter::Or(all(filters)),
        }
    }

    /// Whether `request` passes, evaluated as Envoy evaluates access log filters: in order,
    /// `And` up to the first filter that fails and `Or` up to the first that passes, so that
    /// only the buckets a request reaches lose a token. `limited` is set when a bucket it
    /// reached had none.
    fn passes(&self, request: &Seen<'_>, limited: &mut bool) -> bool {
        match self {
            Filter::Bucket(slot) => {
                let took = slot.take();
                *limited |= !took;
                took
            }
            Filter::Header(h) => routing::header_matches(h, &request.view()),
            Filter::And(all) => all.iter().all(|f| f.passes(request, limited)),
            Filter::Or(any) => any.iter().any(|f| f.passes(request, limited)),
        }
    }
}

// === impl Seen ===

impl<'a> Seen<'a> {
    fn new<B>(request: &'a Request<B>, tls: bool) -> Self {
        Seen {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            scheme: if tls { "https" } else { "http" },
            target: OnceCell::new(),
        }
    }

    fn view(&self) -> RequestView<'_> {
        let (path, authority) = self
            .target
            .get_or_init(|| target::preview(self.uri, self.headers));
        RequestView {
            method: self.method,
            path,
            authority,
            scheme: self.scheme,
            headers: self.headers,
        }
    }
}

// === impl Downstream ===

impl Downstream {
    /// A connection from `remote` to `local` (the original destination on a listener with
    /// `original_dst`); on TLS, `peer_identity` is the URI SAN of the peer's verified client
    /// certificate.
    pub(crate) fn new(
        remote: SocketAddr,
        local: SocketAddr,
        tls: bool,
        peer_identity: Option<&str>,
    ) -> Self {
        let tls_properties = tls.then(|| TlsProperties {
            peer_certificate_properties: peer_identity.map(|uri| CertificateProperties {
                subject_alt_name: vec![SubjectAltName {
                    san: Some(San::Uri(uri.to_owned())),
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
        Downstream {
            tls,
            remote: socket(remote),
            local: socket(local),
            tls_properties,
        }
    }
}

// === impl Pending ===

impl Pending {
    /// Starts the entry of `request` if any logger logs it (see [`Loggers::admit`]): `None`
    /// costs the request nothing more.
    pub(crate) fn admitted<B>(
        loggers: &Arc<Loggers>,
        downstream: &Arc<Downstream>,
        request: &Request<B>,
        started: Instant,
    ) -> Option<Box<Self>> {
        let skipped = loggers.admit(&Seen::new(request, downstream.tls))?;
        let mut pending = Self::start(loggers.clone(), downstream.clone(), request, started);
        pending.skipped = skipped;
        Some(pending)
    }

    /// Starts the entry of `request`, from its head as received, for every logger.
    pub(crate) fn start<B>(
        loggers: Arc<Loggers>,
        downstream: Arc<Downstream>,
        request: &Request<B>,
        started: Instant,
    ) -> Box<Self> {
        let headers = request.headers();
        let text = |name: HeaderName| joined(headers, &name).unwrap_or_default();
        let scheme = if downstream.tls { "https" } else { "http" };
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| joined(headers, &header::HOST))
            .unwrap_or_default();
        let path = request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let method = request.method().clone();
        // The pseudo-headers as Envoy has them, then the rest (Host is `:authority` there).
        let pseudo = [
            (":method", method.as_str().len()),
            (":path", path.len()),
            (":authority", authority.len()),
            (":scheme", scheme.len()),
        ];
        let request_headers_bytes = pseudo.iter().map(|(n, v)| n.len() + v).sum::<usize>()
            + headers
                .iter()
                .filter(|(name, _)| *name != header::HOST)
                .map(|(name, value)| name.as_str().len() + value.len())
                .sum::<usize>();
        let request_headers = loggers
            .names
            .iter()
            .map(|names| pick(headers, &names.request_headers))
            .collect();
        let received = Arc::new(Received::default());
        Box::new(Pending {
            loggers,
            downstream,
            start: SystemTime::now(),
            started,
            protocol: request.version(),
            method,
            scheme,
            user_agent: text(header::USER_AGENT),
            referer: text(header::REFERER),
            forwarded_for: text(X_FORWARDED_FOR),
            authority,
            path,
            request_headers_bytes: request_headers_bytes as u64,
            request_headers,
            received,
            routed: Routed::default(),
            response: None,
            first_tx: None,
            last_tx: None,
            discarded: false,
            skipped: Vec::new(),
        })
    }

    /// `request` with its body counted into this entry.
    pub(crate) fn count<B: Body>(&self, request: Request<B>) -> Request<Counted<B>> {
        let received = self.received.clone();
        let started = self.started;
        if request.body().is_end_stream() {
            received.end(started);
        }
        request.map(|body| Counted {
            body,
            received,
            started,
        })
    }

    /// The response as it starts: its status and head.
    pub(crate) fn respond(&mut self, status: u16, headers: &HeaderMap) {
        let headers_bytes = ":status".len()
            + 3
            + headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len())
                .sum::<usize>();
        let picked = self
            .loggers
            .names
            .iter()
            .map(|names| pick(headers, &names.response_headers))
            .collect();
        self.first_tx = Some(Instant::now());
        self.response = Some(Response {
            status,
            headers_bytes: headers_bytes as u64,
            body_bytes: 0,
            headers: picked,
            trailers: Vec::new(),
        });
    }

    /// A frame of the response on its way to the client.
    pub(crate) fn sent(&mut self, frame: &Frame<Bytes>) {
        let Some(response) = &mut self.response else {
            return;
        };
        if let Some(data) = frame.data_ref() {
            response.body_bytes += data.len() as u64;
        } else if let Some(trailers) = frame.trailers_ref() {
            response.trailers = self
                .loggers
                .names
                .iter()
                .map(|names| pick(trailers, &names.response_trailers))
                .collect();
        }
    }

    /// The response's last byte went out.
    pub(crate) fn finished(&mut self) {
        self.last_tx.get_or_insert_with(Instant::now);
    }

    /// The request is over: its entries are made on the access log's thread (dropping a
    /// `Pending` makes them at once).
    pub(crate) fn defer(self: Box<Self>) {
        let deferred = Arc::clone(&self.loggers.deferred);
        deferred.push(self);
    }

    /// The request is over and its entries are not made: each of its sinks counts one dropped.
    fn discard(mut self: Box<Self>) {
        for (index, (_, sink)) in self.loggers.logs.iter().enumerate() {
            if self.logs(index) {
                sink.dropped();
            }
        }
        self.discarded = true;
    }

    /// Whether logger `index` logs the request.
    fn logs(&self, index: usize) -> bool {
        !self.skipped.get(index).copied().unwrap_or(false)
    }

    /// The entry for logger `index`; the last one takes the strings rather than copy them.
    fn entry(&mut self, index: usize, last: bool) -> HttpAccessLogEntry {
        fn grab<T: Clone + Default>(value: &mut T, last: bool) -> T {
            if last {
                std::mem::take(value)
            } else {
                value.clone()
            }
        }
        let since = |at: Instant| duration(at.saturating_duration_since(self.started));
        let routed = &mut self.routed;
        let flags = routed.flag.map(|flag| {
            let mut f = ResponseFlags::default();
            match flag {
                Flag::NoRoute => f.no_route_found = true,
                Flag::NoCluster => f.no_cluster_found = true,
                Flag::NoHealthyUpstream => f.no_healthy_upstream = true,
                Flag::UpstreamConnectionFailure => f.upstream_connection_failure = true,
                Flag::UpstreamRemoteReset => f.upstream_remote_reset = true,
                Flag::UpstreamRequestTimeout => f.upstream_request_timeout = true,
                Flag::StreamIdleTimeout => f.stream_idle_timeout = true,
            }
            f
        });
        let last_tx = self.last_tx.map(since);
        let common = AccessLogCommon {
            downstream_remote_address: Some(self.downstream.remote.clone()),
            downstream_direct_remote_address: Some(self.downstream.remote.clone()),
            downstream_local_address: Some(self.downstream.local.clone()),
            tls_properties: self.downstream.tls_properties.clone(),
            start_time: Some(timestamp(self.start)),
            time_to_last_rx_byte: self.received.ended().map(duration),
            time_to_first_upstream_rx_byte: routed.first_upstream_rx.map(since),
            time_to_first_downstream_tx_byte: self.first_tx.map(since),
            time_to_last_downstream_tx_byte: last_tx,
            duration: last_tx,
            upstream_remote_address: routed.upstream.map(socket),
            upstream_cluster: grab(&mut routed.cluster, last),
            route_name: grab(&mut routed.route_name, last),
            upstream_request_attempt_count: routed.attempts,
            response_flags: flags,
            access_log_type: AccessLogType::DownstreamEnd as i32,
            ..Default::default()
        };
        let request = HttpRequestProperties {
            request_method: method(&self.method) as i32,
            scheme: self.scheme.to_owned(),
            authority: grab(&mut self.authority, last),
            path: grab(&mut self.path, last),
            user_agent: grab(&mut self.user_agent, last),
            referer: grab(&mut self.referer, last),
            forwarded_for: grab(&mut self.forwarded_for, last),
            request_headers_bytes: self.request_headers_bytes,
            request_body_bytes: self.received.bytes.load(Ordering::Relaxed),
            // Each logger's own: taken.
            request_headers: self
                .request_headers
                .get_mut(index)
                .map(std::mem::take)
                .unwrap_or_default(),
            ..Default::default()
        };
        let response = match &mut self.response {
            None => HttpResponseProperties {
                response_code_details: routed.details.to_owned(),
                ..Default::default()
            },
            Some(r) => HttpResponseProperties {
                response_code: Some(UInt32Value {
                    value: u32::from(r.status),
                }),
                response_headers_bytes: r.headers_bytes,
                response_body_bytes: r.body_bytes,
                response_headers: r
                    .headers
                    .get_mut(index)
                    .map(std::mem::take)
                    .unwrap_or_default(),
                response_trailers: r
                    .trailers
                    .get_mut(index)
                    .map(std::mem::take)
                    .unwrap_or_default(),
                response_code_details: routed.details.to_owned(),
                ..Default::default()
            },
        };
        let protocol_version = match self.protocol {
            Version::HTTP_10 => http_access_log_entry::HttpVersion::Http10,
            Version::HTTP_11 => http_access_log_entry::HttpVersion::Http11,
            Version::HTTP_2 => http_access_log_entry::HttpVersion::Http2,
            Version::HTTP_3 => http_access_log_entry::HttpVersion::Http3,
            _ => http_access_log_entry::HttpVersion::ProtocolUnspecified,
        };
        HttpAccessLogEntry {
            common_properties: Some(common),
            protocol_version: protocol_version as i32,
            request: Some(request),
            response: Some(response),
        }
    }
}

impl Drop for Pending {
    /// The request is over: its entry goes to every logger.
    fn drop(&mut self) {
        if self.discarded {
            return;
        }
        let loggers = self.loggers.clone();
        let last = (0..loggers.logs.len()).rev().find(|i| self.logs(*i));
        for (index, (_, sink)) in loggers.logs.iter().enumerate() {
            if self.logs(index) {
                sink.push(&self.entry(index, Some(index) == last));
            }
        }
    }
}

// === impl Received ===

impl Received {
    fn end(&self, started: Instant) {
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        let _ = self
            .ended
            .compare_exchange(0, nanos + 1, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn ended(&self) -> Option<Duration> {
        match self.ended.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }
}

// === impl Counted ===

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if this.body.is_end_stream() {
                    this.received.end(this.started);
                }
            }
            Poll::Ready(None) => this.received.end(this.started),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

// === helpers ===

/// `x-forwarded-for`, which `http` has no constant for.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The values of `name` joined by `,`; `None` when absent.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = String::from_utf8_lossy(first.as_bytes()).into_owned();
    for value in values {
        out.push(',');
        out.push_str(&String::from_utf8_lossy(value.as_bytes()));
    }
    Some(out)
}

/// The headers of `names` that `headers` has.
fn pick(headers: &HeaderMap, names: &[HeaderName]) -> HashMap<String, String> {
    names
        .iter()
        .filter_map(|name| Some((name.as_str().to_owned(), joined(headers, name)?)))
        .collect()
}

fn method(m: &Method) -> RequestMethod {
    match *m {
        Method::GET => RequestMethod::Get,
        Method::HEAD => RequestMethod::Head,
        Method::POST => RequestMethod::Post,
        Method::PUT => RequestMethod::Put,
        Method::DELETE => RequestMethod::Delete,
        Method::CONNECT => RequestMethod::Connect,
        Method::OPTIONS => RequestMethod::Options,
        Method::TRACE => RequestMethod::Trace,
        Method::PATCH => RequestMethod::Patch,
        _ => RequestMethod::MethodUnspecified,
    }
}

fn socket(a: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: a.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                a.port(),
            ))),
            ..Default::default()
        })),
    }
}

fn duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
