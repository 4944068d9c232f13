//! Tests of the failure `Status`.

use http::StatusCode;

use super::{failure, reason};

#[test]
fn a_failure_is_the_status_kubectl_reads() {
    let status = failure(StatusCode::FORBIDDEN, "user \"bob\" may not watch pods/tap");
    assert_eq!(
        status,
        serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "user \"bob\" may not watch pods/tap",
            "reason": "Forbidden",
            "code": 403,
        })
    );
}

#[test]
fn reasons_are_kubernetes_own() {
    assert_eq!(reason(StatusCode::NOT_FOUND), "NotFound");
    assert_eq!(reason(StatusCode::INTERNAL_SERVER_ERROR), "InternalError");
    assert_eq!(reason(StatusCode::GATEWAY_TIMEOUT), "Timeout");
    assert_eq!(reason(StatusCode::IM_A_TEAPOT), "");
}
