//! The HTTP echo: HTTP/1.1 and h2c on one port, answering with the server's name.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::{Ctx, Drain, accept_failed, drained};
use crate::{SERVED_BY, say};

/// Largest request body read; a larger one is answered 413.
const MAX_BODY: usize = 1024 * 1024;

/// Longest `/delay/<ms>`.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// The body of `GET /headers`: what the server saw of the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadersEcho {
    /// The server's name.
    pub name: String,
    /// The request method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Request headers, names lowercase, values in order of appearance.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The server's address on this connection.
    pub local: SocketAddr,
    /// Bytes of request body read.
    pub body_length: u64,
}

/// Accepts until `drain`, then lets open connections finish their requests (HTTP/1.1 closes after
/// the response in flight, HTTP/2 sends GOAWAY).
pub(super) async fn serve(listener: TcpListener, ctx: Arc<Ctx>, mut drain: Drain) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed("http", &error).await;
                    continue;
                }
            },
            () = drained(&mut drain) => break,
        };
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(error) => {
                say(format_args!(
                    "http {peer}: cannot read local address: {error}"
                ));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let service = service_fn(move |request| handle(request, ctx.clone(), peer, local));
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(connection);
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn handle(
    request: Request<Incoming>,
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let response = match Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => {
            let body_length = body.to_bytes().len() as u64;
            route(&ctx, &parts, &path, body_length, peer, local).await
        }
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            text(&ctx, StatusCode::PAYLOAD_TOO_LARGE)
        }
        Err(error) => {
            say(format_args!(
                "http {} {path} {peer}: body: {}",
                parts.method,
                crate::chain(error.as_ref())
            ));
            text(&ctx, StatusCode::BAD_REQUEST)
        }
    };
    say(format_args!(
        "http {} {path} {} {peer}",
        parts.method,
        response.status().as_u16()
    ));
    Ok(response)
}

async fn route(
    ctx: &Ctx,
    parts: &http::request::Parts,
    path: &str,
    body_length: u64,
    remote: SocketAddr,
    local: SocketAddr,
) -> Response<Full<Bytes>> {
    let bare = parts.uri.path();
    if bare == "/headers" {
        let echo = HeadersEcho {
            name: ctx.name.clone(),
            method: parts.method.to_string(),
            path: path.to_owned(),
            headers: headers(&parts.headers),
            remote,
            local,
            body_length,
        };
        return match serde_json::to_vec(&echo) {
            Ok(json) => respond(ctx, StatusCode::OK, "application/json", json.into()),
            Err(_) => text(ctx, StatusCode::INTERNAL_SERVER_ERROR),
        };
    }
    if let Some(code) = bare.strip_prefix("/status/") {
        return match code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(status) if !status.is_informational() => text(ctx, status),
            _ => text(ctx, StatusCode::BAD_REQUEST),
        };
    }
    if let Some(ms) = bare.strip_prefix("/delay/") {
        return match ms.parse() {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms).min(MAX_DELAY)).await;
                text(ctx, StatusCode::OK)
            }
            Err(_) => text(ctx, StatusCode::BAD_REQUEST),
        };
    }
    text(ctx, StatusCode::OK)
}

fn headers(map: &http::HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in map {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    headers
}

/// `status` with the server's name as the body.
fn text(ctx: &Ctx, status: StatusCode) -> Response<Full<Bytes>> {
    respond(ctx, status, "text/plain", Bytes::from(ctx.name.clone()))
}

fn respond(
    ctx: &Ctx,
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(SERVED_BY, ctx.served_by.clone());
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
