//! Protocol pieces shared by the SotW and delta state machines: nonces, node checks, errors, and
//! the push order.

use std::fmt;

use super::snapshot::TypeUrl;

use envoy_types::pb::{envoy::config::core::v3::Node, google::rpc::Status as RpcStatus};

/// A response nonce. Nonces are per stream, so a counter is enough to make them unique.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Nonce(u64);

/// The node a stream was opened with; later requests may repeat it but not change it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    id: String,
    cluster: String,
}

/// Why the proxy rejected a response (a NACK's `error_detail`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub nonce: Nonce,
    pub code: i32,
    pub message: String,
}

/// Where one resource type of a stream stands, as `switchyard proxy-status` shows it (the
/// states `istioctl proxy-status` uses).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TypeSync {
    /// The proxy has not asked for this type.
    NotRequested,
    /// Asked for, but nothing sent yet (no snapshot for the proxy yet).
    NotSent,
    /// The latest response was acknowledged.
    Synced,
    /// The latest response is not acknowledged yet.
    Stale,
    /// The proxy rejected the latest response; it keeps running what it had before.
    Nacked { message: String },
}

impl TypeSync {
    /// From a type's protocol state: whether it was requested, the nonce of the latest
    /// response, whether that one awaits its answer, and the stream's last rejection.
    pub(crate) fn of(
        requested: bool,
        last_nonce: Option<Nonce>,
        awaiting_ack: bool,
        rejection: Option<&Rejection>,
    ) -> TypeSync {
        match (requested, last_nonce) {
            (false, _) => TypeSync::NotRequested,
            (true, None) => TypeSync::NotSent,
            (true, Some(_)) if awaiting_ack => TypeSync::Stale,
            (true, Some(last)) => match rejection {
                Some(r) if r.nonce == last => TypeSync::Nacked {
                    message: r.message.clone(),
                },
                _ => TypeSync::Synced,
            },
        }
    }
}

/// A request that ends the stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("the first discovery request must carry a node")]
    MissingNode,

    #[error("node changed mid-stream from {was:?} to {now:?}")]
    NodeChanged { was: String, now: String },
}

// === impl Nonce ===

impl Nonce {
    /// `None` for anything this stream did not write, which can only be stale.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        s.parse().ok().map(Nonce)
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Default)]
pub(crate) struct NonceCounter(u64);

impl NonceCounter {
    pub(crate) fn next(&mut self) -> Nonce {
        self.0 += 1;
        Nonce(self.0)
    }
}

/// What a request's `response_nonce` means for one type on this stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    /// No nonce, or a nonce from an earlier stream (a reconnect): a fresh request.
    Initial,
    /// Answers the latest response of this type: an ACK or a NACK.
    Current,
    /// Answers a response that a newer one superseded.
    Stale,
}

pub(crate) fn check_nonce(response_nonce: &str, last_sent: Option<Nonce>) -> NonceCheck {
    if response_nonce.is_empty() {
        return NonceCheck::Initial;
    }
    match last_sent {
        None => NonceCheck::Initial,
        Some(last) if Nonce::parse(response_nonce) == Some(last) => NonceCheck::Current,
        Some(_) => NonceCheck::Stale,
    }
}

// === impl NodeIdentity ===

impl NodeIdentity {
    pub fn new(node: &Node) -> Self {
        NodeIdentity {
            id: node.id.clone(),
            cluster: node.cluster.clone(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Envoy may send the node on every request (`set_node_on_first_message_only: false`); it
    /// must stay the same, since the stream was authorized for the first one.
    pub(crate) fn check(&self, node: Option<&Node>) -> Result<(), StreamError> {
        match node {
            Some(node) if node.id != self.id || node.cluster != self.cluster => {
                Err(StreamError::NodeChanged {
                    was: format!("{}/{}", self.cluster, self.id),
                    now: format!("{}/{}", node.cluster, node.id),
                })
            }
            _ => Ok(()),
        }
    }
}

// === impl Rejection ===

impl Rejection {
    pub(crate) fn new(nonce: Nonce, status: &RpcStatus) -> Self {
        Rejection {
            nonce,
            code: status.code,
            message: status.message.clone(),
        }
    }
}

// === impl StreamError ===

impl From<StreamError> for tonic::Status {
    fn from(error: StreamError) -> Self {
        match error {
            StreamError::MissingNode => tonic::Status::invalid_argument(error.to_string()),
            StreamError::NodeChanged { .. } => tonic::Status::permission_denied(error.to_string()),
        }
    }
}

/// What a protocol state machine decides per type; [`push`] walks the types in push order.
pub(crate) trait PushOrder {
    type Plan;
    type Response;

    /// What a response for one type would carry, or `None` when it needs none.
    fn plan(&mut self, type_url: TypeUrl) -> Option<Self::Plan>;

    /// Whether the last response for a type is still unacknowledged.
    fn waiting(&self, type_url: TypeUrl) -> bool;

    /// Sends a planned response, recording it as unacknowledged.
    fn respond(&mut self, type_url: TypeUrl, plan: Self::Plan) -> Self::Response;
}

/// The responses due now, CDS → EDS → LDS → RDS → SDS, stopping at the first type that has
/// something to send but still awaits an ACK: the ACK will come and push again, and a later
/// type never overtakes an earlier one.
pub(crate) fn push<P: PushOrder>(protocol: &mut P) -> Vec<P::Response> {
    let mut out = Vec::new();
    for type_url in TypeUrl::ALL {
        let Some(plan) = protocol.plan(type_url) else {
            continue;
        };
        if protocol.waiting(type_url) {
            break;
        }
        out.push(protocol.respond(type_url, plan));
    }
    out
}
