use serde_json::json;

use super::*;

fn meta(owners: serde_json::Value, labels: serde_json::Value) -> ObjectMeta {
    serde_json::from_value(json!({
        "name": "p",
        "namespace": "demo",
        "labels": labels,
        "ownerReferences": owners,
    }))
    .unwrap()
}

fn controller(kind: &str, name: &str) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": true})
}

fn owner(kind: WorkloadKind, name: &str) -> Option<Owner> {
    Some(Owner {
        kind,
        name: name.into(),
    })
}

#[test]
fn a_replicaset_pod_belongs_to_the_deployment_its_hash_names() {
    let hash = json!({"app": "web", "pod-template-hash": "7d9f8c6b5"});
    assert_eq!(
        Owner::of(&meta(
            json!([controller("ReplicaSet", "web-7d9f8c6b5")]),
            hash.clone()
        )),
        owner(WorkloadKind::Deployment, "web")
    );
    // A Deployment whose name has dashes.
    assert_eq!(
        Owner::of(&meta(
            json!([controller("ReplicaSet", "web-api-v2-7d9f8c6b5")]),
            hash.clone()
        )),
        owner(WorkloadKind::Deployment, "web-api-v2")
    );
    // A ReplicaSet made by hand: no hash label, or a name the hash does not end.
    assert_eq!(
        Owner::of(&meta(
            json!([controller("ReplicaSet", "web-7d9f8c6b5")]),
            json!({"app": "web"})
        )),
        None
    );
    assert_eq!(
        Owner::of(&meta(
            json!([controller("ReplicaSet", "web-other")]),
            hash.clone()
        )),
        None
    );
    assert_eq!(
        Owner::of(&meta(json!([controller("ReplicaSet", "7d9f8c6b5")]), hash)),
        None
    );
}

#[test]
fn statefulset_and_daemonset_pods_belong_to_their_controller_only() {
    let none = json!({});
    assert_eq!(
        Owner::of(&meta(
            json!([controller("StatefulSet", "db")]),
            none.clone()
        )),
        owner(WorkloadKind::StatefulSet, "db")
    );
    assert_eq!(
        Owner::of(&meta(
            json!([controller("DaemonSet", "agent")]),
            none.clone()
        )),
        owner(WorkloadKind::DaemonSet, "agent")
    );
    // An owner that is not the controller, a Job, a kind of another group, no owner.
    let not_controller =
        json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u"}]);
    assert_eq!(Owner::of(&meta(not_controller, none.clone())), None);
    let job = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u", "controller": true}]);
    assert_eq!(Owner::of(&meta(job, none.clone())), None);
    let other_group = json!([{"apiVersion": "example.com/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}]);
    assert_eq!(Owner::of(&meta(other_group, none.clone())), None);
    assert_eq!(Owner::of(&meta(json!([]), none)), None);
}

#[test]
fn a_pod_moved_to_another_workload_leaves_the_first() {
    let id = |ns: &str, pod: &str| ProxyId {
        namespace: ns.into(),
        pod: pod.into(),
    };
    let entry = |kind, name: &str| PodEntry {
        owner: owner(kind, name),
        meshed: true,
        ..PodEntry::default()
    };
    let mut w = Workloads::default();
    w.insert_pod(id("a", "p"), entry(WorkloadKind::Deployment, "web"));
    w.insert_pod(id("a", "q"), entry(WorkloadKind::Deployment, "web"));
    w.insert_pod(id("b", "r"), entry(WorkloadKind::Deployment, "web"));
    w.insert_pod(id("a", "s"), entry(WorkloadKind::StatefulSet, "db"));
    assert_eq!(
        w.workloads(WorkloadKind::Deployment, None),
        [("a".into(), "web".into()), ("b".into(), "web".into())]
    );
    assert_eq!(
        w.workloads(WorkloadKind::Deployment, Some("a")),
        [("a".to_owned(), "web".to_owned())]
    );
    assert_eq!(w.workloads(WorkloadKind::DaemonSet, None), []);
    w.insert_pod(id("a", "p"), entry(WorkloadKind::Deployment, "api"));
    w.insert_pod(id("a", "q"), entry(WorkloadKind::Deployment, "api"));
    assert_eq!(
        w.workloads(WorkloadKind::Deployment, Some("a")),
        [("a".to_owned(), "api".to_owned())]
    );
    assert_eq!(
        w.pods_of(WorkloadKind::Deployment, "a", "api"),
        [&id("a", "p"), &id("a", "q")]
    );
    assert_eq!(
        w.workloads(WorkloadKind::StatefulSet, None),
        [("a".to_owned(), "db".to_owned())]
    );
}
