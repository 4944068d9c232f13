use envoy_types::pb::{envoy::config::cluster::v3::Cluster, google::protobuf::Any};
use prost::{Message, Name};

use super::*;

fn any(c: &Cluster) -> Any {
    Any {
        type_url: Cluster::type_url(),
        value: c.encode_to_vec(),
    }
}

#[test]
fn type_urls_round_trip_in_push_order() {
    for (i, t) in TypeUrl::ALL.into_iter().enumerate() {
        assert_eq!(TypeUrl::from_type_url(t.type_url()), Some(t));
        assert_eq!(t.index(), i);
    }
    assert_eq!(TypeUrl::Cluster.type_url(), Cluster::type_url());
    assert_eq!(TypeUrl::ClusterLoadAssignment.to_string(), "EDS");
    assert_eq!(
        TypeUrl::ClusterLoadAssignment.noun(),
        "cluster load assignment"
    );
    assert!(TypeUrl::Listener.is_wildcard() && !TypeUrl::Secret.is_wildcard());
}

#[test]
fn a_field_outside_the_subset_is_refused_where_it_is() {
    let plain = Cluster {
        name: "c".to_owned(),
        ..Default::default()
    };
    assert!(matches!(
        translate(TypeUrl::Cluster, "c", &any(&plain)),
        Ok(Translation::Cluster(_))
    ));

    let dns = Cluster {
        dns_lookup_family: 1,
        ..plain.clone()
    };
    let refused = translate(TypeUrl::Cluster, "c", &any(&dns)).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "dns_lookup_family: not supported by the bundled proxy"
    );

    let refused = translate(TypeUrl::Cluster, "other", &any(&plain)).unwrap_err();
    assert_eq!(refused.field(), "name");
    let refused = translate(TypeUrl::Listener, "c", &any(&plain)).unwrap_err();
    assert_eq!(refused.field(), "type_url");
}
