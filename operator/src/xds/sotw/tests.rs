use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

use super::*;
use crate::xds::fixtures::{
    self, cla, cluster, listener, mesh, nack, node, request, resource_name, route, secret, snapshot,
};

use TypeUrl::{Cluster as CDS, ClusterLoadAssignment as EDS, Listener as LDS};
use TypeUrl::{RouteConfiguration as RDS, Secret as SDS};

fn names(response: &DiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(resource_name).collect()
}

fn types(responses: &[DiscoveryResponse]) -> Vec<TypeUrl> {
    responses
        .iter()
        .map(|r| TypeUrl::from_type_url(&r.type_url).unwrap())
        .collect()
}

fn one(mut responses: Vec<DiscoveryResponse>) -> DiscoveryResponse {
    assert_eq!(
        responses.len(),
        1,
        "expected one response, got {:?}",
        types(&responses)
    );
    responses.remove(0)
}

fn ack(s: &mut SotwStream, names: &[&str], r: &DiscoveryResponse) -> Vec<DiscoveryResponse> {
    let t = TypeUrl::from_type_url(&r.type_url).unwrap();
    s.handle_request(request(t, names, &r.version_info, &r.nonce))
        .unwrap()
}

/// A stream that has received and ACKed every type (CDS/LDS wildcard, the rest by name).
fn settled(snapshot: Arc<Snapshot>) -> SotwStream {
    let mut s = SotwStream::new(&node());
    s.on_snapshot(snapshot);
    for (t, names) in [
        (CDS, &[][..]),
        (EDS, &["a", "b"]),
        (LDS, &[]),
        (RDS, &["r"]),
        (SDS, &["s"]),
    ] {
        let r = one(s.handle_request(request(t, names, "", "")).unwrap());
        assert!(ack(&mut s, names, &r).is_empty(), "{t} ACK is silent");
    }
    s
}

#[test]
fn wildcard_cds_and_lds_get_everything() {
    let snap = mesh(1);
    let mut s = SotwStream::new(&node());
    assert!(
        s.on_snapshot(snap.clone()).is_empty(),
        "nothing was requested yet"
    );

    let r = one(s.handle_request(request(CDS, &[], "", "")).unwrap());
    assert_eq!(r.type_url, CDS.type_url());
    assert_eq!(names(&r), ["a", "b"]);
    assert_eq!(r.version_info, snap.version(CDS).to_string());
    assert!(!r.nonce.is_empty());
    assert!(s.awaiting_ack(CDS));

    let l = one(s.handle_request(request(LDS, &[], "", "")).unwrap());
    assert_eq!(names(&l), ["l"]);
    assert_ne!(l.nonce, r.nonce);
}

#[test]
fn explicit_wildcard_and_the_legacy_rule() {
    let mut s = SotwStream::new(&node());
    s.on_snapshot(mesh(1));
    let r = one(s.handle_request(request(CDS, &["a"], "", "")).unwrap());
    assert_eq!(
        names(&r),
        ["a"],
        "a named CDS subscription gets only its names"
    );

    // After a non-empty list, an empty one unsubscribes instead of meaning wildcard.
    assert!(ack(&mut s, &[], &r).is_empty());
    let r = one(s
        .handle_request(request(CDS, &["*"], &r.version_info, &r.nonce))
        .unwrap());
    assert_eq!(names(&r), ["a", "b"]);
}

#[test]
fn named_types_get_only_their_names() {
    let mut s = SotwStream::new(&node());
    s.on_snapshot(mesh(1));
    let r = one(s.handle_request(request(EDS, &["a"], "", "")).unwrap());
    assert_eq!(names(&r), ["a"]);
    let routes = one(s.handle_request(request(RDS, &["r"], "", "")).unwrap());
    assert_eq!(names(&routes), ["r"]);
    let r = one(s.handle_request(request(SDS, &["s"], "", "")).unwrap());
    assert_eq!(
        r.type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
    );
    assert_eq!(names(&r), ["s"]);
    // EDS/RDS/SDS are never wildcard by omission: an empty list unsubscribes.
    let empty = request(RDS, &[], &routes.version_info, &routes.nonce);
    assert!(s.handle_request(empty).unwrap().is_empty());
    assert!(!s.awaiting_ack(RDS));
}

#[test]
fn an_empty_full_state_type_is_answered_and_an_empty_named_one_is_not() {
    let mut s = SotwStream::new(&node());
    s.on_snapshot(Arc::new(Snapshot::empty()));
    let r = one(s.handle_request(request(CDS, &[], "", "")).unwrap());
    assert!(
        r.resources.is_empty(),
        "an empty CDS response means no clusters"
    );
    assert!(
        s.handle_request(request(EDS, &["a"], "", ""))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn acks_are_silent_and_identical_snapshots_push_nothing() {
    let mut s = settled(mesh(1));
    assert!(s.on_snapshot(mesh(1)).is_empty());
    for t in TypeUrl::ALL {
        assert!(!s.awaiting_ack(t));
        assert!(s.rejection(t).is_none());
    }
}

#[test]
fn a_nack_parks_the_type_until_its_content_changes() {
    let mut s = SotwStream::new(&node());
    s.on_snapshot(mesh(1));
    let r = one(s.handle_request(request(CDS, &[], "", "")).unwrap());

    assert!(
        s.handle_request(nack(request(CDS, &[], "", &r.nonce)))
            .unwrap()
            .is_empty()
    );
    let rejection = s.rejection(CDS).unwrap();
    assert_eq!(
        (rejection.code, rejection.message.as_str()),
        (3, "bad config")
    );
    assert_eq!(rejection.nonce.to_string(), r.nonce);
    assert!(!s.awaiting_ack(CDS));

    // Neither the same content nor a change elsewhere resends the rejected clusters.
    assert!(s.on_snapshot(mesh(1)).is_empty());
    let elsewhere = snapshot(vec![
        (CDS, "a", cluster("a", 1)),
        (CDS, "b", cluster("b", 1)),
        (LDS, "l", listener("l", "r", 1)),
    ]);
    assert!(s.on_snapshot(elsewhere).is_empty());
    // A request that repeats the NACK'd state is not answered either.
    assert!(
        s.handle_request(request(CDS, &[], "", &r.nonce))
            .unwrap()
            .is_empty()
    );

    // New clusters go out.
    let fixed = one(s.on_snapshot(mesh(2)));
    assert_eq!(fixed.type_url, CDS.type_url());
    assert_ne!(fixed.version_info, r.version_info);
    assert!(ack(&mut s, &[], &fixed).is_empty());
}

#[test]
fn a_stale_nonce_is_ignored_but_its_names_are_kept() {
    let mut s = SotwStream::new(&node());
    s.on_snapshot(mesh(1));
    let first = one(s.handle_request(request(EDS, &["a"], "", "")).unwrap());
    assert!(ack(&mut s, &["a"], &first).is_empty());
    let second = one(s.on_snapshot(mesh(2)));
    assert!(s.awaiting_ack(EDS));

    // Sent before the client saw `second`: neither a NACK nor a reason to answer.
    let stale = nack(request(EDS, &["a", "b"], &first.version_info, &first.nonce));
    assert!(s.handle_request(stale).unwrap().is_empty());
    assert!(s.rejection(EDS).is_none());
    assert!(s.awaiting_ack(EDS));

    // The ACK of `second` carries the same names; `b` is new, so it is answered now.
    let r = one(ack(&mut s, &["a", "b"], &second));
    assert_eq!(names(&r), ["a", "b"]);
}

#[test]
fn newly_requested_names_are_answered_even_if_unchanged() {
    let mut s = SotwStream::new(&node());
    s.on_snapshot(mesh(1));
    let r = one(s.handle_request(request(EDS, &["a"], "", "")).unwrap());
    assert!(ack(&mut s, &["a"], &r).is_empty());
    let r = one(ack(&mut s, &["a", "b"], &r));
    assert_eq!(
        names(&r),
        ["a", "b"],
        "a SotW response carries every subscribed name"
    );
    // Dropping a name needs no answer.
    assert!(ack(&mut s, &["a", "b"], &r).is_empty());
    assert!(ack(&mut s, &["b"], &r).is_empty());
}

#[test]
fn a_name_dropped_and_asked_for_again_is_sent_again() {
    // Envoy replaces a cluster: the last watch on its secret goes (the name leaves the
    // request), a new one comes (the name is back) and holds nothing until it is answered.
    let mut s = SotwStream::new(&node());
    s.on_snapshot(mesh(1));
    let r = one(s.handle_request(request(SDS, &["s"], "", "")).unwrap());
    assert!(ack(&mut s, &["s"], &r).is_empty());
    assert!(ack(&mut s, &[], &r).is_empty(), "dropping needs no answer");
    let again = one(ack(&mut s, &["s"], &r));
    assert_eq!(names(&again), ["s"]);
    assert_eq!(again.resources, r.resources, "the same content, sent again");
}

#[test]
fn names_requested_before_they_exist_are_sent_when_they_appear() {
    let mut s = SotwStream::new(&node());
    s.on_snapshot(snapshot(vec![(EDS, "a", cla("a", 1))]));
    let r = one(s.handle_request(request(EDS, &["a", "c"], "", "")).unwrap());
    assert_eq!(names(&r), ["a"]);
    assert!(ack(&mut s, &["a", "c"], &r).is_empty());

    let r = one(s.on_snapshot(snapshot(vec![
        (EDS, "a", cla("a", 1)),
        (EDS, "c", cla("c", 1)),
    ])));
    assert_eq!(names(&r), ["a", "c"]);
}

#[test]
fn a_stream_without_a_snapshot_waits_for_one() {
    let mut s = SotwStream::new(&node());
    assert!(
        s.handle_request(request(CDS, &[], "", ""))
            .unwrap()
            .is_empty()
    );
    assert!(
        s.handle_request(request(EDS, &["a"], "", ""))
            .unwrap()
            .is_empty()
    );
    let r = s.on_snapshot(mesh(1));
    assert_eq!(types(&r), [CDS, EDS]);
}

#[test]
fn a_multi_type_change_is_pushed_in_make_before_break_order() {
    let mut s = settled(mesh(1));
    let r = s.on_snapshot(mesh(2));
    assert_eq!(types(&r), [CDS, EDS, LDS, RDS, SDS]);
    assert_eq!(names(&r[1]), ["a", "b"]);
}

#[test]
fn pushes_wait_for_acks_and_never_overtake() {
    let mut s = SotwStream::new(&node());
    s.on_snapshot(mesh(1));
    let c = one(s.handle_request(request(CDS, &[], "", "")).unwrap());
    assert!(ack(&mut s, &[], &c).is_empty());
    let l = one(s.handle_request(request(LDS, &[], "", "")).unwrap());
    assert!(ack(&mut s, &[], &l).is_empty());

    let r = s.on_snapshot(mesh(2));
    assert_eq!(types(&r), [CDS, LDS]);
    // Not ACKed yet: the next change waits.
    assert!(s.on_snapshot(mesh(3)).is_empty());
    // LDS is free again but must not overtake the CDS change that is still waiting.
    assert!(ack(&mut s, &[], &r[1]).is_empty());
    let r = ack(&mut s, &[], &r[0]);
    assert_eq!(types(&r), [CDS, LDS]);
    assert_eq!(r[0].version_info, mesh(3).version(CDS).to_string());
}

#[test]
fn changed_clusters_resend_their_endpoints() {
    let mut s = settled(mesh(1));
    let changed = snapshot(vec![
        (CDS, "a", cluster("a", 7)),
        (CDS, "b", cluster("b", 1)),
        (EDS, "a", cla("a", 8001)),
        (EDS, "b", cla("b", 9000)),
        (LDS, "l", listener("l", "r", 15001)),
        (RDS, "r", route("r", "1")),
        (SDS, "s", secret("s", "1")),
    ]);
    let r = changed_types(&mut s, changed);
    assert_eq!(
        r.0,
        [CDS, EDS],
        "an updated cluster warms until it gets a CLA"
    );
    assert_eq!(
        r.1[1].version_info,
        mesh(1).version(EDS).to_string(),
        "same endpoints"
    );

    // A change elsewhere leaves EDS alone.
    let mut s = settled(mesh(1));
    let routes = snapshot(vec![
        (CDS, "a", cluster("a", 1)),
        (CDS, "b", cluster("b", 1)),
        (EDS, "a", cla("a", 8001)),
        (EDS, "b", cla("b", 9000)),
        (LDS, "l", listener("l", "r", 15001)),
        (RDS, "r", route("r", "2")),
        (SDS, "s", secret("s", "1")),
    ]);
    assert_eq!(changed_types(&mut s, routes).0, [RDS]);
}

fn changed_types(
    s: &mut SotwStream,
    snap: Arc<Snapshot>,
) -> (Vec<TypeUrl>, Vec<DiscoveryResponse>) {
    let r = s.on_snapshot(snap);
    (types(&r), r)
}

#[test]
fn removed_clusters_leave_in_the_same_cds_response() {
    let mut s = settled(mesh(1));
    let r = s.on_snapshot(snapshot(vec![
        (CDS, "a", cluster("a", 1)),
        (EDS, "a", cla("a", 8001)),
        (LDS, "l", listener("l", "r", 15001)),
        (RDS, "r", route("r", "1")),
        (SDS, "s", secret("s", "1")),
    ]));
    assert_eq!(types(&r), [CDS, EDS]);
    assert_eq!(names(&r[0]), ["a"]);
    assert_eq!(
        names(&r[1]),
        ["a"],
        "the CLA of the removed cluster is gone too"
    );
}

#[test]
fn a_reconnecting_client_with_current_config_is_not_resent_it() {
    let snap = mesh(1);
    let mut s = SotwStream::new(&node());
    s.on_snapshot(snap.clone());
    // Version and nonce from the previous stream (or a previous operator process).
    let current = snap.version(CDS).to_string();
    assert!(
        s.handle_request(request(CDS, &[], &current, "41"))
            .unwrap()
            .is_empty()
    );
    let r = one(s.on_snapshot(mesh(2)));
    assert_eq!(r.type_url, CDS.type_url());

    let mut s = SotwStream::new(&node());
    s.on_snapshot(snap);
    let r = s
        .handle_request(request(LDS, &[], "0123456789abcdef", "41"))
        .unwrap();
    assert_eq!(types(&r), [LDS], "an outdated version is answered");
}

#[test]
fn unknown_types_are_ignored() {
    let mut s = SotwStream::new(&node());
    s.on_snapshot(mesh(1));
    let mut req = request(CDS, &[], "", "");
    req.type_url = "type.googleapis.com/envoy.config.route.v3.VirtualHost".to_string();
    assert!(s.handle_request(req).unwrap().is_empty());
}

#[test]
fn the_node_cannot_change_mid_stream() {
    let mut s = SotwStream::new(&node());
    let mut req = request(CDS, &[], "", "");
    req.node = None;
    assert!(
        s.handle_request(req).is_ok(),
        "later requests may omit the node"
    );
    let mut req = request(CDS, &[], "", "");
    req.node.as_mut().unwrap().id = "web-1".to_string();
    assert_eq!(
        s.handle_request(req).unwrap_err(),
        StreamError::NodeChanged {
            was: "default/web/web-0".into(),
            now: "default/web/web-1".into()
        }
    );
}

fn running(s: &SotwStream, t: TypeUrl) -> (Option<Version>, Vec<(String, Version)>) {
    fixtures::running(s.acked(t))
}

#[test]
fn the_running_config_is_what_the_proxy_acked_and_a_nack_is_pending_beside_it() {
    let one_snap = mesh(1);
    let mut s = settled(one_snap.clone());
    let at = |snap: &Snapshot, t: TypeUrl, n: &str| snap.get(t, n).unwrap().version();
    let v1 = (
        Some(one_snap.version(CDS)),
        vec![
            ("a".to_owned(), at(&one_snap, CDS, "a")),
            ("b".to_owned(), at(&one_snap, CDS, "b")),
        ],
    );
    assert_eq!(running(&s, CDS), v1);
    // The version shown is the version_info the proxy ACKed.
    assert_eq!(
        running(&s, RDS).0.map(|v| v.to_string()),
        Some(one_snap.version(RDS).to_string())
    );

    // A new version in flight is not running yet; rejected, it stays pending beside v1.
    let two = mesh(2);
    let r = s
        .on_snapshot(two.clone())
        .into_iter()
        .find(|r| r.type_url == CDS.type_url())
        .unwrap();
    assert_eq!(running(&s, CDS), v1, "not ACKed yet");
    s.handle_request(nack(request(CDS, &[], &r.version_info, &r.nonce)))
        .unwrap();
    assert_eq!(running(&s, CDS), v1, "a NACK keeps what ran");
    let view = s.acked(CDS).view();
    let rejected = view.rejected.unwrap();
    assert_eq!(
        (rejected.version, rejected.message.as_str()),
        (two.version(CDS), "bad config")
    );

    // The next version is ACKed: it runs, and the rejection is over.
    let three = mesh(3);
    let r = s
        .on_snapshot(three.clone())
        .into_iter()
        .find(|r| r.type_url == CDS.type_url())
        .unwrap();
    ack(&mut s, &[], &r);
    assert_eq!(running(&s, CDS).0, Some(three.version(CDS)));
    assert_eq!(running(&s, CDS).1[0].1, at(&three, CDS, "a"));
    assert!(s.acked(CDS).view().rejected.is_none());

    // A name the proxy stops asking for is no longer running.
    let mut s = settled(mesh(1));
    s.handle_request(request(EDS, &["a"], "", "")).unwrap();
    assert_eq!(
        running(&s, EDS)
            .1
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
}

#[test]
fn a_reconnecting_proxy_runs_what_its_version_info_says_it_holds() {
    let snap = mesh(1);
    let mut s = SotwStream::new(&node());
    s.on_snapshot(snap.clone());
    let held = snap.version(CDS).to_string();
    assert!(
        s.handle_request(request(CDS, &[], &held, ""))
            .unwrap()
            .is_empty(),
        "nothing to resend"
    );
    assert_eq!(running(&s, CDS).0, Some(snap.version(CDS)));
    assert_eq!(running(&s, CDS).1.len(), 2);
}
