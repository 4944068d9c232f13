//! A gRPC channel to the xDS server over TLS, verified with the CA proxies are given: what
//! tests that speak ADS themselves (a forged or a replayed token) dial.

use std::{future::Future, pin::Pin, sync::Arc};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tonic::transport::{Channel, Endpoint};

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A channel to `addr` over TLS; the server's certificate must chain to `ca_pem` and hold
/// `server_name`.
///
/// # Errors
///
/// The CA does not parse, or the connection or handshake fails.
pub async fn channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    server_name: &str,
) -> Result<Channel, Box<dyn std::error::Error + Send + Sync>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.to_owned())?;
    let connect = tower::service_fn(move |_: http::Uri| {
        let connector = connector.clone();
        let name = name.clone();
        let dial: Pin<Box<dyn Future<Output = std::io::Result<TlsIo>> + Send>> =
            Box::pin(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let tls = connector.connect(name, tcp).await?;
                Ok(hyper_util::rt::TokioIo::new(tls))
            });
        dial
    });
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(connect)
        .await?)
}
