//! Admission reviews for the injector's tests.

use serde_json::{Value, json};

/// The `AdmissionReview` the API server sends for creating a Pod with `metadata` (and one
/// container `app`) in `namespace`.
pub(crate) fn pod_review(uid: &str, namespace: &str, metadata: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": metadata,
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            },
            "oldObject": null,
            "dryRun": false,
        },
    })
}
