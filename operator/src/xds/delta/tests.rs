use std::collections::HashMap;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};

use super::*;
use crate::xds::fixtures::{
    self, cla, cluster, delta_request, listener, mesh, node, rejected, route, secret, snapshot,
};

use TypeUrl::{Cluster as CDS, ClusterLoadAssignment as EDS, Listener as LDS};
use TypeUrl::{RouteConfiguration as RDS, Secret as SDS};

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

fn types(responses: &[DeltaDiscoveryResponse]) -> Vec<TypeUrl> {
    responses
        .iter()
        .map(|r| TypeUrl::from_type_url(&r.type_url).unwrap())
        .collect()
}

fn one(mut responses: Vec<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
    assert_eq!(
        responses.len(),
        1,
        "expected one response, got {:?}",
        types(&responses)
    );
    responses.remove(0)
}

fn ack(s: &mut DeltaStream, r: &DeltaDiscoveryResponse) -> Vec<DeltaDiscoveryResponse> {
    let t = TypeUrl::from_type_url(&r.type_url).unwrap();
    s.handle_request(delta_request(t, &[], &[], &r.nonce))
        .unwrap()
}

fn settled(snapshot: Arc<Snapshot>) -> DeltaStream {
    let mut s = DeltaStream::new(&node());
    s.on_snapshot(snapshot);
    for (t, names) in [
        (CDS, &[][..]),
        (EDS, &["a", "b"]),
        (LDS, &[]),
        (RDS, &["r"]),
        (SDS, &["s"]),
    ] {
        let r = one(s.handle_request(delta_request(t, names, &[], "")).unwrap());
        assert!(ack(&mut s, &r).is_empty(), "{t} ACK is silent");
    }
    s
}

#[test]
fn wildcard_gets_everything_with_per_resource_versions() {
    let snap = mesh(1);
    let mut s = DeltaStream::new(&node());
    s.on_snapshot(snap.clone());

    // Legacy wildcard: the first CDS request names nothing.
    let r = one(s.handle_request(delta_request(CDS, &[], &[], "")).unwrap());
    assert_eq!(names(&r), ["a", "b"]);
    assert_eq!(
        r.resources[0].version,
        snap.get(CDS, "a").unwrap().version().to_string()
    );
    assert_eq!(
        r.resources[0].resource.as_ref(),
        Some(snap.get(CDS, "a").unwrap().any())
    );
    assert_eq!(r.system_version_info, snap.version(CDS).to_string());
    assert!(r.removed_resources.is_empty());

    let r = one(s
        .handle_request(delta_request(LDS, &["*"], &[], ""))
        .unwrap());
    assert_eq!(names(&r), ["l"]);
}

#[test]
fn an_empty_wildcard_is_answered_once() {
    let mut s = DeltaStream::new(&node());
    s.on_snapshot(Arc::new(Snapshot::empty()));
    let r = one(s.handle_request(delta_request(CDS, &[], &[], "")).unwrap());
    assert!(r.resources.is_empty() && r.removed_resources.is_empty());
    assert!(ack(&mut s, &r).is_empty());
    assert!(s.on_snapshot(Arc::new(Snapshot::empty())).is_empty());
}

#[test]
fn named_subscriptions_and_missing_names() {
    let mut s = DeltaStream::new(&node());
    s.on_snapshot(mesh(1));
    let r = one(s
        .handle_request(delta_request(EDS, &["a", "zzz"], &[], ""))
        .unwrap());
    assert_eq!(names(&r), ["a"]);
    assert_eq!(
        r.removed_resources,
        ["zzz"],
        "a missing name is answered at once"
    );
    assert!(ack(&mut s, &r).is_empty());
    assert!(s.on_snapshot(mesh(1)).is_empty(), "told once");

    let with_zzz = snapshot(vec![
        (EDS, "a", cla("a", 8001)),
        (EDS, "zzz", cla("zzz", 1)),
    ]);
    let r = one(s.on_snapshot(with_zzz));
    assert_eq!(names(&r), ["zzz"], "only the resource that appeared");
    assert!(r.removed_resources.is_empty());
}

#[test]
fn only_changed_resources_are_sent_and_removals_are_explicit() {
    let mut s = settled(mesh(1));
    assert!(s.on_snapshot(mesh(1)).is_empty());

    let r = s.on_snapshot(snapshot(vec![
        (CDS, "a", cluster("a", 1)),
        (EDS, "a", cla("a", 8001)),
        (EDS, "b", cla("b", 9000)),
        (LDS, "l", listener("l", "r", 15001)),
        (RDS, "r", route("r", "2")),
        (SDS, "s", secret("s", "1")),
    ]));
    assert_eq!(types(&r), [CDS, RDS]);
    assert!(names(&r[0]).is_empty());
    assert_eq!(r[0].removed_resources, ["b"]);
    assert_eq!(names(&r[1]), ["r"]);
}

#[test]
fn unsubscribed_names_are_forgotten() {
    let mut s = settled(mesh(1));
    let r = one(s.on_snapshot(snapshot(vec![
        (CDS, "a", cluster("a", 1)),
        (CDS, "b", cluster("b", 1)),
        (EDS, "a", cla("a", 8001)),
        (EDS, "b", cla("b", 1234)),
        (LDS, "l", listener("l", "r", 15001)),
        (RDS, "r", route("r", "1")),
        (SDS, "s", secret("s", "1")),
    ])));
    assert_eq!(names(&r), ["b"]);
    let unsubscribe = delta_request(EDS, &[], &["b"], &r.nonce);
    assert!(s.handle_request(unsubscribe).unwrap().is_empty());
    // `b` changes again: nobody listens.
    let later = snapshot(vec![
        (CDS, "a", cluster("a", 1)),
        (CDS, "b", cluster("b", 1)),
        (EDS, "a", cla("a", 8001)),
        (EDS, "b", cla("b", 4321)),
        (LDS, "l", listener("l", "r", 15001)),
        (RDS, "r", route("r", "1")),
        (SDS, "s", secret("s", "1")),
    ]);
    assert!(s.on_snapshot(later).is_empty());
}

#[test]
fn unsubscribing_a_name_wildcard_still_covers_is_answered() {
    let mut s = settled(mesh(1));
    let sub = delta_request(CDS, &["a"], &[], "");
    assert!(
        s.handle_request(sub).unwrap().is_empty(),
        "the client already holds a"
    );
    let r = s
        .handle_request(delta_request(CDS, &[], &["a"], ""))
        .unwrap();
    assert_eq!(
        types(&r),
        [CDS, EDS],
        "the client may have dropped `a`, so it warms again"
    );
    assert_eq!((names(&r[0]), names(&r[1])), (vec!["a"], vec!["a"]));

    // Unsubscribing wildcard itself drops everything not named.
    assert!(ack(&mut s, &r[1]).is_empty());
    assert!(ack(&mut s, &r[0]).is_empty());
    let r = s
        .handle_request(delta_request(CDS, &[], &["*"], &r[0].nonce))
        .unwrap();
    assert!(r.is_empty());
    assert!(
        s.on_snapshot(mesh(2))
            .iter()
            .all(|r| r.type_url != CDS.type_url())
    );
}

#[test]
fn a_reconnect_sends_only_what_changed() {
    let snap = mesh(1);
    let mut s = DeltaStream::new(&node());
    s.on_snapshot(snap.clone());
    let current = |n: &str| snap.get(CDS, n).unwrap().version().to_string();
    let initial: HashMap<String, String> = [
        ("a".to_string(), current("a")),
        ("b".to_string(), "0000000000000000".to_string()),
        ("gone".to_string(), "from-another-server".to_string()),
    ]
    .into();
    let req = DeltaDiscoveryRequest {
        initial_resource_versions: initial,
        ..delta_request(CDS, &[], &[], "")
    };
    let r = one(s.handle_request(req).unwrap());
    assert_eq!(names(&r), ["b"]);
    assert_eq!(r.removed_resources, ["gone"]);

    // A named type the client already holds in full is not answered at all.
    let held: HashMap<String, String> = [(
        "a".to_string(),
        snap.get(EDS, "a").unwrap().version().to_string(),
    )]
    .into();
    let req = DeltaDiscoveryRequest {
        initial_resource_versions: held,
        ..delta_request(EDS, &["a"], &[], "")
    };
    assert!(s.handle_request(req).unwrap().is_empty());
}

#[test]
fn a_nack_parks_until_a_resource_changes() {
    let mut s = DeltaStream::new(&node());
    s.on_snapshot(mesh(1));
    let r = one(s.handle_request(delta_request(CDS, &[], &[], "")).unwrap());
    let nack = DeltaDiscoveryRequest {
        error_detail: Some(rejected()),
        ..delta_request(CDS, &[], &[], &r.nonce)
    };
    assert!(s.handle_request(nack).unwrap().is_empty());
    assert_eq!(s.rejection(CDS).unwrap().message, "bad config");
    assert!(!s.awaiting_ack(CDS));
    assert!(
        s.on_snapshot(mesh(1)).is_empty(),
        "the rejected clusters are not resent"
    );

    let r = one(s.on_snapshot(mesh(2)));
    assert_eq!(names(&r), ["a"], "only the changed cluster");
}

#[test]
fn a_stale_nonce_still_changes_the_subscription() {
    let mut s = DeltaStream::new(&node());
    s.on_snapshot(mesh(1));
    let first = one(s
        .handle_request(delta_request(EDS, &["a"], &[], ""))
        .unwrap());
    assert!(ack(&mut s, &first).is_empty());
    let second = one(s.on_snapshot(mesh(2)));

    let stale = DeltaDiscoveryRequest {
        error_detail: Some(rejected()),
        ..delta_request(EDS, &["b"], &[], &first.nonce)
    };
    assert!(
        s.handle_request(stale).unwrap().is_empty(),
        "waits for the ACK of `second`"
    );
    assert!(s.rejection(EDS).is_none());
    let r = one(ack(&mut s, &second));
    assert_eq!(names(&r), ["b"]);
}

#[test]
fn a_multi_type_change_is_pushed_in_make_before_break_order() {
    let mut s = settled(mesh(1));
    let r = s.on_snapshot(mesh(2));
    assert_eq!(types(&r), [CDS, EDS, LDS, RDS, SDS]);
    for r in &r {
        assert_eq!(
            r.resources.len(),
            1,
            "{}: only the changed resource",
            r.type_url
        );
    }
}

#[test]
fn changed_clusters_resend_their_endpoints() {
    let mut s = settled(mesh(1));
    let snap = snapshot(vec![
        (CDS, "a", cluster("a", 7)),
        (CDS, "b", cluster("b", 1)),
        (EDS, "a", cla("a", 8001)),
        (EDS, "b", cla("b", 9000)),
        (LDS, "l", listener("l", "r", 15001)),
        (RDS, "r", route("r", "1")),
        (SDS, "s", secret("s", "1")),
    ]);
    let r = s.on_snapshot(snap.clone());
    assert_eq!(types(&r), [CDS, EDS]);
    assert_eq!(names(&r[0]), ["a"]);
    assert_eq!(
        names(&r[1]),
        ["a"],
        "only the CLA of the changed cluster, unchanged"
    );
    assert_eq!(
        r[1].resources[0].version,
        snap.get(EDS, "a").unwrap().version().to_string()
    );
}

#[test]
fn pushes_wait_for_acks() {
    let mut s = settled(mesh(1));
    let r = s.on_snapshot(mesh(2));
    assert_eq!(r.len(), 5);
    assert!(
        s.on_snapshot(mesh(3)).is_empty(),
        "CDS still awaits its ACK"
    );
    let more = ack(&mut s, &r[0]);
    assert_eq!(
        types(&more),
        [CDS],
        "EDS is next in line and still awaits its ACK"
    );
}

#[test]
fn the_node_cannot_change_mid_stream() {
    let mut s = DeltaStream::new(&node());
    let mut req = delta_request(CDS, &[], &[], "");
    req.node.as_mut().unwrap().cluster = "other/ns".to_string();
    assert!(matches!(
        s.handle_request(req),
        Err(StreamError::NodeChanged { .. })
    ));
}

fn running(s: &DeltaStream, t: TypeUrl) -> (Option<Version>, Vec<(String, Version)>) {
    fixtures::running(s.acked(t))
}

fn response_for(responses: Vec<DeltaDiscoveryResponse>, t: TypeUrl) -> DeltaDiscoveryResponse {
    responses
        .into_iter()
        .find(|r| r.type_url == t.type_url())
        .unwrap_or_else(|| panic!("no {t} response"))
}

#[test]
fn the_running_config_applies_acked_deltas_and_a_nack_is_pending_beside_it() {
    let one_snap = mesh(1);
    let mut s = settled(one_snap.clone());
    let at = |snap: &Snapshot, n: &str| snap.get(CDS, n).unwrap().version();
    let v1 = (
        Some(one_snap.version(CDS)),
        vec![
            ("a".to_owned(), at(&one_snap, "a")),
            ("b".to_owned(), at(&one_snap, "b")),
        ],
    );
    assert_eq!(running(&s, CDS), v1);

    // Only `a` changes; in flight it is not running, and rejected it stays pending.
    let two = mesh(2);
    let r = response_for(s.on_snapshot(two.clone()), CDS);
    assert_eq!(names(&r), ["a"]);
    assert_eq!(running(&s, CDS), v1, "not ACKed yet");
    s.handle_request(DeltaDiscoveryRequest {
        error_detail: Some(rejected()),
        ..delta_request(CDS, &[], &[], &r.nonce)
    })
    .unwrap();
    assert_eq!(running(&s, CDS), v1, "a NACK keeps what ran");
    let rejection = s.acked(CDS).view().rejected.unwrap();
    // The version the whole type would have had: the same hash a SotW stream shows.
    assert_eq!(
        (rejection.version, rejection.message.as_str()),
        (two.version(CDS), "bad config")
    );

    // The next change is ACKed: applied onto what ran, `b` untouched.
    let three = mesh(3);
    let r = response_for(s.on_snapshot(three.clone()), CDS);
    ack(&mut s, &r);
    assert_eq!(
        running(&s, CDS),
        (
            Some(three.version(CDS)),
            vec![
                ("a".to_owned(), at(&three, "a")),
                ("b".to_owned(), at(&three, "b")),
            ]
        )
    );
    assert!(s.acked(CDS).view().rejected.is_none());

    // A removal, once ACKed, is no longer running.
    let without_b = snapshot(vec![
        (CDS, "a", cluster("a", 3)),
        (EDS, "a", cla("a", 8003)),
        (LDS, "l", listener("l", "r", 15003)),
        (RDS, "r", route("r", "3")),
        (SDS, "s", secret("s", "3")),
    ]);
    let r = response_for(s.on_snapshot(without_b.clone()), CDS);
    assert_eq!(r.removed_resources, ["b"]);
    ack(&mut s, &r);
    assert_eq!(running(&s, CDS).1.len(), 1);
    assert_eq!(running(&s, CDS).0, Some(without_b.version(CDS)));
}

#[test]
fn a_reconnecting_proxy_runs_the_resources_it_holds_at_our_versions() {
    let snap = mesh(1);
    let mut s = DeltaStream::new(&node());
    s.on_snapshot(snap.clone());
    let held = |n: &str| snap.get(CDS, n).unwrap().version().to_string();
    let r = s
        .handle_request(DeltaDiscoveryRequest {
            initial_resource_versions: HashMap::from([
                ("a".to_owned(), held("a")),
                ("b".to_owned(), "from-another-server".to_owned()),
            ]),
            ..delta_request(CDS, &[], &[], "")
        })
        .unwrap();
    // `a` is held at our version: running without a resend. `b` is resent, running once ACKed.
    assert_eq!(names(&one(r.clone())), ["b"]);
    assert_eq!(
        running(&s, CDS).1,
        [("a".to_owned(), snap.get(CDS, "a").unwrap().version())]
    );
    ack(&mut s, &one(r));
    assert_eq!(running(&s, CDS).0, Some(snap.version(CDS)));
}
