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

#[test]
fn port_ranges_parse_ports_and_ranges_and_print_them_back_without_blanks() {
    let p: PortRanges = " 80, 443 ,9000-9100,,".parse().unwrap();
    assert_eq!(
        p.ranges(),
        [
            PortRange {
                first: 80,
                last: 80
            },
            PortRange {
                first: 443,
                last: 443
            },
            PortRange {
                first: 9000,
                last: 9100
            },
        ]
    );
    assert_eq!(p.to_string(), "80,443,9000-9100");
    assert!("".parse::<PortRanges>().unwrap().is_empty());
    assert_eq!(
        "1-65535".parse::<PortRanges>().unwrap().to_string(),
        "1-65535"
    );
}

#[test]
fn port_ranges_name_the_item_that_is_wrong() {
    let err = |s: &str| s.parse::<PortRanges>().unwrap_err().to_string();
    assert_eq!(
        err("80,http"),
        "\"http\": not a port (1-65535) or a range of ports (a-b)"
    );
    assert_eq!(
        err("0"),
        "\"0\": not a port (1-65535) or a range of ports (a-b)"
    );
    assert_eq!(
        err("65536"),
        "\"65536\": not a port (1-65535) or a range of ports (a-b)"
    );
    assert_eq!(err("90-80"), "\"90-80\": the range ends before it starts");
    assert!("80-".parse::<PortRanges>().is_err());
    assert!("-80".parse::<PortRanges>().is_err());
}

#[test]
fn cidrs_parse_v4_and_v6_and_a_bare_address_is_one_host() {
    let c: Cidrs = "10.0.0.0/8, fd00::/8 ,192.168.1.7,::1".parse().unwrap();
    assert_eq!(c.to_string(), "10.0.0.0/8,fd00::/8,192.168.1.7/32,::1/128");
    assert_eq!(c.cidrs().len(), 4);
    assert!("".parse::<Cidrs>().unwrap().is_empty());
    assert_eq!(
        "0.0.0.0/0".parse::<Cidrs>().unwrap().to_string(),
        "0.0.0.0/0"
    );
    assert_eq!("::/0".parse::<Cidrs>().unwrap().to_string(), "::/0");
}

#[test]
fn cidrs_name_the_item_that_is_wrong() {
    let err = |s: &str| s.parse::<Cidrs>().unwrap_err().to_string();
    assert_eq!(
        err("10.0.0.0/8,example.com"),
        "\"example.com\": not an IPv4 or IPv6 CIDR (address/prefix length)"
    );
    assert_eq!(
        err("10.0.0.0/33"),
        "\"10.0.0.0/33\": the prefix length is out of range"
    );
    assert_eq!(
        err("fd00::/129"),
        "\"fd00::/129\": the prefix length is out of range"
    );
    assert_eq!(
        err("10.1.2.3/8"),
        "\"10.1.2.3/8\": has bits set past the prefix length"
    );
}
