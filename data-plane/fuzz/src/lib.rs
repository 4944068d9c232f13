//! Fixtures of the proxy's fuzz targets: a real mesh configuration as the Envoy adapter compiles
//! it (a client with an HTTP split, a canary match, gRPC and TCP services, and a server with
//! strict TrafficTarget rules, all over mTLS), and that configuration accepted by the proxy's
//! xDS client.

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{DeltaDiscoveryResponse, Resource as WireResource},
};
use switchyard_adapters::{
    envoy::Resource,
    model::{AccessMode, ProxyConfig},
    test_support::{demo_client, demo_server, local_options, mesh, served},
};
use switchyard_proxy::{
    config::Runtime,
    xds::{DeltaClient, TypeUrl},
};

/// SPIFFE IDs that appear in the configuration's RBAC principals.
pub const IDENTITIES: [&str; 3] = [
    "spiffe://cluster.local/ns/demo/sa/client",
    "spiffe://cluster.local/ns/ops/sa/admin",
    "spiffe://cluster.local/ns/demo/sa/web",
];

/// `demo/client-0`, which also serves, running as `web`: every kind of outbound and inbound
/// port and rule (the adapter's `demo` client and server in one).
pub fn proxy() -> ProxyConfig {
    let server = demo_server();
    ProxyConfig {
        identity: server.identity,
        inbound: server.inbound,
        ..demo_client()
    }
}

/// Every resource the control plane serves [`proxy`] in strict mode with mTLS, secrets
/// included.
pub fn resources() -> Vec<Resource> {
    served(&proxy(), &mesh(AccessMode::Strict), &local_options(true))
}

/// The responses that deliver [`resources`], one per type in the order the control plane
/// answers (the order of `TypeUrl::ALL`), each at version `1`.
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
