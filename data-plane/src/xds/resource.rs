//! The decoding and validation of one resource of the ADS stream.
//!
//! Validation happens here, at the wire boundary, by translating the resource into the runtime
//! model: a resource that passes is decoded, known to stay within the subset
//! `switchyard-proxy` implements, and comes with its translation (which the client keeps, so
//! building the runtime only links) and the names of the resources it references (EDS, RDS,
//! SDS and token bucket names), taken from that translation.

use std::sync::Arc;

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
            route::v3::RouteConfiguration,
        },
        extensions::transport_sockets::tls::v3::Secret,
        service::discovery::v3::Resource as WireResource,
        r#type::v3::TokenBucket,
    },
    google::protobuf::Any,
};
use prost::Message;

use super::Error;
use crate::config::{
    ClusterConfig, Endpoint, Invalid, ListenerConfig, Problem, RouteTable, SecretMaterial,
    TokenBucketConfig, TypeUrl,
};

/// A decoded resource of any of the six types with its translation, shared from the start so
/// that holding it in the configuration does not copy it.
#[derive(Clone)]
pub(crate) enum Resource {
    Cluster(Arc<Cluster>, Arc<ClusterConfig>),
    Endpoint(Arc<ClusterLoadAssignment>, Arc<[Endpoint]>),
    Listener(Arc<Listener>, Arc<ListenerConfig>),
    Route(Arc<RouteConfiguration>, Arc<RouteTable>),
    Secret(Arc<Secret>, Arc<SecretMaterial>),
    TokenBucket(Arc<TokenBucket>, Arc<TokenBucketConfig>),
}

/// The names a resource references, which the proxy must subscribe to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Refs {
    /// EDS names: an EDS cluster's `service_name`, or its own name.
    pub(crate) endpoints: Vec<String>,
    /// RDS names: `route_config_name` of HTTP connection managers.
    pub(crate) routes: Vec<String>,
    /// SDS names: secrets named by TLS transport sockets.
    pub(crate) secrets: Vec<String>,
    /// Token buckets named by access logs' `process_ratelimit` filters.
    pub(crate) buckets: Vec<String>,
}

impl Refs {
    pub(crate) fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
            && self.routes.is_empty()
            && self.secrets.is_empty()
            && self.buckets.is_empty()
    }

    /// The names of one type.
    pub(crate) fn of(&self, ty: TypeUrl) -> &[String] {
        match ty {
            TypeUrl::ClusterLoadAssignment => &self.endpoints,
            TypeUrl::RouteConfiguration => &self.routes,
            TypeUrl::Secret => &self.secrets,
            TypeUrl::TokenBucket => &self.buckets,
            TypeUrl::Cluster | TypeUrl::Listener => &[],
        }
    }
}

/// One resource of a response, decoded and validated.
pub(crate) struct Decoded {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) resource: Resource,
    pub(crate) refs: Refs,
}

/// The name a state-of-the-world resource carries inside its message (SotW resources come
/// without the delta wrapper that names them). `None` when the bytes are not a message of
/// the type, or a token bucket (which has no name of its own); validation then reports the
/// problem properly.
pub(crate) fn inner_name(ty: TypeUrl, any: &Any) -> Option<String> {
    let bytes = any.value.as_slice();
    Some(match ty {
        TypeUrl::Cluster => Cluster::decode(bytes).ok()?.name,
        TypeUrl::ClusterLoadAssignment => ClusterLoadAssignment::decode(bytes).ok()?.cluster_name,
        TypeUrl::Listener => Listener::decode(bytes).ok()?.name,
        TypeUrl::RouteConfiguration => RouteConfiguration::decode(bytes).ok()?.name,
        TypeUrl::Secret => Secret::decode(bytes).ok()?.name,
        TypeUrl::TokenBucket => return None,
    })
}

/// Decodes and validates one resource of a response of type `ty`; `index` is its position in
/// the response, for messages about a resource without a name.
pub(crate) fn decode(ty: TypeUrl, index: usize, wire: WireResource) -> Result<Decoded, Error> {
    let WireResource {
        name,
        version,
        resource,
        ..
    } = wire;
    if name.is_empty() {
        return Err(Error::EmptyName { kind: ty, index });
    }
    let Some(any) = resource else {
        return Err(Error::MissingResource { kind: ty, name });
    };
    if any.type_url != ty.type_url() {
        return Err(Error::TypeMismatch {
            kind: ty,
            name,
            found: any.type_url,
        });
    }
    let mut refs = Refs::default();
    // Validation is the translation into the runtime model (one definition of the subset),
    // whose result the configuration keeps.
    let (inner, resource) = match ty {
        TypeUrl::Cluster => {
            let c: Cluster = decode_resource(ty, &name, &any)?;
            let built = ClusterConfig::from_xds(&c).map_err(|e| refused(ty, &name, e))?;
            refs.endpoints.extend(built.eds.clone());
            refs.secrets.extend(built.secret_names().map(str::to_owned));
            (
                c.name.clone(),
                Resource::Cluster(Arc::new(c), Arc::new(built)),
            )
        }
        TypeUrl::ClusterLoadAssignment => {
            let c: ClusterLoadAssignment = decode_resource(ty, &name, &any)?;
            let built = Endpoint::list_from_xds(&c).map_err(|e| refused(ty, &name, e))?;
            (
                c.cluster_name.clone(),
                Resource::Endpoint(Arc::new(c), built),
            )
        }
        TypeUrl::Listener => {
            let l: Listener = decode_resource(ty, &name, &any)?;
            let built = ListenerConfig::from_xds(&l).map_err(|e| refused(ty, &name, e))?;
            refs.routes.extend(built.rds_names().map(str::to_owned));
            refs.secrets.extend(built.secret_names().map(str::to_owned));
            refs.buckets
                .extend(built.bucket_names().map(|b| b.as_str().to_owned()));
            (
                l.name.clone(),
                Resource::Listener(Arc::new(l), Arc::new(built)),
            )
        }
        TypeUrl::RouteConfiguration => {
            let r: RouteConfiguration = decode_resource(ty, &name, &any)?;
            let built = RouteTable::from_xds(&r).map_err(|e| refused(ty, &name, e))?;
            (
                r.name.clone(),
                Resource::Route(Arc::new(r), Arc::new(built)),
            )
        }
        TypeUrl::Secret => {
            let s: Secret = decode_resource(ty, &name, &any)?;
            let built = SecretMaterial::from_xds(&s).map_err(|e| refused(ty, &name, e))?;
            (
                s.name.clone(),
                Resource::Secret(Arc::new(s), Arc::new(built)),
            )
        }
        // No name inside: it is the name it is served under.
        TypeUrl::TokenBucket => {
            let b: TokenBucket = decode_resource(ty, &name, &any)?;
            let built = TokenBucketConfig::from_xds(&b).map_err(|e| refused(ty, &name, e))?;
            (
                name.clone(),
                Resource::TokenBucket(Arc::new(b), Arc::new(built)),
            )
        }
    };
    if inner != name {
        return Err(Error::NameMismatch {
            kind: ty,
            name,
            inner,
        });
    }
    Ok(Decoded {
        name,
        version,
        resource,
        refs,
    })
}

/// Decodes the resource itself from its `Any`.
fn decode_resource<M: Message + Default>(kind: TypeUrl, name: &str, any: &Any) -> Result<M, Error> {
    M::decode(any.value.as_slice()).map_err(|error| Error::Decode {
        kind,
        name: name.to_owned(),
        field: "resource".to_owned(),
        error,
    })
}

/// The client's rejection of resource `name` of type `kind` that the translation refused.
fn refused(kind: TypeUrl, name: &str, invalid: Invalid) -> Error {
    let (field, problem) = invalid.into_parts();
    match problem {
        Problem::Unsupported(reason) => Error::Unsupported {
            kind,
            name: name.to_owned(),
            field,
            reason,
        },
        Problem::Decode(error) => Error::Decode {
            kind,
            name: name.to_owned(),
            field,
            error,
        },
    }
}
