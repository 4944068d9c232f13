//! The tonic ADS service: authenticates a stream, then drives a protocol state machine from
//! the proxy's requests and its (debounced) snapshot changes.

use std::{
    future::Future,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_server::{
            AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
        },
    },
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch},
    time::Instant,
};
use tokio_stream::{
    StreamExt,
    wrappers::{ReceiverStream, TcpListenerStream},
};
use tonic::{
    Request, Response, Status, Streaming,
    transport::server::{Connected, TcpConnectInfo},
};
use tracing::Instrument;

use crate::telemetry::{MetricsServer, Telemetry};

use envoy_types::pb::envoy::service::metrics::v3::metrics_service_server::MetricsServiceServer;

use super::{
    acked::{AckedConfig, AckedView},
    auth::Authenticate,
    delta::DeltaStream,
    metrics::{StreamGuard, XdsMetrics},
    snapshot::{Snapshot, TypeUrl},
    sotw::SotwStream,
    status::{ProxyStatuses, StatusEntry},
    store::{SnapshotStore, SnapshotSubscription},
    stream::{StreamError, TypeSync},
};

#[cfg(test)]
mod tests;

/// Tunables of the xDS server.
#[derive(Clone, Debug)]
pub struct XdsConfig {
    /// A snapshot change is pushed once no further change came for this long, so a burst of
    /// edits becomes one push.
    pub debounce: Duration,
    /// ...but no later than this after the first change of a burst, so a steady stream of
    /// edits still gets pushed.
    pub max_delay: Duration,
    /// How long a new stream may take to send its first request (which carries the node).
    pub first_request_timeout: Duration,
    /// HTTP/2 keepalive pings, so a vanished proxy's stream is closed.
    pub keepalive_interval: Duration,
    /// Streams open at once, all connections together; beyond it a new stream is refused
    /// with `RESOURCE_EXHAUSTED` (default 16,384).
    pub max_streams: usize,
    /// Streams whose credentials are being checked at once (a TokenReview each, in a
    /// cluster); beyond it a new stream is refused with `RESOURCE_EXHAUSTED` (default 256).
    pub max_verifying: usize,
}

/// Streams one HTTP/2 connection may carry at once: 128. A proxy opens one; a client that
/// multiplexes many proxies (the fan-out benchmark: 50) stays under it.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// What a client may send on one stream before the server reads it: 64 KiB. A stream is read
/// only once its credentials are verified, so this is all an unauthenticated stream can make
/// the server hold. Discovery requests are small; a larger one just waits for window updates.
const STREAM_WINDOW_BYTES: u32 = 64 * 1024;
/// The same for a whole connection: 1 MiB.
const CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
/// Request headers, the bearer token among them: 16 KiB (a ServiceAccount token is ~1 KiB).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// The ADS service. Cheap to clone.
#[derive(Clone)]
pub struct XdsServer {
    store: SnapshotStore,
    auth: Arc<dyn Authenticate>,
    config: XdsConfig,
    metrics: Arc<XdsMetrics>,
    statuses: Arc<ProxyStatuses>,
    /// The golden metrics the proxies push on the same port (`MetricsService`).
    telemetry: Arc<Telemetry>,
    /// The tap sessions the tapped proxies' requests go to (`AccessLogService`).
    taps: Arc<crate::tap::Hub>,
    /// Identities for the tap's events; empty until [`XdsServer::with_taps`].
    peers: crate::edges::SharedPeers,
    drain: Arc<watch::Sender<bool>>,
    /// [`XdsConfig::max_streams`] permits; an open stream holds one.
    streams: Arc<Semaphore>,
    /// [`XdsConfig::max_verifying`] permits; held from a stream's arrival to its authentication.
    verifying: Arc<Semaphore>,
}

/// Ends every open stream of a server, so a graceful shutdown does not wait on them forever.
#[derive(Clone, Debug)]
pub struct DrainHandle(Arc<watch::Sender<bool>>);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to bind the xds listener on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },

    #[error("xds server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What the stream loop needs from a protocol variant (SotW or delta).
pub(crate) trait Protocol: Send + Sized + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    const NAME: &'static str;

    fn start(node: &Node) -> Self;
    fn node(req: &Self::Request) -> Option<&Node>;
    fn is_nack(req: &Self::Request) -> bool;
    /// The type and the resource names a request asks for (newly, for delta).
    fn requested(req: &Self::Request) -> (&str, &[String]);
    fn handle_request(&mut self, req: Self::Request) -> Result<Vec<Self::Response>, StreamError>;
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<Self::Response>;
    /// The type a response carries, for the per-type push counters.
    fn response_type(resp: &Self::Response) -> &str;
    /// Where a type stands with the proxy, for [`ProxyStatuses`].
    fn sync(&self, type_url: TypeUrl) -> TypeSync;
    /// What the proxy runs of a type, for [`ProxyStatuses`].
    fn acked(&self, type_url: TypeUrl) -> &AckedConfig;

    /// Both, as [`StatusEntry::update`] takes them.
    fn live(&self, type_url: TypeUrl) -> (TypeSync, AckedView) {
        (self.sync(type_url), self.acked(type_url).view())
    }
}

type ResponseStream<R> = ReceiverStream<Result<R, Status>>;

/// Binds `addr` and serves ADS until `shutdown` completes; open streams are then ended so
/// proxies reconnect elsewhere.
pub async fn serve(
    addr: SocketAddr,
    store: SnapshotStore,
    auth: Arc<dyn Authenticate>,
    config: XdsConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!(%addr, "serving xds");
    serve_listener(listener, XdsServer::new(store, auth, config), shutdown).await
}

/// Serves ADS in plaintext (h2c) on a bound listener (tests bind port 0 and read the address
/// first). Envoy sends its token only over TLS: real proxies need [`serve_listener_tls`].
pub async fn serve_listener(
    listener: TcpListener,
    server: XdsServer,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_incoming(TcpListenerStream::new(listener), server, shutdown).await
}

/// Serves ADS over TLS on a bound listener: the stream carries the proxies' private keys and
/// their tokens, and Envoy's gRPC client sends call credentials only on a secure channel.
/// `tls` chooses the certificate per handshake (a reloader); ALPN is `h2` only.
pub async fn serve_listener_tls(
    listener: TcpListener,
    server: XdsServer,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let (tx, rx) = mpsc::channel(64);
    let accept = tokio::spawn(accept_tls(
        listener,
        tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        tx,
    ));
    let served = serve_incoming(ReceiverStream::new(rx), server, shutdown).await;
    accept.abort();
    served
}

/// TLS handshakes in progress at once; further connections wait in the listen backlog.
const MAX_HANDSHAKES: usize = 256;
/// A peer that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections and hands each to the server once its handshake is done, so a slow
/// handshake holds up nobody else.
async fn accept_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<std::io::Result<TlsConn>>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    while !tx.is_closed() {
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(%error, "xds accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(Ok(TlsConn(tls))).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "xds tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "xds tls handshake timed out"),
            }
        });
    }
}

/// A TLS connection as tonic serves it.
struct TlsConn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Serves ADS on the connections `incoming` yields.
async fn serve_incoming<S, IO, IE>(
    incoming: S,
    server: XdsServer,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError>
where
    S: tokio_stream::Stream<Item = Result<IO, IE>> + Send,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let drain = server.drain_handle();
    let keepalive = server.config.keepalive_interval;
    let shutdown = async move {
        shutdown.await;
        drain.drain();
    };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(keepalive))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .add_service(server.metrics_service())
        .add_service(server.access_log_service())
        .add_service(server.into_service())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

// === impl XdsConfig ===

impl Default for XdsConfig {
    fn default() -> Self {
        let debounce = Duration::from_millis(50);
        XdsConfig {
            debounce,
            max_delay: debounce * 10,
            first_request_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            max_streams: 16_384,
            max_verifying: 256,
        }
    }
}

// === impl XdsServer ===

impl XdsServer {
    pub fn new(store: SnapshotStore, auth: Arc<dyn Authenticate>, config: XdsConfig) -> Self {
        XdsServer {
            store,
            auth,
            streams: Arc::new(Semaphore::new(config.max_streams)),
            verifying: Arc::new(Semaphore::new(config.max_verifying)),
            config,
            metrics: Arc::default(),
            statuses: Arc::default(),
            telemetry: Arc::default(),
            taps: Arc::default(),
            peers: crate::edges::SharedPeers::default(),
            drain: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Names the identities in tap events from what the publisher compiled, and hands the
    /// tapped proxies' requests to the publisher's tap sessions.
    #[must_use]
    pub fn with_taps(
        mut self,
        hub: Arc<crate::tap::Hub>,
        peers: crate::edges::SharedPeers,
    ) -> Self {
        self.taps = hub;
        self.peers = peers;
        self
    }

    /// The tap sessions, which say what the publisher must tap.
    pub fn taps(&self) -> Arc<crate::tap::Hub> {
        self.taps.clone()
    }

    /// The `AccessLogService` beside ADS: tapped proxies' requests, from streams
    /// authenticated as ADS streams are, to [`XdsServer::taps`]; ended by the same drain.
    pub fn access_log_service(
        &self,
    ) -> envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::AccessLogServiceServer<
        crate::tap::AccessLogServer,
    >{
        crate::tap::AccessLogServer::new(
            self.auth.clone(),
            self.taps.clone(),
            self.peers.clone(),
            self.drain.subscribe(),
        )
        .into_service()
    }

    /// Records pushed golden metrics into `telemetry` (shared with a server started before
    /// this one) instead of a store of its own.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    pub fn metrics(&self) -> Arc<XdsMetrics> {
        self.metrics.clone()
    }

    /// Where every connected proxy stands, per xDS type.
    pub fn statuses(&self) -> Arc<ProxyStatuses> {
        self.statuses.clone()
    }

    /// The golden metrics the proxies pushed, in sliding windows.
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// The `MetricsService` beside ADS: streams authenticated as ADS streams are, recorded
    /// into [`XdsServer::telemetry`], ended by the same drain.
    pub fn metrics_service(&self) -> MetricsServiceServer<MetricsServer> {
        MetricsServer::new(
            self.auth.clone(),
            self.telemetry.clone(),
            self.drain.subscribe(),
        )
        .into_service()
    }

    pub fn drain_handle(&self) -> DrainHandle {
        DrainHandle(self.drain.clone())
    }

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }

    /// Verifies the credentials, then reads the first request, authenticates its node, and
    /// spawns the stream's task. Nothing of a stream is read before its credentials verify.
    async fn open<P: Protocol>(
        &self,
        request: Request<Streaming<P::Request>>,
    ) -> Result<Response<ResponseStream<P::Response>>, Status> {
        let (Ok(slot), Ok(verifying)) = (
            self.streams.clone().try_acquire_owned(),
            self.verifying.clone().try_acquire_owned(),
        ) else {
            tracing::info!(
                max_streams = self.config.max_streams,
                max_verifying = self.config.max_verifying,
                "refused xds stream: too many open"
            );
            return Err(Status::resource_exhausted("too many xds streams"));
        };
        let (metadata, _, mut inbound) = request.into_parts();
        let refused = |status: Status, node: Option<&Node>| {
            self.metrics.auth_failed();
            let (code, detail) = (status.code(), status.message());
            let node = node.map(|n| n.id.as_str()).unwrap_or_default();
            tracing::info!(node, ?code, detail, "refused xds stream");
            status
        };
        match tokio::time::timeout(
            self.config.first_request_timeout,
            self.auth.verify(&metadata),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(status)) => return Err(refused(status, None)),
            Err(_) => {
                let status = Status::unavailable("credentials not verified in time");
                return Err(refused(status, None));
            }
        }
        let first =
            match tokio::time::timeout(self.config.first_request_timeout, inbound.next()).await {
                Err(_) => return Err(Status::deadline_exceeded("no discovery request in time")),
                Ok(None) => return Err(Status::cancelled("stream closed before any request")),
                Ok(Some(result)) => result?,
            };
        let node = P::node(&first).ok_or(StreamError::MissingNode)?;
        let key = match self.auth.authenticate(&metadata, node).await {
            Ok(key) => key,
            Err(status) => return Err(refused(status, Some(node))),
        };
        drop(verifying);
        let span = tracing::info_span!("xds", proxy = %key, protocol = P::NAME, node = %node.id);
        let machine = P::start(node);
        let (tx, rx) = mpsc::channel(16);
        let task = StreamTask {
            _connected: self.metrics.stream_opened(),
            _slot: slot,
            status: self.statuses.open(&key, node, P::NAME),
            snapshots: self.store.subscribe(key),
            tx,
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            drain: self.drain.subscribe(),
            refused: Default::default(),
        };
        tokio::spawn(
            async move {
                tracing::debug!("stream opened");
                task.run(machine, first, inbound).await;
                tracing::debug!("stream closed");
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl std::fmt::Debug for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.open::<SotwStream>(request).await
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.open::<DeltaStream>(request).await
    }
}

// === impl DrainHandle ===

impl DrainHandle {
    pub fn drain(&self) {
        self.0.send_replace(true);
    }
}

// === StreamTask ===

struct StreamTask<R> {
    /// First, so the stream stops counting as connected before its response channel closes.
    _connected: StreamGuard,
    /// The stream's share of [`XdsConfig::max_streams`].
    _slot: OwnedSemaphorePermit,
    /// The stream's line in [`ProxyStatuses`].
    status: StatusEntry,
    snapshots: SnapshotSubscription,
    tx: mpsc::Sender<Result<R, Status>>,
    config: XdsConfig,
    metrics: Arc<XdsMetrics>,
    drain: watch::Receiver<bool>,
    /// Secret names this stream was refused, so each is logged and counted once.
    refused: std::collections::BTreeSet<String>,
}

/// When the pending snapshot change goes out.
#[derive(Clone, Copy)]
struct Debounce {
    first_change: Instant,
    fire_at: Instant,
}

impl<R: Send + 'static> StreamTask<R> {
    async fn run<P: Protocol<Response = R>>(
        mut self,
        mut machine: P,
        first: P::Request,
        mut inbound: Streaming<P::Request>,
    ) {
        // The snapshot present at connect time answers the first request directly; only later
        // changes are debounced. Nothing is requested yet, so this emits nothing.
        if let Some(snapshot) = self.snapshots.latest() {
            let none = machine.on_snapshot(snapshot);
            debug_assert!(none.is_empty());
        }
        if !self.handle(&mut machine, first).await {
            return;
        }

        let mut debounce: Option<Debounce> = None;
        let mut watching = true;
        loop {
            let fire_at = debounce.map(|d| d.fire_at);
            let fire = async move {
                match fire_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let mut fire = pin!(fire);
            tokio::select! {
                biased;
                _ = draining(&mut self.drain) => {
                    tracing::debug!("draining");
                    return;
                }
                req = inbound.next() => match req {
                    Some(Ok(req)) => {
                        if !self.handle(&mut machine, req).await {
                            return;
                        }
                    }
                    Some(Err(status)) => {
                        tracing::debug!(code = ?status.code(), detail = status.message(),
                            "stream failed");
                        return;
                    }
                    None => return,
                },
                changed = self.snapshots.changed(), if watching => {
                    if !changed {
                        watching = false;
                        continue;
                    }
                    let now = Instant::now();
                    let first_change = debounce.map_or(now, |d| d.first_change);
                    let fire_at = (now + self.config.debounce)
                        .min(first_change + self.config.max_delay);
                    debounce = Some(Debounce { first_change, fire_at });
                }
                () = &mut fire => {
                    debounce = None;
                    // `None` means the proxy was removed: keep serving what it has.
                    if let Some(snapshot) = self.snapshots.latest() {
                        let responses = machine.on_snapshot(snapshot);
                        let sent = self.send::<P>(responses).await;
                        self.status.update(|t| machine.live(t));
                        if !sent {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Returns `false` when the stream must end.
    async fn handle<P: Protocol<Response = R>>(
        &mut self,
        machine: &mut P,
        req: P::Request,
    ) -> bool {
        if P::is_nack(&req) {
            self.metrics.nacked();
        }
        self.check_secrets::<P>(&req);
        match machine.handle_request(req) {
            Ok(responses) => {
                let sent = self.send::<P>(responses).await;
                self.status.update(|t| machine.live(t));
                sent
            }
            Err(error) => {
                tracing::info!(%error, "closing xds stream");
                let _ = self.tx.send(Err(error.into())).await;
                false
            }
        }
    }

    /// A proxy is only ever given its own identity's secrets (its snapshot holds no others), so
    /// asking for any other secret is either a misconfiguration or a probe: it gets nothing,
    /// and it is logged.
    fn check_secrets<P: Protocol<Response = R>>(&mut self, req: &P::Request) {
        let (type_url, names) = P::requested(req);
        if TypeUrl::from_type_url(type_url) != Some(TypeUrl::Secret) {
            return;
        }
        let snapshot = self.snapshots.latest();
        // `*` asks for whatever is this proxy's, which is what it gets.
        for name in names.iter().filter(|n| n.as_str() != "*") {
            let held = snapshot
                .as_ref()
                .is_some_and(|s| s.get(TypeUrl::Secret, name).is_some());
            if !held && self.refused.insert(name.clone()) {
                self.metrics.secret_refused();
                tracing::warn!(secret = %name, "refused a secret request: not this proxy's identity");
            }
        }
    }

    async fn send<P: Protocol<Response = R>>(&mut self, responses: Vec<R>) -> bool {
        for response in responses {
            let type_url = TypeUrl::from_type_url(P::response_type(&response));
            if self.tx.send(Ok(response)).await.is_err() {
                return false;
            }
            self.metrics.pushed(type_url);
        }
        true
    }
}

/// Completes once the server drains, or is gone.
async fn draining(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|draining| *draining).await;
}

// === impl Protocol ===

impl Protocol for SotwStream {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NAME: &'static str = "sotw";

    fn start(node: &Node) -> Self {
        SotwStream::new(node)
    }

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn is_nack(req: &DiscoveryRequest) -> bool {
        req.error_detail.is_some()
    }

    fn requested(req: &DiscoveryRequest) -> (&str, &[String]) {
        (&req.type_url, &req.resource_names)
    }

    fn handle_request(
        &mut self,
        req: DiscoveryRequest,
    ) -> Result<Vec<DiscoveryResponse>, StreamError> {
        SotwStream::handle_request(self, req)
    }

    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DiscoveryResponse> {
        SotwStream::on_snapshot(self, snapshot)
    }

    fn response_type(resp: &DiscoveryResponse) -> &str {
        &resp.type_url
    }

    fn sync(&self, type_url: TypeUrl) -> TypeSync {
        SotwStream::sync(self, type_url)
    }

    fn acked(&self, type_url: TypeUrl) -> &AckedConfig {
        SotwStream::acked(self, type_url)
    }
}

impl Protocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";

    fn start(node: &Node) -> Self {
        DeltaStream::new(node)
    }

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn is_nack(req: &DeltaDiscoveryRequest) -> bool {
        req.error_detail.is_some()
    }

    fn requested(req: &DeltaDiscoveryRequest) -> (&str, &[String]) {
        (&req.type_url, &req.resource_names_subscribe)
    }

    fn handle_request(
        &mut self,
        req: DeltaDiscoveryRequest,
    ) -> Result<Vec<DeltaDiscoveryResponse>, StreamError> {
        DeltaStream::handle_request(self, req)
    }

    fn response_type(resp: &DeltaDiscoveryResponse) -> &str {
        &resp.type_url
    }

    fn sync(&self, type_url: TypeUrl) -> TypeSync {
        DeltaStream::sync(self, type_url)
    }

    fn acked(&self, type_url: TypeUrl) -> &AckedConfig {
        DeltaStream::acked(self, type_url)
    }

    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DeltaDiscoveryResponse> {
        DeltaStream::on_snapshot(self, snapshot)
    }
}
