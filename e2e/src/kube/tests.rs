//! The harness's pure helpers: names, label values, base64, `/proc` parsing, generated objects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[test]
fn namespace_names_are_dns_labels() {
    assert_eq!(namespace_name("smi", 3, 0), "smi-3-000000");
    assert_eq!(
        namespace_name("My_Test::Case", 12, 35),
        "my-test--case-12-z00000"
    );
    assert_eq!(namespace_name("--", 1, 36), "e2e-1-010000");
    let long = namespace_name(&"a-".repeat(80), usize::MAX, u64::MAX);
    assert!(is_dns_label(&long), "{long}");
    assert!(long.starts_with("a-a-"), "{long}");
    for prefix in ["", "-x-", "UPPER", "ünïcode", "a.b/c", &"x".repeat(100)] {
        let name = namespace_name(prefix, 7, 123_456_789);
        assert!(is_dns_label(&name), "{prefix:?} gave {name:?}");
    }
}

#[test]
fn random_values_differ() {
    assert_ne!(random_u64(), random_u64());
}

#[test]
fn label_values_drop_cargo_hash() {
    assert_eq!(label_value("kube_api-0123456789abcdef"), "kube_api");
    assert_eq!(label_value("kube_api-0123"), "kube_api-0123");
    assert_eq!(label_value("switchyard_e2e"), "switchyard_e2e");
    assert_eq!(label_value("-weird name!-"), "weird-name");
    assert_eq!(label_value(""), "unknown");
    assert_eq!(label_value(&"y".repeat(99)).len(), 63);
}

#[test]
fn base64_matches_rfc4648_vectors() {
    for (input, want) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), want, "{input:?}");
    }
    assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
}

#[test]
fn parent_pid_survives_odd_command_names() {
    assert_eq!(parent_pid("42 (sh) S 7 42 42 0 -1"), Some(7));
    assert_eq!(parent_pid("42 (a) b (c) R 9 1 1"), Some(9));
    assert_eq!(parent_pid("garbage"), None);
}

#[test]
fn token_kubeconfig_names_server_ca_and_token() {
    let kc: serde_json::Value =
        serde_json::from_str(&kubeconfig_yaml("https://127.0.0.1:6443", "PEM\n", "t\"k")).unwrap();
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://127.0.0.1:6443"
    );
    assert_eq!(
        kc["clusters"][0]["cluster"]["certificate-authority-data"],
        "UEVNCg=="
    );
    assert_eq!(kc["users"][0]["user"]["token"], "t\"k");
    assert_eq!(kc["current-context"], kc["contexts"][0]["name"]);
}

#[test]
fn pod_status_patch_is_running_and_ready() {
    let p = pod_status_patch(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)));
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(p["status"]["podIP"], "127.0.0.9");
    assert_eq!(p["status"]["podIPs"][0]["ip"], "127.0.0.9");
    let ready = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready);
}

#[test]
fn endpoint_slices_belong_to_their_service() {
    let s = endpoint_slice_json(
        "ns",
        "web",
        ("http", 8080),
        &[(IpAddr::V4(Ipv4Addr::LOCALHOST), Some("web-0"))],
    );
    assert_eq!(s["metadata"]["labels"]["kubernetes.io/service-name"], "web");
    assert_eq!(s["addressType"], "FQDN");
    assert_eq!(s["ports"][0]["port"], 8080);
    assert_eq!(s["endpoints"][0]["addresses"][0], "127.0.0.1");
    assert_eq!(s["endpoints"][0]["targetRef"]["name"], "web-0");
    let v4 = endpoint_slice_json(
        "ns",
        "web",
        ("http", 80),
        &[(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), None)],
    );
    assert_eq!(v4["addressType"], "IPv4");
    let v6 = endpoint_slice_json(
        "ns",
        "web",
        ("http", 80),
        &[(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)), None)],
    );
    assert_eq!(v6["addressType"], "IPv6");
    assert!(v6["endpoints"][0].get("targetRef").is_none());
}
