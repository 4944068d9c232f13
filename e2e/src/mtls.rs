//! A mesh workload's certificate, fetched as its proxy fetches it (SDS over ADS with the Pod's
//! token), and a TLS client that holds it: what tests use to speak to a sidecar's inbound port
//! as that workload with bytes of their own choosing, with no client-side proxy in between to
//! parse or normalize them.

#![allow(
    clippy::expect_used,
    reason = "test harness: a panic is the test's failure report"
)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

use envoy_types::pb::envoy::{
    config::core::v3::{Node, data_source},
    extensions::transport_sockets::tls::v3::{Secret, secret},
    service::discovery::v3::{
        DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use prost::Message as _;
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _},
};
use tokio_stream::wrappers::ReceiverStream;

use crate::mesh::Mesh;

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// How long a raw exchange may wait for the server.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A workload's certificate chain and key, from the control plane's SDS, and TLS clients that
/// present them.
#[derive(Clone)]
pub struct WorkloadIdentity {
    /// The secret's name: the workload's SPIFFE ID.
    pub spiffe_id: String,
    /// ALPN `http/1.1`; one configuration for every connection, so that they resume sessions.
    http1: Arc<rustls::ClientConfig>,
    /// ALPN `h2`.
    http2: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .finish_non_exhaustive()
    }
}

/// The certificate and key the control plane serves Pod `demo/<pod>`'s proxy: asked for over
/// ADS (state of the world, every secret of the node) with the node and token of its
/// bootstrap, as its proxy asks.
///
/// # Panics
///
/// When the control plane sends no certificate within 10 s.
pub fn workload_identity(mesh: &Mesh, pod: &str) -> WorkloadIdentity {
    let bootstrap = mesh.bootstrap(pod);
    let node = Node {
        id: bootstrap["node"]["id"]
            .as_str()
            .expect("bootstrap node.id")
            .to_owned(),
        cluster: bootstrap["node"]["cluster"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        ..Default::default()
    };
    let authorization = format!("Bearer {}", mesh.token(pod));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let channel = mesh.xds_channel().await;
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(DiscoveryRequest {
            node: Some(node),
            type_url: SECRET_TYPE.to_owned(),
            resource_names: vec!["*".to_owned()],
            ..Default::default()
        })
        .await
        .expect("queue the request");
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "authorization",
            authorization.parse().expect("a metadata value"),
        );
        let mut stream = client
            .stream_aggregated_resources(request)
            .await
            .expect("an ADS stream")
            .into_inner();
        let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the secrets within 10 s")
            .expect("an ADS response")
            .expect("an open ADS stream");
        for any in &response.resources {
            let secret = Secret::decode(any.value.as_slice()).expect("a Secret");
            if let Some(secret::Type::TlsCertificate(c)) = secret.r#type {
                let chain = inline(c.certificate_chain.and_then(|d| d.specifier));
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(chain.as_bytes())
                        .collect::<Result<_, _>>()
                        .expect("a PEM certificate chain");
                let key = inline(c.private_key.and_then(|d| d.specifier));
                return WorkloadIdentity {
                    spiffe_id: secret.name,
                    http1: client_config(&chain, &key, b"http/1.1"),
                    http2: client_config(&chain, &key, b"h2"),
                };
            }
        }
        panic!("no certificate among {pod}'s secrets");
    })
}

/// Whether `received` holds a whole response with a `content-length`.
fn complete(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..end]);
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    length.is_some_and(|n| received.len() >= end + 4 + n)
}

fn inline(specifier: Option<data_source::Specifier>) -> String {
    match specifier {
        Some(data_source::Specifier::InlineString(s)) => s,
        Some(data_source::Specifier::InlineBytes(b)) => String::from_utf8(b).expect("PEM is ASCII"),
        other => panic!("a secret that is not inline: {other:?}"),
    }
}

/// A TLS 1.3 client configuration presenting `chain` and `key_pem` and offering `alpn`. The
/// server's certificate is not checked against a name: these clients test the server's policy,
/// not its identity.
fn client_config(
    chain: &[CertificateDer<'static>],
    key_pem: &str,
    alpn: &[u8],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(
            chain.to_vec(),
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("a PEM key"),
        )
        .expect("a client certificate");
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

impl WorkloadIdentity {
    /// Sends `request` as it is over a new HTTP/1.1 (ALPN `http/1.1`) TLS connection to
    /// `addr` and reads one response: until its `content-length` is in, or the server closes
    /// the connection, or 5 s pass. What came back.
    ///
    /// # Errors
    ///
    /// The connection or the handshake fails.
    pub fn exchange(&self, addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
        let config = self.http1.clone();
        let name = ServerName::try_from("mesh.invalid").expect("a server name");
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        // The handshake's last flight and the request are separate small writes: with
        // Nagle's algorithm the request would wait for the server's delayed ACK.
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(READ_TIMEOUT))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(request)?;
        tls.flush()?;
        let mut received = Vec::new();
        let mut buf = [0; 16 * 1024];
        // Envoy waits a while for the client to close after a response it closes the
        // connection on (its delayed close): the response's own length says when it is in.
        while !complete(&received) {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                // A close without close_notify, or the read timeout, after what did arrive.
                Err(_) if !received.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(received)
    }

    /// Sends `request` (no body) over a new HTTP/2 (ALPN `h2`) TLS connection to `addr`: the
    /// response's status, or what went wrong (a refused or reset stream).
    pub async fn h2_request(
        &self,
        addr: SocketAddr,
        request: http::Request<()>,
    ) -> Result<u16, String> {
        let connector = tokio_rustls::TlsConnector::from(self.http2.clone());
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let name = ServerName::try_from("mesh.invalid").expect("a server name");
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, connection) = h2::client::handshake(tls)
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        let exchange = async {
            let (response, _) = send
                .send_request(request, true)
                .map_err(|e| e.to_string())?;
            let response = response.await.map_err(|e| e.to_string())?;
            Ok(response.status().as_u16())
        };
        let result = tokio::time::timeout(READ_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()));
        driver.abort();
        result
    }
}

/// Accepts the server's certificate whatever names it holds, and checks its signatures.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
