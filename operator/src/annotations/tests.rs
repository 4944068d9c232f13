use serde_json::json;

use super::*;

#[test]
fn a_pod_is_meshed_only_with_a_proxy_version() {
    let pod = |annotations: Value| json!({"metadata": {"name": "p", "annotations": annotations}});
    assert!(is_meshed(&pod(json!({PROXY_VERSION: "0.1.0"}))));
    assert!(!is_meshed(&pod(json!({PROXY_VERSION: ""}))));
    assert!(!is_meshed(&pod(
        json!({"switchyard.dev/data-plane": "envoy"})
    )));
    assert!(!is_meshed(&json!({"metadata": {"name": "p"}})));
}

#[test]
fn inject_mode_takes_exactly_enabled_or_disabled() {
    assert_eq!("enabled".parse(), Ok(InjectMode::Enabled));
    assert_eq!("disabled".parse(), Ok(InjectMode::Disabled));
    for bad in ["yes", "true", "Enabled", " enabled", ""] {
        let e = bad.parse::<InjectMode>().unwrap_err();
        assert_eq!(e.to_string(), format!("{bad:?} is not enabled or disabled"));
    }
}
