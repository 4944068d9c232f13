use super::*;
use crate::xds::{
    fixtures::{cluster, snapshot, versioned},
    snapshot::TypeUrl,
};

fn names(acked: &AckedConfig) -> Vec<String> {
    acked
        .view()
        .applied
        .iter()
        .flat_map(|a| a.iter())
        .map(|r| r.name().to_owned())
        .collect()
}

#[test]
fn an_ack_without_a_response_in_flight_changes_nothing() {
    let mut acked = AckedConfig::default();
    acked.acked();
    acked.nacked("late");
    assert!(acked.view().applied.is_none());
    assert!(acked.view().rejected.is_none());

    let a = versioned(TypeUrl::Cluster, "a", cluster("a", 1));
    acked.sent(Change::Replace(std::slice::from_ref(&a)));
    acked.forget_in_flight();
    acked.acked();
    assert!(
        acked.view().applied.is_none(),
        "a forgotten response never runs"
    );
}

#[test]
fn the_view_shares_the_snapshots_resources_and_changes_only_on_an_ack() {
    let a = versioned(TypeUrl::Cluster, "a", cluster("a", 1));
    let b = versioned(TypeUrl::Cluster, "b", cluster("b", 1));
    let mut acked = AckedConfig::default();
    acked.sent(Change::Replace(&[a.clone(), b.clone()]));
    assert!(acked.view().applied.is_none());
    acked.acked();
    let before = acked.view();
    let first = before.applied.as_ref().unwrap().iter().next().unwrap();
    assert!(Arc::ptr_eq(first, &a), "the snapshot's Arc, not a copy");
    assert_eq!(acked.view(), before, "same Arc until something changes");

    acked.retain(|n| n == "a");
    assert_eq!(names(&acked), ["a"]);
    assert_ne!(acked.view(), before);
}

#[test]
fn held_versions_that_are_not_ours_do_not_run() {
    let snap = snapshot(vec![(TypeUrl::Cluster, "a", cluster("a", 1))]);
    let mut acked = AckedConfig::default();
    let ours = snap.get(TypeUrl::Cluster, "a").unwrap().version();
    acked.held_before("gone".into(), ours);
    acked.confirm_held(snap.resources(TypeUrl::Cluster));
    assert!(acked.view().applied.is_none());
    acked.held_before("a".into(), ours);
    acked.confirm_held(snap.resources(TypeUrl::Cluster));
    assert_eq!(names(&acked), ["a"]);
}
