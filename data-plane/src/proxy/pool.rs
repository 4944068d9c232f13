//! Upstream HTTP connections, pooled per endpoint and transport: HTTP/1.1 connections are
//! reused one request at a time, an HTTP/2 connection carries every request to its endpoint.
//!
//! Errors say whether the request can have reached the application, which is what decides if
//! a retry is safe.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

use super::counted::Counted;
use crate::metrics::UpstreamStats;

#[cfg(test)]
mod tests;

/// The body the proxy sends upstream: the client's, streamed, or a buffered copy for retries.
pub(crate) type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed when they finish.
const MAX_IDLE_PER_KEY: usize = 64;

/// How a connection to an endpoint is made.
#[derive(Clone)]
pub(crate) struct Transport {
    /// Client TLS (mTLS to a meshed endpoint); `None` is plaintext.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// HTTP/2 with prior knowledge when plaintext; over TLS, ALPN decides when one is agreed.
    pub(crate) http2: bool,
    pub(crate) connect_timeout: Duration,
    /// The source address to connect from; `None` lets the kernel choose.
    pub(crate) source: Option<IpAddr>,
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made (refused, timed out, TLS handshake failed): the request
    /// never left the proxy.
    #[error("connection failure: {0}")]
    Connect(String),
    /// The connection broke before the request was written.
    #[error("reset before request: {0}")]
    ResetBeforeRequest(hyper::Error),
    /// HTTP/2 REFUSED_STREAM: the server did not process the request.
    #[error("refused stream")]
    RefusedStream,
    /// A pooled HTTP/1.1 connection, idle since its last response, closed without a byte of
    /// answer: the server closed it while idle, racing this request (the classic keep-alive
    /// race). The request most likely was not processed; HTTP clients send idempotent ones
    /// again (RFC 9112 §9.3.1).
    #[error("pooled connection closed before the response: {0}")]
    ClosedWhileIdle(hyper::Error),
    /// Anything else: the request may have reached the application.
    #[error("{0}")]
    Other(hyper::Error),
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    /// The cluster, by its golden stats' pointer (one per cluster name, never freed): each
    /// cluster has its own connections, as in Envoy, so each counts its own.
    cluster: usize,
    address: SocketAddr,
    /// The TLS configuration by pointer: a rotated certificate makes a new configuration, and
    /// so new connections; the old ones finish their requests.
    tls: Option<usize>,
    http2: bool,
    source: Option<IpAddr>,
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<UpstreamBody>),
    Http2(hyper::client::conn::http2::SendRequest<UpstreamBody>),
}

#[derive(Default)]
struct Entry {
    idle: Vec<hyper::client::conn::http1::SendRequest<UpstreamBody>>,
    http2: Option<hyper::client::conn::http2::SendRequest<UpstreamBody>>,
}

/// All pooled upstream connections of the proxy.
#[derive(Default)]
pub(crate) struct Pool {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Pool {
    /// Sends one request to `address`, an endpoint of the cluster whose stats are `stats`, on
    /// a pooled connection or a new one.
    pub(crate) async fn send(
        &self,
        address: SocketAddr,
        transport: &Transport,
        stats: &Arc<UpstreamStats>,
        mut request: Request<UpstreamBody>,
        on_tls_handshake: impl FnOnce(),
    ) -> Result<Response<Incoming>, SendError> {
        let key = Key {
            cluster: Arc::as_ptr(stats) as usize,
            address,
            tls: transport.tls.as_ref().map(|c| Arc::as_ptr(c) as usize),
            http2: transport.http2,
            source: transport.source,
        };
        let (sender, reused) = match self.checkout(&key) {
            Some(sender) => (sender, true),
            None => (
                connect(address, transport, stats, on_tls_handshake).await?,
                false,
            ),
        };
        match sender {
            Sender::Http2(mut h2) => {
                // HTTP/2 needs the absolute URI (scheme and authority become pseudo-headers).
                to_absolute(&mut request, transport.tls.is_some());
                if let Ok(mut entries) = self.entries.lock() {
                    entries.entry(key.clone()).or_default().http2 = Some(h2.clone());
                }
                let result = h2.send_request(request).await;
                if result.is_err()
                    && h2.is_closed()
                    && let Ok(mut entries) = self.entries.lock()
                    && let Some(e) = entries.get_mut(&key)
                {
                    e.http2 = None;
                }
                result.map_err(classify)
            }
            Sender::Http1(mut h1) => {
                to_origin_form(&mut request);
                let response = h1.send_request(request).await.map_err(|e| {
                    if reused && e.is_incomplete_message() {
                        SendError::ClosedWhileIdle(e)
                    } else {
                        classify(e)
                    }
                })?;
                // Ready again once the response body is read; `checkout` skips it until then.
                if let Ok(mut entries) = self.entries.lock() {
                    let entry = entries.entry(key).or_default();
                    if entry.idle.len() < MAX_IDLE_PER_KEY {
                        entry.idle.push(h1);
                    }
                }
                Ok(response)
            }
        }
    }

    fn checkout(&self, key: &Key) -> Option<Sender> {
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get_mut(key)?;
        if let Some(h2) = &entry.http2 {
            if !h2.is_closed() {
                return Some(Sender::Http2(h2.clone()));
            }
            entry.http2 = None;
        }
        entry.idle.retain(|s| !s.is_closed());
        let ready = entry.idle.iter().position(|s| s.is_ready())?;
        Some(Sender::Http1(entry.idle.swap_remove(ready)))
    }

    /// Drops every connection to endpoints not in `keep` (endpoints that left their cluster).
    pub(crate) fn retain(&self, keep: impl Fn(SocketAddr) -> bool) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|k, _| keep(k.address));
        }
    }
}

async fn connect(
    address: SocketAddr,
    transport: &Transport,
    stats: &Arc<UpstreamStats>,
    on_tls_handshake: impl FnOnce(),
) -> Result<Sender, SendError> {
    // Counted from the attempt: a connection refused is one opened, as in Envoy.
    let connection = stats.connecting();
    let tcp = tokio::time::timeout(
        transport.connect_timeout,
        super::connect_tcp(address, transport.source),
    )
    .await
    .map_err(|_| SendError::Connect(format!("{address}: connect timeout")))?
    .map_err(|e| SendError::Connect(format!("{address}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    match &transport.tls {
        None => handshake(TokioIo::new(Counted::new(tcp, connection)), transport.http2).await,
        Some(config) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            // The verifier checks the SPIFFE ID, not a DNS name; the name only has to parse.
            let name = ServerName::IpAddress(address.ip().into());
            let tls = tokio::time::timeout(transport.connect_timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| SendError::Connect(format!("{address}: TLS handshake timeout")))?
                .map_err(|e| SendError::Connect(format!("{address}: TLS: {e}")))?;
            on_tls_handshake();
            // ALPN decides when one was agreed; without (an opaque port's TLS offers none) the
            // cluster's setting does, as in Envoy.
            let h2 = match tls.get_ref().1.alpn_protocol() {
                Some(protocol) => protocol == b"h2",
                None => transport.http2,
            };
            handshake(TokioIo::new(Counted::new(tls, connection)), h2).await
        }
    }
}

async fn handshake<I>(io: TokioIo<I>, http2: bool) -> Result<Sender, SendError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if http2 {
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(format!("HTTP/2 handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "upstream HTTP/2 connection ended");
            }
        });
        Ok(Sender::Http2(sender))
    } else {
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(format!("HTTP/1.1 handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(Sender::Http1(sender))
    }
}

fn classify(e: hyper::Error) -> SendError {
    if e.is_canceled() {
        return SendError::ResetBeforeRequest(e);
    }
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return SendError::RefusedStream;
        }
        source = s.source();
    }
    SendError::Other(e)
}

fn to_absolute(request: &mut Request<UpstreamBody>, tls: bool) {
    if request.uri().scheme().is_some() {
        // Its `Host` is this authority already (`headers::authority`): not to be repeated.
        request.headers_mut().remove(http::header::HOST);
        return;
    }
    let authority = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    parts.authority = authority.or_else(|| Some(http::uri::Authority::from_static("upstream")));
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    // HTTP/2 carries the authority as a pseudo-header; a Host header would repeat it.
    request.headers_mut().remove(http::header::HOST);
}

fn to_origin_form(request: &mut Request<UpstreamBody>) {
    if let Some(authority) = request.uri().authority().cloned()
        && !request.headers().contains_key(http::header::HOST)
        && let Ok(value) = http::HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(http::header::HOST, value);
    }
    if request.uri().scheme().is_some() || request.uri().authority().is_some() {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        if let Ok(uri) = http::Uri::from_parts({
            let mut p = http::uri::Parts::default();
            p.path_and_query = Some(path);
            p
        }) {
            *request.uri_mut() = uri;
        }
    }
}
