//! The incremental (delta) ADS protocol for one stream, as synchronous code without IO.
//!
//! Rules (`xds_protocol.rst`, "incremental xDS"; `reference/XDS-NOTES.md` §5.4):
//! - The server tracks, per resource, the version the client holds: from
//!   `initial_resource_versions` on reconnect, then from what it sent. Only resources whose
//!   version differs are sent; resources the client holds that are gone go in
//!   `removed_resources`. Explicitly subscribed names that do not exist are answered at once in
//!   `removed_resources` (so Envoy does not wait 15 s), once, and sent when they appear.
//! - Wildcard is `*`, or (legacy, LDS/CDS only) a first request with no names at all. The first
//!   response to a wildcard subscription goes out even if empty: Envoy's initial fetch waits
//!   for it.
//! - Subscription changes apply even when the nonce is stale. Unsubscribing a name that
//!   wildcard still covers is answered with that name (in `resources` or `removed_resources`).
//! - After a NACK nothing is resent: the server records what it sent as held, so only a newer
//!   version of a resource goes out (the "park" rule).
//! - One unacknowledged response per type; pushes go CDS → EDS → LDS → RDS → SDS and stop at a
//!   type that still awaits an ACK. A cluster that was added or changed gets its CLA resent,
//!   since an updated cluster warms until a CLA arrives.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource},
};

use super::{
    acked::{AckedConfig, Change},
    snapshot::{Snapshot, TypeUrl, Version, VersionedResource},
    stream::{
        self, NodeIdentity, Nonce, NonceCheck, NonceCounter, Rejection, StreamError, TypeSync,
        check_nonce,
    },
};

#[cfg(test)]
mod tests;

const WILDCARD: &str = "*";

/// The protocol state of one delta ADS stream.
#[derive(Debug)]
pub struct DeltaStream {
    node: NodeIdentity,
    snapshot: Option<Arc<Snapshot>>,
    types: [TypeState; TypeUrl::ALL.len()],
    nonces: NonceCounter,
}

#[derive(Debug, Default)]
struct TypeState {
    requested: bool,
    wildcard: bool,
    names: BTreeSet<Arc<str>>,
    /// What the client holds, as far as this stream knows.
    held: BTreeMap<Arc<str>, Held>,
    last_nonce: Option<Nonce>,
    awaiting_ack: bool,
    /// What the unacknowledged response carried, so a NACK knows what was rejected.
    in_flight: Vec<(Arc<str>, Version)>,
    /// Resource versions the client rejected; a forced resend skips them.
    rejected: BTreeMap<Arc<str>, Version>,
    rejection: Option<Rejection>,
    /// A wildcard subscription gets a first response even when it is empty.
    answered: bool,
    /// Names to answer even if the client holds them.
    force: BTreeSet<Arc<str>>,
    /// What the proxy runs, for `switchyard proxy-config`.
    acked: AckedConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    At(Version),
    /// A version another server wrote: never equal to ours, so the resource is resent.
    Foreign,
    /// The client was told the resource does not exist.
    Absent,
}

pub(crate) struct Plan {
    resources: Vec<Arc<VersionedResource>>,
    removed: BTreeSet<Arc<str>>,
}

// === impl DeltaStream ===

impl DeltaStream {
    pub fn new(node: &Node) -> Self {
        DeltaStream {
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
        req: DeltaDiscoveryRequest,
    ) -> Result<Vec<DeltaDiscoveryResponse>, StreamError> {
        self.node.check(req.node.as_ref())?;
        let Some(type_url) = TypeUrl::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "ignoring request for an unsupported type");
            return Ok(Vec::new());
        };
        let state = &mut self.types[type_url.index()];
        if !state.requested {
            state.requested = true;
            state.wildcard = type_url.is_wildcard()
                && req.resource_names_subscribe.is_empty()
                && req.resource_names_unsubscribe.is_empty();
            for (name, version) in req.initial_resource_versions {
                let name: Arc<str> = name.into();
                let held = Version::parse(&version).map_or(Held::Foreign, Held::At);
                if let Held::At(version) = held {
                    state.acked.held_before(name.clone(), version);
                }
                state.held.insert(name, held);
            }
            if let Some(snapshot) = &self.snapshot {
                state.acked.confirm_held(snapshot.resources(type_url));
            }
        }
        state.subscribe(req.resource_names_subscribe);
        state.unsubscribe(req.resource_names_unsubscribe);

        match check_nonce(&req.response_nonce, state.last_nonce) {
            NonceCheck::Stale => {
                // The subscription change above still counts; the answer waits for the ACK of
                // the newer response, which `flush` enforces.
                tracing::debug!(%type_url, nonce = %req.response_nonce, "stale nonce");
            }
            NonceCheck::Initial => {
                if let Some(status) = &req.error_detail {
                    tracing::warn!(%type_url, code = status.code, detail = %status.message,
                        "proxy rejected configuration from an earlier stream");
                }
            }
            NonceCheck::Current => {
                state.awaiting_ack = false;
                let in_flight = std::mem::take(&mut state.in_flight);
                if let (Some(status), Some(nonce)) = (&req.error_detail, state.last_nonce) {
                    tracing::warn!(%type_url, node = %self.node.id(), %nonce,
                        resources = in_flight.len(), code = status.code,
                        detail = %status.message,
                        "proxy rejected configuration; waiting for a new one");
                    state.rejected.extend(in_flight);
                    state.rejection = Some(Rejection::new(nonce, status));
                    state.acked.nacked(&status.message);
                } else {
                    state.acked.acked();
                }
            }
        }
        Ok(self.flush())
    }

    /// Takes a new snapshot and returns the responses it causes, in push order.
    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DeltaDiscoveryResponse> {
        for type_url in TypeUrl::ALL {
            self.types[type_url.index()]
                .acked
                .confirm_held(snapshot.resources(type_url));
        }
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

    fn flush(&mut self) -> Vec<DeltaDiscoveryResponse> {
        stream::push(self)
    }
}

impl stream::PushOrder for DeltaStream {
    type Plan = Plan;
    type Response = DeltaDiscoveryResponse;

    fn plan(&mut self, type_url: TypeUrl) -> Option<Plan> {
        let snapshot = self.snapshot.as_ref()?;
        let state = &self.types[type_url.index()];
        if !state.requested {
            return None;
        }
        let available = snapshot.resources(type_url);
        let outdated = |r: &&Arc<VersionedResource>| {
            let forced = state.force.contains(r.name())
                && state.rejected.get(r.name()) != Some(&r.version());
            forced || state.held.get(r.name()) != Some(&Held::At(r.version()))
        };
        let resources: Vec<Arc<VersionedResource>> = if state.wildcard {
            available.iter().filter(outdated).cloned().collect()
        } else {
            state
                .names
                .iter()
                .filter_map(|n| available.get(n))
                .filter(outdated)
                .cloned()
                .collect()
        };

        let mut removed = BTreeSet::new();
        for name in &state.names {
            if !available.contains(name) && state.held.get(name) != Some(&Held::Absent) {
                removed.insert(name.clone());
            }
        }
        if state.wildcard {
            let held = state
                .held
                .iter()
                .filter(|(_, h)| **h != Held::Absent)
                .map(|(n, _)| n);
            for name in held.chain(&state.force) {
                if !available.contains(name) && !state.names.contains(name) {
                    removed.insert(name.clone());
                }
            }
        }

        let first_wildcard = state.wildcard && !state.answered;
        if resources.is_empty() && removed.is_empty() && !first_wildcard {
            return None;
        }
        Some(Plan { resources, removed })
    }

    fn waiting(&self, type_url: TypeUrl) -> bool {
        self.types[type_url.index()].awaiting_ack
    }

    fn respond(&mut self, type_url: TypeUrl, plan: Plan) -> DeltaDiscoveryResponse {
        let nonce = self.nonces.next();
        let system_version = self
            .snapshot
            .as_ref()
            .map(|s| s.version(type_url).to_string())
            .unwrap_or_default();
        let state = &mut self.types[type_url.index()];
        let mut changed = Vec::new();
        for r in &plan.resources {
            let held = state
                .held
                .insert(r.shared_name().clone(), Held::At(r.version()));
            if held != Some(Held::At(r.version())) {
                changed.push(r);
            }
            state.rejected.remove(r.name());
        }
        for name in &plan.removed {
            // Only explicit names need the "told absent" mark; forgetting the rest keeps
            // per-stream memory from growing with every deleted resource.
            if state.names.contains(name) {
                state.held.insert(name.clone(), Held::Absent);
            } else {
                state.held.remove(name);
            }
            state.rejected.remove(name);
        }
        state.in_flight = plan
            .resources
            .iter()
            .map(|r| (r.shared_name().clone(), r.version()))
            .collect();
        state.acked.sent(Change::Update {
            resources: &plan.resources,
            removed: &plan.removed,
        });
        state.force.clear();
        state.answered = true;
        state.last_nonce = Some(nonce);
        state.awaiting_ack = true;

        if type_url == TypeUrl::Cluster {
            // Only real changes: Envoy ignores a cluster identical to the one it has, so a
            // forced resend does not make it warm.
            let endpoints = &mut self.types[TypeUrl::ClusterLoadAssignment.index()];
            let needed = changed
                .iter()
                .flat_map(|r| r.references(TypeUrl::ClusterLoadAssignment));
            for name in needed {
                if endpoints.covers(name) {
                    endpoints.force.insert(name.clone());
                }
            }
        }
        tracing::debug!(%type_url, %nonce, resources = plan.resources.len(),
            removed = plan.removed.len(), "sending delta response");
        DeltaDiscoveryResponse {
            system_version_info: system_version,
            resources: plan
                .resources
                .iter()
                .map(|r| Resource {
                    name: r.name().to_string(),
                    version: r.version().to_string(),
                    resource: Some(r.any().clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: type_url.type_url().to_string(),
            removed_resources: plan.removed.iter().map(|n| n.to_string()).collect(),
            nonce: nonce.to_string(),
            ..Default::default()
        }
    }
}

// === impl TypeState ===

impl TypeState {
    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    fn subscribe(&mut self, names: Vec<String>) {
        for name in names {
            if name == WILDCARD {
                self.wildcard = true;
            } else {
                self.names.insert(name.into());
            }
        }
    }

    fn unsubscribe(&mut self, names: Vec<String>) {
        for name in names {
            if name == WILDCARD {
                self.wildcard = false;
                let names = &self.names;
                self.held.retain(|n, _| names.contains(n));
                self.acked.retain(|n| names.contains(n));
                self.force.retain(|n| names.contains(n));
                continue;
            }
            self.names.remove(name.as_str());
            self.held.remove(name.as_str());
            // The client drops its copy with its last interest in the name.
            self.acked.retain(|n| n != name);
            self.rejected.remove(name.as_str());
            if self.wildcard {
                // The client drops the resource, but wildcard still covers it: the protocol
                // says it must be answered again, present or removed (XDS-NOTES §5.4).
                self.force.insert(name.into());
            } else {
                self.force.remove(name.as_str());
            }
        }
    }
}
