//! The state-of-the-world ADS protocol for one stream, as synchronous code without IO.
//!
//! Rules (`xds_protocol.rst`; `reference/XDS-NOTES.md` §5):
//! - A response goes out for a type only after the client asked for that type, and only when
//!   what it would carry differs from what was last sent (or the client asked for new names).
//! - LDS/CDS responses carry every subscribed resource. EDS/RDS/SDS responses carry every
//!   subscribed resource that exists too: Envoy treats a named resource missing from a SotW
//!   response as removed, so a subset would drop resources. Names that do not exist yet are
//!   remembered and sent once they appear; a named type with nothing to send is not answered.
//! - After a NACK (`error_detail` with the current nonce) the type is parked: the rejected
//!   content is not sent again, only a different one (go-control-plane resends it forever).
//! - A name unsubscribed is forgotten as sent, so subscribing to it again gets it again.
//! - A request with a stale nonce is not answered; its `resource_names` still replace the
//!   subscription, because SotW requests always carry the full list.
//! - At most one response per type is unacknowledged. Pushes walk CDS → EDS → LDS → RDS → SDS
//!   and stop at the first type that has something to send but still awaits an ACK, so a later
//!   type never overtakes an earlier one.
//! - Removed clusters go out in the same CDS response that adds their replacements; routes
//!   that pointed at them were already replaced in the same push order, and Envoy drains a
//!   removed cluster's connections, so no separate "remove later" phase is needed.
//! - A CDS response that adds or changes clusters makes the next EDS response go out even if
//!   EDS did not change: an updated cluster warms until it receives a CLA.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DiscoveryRequest, DiscoveryResponse, Resource as WrappedResource,
        },
    },
    google::protobuf::Any,
};

use super::{
    acked::{AckedConfig, Change},
    snapshot::{Snapshot, TypeUrl, Version, VersionedResource, to_any},
    stream::{
        self, NodeIdentity, Nonce, NonceCheck, NonceCounter, Rejection, StreamError, TypeSync,
        check_nonce,
    },
};

#[cfg(test)]
mod tests;

/// The protocol state of one SotW ADS stream.
#[derive(Debug)]
pub struct SotwStream {
    node: NodeIdentity,
    snapshot: Option<Arc<Snapshot>>,
    types: [TypeState; TypeUrl::ALL.len()],
    nonces: NonceCounter,
}

#[derive(Debug, Default)]
struct TypeState {
    /// Nothing is pushed for a type the client never asked for.
    requested: bool,
    subscription: Subscription,
    /// What the last response carried; adopted from the client's `version_info` when it
    /// reconnects already holding exactly what we would send.
    sent: Option<Sent>,
    last_nonce: Option<Nonce>,
    awaiting_ack: bool,
    /// The version the client rejected last; never sent again.
    rejected: Option<Version>,
    rejection: Option<Rejection>,
    /// `version_info` of the first request: what the client holds from an earlier stream.
    client_version: Option<String>,
    /// Send the next response even if nothing changed (EDS after a cluster update).
    force: bool,
    /// What the proxy runs, for `switchyard proxy-config`.
    acked: AckedConfig,
}

#[derive(Debug)]
struct Sent {
    version: Version,
    /// Names share the snapshot's allocation; per-stream memory is names and 64-bit versions.
    resources: BTreeMap<Arc<str>, Version>,
}

#[derive(Debug, Default)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// The legacy rule: an empty list means wildcard only until a non-empty one was sent.
    sent_names: bool,
}

/// What a response for one type would carry.
pub(crate) struct Plan {
    version: Version,
    resources: Vec<Arc<VersionedResource>>,
}

// === impl SotwStream ===

impl SotwStream {
    pub fn new(node: &Node) -> Self {
        SotwStream {
            node: NodeIdentity::new(node),
            snapshot: None,
            types: Default::default(),
            nonces: NonceCounter::default(),
        }
    }

    pub fn node(&self) -> &NodeIdentity {
        &self.node
    }

    /// Handles one request and returns the responses to send, in push order.
    pub fn handle_request(
        &mut self,
        req: DiscoveryRequest,
    ) -> Result<Vec<DiscoveryResponse>, StreamError> {
        self.node.check(req.node.as_ref())?;
        let Some(type_url) = TypeUrl::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "ignoring request for an unsupported type");
            return Ok(Vec::new());
        };
        let state = &mut self.types[type_url.index()];
        state.subscription.update(type_url, &req.resource_names);
        // A name the client stopped asking for is forgotten as sent: Envoy drops its copy with
        // the last watch on it, so asking again (a cluster replaced by one that refers to the
        // same secret) must be answered, even with the very same content.
        if let Some(sent) = &mut state.sent {
            let subscription = &state.subscription;
            sent.resources.retain(|name, _| subscription.covers(name));
        }
        let subscription = &state.subscription;
        state.acked.retain(|name| subscription.covers(name));
        let first = !state.requested;
        state.requested = true;

        match check_nonce(&req.response_nonce, state.last_nonce) {
            NonceCheck::Stale => {
                tracing::debug!(%type_url, nonce = %req.response_nonce, "ignoring stale nonce");
                return Ok(Vec::new());
            }
            NonceCheck::Initial => {
                if first && !req.version_info.is_empty() {
                    state.client_version = Some(req.version_info);
                } else if !first {
                    // The client asks afresh (it dropped the nonce): answer with the current
                    // state instead of assuming it still holds what we sent.
                    state.sent = None;
                    state.awaiting_ack = false;
                    state.acked.forget_in_flight();
                }
                if let Some(status) = &req.error_detail {
                    tracing::warn!(%type_url, code = status.code, detail = %status.message,
                        "proxy rejected configuration from an earlier stream");
                }
            }
            NonceCheck::Current => {
                state.awaiting_ack = false;
                if let (Some(status), Some(nonce)) = (&req.error_detail, state.last_nonce) {
                    let version = state.sent.as_ref().map(|s| s.version);
                    let shown = version.map(|v| v.to_string()).unwrap_or_default();
                    tracing::warn!(%type_url, node = %self.node.id(), %nonce, version = %shown,
                        code = status.code, detail = %status.message,
                        "proxy rejected configuration; waiting for a new one");
                    state.rejected = version;
                    state.rejection = Some(Rejection::new(nonce, status));
                    state.acked.nacked(&status.message);
                } else {
                    state.rejected = None;
                    state.acked.acked();
                }
            }
        }
        Ok(self.flush())
    }

    /// Takes a new snapshot and returns the responses it causes, in push order.
    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DiscoveryResponse> {
        self.snapshot = Some(snapshot);
        self.flush()
    }

    /// The last NACK for a type, if the client has rejected anything on this stream.
    pub fn rejection(&self, type_url: TypeUrl) -> Option<&Rejection> {
        self.types[type_url.index()].rejection.as_ref()
    }

    /// Whether the latest response for a type is still unacknowledged.
    pub fn awaiting_ack(&self, type_url: TypeUrl) -> bool {
        self.types[type_url.index()].awaiting_ack
    }

    /// What the proxy runs of a type, as far as its ACKs and NACKs tell.
    pub(crate) fn acked(&self, type_url: TypeUrl) -> &AckedConfig {
        &self.types[type_url.index()].acked
    }

    /// Where a type stands with the proxy.
    pub fn sync(&self, type_url: TypeUrl) -> TypeSync {
        let state = &self.types[type_url.index()];
        TypeSync::of(
            state.requested,
            state.last_nonce,
            state.awaiting_ack,
            state.rejection.as_ref(),
        )
    }

    fn flush(&mut self) -> Vec<DiscoveryResponse> {
        stream::push(self)
    }
}

impl stream::PushOrder for SotwStream {
    type Plan = Plan;
    type Response = DiscoveryResponse;

    fn plan(&mut self, type_url: TypeUrl) -> Option<Plan> {
        let snapshot = self.snapshot.as_ref()?;
        let state = &mut self.types[type_url.index()];
        if !state.requested {
            return None;
        }
        let available = snapshot.resources(type_url);
        if state.subscription.wildcard
            && !state.force
            && state
                .sent
                .as_ref()
                .is_some_and(|s| s.version == available.version())
        {
            // The common case of an ACK or an unrelated change, without building the set.
            return None;
        }
        let resources: Vec<Arc<VersionedResource>> = if state.subscription.wildcard {
            available.iter().cloned().collect()
        } else {
            state
                .subscription
                .names
                .iter()
                .filter_map(|n| available.get(n).cloned())
                .collect()
        };
        let version = Version::combine(resources.iter().map(|r| (r.name(), r.version())));
        let sent_map = || {
            resources
                .iter()
                .map(|r| (r.shared_name().clone(), r.version()))
                .collect()
        };

        if state.sent.is_none()
            && let Some(client) = state.client_version.take()
            && client == version.to_string()
        {
            state.sent = Some(Sent {
                version,
                resources: sent_map(),
            });
            state.acked.adopt(&resources);
            return None;
        }
        if state.rejected == Some(version) {
            return None;
        }
        let needed = match &state.sent {
            None => type_url.is_wildcard() || !resources.is_empty(),
            Some(sent) => {
                let changed = resources
                    .iter()
                    .any(|r| sent.resources.get(r.name()) != Some(&r.version()));
                let gone = sent
                    .resources
                    .keys()
                    .any(|n| state.subscription.covers(n) && !available.contains(n));
                changed || gone || (state.force && !resources.is_empty())
            }
        };
        needed.then_some(Plan { version, resources })
    }

    fn waiting(&self, type_url: TypeUrl) -> bool {
        self.types[type_url.index()].awaiting_ack
    }

    fn respond(&mut self, type_url: TypeUrl, plan: Plan) -> DiscoveryResponse {
        let nonce = self.nonces.next();
        let state = &mut self.types[type_url.index()];
        let clusters_changed = type_url == TypeUrl::Cluster
            && plan.resources.iter().any(|r| {
                state.sent.as_ref().and_then(|s| s.resources.get(r.name())) != Some(&r.version())
            });
        state.sent = Some(Sent {
            version: plan.version,
            resources: plan
                .resources
                .iter()
                .map(|r| (r.shared_name().clone(), r.version()))
                .collect(),
        });
        state.acked.sent(Change::Replace(&plan.resources));
        state.last_nonce = Some(nonce);
        state.awaiting_ack = true;
        state.force = false;
        state.client_version = None;
        if clusters_changed {
            self.types[TypeUrl::ClusterLoadAssignment.index()].force = true;
        }
        tracing::debug!(%type_url, %nonce, version = %plan.version,
            resources = plan.resources.len(), "sending response");
        DiscoveryResponse {
            version_info: plan.version.to_string(),
            resources: plan.resources.iter().map(|r| wire(type_url, r)).collect(),
            type_url: type_url.type_url().to_string(),
            nonce: nonce.to_string(),
            ..Default::default()
        }
    }
}

/// A resource as a SotW response carries it: as it is, or, when its message has no name of its
/// own, wrapped in a `Resource` that names it ([`TypeUrl::names_itself`]).
fn wire(type_url: TypeUrl, r: &VersionedResource) -> Any {
    if type_url.names_itself() {
        return r.any().clone();
    }
    to_any(&WrappedResource {
        name: r.name().to_owned(),
        version: r.version().to_string(),
        resource: Some(r.any().clone()),
        ..Default::default()
    })
}

// === impl Subscription ===

impl Subscription {
    /// A SotW request always carries the complete list of names.
    fn update(&mut self, type_url: TypeUrl, names: &[String]) {
        if names.is_empty() {
            self.wildcard = type_url.is_wildcard() && !self.sent_names;
            self.names.clear();
            return;
        }
        self.sent_names = true;
        self.wildcard = names.iter().any(|n| n == "*");
        if !names.iter().eq(self.names.iter()) {
            self.names = names.iter().filter(|n| *n != "*").cloned().collect();
        }
    }

    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}
