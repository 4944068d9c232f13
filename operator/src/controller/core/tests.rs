use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
use crate::identity::{CaConfig, MeshCa};

fn core() -> Core {
    let ca = MeshCa::generate(&CaConfig::default(), SystemTime::now()).unwrap();
    Core::new(
        Index::new(switchyard_adapters::model::MeshSettings::default()),
        Publisher::new(ca, Duration::from_secs(24 * 3600)),
    )
}

fn split(weight: serde_json::Value, status: Option<serde_json::Value>) -> Value {
    let mut v = json!({
        "apiVersion": "split.smi-spec.io/v1alpha4",
        "kind": "TrafficSplit",
        "metadata": {"name": "web-split", "namespace": "demo", "generation": 1},
        "spec": {"service": "web", "backends": [{"service": "web-v1", "weight": weight}]},
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    v
}

const TS: ObjectKind = ObjectKind::Smi(Kind::TrafficSplit);

fn the_ref() -> ObjectRef {
    object_ref(Kind::TrafficSplit, "demo", "web-split")
}

#[test]
fn an_object_that_does_not_decode_is_reported_and_its_last_good_version_stays() {
    let mut core = core();
    let applied = core.apply(vec![WatchEvent::Listed(TS, vec![split(json!(100), None)])]);
    assert!(applied.decode_failures.is_empty());
    let applied = core.apply(vec![WatchEvent::Applied(TS, split(json!("heavy"), None))]);
    assert_eq!(applied.decode_failures.len(), 1);
    let f = &applied.decode_failures[0];
    assert_eq!(f.object, "demo/web-split");
    assert!(
        f.message.contains("spec.backends[0].weight"),
        "{}",
        f.message
    );
    // Still in the index, and still there after a relist that carries the broken version.
    assert!(
        core.index()
            .keys_of(TS)
            .contains(&("demo".into(), "web-split".into()))
    );
    core.apply(vec![WatchEvent::Listed(
        TS,
        vec![split(json!("heavy"), None)],
    )]);
    assert!(
        core.index()
            .keys_of(TS)
            .contains(&("demo".into(), "web-split".into()))
    );
    // Its status says why.
    core.publish(SystemTime::now()).unwrap();
    let writes = core.status_writes(SystemTime::now());
    let accepted = &writes[0].status.conditions[0];
    assert_eq!(accepted.type_, "Accepted");
    assert_eq!(accepted.status, ConditionStatus::False);
    assert!(accepted.message.contains("weight"), "{}", accepted.message);
}

#[test]
fn status_is_written_once_with_events_for_changes_and_keeps_transition_times() {
    let mut core = core();
    core.apply(vec![WatchEvent::Listed(TS, vec![split(json!(100), None)])]);
    core.publish(SystemTime::now()).unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let writes = core.status_writes(t0);
    assert_eq!(writes.len(), 1);
    let w = &writes[0];
    assert_eq!(w.object, the_ref());
    let resolved = w
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .unwrap();
    assert_eq!(resolved.status, ConditionStatus::False);
    assert!(
        w.events
            .iter()
            .any(|e| e.warning && e.reason == resolved.reason)
    );
    // Pending: not returned again until the watch shows it.
    assert!(core.status_writes(t0).is_empty());
    // The watch shows it: nothing to write.
    let observed = serde_json::to_value(&w.status).unwrap();
    core.apply(vec![WatchEvent::Applied(
        TS,
        split(json!(100), Some(observed)),
    )]);
    assert!(core.status_writes(t0 + Duration::from_secs(60)).is_empty());
    // A failed write is retried.
    core.apply(vec![WatchEvent::Applied(TS, split(json!(100), None))]);
    let again = core.status_writes(t0 + Duration::from_secs(60));
    assert_eq!(again.len(), 1);
    core.write_failed(&the_ref());
    assert_eq!(core.status_writes(t0 + Duration::from_secs(60)).len(), 1);
}

#[test]
fn an_unchanged_condition_keeps_its_transition_time_and_raises_no_event() {
    let mut core = core();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    core.apply(vec![WatchEvent::Listed(TS, vec![split(json!(100), None)])]);
    core.publish(t0).unwrap();
    let first = core.status_writes(t0).remove(0).status;
    // The cluster holds the first status; then the generation moves on.
    let mut next = split(json!(100), Some(serde_json::to_value(&first).unwrap()));
    next["metadata"]["generation"] = json!(2);
    core.apply(vec![WatchEvent::Applied(TS, next)]);
    core.publish(t0).unwrap();
    let t1 = t0 + Duration::from_secs(300);
    let w = core.status_writes(t1).remove(0);
    assert_eq!(w.status.observed_generation, Some(2));
    for (a, b) in first.conditions.iter().zip(&w.status.conditions) {
        assert_eq!(
            a.last_transition_time, b.last_transition_time,
            "{}",
            a.type_
        );
    }
    assert!(w.events.is_empty(), "{:?}", w.events);
}

#[test]
fn pods_and_their_accounts_follow_the_watch() {
    let mut core = core();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client-0", "namespace": "demo",
            "annotations": {annotations::PROXY_VERSION: "0.1.0"}},
        "spec": {"serviceAccountName": "client", "containers": [{"name": "app"}]},
    });
    core.apply(vec![WatchEvent::Listed(ObjectKind::Pod, vec![pod.clone()])]);
    let id = proxy_id("demo", "client-0");
    assert_eq!(
        core.pod_accounts().get(&id).map(String::as_str),
        Some("client")
    );
    core.apply(vec![WatchEvent::Deleted(ObjectKind::Pod, pod)]);
    assert!(core.pod_accounts().is_empty());
    // A core object with a bad field is reported with its path; the watch goes on.
    let bad = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "demo"}, "spec": {"ports": "eighty"}});
    let applied = core.apply(vec![WatchEvent::Applied(ObjectKind::Service, bad)]);
    assert!(
        applied.decode_failures[0].message.starts_with("spec.ports"),
        "{:?}",
        applied.decode_failures
    );
}

#[test]
fn only_pods_with_a_proxy_are_in_the_mesh() {
    let mut core = core();
    let pod = |name: &str, meshed: bool| {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {"serviceAccountName": "client", "containers": [{"name": "app"}]},
            "status": {"podIP": "10.244.0.9"},
        });
        if meshed {
            p["metadata"]["annotations"] = json!({annotations::PROXY_VERSION: "0.1.0"});
        }
        p
    };
    core.apply(vec![WatchEvent::Listed(
        ObjectKind::Pod,
        vec![pod("meshed", true), pod("plain", false)],
    )]);
    let proxies: Vec<_> = core.index().proxy_configs().map(|c| c.proxy.pod).collect();
    assert_eq!(proxies, ["meshed"]);
    assert!(
        core.pod_accounts()
            .contains_key(&proxy_id("demo", "meshed"))
    );
    assert!(!core.pod_accounts().contains_key(&proxy_id("demo", "plain")));
    // A Pod that gains a proxy joins; one that loses it leaves.
    core.apply(vec![
        WatchEvent::Applied(ObjectKind::Pod, pod("plain", true)),
        WatchEvent::Applied(ObjectKind::Pod, pod("meshed", false)),
    ]);
    let proxies: Vec<_> = core.index().proxy_configs().map(|c| c.proxy.pod).collect();
    assert_eq!(proxies, ["plain"]);
    assert!(
        !core
            .pod_accounts()
            .contains_key(&proxy_id("demo", "meshed"))
    );
}

#[test]
fn pods_without_a_proxy_count_in_their_workload_as_not_meshed() {
    use crate::index::WorkloadKind;
    let mut core = core();
    let pod = |name: &str, meshed: bool| {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "namespace": "demo",
                "labels": {"app": "web", "pod-template-hash": "5d8b9"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-5d8b9", "uid": "u", "controller": true}],
            },
            "spec": {"serviceAccountName": "web", "containers": [{"name": "app"}]},
        });
        if meshed {
            p["metadata"]["annotations"] = json!({annotations::PROXY_VERSION: "0.1.0"});
        }
        p
    };
    let meshed = |core: &Core| -> Vec<(String, bool)> {
        let w = core.index().workloads();
        w.pods_of(WorkloadKind::Deployment, "demo", "web")
            .into_iter()
            .map(|p| (p.pod.clone(), w.pod(p).is_some_and(|e| e.meshed)))
            .collect()
    };
    core.apply(vec![WatchEvent::Listed(
        ObjectKind::Pod,
        vec![pod("web-a", true), pod("web-b", false)],
    )]);
    assert_eq!(
        meshed(&core),
        [("web-a".to_owned(), true), ("web-b".to_owned(), false)]
    );
    // web-b gains a proxy, web-a loses it, then web-a is deleted.
    core.apply(vec![
        WatchEvent::Applied(ObjectKind::Pod, pod("web-b", true)),
        WatchEvent::Applied(ObjectKind::Pod, pod("web-a", false)),
    ]);
    assert_eq!(
        meshed(&core),
        [("web-a".to_owned(), false), ("web-b".to_owned(), true)]
    );
    core.apply(vec![WatchEvent::Deleted(
        ObjectKind::Pod,
        pod("web-a", false),
    )]);
    assert_eq!(meshed(&core), [("web-b".to_owned(), true)]);
    // A relist replaces them all.
    core.apply(vec![WatchEvent::Listed(
        ObjectKind::Pod,
        vec![pod("web-c", false)],
    )]);
    assert_eq!(meshed(&core), [("web-c".to_owned(), false)]);
}
