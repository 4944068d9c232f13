//! A tap session over HTTP: one JSON [`super::TapEvent`] per line, for as long as
//! the client reads.
//!
//! ```text
//!  GET /tap?namespace=…  ─▶ Hub::open ─▶ 200, chunked: {event}\n {event}\n \n (heartbeat) …
//!  client gone ─▶ a write fails ─▶ the body is dropped ─▶ the Session with it ─▶ untapped
//! ```
//!
//! A blank line goes out every [`HEARTBEAT`] without events: writing is how a server notices a
//! client that went away, so a cancelled tap ends within that time and its proxies are untapped.
//! [`merged`] adds the events other replicas send (the tap API's fan-out) to a local session's.

use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{Response, StatusCode, body::Frame, header};

use tokio::sync::mpsc;

use super::{Hub, Session, TapEvent, TapFilter, hub::Bucket};

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
    merged(session, None, ())
}

/// The stream of `session`'s events and, with `others`, of the events sent there, as they
/// come; `guard` is dropped with the body (whatever feeds `others` stops with it). Ends only
/// when the client goes: `others` closing leaves the local session's events.
///
/// With `others`, the session's `max_rps` holds for the merged stream as well: each replica
/// keeps it for its own proxies' events, and N replicas' merged here would give N times it.
pub fn merged<G: Send + 'static>(
    session: Session,
    others: Option<mpsc::Receiver<TapEvent>>,
    guard: G,
) -> Body {
    let bucket = others
        .is_some()
        .then(|| Bucket::new(session.max_rps(), Instant::now()));
    let state = (session, others, guard, bucket);
    let lines = futures_util::stream::unfold(
        state,
        |(mut session, mut others, guard, mut bucket)| async move {
            // Events the rate drops do not count as writing: the heartbeat's deadline holds.
            let silent_until = tokio::time::Instant::now() + HEARTBEAT;
            let line = loop {
                let next = async {
                    match others.as_mut() {
                        Some(rx) => tokio::select! {
                            event = session.next() => Next::Event(event.map(Box::new)),
                            event = rx.recv() => match event {
                                Some(event) => Next::Event(Some(Box::new(event))),
                                None => Next::OthersClosed,
                            },
                        },
                        None => Next::Event(session.next().await.map(Box::new)),
                    }
                };
                match tokio::time::timeout_at(silent_until, next).await {
                    Ok(Next::Event(Some(event))) => {
                        if bucket.as_mut().is_some_and(|b| !b.take(Instant::now())) {
                            continue;
                        }
                        let mut line = serde_json::to_vec(&event).unwrap_or_default();
                        line.push(b'\n');
                        break line;
                    }
                    // The hub never closes an open session's queue.
                    Ok(Next::Event(None)) => return None,
                    Ok(Next::OthersClosed) => {
                        others = None;
                        break Vec::new();
                    }
                    Err(_) => break b"\n".to_vec(),
                }
            };
            let state = (session, others, guard, bucket);
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), state))
        },
    );
    StreamBody::new(lines).boxed_unsync()
}

/// What a merged stream writes next.
enum Next {
    /// An event, or `None` when the session ended.
    Event(Option<Box<TapEvent>>),
    OthersClosed,
}

/// The longest line a tap stream's reader holds before giving up on it: 64 KiB (an event is
/// well under 4 KiB: the proxy caps what it logs).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Why a tap request was refused, from the refusal's body: a Kubernetes `Status`'s message
/// (the API server's, or the operator's), else the text as sent. A body that cannot be read
/// gives what was read of it.
pub async fn refusal<B>(body: B) -> String
where
    B: hyper::body::Body,
{
    let text = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&text).trim().to_owned())
}

/// Splits a tap stream's bytes into its event lines, skipping the heartbeat's blank lines.
#[derive(Debug, Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// The lines `data` completes, without their newline.
    ///
    /// # Errors
    ///
    /// A line longer than [`MAX_LINE_BYTES`].
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        self.pending.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            // A whole line that came in one piece is held to the bound as a partial one is.
            if line.len() > MAX_LINE_BYTES {
                return Err(format!("a line longer than {MAX_LINE_BYTES} bytes"));
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                lines.push(line);
            }
        }
        if self.pending.len() > MAX_LINE_BYTES {
            return Err(format!("a line longer than {MAX_LINE_BYTES} bytes"));
        }
        Ok(lines)
    }
}
