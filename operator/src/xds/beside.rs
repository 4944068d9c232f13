//! Streams beside ADS on the xDS port (the metrics push, the tap's access logs): bounded in
//! number, authenticated exactly as an ADS stream is, ended by the xDS server's drain.
//!
//! ```text
//!  proxy ──stream──▶ slot? ─▶ verify(credentials) ─▶ first message's node ─▶ authenticate ─▶ ProxyId
//!                                     every message ─▶ handle(ProxyId, message) ─ until end or drain
//! ```

use std::{sync::Arc, time::Duration};

use envoy_types::pb::envoy::config::core::v3::Node;
use switchyard_adapters::model::ProxyId;
use tokio::sync::{Semaphore, watch};
use tonic::{Request, Status, Streaming, metadata::MetadataMap};

use super::auth::Authenticate;

/// How long a stream may take to have its credentials verified, and then to send its first
/// message. A proxy opens such a stream when it has something to send, so the bound only keeps
/// an idle unauthenticated stream from holding a slot.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// One kind of stream beside ADS: its name in errors and logs, its slots, the drain.
#[derive(Clone)]
pub struct Beside {
    what: &'static str,
    auth: Arc<dyn Authenticate>,
    slots: Arc<Semaphore>,
    drain: watch::Receiver<bool>,
}

impl std::fmt::Debug for Beside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beside")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl Beside {
    /// Streams of `what` (the message's name, e.g. `StreamMetricsMessage`), at most `max` open
    /// at once, ended when `drain` turns true.
    pub fn new(
        what: &'static str,
        auth: Arc<dyn Authenticate>,
        max: usize,
        drain: watch::Receiver<bool>,
    ) -> Self {
        Beside {
            what,
            auth,
            slots: Arc::new(Semaphore::new(max)),
            drain,
        }
    }

    /// Serves one stream: a slot, then authentication by the node `node_of` finds in the first
    /// message, then `check` on that first message, then every message (the first included) to
    /// `handle` under the authenticated proxy, until the stream ends or the server drains.
    ///
    /// # Errors
    ///
    /// No slot free, credentials refused, no first message in time, one without a node, or what
    /// `check` refuses.
    pub async fn serve<M>(
        &self,
        request: Request<Streaming<M>>,
        node_of: impl Fn(&M) -> Option<&Node>,
        check: impl FnOnce(&M) -> Result<(), Status>,
        mut handle: impl FnMut(&ProxyId, &M),
    ) -> Result<(), Status> {
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(format!(
                "too many {} streams",
                self.what
            )));
        };
        let (metadata, _, mut inbound) = request.into_parts();
        let (proxy, first) = self.authenticate(&metadata, &mut inbound, node_of).await?;
        check(&first)?;
        tracing::debug!(%proxy, what = self.what, "stream open");
        handle(&proxy, &first);
        let mut drain = self.drain.clone();
        loop {
            let message = tokio::select! {
                m = inbound.message() => m?,
                _ = drain.wait_for(|d| *d) => None,
            };
            let Some(message) = message else { break };
            handle(&proxy, &message);
        }
        tracing::debug!(%proxy, what = self.what, "stream closed");
        Ok(())
    }

    /// The credentials, then the node of the first message against them: the proxy the
    /// credentials prove, never the one the node claims, and that first message.
    async fn authenticate<M>(
        &self,
        metadata: &MetadataMap,
        inbound: &mut Streaming<M>,
        node_of: impl Fn(&M) -> Option<&Node>,
    ) -> Result<(ProxyId, M), Status> {
        let what = self.what;
        match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, self.auth.verify(metadata)).await {
            Ok(Ok(())) => {}
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::unavailable("credentials not verified in time")),
        }
        let first = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(Status::deadline_exceeded(format!("no {what} in time"))),
            Ok(message) => {
                message?.ok_or_else(|| Status::cancelled("stream closed before any message"))?
            }
        };
        let node = node_of(&first).ok_or_else(|| {
            Status::invalid_argument(format!("the first {what} carries no identifier.node"))
        })?;
        let key = self.auth.authenticate(metadata, node).await?;
        let proxy = key
            .as_str()
            .split_once('/')
            .map(|(namespace, pod)| ProxyId {
                namespace: namespace.to_owned(),
                pod: pod.to_owned(),
            })
            .ok_or_else(|| Status::internal("an authenticated proxy without a namespace"))?;
        Ok((proxy, first))
    }
}
