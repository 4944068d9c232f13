//! Clusters and their endpoints: EDS clusters over ADS for mesh services, STATIC clusters for
//! the proxy's own application.
//!
//! With mTLS, a mesh cluster carries one transport socket match, `mtls`, which endpoints
//! select through their metadata: endpoints of meshed workloads (those with an identity) are
//! reached over mTLS, the rest in plaintext, so a service whose pods are only partly meshed
//! keeps working.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                CircuitBreakers, Cluster, OutlierDetection, circuit_breakers,
                cluster::{
                    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
                    TransportSocketMatch,
                },
            },
            core::v3::{
                BindConfig, Http1ProtocolOptions, Http2ProtocolOptions, Metadata, SocketAddress,
                socket_address::PortSpecifier,
            },
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
            },
        },
        extensions::upstreams::http::v3::{
            HttpProtocolOptions,
            http_protocol_options::{
                ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
                explicit_http_config::ProtocolConfig,
            },
        },
    },
    google::protobuf::{Any, UInt32Value},
};

use switchyard_proxy_config::TypeUrl;

use super::{
    Capture, EnvoyOptions, LoadBalancing, Reference, duration, inbound_name, socket_address,
    tls::{self, Mtls},
    to_any,
};
use crate::model::{self, ConnectionLimits, InboundPort, Protocol};

/// Key of the upstream HTTP options in `typed_extension_protocol_options`.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// An EDS cluster for one service port; its endpoints come as a ClusterLoadAssignment of the
/// same name over the same ADS stream. With `mtls`, endpoints labelled by
/// [`load_assignment`] are reached over mTLS as the proxy's own identity, and must present a
/// certificate for one of the cluster's endpoint identities.
pub(super) fn eds(
    cluster: &model::Cluster,
    opts: &EnvoyOptions,
    mtls: Option<Mtls<'_>>,
) -> Cluster {
    let policy = &cluster.policy;
    Cluster {
        transport_socket_matches: mtls
            .and_then(|mtls| transport_socket_match(cluster, mtls))
            .into_iter()
            .collect(),
        name: cluster.name.as_str().to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(super::ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(duration(opts.connect_timeout)),
        lb_policy: lb_policy(opts.load_balancing) as i32,
        outlier_detection: Some(outlier_detection(&policy.outlier_detection)),
        circuit_breakers: policy.connection_limits.as_ref().map(circuit_breakers),
        typed_extension_protocol_options: protocol_options(cluster.protocol),
        ..Default::default()
    }
}

/// A STATIC cluster of one endpoint (see [`ClusterName::endpoint`](model::ClusterName::endpoint)):
/// its address inline, reached like an endpoint of an EDS cluster (over mTLS when meshed).
pub(super) fn endpoint(
    cluster: &model::Cluster,
    opts: &EnvoyOptions,
    mtls: Option<Mtls<'_>>,
) -> Cluster {
    Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        eds_cluster_config: None,
        load_assignment: Some(load_assignment(cluster, mtls.is_some())),
        ..eds(cluster, opts, mtls)
    }
}

/// What a cluster built by [`eds`] names: its endpoints, and the proxy's secrets when it has
/// an mTLS transport socket (`mtls` given and an endpoint with an identity).
pub(super) fn references(cluster: &Cluster, mtls: Option<Mtls<'_>>) -> Vec<Reference> {
    let endpoints = cluster.eds_cluster_config.as_ref().map(|eds| {
        // Envoy's rule: the EDS name is the cluster's own unless `service_name` is set.
        let name = match eds.service_name.as_str() {
            "" => cluster.name.as_str(),
            name => name,
        };
        Reference::new(TypeUrl::ClusterLoadAssignment, name)
    });
    let tls = !cluster.transport_socket_matches.is_empty();
    let secrets = mtls.filter(|_| tls).into_iter().flat_map(|m| m.secrets());
    endpoints.into_iter().chain(secrets).collect()
}

/// The endpoints of a cluster; sent even when empty, since a cluster warms until it has one.
/// With `mtls`, endpoints of meshed workloads carry the metadata that selects the cluster's
/// mTLS transport socket.
///
/// An address listed twice is one endpoint. Should the entries disagree about the identity
/// (a pod IP reused while the index catches up), it is meshed if any entry is: plaintext to a
/// meshed pod would be refused by it anyway, while TLS to a pod that turns out not to be meshed
/// fails closed until the model settles.
pub(super) fn load_assignment(cluster: &model::Cluster, mtls: bool) -> ClusterLoadAssignment {
    let mut meshed: BTreeMap<SocketAddr, bool> = BTreeMap::new();
    for e in &cluster.endpoints {
        *meshed.entry(e.address).or_default() |= mtls && e.identity.is_some();
    }
    let lb_endpoints = meshed
        .into_iter()
        .map(|(address, meshed)| LbEndpoint {
            metadata: meshed.then(|| Metadata {
                filter_metadata: [(tls::TRANSPORT_SOCKET_MATCH.to_owned(), tls::match_labels())]
                    .into(),
                ..Default::default()
            }),
            ..lb_endpoint(address)
        })
        .collect();
    assignment(cluster.name.as_str(), lb_endpoints)
}

/// The `mtls` transport socket match, checking the peer against every identity among the
/// cluster's endpoints; `None` when no endpoint has an identity, since nothing would select
/// it and a TLS context without a SAN check would accept any mesh certificate.
fn transport_socket_match(
    cluster: &model::Cluster,
    mtls: Mtls<'_>,
) -> Option<TransportSocketMatch> {
    let peers: BTreeSet<String> = cluster
        .endpoints
        .iter()
        .filter_map(|e| e.identity.as_ref())
        .map(|id| id.spiffe_id(&mtls.mesh.trust_domain))
        .collect();
    if peers.is_empty() {
        return None;
    }
    Some(TransportSocketMatch {
        name: tls::MTLS.to_owned(),
        r#match: Some(tls::match_labels()),
        transport_socket: Some(mtls.upstream(peers.into_iter().collect(), cluster.protocol)),
    })
}

/// The STATIC cluster of an inbound port: the application at `app_ip:<port>`.
///
/// An intercepted proxy connects from [`INBOUND_SOURCE`](super::INBOUND_SOURCE): the redirect rules let connections
/// from that address to the Pod's own IP through, and send any other connection the proxy makes
/// to its own Pod IP (an application calling its own Service) back to the inbound port.
pub(super) fn inbound(port: &InboundPort, opts: &EnvoyOptions) -> Cluster {
    let name = inbound_name(port.port);
    let app = SocketAddr::new(opts.app_ip, port.port);
    Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(duration(opts.connect_timeout)),
        load_assignment: Some(assignment(&name, vec![lb_endpoint(app)])),
        typed_extension_protocol_options: protocol_options(port.protocol),
        upstream_bind_config: match opts.capture {
            Capture::Addressed => None,
            Capture::Intercepted { .. } => Some(from_inbound_source(opts.app_ip)),
        },
        name,
        ..Default::default()
    }
}

/// Cluster [`INBOUND_PASSTHROUGH`](super::INBOUND_PASSTHROUGH): in permissive mode, an inbound
/// connection to a port no Service declares goes on to the application unchanged, from
/// [`INBOUND_SOURCE`](super::INBOUND_SOURCE) like every inbound connection of an intercepted proxy.
pub(super) fn inbound_passthrough(opts: &EnvoyOptions) -> Cluster {
    Cluster {
        upstream_bind_config: Some(from_inbound_source(opts.app_ip)),
        name: super::INBOUND_PASSTHROUGH.to_owned(),
        ..passthrough(opts)
    }
}

/// [`inbound_source`](super::inbound_source) of the Pod's address family.
fn from_inbound_source(pod_ip: std::net::IpAddr) -> BindConfig {
    BindConfig {
        source_address: Some(SocketAddress {
            address: super::inbound_source(pod_ip).to_string(),
            port_specifier: Some(PortSpecifier::PortValue(0)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Cluster [`PASSTHROUGH`](super::PASSTHROUGH): an intercepted connection to a destination the
/// mesh does not know goes to that destination unchanged (plaintext, no policy), so DNS, the
/// API server and hosts outside the mesh keep working.
pub(super) fn passthrough(opts: &EnvoyOptions) -> Cluster {
    Cluster {
        name: super::PASSTHROUGH.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(duration(opts.connect_timeout)),
        ..Default::default()
    }
}

fn lb_endpoint(address: SocketAddr) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(address)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn assignment(name: &str, lb_endpoints: Vec<LbEndpoint>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints: if lb_endpoints.is_empty() {
            Vec::new()
        } else {
            vec![LocalityLbEndpoints {
                lb_endpoints,
                ..Default::default()
            }]
        },
        ..Default::default()
    }
}

/// HTTP/2 clusters speak h2c to their endpoints (gRPC); an undeclared port's cluster speaks
/// whatever HTTP version was detected downstream (its requests come from an intercepted
/// connection found to be HTTP, where downgrading h2c to HTTP/1.1 would break gRPC); the rest
/// keep Envoy's HTTP/1.1 default. A map of at most one entry encodes deterministically.
fn protocol_options(protocol: Protocol) -> HashMap<String, Any> {
    let options = match protocol {
        Protocol::Http2 => http2_options(),
        Protocol::Unknown => HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                UseDownstreamHttpConfig {
                    http_protocol_options: Some(Http1ProtocolOptions::default()),
                    http2_protocol_options: Some(Http2ProtocolOptions::default()),
                    ..Default::default()
                },
            )),
            ..Default::default()
        },
        Protocol::Http | Protocol::Tcp => return HashMap::new(),
    };
    [(HTTP_PROTOCOL_OPTIONS.to_owned(), to_any(&options))].into()
}

pub(super) fn http2_options() -> HttpProtocolOptions {
    HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    }
}

fn lb_policy(lb: LoadBalancing) -> LbPolicy {
    match lb {
        LoadBalancing::RoundRobin => LbPolicy::RoundRobin,
        LoadBalancing::LeastRequest => LbPolicy::LeastRequest,
    }
}

/// Envoy's form of a [`model::OutlierDetection`]. Envoy enforces gateway-error ejection only
/// when asked, so it is asked.
fn outlier_detection(model: &model::OutlierDetection) -> OutlierDetection {
    let n = |value| Some(UInt32Value { value });
    OutlierDetection {
        consecutive_5xx: n(model.consecutive_5xx),
        consecutive_gateway_failure: n(model.consecutive_gateway_failure),
        enforcing_consecutive_gateway_failure: n(100),
        interval: Some(duration(model.interval)),
        base_ejection_time: Some(duration(model.base_ejection_time)),
        max_ejection_percent: n(model.max_ejection_percent),
        ..Default::default()
    }
}

/// Envoy's form of [`ConnectionLimits`]: thresholds at the default priority.
fn circuit_breakers(limits: &ConnectionLimits) -> CircuitBreakers {
    let n = |value| Some(UInt32Value { value });
    CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_connections: n(limits.max_connections),
            max_pending_requests: n(limits.max_pending_requests),
            max_requests: n(limits.max_requests),
            ..Default::default()
        }],
        ..Default::default()
    }
}
