//! The state-of-the-world client: requests carry whole subscriptions, versions and nonces;
//! responses are whole states.

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::*;
use crate::xds::SotwClient;

fn sotw(ty: TypeUrl, version: &str, nonce: &str, resources: Vec<Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.to_owned(),
        resources,
        type_url: ty.type_url().to_owned(),
        nonce: nonce.to_owned(),
        ..Default::default()
    }
}

fn of(requests: &[DiscoveryRequest], ty: TypeUrl) -> Vec<&DiscoveryRequest> {
    requests
        .iter()
        .filter(|r| r.type_url == ty.type_url())
        .collect()
}

#[test]
fn initial_requests_are_wildcard_cds_and_lds_with_the_node_first() {
    let mut client = SotwClient::new(node());
    let initial = client.initial_requests();
    let types: Vec<&str> = initial.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(
        types,
        [TypeUrl::Cluster.type_url(), TypeUrl::Listener.type_url()]
    );
    assert!(initial.iter().all(|r| r.resource_names.is_empty()));
    assert_eq!(
        initial[0].node.as_ref().map(|n| n.id.as_str()),
        Some("sidecar-0")
    );
    assert!(initial[1].node.is_none());
}

#[test]
fn a_whole_state_is_acked_with_its_version_and_subscribes_what_it_references() {
    let mut client = SotwClient::new(node());
    client.initial_requests();
    let out = client.handle_response(sotw(
        TypeUrl::Cluster,
        "v1",
        "n1",
        vec![
            any(&eds_cluster("web", "web-eds")),
            any(&static_cluster("local")),
        ],
    ));
    assert!(out.rejected.is_none() && out.changed);
    // The EDS name the cluster references, as a whole subscription; then the ACK.
    let eds = of(&out.requests, TypeUrl::ClusterLoadAssignment);
    assert_eq!(eds.len(), 1);
    assert_eq!(eds[0].resource_names, ["web-eds"]);
    let last = out.requests.last().unwrap();
    assert_eq!(last.type_url, TypeUrl::Cluster.type_url());
    assert_eq!(
        (last.version_info.as_str(), last.response_nonce.as_str()),
        ("v1", "n1")
    );
    assert!(last.error_detail.is_none());

    let out = client.handle_response(sotw(
        TypeUrl::ClusterLoadAssignment,
        "e1",
        "n2",
        vec![any(&cla("web-eds"))],
    ));
    assert!(out.rejected.is_none() && out.changed);
    assert_eq!(names(&client.config().endpoints), ["web-eds"]);
    let ack = out.requests.last().unwrap();
    assert_eq!(ack.resource_names, ["web-eds"]);
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("e1", "n2")
    );

    // The next state leaves `web` out: it is removed, and so is its EDS subscription.
    let out = client.handle_response(sotw(
        TypeUrl::Cluster,
        "v2",
        "n3",
        vec![any(&static_cluster("local"))],
    ));
    assert!(out.changed);
    assert_eq!(names(&client.config().clusters), ["local"]);
    assert!(client.config().endpoints.is_empty());
    let eds = of(&out.requests, TypeUrl::ClusterLoadAssignment);
    assert_eq!(eds.len(), 1);
    assert!(eds[0].resource_names.is_empty());
    // An EDS request answers the last EDS nonce and carries the last accepted EDS version.
    assert_eq!(
        (eds[0].version_info.as_str(), eds[0].response_nonce.as_str()),
        ("e1", "n2")
    );
}

#[test]
fn a_bad_state_is_nacked_with_the_previous_version_and_the_config_kept() {
    let mut client = SotwClient::new(node());
    client.initial_requests();
    client.handle_response(sotw(
        TypeUrl::Cluster,
        "v1",
        "n1",
        vec![any(&static_cluster("local"))],
    ));
    let broken = Any {
        type_url: TypeUrl::Cluster.type_url().to_owned(),
        value: vec![0xff, 0xff, 0xff],
    };
    let out = client.handle_response(sotw(TypeUrl::Cluster, "v2", "n2", vec![broken]));
    assert!(out.rejected.is_some());
    assert!(!out.changed);
    assert_eq!(names(&client.config().clusters), ["local"]);
    let nack = out.requests.last().unwrap();
    assert_eq!(
        (nack.version_info.as_str(), nack.response_nonce.as_str()),
        ("v1", "n2")
    );
    let status = nack.error_detail.as_ref().unwrap();
    assert_eq!(status.code, 3);
    assert!(status.message.contains("cluster #0"), "{}", status.message);

    // A reconnect offers the last accepted version, with no stale nonce.
    let again = client.initial_requests();
    let cds = of(&again, TypeUrl::Cluster);
    assert_eq!(cds[0].version_info, "v1");
    assert!(cds[0].response_nonce.is_empty());
}

#[test]
fn a_token_bucket_is_named_by_its_resource_wrapper_or_its_subscription() {
    use std::time::Duration;

    use envoy_types::pb::envoy::service::discovery::v3::Resource as Wrapper;
    use switchyard_proxy_config::test_support::token_bucket;

    let mut client = SotwClient::new(node());
    let outcome = client.handle_response(sotw(
        TypeUrl::Listener,
        "1",
        "l1",
        vec![any(&tapped_listener(Some("switchyard-tap")))],
    ));
    assert!(outcome.rejected.is_none(), "{:?}", outcome.rejected);
    assert_eq!(
        of(&outcome.requests, TypeUrl::TokenBucket)[0].resource_names,
        ["switchyard-tap"]
    );

    // In a wrapper (what Envoy's control planes send for a resource without a name).
    let wrapped = any(&Wrapper {
        name: "switchyard-tap".to_owned(),
        resource: Some(any(&token_bucket(3, 1, Duration::from_secs(3600)))),
        ..Default::default()
    });
    let outcome = client.handle_response(sotw(TypeUrl::TokenBucket, "1", "b1", vec![wrapped]));
    assert!(outcome.rejected.is_none(), "{:?}", outcome.rejected);
    assert!(
        client
            .config()
            .contains(TypeUrl::TokenBucket, "switchyard-tap")
    );
    assert!(!client.config().is_warming("tapped"));

    // Bare: the one bucket subscribed to.
    let bare = any(&token_bucket(5, 1, Duration::from_secs(3600)));
    let outcome = client.handle_response(sotw(TypeUrl::TokenBucket, "2", "b2", vec![bare]));
    assert!(outcome.rejected.is_none(), "{:?}", outcome.rejected);
    assert_eq!(
        held_bucket(client.config(), "switchyard-tap").map(|b| b.max_tokens),
        Some(5)
    );
}
