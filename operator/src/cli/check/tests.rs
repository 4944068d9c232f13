use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Pod, Service},
        discovery::v1::EndpointSlice,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    jiff::Timestamp,
};
use serde_json::{Value, json};
use switchyard_crds::Kind;

use super::*;

const NS: &str = "switchyard-system";

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn reinstall() -> String {
    super::reinstall(NS)
}

/// The install's Deployment with `desired` replicas, `ready` of them ready and available.
fn deployment(desired: i32, ready: i32) -> Deployment {
    from(json!({
        "metadata": {"name": "switchyard", "namespace": NS},
        "spec": {
            "replicas": desired,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "switchyard"}},
            "template": {"spec": {"containers": [{"name": "switchyard"}]}},
        },
        "status": {"replicas": desired, "readyReplicas": ready, "availableReplicas": ready},
    }))
}

fn pod(name: &str, status: Value) -> Pod {
    from(json!({
        "metadata": {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/name": "switchyard"}},
        "status": status,
    }))
}

fn ready_pod(name: &str) -> Pod {
    pod(
        name,
        json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "switchyard", "image": "", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}}],
        }),
    )
}

fn unschedulable_pod(name: &str) -> Pod {
    pod(
        name,
        json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 node(s) were unschedulable"}],
        }),
    )
}

/// A Pod whose only container is waiting for `reason`, after `restarts` restarts.
fn waiting_pod(name: &str, reason: &str, message: &str, restarts: i32) -> Pod {
    let last = if restarts > 0 {
        json!({"terminated": {"exitCode": 1, "reason": "Error"}})
    } else {
        json!({})
    };
    pod(
        name,
        json!({
            "phase": if restarts > 0 { "Running" } else { "Pending" },
            "conditions": [{"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "switchyard", "image": "", "imageID": "", "ready": false,
                "restartCount": restarts, "state": {"waiting": {"reason": reason, "message": message}},
                "lastState": last}],
        }),
    )
}

#[test]
fn every_replica_ready_is_ok() {
    let f = deployment_finding(
        NS,
        Some(&deployment(2, 2)),
        &[ready_pod("switchyard-a"), ready_pod("switchyard-b")],
        &reinstall(),
    );
    assert_eq!(
        f,
        Finding::ok(
            "operator deployment switchyard-system/switchyard",
            "2/2 replicas ready"
        )
    );
}

#[test]
fn a_pending_replica_is_named_with_the_scheduler_s_reason() {
    let f = deployment_finding(
        NS,
        Some(&deployment(2, 1)),
        &[
            ready_pod("switchyard-a"),
            unschedulable_pod("switchyard-7c9-abcde"),
        ],
        &reinstall(),
    );
    assert_eq!(
        f,
        Finding::failed(
            "operator deployment switchyard-system/switchyard",
            "1/2 replicas ready (switchyard-7c9-abcde: Pending: 0/1 nodes are available: 1 \
             node(s) were unschedulable)",
            // Never scheduled: no logs to read.
            "kubectl -n switchyard-system describe pods -l app.kubernetes.io/name=switchyard",
        )
    );
}

#[test]
fn a_crash_looping_replica_says_how_it_ended_and_points_at_its_previous_logs() {
    let f = deployment_finding(
        NS,
        Some(&deployment(2, 1)),
        &[
            ready_pod("switchyard-a"),
            waiting_pod(
                "switchyard-b",
                "CrashLoopBackOff",
                "back-off 40s restarting failed container=switchyard pod=switchyard-b",
                3,
            ),
        ],
        &reinstall(),
    );
    assert!(!f.ok);
    assert_eq!(
        f.detail,
        "1/2 replicas ready (switchyard-b: Running: container switchyard: CrashLoopBackOff \
         (restarted 3 times, last exit code 1: Error))"
    );
    assert_eq!(
        f.fix.as_deref(),
        Some(
            "kubectl -n switchyard-system describe pods -l app.kubernetes.io/name=switchyard; \
             kubectl -n switchyard-system logs switchyard-b --previous"
        )
    );
}

#[test]
fn an_image_that_does_not_pull_is_named_with_its_message() {
    let f = deployment_finding(
        NS,
        Some(&deployment(1, 0)),
        &[waiting_pod(
            "switchyard-a",
            "ImagePullBackOff",
            "Back-off pulling image \"switchyard:0.1.0\"",
            0,
        )],
        &reinstall(),
    );
    assert_eq!(
        f.detail,
        "0/1 replicas ready (switchyard-a: Pending: container switchyard: ImagePullBackOff: \
         Back-off pulling image \"switchyard:0.1.0\")"
    );
    assert!(
        !f.fix.unwrap().contains("logs"),
        "an image never pulled has no logs"
    );
}

#[test]
fn terminating_and_unready_replicas_are_told_apart_and_finished_ones_left_out() {
    let mut terminating = ready_pod("switchyard-old");
    terminating.metadata.deletion_timestamp = Some(from(json!("2026-01-01T00:00:00Z")));
    if let Some(c) = terminating
        .status
        .as_mut()
        .and_then(|s| s.conditions.as_mut())
    {
        c[0].status = "False".into();
    }
    let mut unready = ready_pod("switchyard-new");
    if let Some(s) = unready.status.as_mut() {
        s.conditions.as_mut().unwrap()[0].status = "False".into();
        s.container_statuses.as_mut().unwrap()[0].ready = false;
    }
    let evicted = pod(
        "switchyard-evicted",
        json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}),
    );
    let f = deployment_finding(
        NS,
        Some(&deployment(2, 0)),
        &[terminating, unready, evicted],
        &reinstall(),
    );
    assert_eq!(
        f.detail,
        "0/2 replicas ready (switchyard-old: Running: terminating; switchyard-new: Running: \
         container switchyard: running but not ready)"
    );
    assert!(
        f.fix
            .unwrap()
            .ends_with("; kubectl -n switchyard-system logs switchyard-new")
    );
}

#[test]
fn a_missing_deployment_fails_with_the_reinstall_line() {
    let f = deployment_finding(NS, None, &[], &reinstall());
    assert_eq!(
        f,
        Finding::failed(
            "operator deployment switchyard-system/switchyard",
            "not installed",
            "switchyard install --namespace switchyard-system | kubectl apply -f -",
        )
    );
}

#[test]
fn without_pods_the_deployment_s_conditions_say_why() {
    let mut d = deployment(2, 0);
    d.status.as_mut().unwrap().conditions = Some(from(json!([
        {"type": "Progressing", "status": "True"},
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
         "message": "pods \"switchyard-x\" is forbidden: exceeded quota"},
    ])));
    let f = deployment_finding(NS, Some(&d), &[], &reinstall());
    assert_eq!(
        f.detail,
        "0/2 replicas ready (pods \"switchyard-x\" is forbidden: exceeded quota)"
    );
    assert_eq!(
        f.fix.as_deref(),
        Some("kubectl -n switchyard-system describe deployment switchyard")
    );
    let f = deployment_finding(NS, Some(&deployment(2, 0)), &[], &reinstall());
    assert_eq!(f.detail, "0/2 replicas ready (no operator Pods)");
}

#[test]
fn a_deployment_scaled_to_zero_is_ok_with_a_note() {
    let f = deployment_finding(NS, Some(&deployment(0, 0)), &[], &reinstall());
    assert!(f.ok);
    assert!(f.detail.starts_with("scaled to 0 replicas"), "{}", f.detail);
}

/// A CRD as `switchyard install` writes it: established, converting through `client_config`.
fn crd(kind: Kind, client_config: Value) -> CustomResourceDefinition {
    let versions: Vec<Value> = kind
        .versions()
        .iter()
        .map(|v| json!({"name": v, "served": true, "storage": *v == kind.storage_version()}))
        .collect();
    let conversion = if kind.versions().len() > 1 {
        json!({"strategy": "Webhook", "webhook": {"clientConfig": client_config,
            "conversionReviewVersions": ["v1"]}})
    } else {
        json!({"strategy": "None"})
    };
    from(json!({
        "metadata": {"name": crd_name(kind)},
        "spec": {
            "group": kind.group(),
            "names": {"plural": kind.plural(), "kind": kind.as_str()},
            "scope": "Namespaced",
            "versions": versions,
            "conversion": conversion,
        },
        "status": {"conditions": [{"type": "Established", "status": "True"}]},
    }))
}

fn service_crds() -> Vec<CustomResourceDefinition> {
    Kind::ALL
        .into_iter()
        .map(|k| {
            crd(
                k,
                json!({"service": {"namespace": NS, "name": "switchyard", "path": "/convert", "port": 443}}),
            )
        })
        .collect()
}

#[test]
fn crds_are_judged_as_before() {
    let crds = service_crds();
    let split = crds
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("trafficsplits.split.smi-spec.io"))
        .unwrap();
    let mut out = Vec::new();
    print(
        &[crd_finding(Kind::TrafficSplit, Some(split), &reinstall())],
        &mut out,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "ok   crd trafficsplits.split.smi-spec.io: established, conversion webhook\n\
         switchyard is healthy\n"
    );
    let mut plain = split.clone();
    plain.spec.conversion = None;
    assert!(!crd_finding(Kind::TrafficSplit, Some(&plain), &reinstall()).ok);
    assert_eq!(
        crd_finding(Kind::TrafficSplit, None, &reinstall()).detail,
        "not installed"
    );
}

fn webhook_service() -> Service {
    from(json!({
        "metadata": {"name": "switchyard", "namespace": NS},
        "spec": {"selector": {"app.kubernetes.io/name": "switchyard"}},
    }))
}

fn slice(name: &str, service: &str, endpoints: Value) -> EndpointSlice {
    from(json!({
        "metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
    }))
}

fn endpoint(pod: &str, ip: &str, ready: Option<bool>) -> Value {
    let mut e =
        json!({"addresses": [ip], "targetRef": {"kind": "Pod", "name": pod, "namespace": NS}});
    if let Some(ready) = ready {
        e["conditions"] = json!({"ready": ready});
    }
    e
}

#[test]
fn the_webhook_service_counts_ready_endpoints_once_each() {
    let target = webhook_target(&service_crds()).unwrap();
    assert_eq!(
        target,
        WebhookTarget::Service {
            namespace: NS.into(),
            name: "switchyard".into()
        }
    );
    let slices = [
        slice(
            "switchyard-ipv4",
            "switchyard",
            json!([
                endpoint("switchyard-a", "10.0.0.1", Some(true)),
                // Unknown readiness counts as ready.
                endpoint("switchyard-b", "10.0.0.2", None),
                endpoint("switchyard-c", "10.0.0.3", Some(false)),
            ]),
        ),
        // The same Pod in the IPv6 slice of a dual-stack cluster.
        slice(
            "switchyard-ipv6",
            "switchyard",
            json!([endpoint("switchyard-a", "fd00::1", Some(true))]),
        ),
        // Another Service's slice.
        slice(
            "web",
            "web",
            json!([endpoint("web-0", "10.0.0.9", Some(true))]),
        ),
    ];
    let f = webhook_service_finding(&target, Some(&webhook_service()), &slices, &reinstall());
    assert_eq!(
        f,
        Finding::ok(
            "webhook service switchyard-system/switchyard",
            "2 ready endpoints"
        )
    );
}

#[test]
fn a_webhook_service_without_ready_endpoints_fails_and_says_where_to_look() {
    let target = webhook_target(&service_crds()).unwrap();
    let slices = [slice(
        "switchyard-ipv4",
        "switchyard",
        json!([endpoint("switchyard-a", "10.0.0.1", Some(false))]),
    )];
    let f = webhook_service_finding(&target, Some(&webhook_service()), &slices, &reinstall());
    assert_eq!(
        f,
        Finding::failed(
            "webhook service switchyard-system/switchyard",
            "no ready endpoints: the API server cannot reach the conversion webhook",
            "kubectl -n switchyard-system get pods -l app.kubernetes.io/name=switchyard (an \
             operator Pod must be ready; see the deployment above); kubectl -n \
             switchyard-system describe service switchyard",
        )
    );
    assert_eq!(
        webhook_service_finding(&target, Some(&webhook_service()), &[], &reinstall()).detail,
        f.detail
    );
    assert_eq!(
        webhook_service_finding(&target, None, &[], &reinstall()).detail,
        "not installed"
    );
}

#[test]
fn crds_that_use_a_url_have_no_service_to_check() {
    let crds: Vec<CustomResourceDefinition> = Kind::ALL
        .into_iter()
        .map(|k| crd(k, json!({"url": "https://10.1.2.3:9443/convert"})))
        .collect();
    let target = webhook_target(&crds).unwrap();
    assert_eq!(
        target,
        WebhookTarget::Url("https://10.1.2.3:9443/convert".into())
    );
    let f = webhook_service_finding(&target, None, &[], &reinstall());
    assert_eq!(
        f,
        Finding::ok(
            "webhook service",
            "none to check: the CRDs use a URL (https://10.1.2.3:9443/convert)"
        )
    );
    // No CRD converting through a webhook: nothing to check (the CRD checks fail).
    let mut plain = crds;
    for c in &mut plain {
        c.spec.conversion = None;
    }
    assert_eq!(webhook_target(&plain), None);
}

fn lease(holder: &str, renewed: &str) -> Lease {
    from(json!({
        "metadata": {"name": LEASE_NAME, "namespace": NS},
        "spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": 15},
    }))
}

#[test]
fn the_lease_is_judged_by_its_holder_and_age() {
    let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
    let f = lease_finding(
        NS,
        Some(&lease("switchyard-0", "2026-01-01T00:00:58.000000Z")),
        now,
    );
    assert_eq!(
        f,
        Finding::ok(
            "operator (lease switchyard-system/switchyard-status-writer)",
            "switchyard-0 leads, renewed 2s ago"
        )
    );
    let f = lease_finding(
        NS,
        Some(&lease("switchyard-0", "2026-01-01T00:00:00.000000Z")),
        now,
    );
    assert_eq!(
        f.detail,
        "switchyard-0 last renewed 60s ago (lease lasts 15s): no operator is running"
    );
    assert_eq!(
        lease_finding(NS, None, now).detail,
        "no operator has started yet"
    );
}

#[test]
fn failures_print_with_their_fix() {
    let mut out = Vec::new();
    let healthy = print(
        &[
            Finding::ok("a", "fine"),
            Finding::failed("b", "broken", "do this"),
        ],
        &mut out,
    )
    .unwrap();
    assert!(!healthy);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "ok   a: fine\nFAIL b: broken\n     fix: do this\n1 check(s) failed\n"
    );
}
