//! `switchyard-proxy-config`: the bundled proxy's runtime model and its translation from xDS,
//! the one definition of the subset `switchyard-proxy` implements.
//!
//! The proxy translates every resource it accepts once into the tables the data path reads
//! (listeners, routes, clusters, endpoints, policies, certificates); the data path never sees
//! a protobuf. [`Runtime::link`] ties the translated pieces together after every accepted
//! response, off the request path; the result is swapped in whole, so a request sees one
//! consistent configuration from start to end. The bundled adapter runs the same translation
//! to decide what to send. Sans-IO: no runtime, no sockets.
//!
//! The subset (every field outside of which is refused), in outline; the translation under
//! `build` is the definition:
//!
//! - **Resource types**: CDS, EDS, LDS, RDS and SDS, and `envoy.type.v3.TokenBucket` (the
//!   rate of an access log's `process_ratelimit` filters, see [`TokenBucketConfig`]), over ADS.
//! - **Clusters**: STATIC (inline `load_assignment`) and EDS over ADS, and ORIGINAL_DST with
//!   `lb_policy` CLUSTER_PROVIDED and nothing else but `connect_timeout` (a TCP proxy's
//!   passthrough to the connection's original destination, in plaintext); `connect_timeout`;
//!   `upstream_bind_config` with a `source_address` only (an IP, any port);
//!   `lb_policy` ROUND_ROBIN or LEAST_REQUEST (the proxy balances by power of two choices over
//!   latency either way); `outlier_detection` (consecutive 5xx and gateway failures, enforced
//!   fully or not at all, `interval`, `base_ejection_time`, `max_ejection_percent`);
//!   `HttpProtocolOptions` with `explicit_http_config` (HTTP/1.1 or HTTP/2, default settings);
//!   `transport_socket` and `transport_socket_matches` (string labels).
//! - **Endpoints**: socket addresses with IP literals, `load_balancing_weight` (at least 1),
//!   `health_status` (unhealthy, draining and timed-out endpoints are left out, as Envoy does),
//!   `envoy.transport_socket_match` metadata.
//! - **Transport sockets**: `raw_buffer`, and `tls` (`UpstreamTlsContext`,
//!   `DownstreamTlsContext`) with one certificate and the validation context over SDS (ADS),
//!   exact URI SAN matchers (upstream only), ALPN, TLS 1.2 to 1.3, `require_client_certificate`.
//! - **Listeners**: a socket address; the listener filters `original_dst`, `tls_inspector` and
//!   `http_inspector` (default settings; the HTTP inspector's `filter_disabled` on destination
//!   ports through `not_match`, `or_match` and `destination_port_range`),
//!   `listener_filters_timeout` and `continue_on_listener_filters_timeout`; filter chains (and a
//!   `default_filter_chain`) that match on `destination_port`, `prefix_ranges`,
//!   `transport_protocol` (`tls`, `raw_buffer`) and `application_protocols` (`http/1.0`,
//!   `http/1.1`, `h2c`), chosen as Envoy chooses (see [`ChainSelector`]).
//! - **Network filters**: one terminal `http_connection_manager`, `tcp_proxy` (`cluster` or
//!   `weighted_clusters`, `idle_timeout`) or `direct_response` without a body (close), with
//!   at most one `envoy.filters.network.rbac` (ALLOW), right before `tcp_proxy`, and at most
//!   one `envoy.filters.network.connection_limit` (`max_connections`) anywhere before the
//!   terminal filter.
//! - **HTTP connection manager**: codec AUTO, `access_log` with `http_grpc` loggers, each
//!   with no filter or a filter of `header_filter`s and `process_ratelimit` extension filters
//!   over ADS under `and_filter`s and `or_filter`s (see [`AccessLog`], [`LogFilter`]), RDS
//!   over ADS or an inline route configuration,
//!   `normalize_path` unset or true (the proxy normalizes paths before routing and RBAC, with
//!   no switch to turn that off, as Envoy does with `merge_slashes`,
//!   `path_with_escaped_slashes_action` and `max_request_headers_kb` unset, or stricter: see
//!   the proxy's `proxy::target`), `request_headers_timeout`, `stream_idle_timeout`,
//!   `common_http_protocol_options` with `idle_timeout` only, a `local_reply_config` mapping
//!   403s, `forward_client_cert_details` SANITIZE or SANITIZE_SET with
//!   `set_current_client_cert_details` naming `uri` at most (see [`ForwardClientCert`]), and
//!   the HTTP filters `envoy.filters.http.rbac` (ALLOW, under that name) then
//!   `envoy.filters.http.router` (default settings), last.
//! - **Routes**: virtual hosts with domains; matches on `prefix`, `path` or `safe_regex`, header
//!   matchers `string_match` (exact, prefix, suffix, contains, safe_regex; `ignore_case`) and
//!   `present_match`, with `invert_match`; case-insensitive path matches; actions to `cluster` or `weighted_clusters`
//!   with `timeout` and `retry_policy` (`retry_on` among [`RETRY_ON`], `num_retries`,
//!   `per_try_timeout`, the `previous_hosts` predicate); `RBACPerRoute` under
//!   `envoy.filters.http.rbac`.
//! - **RBAC**: ALLOW policies; permissions any, and, or, not, `url_path`, `header`,
//!   `destination_port`; principals any, and, or, not, `authenticated` with a `principal_name`.
//! - **Secrets**: `tls_certificate` (chain and key) and `validation_context` (`trusted_ca`), as
//!   inline PEM.
//!
//! A route's `stat_prefix` is honoured: its requests are counted on their own, as Envoy's route
//! stats (see [`Route::stat_prefix`]). Pure observability fields are accepted and may be
//! ignored: `stat_prefix` (listeners, HCM, TCP proxy, RBAC `rules_stat_prefix`/`track_per_rule_stats`, and RBAC shadow rules,
//! which only log), names of filter chains,
//! filters and transport sockets, and an endpoint's `observability_name`. Access logs are not
//! ignored: an audit log that silently never appears would mislead. An HTTP connection
//! manager's `access_log` may list `envoy.access_loggers.http_grpc` loggers (see
//! [`AccessLog`]), which the proxy implements; any other logger, any filter but those of
//! [`LogFilter`], or an access log anywhere else drops its resource like any other
//! unsupported field.

#![forbid(unsafe_code)]

mod build;
mod chains;
pub mod metrics;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
#[cfg(test)]
mod tests;
mod type_url;

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

pub use self::{
    build::{Invalid, PROCESS_RATELIMIT, Problem, RETRY_ON, Translated, Translation, translate},
    chains::{
        AppProtocol, ApplicationLevel, ChainMatch, ChainSelector, CidrRange, DuplicateMatch,
        PortSet, TransportLevel, TransportProtocol,
    },
    type_url::TypeUrl,
};

/// Everything the data path needs, by name. Cheap to clone: every table entry is shared.
#[derive(Clone, Debug, Default)]
pub struct Runtime {
    /// Listeners by name (`outbound_http`, `outbound_tcp_<port>`, `inbound|<port>`; with
    /// interception `outbound` and `inbound`).
    pub listeners: BTreeMap<String, Arc<ListenerConfig>>,
    /// Route tables by name (the RDS names, and inline route configs under their own name).
    pub routes: BTreeMap<String, Arc<RouteTable>>,
    /// Clusters by name, with their endpoints resolved from EDS (or the static assignment).
    pub clusters: BTreeMap<String, Arc<ClusterConfig>>,
    /// Certificates and trust bundles by SDS name.
    pub secrets: BTreeMap<String, Arc<SecretMaterial>>,
    /// The token buckets of access logs' `process_ratelimit` filters, by resource name.
    pub buckets: BTreeMap<String, Arc<TokenBucketConfig>>,
    /// Things the translation skipped (a route naming a cluster that is not there yet): the
    /// data path answers 503 for them, as Envoy does; listed in `/config_dump`.
    pub warnings: Vec<String>,
}

/// Which way a listener faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

/// One listening socket and what to do with its connections.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    /// `ipv4_compat` on an IPv6 `address`: it takes IPv4 connections too (as IPv4-mapped
    /// addresses); otherwise an IPv6 listener is IPv6 only, as Envoy binds it.
    pub ipv4_compat: bool,
    pub direction: Direction,
    /// The listener filters: where a connection was going, and what its first bytes say.
    pub filters: ListenerFilters,
    /// The `filter_chains` in their xDS order, then the `default_filter_chain` if there is
    /// one.
    pub chains: Vec<FilterChain>,
    /// Which of `chains` a connection takes, as Envoy picks it; built from `chains` by the
    /// translation (rebuild it with [`ChainSelector::build`] after changing them).
    pub selector: ChainSelector,
}

/// The listener filters of a listener, and the bound on how long they may wait for a
/// connection's first bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerFilters {
    /// `envoy.filters.listener.original_dst`: a connection's destination is the one it had
    /// before an iptables REDIRECT (`SO_ORIGINAL_DST`), or its local address when it was not
    /// redirected.
    pub original_dst: bool,
    /// `envoy.filters.listener.tls_inspector` is listed. The proxy also looks for a TLS
    /// ClientHello without it wherever a chain matches on `transport_protocol` (Envoy would
    /// take every connection as `raw_buffer` then).
    pub tls_inspector: bool,
    /// `envoy.filters.listener.http_inspector`: the destination ports it runs on (all of
    /// them unless its `filter_disabled` says otherwise); `None` without the inspector, when
    /// no connection has an application protocol.
    pub http_inspector: Option<PortSet>,
    /// `listener_filters_timeout`: how long the inspectors may wait for the first bytes from
    /// accept on; Envoy's default 15 s, `None` for no limit (`0s`).
    pub timeout: Option<Duration>,
    /// `continue_on_listener_filters_timeout`: after the timeout a connection takes its chain
    /// as if nothing was detected (a server-first protocol, whose client waits for the server
    /// to speak); without it the connection is closed.
    pub continue_on_timeout: bool,
}

impl Default for ListenerFilters {
    fn default() -> Self {
        ListenerFilters {
            original_dst: false,
            tls_inspector: false,
            http_inspector: None,
            timeout: Some(DEFAULT_LISTENER_FILTERS_TIMEOUT),
            continue_on_timeout: false,
        }
    }
}

/// Envoy's `listener_filters_timeout` when a listener sets none.
pub const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

/// Envoy's HTTP connection idle timeout (`common_http_protocol_options.idle_timeout`) when an
/// HTTP connection manager sets none.
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Envoy's `stream_idle_timeout` when an HTTP connection manager sets none.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Envoy's TCP proxy `idle_timeout` when a TCP proxy sets none.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// One filter chain: optional TLS termination, an optional connection limit, then one terminal
/// filter.
#[derive(Clone, Debug)]
pub struct FilterChain {
    pub name: String,
    /// Its `filter_chain_match`; any connection for the default chain, which only takes the
    /// connections no other chain does.
    pub matches: ChainMatch,
    /// TLS termination (a `DownstreamTlsContext` transport socket).
    pub tls: Option<DownstreamTls>,
    /// The `envoy.filters.network.connection_limit` filter, if the chain has one.
    pub connection_limit: Option<ConnectionLimit>,
    pub filter: NetworkFilter,
}

/// `envoy.filters.network.connection_limit`: at most `max_connections` connections of one
/// filter chain are open at once; a connection beyond that is closed as soon as the chain is
/// chosen, before its TLS handshake, and counted. As in Envoy, each chain with the filter
/// counts its own connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimit {
    /// For metrics (`stat_prefix`).
    pub stat_prefix: String,
    /// At least 1.
    pub max_connections: u64,
}

/// The terminal network filter of a chain.
#[derive(Clone, Debug)]
pub enum NetworkFilter {
    /// An HTTP connection manager.
    Http(HttpManager),
    /// A TCP proxy, with the network RBAC in front of it if there is one.
    Tcp(TcpProxy),
    /// `direct_response` with an empty body: close the connection at once.
    Close,
}

/// An HTTP connection manager.
#[derive(Clone, Debug)]
pub struct HttpManager {
    /// For metrics (`stat_prefix`).
    pub stat_prefix: String,
    /// Where the route table comes from.
    pub routes: RouteSource,
    /// The listener-level RBAC filter; `None` when the chain has no RBAC filter. A virtual
    /// host or route may override it ([`VirtualHost::rbac`], [`Route::rbac`]).
    pub rbac: Option<Arc<Rbac>>,
    /// What a denied request gets: status and body from the local reply config; default 403
    /// and `RBAC: access denied`.
    pub denied: DeniedReply,
    /// What becomes of `x-forwarded-client-cert` (`forward_client_cert_details`); default
    /// [`ForwardClientCert::Sanitize`].
    pub forward_client_cert: ForwardClientCert,
    /// How long a peer may take, or leave a connection or a request idle.
    pub timeouts: HttpTimeouts,
    /// `access_log`: where every request the manager handles is logged; empty (the usual
    /// case) for nowhere.
    pub access_logs: Vec<AccessLog>,
}

/// `envoy.access_loggers.http_grpc` (`HttpGrpcAccessLogConfig`) on an HTTP connection
/// manager: every request it handles, once its response is sent (or its stream ends), becomes
/// an `HTTPAccessLogEntry` streamed to `envoy.service.accesslog.v3.AccessLogService/
/// StreamAccessLogs`, as Envoy's logger sends it: every request, or those its filter lets
/// through ([`AccessLog::filter`]: header conditions and `process_ratelimit` token buckets).
///
/// The bundled proxy sends entries to its control plane only: over its ADS channel (address,
/// TLS) with the ADS credentials, whatever `grpc_service` names. The translation requires an
/// `envoy_grpc` or `google_grpc` target and reads nothing in it; the control plane writes
/// the same target as its bootstrap's ADS service. `transport_api_version` must be V3;
/// `filter_state_objects_to_log`, `custom_tags`, `grpc_stream_retry_policy` and the service's
/// `timeout`, `initial_metadata` and `retry_policy` are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLog {
    /// `common_config.log_name`: names the stream (in its first message's `identifier`). The
    /// proxy keeps one stream per name; connection managers with the same name share it,
    /// with the interval and buffer size of the first to open it.
    pub log_name: String,
    /// `buffer_flush_interval`: the longest an entry waits before it is sent; default
    /// [`DEFAULT_ACCESS_LOG_FLUSH_INTERVAL`] (1 s, Envoy's).
    pub flush_interval: Duration,
    /// `buffer_size_bytes`: entries are sent as soon as this many bytes (encoded) wait;
    /// default [`DEFAULT_ACCESS_LOG_BUFFER_BYTES`] (16 KiB, Envoy's); 0 sends each entry at
    /// once.
    pub buffer_bytes: u32,
    /// `additional_request_headers_to_log`: lower-case names, logged in `request_headers`.
    pub request_headers: Vec<String>,
    /// `additional_response_headers_to_log`: lower-case names, in `response_headers`.
    pub response_headers: Vec<String>,
    /// `additional_response_trailers_to_log`: lower-case names, in `response_trailers`.
    pub response_trailers: Vec<String>,
    /// `filter`: which requests are logged, decided as each request starts (see
    /// [`LogFilter`]); `None` (no filter): every request.
    pub filter: Option<LogFilter>,
}

/// An access log's `filter` (`config.accesslog.v3.AccessLogFilter`): the kinds a tap needs to
/// show some requests at some rate, each as Envoy evaluates it. A tap's filter looks like
///
/// ```text
/// or ─┬─ bucket switchyard-tap                       every request, at the tap's rate
///     ├─ and ─┬─ header :method exact GET            one filtered session: its requests,
///     │       ├─ header :path prefix /a                at that session's own rate
///     │       └─ bucket switchyard-tap-7
///     └─ and ─ ...
/// ```
///
/// `And` and `Or` evaluate their filters in order and stop as soon as the outcome is known
/// (`And` at the first that fails, `Or` at the first that passes), as Envoy's do. That order is
/// what makes a bucket after a header condition a rate of the matching requests only: a
/// request that fails the condition never reaches the bucket, and one that an earlier term of
/// an `Or` already let through takes no token from a later term's bucket.
///
/// The tree is at most [`MAX_LOG_FILTER_DEPTH`] deep and has at most [`MAX_LOG_FILTER_NODES`]
/// filters; `And` and `Or` have at least 2 (Envoy's `min_items: 2`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogFilter {
    /// `extension_filter` `envoy.access_loggers.extension_filters.process_ratelimit`: passes
    /// when the request takes a token from the token bucket of this resource name
    /// (`dynamic_config.resource_name`, over ADS); a request that finds none, or no bucket of
    /// the name, fails.
    Bucket(BucketName),
    /// `header_filter`: passes when the request matches the header condition, as a route's
    /// header matcher matches (pseudo-headers `:method`, `:path`, `:authority`, `:scheme`
    /// included).
    Header(HeaderMatch),
    /// `and_filter`: passes when every filter passes.
    And(Vec<LogFilter>),
    /// `or_filter`: passes when some filter passes.
    Or(Vec<LogFilter>),
}

/// The deepest an access log's filter may nest, counting the top filter as 1: a tap's filter
/// is 3 deep (an `or` of `and`s of leaves); the bound leaves room for hand-written filters
/// while keeping the translation's and the request path's recursion shallow.
pub const MAX_LOG_FILTER_DEPTH: usize = 8;

/// The most filters (every `AccessLogFilter` message, `and`/`or` included) an access log's
/// filter may have: a tap's is at most 322 (an `or` of the tap's own bucket and 64 sessions'
/// `and`s of at most 3 header conditions and a bucket); the bound caps what one request may
/// have to evaluate, and what one listener update may make the proxy translate.
pub const MAX_LOG_FILTER_NODES: usize = 1_024;

/// The resource name of a token bucket (`envoy.type.v3.TokenBucket`) an access log's
/// `process_ratelimit` filter takes its tokens from. As in Envoy there is one bucket per name
/// in the process, shared by every access log that names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketName(pub String);

impl BucketName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An `envoy.type.v3.TokenBucket` resource, as Envoy's `process_ratelimit` access log filter
/// reads it: a bucket starts full, gains `tokens_per_fill` tokens every `fill_interval` (never
/// more than `max_tokens`), and each logged request takes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucketConfig {
    /// `max_tokens`: what the bucket holds when full, and at the start; at least 1.
    pub max_tokens: u32,
    /// `tokens_per_fill`: tokens added per `fill_interval`; default 1, at least 1.
    pub tokens_per_fill: u32,
    /// `fill_interval`: required, at least [`MIN_FILL_INTERVAL`] (50 ms, Envoy's floor).
    pub fill_interval: Duration,
}

/// The shortest `fill_interval` of a token bucket: Envoy's local rate limiter refuses less
/// ("fill timer must be >= 50ms").
pub const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);

/// Envoy's `buffer_flush_interval` when an access logger sets none.
pub const DEFAULT_ACCESS_LOG_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Envoy's `buffer_size_bytes` when an access logger sets none.
pub const DEFAULT_ACCESS_LOG_BUFFER_BYTES: u32 = 16_384;

/// The timeouts of an HTTP connection manager; `None` is no timeout (`0s` in xDS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// `request_headers_timeout`: from the first byte of an HTTP/1 request's headers to the
    /// last; the peer then gets 408 and the connection is closed. Envoy's default: none.
    pub request_headers: Option<Duration>,
    /// `common_http_protocol_options.idle_timeout`: a connection with no request in flight
    /// this long is closed (HTTP/2: GOAWAY first). Default [`DEFAULT_HTTP_IDLE_TIMEOUT`].
    pub idle: Option<Duration>,
    /// `stream_idle_timeout`: a request with nothing received or sent this long ends, with
    /// 504 `stream timeout` before the response has started (as Envoy's router answers),
    /// else by closing. Default
    /// [`DEFAULT_STREAM_IDLE_TIMEOUT`].
    pub stream_idle: Option<Duration>,
}

impl Default for HttpTimeouts {
    /// Envoy's, for a connection manager that sets none.
    fn default() -> Self {
        HttpTimeouts {
            request_headers: None,
            idle: Some(DEFAULT_HTTP_IDLE_TIMEOUT),
            stream_idle: Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        }
    }
}

/// What an HTTP connection manager does with the `x-forwarded-client-cert` (XFCC) request
/// header: `forward_client_cert_details` with `set_current_client_cert_details`. Whatever the
/// client sent is never forwarded, so the application may trust the header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardClientCert {
    /// `SANITIZE` (Envoy's default): removed from every request.
    #[default]
    Sanitize,
    /// `SANITIZE_SET`: removed, and on a TLS connection whose client presented a certificate,
    /// set to `By=<the proxy's own first URI SAN>;Hash=<hex SHA-256 of the client's leaf
    /// certificate (DER)>`, then `;URI=<the client's first URI SAN>` with `uri`; Envoy's
    /// format, in Envoy's order.
    SanitizeSet {
        /// `set_current_client_cert_details.uri`.
        uri: bool,
    },
}

/// The reply to a request RBAC denies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeniedReply {
    pub status: u16,
    pub body: String,
}

/// Where an HTTP connection manager's routes come from.
#[derive(Clone, Debug)]
pub enum RouteSource {
    /// RDS: looked up in [`Runtime::routes`] by name on every request, so a new route table
    /// applies to the next request.
    Rds(String),
    /// An inline `route_config`.
    Inline(Arc<RouteTable>),
}

/// A TCP proxy.
#[derive(Clone, Debug)]
pub struct TcpProxy {
    pub stat_prefix: String,
    /// Clusters and their weights; one entry with any weight for a single cluster.
    pub clusters: Vec<(String, u32)>,
    /// Network RBAC in front of the proxy; `None` when there is none.
    pub rbac: Option<Arc<Rbac>>,
    /// `idle_timeout`: a connection with no bytes either way this long is closed; `None` for
    /// none (`0s`). Default [`DEFAULT_TCP_IDLE_TIMEOUT`].
    pub idle_timeout: Option<Duration>,
}

/// A route configuration.
#[derive(Clone, Debug)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A virtual host: the domains it answers and its routes, first match wins.
#[derive(Clone, Debug)]
pub struct VirtualHost {
    pub name: String,
    /// Lower-case domains as in Envoy: exact (`web.demo:80`), `*`, `*.suffix` or `prefix*`.
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    /// The RBAC override of the HTTP RBAC filter (`typed_per_filter_config`):
    /// `None` means no override, `Some(None)` turns RBAC off, `Some(Some(rbac))` replaces it.
    pub rbac: Option<Option<Arc<Rbac>>>,
}

/// A route.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    /// `stat_prefix`: the route's requests are counted on their own under it (Envoy's
    /// `vhost.<virtual host>.route.<stat_prefix>.*`), where its cluster counts them too;
    /// `None` (empty in xDS) counts them in the cluster only.
    pub stat_prefix: Option<String>,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    /// As [`VirtualHost::rbac`], and it takes precedence over it.
    pub rbac: Option<Option<Arc<Rbac>>>,
}

/// What a request must look like to take a route; every part must hold.
#[derive(Clone, Debug)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
}

/// How a route matches the path (without the query string, except for `Prefix`/`Exact` as
/// Envoy does: those compare the path only too).
#[derive(Clone, Debug)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// Anchored: the whole path must match (`safe_regex`).
    Regex(regex::Regex),
}

/// One header condition. `:method`, `:path`, `:authority` and `:scheme` are pseudo-headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: String,
    pub matcher: StringMatch,
    pub invert: bool,
}

/// A string matcher; regexes are anchored (the whole value must match).
#[derive(Clone, Debug)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(regex::Regex),
    /// The header is present, whatever its value.
    Present,
}

impl PartialEq for StringMatch {
    /// Regexes are equal when their patterns are: the translation compiles every one the same
    /// way, so the same pattern matches the same strings. The proxy compares access logs to
    /// find the connections a changed one drains, so a changed filter must compare unequal.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b))
            | (Self::Prefix(a), Self::Prefix(b))
            | (Self::Suffix(a), Self::Suffix(b))
            | (Self::Contains(a), Self::Contains(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            (Self::Present, Self::Present) => true,
            _ => false,
        }
    }
}

impl Eq for StringMatch {}

/// What a route does with a request.
#[derive(Clone, Debug)]
pub struct RouteAction {
    /// Clusters and weights; a single `cluster` is one entry with weight 1. Weights of zero are
    /// kept (they get no traffic).
    pub clusters: Vec<(String, u32)>,
    /// The whole request's deadline, retries included; `None` for none (`0s` in xDS).
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
}

/// A route's retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub num_retries: u32,
    pub retry_on: RetryOn,
    /// Pick another endpoint than the ones already tried (`previous_hosts`).
    pub other_hosts: bool,
    pub per_try_timeout: Option<Duration>,
}

/// The conditions of `retry_on` the proxy implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `connect-failure`: the upstream connection could not be made.
    pub connect_failure: bool,
    /// `refused-stream`: HTTP/2 REFUSED_STREAM.
    pub refused_stream: bool,
    /// `reset-before-request`: the connection broke before the request was written.
    pub reset_before_request: bool,
    /// `5xx` (includes `gateway-error`): the upstream answered 5xx or not at all.
    pub server_error: bool,
    /// `gateway-error`: 502, 503 or 504.
    pub gateway_error: bool,
}

/// An ALLOW RBAC: a request or connection passes if any policy matches it. No policies deny
/// everything.
#[derive(Clone, Debug, Default)]
pub struct Rbac {
    /// Policies by name, in name order.
    pub policies: Vec<(String, Policy)>,
}

/// One RBAC policy: some permission and some principal must match.
#[derive(Clone, Debug)]
pub struct Policy {
    pub permissions: Vec<Permission>,
    pub principals: Vec<Principal>,
}

/// What is asked for.
#[derive(Clone, Debug)]
pub enum Permission {
    Any,
    And(Vec<Permission>),
    Or(Vec<Permission>),
    Not(Box<Permission>),
    /// `url_path`: the path without the query string.
    UrlPath(StringMatch),
    Header(HeaderMatch),
    DestinationPort(u16),
}

/// Who asks.
#[derive(Clone, Debug)]
pub enum Principal {
    Any,
    And(Vec<Principal>),
    Or(Vec<Principal>),
    Not(Box<Principal>),
    /// The peer's authenticated identity: the URI SAN of its verified client certificate. A
    /// plaintext peer has none, so it matches no `Authenticated`.
    Authenticated(StringMatch),
}

/// A cluster with its endpoints.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub name: String,
    /// The EDS name of an EDS cluster (`eds_cluster_config.service_name`, or the cluster's
    /// name), whose assignment gives it its endpoints; `None` for a STATIC cluster.
    pub eds: Option<String>,
    /// An ORIGINAL_DST cluster (`lb_policy: CLUSTER_PROVIDED`): no endpoints; a TCP proxy
    /// connects to the downstream connection's destination, in plaintext.
    pub original_dst: bool,
    /// `upstream_bind_config.source_address`: the address upstream connections come from;
    /// `None` lets the kernel choose.
    pub source_address: Option<IpAddr>,
    pub connect_timeout: Duration,
    /// Speak HTTP/2 (prior knowledge, or ALPN `h2` over TLS) to the endpoints; else HTTP/1.1.
    pub http2: bool,
    /// `use_downstream_protocol_config`: speak the downstream request's HTTP version instead
    /// (HTTP/2 for an HTTP/2 request, else HTTP/1.1), whatever [`ClusterConfig::http2`] says.
    pub http_follows_downstream: bool,
    /// Endpoints from EDS or the static load assignment; empty while EDS has not answered.
    pub endpoints: Arc<[Endpoint]>,
    /// Transport socket matches in order, then the default socket (`tls_default`).
    pub tls_matches: Vec<TlsMatch>,
    /// The cluster's own `transport_socket` for endpoints no match takes; `None` is plaintext.
    pub tls_default: Option<UpstreamTls>,
    pub outlier: Option<OutlierDetection>,
}

/// One endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// `load_balancing_weight`; default 1.
    pub weight: u32,
    /// The endpoint's `envoy.transport_socket_match` metadata (string values only).
    pub socket_labels: BTreeMap<String, String>,
}

/// A transport socket match: endpoints whose labels include `labels` use `tls` (`None` is
/// plaintext, a raw buffer socket).
#[derive(Clone, Debug)]
pub struct TlsMatch {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub tls: Option<UpstreamTls>,
}

/// Client-side TLS for upstream connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// SDS name of the proxy's own certificate.
    pub certificate: String,
    /// SDS name of the trust bundle.
    pub trust_bundle: String,
    /// The server certificate must carry one of these URI SANs (exact match); empty accepts
    /// any certificate the bundle verifies.
    pub peer_sans: Vec<String>,
    /// ALPN protocols to offer.
    pub alpn: Vec<String>,
    /// Only TLS 1.3 (`tls_minimum_protocol_version: TLSv1_3`).
    pub tls13_only: bool,
}

/// Server-side TLS for a filter chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownstreamTls {
    /// SDS name of the proxy's own certificate.
    pub certificate: String,
    /// SDS name of the trust bundle client certificates are verified against; `None` when
    /// client certificates are not verified.
    pub trust_bundle: Option<String>,
    pub require_client_certificate: bool,
    /// A client certificate must carry one of these URI SANs (exact match); empty accepts
    /// any certificate the bundle verifies.
    pub peer_sans: Vec<String>,
    pub alpn: Vec<String>,
    pub tls13_only: bool,
}

/// Passive health checking: eject endpoints that fail in a row, for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Consecutive 5xx (or connection failures) that eject an endpoint; Envoy's default 5.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 or connection failures that eject; `None` when not enforced.
    pub consecutive_gateway_failure: Option<u32>,
    /// The first ejection lasts this long; the n-th lasts n times as long. Default 30 s.
    pub base_ejection_time: Duration,
    /// At most this share of a cluster's endpoints is ejected at once; default 10 %.
    pub max_ejection_percent: u32,
}

/// A certificate or a trust bundle, as PEM. `Debug` leaves the key out.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretMaterial {
    Certificate {
        /// The certificate chain, leaf first.
        chain_pem: String,
        private_key_pem: String,
    },
    TrustBundle {
        ca_pem: String,
    },
}

impl fmt::Debug for SecretMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Certificate { chain_pem, .. } => f
                .debug_struct("Certificate")
                .field("chain_pem", chain_pem)
                .field("private_key_pem", &"<redacted>")
                .finish(),
            Self::TrustBundle { ca_pem } => f
                .debug_struct("TrustBundle")
                .field("ca_pem", ca_pem)
                .finish(),
        }
    }
}
