//! Where entries wait and how they leave: per `log_name`, one bounded buffer and one
//! `StreamAccessLogs` stream at a time to the control plane (`client_stream`), opened when
//! a configuration names the log and closed once no configuration names it and no connection
//! opened under one that did is left (as Envoy keeps a logger while a listener's
//! configuration or a connection of it holds it).
//!
//! Entries wait at most `buffer_flush_interval`, or until `buffer_size_bytes` of them (as
//! encoded) wait, then go in one message. The buffer holds at most [`MAX_PENDING_BYTES`]:
//! beyond that, and at a flush while no stream is up, entries are dropped and counted
//! (`access_log_entries_dropped_total{log_name}`), never kept without bound. A message in
//! flight when a connection breaks is lost (the protocol has no acknowledgement), as Envoy's.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    task::{Context, Poll, Waker},
    time::Duration,
};

use envoy_types::pb::envoy::{
    data::accesslog::v3::HttpAccessLogEntry,
    service::accesslog::v3::{
        StreamAccessLogsMessage,
        access_log_service_client::AccessLogServiceClient,
        stream_access_logs_message::{HttpAccessLogEntries, Identifier, LogEntries},
    },
};
use prost::Message as _;
use tokio::sync::Notify;

use super::Loggers;
use crate::{
    ads,
    bootstrap::Bootstrap,
    client_stream,
    config::{AccessLog, HttpManager, NetworkFilter, Runtime},
    metrics::{Counter, Registry},
};

/// The most bytes (encoded) of entries one log keeps waiting, as Envoy's gRPC stream buffer
/// (1 MiB); a message holds at most this much, well under gRPC's usual 4 MiB limit.
pub const MAX_PENDING_BYTES: usize = 1 << 20;

/// The sinks of the proxy, by `log_name`; a sink lives while the configuration names it or a
/// connection logs to it.
#[derive(Debug)]
pub struct Sinks {
    /// Where entries go; `None` (tests of the data path without a control plane): nowhere,
    /// every entry is counted as dropped.
    bootstrap: Option<Bootstrap>,
    metrics: Arc<Registry>,
    by_name: Mutex<HashMap<String, Weak<Sink>>>,
    /// Those the current configuration names.
    configured: Mutex<HashMap<String, Arc<Sink>>>,
}

/// The handle of one log's buffer and stream; dropping the last one ends the stream.
#[derive(Debug)]
pub struct Sink {
    outbox: Arc<Outbox>,
}

/// One log's entries, waiting for its stream.
#[derive(Debug)]
pub(crate) struct Outbox {
    log_name: String,
    /// Send once this many bytes wait.
    buffer_bytes: usize,
    dropped: Arc<Counter>,
    inner: Mutex<Inner>,
    /// Wakes [`Outbox::closed`].
    changed: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<HttpAccessLogEntry>,
    /// Their encoded size, field framing included.
    bytes: usize,
    /// Send what waits now (a flush, or `buffer_bytes` reached).
    send: bool,
    /// The current stream; an older one ends when polled.
    stream: u64,
    /// Whether the current stream is up.
    connected: bool,
    /// Whether it sent its first message (the one with the identifier).
    identified: bool,
    /// Whether a stream took a message since [`Outbox::took_any`] last looked.
    took: bool,
    /// No connection logs here any more: send what waits, then end.
    closed: bool,
    waker: Option<Waker>,
}

/// The messages of one stream, as the stream takes them.
#[derive(Debug)]
pub(crate) struct Outgoing {
    outbox: Arc<Outbox>,
    stream: u64,
    node: envoy_types::pb::envoy::config::core::v3::Node,
}

// === impl Sinks ===

impl Sinks {
    pub fn new(bootstrap: Option<Bootstrap>, metrics: Arc<Registry>) -> Self {
        Sinks {
            bootstrap,
            metrics,
            by_name: Mutex::new(HashMap::new()),
            configured: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps the sinks of the logs `runtime` names (opening their streams), and lets go of
    /// the others, which close once no connection logs to them.
    pub fn configure(&self, runtime: &Runtime) {
        let mut configured = HashMap::new();
        let managers = runtime
            .listeners
            .values()
            .flat_map(|l| &l.chains)
            .filter_map(|c| match &c.filter {
                NetworkFilter::Http(manager) => Some(manager),
                NetworkFilter::Tcp(_) | NetworkFilter::Close => None,
            });
        for log in managers.flat_map(|m| &m.access_logs) {
            if !configured.contains_key(&log.log_name) {
                configured.insert(log.log_name.clone(), self.sink(log));
            }
        }
        *self
            .configured
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = configured;
    }

    /// The loggers of a connection of `manager`; `None` when it logs nothing. Starts the
    /// stream of a log no connection logs to yet.
    pub fn loggers(&self, manager: &HttpManager) -> Option<Arc<Loggers>> {
        if manager.access_logs.is_empty() {
            return None;
        }
        let logs = manager
            .access_logs
            .iter()
            .map(|log| (log.clone(), self.sink(log)))
            .collect();
        Some(Arc::new(Loggers::new(logs)))
    }

    fn sink(&self, log: &AccessLog) -> Arc<Sink> {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sink) = by_name.get(&log.log_name).and_then(Weak::upgrade) {
            return sink;
        }
        by_name.retain(|_, sink| sink.strong_count() > 0);
        let dropped = self.metrics.counter(
            "access_log_entries_dropped_total",
            "Access log entries dropped: the buffer was full, or no stream was up at a flush.",
            &[("log_name", &log.log_name)],
        );
        let outbox = Arc::new(Outbox::new(log, dropped));
        match &self.bootstrap {
            Some(bootstrap) => {
                tracing::info!(log_name = %log.log_name, "access log: streaming to the control plane");
                tokio::spawn(run(bootstrap.clone(), outbox.clone(), log.flush_interval));
            }
            // Nowhere to send: every flush drops what waits.
            None => {
                let (outbox, interval) = (outbox.clone(), log.flush_interval);
                tokio::spawn(async move {
                    tokio::select! {
                        () = ticks(outbox.clone(), interval) => {}
                        () = outbox.closed() => {}
                    }
                });
            }
        }
        let sink = Arc::new(Sink { outbox });
        by_name.insert(log.log_name.clone(), Arc::downgrade(&sink));
        sink
    }
}

/// Flushes every `interval` and streams to the control plane, until the sink closes.
async fn run(bootstrap: Bootstrap, outbox: Arc<Outbox>, interval: Duration) {
    let node = ads::node(&bootstrap);
    let streaming = client_stream::run(
        "access log",
        &bootstrap,
        |channel, authorization| {
            let outgoing = outbox.open(node.clone());
            let request = client_stream::request(outgoing, authorization);
            let outbox = outbox.clone();
            async move {
                let result = AccessLogServiceClient::new(channel)
                    .stream_access_logs(request)
                    .await;
                outbox.disconnected();
                result.map(drop)
            }
        },
        || outbox.took_any(),
        || !outbox.is_closed(),
    );
    tokio::select! {
        () = streaming => {}
        () = ticks(outbox.clone(), interval) => {}
        () = outbox.closed() => {}
    }
    tracing::info!(log_name = %outbox.log_name, "access log: no connection logs here any more; stream closed");
}

/// A flush every `interval`, for ever.
async fn ticks(outbox: Arc<Outbox>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: the first flush is one interval in.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        outbox.flush();
    }
}

// === impl Sink ===

#[cfg(test)]
impl Sink {
    /// A sink without a task: the test takes from its outbox itself.
    pub(crate) fn detached(log: &AccessLog, dropped: Arc<Counter>) -> (Arc<Sink>, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(log, dropped));
        let sink = Arc::new(Sink {
            outbox: outbox.clone(),
        });
        (sink, outbox)
    }
}

impl Sink {
    /// Queues `entry` (the request path): dropped and counted when the buffer is full.
    pub(crate) fn push(&self, entry: HttpAccessLogEntry) {
        self.outbox.push(entry);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.outbox.close();
    }
}

// === impl Outbox ===

impl Outbox {
    pub(crate) fn new(log: &AccessLog, dropped: Arc<Counter>) -> Self {
        Outbox {
            log_name: log.log_name.clone(),
            buffer_bytes: usize::try_from(log.buffer_bytes).unwrap_or(usize::MAX),
            dropped,
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, entry: HttpAccessLogEntry) {
        // A repeated field's tag and length prefix: at most 4 bytes for an entry this size.
        let len = entry.encoded_len() + 4;
        let mut inner = self.lock();
        if inner.bytes + len > MAX_PENDING_BYTES {
            drop(inner);
            self.dropped.inc();
            return;
        }
        inner.entries.push(entry);
        inner.bytes += len;
        if inner.bytes >= self.buffer_bytes {
            inner.send = true;
            if let Some(waker) = inner.waker.take() {
                waker.wake();
            }
        }
    }

    /// The interval is up: what waits goes to the stream, or is dropped while none is up.
    pub(crate) fn flush(&self) {
        let mut inner = self.lock();
        if inner.entries.is_empty() {
            return;
        }
        if !inner.connected {
            let dropped = inner.entries.len();
            inner.entries.clear();
            inner.bytes = 0;
            drop(inner);
            self.dropped.add(dropped as u64);
            return;
        }
        inner.send = true;
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    /// The messages of a new stream; the first carries `node` and the log's name. A stream
    /// opened before ends.
    pub(crate) fn open(
        self: &Arc<Self>,
        node: envoy_types::pb::envoy::config::core::v3::Node,
    ) -> Outgoing {
        let mut inner = self.lock();
        inner.stream += 1;
        inner.connected = true;
        inner.identified = false;
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
        Outgoing {
            outbox: Arc::clone(self),
            stream: inner.stream,
            node,
        }
    }

    /// The current stream ended.
    fn disconnected(&self) {
        self.lock().connected = false;
        self.changed.notify_waiters();
    }

    fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Resolves once the sink is closed and no stream is up to send what waits.
    async fn closed(&self) {
        loop {
            let changed = self.changed.notified();
            {
                let inner = self.lock();
                if inner.closed && !inner.connected {
                    return;
                }
            }
            changed.await;
        }
    }

    fn took_any(&self) -> bool {
        std::mem::take(&mut self.lock().took)
    }

    /// What waits, for stream `stream`, when it is time to send it.
    pub(crate) fn take(
        &self,
        stream: u64,
        node: &envoy_types::pb::envoy::config::core::v3::Node,
        waker: &Waker,
    ) -> Poll<Option<StreamAccessLogsMessage>> {
        let mut inner = self.lock();
        if inner.stream != stream {
            return Poll::Ready(None);
        }
        let due = inner.send || inner.closed;
        if !due || inner.entries.is_empty() {
            if inner.closed {
                return Poll::Ready(None);
            }
            inner.send = false;
            inner.waker = Some(waker.clone());
            return Poll::Pending;
        }
        inner.send = false;
        inner.bytes = 0;
        inner.took = true;
        let log_entry = std::mem::take(&mut inner.entries);
        let identifier = (!std::mem::replace(&mut inner.identified, true)).then(|| Identifier {
            node: Some(node.clone()),
            log_name: self.log_name.clone(),
        });
        Poll::Ready(Some(StreamAccessLogsMessage {
            identifier,
            log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries { log_entry })),
        }))
    }
}

// === impl Outgoing ===

impl tokio_stream::Stream for Outgoing {
    type Item = StreamAccessLogsMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.outbox.take(self.stream, &self.node, cx.waker())
    }
}
