use super::*;
use crate::xds::fixtures::{cla, cluster, listener, route, secret, versioned};

fn entries(rev: i64) -> Vec<(TypeUrl, String, Any)> {
    vec![
        (
            TypeUrl::Cluster,
            "default/web|80".to_string(),
            cluster("default/web|80", 1),
        ),
        (
            TypeUrl::Cluster,
            "default/api|80".to_string(),
            cluster("default/api|80", rev),
        ),
        (
            TypeUrl::ClusterLoadAssignment,
            "default/web|80".to_string(),
            cla("default/web|80", 80),
        ),
        (
            TypeUrl::ClusterLoadAssignment,
            "default/api|80".to_string(),
            cla("default/api|80", 80),
        ),
        (
            TypeUrl::Listener,
            "outbound".to_string(),
            listener("outbound", "rds-80", 15001),
        ),
        (
            TypeUrl::RouteConfiguration,
            "rds-80".to_string(),
            route("rds-80", "a"),
        ),
    ]
}

#[test]
fn type_urls_round_trip_in_push_order() {
    let shorts: Vec<_> = TypeUrl::ALL.iter().map(|t| t.short_name()).collect();
    assert_eq!(shorts, ["CDS", "EDS", "LDS", "RDS", "SDS", "TBDS"]);
    for t in TypeUrl::ALL {
        assert_eq!(TypeUrl::from_type_url(t.type_url()), Some(t));
    }
    assert_eq!(
        TypeUrl::Secret.type_url(),
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
    );
    assert_eq!(
        TypeUrl::from_type_url("type.googleapis.com/envoy.config.core.v3.Node"),
        None
    );
}

#[test]
fn versions_are_stable_across_identical_snapshots() {
    let a = Snapshot::new(entries(1)).unwrap();
    let b = Snapshot::new(entries(1)).unwrap();
    for t in TypeUrl::ALL {
        assert_eq!(a.version(t), b.version(t), "{t}");
        for r in a.resources(t).iter() {
            assert_eq!(r.version(), b.get(t, r.name()).unwrap().version());
        }
    }
    assert_eq!(a, b);

    // Versions are content hashes: the same bytes give the same version in any process.
    let again = VersionedResource::new(TypeUrl::Cluster, "x", cluster("x", 1), vec![]).unwrap();
    let version = again.version();
    assert_eq!(Version::parse(&version.to_string()), Some(version));
    assert_eq!(version.to_string().len(), 16);
}

#[test]
fn a_change_moves_only_its_resource_and_type() {
    let a = Snapshot::new(entries(1)).unwrap();
    let b = Snapshot::new(entries(2)).unwrap();
    assert_ne!(a.version(TypeUrl::Cluster), b.version(TypeUrl::Cluster));
    for t in [
        TypeUrl::ClusterLoadAssignment,
        TypeUrl::Listener,
        TypeUrl::RouteConfiguration,
    ] {
        assert_eq!(a.version(t), b.version(t), "{t}");
    }
    let version = |s: &Snapshot, n: &str| s.get(TypeUrl::Cluster, n).unwrap().version();
    assert_eq!(version(&a, "default/web|80"), version(&b, "default/web|80"));
    assert_ne!(version(&a, "default/api|80"), version(&b, "default/api|80"));
    assert_ne!(a, b);
}

#[test]
fn a_rename_changes_the_type_version() {
    let a = Snapshot::new([(TypeUrl::Secret, "a".to_string(), secret("s", "v"))]).unwrap();
    let b = Snapshot::new([(TypeUrl::Secret, "b".to_string(), secret("s", "v"))]).unwrap();
    assert_ne!(a.version(TypeUrl::Secret), b.version(TypeUrl::Secret));
}

#[test]
fn duplicate_names_are_rejected() {
    let mut e = entries(1);
    e.push((
        TypeUrl::Cluster,
        "default/web|80".to_string(),
        cluster("default/web|80", 9),
    ));
    assert_eq!(
        Snapshot::new(e).unwrap_err(),
        SnapshotError::DuplicateName {
            type_url: TypeUrl::Cluster,
            name: "default/web|80".into()
        }
    );
    // The same name under two types is fine: "default/web|80" is a cluster and a CLA.
    assert!(Snapshot::new(entries(1)).is_ok());
}

#[test]
fn mismatched_and_unnamed_resources_are_rejected() {
    let err = Snapshot::new([(TypeUrl::Listener, "l".to_string(), cluster("l", 1))]).unwrap_err();
    assert!(matches!(
        err,
        SnapshotError::TypeMismatch {
            type_url: TypeUrl::Listener,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "LDS resource \"l\" carries a \"type.googleapis.com/envoy.config.cluster.v3.Cluster\" \
         payload"
    );
    let err = Snapshot::new([(TypeUrl::Cluster, String::new(), cluster("", 1))]).unwrap_err();
    assert_eq!(
        err,
        SnapshotError::EmptyName {
            type_url: TypeUrl::Cluster
        }
    );

    let mut builder = Snapshot::builder();
    let unknown = Any {
        type_url: "type.googleapis.com/x.Y".to_string(),
        value: Vec::new(),
    };
    assert!(matches!(
        builder.add_any("y", unknown).unwrap_err(),
        SnapshotError::UnsupportedType { .. }
    ));
    builder.add_any("c", cluster("c", 1)).unwrap();
    assert_eq!(builder.build().resources(TypeUrl::Cluster).len(), 1);
}

#[test]
fn shared_resources_keep_their_allocation() {
    let shared = VersionedResource::new(TypeUrl::Cluster, "c", cluster("c", 1), vec![]).unwrap();
    let mut one = Snapshot::builder();
    one.add_shared(shared.clone()).unwrap();
    let mut two = Snapshot::builder();
    two.add_shared(shared.clone()).unwrap();
    let (one, two) = (one.build(), two.build());
    assert!(Arc::ptr_eq(
        one.get(TypeUrl::Cluster, "c").unwrap(),
        two.get(TypeUrl::Cluster, "c").unwrap()
    ));
}

/// A snapshot whose resources name what their payloads name (see [`versioned`]).
fn with_references(entries: Vec<(TypeUrl, String, Any)>) -> Snapshot {
    let mut builder = Snapshot::builder();
    for (t, name, any) in entries {
        builder.add_shared(versioned(t, &name, any)).unwrap();
    }
    builder.build()
}

#[test]
fn references_are_kept_by_type() {
    let c = VersionedResource::new(
        TypeUrl::Cluster,
        "c",
        cluster("c", 1),
        vec![
            Reference::new(TypeUrl::Secret, "s"),
            Reference::new(TypeUrl::ClusterLoadAssignment, "c"),
        ],
    )
    .unwrap();
    let names = |of| c.references(of).map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(names(TypeUrl::ClusterLoadAssignment), ["c"]);
    assert_eq!(names(TypeUrl::Secret), ["s"]);
    assert!(names(TypeUrl::RouteConfiguration).is_empty());
}

#[test]
fn consistency_check_reports_missing_and_unused() {
    assert!(with_references(entries(1)).inconsistencies().is_empty());

    let mut snapshot = Snapshot::builder();
    for (t, name, any) in [
        (TypeUrl::Cluster, "c", cluster("c", 1)),
        (TypeUrl::ClusterLoadAssignment, "orphan", cla("orphan", 1)),
        (TypeUrl::Listener, "l", listener("l", "rds-80", 80)),
        (TypeUrl::RouteConfiguration, "unused", route("unused", "a")),
    ] {
        snapshot.add_shared(versioned(t, name, any)).unwrap();
    }
    let problems: Vec<String> = snapshot
        .build()
        .inconsistencies()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        problems,
        [
            "cluster \"c\" needs endpoints \"c\", which the snapshot lacks",
            "endpoints \"orphan\" are not used by any cluster",
            "listener \"l\" needs route configuration \"rds-80\", which the snapshot lacks",
            "route configuration \"unused\" is not used by any listener",
        ]
    );
}

#[test]
fn consistency_check_reports_missing_secrets() {
    let bundle = "spiffe://cluster.local";
    let tls = |with_secret: bool| {
        let mut snapshot = Snapshot::builder();
        for (t, name, any) in [
            (TypeUrl::Cluster, "c", cluster("c", 1)),
            (TypeUrl::ClusterLoadAssignment, "c", cla("c", 1)),
        ] {
            snapshot.add_shared(versioned(t, name, any)).unwrap();
        }
        let listener = VersionedResource::new(
            TypeUrl::Listener,
            "l",
            listener("l", "r", 80),
            vec![
                Reference::new(TypeUrl::RouteConfiguration, "r"),
                Reference::new(TypeUrl::Secret, bundle),
            ],
        )
        .unwrap();
        snapshot.add_shared(listener).unwrap();
        snapshot
            .add(TypeUrl::RouteConfiguration, "r", route("r", "a"))
            .unwrap();
        if with_secret {
            snapshot
                .add(TypeUrl::Secret, bundle, secret(bundle, "ca"))
                .unwrap();
        }
        snapshot.build().inconsistencies()
    };
    assert_eq!(tls(true), []);
    assert_eq!(
        tls(false),
        [Inconsistency::MissingSecret {
            owner: "listener \"l\"".into(),
            name: bundle.into()
        }]
    );
}

#[test]
fn consistency_check_reports_a_missing_token_bucket() {
    let tapped = |with_bucket: bool| {
        let mut snapshot = Snapshot::builder();
        let listener = VersionedResource::new(
            TypeUrl::Listener,
            "l",
            listener("l", "r", 80),
            vec![
                Reference::new(TypeUrl::RouteConfiguration, "r"),
                Reference::new(TypeUrl::TokenBucket, "switchyard-tap"),
            ],
        )
        .unwrap();
        snapshot.add_shared(listener).unwrap();
        snapshot
            .add(TypeUrl::RouteConfiguration, "r", route("r", "a"))
            .unwrap();
        if with_bucket {
            let bucket = envoy_types::pb::envoy::r#type::v3::TokenBucket {
                max_tokens: 10,
                ..Default::default()
            };
            snapshot
                .add(TypeUrl::TokenBucket, "switchyard-tap", to_any(&bucket))
                .unwrap();
        }
        snapshot.build().inconsistencies()
    };
    assert_eq!(tapped(true), []);
    assert_eq!(
        tapped(false),
        [Inconsistency::MissingTokenBucket {
            listener: "l".into(),
            name: "switchyard-tap".into()
        }]
    );
}

#[test]
fn shared_versions_hash_each_adapter_resource_once() {
    let resource = |rev| {
        Arc::new(envoy::Resource {
            type_url: envoy::CLUSTER_TYPE_URL,
            name: "default/web|80".into(),
            resource: cluster("default/web|80", rev),
            references: vec![Reference::new(
                TypeUrl::ClusterLoadAssignment,
                "default/web|80",
            )],
        })
    };
    let mut versions = SharedVersions::default();
    let a = resource(1);
    let first = versions.get(&a).unwrap();
    assert!(
        Arc::ptr_eq(&first, &versions.get(&a).unwrap()),
        "the same Arc: memoised"
    );
    assert_eq!(
        first
            .references(TypeUrl::ClusterLoadAssignment)
            .collect::<Vec<_>>(),
        [&Arc::<str>::from("default/web|80")],
        "the adapter's references travel with the resource"
    );
    // An equal resource in another allocation is versioned anew, to the same version.
    let b = resource(1);
    let other = versions.get(&b).unwrap();
    assert!(!Arc::ptr_eq(&first, &other));
    assert_eq!(first.version(), other.version());
    assert_ne!(
        first.version(),
        versions.get(&resource(2)).unwrap().version()
    );

    drop(b);
    versions.evict_unused();
    assert_eq!(versions.0.len(), 1, "only what someone else holds stays");
}
