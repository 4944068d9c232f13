//! The proxy's xDS client: delta (incremental) ADS as a synchronous state machine, without IO.
//!
//! The async edge opens the stream, sends [`DeltaClient::initial_requests`], feeds every
//! `DeltaDiscoveryResponse` to [`DeltaClient::handle_response`] and sends the requests of the
//! returned [`Outcome`], in order. On a new stream it sends `initial_requests` again.
//!
//! Subscriptions follow Envoy:
//!
//! - CDS and LDS are wildcard (`*`) subscriptions.
//! - EDS names come from accepted EDS clusters (`eds_cluster_config.service_name`, or the
//!   cluster's name), RDS names from the HTTP connection managers of accepted listeners
//!   (`rds.route_config_name`), SDS names from TLS transport sockets of accepted clusters and
//!   listeners, token bucket names from the `process_ratelimit` filters of accepted
//!   listeners' access logs. A name no accepted resource references any more is unsubscribed,
//!   and its resource dropped.
//!
//! A listener whose access log names a token bucket not held yet waits for it, as Envoy's
//! listener waits for its init target: the version it replaces (if any) serves meanwhile, and
//! it serves from the response that brings the bucket.
//!
//! A response is accepted or rejected as a whole. It is rejected (NACKed, with a
//! `google.rpc.Status` of code 3, `INVALID_ARGUMENT`, naming the resource and field) when a
//! resource cannot be decoded into the type its type URL names, has another type than the
//! response, has no name, is listed twice, or uses a feature outside the subset the proxy
//! implements; the last accepted configuration then stays (static stability).
//!
//! The protocol is described in Envoy's `docs/root/api-docs/xds_protocol.rst` ("Incremental
//! xDS").

mod resource;
mod sotw;

#[cfg(test)]
mod tests;

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    sync::Arc,
};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster, core::v3::Node, endpoint::v3::ClusterLoadAssignment,
            listener::v3::Listener, route::v3::RouteConfiguration,
        },
        extensions::transport_sockets::tls::v3::Secret,
        service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse},
        r#type::v3::TokenBucket,
    },
    google::rpc::Status,
};

use self::resource::{Refs, Resource};
pub use self::sotw::{SotwClient, SotwOutcome};
pub use crate::config::TypeUrl;
use crate::config::{ListenerConfig, Runtime, Translated};

/// The `google.rpc.Code` of a NACK: `INVALID_ARGUMENT`.
const INVALID_ARGUMENT: i32 = 3;

/// The name of a wildcard subscription.
const WILDCARD: &str = "*";

/// Why a response was rejected. Every message names the resource, and the field where there is
/// one (`cluster default/web|80: eds_cluster_config.eds_config: only ADS is supported`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The response's type URL is none of the six types the proxy subscribes to.
    #[error("unknown resource type {0:?}")]
    UnknownType(String),
    /// A resource without a name.
    #[error("{} #{index}: name: must not be empty", .kind.noun())]
    EmptyName {
        /// The response's type.
        kind: TypeUrl,
        /// Position of the resource in the response.
        index: usize,
    },
    /// A resource without a body.
    #[error("{} {name}: resource: missing", .kind.noun())]
    MissingResource {
        /// The response's type.
        kind: TypeUrl,
        /// The resource's name.
        name: String,
    },
    /// A resource whose `Any` holds another type than the response's.
    #[error("{} {name}: resource.type_url: {found:?} does not match the response type", .kind.noun())]
    TypeMismatch {
        /// The response's type.
        kind: TypeUrl,
        /// The resource's name.
        name: String,
        /// The type URL of the resource's `Any`.
        found: String,
    },
    /// A resource, or a message nested in it, that does not decode.
    #[error("{} {name}: {field}: cannot decode: {error}", .kind.noun())]
    Decode {
        /// The response's type.
        kind: TypeUrl,
        /// The resource's name.
        name: String,
        /// Where the undecodable bytes are (`resource` for the resource itself).
        field: String,
        /// What the decoder said (it names the nested field when it can).
        error: prost::DecodeError,
    },
    /// A resource whose own name differs from the name it is listed under.
    #[error("{} {name}: name: does not match the resource's own name {inner:?}", .kind.noun())]
    NameMismatch {
        /// The response's type.
        kind: TypeUrl,
        /// The name the resource is listed under.
        name: String,
        /// The name inside the resource.
        inner: String,
    },
    /// A name listed twice in one response.
    #[error("{} {name}: listed more than once in one response", .kind.noun())]
    Duplicate {
        /// The response's type.
        kind: TypeUrl,
        /// The repeated name.
        name: String,
    },
    /// A feature outside the subset `switchyard-proxy` implements.
    #[error("{} {name}: {field}: {reason}", .kind.noun())]
    Unsupported {
        /// The response's type.
        kind: TypeUrl,
        /// The resource's name.
        name: String,
        /// The field holding the feature.
        field: String,
        /// Why it cannot be accepted.
        reason: Cow<'static, str>,
    },
}

// === impl Config ===

/// An accepted resource and the version the server gave it.
#[derive(Clone)]
pub struct Versioned<T> {
    /// The server's version of the resource (`Resource.version`).
    pub version: String,
    /// The decoded resource.
    pub resource: Arc<T>,
}

impl<T> fmt::Debug for Versioned<T> {
    // Never prints the resource: a secret holds a private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Versioned")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The accepted configuration: every held resource by type and name. Cloning it is cheap (the
/// resources are shared), so it can be handed out as a snapshot.
#[derive(Clone, Default)]
pub struct Config {
    /// Clusters (CDS).
    pub clusters: BTreeMap<String, Versioned<Cluster>>,
    /// Endpoints (EDS), by EDS name.
    pub endpoints: BTreeMap<String, Versioned<ClusterLoadAssignment>>,
    /// Listeners (LDS).
    pub listeners: BTreeMap<String, Versioned<Listener>>,
    /// Route configurations (RDS).
    pub routes: BTreeMap<String, Versioned<RouteConfiguration>>,
    /// Secrets (SDS).
    pub secrets: BTreeMap<String, Versioned<Secret>>,
    /// Token buckets, by resource name.
    pub buckets: BTreeMap<String, Versioned<TokenBucket>>,
    /// The translation of each held listener that waits for a token bucket, by name: it
    /// replaces its `translated` version (if any) once its buckets are held.
    warming: BTreeMap<String, Arc<ListenerConfig>>,
    /// The translation of every held resource, by the same names; kept in step with the maps
    /// above, so that a resource is translated once, when it is accepted.
    translated: Translated,
}

impl fmt::Debug for Config {
    // Names and versions only: a secret holds a private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn versions<T>(map: &BTreeMap<String, Versioned<T>>) -> BTreeMap<&str, &str> {
            map.iter()
                .map(|(k, v)| (k.as_str(), v.version.as_str()))
                .collect()
        }
        f.debug_struct("Config")
            .field("clusters", &versions(&self.clusters))
            .field("endpoints", &versions(&self.endpoints))
            .field("listeners", &versions(&self.listeners))
            .field("routes", &versions(&self.routes))
            .field("secrets", &versions(&self.secrets))
            .field("buckets", &versions(&self.buckets))
            .field("warming", &self.warming.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Config {
    /// The runtime of the accepted configuration: the translations kept as resources were
    /// accepted, linked.
    pub fn runtime(&self) -> Runtime {
        Runtime::link(&self.translated)
    }

    /// The version of every held resource of a type, by name.
    pub fn versions(&self, ty: TypeUrl) -> HashMap<String, String> {
        fn of<T>(map: &BTreeMap<String, Versioned<T>>) -> HashMap<String, String> {
            map.iter()
                .map(|(k, v)| (k.clone(), v.version.clone()))
                .collect()
        }
        match ty {
            TypeUrl::Cluster => of(&self.clusters),
            TypeUrl::ClusterLoadAssignment => of(&self.endpoints),
            TypeUrl::Listener => of(&self.listeners),
            TypeUrl::RouteConfiguration => of(&self.routes),
            TypeUrl::Secret => of(&self.secrets),
            TypeUrl::TokenBucket => of(&self.buckets),
        }
    }

    /// Whether a resource of a type is held.
    pub fn contains(&self, ty: TypeUrl, name: &str) -> bool {
        match ty {
            TypeUrl::Cluster => self.clusters.contains_key(name),
            TypeUrl::ClusterLoadAssignment => self.endpoints.contains_key(name),
            TypeUrl::Listener => self.listeners.contains_key(name),
            TypeUrl::RouteConfiguration => self.routes.contains_key(name),
            TypeUrl::Secret => self.secrets.contains_key(name),
            TypeUrl::TokenBucket => self.buckets.contains_key(name),
        }
    }

    /// Drops a resource; whether it was held.
    fn remove(&mut self, ty: TypeUrl, name: &str) -> bool {
        let t = &mut self.translated;
        match ty {
            TypeUrl::Cluster => {
                t.clusters.remove(name);
                self.clusters.remove(name).is_some()
            }
            TypeUrl::ClusterLoadAssignment => {
                t.endpoints.remove(name);
                self.endpoints.remove(name).is_some()
            }
            TypeUrl::Listener => {
                t.listeners.remove(name);
                self.warming.remove(name);
                self.listeners.remove(name).is_some()
            }
            TypeUrl::RouteConfiguration => {
                t.routes.remove(name);
                self.routes.remove(name).is_some()
            }
            TypeUrl::Secret => {
                t.secrets.remove(name);
                self.secrets.remove(name).is_some()
            }
            TypeUrl::TokenBucket => {
                t.buckets.remove(name);
                self.buckets.remove(name).is_some()
            }
        }
    }

    /// Holds a resource and its translation; whether anything changed.
    fn upsert(&mut self, name: String, version: String, resource: Resource) -> bool {
        fn put<T: PartialEq, U: ?Sized>(
            map: &mut BTreeMap<String, Versioned<T>>,
            translated: &mut BTreeMap<String, Arc<U>>,
            name: String,
            version: String,
            (resource, translation): (Arc<T>, Arc<U>),
        ) -> bool {
            if let Some(old) = map.get(&name)
                && old.version == version
                && old.resource == resource
            {
                return false;
            }
            translated.insert(name.clone(), translation);
            map.insert(name, Versioned { version, resource });
            true
        }
        let t = &mut self.translated;
        match resource {
            Resource::Cluster(r, c) => {
                put(&mut self.clusters, &mut t.clusters, name, version, (r, c))
            }
            Resource::Endpoint(r, e) => {
                put(&mut self.endpoints, &mut t.endpoints, name, version, (r, e))
            }
            Resource::Listener(r, l) => {
                if l.bucket_names().all(|b| t.buckets.contains_key(b.as_str())) {
                    self.warming.remove(&name);
                    return put(&mut self.listeners, &mut t.listeners, name, version, (r, l));
                }
                // It waits for its buckets; what serves under its name serves on.
                if let Some(old) = self.listeners.get(&name)
                    && old.version == version
                    && old.resource == r
                {
                    return false;
                }
                self.warming.insert(name.clone(), l);
                self.listeners.insert(
                    name,
                    Versioned {
                        version,
                        resource: r,
                    },
                );
                true
            }
            Resource::Route(r, rt) => put(&mut self.routes, &mut t.routes, name, version, (r, rt)),
            Resource::Secret(r, s) => put(&mut self.secrets, &mut t.secrets, name, version, (r, s)),
            Resource::TokenBucket(r, b) => {
                let changed = put(&mut self.buckets, &mut t.buckets, name, version, (r, b));
                if changed {
                    self.serve_warmed();
                }
                changed
            }
        }
    }

    /// Listeners that waited for token buckets, all of which are now held, serve.
    fn serve_warmed(&mut self) {
        let buckets = &self.translated.buckets;
        let warmed: Vec<String> = self
            .warming
            .iter()
            .filter(|(_, l)| l.bucket_names().all(|b| buckets.contains_key(b.as_str())))
            .map(|(name, _)| name.clone())
            .collect();
        for name in warmed {
            if let Some(listener) = self.warming.remove(&name) {
                self.translated.listeners.insert(name, listener);
            }
        }
    }

    /// Whether the listener `name` waits for a token bucket (only an older version of it, if
    /// any, serves).
    pub fn is_warming(&self, name: &str) -> bool {
        self.warming.contains_key(name)
    }
}

// === impl Outcome ===

/// What handling one response led to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Requests to send, in order: subscription changes (by type, in the order of
    /// [`TypeUrl::ALL`]), then the ACK or
    /// NACK of the response.
    pub requests: Vec<DeltaDiscoveryRequest>,
    /// Names newly subscribed to.
    pub subscribed: Vec<(TypeUrl, String)>,
    /// Names unsubscribed from (their resources are no longer held).
    pub unsubscribed: Vec<(TypeUrl, String)>,
    /// Whether the accepted configuration changed.
    pub changed: bool,
    /// Why the response was rejected, if it was (the NACK carries the same message).
    pub rejected: Option<Error>,
}

// === impl DeltaClient ===

/// The client side of one proxy's delta ADS session. It outlives streams: what it holds is
/// offered to the server on reconnect (`initial_resource_versions`), and stays the accepted
/// configuration while no stream is up. Cloning it is cheap (held resources are shared); the
/// fuzz targets start every input from one preloaded client.
#[derive(Clone, Debug)]
pub struct DeltaClient {
    node: Node,
    config: Config,
    /// Names subscribed to, per type; unused for the wildcard types.
    subscriptions: [BTreeSet<String>; TypeUrl::ALL.len()],
    /// The references of every held cluster and listener that has any.
    refs: BTreeMap<(TypeUrl, String), Refs>,
    /// Per type, whether a response was ever accepted.
    answered: [bool; TypeUrl::ALL.len()],
}

impl DeltaClient {
    /// A client for the proxy described by `node`, holding nothing yet.
    pub fn new(node: Node) -> Self {
        Self {
            node,
            config: Config::default(),
            subscriptions: Default::default(),
            refs: BTreeMap::new(),
            answered: [false; TypeUrl::ALL.len()],
        }
    }

    /// The node the client presents.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The accepted configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The names subscribed to for a type: `*` for the wildcard types.
    pub fn subscriptions(&self, ty: TypeUrl) -> Vec<String> {
        if ty.is_wildcard() {
            vec![WILDCARD.to_owned()]
        } else {
            self.subscriptions[ty.index()].iter().cloned().collect()
        }
    }

    /// Whether every subscribed type has had a response accepted at least once (the proxy's
    /// readiness). A named type with no names subscribed does not count.
    pub fn is_synced(&self) -> bool {
        TypeUrl::ALL.into_iter().all(|ty| {
            self.answered[ty.index()]
                || (!ty.is_wildcard() && self.subscriptions[ty.index()].is_empty())
        })
    }

    /// The requests that open a stream, in the order of [`TypeUrl::ALL`] (types without
    /// subscriptions left out). Each carries the versions of the resources already held, so a
    /// new stream does not download them again; the first carries the node.
    pub fn initial_requests(&self) -> Vec<DeltaDiscoveryRequest> {
        let mut requests: Vec<DeltaDiscoveryRequest> = TypeUrl::ALL
            .into_iter()
            .filter(|ty| ty.is_wildcard() || !self.subscriptions[ty.index()].is_empty())
            .map(|ty| DeltaDiscoveryRequest {
                type_url: ty.type_url().to_owned(),
                resource_names_subscribe: self.subscriptions(ty),
                initial_resource_versions: self.config.versions(ty),
                ..Default::default()
            })
            .collect();
        if let Some(first) = requests.first_mut() {
            first.node = Some(self.node.clone());
        }
        requests
    }

    /// Handles one response: validates it as a whole, and either applies it and ACKs, or keeps
    /// the configuration and NACKs.
    pub fn handle_response(&mut self, response: DeltaDiscoveryResponse) -> Outcome {
        let DeltaDiscoveryResponse {
            resources,
            type_url,
            removed_resources,
            nonce,
            ..
        } = response;
        let Some(ty) = TypeUrl::from_type_url(&type_url) else {
            return nack(type_url.clone(), nonce, Error::UnknownType(type_url));
        };
        let decoded = match decode_all(ty, resources) {
            Ok(decoded) => decoded,
            Err(error) => return nack(type_url, nonce, error),
        };

        let mut changed = false;
        for name in &removed_resources {
            changed |= self.config.remove(ty, name);
            self.refs.remove(&(ty, name.clone()));
        }
        for d in decoded {
            // A named type holds only what it asked for; anything else is ignored.
            if !ty.is_wildcard() && !self.subscriptions[ty.index()].contains(&d.name) {
                continue;
            }
            let key = (ty, d.name.clone());
            if d.refs.is_empty() {
                self.refs.remove(&key);
            } else {
                self.refs.insert(key, d.refs);
            }
            changed |= self.config.upsert(d.name, d.version, d.resource);
        }
        self.answered[ty.index()] = true;

        let mut outcome = self.resubscribe();
        outcome.changed |= changed;
        outcome.requests.push(DeltaDiscoveryRequest {
            type_url,
            response_nonce: nonce,
            ..Default::default()
        });
        outcome
    }

    /// Brings the named subscriptions in line with what the held resources reference: the
    /// subscription requests, the names added and removed, and whether dropping resources of
    /// removed names changed the configuration.
    fn resubscribe(&mut self) -> Outcome {
        let mut outcome = Outcome::default();
        for ty in TypeUrl::ALL.into_iter().filter(|ty| !ty.is_wildcard()) {
            let wanted: BTreeSet<String> = self
                .refs
                .values()
                .flat_map(|refs| refs.of(ty))
                .cloned()
                .collect();
            let current = &mut self.subscriptions[ty.index()];
            let subscribe: Vec<String> = wanted.difference(current).cloned().collect();
            let unsubscribe: Vec<String> = current.difference(&wanted).cloned().collect();
            if subscribe.is_empty() && unsubscribe.is_empty() {
                continue;
            }
            *current = wanted;
            for name in &unsubscribe {
                outcome.changed |= self.config.remove(ty, name);
            }
            outcome
                .subscribed
                .extend(subscribe.iter().map(|n| (ty, n.clone())));
            outcome
                .unsubscribed
                .extend(unsubscribe.iter().map(|n| (ty, n.clone())));
            outcome.requests.push(DeltaDiscoveryRequest {
                type_url: ty.type_url().to_owned(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..Default::default()
            });
        }
        outcome
    }
}

/// Decodes and validates every resource of a response, rejecting repeated names.
fn decode_all(
    ty: TypeUrl,
    resources: Vec<envoy_types::pb::envoy::service::discovery::v3::Resource>,
) -> Result<Vec<resource::Decoded>, Error> {
    let mut seen = BTreeSet::new();
    let mut decoded = Vec::with_capacity(resources.len());
    for (index, wire) in resources.into_iter().enumerate() {
        let d = resource::decode(ty, index, wire)?;
        if !seen.insert(d.name.clone()) {
            return Err(Error::Duplicate {
                kind: ty,
                name: d.name,
            });
        }
        decoded.push(d);
    }
    Ok(decoded)
}

/// The outcome of a rejected response: a NACK and nothing else.
fn nack(type_url: String, nonce: String, error: Error) -> Outcome {
    Outcome {
        requests: vec![DeltaDiscoveryRequest {
            type_url,
            response_nonce: nonce,
            error_detail: Some(Status {
                code: INVALID_ARGUMENT,
                message: error.to_string(),
                details: Vec::new(),
            }),
            ..Default::default()
        }],
        rejected: Some(error),
        ..Default::default()
    }
}
