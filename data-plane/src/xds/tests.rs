//! Tests of the delta ADS client, driven with plain messages (no stream).

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType},
            },
            core::v3::{
                ConfigSource, DataSource, Node, PathConfigSource, TransportSocket,
                config_source::ConfigSourceSpecifier, data_source, transport_socket,
            },
            endpoint::v3::ClusterLoadAssignment,
            listener::v3::{Filter, FilterChain, Listener},
            route::v3::RouteConfiguration,
        },
        extensions::{
            filters::network::http_connection_manager::v3::{
                HttpConnectionManager, Rds, ScopedRoutes, http_connection_manager::RouteSpecifier,
            },
            transport_sockets::tls::v3::{
                CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret, TlsCertificate,
                UpstreamTlsContext,
                common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
                secret,
            },
        },
        service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource},
    },
    google::protobuf::{Any, Duration as PbDuration},
};
use prost::Name;
use switchyard_proxy_config::test_support::{ads, any, eds_cluster, socket, static_cluster, typed};

use super::{DeltaClient, Error, TypeUrl};

mod sotw;

const CERT: &str = "spiffe://cluster.local/ns/default/sa/web";
const BUNDLE: &str = "spiffe://cluster.local";

// === fixtures ===

fn node() -> Node {
    Node {
        id: "sidecar-0".to_owned(),
        cluster: "web.default".to_owned(),
        ..Default::default()
    }
}

fn wire(name: &str, version: &str, resource: Any) -> Resource {
    Resource {
        name: name.to_owned(),
        version: version.to_owned(),
        resource: Some(resource),
        ..Default::default()
    }
}

fn response(ty: TypeUrl, nonce: &str, resources: Vec<Resource>) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: ty.type_url().to_owned(),
        nonce: nonce.to_owned(),
        resources,
        ..Default::default()
    }
}

fn removal(ty: TypeUrl, nonce: &str, names: &[&str]) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        removed_resources: names.iter().map(|n| (*n).to_owned()).collect(),
        ..response(ty, nonce, vec![])
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(ads()),
    }
}

fn tls_socket(context: Any) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(context)),
    }
}

/// An EDS cluster reached over mTLS: its certificate and the trust bundle come from SDS.
fn mtls_cluster(name: &str) -> Cluster {
    let tls = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(CERT)],
            validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
                sds(BUNDLE),
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    Cluster {
        transport_socket: Some(tls_socket(any(&tls))),
        ..eds_cluster(name, "")
    }
}

fn hcm_filter(route_specifier: RouteSpecifier) -> Filter {
    let hcm = HttpConnectionManager {
        stat_prefix: "outbound".to_owned(),
        route_specifier: Some(route_specifier),
        ..Default::default()
    };
    typed("envoy.filters.network.http_connection_manager", &hcm)
}

fn rds(route: &str) -> RouteSpecifier {
    RouteSpecifier::Rds(Rds {
        config_source: Some(ads()),
        route_config_name: route.to_owned(),
    })
}

/// A listener on `127.0.0.1:15001` (the proxy refuses a listener without an address).
fn listener(name: &str, chains: Vec<FilterChain>) -> Listener {
    Listener {
        name: name.to_owned(),
        address: Some(socket("127.0.0.1", 15001)),
        filter_chains: chains,
        ..Default::default()
    }
}

fn hcm_listener(name: &str, route: &str) -> Listener {
    let chain = FilterChain {
        filters: vec![hcm_filter(rds(route))],
        ..Default::default()
    };
    listener(name, vec![chain])
}

fn cla(name: &str) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        ..Default::default()
    }
}

fn route(name: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        ..Default::default()
    }
}

fn ack(ty: TypeUrl, nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: ty.type_url().to_owned(),
        response_nonce: nonce.to_owned(),
        ..Default::default()
    }
}

fn subscribe(ty: TypeUrl, names: &[&str], unsubscribe: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: ty.type_url().to_owned(),
        resource_names_subscribe: names.iter().map(|n| (*n).to_owned()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|n| (*n).to_owned()).collect(),
        ..Default::default()
    }
}

fn names<T>(map: &std::collections::BTreeMap<String, T>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

/// The message of the NACK in `requests`, checking it is the only request, for the nonce.
fn nack_message(requests: &[DeltaDiscoveryRequest], ty_url: &str, nonce: &str) -> String {
    assert_eq!(requests.len(), 1, "{requests:?}");
    let nack = &requests[0];
    assert_eq!(nack.type_url, ty_url);
    assert_eq!(nack.response_nonce, nonce);
    let status = nack
        .error_detail
        .as_ref()
        .expect("a NACK has an error_detail");
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    status.message.clone()
}

// === tests ===

#[test]
fn type_urls_are_the_protobuf_names() {
    assert_eq!(TypeUrl::Cluster.type_url(), Cluster::type_url());
    assert_eq!(
        TypeUrl::ClusterLoadAssignment.type_url(),
        ClusterLoadAssignment::type_url()
    );
    assert_eq!(TypeUrl::Listener.type_url(), Listener::type_url());
    assert_eq!(
        TypeUrl::RouteConfiguration.type_url(),
        RouteConfiguration::type_url()
    );
    assert_eq!(TypeUrl::Secret.type_url(), Secret::type_url());
    for ty in TypeUrl::ALL {
        assert_eq!(TypeUrl::from_type_url(ty.type_url()), Some(ty));
    }
    assert_eq!(TypeUrl::from_type_url("type.googleapis.com/x"), None);
}

#[test]
fn initial_requests_are_wildcard_cds_then_lds() {
    let client = DeltaClient::new(node());
    let requests = client.initial_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].type_url, TypeUrl::Cluster.type_url());
    assert_eq!(requests[1].type_url, TypeUrl::Listener.type_url());
    for r in &requests {
        assert_eq!(r.resource_names_subscribe, ["*"]);
        assert!(r.resource_names_unsubscribe.is_empty());
        assert!(r.initial_resource_versions.is_empty());
        assert!(r.response_nonce.is_empty());
        assert!(r.error_detail.is_none());
    }
    assert_eq!(
        requests[0].node,
        Some(node()),
        "the first request carries the node"
    );
    assert_eq!(requests[1].node, None);
    assert!(!client.is_synced());
}

#[test]
fn good_cds_response_is_acked_with_its_nonce() {
    let mut client = DeltaClient::new(node());
    let c = static_cluster("default/local|8080");
    let out = client.handle_response(response(
        TypeUrl::Cluster,
        "n1",
        vec![wire(&c.name, "v1", any(&c))],
    ));
    assert!(out.rejected.is_none(), "{:?}", out.rejected);
    assert_eq!(out.requests, [ack(TypeUrl::Cluster, "n1")]);
    assert!(out.changed);
    assert!(out.subscribed.is_empty() && out.unsubscribed.is_empty());
    let held = &client.config().clusters["default/local|8080"];
    assert_eq!(held.version, "v1");
    assert_eq!(*held.resource, c);

    // The same resource again changes nothing, but is still ACKed.
    let out = client.handle_response(response(
        TypeUrl::Cluster,
        "n2",
        vec![wire(&c.name, "v1", any(&c))],
    ));
    assert_eq!(out.requests, [ack(TypeUrl::Cluster, "n2")]);
    assert!(!out.changed);

    // Synced once LDS has answered too (here: nothing).
    assert!(!client.is_synced());
    let out = client.handle_response(response(TypeUrl::Listener, "n3", vec![]));
    assert_eq!(out.requests, [ack(TypeUrl::Listener, "n3")]);
    assert!(!out.changed);
    assert!(client.is_synced());
}

#[test]
fn accepted_eds_cluster_subscribes_to_its_endpoints() {
    let mut client = DeltaClient::new(node());
    let own = eds_cluster("default/web|80", "");
    let named = eds_cluster("default/api|80", "api-endpoints");
    let out = client.handle_response(response(
        TypeUrl::Cluster,
        "n1",
        vec![
            wire(&own.name, "1", any(&own)),
            wire(&named.name, "1", any(&named)),
        ],
    ));
    assert!(out.rejected.is_none(), "{:?}", out.rejected);
    // The subscription goes out before the ACK, as Envoy does.
    assert_eq!(
        out.requests,
        [
            subscribe(
                TypeUrl::ClusterLoadAssignment,
                &["api-endpoints", "default/web|80"],
                &[]
            ),
            ack(TypeUrl::Cluster, "n1"),
        ]
    );
    assert_eq!(
        out.subscribed,
        [
            (TypeUrl::ClusterLoadAssignment, "api-endpoints".to_owned()),
            (TypeUrl::ClusterLoadAssignment, "default/web|80".to_owned()),
        ]
    );
    client.handle_response(response(TypeUrl::Listener, "n2", vec![]));
    assert!(!client.is_synced(), "EDS has not answered");

    // Endpoints for a name never asked for are ignored (and the response still ACKed).
    let out = client.handle_response(response(
        TypeUrl::ClusterLoadAssignment,
        "n3",
        vec![
            wire("default/web|80", "e1", any(&cla("default/web|80"))),
            wire("other", "e1", any(&cla("other"))),
        ],
    ));
    assert_eq!(out.requests, [ack(TypeUrl::ClusterLoadAssignment, "n3")]);
    assert!(out.changed);
    assert_eq!(names(&client.config().endpoints), ["default/web|80"]);
    assert!(client.is_synced());
}

#[test]
fn undecodable_resource_is_nacked_naming_it_and_config_is_kept() {
    let mut client = DeltaClient::new(node());
    let a = static_cluster("a");
    client.handle_response(response(
        TypeUrl::Cluster,
        "n1",
        vec![wire("a", "v1", any(&a))],
    ));

    // Field 1 (`name`) holding invalid UTF-8.
    let bad = Any {
        type_url: Cluster::type_url(),
        value: vec![0x0a, 0x01, 0xff],
    };
    let b = static_cluster("b");
    let a2 = Cluster {
        connect_timeout: Some(PbDuration {
            seconds: 7,
            nanos: 0,
        }),
        ..a.clone()
    };
    let out = client.handle_response(response(
        TypeUrl::Cluster,
        "n2",
        vec![
            wire("a", "v2", any(&a2)),
            wire("b", "v2", any(&b)),
            wire("broken", "v2", bad),
        ],
    ));
    let message = nack_message(&out.requests, TypeUrl::Cluster.type_url(), "n2");
    assert!(
        message.starts_with("cluster broken: resource: cannot decode"),
        "{message}"
    );
    assert!(message.contains("Cluster.name"), "{message}");
    assert!(matches!(out.rejected, Some(Error::Decode { .. })));
    assert!(!out.changed);
    // The whole response is rejected: the previous config stays.
    assert_eq!(names(&client.config().clusters), ["a"]);
    assert_eq!(client.config().clusters["a"].version, "v1");
    assert_eq!(*client.config().clusters["a"].resource, a);
}

#[test]
fn malformed_responses_are_nacked() {
    let c = static_cluster("c");
    let l = listener("l", vec![]);
    let unnamed = Resource {
        resource: Some(any(&c)),
        ..Default::default()
    };
    let cases: Vec<(Vec<Resource>, &str)> = vec![
        (
            vec![wire("c", "1", any(&l))],
            "cluster c: resource.type_url: \"type.googleapis.com/envoy.config.listener.v3.Listener\"",
        ),
        (vec![unnamed], "cluster #0: name: must not be empty"),
        (
            vec![wire("c", "1", any(&c)), wire("c", "2", any(&c))],
            "cluster c: listed more than once",
        ),
        (
            vec![wire("other", "1", any(&c))],
            "cluster other: name: does not match the resource's own name \"c\"",
        ),
        (
            vec![Resource {
                name: "c".to_owned(),
                ..Default::default()
            }],
            "cluster c: resource: missing",
        ),
    ];
    for (resources, expected) in cases {
        let mut client = DeltaClient::new(node());
        let out = client.handle_response(response(TypeUrl::Cluster, "n", resources));
        let message = nack_message(&out.requests, TypeUrl::Cluster.type_url(), "n");
        assert!(message.starts_with(expected), "{message}");
        assert!(client.config().clusters.is_empty());
    }

    let mut client = DeltaClient::new(node());
    let out = client.handle_response(DeltaDiscoveryResponse {
        type_url: "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig".to_owned(),
        nonce: "n".to_owned(),
        ..Default::default()
    });
    let message = nack_message(
        &out.requests,
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "n",
    );
    assert!(message.starts_with("unknown resource type"), "{message}");
}

#[test]
fn unsupported_features_are_nacked_naming_the_field() {
    let dns = Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32)),
        ..static_cluster("dns")
    };
    let mut not_ads = eds_cluster("rest", "");
    if let Some(eds) = &mut not_ads.eds_cluster_config {
        eds.eds_config = Some(ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::PathConfigSource(
                PathConfigSource::default(),
            )),
            ..Default::default()
        });
    }
    let mut client = DeltaClient::new(node());
    for (c, expected) in [
        (
            dns,
            "cluster dns: type: only STATIC, EDS and ORIGINAL_DST clusters are supported",
        ),
        (
            not_ads,
            "cluster rest: eds_cluster_config.eds_config: only ADS is supported",
        ),
    ] {
        let out = client.handle_response(response(
            TypeUrl::Cluster,
            "n",
            vec![wire(&c.name, "1", any(&c))],
        ));
        let message = nack_message(&out.requests, TypeUrl::Cluster.type_url(), "n");
        assert_eq!(message, expected);
    }

    let scoped = listener(
        "scoped",
        vec![FilterChain {
            filters: vec![hcm_filter(RouteSpecifier::ScopedRoutes(
                ScopedRoutes::default(),
            ))],
            ..Default::default()
        }],
    );
    let out = client.handle_response(response(
        TypeUrl::Listener,
        "n",
        vec![wire("scoped", "1", any(&scoped))],
    ));
    let message = nack_message(&out.requests, TypeUrl::Listener.type_url(), "n");
    assert_eq!(
        message,
        "listener scoped: filter_chains[0].filters[0].typed_config.scoped_routes: \
         scoped routes are not supported"
    );
    assert!(client.config().clusters.is_empty() && client.config().listeners.is_empty());
}

#[test]
fn removed_resources_are_dropped() {
    let mut client = DeltaClient::new(node());
    let (a, b) = (static_cluster("a"), static_cluster("b"));
    client.handle_response(response(
        TypeUrl::Cluster,
        "n1",
        vec![wire("a", "1", any(&a)), wire("b", "1", any(&b))],
    ));
    let out = client.handle_response(removal(TypeUrl::Cluster, "n2", &["a"]));
    assert_eq!(out.requests, [ack(TypeUrl::Cluster, "n2")]);
    assert!(out.changed);
    assert_eq!(names(&client.config().clusters), ["b"]);

    // Removing what is not held is no change.
    let out = client.handle_response(removal(TypeUrl::Cluster, "n3", &["a", "zzz"]));
    assert_eq!(out.requests, [ack(TypeUrl::Cluster, "n3")]);
    assert!(!out.changed);
}

#[test]
fn reconnect_offers_held_versions() {
    let mut client = DeltaClient::new(node());
    let c = eds_cluster("default/web|80", "");
    let l = hcm_listener("outbound", "outbound-http");
    client.handle_response(response(
        TypeUrl::Cluster,
        "n1",
        vec![wire(&c.name, "c1", any(&c))],
    ));
    client.handle_response(response(
        TypeUrl::ClusterLoadAssignment,
        "n2",
        vec![wire(&c.name, "e1", any(&cla(&c.name)))],
    ));
    client.handle_response(response(
        TypeUrl::Listener,
        "n3",
        vec![wire("outbound", "l1", any(&l))],
    ));
    client.handle_response(response(
        TypeUrl::RouteConfiguration,
        "n4",
        vec![wire("outbound-http", "r1", any(&route("outbound-http")))],
    ));
    assert!(client.is_synced());

    let requests = client.initial_requests();
    let types: Vec<&str> = requests.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(
        types,
        [
            TypeUrl::Cluster.type_url(),
            TypeUrl::ClusterLoadAssignment.type_url(),
            TypeUrl::Listener.type_url(),
            TypeUrl::RouteConfiguration.type_url(),
        ]
    );
    let expect = [
        ("*", "default/web|80", "c1"),
        ("default/web|80", "default/web|80", "e1"),
        ("*", "outbound", "l1"),
        ("outbound-http", "outbound-http", "r1"),
    ];
    for (r, (subscribed, name, version)) in requests.iter().zip(expect) {
        assert_eq!(r.resource_names_subscribe, [subscribed]);
        assert_eq!(r.initial_resource_versions.len(), 1);
        assert_eq!(r.initial_resource_versions[name], version);
        assert!(r.response_nonce.is_empty());
    }
    assert_eq!(requests[0].node, Some(node()));
    assert!(requests[1..].iter().all(|r| r.node.is_none()));
}

#[test]
fn hcm_listener_subscribes_to_its_route_configuration() {
    let mut client = DeltaClient::new(node());
    let inline = listener(
        "inline",
        vec![FilterChain {
            filters: vec![hcm_filter(RouteSpecifier::RouteConfig(route("inline")))],
            ..Default::default()
        }],
    );
    let out = client.handle_response(response(
        TypeUrl::Listener,
        "n1",
        vec![
            wire(
                "outbound",
                "1",
                any(&hcm_listener("outbound", "outbound-http")),
            ),
            wire("inline", "1", any(&inline)),
        ],
    ));
    assert!(out.rejected.is_none(), "{:?}", out.rejected);
    assert_eq!(
        out.requests,
        [
            subscribe(TypeUrl::RouteConfiguration, &["outbound-http"], &[]),
            ack(TypeUrl::Listener, "n1"),
        ]
    );
    assert_eq!(
        client.subscriptions(TypeUrl::RouteConfiguration),
        ["outbound-http"]
    );

    // Replacing the listener's route moves the subscription and drops the old route.
    client.handle_response(response(
        TypeUrl::RouteConfiguration,
        "n2",
        vec![wire("outbound-http", "r1", any(&route("outbound-http")))],
    ));
    assert_eq!(names(&client.config().routes), ["outbound-http"]);
    let out = client.handle_response(response(
        TypeUrl::Listener,
        "n3",
        vec![wire(
            "outbound",
            "2",
            any(&hcm_listener("outbound", "outbound-http-v2")),
        )],
    ));
    assert_eq!(
        out.requests,
        [
            subscribe(
                TypeUrl::RouteConfiguration,
                &["outbound-http-v2"],
                &["outbound-http"]
            ),
            ack(TypeUrl::Listener, "n3"),
        ]
    );
    assert!(out.changed);
    assert!(client.config().routes.is_empty());
}

#[test]
fn tls_transport_sockets_subscribe_to_their_secrets() {
    let mut client = DeltaClient::new(node());
    let c = mtls_cluster("default/web|80");
    let out = client.handle_response(response(
        TypeUrl::Cluster,
        "n1",
        vec![wire(&c.name, "1", any(&c))],
    ));
    assert!(out.rejected.is_none(), "{:?}", out.rejected);
    assert_eq!(
        out.requests,
        [
            subscribe(TypeUrl::ClusterLoadAssignment, &["default/web|80"], &[]),
            subscribe(TypeUrl::Secret, &[BUNDLE, CERT], &[]),
            ack(TypeUrl::Cluster, "n1"),
        ]
    );

    // An inbound listener naming the same certificate and another bundle: only the new name.
    let tls = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(CERT)],
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    validation_context_sds_secret_config: Some(sds("spiffe://other.domain")),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let inbound = listener(
        "inbound",
        vec![FilterChain {
            filters: vec![hcm_filter(RouteSpecifier::RouteConfig(route("inbound")))],
            transport_socket: Some(tls_socket(any(&tls))),
            ..Default::default()
        }],
    );
    let out = client.handle_response(response(
        TypeUrl::Listener,
        "n2",
        vec![wire("inbound", "1", any(&inbound))],
    ));
    assert_eq!(
        out.requests,
        [
            subscribe(TypeUrl::Secret, &["spiffe://other.domain"], &[]),
            ack(TypeUrl::Listener, "n2"),
        ]
    );

    // The secret is held, and never printed.
    let key = "-----BEGIN PRIVATE KEY-----";
    let s = Secret {
        name: CERT.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(
                    "-----BEGIN CERTIFICATE-----".to_owned(),
                )),
                ..Default::default()
            }),
            private_key: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(key.to_owned())),
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    let out = client.handle_response(response(
        TypeUrl::Secret,
        "n3",
        vec![wire(CERT, "s1", any(&s))],
    ));
    assert_eq!(out.requests, [ack(TypeUrl::Secret, "n3")]);
    assert_eq!(*client.config().secrets[CERT].resource, s);
    let debug = format!("{:?} {client:?}", client.config());
    assert!(!debug.contains(key), "{debug}");
    assert!(debug.contains(CERT), "{debug}");
}

#[test]
fn cluster_going_away_unsubscribes_its_endpoints() {
    let mut client = DeltaClient::new(node());
    let web = eds_cluster("default/web|80", "");
    // Two clusters sharing one EDS name.
    let a = eds_cluster("default/api|80", "api");
    let b = eds_cluster("default/api|81", "api");
    client.handle_response(response(
        TypeUrl::Cluster,
        "n1",
        vec![
            wire(&web.name, "1", any(&web)),
            wire(&a.name, "1", any(&a)),
            wire(&b.name, "1", any(&b)),
        ],
    ));
    client.handle_response(response(
        TypeUrl::ClusterLoadAssignment,
        "n2",
        vec![
            wire("default/web|80", "e1", any(&cla("default/web|80"))),
            wire("api", "e1", any(&cla("api"))),
        ],
    ));
    assert_eq!(names(&client.config().endpoints), ["api", "default/web|80"]);

    // The web cluster is removed: its endpoints are unsubscribed and dropped, before the ACK.
    let out = client.handle_response(removal(TypeUrl::Cluster, "n3", &["default/web|80"]));
    assert_eq!(
        out.requests,
        [
            subscribe(TypeUrl::ClusterLoadAssignment, &[], &["default/web|80"]),
            ack(TypeUrl::Cluster, "n3"),
        ]
    );
    assert_eq!(
        out.unsubscribed,
        [(TypeUrl::ClusterLoadAssignment, "default/web|80".to_owned())]
    );
    assert!(out.changed);
    assert_eq!(names(&client.config().endpoints), ["api"]);

    // One of two clusters sharing "api" becomes STATIC: the other still needs it.
    let out = client.handle_response(response(
        TypeUrl::Cluster,
        "n4",
        vec![wire(&a.name, "2", any(&static_cluster(&a.name)))],
    ));
    assert_eq!(out.requests, [ack(TypeUrl::Cluster, "n4")]);
    assert_eq!(
        client.subscriptions(TypeUrl::ClusterLoadAssignment),
        ["api"]
    );

    // The other goes too: now "api" is unsubscribed, and EDS left out on reconnect.
    let out = client.handle_response(removal(TypeUrl::Cluster, "n5", &[&b.name]));
    assert_eq!(
        out.requests,
        [
            subscribe(TypeUrl::ClusterLoadAssignment, &[], &["api"]),
            ack(TypeUrl::Cluster, "n5"),
        ]
    );
    assert!(client.config().endpoints.is_empty());
    let requests = client.initial_requests();
    let types: Vec<&str> = requests.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(
        types,
        [TypeUrl::Cluster.type_url(), TypeUrl::Listener.type_url()]
    );
}

// === token buckets ===

/// A listener whose HTTP connection manager's access log takes its tokens from `bucket`
/// (none: unlimited).
fn tapped_listener(bucket: Option<&str>) -> Listener {
    use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
    use switchyard_proxy_config::test_support::{
        grpc_access_log, logged_listener, rate_limit_filter,
    };

    let log = AccessLog {
        filter: bucket.map(rate_limit_filter),
        ..grpc_access_log("switchyard-tap")
    };
    logged_listener("tapped", 8080, vec![log])
}

/// The token bucket `name` as the runtime holds it.
fn held_bucket(config: &super::Config, name: &str) -> Option<crate::config::TokenBucketConfig> {
    config.runtime().buckets.get(name).map(|b| **b)
}

#[test]
fn a_listener_waits_for_its_token_bucket_and_an_older_version_serves_meanwhile() {
    use std::time::Duration;

    use switchyard_proxy_config::test_support::token_bucket;

    let mut client = DeltaClient::new(node());
    let serving = |client: &DeltaClient| {
        client
            .config()
            .runtime()
            .listeners
            .get("tapped")
            .map(|l| l.bucket_names().map(|b| b.to_string()).collect::<Vec<_>>())
    };

    // A new listener that names a bucket: subscribed, not served, and not ready.
    let outcome = client.handle_response(response(
        TypeUrl::Listener,
        "l1",
        vec![wire(
            "tapped",
            "1",
            any(&tapped_listener(Some("switchyard-tap"))),
        )],
    ));
    assert!(outcome.rejected.is_none(), "{:?}", outcome.rejected);
    assert!(
        outcome
            .requests
            .contains(&subscribe(TypeUrl::TokenBucket, &["switchyard-tap"], &[])),
        "{:?}",
        outcome.requests
    );
    assert_eq!(
        client.subscriptions(TypeUrl::TokenBucket),
        ["switchyard-tap"]
    );
    assert!(client.config().contains(TypeUrl::Listener, "tapped"));
    assert!(client.config().is_warming("tapped"));
    assert_eq!(serving(&client), None);
    client.handle_response(response(TypeUrl::Cluster, "c1", vec![]));
    client.handle_response(response(
        TypeUrl::RouteConfiguration,
        "r1",
        vec![wire("tapped", "1", any(&route("tapped")))],
    ));
    assert!(
        !client.is_synced(),
        "the bucket is subscribed and unanswered"
    );

    // The bucket arrives: the listener serves.
    let bucket = token_bucket(3, 1, Duration::from_secs(3600));
    let outcome = client.handle_response(response(
        TypeUrl::TokenBucket,
        "b1",
        vec![wire("switchyard-tap", "1", any(&bucket))],
    ));
    assert!(outcome.rejected.is_none() && outcome.changed);
    assert_eq!(serving(&client), Some(vec!["switchyard-tap".to_owned()]));
    assert!(!client.config().is_warming("tapped"));
    assert!(client.is_synced());
    assert_eq!(
        held_bucket(client.config(), "switchyard-tap").map(|b| b.max_tokens),
        Some(3)
    );

    // The tap ends, then starts again under another bucket: the untapped version serves
    // until the new bucket arrives.
    client.handle_response(response(
        TypeUrl::Listener,
        "l2",
        vec![wire("tapped", "2", any(&tapped_listener(None)))],
    ));
    assert_eq!(serving(&client), Some(vec![]));
    assert!(client.subscriptions(TypeUrl::TokenBucket).is_empty());
    assert_eq!(held_bucket(client.config(), "switchyard-tap"), None);
    client.handle_response(response(
        TypeUrl::Listener,
        "l3",
        vec![wire("tapped", "3", any(&tapped_listener(Some("tap-2"))))],
    ));
    assert!(client.config().is_warming("tapped"));
    assert_eq!(serving(&client), Some(vec![]), "the older version serves");
    client.handle_response(response(
        TypeUrl::TokenBucket,
        "b2",
        vec![wire("tap-2", "1", any(&bucket))],
    ));
    assert_eq!(serving(&client), Some(vec!["tap-2".to_owned()]));

    // A warming listener that goes away is gone.
    client.handle_response(response(
        TypeUrl::Listener,
        "l4",
        vec![wire("tapped", "4", any(&tapped_listener(Some("tap-3"))))],
    ));
    assert!(client.config().is_warming("tapped"));
    client.handle_response(removal(TypeUrl::Listener, "l5", &["tapped"]));
    assert!(!client.config().is_warming("tapped"));
    assert_eq!(serving(&client), None);
}

/// A filtered tap names a bucket per session, behind header conditions: the listener waits
/// for every one of them, whether or not a request would reach it, as Envoy's does.
#[test]
fn a_listener_waits_for_every_bucket_of_its_filter() {
    use std::time::Duration;

    use envoy_types::pb::envoy::{
        config::accesslog::v3::AccessLog, r#type::matcher::v3::string_matcher::MatchPattern,
    };
    use switchyard_proxy_config::test_support::{
        and_filter, grpc_access_log, header_filter, logged_listener, or_filter, rate_limit_filter,
        token_bucket,
    };

    let filter = or_filter(vec![
        rate_limit_filter("switchyard-tap"),
        and_filter(vec![
            header_filter(":path", MatchPattern::Prefix("/a".to_owned())),
            rate_limit_filter("switchyard-tap-1"),
        ]),
    ]);
    let log = AccessLog {
        filter: Some(filter),
        ..grpc_access_log("switchyard-tap")
    };
    let listener = logged_listener("tapped", 8080, vec![log]);
    let mut client = DeltaClient::new(node());
    let outcome = client.handle_response(response(
        TypeUrl::Listener,
        "l1",
        vec![wire("tapped", "1", any(&listener))],
    ));
    assert!(outcome.rejected.is_none(), "{:?}", outcome.rejected);
    assert_eq!(
        client.subscriptions(TypeUrl::TokenBucket),
        ["switchyard-tap", "switchyard-tap-1"]
    );
    let bucket = token_bucket(3, 1, Duration::from_secs(3600));
    client.handle_response(response(
        TypeUrl::TokenBucket,
        "b1",
        vec![wire("switchyard-tap", "1", any(&bucket))],
    ));
    assert!(
        client.config().is_warming("tapped"),
        "the session's bucket is still missing"
    );
    client.handle_response(response(
        TypeUrl::TokenBucket,
        "b2",
        vec![wire("switchyard-tap-1", "1", any(&bucket))],
    ));
    assert!(!client.config().is_warming("tapped"));
    assert!(client.config().runtime().listeners.contains_key("tapped"));
}

#[test]
fn an_invalid_token_bucket_is_nacked_naming_the_field() {
    use std::time::Duration;

    use switchyard_proxy_config::test_support::token_bucket;

    let mut client = DeltaClient::new(node());
    client.handle_response(response(
        TypeUrl::Listener,
        "l1",
        vec![wire(
            "tapped",
            "1",
            any(&tapped_listener(Some("switchyard-tap"))),
        )],
    ));
    let outcome = client.handle_response(response(
        TypeUrl::TokenBucket,
        "b1",
        vec![wire(
            "switchyard-tap",
            "1",
            any(&token_bucket(3, 1, Duration::from_millis(49))),
        )],
    ));
    assert_eq!(
        nack_message(&outcome.requests, TypeUrl::TokenBucket.type_url(), "b1"),
        "token bucket switchyard-tap: fill_interval: must be at least 50ms"
    );
    assert!(client.config().is_warming("tapped"));
}
