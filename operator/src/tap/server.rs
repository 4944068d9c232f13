//! The `AccessLogService` tapped proxies stream their requests to, beside ADS on the xDS
//! port: a stream is authenticated exactly as an ADS stream is, and its requests are handed
//! to the tap sessions as the authenticated proxy's, never as the node's a message claims.
//!
//! ```text
//!  proxy ──StreamAccessLogs──▶ authenticate_stream ─▶ ProxyId
//!          every message ─▶ http_logs ─▶ events_of(ProxyId, entries, peers) ─▶ Hub::publish
//! ```

use std::{sync::Arc, time::Instant};

use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse,
    access_log_service_server::{AccessLogService, AccessLogServiceServer},
    stream_access_logs_message::LogEntries,
};
use switchyard_adapters::{envoy::TAP_LOG_NAME, model::ProxyId};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::{Hub, events_of};
use crate::{
    edges::SharedPeers,
    xds::{auth::Authenticate, beside::Beside},
};

/// The largest message read: 1 MiB. A proxy sends what it buffered over one flush interval,
/// at most 16 KiB of entries by the tap's configuration.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Access-log streams open at once (one per tapped proxy).
const MAX_STREAMS: usize = 4_096;

/// The tonic service.
#[derive(Clone)]
pub struct AccessLogServer {
    streams: Beside,
    hub: Arc<Hub>,
    peers: SharedPeers,
}

impl AccessLogServer {
    /// Streams end when `drain` turns true (the xDS server's drain).
    pub fn new(
        auth: Arc<dyn Authenticate>,
        hub: Arc<Hub>,
        peers: SharedPeers,
        drain: watch::Receiver<bool>,
    ) -> Self {
        AccessLogServer {
            streams: Beside::new("StreamAccessLogsMessage", auth, MAX_STREAMS, drain),
            hub,
            peers,
        }
    }

    pub fn into_service(self) -> AccessLogServiceServer<Self> {
        AccessLogServiceServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn publish(&self, proxy: &ProxyId, message: &StreamAccessLogsMessage) {
        let Some(LogEntries::HttpLogs(logs)) = &message.log_entries else {
            return;
        };
        let events = events_of(proxy, &logs.log_entry, &self.peers.get());
        let dropped = self.hub.publish(proxy, &events, Instant::now());
        if dropped > 0 {
            tracing::debug!(%proxy, dropped, "tap events over a session's rate or queue");
        }
    }
}

impl std::fmt::Debug for AccessLogServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLogServer").finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl AccessLogService for AccessLogServer {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let log_name = |m: &StreamAccessLogsMessage| {
            let name = m.identifier.as_ref().map(|i| i.log_name.as_str());
            match name.unwrap_or_default() {
                TAP_LOG_NAME => Ok(()),
                other => Err(Status::invalid_argument(format!(
                    "log_name {other:?}: this control plane takes only {TAP_LOG_NAME:?}"
                ))),
            }
        };
        self.streams
            .serve(
                request,
                |m: &StreamAccessLogsMessage| m.identifier.as_ref().and_then(|i| i.node.as_ref()),
                log_name,
                |proxy, message| self.publish(proxy, message),
            )
            .await?;
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}
