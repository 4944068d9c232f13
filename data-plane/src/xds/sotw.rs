//! State-of-the-world ADS on top of the delta client: each SotW response is turned into the
//! delta response it amounts to (resources named from inside their messages, or by their
//! `envoy.service.discovery.v3.Resource` wrapper when they come in one; a held resource
//! the response leaves out is removed, as Envoy treats it), and the delta client's requests
//! back into SotW requests, which always carry a type's whole subscription, the last accepted
//! version and the nonce being answered.
//!
//! Validation, subscriptions and static stability are the delta client's, unchanged.

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource as WireResource,
        },
    },
    google::protobuf::Any,
};
use prost::{Message as _, Name as _};

use super::{Config, DeltaClient, Error, TypeUrl, resource};

/// What handling one SotW response led to.
#[derive(Debug, Default)]
pub struct SotwOutcome {
    /// Requests to send, in order: subscription changes, then the ACK or NACK.
    pub requests: Vec<DiscoveryRequest>,
    /// Whether the accepted configuration changed.
    pub changed: bool,
    /// Why the response was rejected, if it was.
    pub rejected: Option<Error>,
}

/// The client side of one proxy's SotW ADS session; like [`DeltaClient`] it outlives streams.
#[derive(Debug)]
pub struct SotwClient {
    delta: DeltaClient,
    /// Per type, the `version_info` of the last accepted response.
    versions: [String; TypeUrl::ALL.len()],
    /// Per type, the nonce of the last response, which every request of the type answers.
    nonces: [String; TypeUrl::ALL.len()],
}

impl SotwClient {
    pub fn new(node: Node) -> Self {
        SotwClient {
            delta: DeltaClient::new(node),
            versions: Default::default(),
            nonces: Default::default(),
        }
    }

    /// The accepted configuration.
    pub fn config(&self) -> &Config {
        self.delta.config()
    }

    /// Whether every subscribed type has had a response accepted.
    pub fn is_synced(&self) -> bool {
        self.delta.is_synced()
    }

    /// The requests that open a stream: one per type with subscriptions, carrying the last
    /// accepted version so an unchanged configuration is not sent again; the first carries
    /// the node. Nonces belong to a stream, so they start over.
    pub fn initial_requests(&mut self) -> Vec<DiscoveryRequest> {
        self.nonces = Default::default();
        let mut requests: Vec<DiscoveryRequest> = self
            .delta
            .initial_requests()
            .into_iter()
            .filter_map(|d| TypeUrl::from_type_url(&d.type_url))
            .map(|ty| self.request(ty, None))
            .collect();
        if let Some(first) = requests.first_mut() {
            first.node = Some(self.delta.node().clone());
        }
        requests
    }

    /// Handles one response: accepted as a whole (ACK with its version) or rejected (NACK with
    /// the previous version, configuration kept).
    pub fn handle_response(&mut self, response: DiscoveryResponse) -> SotwOutcome {
        let DiscoveryResponse {
            version_info,
            resources,
            type_url,
            nonce,
            ..
        } = response;
        let Some(ty) = TypeUrl::from_type_url(&type_url) else {
            let error = Error::UnknownType(type_url.clone());
            return SotwOutcome {
                requests: vec![DiscoveryRequest {
                    type_url,
                    response_nonce: nonce,
                    error_detail: Some(status(&error)),
                    ..Default::default()
                }],
                rejected: Some(error),
                ..Default::default()
            };
        };
        self.nonces[ty.index()] = nonce;

        let wire: Vec<WireResource> = resources
            .into_iter()
            .map(|any| {
                let (name, any) = self.named(ty, any);
                WireResource {
                    name,
                    version: version_info.clone(),
                    resource: Some(any),
                    ..Default::default()
                }
            })
            .collect();
        let present: std::collections::BTreeSet<&str> =
            wire.iter().map(|w| w.name.as_str()).collect();
        let removed: Vec<String> = self
            .delta
            .config()
            .versions(ty)
            .into_keys()
            .filter(|name| !present.contains(name.as_str()))
            .collect();
        let outcome = self.delta.handle_response(DeltaDiscoveryResponse {
            type_url: type_url.clone(),
            resources: wire,
            removed_resources: removed,
            ..Default::default()
        });

        let mut requests = Vec::new();
        if outcome.rejected.is_none() {
            self.versions[ty.index()] = version_info;
        }
        // Subscription changes: the delta requests that are not the answer to this response.
        let mut changed_types: Vec<TypeUrl> = outcome
            .requests
            .iter()
            .filter(|r| r.response_nonce.is_empty())
            .filter_map(|r| TypeUrl::from_type_url(&r.type_url))
            .filter(|t| *t != ty)
            .collect();
        changed_types.dedup();
        for t in changed_types {
            requests.push(self.request(t, None));
        }
        requests.push(self.request(ty, outcome.rejected.as_ref()));
        SotwOutcome {
            requests,
            changed: outcome.changed,
            rejected: outcome.rejected,
        }
    }

    /// The name of one resource of a response of type `ty`, and the resource. A resource in an
    /// `envoy.service.discovery.v3.Resource` wrapper is named by it (the way a server names a
    /// resource without a name of its own, a token bucket); otherwise by its own name, and a
    /// token bucket by the one bucket name subscribed to. A resource whose name cannot be read
    /// gets none, which the delta client rejects, naming its position.
    fn named(&self, ty: TypeUrl, any: Any) -> (String, Any) {
        if any.type_url == WireResource::type_url()
            && let Ok(WireResource {
                name,
                resource: Some(inner),
                ..
            }) = WireResource::decode(any.value.as_slice())
        {
            return (name, inner);
        }
        let name = match resource::inner_name(ty, &any) {
            Some(name) => name,
            None if ty == TypeUrl::TokenBucket => match &self.delta.subscriptions(ty)[..] {
                [only] => only.clone(),
                _ => String::new(),
            },
            None => String::new(),
        };
        (name, any)
    }

    /// A request for a type: its whole subscription (none for the wildcard types), the last
    /// accepted version, the last nonce, and the error when it is a NACK.
    fn request(&self, ty: TypeUrl, error: Option<&Error>) -> DiscoveryRequest {
        let names = if ty.is_wildcard() {
            Vec::new()
        } else {
            self.delta.subscriptions(ty)
        };
        DiscoveryRequest {
            version_info: self.versions[ty.index()].clone(),
            resource_names: names,
            type_url: ty.type_url().to_owned(),
            response_nonce: self.nonces[ty.index()].clone(),
            error_detail: error.map(status),
            ..Default::default()
        }
    }
}

fn status(error: &Error) -> envoy_types::pb::google::rpc::Status {
    envoy_types::pb::google::rpc::Status {
        code: super::INVALID_ARGUMENT,
        message: error.to_string(),
        details: Vec::new(),
    }
}
