//! Where entries wait and how they leave: per `log_name`, one bounded buffer and one
//! `StreamAccessLogs` stream at a time to the control plane (`client_stream`), opened when
//! a configuration names the log and closed once no configuration names it and no connection
//! opened under one that did is left (as Envoy keeps a logger while a listener's
//! configuration or a connection of it holds it).
//!
//! Entries wait at most `buffer_flush_interval`, or until `buffer_size_bytes` of them (as
//! encoded) wait, then go in one message. The buffer holds at most [`MAX_PENDING_BYTES`]:
//! beyond that, and at a flush while no stream is up, entries are dropped and counted
//! (`access_log_entries_dropped_total{log_name}`), never kept without bound; those taken in are
//! counted in `access_log_entries_written_total{log_name}` (Envoy's `logs_written`). A message in
//! flight when a connection breaks is lost (the protocol has no acknowledgement), as Envoy's.
//! Requests a log's filter refused after some `process_ratelimit` bucket it reached had no
//! token are never entries; they are counted in `access_log_entries_rate_limited_total{log_name}`
//! (requests that only failed its header conditions are not).
//!
//! An entry is encoded once, as it is queued, into the log's buffer: the buffer is then the
//! message's `http_logs` field as it goes on the wire, and a message costs the sink's task a
//! copy, not an encoding (see `Encoded`). Only the byte threshold, a flush, a new stream or
//! the close wake that task; a queued entry alone does not.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::{
    data::accesslog::v3::HttpAccessLogEntry,
    service::accesslog::v3::{
        StreamAccessLogsMessage, StreamAccessLogsResponse, access_log_service_server,
        stream_access_logs_message::Identifier,
    },
};
use prost::{
    Message as _,
    encoding::{WireType, encode_key, encode_varint},
};
use tokio::{runtime::Handle, sync::Notify};
use tonic::{
    Status,
    codec::{DecodeBuf, EncodeBuf},
};

use super::{Buckets, Loggers, deferred::Deferred, worker::Worker};
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

/// `StreamAccessLogsMessage.http_logs`: the field the buffer is the value of.
const HTTP_LOGS_FIELD: u32 = 2;
/// `HttpAccessLogEntries.log_entry`: the field every entry in the buffer is framed as.
const LOG_ENTRY_FIELD: u32 = 1;

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
    /// Finished requests of every connection that logs, waiting for their entries.
    pub(super) deferred: Arc<Deferred>,
    /// The thread the sinks' tasks run on, started with the first sink; `None` inside when it
    /// could not start (the tasks then run on the caller's runtime).
    worker: OnceLock<Option<Worker>>,
}

/// The handle of one log's buffer and stream; dropping the last one ends the stream.
#[derive(Debug)]
pub struct Sink {
    outbox: Arc<Outbox>,
    /// `access_log_entries_rate_limited_total`: requests the log's buckets kept out.
    rate_limited: Arc<Counter>,
}

/// One log's entries, waiting for its stream.
#[derive(Debug)]
pub(crate) struct Outbox {
    log_name: String,
    /// Send once this many bytes wait.
    buffer_bytes: usize,
    dropped: Arc<Counter>,
    /// `access_log_entries_written_total`: entries taken into the buffer (Envoy's
    /// `access_logs.grpc_access_log.logs_written`).
    written: Arc<Counter>,
    inner: Mutex<Inner>,
    /// Wakes [`Outbox::closed`].
    changed: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// The entries, encoded, each framed as a `log_entry` field (so its length is their
    /// encoded size, field framing included).
    entries: BytesMut,
    /// How many entries `entries` holds.
    count: usize,
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

/// One `StreamAccessLogsMessage`, encoded: `head` (the identifier, when the message has
/// one, then the key and length of `http_logs`), then `entries` (that field's value, the
/// buffer as the request path filled it).
#[derive(Debug)]
pub(crate) struct Encoded {
    head: Bytes,
    entries: Bytes,
}

/// The stream's codec: sends [`Encoded`] messages as they are (the generated client's would
/// encode every entry again), reads the response with prost.
#[derive(Clone, Copy, Debug, Default)]
struct Codec;

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
            deferred: Arc::default(),
            worker: OnceLock::new(),
        }
    }

    /// The runtime of the access log's tasks: its own thread's, or the caller's when that
    /// thread could not start. The first call, made by the first sink (which every `Loggers`
    /// has), also starts the deferred queue's drain there.
    fn runtime(&self) -> Handle {
        let worker = self.worker.get_or_init(|| {
            let worker = match Worker::start() {
                Ok(worker) => Some(worker),
                Err(error) => {
                    tracing::warn!(%error, "access log: no thread of its own; runs on the proxy's");
                    None
                }
            };
            let handle = worker
                .as_ref()
                .map_or_else(Handle::current, |w| w.handle().clone());
            self.deferred.start(&handle);
            worker
        });
        match worker {
            Some(worker) => worker.handle().clone(),
            None => Handle::current(),
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

    /// The loggers of a connection of `manager`, with their buckets from `buckets`; `None`
    /// when it logs nothing. Starts the stream of a log no connection logs to yet.
    pub fn loggers(&self, manager: &HttpManager, buckets: &Buckets) -> Option<Arc<Loggers>> {
        if manager.access_logs.is_empty() {
            return None;
        }
        let logs = manager
            .access_logs
            .iter()
            .map(|log| (log.clone(), self.sink(log)))
            .collect();
        Some(Arc::new(
            Loggers::new(logs, self.deferred.clone()).limited(buckets),
        ))
    }

    fn sink(&self, log: &AccessLog) -> Arc<Sink> {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sink) = by_name.get(&log.log_name).and_then(Weak::upgrade) {
            return sink;
        }
        by_name.retain(|_, sink| sink.strong_count() > 0);
        let dropped = self.metrics.counter(
            "access_log_entries_dropped_total",
            "Access log entries dropped: the buffer was full, no stream was up at a flush, or too \
             many finished requests waited for their entries.",
            &[("log_name", &log.log_name)],
        );
        let written = self.metrics.counter(
            "access_log_entries_written_total",
            "Access log entries taken into the buffer, to be sent (Envoy's \
             access_logs.grpc_access_log.logs_written).",
            &[("log_name", &log.log_name)],
        );
        let rate_limited = self.metrics.counter(
            "access_log_entries_rate_limited_total",
            "Requests not logged because the access log's filter refused them after a \
             process_ratelimit token bucket they reached had no token left (not those that only \
             failed its header conditions).",
            &[("log_name", &log.log_name)],
        );
        let outbox = Arc::new(Outbox::new(log, dropped).counting_written(written));
        match &self.bootstrap {
            Some(bootstrap) => {
                tracing::info!(log_name = %log.log_name, "access log: streaming to the control plane");
                self.runtime()
                    .spawn(run(bootstrap.clone(), outbox.clone(), log.flush_interval));
            }
            // Nowhere to send: every flush drops what waits.
            None => {
                let (outbox, interval) = (outbox.clone(), log.flush_interval);
                self.runtime().spawn(async move {
                    tokio::select! {
                        () = ticks(outbox.clone(), interval) => {}
                        () = outbox.closed() => {}
                    }
                });
            }
        }
        let sink = Arc::new(Sink {
            outbox,
            rate_limited,
        });
        by_name.insert(log.log_name.clone(), Arc::downgrade(&sink));
        sink
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        self.deferred.close();
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
                let result = stream_access_logs(channel, request).await;
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

/// `StreamAccessLogs` on `channel`, as the generated client calls it but with [`Codec`].
async fn stream_access_logs(
    channel: tonic::transport::Channel,
    request: tonic::Request<Outgoing>,
) -> Result<tonic::Response<StreamAccessLogsResponse>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
    let path = http::uri::PathAndQuery::try_from(format!(
        "/{}/StreamAccessLogs",
        access_log_service_server::SERVICE_NAME
    ))
    .map_err(|e| Status::internal(format!("the StreamAccessLogs path: {e}")))?;
    grpc.client_streaming(request, path, Codec).await
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
            rate_limited: Arc::default(),
        });
        (sink, outbox)
    }

    /// What `access_log_entries_rate_limited_total` counted.
    pub(crate) fn rate_limited_total(&self) -> u64 {
        self.rate_limited.get()
    }
}

impl Sink {
    /// Queues `entry`: dropped and counted when the buffer is full.
    pub(crate) fn push(&self, entry: &HttpAccessLogEntry) {
        self.outbox.push(entry);
    }

    /// Counts an entry dropped before it was made.
    pub(crate) fn dropped(&self) {
        self.outbox.dropped.inc();
    }

    /// Counts a request the log's filter refused after a bucket it reached had no token.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.inc();
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
            written: Arc::default(),
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
        }
    }

    /// Counts the entries taken into the buffer in `written`.
    pub(crate) fn counting_written(self, written: Arc<Counter>) -> Self {
        Outbox { written, ..self }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, entry: &HttpAccessLogEntry) {
        let mut inner = self.lock();
        if inner.entries.capacity() == 0 {
            // Once per message: room for a message's worth, so that the entries of one are
            // not copied from buffer to growing buffer.
            let room = self.buffer_bytes.saturating_add(4 * 1024);
            inner.entries.reserve(room.min(MAX_PENDING_BYTES));
        }
        // Encoded in place, under the lock: one pass over the entry, on the access log's own
        // thread, so no request waits for it. What does not fit is taken out again.
        let before = inner.entries.len();
        prost::encoding::message::encode(LOG_ENTRY_FIELD, entry, &mut inner.entries);
        if inner.entries.len() > MAX_PENDING_BYTES {
            inner.entries.truncate(before);
            drop(inner);
            self.dropped.inc();
            return;
        }
        inner.count += 1;
        self.written.inc();
        if inner.entries.len() >= self.buffer_bytes {
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
            let dropped = std::mem::take(&mut inner.count);
            inner.entries.clear();
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
    ) -> Poll<Option<Encoded>> {
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
        inner.count = 0;
        inner.took = true;
        // The filled part goes; the buffer keeps its allocation, and reclaims the part that
        // went once the stream has copied it out.
        let entries = inner.entries.split().freeze();
        let identifier = (!std::mem::replace(&mut inner.identified, true)).then(|| Identifier {
            node: Some(node.clone()),
            log_name: self.log_name.clone(),
        });
        drop(inner);
        Poll::Ready(Some(Encoded::new(identifier, entries)))
    }
}

// === impl Encoded ===

impl Encoded {
    /// The message of `identifier` and the `log_entry` fields `entries`.
    fn new(identifier: Option<Identifier>, entries: Bytes) -> Self {
        let identified = StreamAccessLogsMessage {
            identifier,
            log_entries: None,
        };
        let mut head = BytesMut::with_capacity(identified.encoded_len() + 16);
        // Fields in order, as prost writes the whole message: the identifier (1), then
        // `http_logs` (2).
        identified.encode_raw(&mut head);
        encode_key(HTTP_LOGS_FIELD, WireType::LengthDelimited, &mut head);
        encode_varint(entries.len() as u64, &mut head);
        Encoded {
            head: head.freeze(),
            entries,
        }
    }

    /// Writes the message into `dst` (a gRPC frame's buffer).
    pub(crate) fn write_to(&self, dst: &mut impl bytes::BufMut) {
        dst.put_slice(&self.head);
        dst.put_slice(&self.entries);
    }

    /// The message as one buffer.
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> Bytes {
        [&self.head[..], &self.entries[..]].concat().into()
    }
}

// === impl Codec ===

impl tonic::codec::Codec for Codec {
    type Encode = Encoded;
    type Decode = StreamAccessLogsResponse;
    type Encoder = Codec;
    type Decoder = Codec;

    fn encoder(&mut self) -> Codec {
        Codec
    }

    fn decoder(&mut self) -> Codec {
        Codec
    }
}

impl tonic::codec::Encoder for Codec {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write_to(dst);
        Ok(())
    }
}

impl tonic::codec::Decoder for Codec {
    type Item = StreamAccessLogsResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        StreamAccessLogsResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("StreamAccessLogsResponse: {e}")))
    }
}

// === impl Outgoing ===

impl tokio_stream::Stream for Outgoing {
    type Item = Encoded;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.outbox.take(self.stream, &self.node, cx.waker())
    }
}
