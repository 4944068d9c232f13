//! Fixtures of the proxy's fuzz targets: a real mesh configuration as the Envoy adapter compiles
//! it (a client with an HTTP split, a canary match, gRPC and TCP services, and a server with
//! strict TrafficTarget rules, all over mTLS), and that configuration accepted by the proxy's
//! xDS client.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{DeltaDiscoveryResponse, Resource as WireResource},
};
use switchyard_adapters::{
    envoy::{self as adapter, EnvoyOptions, Resource},
    model::{
        AccessMode, Authorization, Cluster, HttpMatch, Identity, InboundPort, InboundRule,
        MeshSettings, OutboundPort, OutboundService, Protocol, ProxyConfig, WeightedCluster,
    },
    test_support::{self, http_match, route},
};
use switchyard_proxy::{
    config::Runtime,
    xds::{DeltaClient, TypeUrl},
};

// The secrets' PEM is not parsed by the translation, only carried.
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIBkey\n-----END PRIVATE KEY-----\n";
const BUNDLE_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n";

/// SPIFFE IDs that appear in the configuration's RBAC principals.
pub const IDENTITIES: [&str; 3] = [
    "spiffe://cluster.local/ns/demo/sa/client",
    "spiffe://cluster.local/ns/ops/sa/admin",
    "spiffe://cluster.local/ns/demo/sa/web",
];

fn backend(svc: &str, port: u16, weight: u32) -> WeightedCluster {
    test_support::backend("demo", svc, port, weight)
}

fn service(name: &str, ip: Option<[u8; 4]>, ports: Vec<OutboundPort>) -> Arc<OutboundService> {
    test_support::service("demo", name, ip.map(IpAddr::from), ports)
}

fn cluster(
    svc: &str,
    port: u16,
    protocol: Protocol,
    endpoints: &[(&str, Option<&str>)],
) -> Arc<Cluster> {
    let endpoints = test_support::endpoints("demo", endpoints);
    test_support::cluster("demo", svc, port, protocol, endpoints)
}

fn canary() -> HttpMatch {
    http_match(
        Some("/api/.*"),
        &["HEAD", "GET"],
        &[("x-canary", "true|yes")],
    )
}

/// `demo/client-0`, which also serves: every kind of outbound and inbound port and rule.
pub fn proxy() -> ProxyConfig {
    let web = service(
        "web",
        Some([10, 96, 0, 10]),
        vec![OutboundPort {
            port: 80,
            protocol: Protocol::Http,
            routes: vec![
                route(
                    "demo/canary",
                    vec![canary()],
                    vec![backend("web-v2", 80, 1)],
                ),
                route(
                    "demo/web-split",
                    vec![],
                    vec![backend("web-v1", 80, 90), backend("web-v2", 80, 10)],
                ),
            ],
        }],
    );
    let grpc = service(
        "grpc",
        None,
        vec![OutboundPort {
            port: 9000,
            protocol: Protocol::Http2,
            routes: vec![route("default", vec![], vec![backend("grpc", 9000, 1)])],
        }],
    );
    let db = service(
        "db",
        None,
        vec![OutboundPort {
            port: 5432,
            protocol: Protocol::Tcp,
            routes: vec![route(
                "default",
                vec![],
                vec![backend("db-b", 5432, 50), backend("db-a", 5432, 50)],
            )],
        }],
    );
    let clusters = [
        cluster(
            "web-v1",
            80,
            Protocol::Http,
            &[
                ("10.0.0.1:8080", Some("web")),
                ("10.0.0.2:8080", Some("web")),
            ],
        ),
        cluster(
            "web-v2",
            80,
            Protocol::Http,
            &[("10.0.0.3:8080", Some("web")), ("10.0.0.4:8080", None)],
        ),
        cluster(
            "grpc",
            9000,
            Protocol::Http2,
            &[("10.0.0.5:9000", Some("grpc"))],
        ),
        cluster("db-a", 5432, Protocol::Tcp, &[("10.0.0.6:5432", None)]),
        cluster(
            "db-b",
            5432,
            Protocol::Tcp,
            &[("10.0.0.7:5432", Some("db"))],
        ),
    ];
    let client = Identity::new("demo", "client");
    let admin = Identity::new("ops", "admin");
    test_support::proxy(
        "demo",
        "client-0",
        "web",
        [web, grpc, db],
        clusters,
        vec![
            InboundPort {
                port: 8080,
                protocol: Protocol::Http,
                authorization: Authorization::Allow(vec![
                    InboundRule {
                        name: "demo/web-readers".to_owned(),
                        sources: vec![client.clone()],
                        matches: vec![canary(), http_match(Some("/healthz"), &["GET"], &[])],
                    },
                    InboundRule {
                        name: "demo/web-admins".to_owned(),
                        sources: vec![admin],
                        matches: vec![],
                    },
                ]),
            },
            InboundPort {
                port: 9090,
                protocol: Protocol::Http2,
                authorization: Authorization::AllowAll,
            },
            InboundPort {
                port: 7000,
                protocol: Protocol::Tcp,
                authorization: Authorization::Allow(vec![InboundRule {
                    name: "demo/db-clients".to_owned(),
                    sources: vec![client],
                    matches: vec![],
                }]),
            },
            InboundPort {
                port: 5433,
                protocol: Protocol::Tcp,
                authorization: Authorization::Allow(vec![]),
            },
        ],
    )
}

/// Every resource the control plane serves [`proxy`] in strict mode with mTLS, secrets
/// included.
pub fn resources() -> Vec<Resource> {
    let proxy = proxy();
    let mesh = MeshSettings {
        access_mode: AccessMode::Strict,
        ..MeshSettings::default()
    };
    let opts = EnvoyOptions {
        bind_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5)),
        mtls: true,
        ..EnvoyOptions::default()
    };
    let mut resources = adapter::compile(&proxy, &mesh, &opts).resources;
    resources.extend(adapter::secrets(
        &proxy.identity,
        &mesh,
        CERT_PEM,
        KEY_PEM,
        BUNDLE_PEM,
    ));
    resources
}

/// The responses that deliver [`resources`], one per type in the order the control plane
/// answers (CDS, EDS, LDS, RDS, SDS), each at version `1`.
pub fn responses() -> Vec<DeltaDiscoveryResponse> {
    let resources = resources();
    TypeUrl::ALL
        .into_iter()
        .map(|ty| DeltaDiscoveryResponse {
            type_url: ty.type_url().to_owned(),
            nonce: format!("seed-{ty}"),
            resources: resources
                .iter()
                .filter(|r| r.type_url == ty.type_url())
                .map(|r| WireResource {
                    name: r.name.clone(),
                    version: "1".to_owned(),
                    resource: Some(r.resource.clone()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

/// A client that accepted every response of [`responses`].
///
/// # Panics
///
/// When the client rejects one: the fixture itself is broken.
pub fn accepted_client(responses: &[DeltaDiscoveryResponse]) -> DeltaClient {
    let mut client = DeltaClient::new(Node {
        id: "demo/client-0".to_owned(),
        ..Default::default()
    });
    for response in responses {
        let outcome = client.handle_response(response.clone());
        if let Some(error) = outcome.rejected {
            panic!("the fixture was rejected: {error}");
        }
    }
    client
}

/// The runtime of the accepted configuration.
pub fn runtime() -> Runtime {
    let client = accepted_client(&responses());
    client.config().runtime()
}
