//! The metrics service stream: a flush every interval into a one-message outbox, and one
//! `StreamMetrics` stream at a time to the control plane (`client_stream`: the ADS service's
//! address, TLS and credentials, on a channel of its own), reconnecting with the ADS backoff
//! when it fails.
//!
//! The request path never waits on any of it: it counts into atomics, and a flush reads them.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime},
};

use envoy_types::pb::envoy::service::metrics::v3::{
    StreamMetricsMessage, metrics_service_client::MetricsServiceClient,
};

use super::{Flush, Flusher};
use crate::{
    ads,
    bootstrap::Bootstrap,
    client_stream,
    metrics::{GoldenSnapshot, Registry},
};

/// Flushes `registry` every `interval` and streams the messages to the control plane, for
/// ever.
pub async fn run(
    bootstrap: Bootstrap,
    registry: Arc<Registry>,
    interval: Duration,
    batch_size: Option<usize>,
) {
    let flusher = Flusher::new(ads::node(&bootstrap)).with_batch_size(batch_size);
    let outbox = Arc::new(Outbox::new(flusher));
    let flushing = {
        let outbox = Arc::clone(&outbox);
        async move {
            let mut ticks = tokio::time::interval(interval);
            // A late tick (a busy or suspended process) flushes once, not in a burst.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate: the first flush is one interval in, as Envoy's.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                outbox.flush(&registry.golden(), SystemTime::now());
            }
        }
    };
    tokio::select! {
        () = flushing => {}
        () = stream(&bootstrap, &outbox) => {}
    }
}

/// One stream after another.
async fn stream(bootstrap: &Bootstrap, outbox: &Arc<Outbox>) {
    client_stream::run(
        "metrics service",
        bootstrap,
        |channel, authorization| {
            let request = client_stream::request(outbox.open(), authorization);
            async move {
                // Client streaming: this resolves when the stream ends.
                MetricsServiceClient::new(channel)
                    .stream_metrics(request)
                    .await
                    .map(drop)
            }
        },
        || outbox.took_any(),
        || true,
    )
    .await;
}

/// At most one message waiting for a stream, and the flusher whose increases it carries.
#[derive(Debug)]
pub(crate) struct Outbox {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    flusher: Flusher,
    /// The message waiting, and the flush that made it.
    pending: Option<(Flush, u64)>,
    /// Flushes so far.
    flushes: u64,
    /// The current stream; an older one ends when polled.
    stream: u64,
    /// The flushes made before the current stream opened: it takes only a later one.
    opened_after: u64,
    /// Whether the current stream has sent its first message (the one with the node).
    identified: bool,
    /// Whether a stream took a message since [`Outbox::took_any`] last looked.
    took: bool,
    waker: Option<Waker>,
}

/// The messages of one stream, as the stream takes them.
#[derive(Debug)]
pub(crate) struct Outgoing {
    outbox: Arc<Outbox>,
    stream: u64,
}

// === impl Outbox ===

impl Outbox {
    pub(crate) fn new(flusher: Flusher) -> Self {
        Outbox {
            inner: Mutex::new(Inner {
                flusher,
                pending: None,
                flushes: 0,
                stream: 0,
                opened_after: 0,
                identified: false,
                took: false,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A flush: the message for `now` replaces the pending one, which it covers (both count
    /// from the last message sent).
    pub(crate) fn flush(&self, now: &GoldenSnapshot, at: SystemTime) {
        let mut inner = self.lock();
        let flush = inner.flusher.flush(now, at);
        if flush.left_out > 0 {
            tracing::warn!(
                left_out = flush.left_out,
                "metrics service: clusters and connection managers left for the next flush (message size limit)"
            );
        }
        inner.flushes += 1;
        inner.pending = Some((flush, inner.flushes));
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    /// The messages of a new stream; the first carries the node. A stream opened before ends.
    ///
    /// The new stream waits for the next flush, which carries what a message pending now
    /// would: a server that refuses the stream at once (not ready, not authorized) answers
    /// before then, and nothing it was sent is lost.
    pub(crate) fn open(self: &Arc<Self>) -> Outgoing {
        let mut inner = self.lock();
        inner.stream += 1;
        inner.opened_after = inner.flushes;
        inner.identified = false;
        if let Some(waker) = inner.waker.take() {
            // Let the old stream see it is over.
            waker.wake();
        }
        Outgoing {
            outbox: Arc::clone(self),
            stream: inner.stream,
        }
    }

    /// Whether any stream took a message since the last call.
    fn took_any(&self) -> bool {
        std::mem::take(&mut self.lock().took)
    }

    /// The pending message for stream `stream`, taken as sent.
    fn take(&self, stream: u64, waker: &Waker) -> Poll<Option<StreamMetricsMessage>> {
        let mut inner = self.lock();
        if inner.stream != stream {
            return Poll::Ready(None);
        }
        let opened_after = inner.opened_after;
        let Some((flush, _)) = inner.pending.take_if(|(_, at)| *at > opened_after) else {
            inner.waker = Some(waker.clone());
            return Poll::Pending;
        };
        inner.flusher.sent(&flush);
        inner.took = true;
        let mut message = flush.message;
        if !std::mem::replace(&mut inner.identified, true) {
            message.identifier = Some(inner.flusher.identifier());
        }
        Poll::Ready(Some(message))
    }
}

// === impl Outgoing ===

impl tokio_stream::Stream for Outgoing {
    type Item = StreamMetricsMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.outbox.take(self.stream, cx.waker())
    }
}
