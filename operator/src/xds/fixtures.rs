//! Test fixtures: small Envoy resources, snapshots and discovery requests.

use std::sync::Arc;

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
            },
            core::v3::{
                Address, DataSource, Node, SocketAddress, address, data_source,
                socket_address::PortSpecifier,
            },
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
                lb_endpoint::HostIdentifier,
            },
            listener::v3::{Filter, FilterChain, Listener, filter::ConfigType},
            route::v3::{RouteConfiguration, VirtualHost},
        },
        extensions::{
            filters::network::http_connection_manager::v3::{
                HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
            },
            transport_sockets::tls::v3::{GenericSecret, Secret, secret},
        },
        service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest},
    },
    google::{
        protobuf::{Any, Duration},
        rpc::Status,
    },
};

use prost::Message;
use switchyard_adapters::envoy::Reference;

use super::{
    acked::AckedConfig,
    snapshot::{Snapshot, TypeUrl, Version, VersionedResource, to_any},
};

/// An EDS cluster; `rev` changes its content.
pub(crate) fn cluster(name: &str, rev: i64) -> Any {
    to_any(&Cluster {
        name: name.to_string(),
        connect_timeout: Some(Duration {
            seconds: rev,
            nanos: 0,
        }),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig::default()),
        ..Default::default()
    })
}

/// Endpoints with one address; `port` changes its content.
pub(crate) fn cla(name: &str, port: u32) -> Any {
    let address = Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "10.0.0.1".to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    };
    let endpoint = LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(address),
            ..Default::default()
        })),
        ..Default::default()
    };
    to_any(&ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![endpoint],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// A listener whose HTTP connection manager loads `route` over RDS; `port` changes content.
pub(crate) fn listener(name: &str, route: &str, port: u32) -> Any {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: route.to_string(),
            ..Default::default()
        })),
        ..Default::default()
    };
    to_any(&Listener {
        name: name.to_string(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".to_string(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_string(),
                config_type: Some(ConfigType::TypedConfig(to_any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// A route configuration; `rev` names its virtual host.
pub(crate) fn route(name: &str, rev: &str) -> Any {
    to_any(&RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: rev.to_string(),
            domains: vec!["*".to_string()],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// A generic secret holding `value`.
pub(crate) fn secret(name: &str, value: &str) -> Any {
    to_any(&Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::GenericSecret(GenericSecret {
            secret: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(value.to_string())),
                ..Default::default()
            }),
            ..Default::default()
        })),
    })
}

/// A snapshot of fixture resources, each naming what its payload names.
pub(crate) fn snapshot(entries: Vec<(TypeUrl, &str, Any)>) -> Arc<Snapshot> {
    let mut builder = Snapshot::builder();
    for (type_url, name, any) in entries {
        builder
            .add_shared(versioned(type_url, name, any))
            .expect("fixture snapshot is valid");
    }
    Arc::new(builder.build())
}

/// Clusters and CLAs `a`, `b`; listener `l` using route `r`; secret `s`. `rev` changes all
/// but cluster `b` and CLA `b`: the mesh the SotW and delta stream tests push.
pub(crate) fn mesh(rev: u32) -> Arc<Snapshot> {
    use TypeUrl::{
        Cluster as CDS, ClusterLoadAssignment as EDS, Listener as LDS, RouteConfiguration as RDS,
        Secret as SDS,
    };
    snapshot(vec![
        (CDS, "a", cluster("a", rev.into())),
        (CDS, "b", cluster("b", 1)),
        (EDS, "a", cla("a", 8000 + rev)),
        (EDS, "b", cla("b", 9000)),
        (LDS, "l", listener("l", "r", 15000 + rev)),
        (RDS, "r", route("r", &rev.to_string())),
        (SDS, "s", secret("s", &rev.to_string())),
    ])
}

/// What a type runs on a proxy, as `proxy-config` shows it: the version the proxy ACKed and
/// each resource's name and version.
pub(crate) fn running(acked: &AckedConfig) -> (Option<Version>, Vec<(String, Version)>) {
    let view = acked.view();
    let applied = view.applied.as_deref();
    (
        applied.map(|a| a.version()),
        applied
            .into_iter()
            .flat_map(|a| a.iter())
            .map(|r| (r.name().to_owned(), r.version()))
            .collect(),
    )
}

/// A fixture resource, naming what its payload names: the cluster's own endpoints (EDS
/// fixtures are named after themselves), a listener's route configurations. The adapter states
/// these for its own output; the fixtures are hand-built, so they are read back here.
pub(crate) fn versioned(type_url: TypeUrl, name: &str, any: Any) -> Arc<VersionedResource> {
    let references = match type_url {
        TypeUrl::Cluster => vec![Reference::new(TypeUrl::ClusterLoadAssignment, name)],
        TypeUrl::Listener => {
            let listener = Listener::decode(any.value.as_slice()).expect("a listener");
            listener
                .filter_chains
                .iter()
                .flat_map(|c| &c.filters)
                .filter_map(|f| match &f.config_type {
                    Some(ConfigType::TypedConfig(config)) => {
                        HttpConnectionManager::decode(config.value.as_slice()).ok()
                    }
                    _ => None,
                })
                .filter_map(|hcm| match hcm.route_specifier {
                    Some(RouteSpecifier::Rds(rds)) => Some(Reference::new(
                        TypeUrl::RouteConfiguration,
                        rds.route_config_name,
                    )),
                    _ => None,
                })
                .collect()
        }
        _ => Vec::new(),
    };
    VersionedResource::new(type_url, name, any, references).expect("fixture resource is valid")
}

pub(crate) fn node() -> Node {
    Node {
        id: "web-0".to_string(),
        cluster: "default/web".to_string(),
        ..Default::default()
    }
}

pub(crate) fn request(
    type_url: TypeUrl,
    names: &[&str],
    version: &str,
    nonce: &str,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_string(),
        node: Some(node()),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        type_url: type_url.type_url().to_string(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// `request` as a NACK: with the proxy's [`rejected`] status.
pub(crate) fn nack(request: DiscoveryRequest) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(rejected()),
        ..request
    }
}

pub(crate) fn delta_request(
    type_url: TypeUrl,
    subscribe: &[&str],
    unsubscribe: &[&str],
    nonce: &str,
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: type_url.type_url().to_string(),
        resource_names_subscribe: subscribe.iter().map(|n| n.to_string()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|n| n.to_string()).collect(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    }
}

pub(crate) fn rejected() -> Status {
    Status {
        code: 3,
        message: "bad config".to_string(),
        details: Vec::new(),
    }
}

/// The name inside a packed resource, whatever its type.
pub(crate) fn resource_name(any: &Any) -> String {
    use prost::{Message, Name};
    let bytes = any.value.as_slice();
    if any.type_url == envoy_types::pb::envoy::service::discovery::v3::Resource::type_url() {
        let wrapped = envoy_types::pb::envoy::service::discovery::v3::Resource::decode(bytes)
            .expect("wrapped");
        return wrapped.name;
    }
    match TypeUrl::from_type_url(&any.type_url).expect("known type") {
        TypeUrl::Cluster => Cluster::decode(bytes).expect("cluster").name,
        TypeUrl::ClusterLoadAssignment => {
            ClusterLoadAssignment::decode(bytes)
                .expect("cla")
                .cluster_name
        }
        TypeUrl::Listener => Listener::decode(bytes).expect("listener").name,
        TypeUrl::RouteConfiguration => RouteConfiguration::decode(bytes).expect("route").name,
        TypeUrl::Secret => Secret::decode(bytes).expect("secret").name,
        TypeUrl::TokenBucket => panic!("a token bucket has no name of its own: it comes wrapped"),
    }
}
