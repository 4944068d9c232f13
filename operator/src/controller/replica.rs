//! How operator replicas reach and trust each other on the webhook port, for the aggregated
//! APIs whose answer needs every replica's share (a proxy pushes its access log and its
//! metrics to one replica): the tap API ([`super::tap_api`]) and the Traffic Metrics API
//! ([`super::metrics_api`]).
//!
//! ```text
//!  replica A ──HTTPS podIP:9443, client cert = the webhook's own──▶ replica B
//!    GET /replica/tap?…      (tap_api::REPLICA_TAP_PATH)      B checks same_key ─▶ B's share only
//!    GET /replica/metrics?…  (metrics_api::REPLICA_METRICS_PATH)
//! ```
//!
//! The other replicas are the operator's other Pods that serve ([`serving_peers`]: Ready, not
//! being deleted, with an IP), found by a [`PeerSource`]. Replicas trust each other by the
//! certificate they all mount: a request under [`REPLICA_PREFIX`] is served only when the
//! client's certificate has the public key of the certificate this replica serves
//! ([`same_key`]); the client likewise accepts only a peer serving that key
//! ([`replica_client_config`]). What to do with a peer that fails is each API's choice (both
//! log it and go on without it).

#[cfg(test)]
pub(crate) mod tests;

use std::{
    fmt,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::Response;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::{
        ResolvesClientCert,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime},
    sign::CertifiedKey,
};

use super::metrics_api::serving;
use crate::webhook::CertReloader;

/// Where every replica-to-replica path starts.
pub const REPLICA_PREFIX: &str = "/replica/";
/// A peer must accept the connection and answer the request's head within this: 5 s.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a replica-to-replica request was refused (401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerAuthError {
    #[error("no client certificate: only another operator replica may call {REPLICA_PREFIX}…")]
    NoCertificate,
    #[error(
        "client certificate is not this operator's serving certificate: only another operator replica may call {REPLICA_PREFIX}…"
    )]
    NotAReplica,
}

/// The public key (SubjectPublicKeyInfo, DER) of a certificate.
fn public_key(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.public_key().raw.to_vec())
}

/// Checks that `peer` (the client's chain, leaf first, whose key its handshake proved) has the
/// public key of `own`, the certificate this replica serves: every replica mounts the same
/// Secret, and no one else holds its key.
///
/// # Errors
///
/// See [`PeerAuthError`].
pub fn same_key(
    peer: Option<&[CertificateDer<'_>]>,
    own: &CertifiedKey,
) -> Result<(), PeerAuthError> {
    let leaf = peer
        .and_then(<[_]>::first)
        .ok_or(PeerAuthError::NoCertificate)?;
    let own = own.cert.first().and_then(public_key);
    match (public_key(leaf), own) {
        (Some(theirs), Some(ours)) if theirs == ours => Ok(()),
        _ => Err(PeerAuthError::NotAReplica),
    }
}

/// The client side of [`same_key`]: presents the serving certificate, and accepts only a peer
/// that serves one with the same key.
#[derive(Debug)]
struct ReplicaTls {
    tls: Arc<CertReloader>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ResolvesClientCert for ReplicaTls {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.tls.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ServerCertVerifier for ReplicaTls {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        same_key(Some(&chain), &self.tls.current())
            .map(|()| ServerCertVerified::assertion())
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS client configuration replicas call each other with (HTTP/1.1).
///
/// # Errors
///
/// rustls refuses the protocol versions (never with ring).
pub fn replica_client_config(tls: &Arc<CertReloader>) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = rustls::crypto::ring::default_provider();
    let replica = Arc::new(ReplicaTls {
        tls: Arc::clone(tls),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(replica.clone())
        .with_client_cert_resolver(replica);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Another serving replica.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// The Pod's name, for logs.
    pub name: String,
    /// Its webhook port at its Pod IP.
    pub addr: SocketAddr,
}

/// The other replicas of `pods` that serve ([`serving`]) and have an IP, on `port`.
pub fn serving_peers(pods: &[Pod], me: &str, port: u16) -> Vec<Peer> {
    let mut peers: Vec<Peer> = pods
        .iter()
        .filter(|pod| pod.metadata.name.as_deref() != Some(me) && serving(pod))
        .filter_map(|pod| {
            let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
            Some(Peer {
                name: pod.metadata.name.clone().unwrap_or_default(),
                addr: SocketAddr::new(ip, port),
            })
        })
        .collect();
    peers.sort();
    peers
}

/// Finds the other replicas.
pub trait PeerSource: Send + Sync + fmt::Debug {
    fn peers(&self) -> BoxFuture<'_, Result<Vec<Peer>, String>>;
}

/// [`PeerSource`] from the operator's Pods in its namespace.
#[derive(Clone)]
pub struct KubePeers {
    pub client: Client,
    pub namespace: String,
    /// This replica's Pod name.
    pub me: String,
    /// The webhook port.
    pub port: u16,
}

impl fmt::Debug for KubePeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubePeers")
            .field("namespace", &self.namespace)
            .field("me", &self.me)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl PeerSource for KubePeers {
    fn peers(&self) -> BoxFuture<'_, Result<Vec<Peer>, String>> {
        Box::pin(async move {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
            let params = ListParams::default().labels(&crate::install::selector());
            let list = tokio::time::timeout(PEER_CONNECT_TIMEOUT, pods.list(&params))
                .await
                .map_err(|_| format!("listing pods in {}: timed out", self.namespace))?
                .map_err(|e| format!("listing pods in {}: {e}", self.namespace))?;
            Ok(serving_peers(&list.items, &self.me, self.port))
        })
    }
}

/// Aborts the task when dropped (with what it serves: a tap's body, a peer's connection).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `GET path_and_query` to `peer` over TLS with `config` ([`replica_client_config`]),
/// within [`PEER_CONNECT_TIMEOUT`] up to the answer's head: the answer, and the connection,
/// which ends when that is dropped.
///
/// # Errors
///
/// The connection, the handshake or the request failed or timed out, named.
pub(crate) async fn get(
    peer: &Peer,
    config: Arc<ClientConfig>,
    path_and_query: &str,
) -> Result<(Response<Incoming>, AbortOnDrop), String> {
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(peer.addr)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let name = ServerName::IpAddress(peer.addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("http: {e}"))?;
        let connection = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));
        let request = http::Request::get(path_and_query)
            .header(http::header::HOST, peer.addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        Ok::<_, String>((response, connection))
    };
    tokio::time::timeout(PEER_CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| format!("no answer within {PEER_CONNECT_TIMEOUT:?}"))?
}
