use serde_json::{Value, json};

use super::*;
use crate::json_lookup::names;
use crate::{annotations, inject::fixtures::pod_review};

fn config() -> InjectConfig {
    InjectConfig::new("switchyard-system")
}

/// A review of a Pod a ReplicaSet creates (no name yet, no namespace in its metadata).
fn review(namespace: &str, pod_annotations: Value) -> Value {
    pod_review(
        "4b9c-uid",
        namespace,
        json!({
            "generateName": "web-5d9c-",
            "annotations": pod_annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-5d9c",
                "uid": "rs-uid",
                "controller": true,
            }],
        }),
    )
}

fn request(review: &Value) -> AdmissionRequest<Pod> {
    parse(&serde_json::to_vec(review).unwrap()).unwrap()
}

fn answer_for(review: &Value, ns_annotations: &[(&str, &str)]) -> (Value, Option<Note>) {
    let ns: BTreeMap<String, String> = ns_annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let a = answer(&request(review), &ns, &config());
    (serde_json::to_value(&a.review).unwrap(), a.note)
}

/// kube-core writes the patch's bytes as a JSON array of numbers, which the API server (Go's
/// `[]byte`) reads as it reads base64.
fn decoded_patch(response: &Value) -> json_patch::Patch {
    let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn an_enrolled_pod_gets_a_json_patch_and_an_event_on_its_replicaset() {
    let review = review("demo", json!({}));
    let (answer, note) = answer_for(&review, &[(annotations::INJECT, "enabled")]);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["uid"], "4b9c-uid");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");

    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &decoded_patch(response)).unwrap();
    let inits = names(&pod["spec"]["initContainers"]);
    assert_eq!(inits, ["switchyard-init", "switchyard-proxy"]);
    assert_eq!(
        pod["metadata"]["annotations"][annotations::PROXY_VERSION],
        env!("CARGO_PKG_VERSION")
    );

    let note = note.unwrap();
    assert_eq!(note.reason, INJECTED);
    assert!(!note.warning);
    assert_eq!(note.regarding.kind.as_deref(), Some("ReplicaSet"));
    assert_eq!(note.regarding.name.as_deref(), Some("web-5d9c"));
    assert_eq!(note.regarding.namespace.as_deref(), Some("demo"));
    assert_eq!(note.regarding.uid.as_deref(), Some("rs-uid"));
    assert_eq!(
        note.note,
        format!(
            "pod demo/web-5d9c-*: injected the envoy proxy (localhost/switchyard-envoy:{})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn a_dry_run_gets_the_patch_but_no_event() {
    let mut review = review("demo", json!({annotations::INJECT: "enabled"}));
    review["request"]["dryRun"] = json!(true);
    let (answer, note) = answer_for(&review, &[]);
    assert!(answer["response"]["patch"].is_array());
    assert_eq!(note, None);
    review["request"]["object"]["metadata"]["annotations"] = json!({annotations::INJECT: "no"});
    let (answer, note) = answer_for(&review, &[]);
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(note, None);
}

#[test]
fn an_invalid_annotation_is_refused_with_the_message_and_a_warning() {
    let review = review("demo", json!({annotations::INJECT: "yes"}));
    let (answer, note) = answer_for(&review, &[]);
    let response = &answer["response"];
    assert_eq!(response["allowed"], false);
    assert!(response.get("patch").is_none());
    let message = r#"pod demo/web-5d9c-*: metadata.annotations["switchyard.dev/inject"]: "yes" is not enabled or disabled"#;
    assert_eq!(response["status"]["message"], message);
    assert_eq!(response["status"]["code"], 400);
    let note = note.unwrap();
    assert!(note.warning);
    assert_eq!(note.reason, INJECTION_REJECTED);
    assert_eq!(note.note, message);
}

#[test]
fn skipped_pods_are_admitted_unchanged_and_reported_only_when_asked_about() {
    let (answer, note) = answer_for(
        &review("demo", json!({annotations::INJECT: "disabled"})),
        &[(annotations::INJECT, "enabled")],
    );
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
    let note = note.unwrap();
    assert_eq!(note.reason, INJECTION_SKIPPED);
    assert_eq!(
        note.note,
        "pod demo/web-5d9c-*: not injected: the pod is annotated switchyard.dev/inject=disabled"
    );

    // Nobody enrolled it: admitted, unchanged, quietly.
    let (answer, note) = answer_for(&review("demo", json!({})), &[]);
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
    assert_eq!(note, None);
}

#[test]
fn the_namespace_is_read_only_for_pod_creations_outside_the_exempt_namespaces() {
    let config = config();
    let r = request(&review("demo", json!({})));
    assert_eq!(namespace_to_read(&r, &config), Some("demo"));
    for ns in [
        "switchyard-system",
        "kube-system",
        "kube-public",
        "kube-node-lease",
    ] {
        let r = request(&review(ns, json!({annotations::INJECT: "enabled"})));
        assert_eq!(namespace_to_read(&r, &config), None, "{ns}");
        let (answer, _) = answer_for(&review(ns, json!({annotations::INJECT: "enabled"})), &[]);
        assert!(answer["response"].get("patch").is_none(), "{ns}");
    }
    let mut update = review("demo", json!({annotations::INJECT: "enabled"}));
    update["request"]["operation"] = json!("UPDATE");
    assert_eq!(namespace_to_read(&request(&update), &config), None);
    let (answer, note) = answer_for(&update, &[]);
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
    assert_eq!(note, None);
}

#[test]
fn events_about_a_pod_without_a_controller_name_the_pod_when_it_has_a_name() {
    let mut review = review("demo", json!({annotations::INJECT: "enabled"}));
    let meta = &mut review["request"]["object"]["metadata"];
    meta.as_object_mut().unwrap().remove("ownerReferences");
    let (_, note) = answer_for(&review, &[]);
    assert_eq!(note, None, "no name, no owner: nothing to hang an Event on");
    review["request"]["object"]["metadata"]["name"] = json!("standalone");
    let (_, note) = answer_for(&review, &[]);
    let regarding = note.unwrap().regarding;
    assert_eq!(regarding.kind.as_deref(), Some("Pod"));
    assert_eq!(regarding.name.as_deref(), Some("standalone"));
}

#[test]
fn a_body_that_is_not_a_review_is_refused_not_a_panic() {
    for body in [&b"{not json"[..], b"{}", b"{\"request\": {\"uid\": 3}}"] {
        let refusal = serde_json::to_value(parse(body).unwrap_err()).unwrap();
        assert_eq!(refusal["response"]["allowed"], false, "{refusal}");
        assert!(
            refusal["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .starts_with("admission review"),
            "{refusal}"
        );
    }
}
