//! The Kubernetes `Status` the operator's aggregated APIs (Traffic Metrics, tap) and its admin
//! port answer a failure with, so that `kubectl` and the CLI print its message.
//!
//! ```text
//!  code (404) + message ──failure──▶ {"kind":"Status","status":"Failure","reason":"NotFound",
//!                                     "code":404,"message":…}
//! ```

use http::StatusCode;
use serde_json::Value;

#[cfg(test)]
mod tests;

/// The `reason` Kubernetes gives a failure with `code` (`metav1.StatusReason`); empty
/// (`StatusReasonUnknown`) for a code it names no reason for.
pub fn reason(code: StatusCode) -> &'static str {
    match code {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::GONE => "Gone",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::INTERNAL_SERVER_ERROR => "InternalError",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        StatusCode::GATEWAY_TIMEOUT => "Timeout",
        _ => "",
    }
}

/// A `Status` of failure with `code`, its [`reason`] and `message`.
pub fn failure(code: StatusCode, message: &str) -> Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason(code),
        "code": code.as_u16(),
    })
}
