//! The data path: listeners that follow the configuration, connections matched to filter
//! chains, TLS termination, and the HTTP and TCP proxies behind them.
//!
//! Configuration changes are hitless: a request loads the configuration once when it starts,
//! so new routes and weights apply to the next request; a listener that goes away stops
//! accepting, and its open connections are drained (HTTP/1.1 `Connection: close` after the
//! request in flight, HTTP/2 GOAWAY), not cut; so are the connections of a chain whose access
//! logs changed (a tap started or ended), so that the client's next request is logged as the
//! new chain says.
//!
//! Slow and idle peers are bounded as Envoy bounds them, by the fields of the configuration:
//! a chain's connection limit closes connections beyond it before their TLS handshake; an HTTP
//! connection manager's request headers, idle and stream idle timeouts, and a TCP proxy's
//! idle timeout, close connections that take too long or say nothing (see `idle`).

mod budget;
mod counted;
mod detect;
mod headers;
mod http;
mod idle;
mod limit;
mod pool;
pub(crate) mod routing;
pub(crate) mod target;
mod tcp;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
    time::Instant,
};

use crate::{
    access_log,
    balance::Balancer,
    bootstrap::Bootstrap,
    config::{
        ClusterConfig, Direction, Endpoint, FilterChain, ForwardClientCert, HttpManager,
        ListenerConfig, NetworkFilter, Runtime, TransportProtocol,
    },
    metrics::{Registry, Timeout},
    state::State,
    tls,
};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a listener that could not bind tries again.
const REBIND_INTERVAL: Duration = Duration::from_secs(1);

/// What the data path shares between connections.
pub struct Context {
    pub(crate) state: Arc<State>,
    pub(crate) metrics: Arc<Registry>,
    pool: pool::Pool,
    balancers: Balancers,
    budget: budget::Budgets,
    tls: tls::Cache,
    slots: limit::ConnectionSlots,
    access_logs: access_log::Sinks,
}

impl Context {
    /// A data path without a control plane to send access logs to: their entries are
    /// dropped (and counted).
    pub fn new(state: Arc<State>, metrics: Arc<Registry>) -> Arc<Self> {
        Self::build(state, metrics, None)
    }

    /// A data path whose access logs go to the control plane `bootstrap` names.
    pub fn with_control_plane(
        state: Arc<State>,
        metrics: Arc<Registry>,
        bootstrap: Bootstrap,
    ) -> Arc<Self> {
        Self::build(state, metrics, Some(bootstrap))
    }

    fn build(state: Arc<State>, metrics: Arc<Registry>, bootstrap: Option<Bootstrap>) -> Arc<Self> {
        Arc::new(Context {
            access_logs: access_log::Sinks::new(bootstrap, metrics.clone()),
            state,
            metrics,
            pool: pool::Pool::default(),
            balancers: Balancers::default(),
            budget: budget::Budgets::default(),
            tls: tls::Cache::default(),
            slots: limit::ConnectionSlots::default(),
        })
    }

    /// The transport to one endpoint of a cluster, with the client TLS configuration built
    /// from the current certificate (cached until the certificate changes).
    fn upstream_transport(
        &self,
        runtime: &Runtime,
        cluster: &ClusterConfig,
        endpoint: &Endpoint,
    ) -> Result<pool::Transport, tls::TlsError> {
        let config = match http::upstream_tls(cluster, endpoint) {
            None => None,
            Some(upstream) => Some(self.tls.client(runtime, upstream)?),
        };
        Ok(http::transport(cluster, config))
    }
}

/// The balancer of each cluster, rebuilt (keeping endpoint statistics) when its endpoints
/// change.
#[derive(Default)]
struct Balancers {
    by_cluster: Mutex<HashMap<String, (usize, Balancer)>>,
}

impl Balancers {
    fn get(&self, cluster: &ClusterConfig) -> Balancer {
        let key = Arc::as_ptr(&cluster.endpoints) as *const Endpoint as usize;
        let Ok(mut map) = self.by_cluster.lock() else {
            return Balancer::new(cluster.endpoints.clone(), cluster.outlier);
        };
        match map.get_mut(&cluster.name) {
            Some((k, balancer)) if *k == key => balancer.clone(),
            Some((k, balancer)) => {
                *balancer = balancer.update(cluster.endpoints.clone(), cluster.outlier);
                *k = key;
                balancer.clone()
            }
            None => {
                let balancer = Balancer::new(cluster.endpoints.clone(), cluster.outlier);
                map.insert(cluster.name.clone(), (key, balancer.clone()));
                balancer
            }
        }
    }
}

/// What a request knows about its connection.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub(crate) listener: String,
    pub(crate) direction: Direction,
    /// The peer's address.
    pub(crate) remote: SocketAddr,
    /// The socket's own local address.
    pub(crate) local: SocketAddr,
    /// Where the connection was going: its original destination on a listener with the
    /// `original_dst` filter, else its local address. Chains, RBAC's destination port and
    /// ORIGINAL_DST clusters see this one, as in Envoy.
    pub(crate) destination: SocketAddr,
    pub(crate) tls: bool,
    /// The SPIFFE ID of the peer's verified client certificate.
    pub(crate) peer_identity: Option<String>,
    /// The `x-forwarded-client-cert` every request of this connection gets, when its chain's
    /// connection manager sets it (`SANITIZE_SET`) and the peer presented a certificate.
    pub(crate) client_cert_details: Option<::http::HeaderValue>,
}

/// A running listener: its address, and the switch that stops it.
struct Running {
    /// The address bound, and its `ipv4_compat`: a change of either is a new socket.
    address: (SocketAddr, bool),
    stop: watch::Sender<bool>,
}

/// Keeps one accept loop per configured listener, forever.
pub async fn run_listeners(ctx: Arc<Context>) {
    let mut changes = ctx.state.subscribe();
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        let runtime = ctx.state.runtime();
        // Connections to endpoints that left every cluster are closed, not kept idle.
        let endpoints: std::collections::HashSet<SocketAddr> = runtime
            .clusters
            .values()
            .flat_map(|c| c.endpoints.iter().map(|e| e.address))
            .collect();
        ctx.pool.retain(|a| endpoints.contains(&a));
        ctx.access_logs.configure(&runtime);
        running.retain(|name, r| {
            let keep = runtime
                .listeners
                .get(name)
                .is_some_and(|l| (l.address, l.ipv4_compat) == r.address);
            if !keep {
                tracing::info!(listener = %name, "draining listener");
                let _ = r.stop.send(true);
            }
            keep
        });
        for (name, listener) in &runtime.listeners {
            if running.contains_key(name) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            running.insert(
                name.clone(),
                Running {
                    address: (listener.address, listener.ipv4_compat),
                    stop,
                },
            );
            tokio::spawn(accept_loop(
                ctx.clone(),
                name.clone(),
                listener.address,
                listener.ipv4_compat,
                stopped,
            ));
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn accept_loop(
    ctx: Arc<Context>,
    name: String,
    address: SocketAddr,
    ipv4_compat: bool,
    mut stop: watch::Receiver<bool>,
) {
    let listener = loop {
        match bind(address, ipv4_compat) {
            Ok(l) => break l,
            Err(error) => {
                tracing::warn!(listener = %name, %address, %error, "cannot bind; retrying");
                ctx.metrics.listener_bind_error(&name);
                tokio::select! {
                    _ = tokio::time::sleep(REBIND_INTERVAL) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    tracing::info!(listener = %name, %address, "listening");
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(listener = %name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let name = name.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(ctx, name, stream, remote, stop).await {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
        });
    }
}

/// Connects to `to`, from `from` (any port) when given: a cluster's `upstream_bind_config`.
pub(crate) async fn connect_tcp(
    to: SocketAddr,
    from: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect(to).await;
    };
    let socket = match to {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// A listening socket on `address`; an IPv6 one takes IPv4 connections too only with
/// `ipv4_compat`, whatever the system's `net.ipv6.bindv6only` default, as Envoy binds it.
fn bind(address: SocketAddr, ipv4_compat: bool) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let socket = tokio::net::TcpSocket::new_v6()?;
            socket2::SockRef::from(&socket).set_only_v6(!ipv4_compat)?;
            socket
        }
    };
    // A restarted proxy must bind the ports its predecessor left in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// Why a connection ended badly.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("listener {0} is gone")]
    NoListener(String),
    #[error("no filter chain matches")]
    NoChain,
    #[error("the filter chain's connection limit is reached")]
    Limited,
    #[error("nothing detected within the listener filters' timeout")]
    DetectTimeout,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Http(String),
}

async fn connection(
    ctx: Arc<Context>,
    listener_name: String,
    stream: TcpStream,
    remote: SocketAddr,
    stop: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    // Subscribed before the configuration is read: a tap that starts or ends while the chain
    // is chosen or the TLS handshake runs must still drain the connection, or every request
    // on it would follow the access logs of a configuration already replaced.
    let logs = ctx.state.subscribe_access_logs();
    let runtime = ctx.state.runtime();
    let listener = runtime
        .listeners
        .get(&listener_name)
        .cloned()
        .ok_or_else(|| ConnError::NoListener(listener_name.clone()))?;
    let local = stream.local_addr()?;
    let destination = if listener.filters.original_dst {
        detect::original_destination(&stream, local)
    } else {
        local
    };
    let chain = choose_chain(&listener, &stream, destination).await?;
    // Counted from here to the end of the connection; refused before any TLS handshake.
    let _slot = match &chain.connection_limit {
        None => None,
        Some(limit) => {
            let slot = ctx
                .slots
                .acquire(&listener_name, &chain.name, limit.max_connections);
            if slot.is_none() {
                ctx.metrics
                    .connection_limited(&listener_name, &limit.stat_prefix);
                return Err(ConnError::Limited);
            }
            slot
        }
    };
    let mut info = ConnInfo {
        listener: listener_name,
        direction: listener.direction,
        remote,
        local,
        destination,
        tls: false,
        peer_identity: None,
        client_cert_details: None,
    };
    match &chain.tls {
        None => serve(ctx, info, chain, stream, stop, logs).await,
        Some(downstream) => {
            let config = ctx
                .tls
                .server(&runtime, downstream)
                .map_err(|e| ConnError::Tls(e.to_string()))?;
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    ctx.metrics
                        .tls_handshake_error(&info.listener, handshake_failure(&e));
                    return Err(ConnError::Tls(e.to_string()));
                }
                Err(_) => {
                    ctx.metrics.tls_handshake_error(&info.listener, "timeout");
                    return Err(ConnError::Tls("handshake timeout".to_owned()));
                }
            };
            ctx.metrics.tls_handshake(&info.listener);
            info.tls = true;
            let peer = tls.get_ref().1.peer_certificates();
            info.peer_identity = peer.and_then(tls::peer_identity);
            if let NetworkFilter::Http(manager) = &chain.filter
                && let ForwardClientCert::SanitizeSet { uri } = manager.forward_client_cert
                && let Some(leaf) = peer.and_then(<[_]>::first)
            {
                // Computed once per connection: every request on it has the same peer.
                let own = runtime
                    .secrets
                    .get(&downstream.certificate)
                    .and_then(|secret| tls::certificate_identity(secret));
                info.client_cert_details = headers::client_cert_details(
                    own.as_deref(),
                    leaf,
                    info.peer_identity.as_deref(),
                    uri,
                );
            }
            serve(ctx, info, chain, tls, stop, logs).await
        }
    }
}

/// Whether the chain `chain` of `listener` now logs otherwise than `manager`: some HTTP chain
/// of that name is there and none has `manager`'s access logs. A chain gone is the listener's
/// business (it drains when its address goes).
fn access_logs_changed(
    runtime: &Runtime,
    listener: &str,
    chain: &str,
    manager: &HttpManager,
) -> bool {
    let Some(listener) = runtime.listeners.get(listener) else {
        return false;
    };
    let mut named = listener
        .chains
        .iter()
        .filter(|c| c.name == chain)
        .filter_map(|c| match &c.filter {
            NetworkFilter::Http(m) => Some(&m.access_logs),
            NetworkFilter::Tcp(_) | NetworkFilter::Close => None,
        })
        .peekable();
    named.peek().is_some() && named.all(|logs| *logs != manager.access_logs)
}

/// The connection manager of the one HTTP chain named `chain` in `listener`, if there is
/// exactly one.
fn current_manager(runtime: &Runtime, listener: &str, chain: &str) -> Option<HttpManager> {
    let mut named = (runtime.listeners.get(listener)?.chains.iter())
        .filter(|c| c.name == chain)
        .filter_map(|c| match &c.filter {
            NetworkFilter::Http(m) => Some(m),
            NetworkFilter::Tcp(_) | NetworkFilter::Close => None,
        });
    match (named.next(), named.next()) {
        (Some(one), None) => Some(one.clone()),
        _ => None,
    }
}

/// Why a downstream handshake failed, as a metric label.
fn handshake_failure(e: &std::io::Error) -> &'static str {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::NoCertificatesPresented) => "no_certificate",
        Some(rustls::Error::InvalidCertificate(_)) => "bad_certificate",
        Some(rustls::Error::InvalidMessage(_)) => "not_tls",
        _ => "other",
    }
}

/// The chain that takes a connection to `destination`, chosen as Envoy chooses (see
/// [`ChainSelector`](crate::config::ChainSelector)). The first bytes are peeked at only when the
/// candidates left depend on them: for a ClientHello when some match the transport protocol,
/// for an HTTP request when some match application protocols on a port the HTTP inspector
/// runs on. Envoy runs its inspectors on every connection; the chain is the same, but a silent
/// connection that no chain needs to inspect is not held up here.
async fn choose_chain(
    listener: &ListenerConfig,
    stream: &TcpStream,
    destination: SocketAddr,
) -> Result<FilterChain, ConnError> {
    let selector = &listener.selector;
    let filters = &listener.filters;
    let chosen = |index: Option<usize>| {
        index
            .or(selector.default_chain())
            .and_then(|i| listener.chains.get(i))
            .cloned()
            .ok_or(ConnError::NoChain)
    };
    let Some(transports) = selector.by_destination(destination) else {
        return chosen(None);
    };
    // The listener filters' timeout runs from accept for all inspection together.
    let mut peek = detect::Peek::new(stream, filters.timeout);
    let silent = |silent: detect::Silent| match silent {
        detect::Silent::TimedOut if filters.continue_on_timeout => Ok(()),
        detect::Silent::TimedOut => Err(ConnError::DetectTimeout),
        detect::Silent::Io(e) => Err(ConnError::Io(e)),
    };
    let transport = if transports.detects() {
        match peek.first().await {
            Ok(bytes) if bytes.first().is_some_and(|b| detect::is_tls(*b)) => {
                TransportProtocol::Tls
            }
            Ok(_) => TransportProtocol::RawBuffer,
            Err(e) => {
                silent(e)?;
                TransportProtocol::RawBuffer
            }
        }
    } else {
        TransportProtocol::RawBuffer
    };
    let Some(applications) = transports.by_transport(transport) else {
        return chosen(None);
    };
    let inspects_http = filters
        .http_inspector
        .as_ref()
        .is_some_and(|ports| ports.contains(destination.port()));
    let mut application = None;
    // Envoy's HTTP inspector leaves a connection already found to be TLS alone.
    if applications.detects() && inspects_http && transport == TransportProtocol::RawBuffer {
        let mut seen = peek.first().await;
        loop {
            match seen.map(detect::http) {
                Ok(detect::Http::Incomplete) => seen = peek.more().await,
                Ok(detect::Http::Found(protocol)) => {
                    application = Some(protocol);
                    break;
                }
                Ok(detect::Http::Other) => break,
                Err(e) => {
                    silent(e)?;
                    break;
                }
            }
        }
    }
    chosen(applications.by_application(application))
}

async fn serve<I>(
    ctx: Arc<Context>,
    info: ConnInfo,
    chain: FilterChain,
    io: I,
    stop: watch::Receiver<bool>,
    logs: watch::Receiver<u64>,
) -> Result<(), ConnError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match chain.filter {
        NetworkFilter::Close => Ok(()),
        NetworkFilter::Tcp(tcp) => tcp::proxy(&ctx, &info, &tcp, io).await.map_err(Into::into),
        NetworkFilter::Http(manager) => {
            serve_http(ctx, info, &chain.name, manager, io, stop, logs).await
        }
    }
}

/// Serves HTTP/1.1 and HTTP/2 on one connection until it ends, the listener goes (drain), its
/// chain's access logs change (drain; `changes` was subscribed before `manager` was read), or
/// a timeout of the connection manager closes it.
async fn serve_http<I>(
    ctx: Arc<Context>,
    info: ConnInfo,
    chain: &str,
    manager: HttpManager,
    io: I,
    mut stop: watch::Receiver<bool>,
    mut changes: watch::Receiver<u64>,
) -> Result<(), ConnError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Access logs changed while the chain was chosen or the TLS handshake ran: nothing has
    // been served yet, so the connection takes the chain's manager as it is now, as one
    // accepted now would. Where that is not one manager, the loop below drains it instead.
    let manager = match changes.has_changed() {
        Ok(true) => match current_manager(&ctx.state.runtime(), &info.listener, chain) {
            Some(now) => {
                changes.mark_unchanged();
                now
            }
            None => manager,
        },
        _ => manager,
    };
    let timeouts = manager.timeouts;
    let activity = idle::Activity::new();
    let io = idle::Watched::new(io, activity.clone(), timeouts.request_headers);
    let manager = Arc::new(manager);
    let info = Arc::new(info);
    let service = {
        let (ctx, info, manager, activity) =
            (ctx.clone(), info.clone(), manager.clone(), activity.clone());
        // Looked up once per connection: every response counts in it.
        let golden = ctx.metrics.http_manager(&manager.stat_prefix);
        // `None` unless the connection manager has an access log: then a request's only cost
        // is the check.
        let loggers = ctx
            .access_logs
            .loggers(&manager, &ctx.state.buckets)
            .map(|loggers| {
                let downstream = Arc::new(access_log::Downstream::new(
                    info.remote,
                    info.destination,
                    info.tls,
                    info.peer_identity.as_deref(),
                ));
                (loggers, downstream)
            });
        hyper::service::service_fn(move |request| {
            let started = Instant::now();
            let mut in_flight = activity.start_request();
            let golden = golden.clone();
            let (ctx, info, manager, activity) =
                (ctx.clone(), info.clone(), manager.clone(), activity.clone());
            // `None` too when the access logs' buckets keep the request out.
            let mut log = loggers.as_ref().and_then(|(loggers, downstream)| {
                access_log::Pending::admitted(loggers, downstream, &request, started.into_std())
            });
            async move {
                // The cluster, when it answered: its time is recorded with the response's.
                let mut answered = None;
                let mut idle_timeout = false;
                let handled = async {
                    match log.as_deref_mut() {
                        None => {
                            http::handle(
                                ctx.clone(),
                                info.clone(),
                                manager.clone(),
                                request,
                                started,
                                &mut answered,
                                None,
                            )
                            .await
                        }
                        Some(log) => {
                            let request = log.count(request);
                            http::handle(
                                ctx.clone(),
                                info.clone(),
                                manager.clone(),
                                request,
                                started,
                                &mut answered,
                                Some(&mut log.routed),
                            )
                            .await
                        }
                    }
                };
                let response = match timeouts.stream_idle {
                    None => handled.await?,
                    Some(quiet) => tokio::select! {
                        response = handled => response?,
                        () = activity.quiet_for(quiet) => {
                            ctx.metrics.timeout(&info.listener, &manager.stat_prefix, Timeout::StreamIdle);
                            idle_timeout = true;
                            // Envoy's router, whose idle timeout is the stream's, answers so.
                            http::local(::http::StatusCode::GATEWAY_TIMEOUT, "stream timeout")
                        }
                    },
                };
                if let Some(log) = log.as_deref_mut() {
                    if idle_timeout {
                        log.routed.flag = Some(access_log::Flag::StreamIdleTimeout);
                        log.routed.details = "stream_idle_timeout";
                    }
                    log.respond(response.status().as_u16(), response.headers());
                }
                golden.count(response.status().as_u16());
                let timer = golden.timer(started.into_std(), answered);
                in_flight.responded();
                Ok::<_, hyper::Error>(
                    response.map(|body| idle::Tracked::new(body, in_flight, timer, log)),
                )
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // HTTP/1: `http::handle` holds a request's headers to Envoy's limit; hyper reads heads up
    // to 4 KiB more (the `: ` and line ends of at most 100 headers) and answers a longer one
    // 431 itself, so only heads Envoy refuses too stop here. HTTP/2 keeps hyper's header list
    // limit (16 KiB).
    builder
        .http1()
        .max_buf_size(target::MAX_REQUEST_HEADERS + 4 * 1024);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let timed_out = |timeout| {
        ctx.metrics
            .timeout(&info.listener, &manager.stat_prefix, timeout);
    };
    let mut draining = false;
    let mut watching = true;
    let result = loop {
        let deadline = match activity.check(Instant::now(), timeouts.idle, timeouts.stream_idle) {
            idle::Check::Idle if !draining => {
                // HTTP/1.1: closed now; HTTP/2: GOAWAY, then closed.
                timed_out(Timeout::Idle);
                draining = true;
                conn.as_mut().graceful_shutdown();
                None
            }
            idle::Check::Idle => None,
            idle::Check::StreamIdle => {
                // Every request in flight is answering and none moved: as Envoy resets such
                // streams, the connection is closed under them.
                timed_out(Timeout::StreamIdle);
                return Ok(());
            }
            idle::Check::Wait(deadline) => deadline,
        };
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            changed = changes.changed(), if watching && !draining => {
                // A tap started or ended somewhere: the connection's requests follow the chain it was
                // opened under, so it is drained (HTTP/1.1: closed after the request in
                // flight; HTTP/2: GOAWAY) and the client's next request takes the new one, as
                // Envoy drains a changed chain's connections (`--drain-strategy immediate`).
                watching = changed.is_ok();
                let runtime = ctx.state.runtime();
                if watching && access_logs_changed(&runtime, &info.listener, chain, &manager) {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = sleep => {}
            () = activity.changed() => {}
        }
    };
    if activity.headers_timed_out() {
        timed_out(Timeout::RequestHeaders);
    }
    result.map_err(|e| ConnError::Http(e.to_string()))
}
