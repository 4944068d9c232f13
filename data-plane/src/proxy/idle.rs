//! Slow and idle peers: what a downstream connection has been doing, and the timeouts that end
//! it, as Envoy's HTTP connection manager and TCP proxy apply them.
//!
//! [`Watched`] wraps a connection's stream (after TLS, so it sees the peer's plaintext) and
//! records in an [`Activity`] when a byte last went either way; for HTTP/1 it also times a
//! request's headers from their first byte and answers 408 when they take too long. The HTTP
//! path marks each request in flight with a [`Request`], from its complete head to the end of
//! its response body. From that, [`Activity::check`] tells the connection's watchdog when the
//! connection has had no request for the idle timeout (close it; HTTP/2 sends GOAWAY first) or
//! every request in flight has had nothing to say for the stream idle timeout (close it).
//!
//! HTTP/2 multiplexes requests on one stream of bytes, so a request's idleness is the
//! connection's: a busy connection keeps its idle requests alive. That is more lenient than
//! Envoy's per-stream timer, never stricter.

#[cfg(test)]
mod tests;

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::{access_log::Pending, metrics::ResponseTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::{Instant, Sleep},
};

/// What Envoy answers an HTTP/1 peer whose request headers took too long.
const HEADER_TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 22\r\n\
content-type: text/plain\r\nconnection: close\r\n\r\nrequest header timeout";

/// The HTTP/2 connection preface, which tells an HTTP/2 connection from an HTTP/1 one.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What one downstream connection has been doing. Shared by its stream, its requests and its
/// watchdog.
#[derive(Debug)]
pub(super) struct Activity {
    /// The origin of the times below, kept as nanoseconds since it.
    base: Instant,
    /// When a byte was last read from or written to the peer.
    last_io: AtomicU64,
    /// When the last request in flight ended (or the connection began).
    idle_since: AtomicU64,
    /// Requests in flight.
    active: AtomicUsize,
    /// Requests in flight whose response has not started.
    awaiting: AtomicUsize,
    /// Requests started so far: a new value means a new request head.
    started: AtomicU64,
    /// The request headers timeout fired.
    headers_timed_out: AtomicBool,
    /// Wakes the watchdog when a request ends or its response starts.
    changed: Notify,
}

/// What a connection's timeouts call for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// No request in flight for the idle timeout: close the connection.
    Idle,
    /// Requests in flight, every one answering, and nothing sent or received for the stream
    /// idle timeout: close the connection.
    StreamIdle,
    /// Nothing yet; look again at this instant (`None`: when something changes).
    Wait(Option<Instant>),
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            base: Instant::now(),
            last_io: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            awaiting: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            headers_timed_out: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos)
    }

    fn touch(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// Marks a request in flight: its head is complete.
    pub(super) fn start_request(self: &Arc<Self>) -> Request {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::AcqRel);
        self.awaiting.fetch_add(1, Ordering::AcqRel);
        Request {
            activity: self.clone(),
            awaiting: true,
        }
    }

    /// Whether the request headers timeout closed the connection.
    pub(super) fn headers_timed_out(&self) -> bool {
        self.headers_timed_out.load(Ordering::Relaxed)
    }

    /// Resolves once nothing has been read or written for `quiet`.
    pub(super) async fn quiet_for(&self, quiet: Duration) {
        loop {
            let deadline = self.at(self.last_io.load(Ordering::Relaxed)) + quiet;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Resolves when a request ends or its response starts (or did since the last call).
    pub(super) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// What the connection's `idle` and `stream_idle` timeouts call for at `now`.
    pub(super) fn check(
        &self,
        now: Instant,
        idle: Option<Duration>,
        stream_idle: Option<Duration>,
    ) -> Check {
        if self.active.load(Ordering::Acquire) == 0 {
            let Some(idle) = idle else {
                return Check::Wait(None);
            };
            let deadline = self.at(self.idle_since.load(Ordering::Relaxed)) + idle;
            return if now >= deadline {
                Check::Idle
            } else {
                Check::Wait(Some(deadline))
            };
        }
        // A request still waiting for its response ends itself (504).
        let (Some(stream_idle), 0) = (stream_idle, self.awaiting.load(Ordering::Acquire)) else {
            return Check::Wait(None);
        };
        let deadline = self.at(self.last_io.load(Ordering::Relaxed)) + stream_idle;
        if now >= deadline {
            Check::StreamIdle
        } else {
            Check::Wait(Some(deadline))
        }
    }
}

/// A request in flight, from its complete head until dropped with its response body.
#[derive(Debug)]
pub(super) struct Request {
    activity: Arc<Activity>,
    awaiting: bool,
}

impl Request {
    /// Its response has started: the watchdog's stream idle timeout covers it from now on.
    pub(super) fn responded(&mut self) {
        if std::mem::replace(&mut self.awaiting, false) {
            self.activity.awaiting.fetch_sub(1, Ordering::AcqRel);
            self.activity.changed.notify_one();
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.responded();
        let activity = &self.activity;
        activity.idle_since.store(activity.now(), Ordering::Relaxed);
        if activity.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.changed.notify_one();
        }
    }
}

/// A response body that keeps its request in flight until it is done with, and then records
/// the request's time.
#[derive(Debug)]
pub(super) struct Tracked<B> {
    body: B,
    _request: Request,
    _timer: ResponseTimer,
    /// The request's access log entry, when its connection manager has an access log:
    /// deferred when the body is dropped.
    log: Option<Box<Pending>>,
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        // hyper drops the body as it takes its last frame, before it writes that frame.
        if let Some(log) = self.log.take() {
            log.defer();
        }
    }
}

impl<B: Body> Tracked<B> {
    pub(super) fn new(
        body: B,
        request: Request,
        timer: ResponseTimer,
        mut log: Option<Box<Pending>>,
    ) -> Self {
        if let Some(log) = &mut log
            && body.is_end_stream()
        {
            // Nothing to send: hyper may never poll it.
            log.finished();
        }
        Tracked {
            body,
            _request: request,
            _timer: timer,
            log,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(log) = &mut this.log {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    log.sent(frame);
                    if this.body.is_end_stream() {
                        log.finished();
                    }
                }
                Poll::Ready(None) => log.finished(),
                Poll::Ready(Some(Err(_))) | Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What protocol an HTTP connection speaks, as far as its first bytes tell.
#[derive(Debug)]
enum Speaks {
    /// So far every byte matches the HTTP/2 preface; this many did.
    Undecided(usize),
    Http1,
    /// No request headers to time: HTTP/2 frames them itself, and pings and settings may
    /// come while no request is in flight.
    Http2,
}

/// The request headers timeout of an HTTP/1 connection.
#[derive(Debug)]
struct HeadTimer {
    timeout: Duration,
    speaks: Speaks,
    /// The request (by [`Activity::started`]) whose head is being read, and its deadline.
    armed: Option<(u64, Pin<Box<Sleep>>)>,
}

/// A downstream stream that records its activity and, for HTTP/1, times request headers.
#[derive(Debug)]
pub(super) struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
    head: Option<HeadTimer>,
    timed_out: bool,
    read: u64,
    written: u64,
}

impl<I> Watched<I> {
    /// `inner`, recording into `activity`; with `headers_timeout`, an HTTP/1 request's head
    /// must be complete within it of its first byte.
    pub(super) fn new(
        inner: I,
        activity: Arc<Activity>,
        headers_timeout: Option<Duration>,
    ) -> Self {
        activity.touch();
        Watched {
            inner,
            activity,
            head: headers_timeout.map(|timeout| HeadTimer {
                timeout,
                speaks: Speaks::Undecided(0),
                armed: None,
            }),
            timed_out: false,
            read: 0,
            written: 0,
        }
    }

    /// Bytes read from and written to the peer so far.
    pub(super) fn bytes(&self) -> (u64, u64) {
        (self.read, self.written)
    }
}

impl HeadTimer {
    /// `bytes` were read: a request head may have begun.
    fn on_read(&mut self, bytes: &[u8], activity: &Activity) {
        if let Speaks::Undecided(seen) = self.speaks {
            let rest = &H2_PREFACE[seen..];
            let n = bytes.len().min(rest.len());
            self.speaks = if bytes[..n] != rest[..n] {
                Speaks::Http1
            } else if seen + n == H2_PREFACE.len() {
                Speaks::Http2
            } else {
                Speaks::Undecided(seen + n)
            };
        }
        if matches!(self.speaks, Speaks::Http2) {
            self.armed = None;
            return;
        }
        let started = activity.started.load(Ordering::Relaxed);
        if activity.active.load(Ordering::Acquire) > 0 {
            self.armed = None;
        } else if self.armed.as_ref().is_none_or(|(r, _)| *r != started) {
            let deadline = Instant::now() + self.timeout;
            self.armed = Some((started, Box::pin(tokio::time::sleep_until(deadline))));
        }
    }

    /// While the peer is silent: whether the head being read is overdue.
    fn expired(&mut self, cx: &mut Context<'_>, activity: &Activity) -> bool {
        let Some((request, sleep)) = &mut self.armed else {
            return false;
        };
        let moved_on = activity.active.load(Ordering::Acquire) > 0
            || *request != activity.started.load(Ordering::Relaxed);
        if moved_on {
            self.armed = None;
            return false;
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.read += read.len() as u64;
                    this.activity.touch();
                    if let Some(head) = &mut this.head {
                        head.on_read(read, &this.activity);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let expired = this
                    .head
                    .as_mut()
                    .is_some_and(|head| head.expired(cx, &this.activity));
                if !expired {
                    return Poll::Pending;
                }
                // As Envoy does: a 408, then the connection is closed. The answer is best
                // effort; a peer that does not read it loses nothing it was owed.
                this.timed_out = true;
                this.activity
                    .headers_timed_out
                    .store(true, Ordering::Relaxed);
                let inner = Pin::new(&mut this.inner);
                if let Poll::Ready(Ok(_)) = inner.poll_write(cx, HEADER_TIMEOUT_RESPONSE) {
                    let _ = Pin::new(&mut this.inner).poll_flush(cx);
                }
                Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
            }
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.wrote(n);
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            this.wrote(n);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<I> Watched<I> {
    fn wrote(&mut self, n: usize) {
        if n > 0 {
            self.written += n as u64;
            self.activity.touch();
        }
    }
}
