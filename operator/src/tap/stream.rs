//! A tap session over HTTP: one JSON [`TapEvent`](super::TapEvent) per line, for as long as
//! the client reads.
//!
//! ```text
//!  GET /tap?namespace=…  ─▶ Hub::open ─▶ 200, chunked: {event}\n {event}\n \n (heartbeat) …
//!  client gone ─▶ a write fails ─▶ the body is dropped ─▶ the Session with it ─▶ untapped
//! ```
//!
//! A blank line goes out every [`HEARTBEAT`] without events: writing is how a server notices a
//! client that went away, so a cancelled tap ends within that time and its proxies are untapped.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{Response, StatusCode, body::Frame, header};

use super::{Hub, Session, TapFilter};

/// The longest a tap stream stays silent.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// A response body that is either whole or a stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The answer to a tap request with `query`: the stream, or a 400 (bad query) or 503 (too many
/// sessions) saying why.
pub fn respond(hub: &Arc<Hub>, query: Option<&str>) -> Response<Body> {
    let session = TapFilter::parse(query)
        .map_err(|e| (StatusCode::BAD_REQUEST, e))
        .and_then(|f| {
            hub.open(f)
                .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))
        });
    match session {
        Ok(session) => {
            let mut resp = Response::new(stream(session));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/x-ndjson"),
            );
            resp
        }
        Err((status, message)) => {
            let mut resp = Response::new(Full::new(Bytes::from(message + "\n")).boxed_unsync());
            *resp.status_mut() = status;
            resp
        }
    }
}

fn stream(session: Session) -> Body {
    let lines = futures_util::stream::unfold(session, |mut session| async move {
        let line = match tokio::time::timeout(HEARTBEAT, session.next()).await {
            Ok(Some(event)) => {
                let mut line = serde_json::to_vec(&event).unwrap_or_default();
                line.push(b'\n');
                line
            }
            // The hub never closes an open session's queue.
            Ok(None) => return None,
            Err(_) => b"\n".to_vec(),
        };
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), session))
    });
    StreamBody::new(lines).boxed_unsync()
}
