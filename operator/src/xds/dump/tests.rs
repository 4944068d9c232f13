use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;

use super::*;
use crate::xds::{
    acked::{AckedConfig, Change},
    fixtures::{cluster, secret, versioned},
    status::ProxyStatuses,
    store::ProxyKey,
};

/// A stream of `demo/web-0` that ACKed clusters `a`, `b` and secret `s` (holding "s3cr3t"),
/// and rejected a later cluster version.
fn live() -> (Arc<ProxyStatuses>, LiveConfig) {
    let statuses = Arc::new(ProxyStatuses::default());
    let node = Node {
        id: "web-0".into(),
        user_agent_name: "envoy".into(),
        ..Default::default()
    };
    let entry = statuses.open(&ProxyKey::from("demo/web-0"), &node, "sotw");
    let mut clusters = AckedConfig::default();
    clusters.sent(Change::Replace(&[
        versioned(TypeUrl::Cluster, "a", cluster("a", 1)),
        versioned(TypeUrl::Cluster, "b", cluster("b", 1)),
    ]));
    clusters.acked();
    clusters.sent(Change::Replace(&[versioned(
        TypeUrl::Cluster,
        "a",
        cluster("a", 2),
    )]));
    clusters.nacked("cluster a: bad");
    let mut secrets = AckedConfig::default();
    secrets.sent(Change::Replace(&[versioned(
        TypeUrl::Secret,
        "s",
        secret("s", "s3cr3t"),
    )]));
    secrets.acked();
    entry.update(|t| {
        let acked = match t {
            TypeUrl::Cluster => clusters.view(),
            TypeUrl::Secret => secrets.view(),
            _ => Default::default(),
        };
        let sync = match t {
            TypeUrl::Cluster => TypeSync::Nacked {
                message: "cluster a: bad".into(),
            },
            TypeUrl::Secret => TypeSync::Synced,
            _ => TypeSync::NotRequested,
        };
        (sync, acked)
    });
    let live = statuses.config("demo/web-0").unwrap();
    // The entry goes with the stream; the copy stays.
    drop(entry);
    (statuses, live)
}

#[test]
fn the_dump_shows_acked_resources_the_rejection_and_no_secret() {
    let (_statuses, live) = live();
    let dump = ConfigDump::of(&live, TypeFilter::All, MAX_DUMP_BYTES);
    assert_eq!(
        (
            dump.proxy.as_str(),
            dump.node.as_str(),
            dump.data_plane.as_str()
        ),
        ("demo/web-0", "web-0", "envoy")
    );
    assert_eq!(
        dump.types.keys().collect::<Vec<_>>(),
        ["CDS", "EDS", "LDS", "RDS", "SDS", "TBDS"]
    );
    let cds = &dump.types["CDS"];
    let names: Vec<&str> = cds
        .resources
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"], "the ACKed version, not the rejected one");
    assert_eq!(cds.resources[0]["@type"], TypeUrl::Cluster.type_url());
    let nacked = cds.nacked.as_ref().unwrap();
    assert_eq!(nacked.message, "cluster a: bad");
    assert_ne!(Some(&nacked.version), cds.version.as_ref());
    assert_eq!(dump.types["EDS"].version, None, "never ACKed");
    assert_eq!(
        dump.types["SDS"].resources[0]["genericSecret"]["secret"],
        crate::xds::render::REDACTED
    );

    let text = serde_json::to_string(&dump).unwrap();
    assert!(!text.contains("s3cr3t"), "{text}");
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["types"]["CDS"]["state"], "NACKED");
    assert_eq!(json["types"]["SDS"]["state"], "SYNCED");
    assert_eq!(
        serde_json::from_str::<ConfigDump>(&text).unwrap(),
        dump,
        "round trip"
    );
}

#[test]
fn a_filter_picks_one_type_and_the_size_bound_omits_the_rest() {
    let (_statuses, live) = live();
    let only = ConfigDump::of(&live, TypeFilter::parse("cds").unwrap(), MAX_DUMP_BYTES);
    assert_eq!(only.types.keys().collect::<Vec<_>>(), ["CDS"]);
    assert_eq!(TypeFilter::parse("XDS"), Err(UnknownType("XDS".into())));
    assert_eq!(TypeFilter::parse("ALL"), Ok(TypeFilter::All));
    for t in TypeUrl::ALL {
        let f = TypeFilter::Only(t);
        assert_eq!(TypeFilter::parse(f.as_str()), Ok(f));
    }

    let one = serde_json::to_vec(&only.types["CDS"].resources[0])
        .unwrap()
        .len();
    let bounded = ConfigDump::of(&live, TypeFilter::Only(TypeUrl::Cluster), one);
    assert_eq!(bounded.types["CDS"].resources.len(), 1);
    assert_eq!(bounded.types["CDS"].omitted, 1);
}
