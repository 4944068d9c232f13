use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use super::*;

const TLS: TransportProtocol = TransportProtocol::Tls;
const RAW: TransportProtocol = TransportProtocol::RawBuffer;
const HTTP: [AppProtocol; 3] = AppProtocol::ALL;

fn cidr(s: &str) -> CidrRange {
    let (ip, len) = s.split_once('/').unwrap();
    CidrRange::new(ip.parse().unwrap(), len.parse().unwrap()).unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A match from its parts; empty parts are unset.
fn m(
    port: Option<u16>,
    ranges: &[&str],
    transport: Option<TransportProtocol>,
    apps: &[AppProtocol],
) -> ChainMatch {
    ChainMatch {
        destination_port: port,
        prefix_ranges: ranges.iter().map(|r| cidr(r)).collect(),
        transport_protocol: transport,
        application_protocols: apps.to_vec(),
    }
}

fn build(matches: &[ChainMatch], default: Option<usize>) -> ChainSelector {
    ChainSelector::build(matches, default).unwrap()
}

#[test]
fn the_destination_port_is_decided_before_the_address() {
    let s = build(
        &[
            m(Some(80), &[], None, &[]),
            m(None, &["10.0.0.1/32"], None, &[]),
        ],
        None,
    );
    let pick = |to: &str| s.select(addr(to), RAW, None);
    // Port 80 has candidates of its own, so the exact address of the other chain never counts.
    assert_eq!(pick("10.0.0.1:80"), Some(0));
    assert_eq!(pick("10.0.0.2:80"), Some(0));
    assert_eq!(pick("10.0.0.1:81"), Some(1));
    assert_eq!(pick("10.0.0.2:81"), None);
}

#[test]
fn the_longest_prefix_wins() {
    let s = build(
        &[
            m(None, &["10.0.0.0/8"], None, &[]),
            m(None, &["10.1.0.0/16"], None, &[]),
            m(None, &["10.1.2.3/32", "fd00::1/128"], None, &[]),
            m(None, &["fd00::/64"], None, &[]),
            m(None, &[], None, &[]),
        ],
        None,
    );
    let pick = |to: &str| s.select(addr(to), RAW, None);
    assert_eq!(pick("10.1.2.3:80"), Some(2));
    assert_eq!(pick("10.1.9.9:80"), Some(1));
    assert_eq!(pick("10.9.9.9:80"), Some(0));
    assert_eq!(pick("11.0.0.1:80"), Some(4));
    assert_eq!(pick("[fd00::1]:80"), Some(2));
    assert_eq!(pick("[fd00::2]:80"), Some(3));
    assert_eq!(pick("[fd01::1]:80"), Some(4));
    // An IPv4 connection on a dual-stack socket.
    assert_eq!(pick("[::ffff:10.1.2.3]:80"), Some(2));
}

#[test]
fn candidates_that_fail_later_never_fall_back_to_less_specific_ones() {
    let matches = [
        m(Some(80), &[], Some(TLS), &[]),
        m(None, &[], None, &[]),
        m(None, &["10.0.0.0/8"], Some(TLS), &[]),
    ];
    // No default chain: the connection is closed.
    let s = build(&matches, None);
    assert_eq!(s.select(addr("192.168.0.1:80"), TLS, None), Some(0));
    assert_eq!(s.select(addr("192.168.0.1:80"), RAW, None), None);
    assert_eq!(s.select(addr("10.0.0.1:81"), TLS, None), Some(2));
    assert_eq!(s.select(addr("10.0.0.1:81"), RAW, None), None);
    assert_eq!(s.select(addr("192.168.0.1:81"), RAW, None), Some(1));
    // With one, it takes what the chosen candidates turn down, not the catch-all chain.
    let s = build(&matches, Some(3));
    assert_eq!(s.select(addr("192.168.0.1:80"), RAW, None), Some(3));
    assert_eq!(s.select(addr("10.0.0.1:81"), RAW, None), Some(3));
    assert_eq!(s.select(addr("192.168.0.1:81"), RAW, None), Some(1));
}

#[test]
fn transport_and_application_protocols_prefer_exact_matches() {
    let s = build(
        &[
            m(Some(8080), &[], Some(TLS), &[]),
            m(Some(8080), &[], None, &[]),
            m(None, &["10.96.0.10/32"], None, &HTTP),
            m(None, &["10.96.0.10/32"], None, &[]),
            m(None, &["10.96.0.11/32"], None, &[AppProtocol::H2c]),
        ],
        Some(5),
    );
    let to = addr("127.0.0.1:8080");
    let level = s.by_destination(to).unwrap();
    assert!(level.detects());
    assert_eq!(s.select(to, TLS, None), Some(0));
    assert_eq!(s.select(to, RAW, None), Some(1));
    // Application protocols only matter to candidates that list some.
    assert!(!level.by_transport(RAW).unwrap().detects());
    assert_eq!(s.select(to, RAW, Some(AppProtocol::Http11)), Some(1));

    let service = addr("10.96.0.10:9000");
    let level = s.by_destination(service).unwrap();
    assert!(!level.detects());
    assert!(level.by_transport(RAW).unwrap().detects());
    for http in HTTP {
        assert_eq!(s.select(service, RAW, Some(http)), Some(2), "{http:?}");
    }
    assert_eq!(s.select(service, RAW, None), Some(3));
    let h2_only = addr("10.96.0.11:9000");
    assert_eq!(s.select(h2_only, RAW, Some(AppProtocol::H2c)), Some(4));
    assert_eq!(s.select(h2_only, RAW, Some(AppProtocol::Http11)), Some(5));
    assert!(s.matches_transport() && s.matches_application());
}

#[test]
fn identical_matches_are_refused() {
    let dup = |matches: &[ChainMatch]| ChainSelector::build(matches, None).unwrap_err();
    let a = m(Some(80), &["10.0.0.1/32"], None, &[]);
    assert_eq!(
        dup(&[a.clone(), m(None, &[], None, &[]), a.clone()]),
        DuplicateMatch { chain: 2, other: 0 }
    );
    // One shared protocol is enough.
    assert_eq!(
        dup(&[
            m(None, &[], None, &[AppProtocol::Http11]),
            m(None, &[], None, &HTTP),
        ]),
        DuplicateMatch { chain: 1, other: 0 }
    );
    // Unset is `0.0.0.0/0` and `::/0`; an address masked to its prefix is that prefix.
    assert_eq!(
        dup(&[m(None, &[], None, &[]), m(None, &["::/0"], None, &[])]),
        DuplicateMatch { chain: 1, other: 0 }
    );
    assert_eq!(
        dup(&[m(None, &["10.0.0.0/8", "10.1.0.0/8"], None, &[])]),
        DuplicateMatch { chain: 0, other: 0 }
    );
    // Any difference in any field keeps them apart.
    assert!(
        ChainSelector::build(
            &[
                a.clone(),
                m(Some(81), &["10.0.0.1/32"], None, &[]),
                m(Some(80), &["10.0.0.1/31"], None, &[]),
                m(Some(80), &["10.0.0.1/32"], Some(RAW), &[]),
                m(Some(80), &["10.0.0.1/32"], None, &[AppProtocol::H2c]),
            ],
            None,
        )
        .is_ok()
    );
}

#[test]
fn ranges_are_masked_and_port_sets_are_ranges() {
    let r = cidr("10.1.2.3/8");
    assert_eq!(r.to_string(), "10.0.0.0/8");
    assert!(r.contains("10.200.0.1".parse().unwrap()));
    assert!(!r.contains("11.0.0.1".parse().unwrap()));
    assert!(!r.contains("::a01:203".parse().unwrap()));
    assert_eq!(cidr("fd00:1:2::3/32").to_string(), "fd00:1::/32");
    assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
    assert!(CidrRange::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 33).is_none());
    assert!(CidrRange::new("::1".parse().unwrap(), 128).is_some());

    let ports = PortSet::range(80, 81)
        .union(&PortSet::range(8000, 8010))
        .union(&PortSet::range(8010, 8011));
    assert_eq!(ports.to_string(), "80,8000-8010");
    assert!(ports.contains(80) && ports.contains(8005) && ports.contains(8010));
    assert!(!ports.contains(81) && !ports.contains(79) && !ports.contains(8011));
    let others = ports.complement();
    assert_eq!(others.to_string(), "0-79,81-7999,8011-65535");
    assert_eq!(others.complement(), ports);
    assert_eq!(PortSet::all().complement(), PortSet::empty());
    assert!(PortSet::range(0, 70_000).contains(65535));
}

/// A listener of the intercepted outbound shape with 5,000 services: one chain per service and
/// port, two for undeclared ports, the loop guard, and the passthrough default.
#[test]
fn thousands_of_chains_select_in_constant_time() {
    let service = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i));
    let mut matches = Vec::new();
    for i in 0..2_500 {
        let ip = format!("{}/32", service(i));
        matches.push(m(Some(80), &[&ip], None, &HTTP));
        matches.push(m(Some(80), &[&ip], None, &[]));
    }
    matches.push(m(Some(15001), &[], None, &[]));
    assert_eq!(matches.len(), 5_001);
    let default = matches.len();
    let started = Instant::now();
    let s = build(&matches, Some(default));
    let built = started.elapsed();

    let started = Instant::now();
    let mut n = 0;
    for round in 0..20 {
        for i in 0..2_500 {
            let to = SocketAddr::new(service(i), 80);
            let app = (round % 2 == 0).then_some(AppProtocol::Http11);
            let want = 2 * i as usize + usize::from(app.is_none());
            assert_eq!(s.select(to, RAW, app), Some(want));
            n += 1;
        }
    }
    let looked_up = started.elapsed();
    assert_eq!(s.select(addr("10.96.100.0:80"), RAW, None), Some(default));
    assert_eq!(s.select(addr("10.96.0.1:15001"), RAW, None), Some(5_000));
    assert_eq!(s.select(addr("192.0.2.1:443"), RAW, None), Some(default));
    // A few hash lookups each: far below a microsecond optimized, a few in a debug build.
    // The bound only catches a linear scan (5,000 chains × 50,000 lookups).
    let per_lookup = looked_up / n;
    assert!(
        per_lookup < Duration::from_micros(50),
        "{per_lookup:?} per selection (built in {built:?})"
    );
    assert!(built < Duration::from_secs(2), "built in {built:?}");
}
