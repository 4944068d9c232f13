//! The ADS edge: one gRPC stream to the control plane at a time, delta or state of the world
//! as the bootstrap asks, driving the synchronous [`DeltaClient`] (or [`SotwClient`] on it); reconnects with jittered exponential backoff and publishes every accepted
//! configuration. While the control plane is unreachable, the last configuration keeps
//! serving (static stability) and [`XdsStatus`](crate::state::XdsStatus) says so.

#[cfg(test)]
mod tests;

use std::{future::Future, sync::Arc, time::Duration};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use tokio::sync::mpsc;

use crate::{
    bootstrap::{Bootstrap, XdsTls},
    state::State,
    xds::{Config, DeltaClient, Error, SotwClient},
};

/// The first reconnect waits up to this long; each failure doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Reconnects wait at most this long, so a returning control plane is found within it.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// HTTP/2 pings on the ADS connection, so a control plane that vanished without closing the
/// connection is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("connecting to {0}: {1}")]
    Connect(String, tonic::transport::Error),
    #[error("stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("the control plane closed the stream")]
    Closed,
    #[error("authorization metadata: {0}")]
    Metadata(String),
    #[error("xds tls: {0}")]
    Tls(String),
}

/// The ADS variant the bootstrap asks for, with its client state.
#[derive(Debug)]
enum Session {
    /// `DELTA_GRPC`: incremental.
    Delta(Box<DeltaClient>),
    /// `GRPC`: state of the world.
    Sotw(Box<SotwClient>),
}

/// The proxy's ADS session across streams.
pub struct Ads {
    bootstrap: Bootstrap,
    session: Session,
    state: Arc<State>,
}

/// The node the proxy presents to the control plane (ADS, the metrics service).
pub(crate) fn node(bootstrap: &Bootstrap) -> Node {
    Node {
        id: bootstrap.node_id.clone(),
        cluster: bootstrap.node_cluster.clone(),
        user_agent_name: "switchyard-proxy".to_owned(),
        user_agent_version_type: Some(
            envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
        ),
        ..Default::default()
    }
}

/// A new channel to the control plane, as the bootstrap's ADS service says (address, TLS,
/// connect timeout, keepalive), and its URI for logs.
pub(crate) async fn connect(
    bootstrap: &Bootstrap,
) -> Result<(tonic::transport::Channel, String), StreamError> {
    let uri = xds_uri(bootstrap);
    let endpoint = tonic::transport::Endpoint::from_shared(uri.clone())
        .map_err(|e| StreamError::Connect(uri.clone(), e))?
        .connect_timeout(bootstrap.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let channel = match &bootstrap.xds_tls {
        None => endpoint.connect().await,
        Some(tls) => {
            endpoint
                .connect_with_connector(TlsConnect::new(tls, bootstrap.connect_timeout)?)
                .await
        }
    }
    .map_err(|e| StreamError::Connect(uri.clone(), e))?;
    Ok((channel, uri))
}

/// The `authorization` value of a new stream. Read for every stream: a token file the kubelet
/// rotated applies on the next one.
pub(crate) fn authorization(bootstrap: &Bootstrap) -> Result<Option<Authorization>, StreamError> {
    let Some(credential) = &bootstrap.credential else {
        return Ok(None);
    };
    let value = credential
        .authorization()
        .map_err(|e| StreamError::Metadata(format!("reading the token: {e}")))?;
    value
        .parse::<Authorization>()
        .map(Some)
        .map_err(|_| StreamError::Metadata("not a valid header value".to_owned()))
}

impl Ads {
    pub fn new(bootstrap: Bootstrap, state: Arc<State>) -> Self {
        let node = node(&bootstrap);
        let session = if bootstrap.delta {
            Session::Delta(Box::new(DeltaClient::new(node)))
        } else {
            Session::Sotw(Box::new(SotwClient::new(node)))
        };
        Ads {
            bootstrap,
            session,
            state,
        }
    }

    /// Runs the session forever: stream, and on any failure wait and stream again.
    pub async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            let got_response = match self.stream().await {
                Ok(got) => got,
                Err((got, e)) => {
                    tracing::warn!(error = %e, "ADS stream ended");
                    self.state.xds.set_error(e.to_string());
                    got
                }
            };
            self.state.xds.set_connected(false);
            if got_response {
                failures = 0;
            }
            let wait = backoff(failures, fastrand::f64());
            failures = failures.saturating_add(1);
            tokio::time::sleep(wait).await;
        }
    }

    /// One stream, until it fails. Reports whether any response arrived (which resets the
    /// backoff: the control plane is there).
    async fn stream(&mut self) -> Result<bool, (bool, StreamError)> {
        let mut got = false;
        let result = self.stream_inner(&mut got).await;
        result.map(|()| got).map_err(|e| (got, e))
    }

    async fn stream_inner(&mut self, got: &mut bool) -> Result<(), StreamError> {
        let (channel, uri) = connect(&self.bootstrap).await?;
        let mut grpc = AggregatedDiscoveryServiceClient::new(channel);
        let authorization = authorization(&self.bootstrap)?;
        let state = &self.state;
        match &mut self.session {
            Session::Delta(client) => {
                let (tx, request) = open(client.as_mut(), authorization);
                let responses = grpc.delta_aggregated_resources(request).await?.into_inner();
                opened(state, &uri, "delta");
                follow(client.as_mut(), &tx, responses, state, got).await?;
            }
            Session::Sotw(client) => {
                let (tx, request) = open(client.as_mut(), authorization);
                let responses = grpc
                    .stream_aggregated_resources(request)
                    .await?
                    .into_inner();
                opened(state, &uri, "state of the world");
                follow(client.as_mut(), &tx, responses, state, got).await?;
            }
        }
        Err(StreamError::Closed)
    }
}

/// What the stream loop needs from a protocol variant's client core.
trait Protocol {
    type Request;
    type Response;
    fn initial_requests(&mut self) -> Vec<Self::Request>;
    /// Requests to send, why the response was rejected, whether the configuration changed.
    fn handle(&mut self, response: Self::Response) -> (Vec<Self::Request>, Option<Error>, bool);
    fn is_synced(&self) -> bool;
    fn config(&self) -> &Config;
}

impl Protocol for DeltaClient {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn initial_requests(&mut self) -> Vec<Self::Request> {
        DeltaClient::initial_requests(self)
    }

    fn handle(&mut self, response: Self::Response) -> (Vec<Self::Request>, Option<Error>, bool) {
        let outcome = self.handle_response(response);
        (outcome.requests, outcome.rejected, outcome.changed)
    }

    fn is_synced(&self) -> bool {
        DeltaClient::is_synced(self)
    }

    fn config(&self) -> &Config {
        DeltaClient::config(self)
    }
}

impl Protocol for SotwClient {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn initial_requests(&mut self) -> Vec<Self::Request> {
        SotwClient::initial_requests(self)
    }

    fn handle(&mut self, response: Self::Response) -> (Vec<Self::Request>, Option<Error>, bool) {
        let outcome = self.handle_response(response);
        (outcome.requests, outcome.rejected, outcome.changed)
    }

    fn is_synced(&self) -> bool {
        SotwClient::is_synced(self)
    }

    fn config(&self) -> &Config {
        SotwClient::config(self)
    }
}

pub(crate) type Authorization = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

/// The request stream of a new ADS stream, primed with the client's initial requests, and
/// the sender that feeds it.
fn open<P: Protocol>(
    client: &mut P,
    authorization: Option<Authorization>,
) -> (
    mpsc::UnboundedSender<P::Request>,
    tonic::Request<UnboundedStream<P::Request>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    for request in client.initial_requests() {
        // The receiver lives as long as the stream.
        let _ = tx.send(request);
    }
    let mut request = tonic::Request::new(UnboundedStream(rx));
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value);
    }
    (tx, request)
}

/// Handles every response of a stream until it ends.
async fn follow<P: Protocol>(
    client: &mut P,
    tx: &mpsc::UnboundedSender<P::Request>,
    mut responses: tonic::Streaming<P::Response>,
    state: &State,
    got: &mut bool,
) -> Result<(), tonic::Status> {
    while let Some(response) = responses.message().await? {
        *got = true;
        let (requests, rejected, changed) = client.handle(response);
        for request in requests {
            let _ = tx.send(request);
        }
        handled(
            state,
            rejected,
            changed,
            client.is_synced(),
            client.config(),
        );
    }
    Ok(())
}

fn opened(state: &State, uri: &str, variant: &str) {
    state.xds.record_stream();
    state.xds.set_connected(true);
    tracing::info!(control_plane = %uri, variant, "ADS stream open");
}

/// Bookkeeping after a response: counts, logs, and publishing what changed.
fn handled(state: &State, rejected: Option<Error>, changed: bool, synced: bool, config: &Config) {
    match rejected {
        Some(error) => {
            tracing::warn!(%error, "rejected an xDS response; keeping the last configuration");
            state.xds.record_rejected(error.to_string());
        }
        None => state.xds.record_accepted(),
    }
    if changed {
        state.xds.record_change();
        publish(state, config);
    }
    if synced && state.xds.mark_synced() {
        tracing::info!("configuration complete");
        // Publish even an unchanged (empty) configuration, so readiness and listeners follow
        // the first complete answer.
        publish(state, config);
    }
}

/// Links the accepted configuration into a runtime and swaps it in.
fn publish(state: &State, config: &Config) {
    let runtime = config.runtime();
    for warning in &runtime.warnings {
        tracing::debug!(%warning, "configuration warning");
    }
    state.publish(runtime);
}

/// A TLS stream to the control plane, as hyper reads it.
type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Dials the control plane over TLS (ALPN `h2`), verifying its certificate against the
/// bootstrap's roots for the bootstrap's server name.
#[derive(Clone)]
struct TlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
    timeout: Duration,
}

impl TlsConnect {
    /// The roots are read for every stream, as Envoy does when it builds a channel.
    fn new(tls: &XdsTls, timeout: Duration) -> Result<Self, StreamError> {
        use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
        let bad = |what: &str, e: &dyn std::fmt::Display| StreamError::Tls(format!("{what}: {e}"));
        let pem = tls.roots.read().map_err(|e| bad("root certificates", &e))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| bad("root certificates", &e))?;
            roots.add(cert).map_err(|e| bad("root certificate", &e))?;
        }
        if roots.is_empty() {
            return Err(bad("root certificates", &"no certificate in the PEM"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("tls configuration", &e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from(tls.server_name.clone())
            .map_err(|e| bad(&format!("server name {:?}", tls.server_name), &e))?;
        Ok(TlsConnect {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
            timeout,
        })
    }
}

impl tower::Service<http::Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = std::io::Result<TlsIo>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let connect = async {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                this.connector.connect(this.name.clone(), tcp).await
            };
            let tls = tokio::time::timeout(this.timeout, connect)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// `http://host:port`, with brackets around an IPv6 host.
fn xds_uri(b: &Bootstrap) -> String {
    let host = &b.xds.host;
    if host.contains(':') {
        format!("http://[{host}]:{}", b.xds.port)
    } else {
        format!("http://{host}:{}", b.xds.port)
    }
}

/// The wait before reconnect attempt `failures` (0-based): "full jitter" over an exponential
/// ceiling, so proxies that lost the same control plane do not return in lockstep. `jitter`
/// is uniform in [0, 1).
pub(crate) fn backoff(failures: u32, jitter: f64) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX))
        .min(BACKOFF_MAX);
    // Never zero: a control plane that accepts and drops at once must not be hammered.
    ceiling
        .mul_f64(jitter.clamp(0.0, 1.0))
        .max(Duration::from_millis(10))
}

/// An unbounded receiver as a stream (tokio-stream's wrapper needs a feature we do not use).
struct UnboundedStream<T>(mpsc::UnboundedReceiver<T>);

impl<T> tokio_stream::Stream for UnboundedStream<T> {
    type Item = T;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}
