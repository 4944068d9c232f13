use std::time::Duration;

use super::*;

#[test]
fn backoff_grows_to_a_ceiling_with_full_jitter() {
    assert_eq!(backoff(0, 0.999_999), BACKOFF_BASE.mul_f64(0.999_999));
    assert_eq!(backoff(3, 0.5), BACKOFF_BASE * 8 / 2);
    assert_eq!(backoff(40, 0.999_999), BACKOFF_MAX.mul_f64(0.999_999));
    // Never zero, whatever the draw.
    assert_eq!(backoff(0, 0.0), Duration::from_millis(10));
    // Jitter spreads proxies out: two draws give two waits.
    assert_ne!(backoff(5, 0.1), backoff(5, 0.9));
}

#[test]
fn ipv6_control_planes_are_bracketed() {
    let json = |host: &str| {
        serde_json::json!({
            "node": {"id": "n"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
            "dynamic_resources": {"ads_config": {"api_type": "DELTA_GRPC",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]}},
            "static_resources": {"clusters": [{"name": "xds", "load_assignment": {"endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address":
                    {"address": host, "port_value": 15010}}}}]}]}}]}
        })
    };
    let b = Bootstrap::from_json(&json("::1")).unwrap();
    assert_eq!(xds_uri(&b), "http://[::1]:15010");
    let b = Bootstrap::from_json(&json("10.0.0.1")).unwrap();
    assert_eq!(xds_uri(&b), "http://10.0.0.1:15010");
}
