//! The rule generator against golden files, the lists, re-run convergence and backend choice.
//!
//! `SWITCHYARD_BLESS=1 cargo test -p switchyard --lib intercept` rewrites the golden files
//! (`intercept/golden/`) instead of comparing.

use std::path::{Path, PathBuf};

use super::backend::{Backend, BackendError, Mode, Probe, choose};
use super::*;

// === Utils ===

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/intercept/golden")
}

/// Compares `text` with `golden/<name>`, or writes it there with `SWITCHYARD_BLESS=1`.
fn golden(name: &str, text: &str) {
    let path = golden_dir().join(name);
    if std::env::var("SWITCHYARD_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SWITCHYARD_BLESS=1 writes it)", path.display()));
    assert!(
        want == text,
        "{} differs (SWITCHYARD_BLESS=1 cargo test -p switchyard --lib intercept rewrites it):\n\
         --- golden\n{want}\n--- generated\n{text}",
        path.display()
    );
}

fn ports(value: &str) -> PortList {
    PortList::parse("test", value).unwrap()
}

fn cidrs(value: &str) -> CidrList {
    CidrList::parse("test", value).unwrap()
}

fn skipping() -> InterceptConfig {
    InterceptConfig {
        skip_inbound_ports: ports("9090, 8000-8010"),
        skip_outbound_ports: ports("5432,6379,443"),
        skip_outbound_cidrs: cidrs("10.96.0.0/12,169.254.169.254,fd00:10:96::/108"),
        ..InterceptConfig::default()
    }
}

/// What `iptables-save -t nat` prints for a namespace that holds `input` (the restore input's
/// own lines, less its comment and flushes: enough for the generator and the checker).
fn saved_after(input: &str) -> Saved {
    Saved::parse(input)
}

// === Golden rules ===

#[test]
fn default_config_golden_v4_and_v6() {
    let config = InterceptConfig::default();
    golden(
        "default.v4.rules",
        &restore_input(&config, Family::V4, &Saved::default()),
    );
    golden(
        "default.v6.rules",
        &restore_input(&config, Family::V6, &Saved::default()),
    );
}

#[test]
fn skip_lists_golden_v4_and_v6() {
    let config = skipping();
    golden(
        "skip.v4.rules",
        &restore_input(&config, Family::V4, &Saved::default()),
    );
    golden(
        "skip.v6.rules",
        &restore_input(&config, Family::V6, &Saved::default()),
    );
}

#[test]
fn multiport_groups_split_at_fifteen_slots_golden() {
    // 20 single ports and 2 ranges: 24 slots, so two inbound and one outbound match.
    let inbound: Vec<String> = (1..=20).map(|p| (p * 100).to_string()).collect();
    let config = InterceptConfig {
        proxy_uid: 2102,
        proxy_gid: 2103,
        inbound_port: 4143,
        outbound_port: 4140,
        health_port: 4191,
        skip_inbound_ports: ports(&format!("{},30000-30010,40000-40010", inbound.join(","))),
        skip_outbound_ports: ports("1-3,5,7,9"),
        skip_outbound_cidrs: CidrList::default(),
    };
    let input = restore_input(&config, Family::V4, &Saved::default());
    golden("many-ports.v4.rules", &input);
    for line in input.lines().filter(|l| l.contains("multiport")) {
        let list = line
            .split_whitespace()
            .skip_while(|w| *w != "--dports")
            .nth(1)
            .unwrap();
        let slots: usize = list
            .split(',')
            .map(|p| if p.contains(':') { 2 } else { 1 })
            .sum();
        assert!(slots <= 15, "{line}");
    }
    let inbound_matches = input
        .lines()
        .filter(|l| l.contains("skip-inbound-ports"))
        .count();
    assert_eq!(inbound_matches, 2, "{input}");
}

#[test]
fn rules_redirect_only_tcp_and_exclude_the_proxy() {
    let input = restore_input(&InterceptConfig::default(), Family::V4, &Saved::default());
    for line in input.lines().filter(|l| l.contains("REDIRECT --to-ports")) {
        assert!(line.contains(" -p tcp "), "{line}");
    }
    for line in input.lines().filter(|l| l.starts_with("-A ")) {
        assert!(line.contains("--comment \"switchyard/"), "{line}");
        assert!(!line.contains("udp"), "{line}");
    }
    let output: Vec<&str> = input
        .lines()
        .filter(|l| l.starts_with("-A SWITCHYARD_OUTPUT "))
        .collect();
    // The order is the meaning: 127.0.0.6 before the hairpin, the hairpin before the proxy's
    // RETURN, the redirect last.
    assert!(output[0].contains("-s 127.0.0.6/32 -o lo"), "{output:?}");
    assert!(
        output[1].contains("-j SWITCHYARD_IN_REDIRECT"),
        "{output:?}"
    );
    assert!(output[3].contains("--uid-owner 1337"), "{output:?}");
    assert!(output[4].contains("--gid-owner 1337"), "{output:?}");
    assert!(output.last().unwrap().ends_with("-j SWITCHYARD_REDIRECT"));
}

#[test]
fn the_health_and_proxy_ports_are_always_skipped_inbound_and_the_admin_port_is_not() {
    let config = InterceptConfig {
        skip_inbound_ports: ports("15005-15007,80"),
        ..InterceptConfig::default()
    };
    assert_eq!(
        config.inbound_ports_skipped().to_string(),
        "80,15001,15005-15007,15020"
    );
    // The admin port (127.0.0.1 in the Pod) is not let through: from outside the Pod it is
    // redirected to the inbound port like any other.
    assert_eq!(
        InterceptConfig::default()
            .inbound_ports_skipped()
            .to_string(),
        "15001,15006,15020"
    );
}

// === Re-running ===

#[test]
fn re_running_on_installed_rules_adds_no_jump() {
    let config = skipping();
    for family in [Family::V4, Family::V6] {
        let first = restore_input(&config, family, &Saved::default());
        let again = restore_input(&config, family, &saved_after(&first));
        assert!(!again.contains("-A PREROUTING"), "{again}");
        assert!(!again.contains("-A OUTPUT"), "{again}");
        assert!(!again.contains("-D "), "{again}");
        // The chains themselves are flushed and refilled.
        for chain in CHAINS {
            assert!(again.contains(&format!(":{chain} - [0:0]\n")));
            assert!(again.contains(&format!("-F {chain}\n")));
        }
        let chain_lines = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("-A SWITCHYARD_"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(chain_lines(&first), chain_lines(&again));
    }
}

#[test]
fn stale_or_duplicate_jumps_are_replaced_by_one() {
    let current = Saved::parse(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-X - [0:0]\n\
         -A PREROUTING -p tcp -j SWITCHYARD_INBOUND\n\
         -A PREROUTING -p tcp -m comment --comment \"switchyard/inbound\" -j SWITCHYARD_INBOUND\n\
         -A PREROUTING -j KUBE-X\n\
         -A OUTPUT -p tcp -m comment --comment \"switchyard/outbound\" -j SWITCHYARD_OUTPUT\n\
         -A OUTPUT -p tcp -m comment --comment \"switchyard/outbound\" -j SWITCHYARD_OUTPUT\n\
         COMMIT\n",
    );
    let input = restore_input(&InterceptConfig::default(), Family::V4, &current);
    golden("rerun-duplicates.v4.rules", &input);
    let deletes: Vec<&str> = input.lines().filter(|l| l.starts_with("-D ")).collect();
    assert_eq!(deletes.len(), 4, "{input}");
    assert!(
        !input.contains("KUBE-X"),
        "other rules are left alone: {input}"
    );
    assert_eq!(input.matches("-A PREROUTING ").count(), 1);
    assert_eq!(input.matches("-A OUTPUT ").count(), 1);
}

#[test]
fn check_installed_counts_jumps_and_rules() {
    let config = skipping();
    let input = restore_input(&config, Family::V4, &Saved::default());
    assert_eq!(
        check_installed(&config, Family::V4, &saved_after(&input)),
        Ok(())
    );
    let doubled = format!(
        "{input}*nat\n-A OUTPUT -p tcp -m comment --comment \"switchyard/outbound\" -j SWITCHYARD_OUTPUT\n"
    );
    let err = check_installed(&config, Family::V4, &saved_after(&doubled)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "table nat (IPv4): OUTPUT has 2 jumps into SWITCHYARD_* chains, not 1"
    );
    let fewer = input.replace(
        "-A SWITCHYARD_REDIRECT -p tcp -m comment --comment \"switchyard/to-outbound-port\" -j REDIRECT --to-ports 15001\n",
        "",
    );
    let err = check_installed(&config, Family::V4, &saved_after(&fewer)).unwrap_err();
    assert_eq!(err.problem, "SWITCHYARD_REDIRECT has 0 rules, not 1");
    let err = check_installed(&config, Family::V6, &Saved::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "table nat (IPv6): iptables-save printed no nat table"
    );
}

#[test]
fn expected_rules_are_the_restore_lines_in_chain_order() {
    let config = skipping();
    let input = restore_input(&config, Family::V6, &Saved::default());
    let mut from_input: Vec<String> = input
        .lines()
        .filter_map(|l| l.strip_prefix("-A "))
        .map(str::to_owned)
        .collect();
    let mut expected: Vec<String> = expected_rules(&config, Family::V6)
        .into_iter()
        .map(|(c, s)| format!("{c} {s}"))
        .collect();
    from_input.sort();
    expected.sort();
    assert_eq!(from_input, expected);
}

// === Lists ===

#[test]
fn port_lists_parse_sort_and_merge() {
    assert_eq!(ports("").to_string(), "");
    assert_eq!(ports("  ").to_string(), "");
    assert_eq!(
        ports("443, 80,8000-8010,8005-8020,8021").to_string(),
        "80,443,8000-8021"
    );
    assert_eq!(ports("65535,1").to_string(), "1,65535");
    assert!(ports("80,443").contains(443));
    assert!(!ports("80,443").contains(8080));
    assert_eq!(
        ports("80,8000-8010").multiport_groups(),
        vec!["80,8000:8010".to_owned()]
    );
}

#[test]
fn port_list_errors_name_the_list_and_the_element() {
    let err = |value: &str| {
        PortList::parse("switchyard.dev/skip-outbound-ports", value)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("80,http"),
        "switchyard.dev/skip-outbound-ports: \"http\" is not a port (1-65535) or a range of ports (8000-8010)"
    );
    assert_eq!(
        err("0"),
        "switchyard.dev/skip-outbound-ports: \"0\" is not a port (1-65535) or a range of ports (8000-8010)"
    );
    assert_eq!(
        err("70000"),
        "switchyard.dev/skip-outbound-ports: \"70000\" is not a port (1-65535) or a range of ports (8000-8010)"
    );
    assert_eq!(
        err("90-80"),
        "switchyard.dev/skip-outbound-ports: \"90-80\" is a range whose first port is after its last"
    );
    assert_eq!(
        err("80,,443"),
        "switchyard.dev/skip-outbound-ports: \"\" is empty (elements are separated by single commas)"
    );
    let e = PortList::parse("--skip-inbound-ports", "1-2-3").unwrap_err();
    assert_eq!(
        (e.list.as_str(), e.element.as_str()),
        ("--skip-inbound-ports", "1-2-3")
    );
}

#[test]
fn cidr_lists_parse_normalize_and_split_by_family() {
    let list = cidrs("10.1.2.3/8, 192.168.0.1, fd00::1/8,10.0.0.0/8, ::/0, 0.0.0.0/0");
    assert_eq!(
        list.to_string(),
        "0.0.0.0/0,10.0.0.0/8,192.168.0.1/32,::/0,fd00::/8"
    );
    let v4: Vec<_> = list.iter().filter(|c| c.is_ipv4()).collect();
    assert_eq!(v4.len(), 3);
    let err = |value: &str| {
        CidrList::parse("switchyard.dev/skip-outbound-cidrs", value)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("10.0.0.0/33"),
        "switchyard.dev/skip-outbound-cidrs: \"10.0.0.0/33\" has a prefix longer than 32 bits"
    );
    assert_eq!(
        err("fd00::/129"),
        "switchyard.dev/skip-outbound-cidrs: \"fd00::/129\" has a prefix longer than 128 bits"
    );
    assert_eq!(
        err("10.0.0.0/8,example.com"),
        "switchyard.dev/skip-outbound-cidrs: \"example.com\" is not an IP address or a CIDR (10.0.0.0/8, fd00::/8)"
    );
    assert_eq!(
        err("10.0.0.0/x"),
        "switchyard.dev/skip-outbound-cidrs: \"10.0.0.0/x\" is not an IP address or a CIDR (10.0.0.0/8, fd00::/8)"
    );
}

proptest::proptest! {
    /// Any set of ranges, however written, gives multiport groups that fit and cover exactly it.
    #[test]
    fn multiport_groups_cover_the_list(ranges in proptest::collection::vec((1u16..2000, 0u16..40), 0..60)) {
        let written: Vec<String> = ranges.iter().map(|(a, len)| {
            if *len == 0 { a.to_string() } else { format!("{a}-{}", a + len) }
        }).collect();
        let list = ports(&written.join(","));
        let mut covered = std::collections::BTreeSet::new();
        for group in list.multiport_groups() {
            let mut slots = 0;
            for item in group.split(',') {
                let (a, b) = item.split_once(':').unwrap_or((item, item));
                let (a, b): (u16, u16) = (a.parse().unwrap(), b.parse().unwrap());
                slots += if a == b { 1 } else { 2 };
                covered.extend(a..=b);
            }
            proptest::prop_assert!(slots <= 15);
        }
        let want: std::collections::BTreeSet<u16> =
            ranges.iter().flat_map(|(a, len)| *a..=a + len).collect();
        proptest::prop_assert_eq!(covered, want);
    }
}

// === iptables-save ===

#[test]
fn saved_output_is_read_back() {
    let text = "# Generated by iptables-nft-save v1.8.9 (nf_tables)\n\
                # Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n\
                *mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n\
                *nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [3:180]\n\
                -A OUTPUT -p tcp -m comment --comment \"a \\\"quoted\\\" -j X\" -j SWITCHYARD_OUTPUT\n\
                COMMIT\n";
    let saved = Saved::parse(text);
    assert!(saved.has_chain("KUBE-IPTABLES-HINT"));
    assert_eq!(saved.installed(), 2);
    let nat = saved.table("nat").unwrap();
    let rule = nat.rules_of("OUTPUT").next().unwrap();
    assert_eq!(rule.target().as_deref(), Some("SWITCHYARD_OUTPUT"));
    assert_eq!(Saved::parse("").installed(), 0);
}

// === Backend choice ===

const EMPTY: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
const HINTED: &str = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n";
const RULES: &str = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i cni0 -j ACCEPT\nCOMMIT\n";

fn saved(text: &str) -> Probe {
    Probe::Saved(text.to_owned())
}

#[test]
fn auto_prefers_the_backend_with_kubelets_hint_chains() {
    let c = choose(Mode::Auto, &saved(RULES), &saved(HINTED)).unwrap();
    assert_eq!(c.backend, Backend::Legacy);
    assert_eq!(
        c.reason,
        "its tables hold kubelet's KUBE-IPTABLES-HINT chain"
    );
    let c = choose(Mode::Auto, &saved(HINTED), &saved(HINTED)).unwrap();
    assert_eq!(c.backend, Backend::Nft);
}

#[test]
fn auto_then_prefers_the_backend_that_holds_rules() {
    let c = choose(Mode::Auto, &saved(EMPTY), &saved(RULES)).unwrap();
    assert_eq!(c.backend, Backend::Legacy);
    assert_eq!(
        c.reason,
        "its tables already hold 1 rules and chains in this network namespace"
    );
    let c = choose(Mode::Auto, &saved(RULES), &saved(RULES)).unwrap();
    assert_eq!(c.backend, Backend::Nft);
}

#[test]
fn auto_defaults_to_nft_then_legacy() {
    let c = choose(Mode::Auto, &saved(EMPTY), &saved(EMPTY)).unwrap();
    assert_eq!(
        (c.backend, c.reason.as_str()),
        (
            Backend::Nft,
            "no rules in either backend; nft is the default"
        )
    );
    let c = choose(Mode::Auto, &saved(""), &Probe::Missing).unwrap();
    assert_eq!(c.backend, Backend::Nft);
    let c = choose(Mode::Auto, &Probe::Missing, &saved(EMPTY)).unwrap();
    assert_eq!(
        (c.backend, c.reason.as_str()),
        (
            Backend::Legacy,
            "no rules in either backend; nft is unusable: not installed"
        )
    );
    let failed = Probe::Failed("Protocol not supported".to_owned());
    let c = choose(Mode::Auto, &failed, &saved(EMPTY)).unwrap();
    assert_eq!(c.backend, Backend::Legacy);
    let legacy_failed = Probe::Failed(
        "can't initialize iptables table `filter': Table does not exist (do you need to insmod?)"
            .to_owned(),
    );
    let c = choose(Mode::Auto, &saved(EMPTY), &legacy_failed).unwrap();
    assert_eq!(c.backend, Backend::Nft);
    let err = choose(Mode::Auto, &Probe::Missing, &legacy_failed).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no usable iptables: nft: not installed; legacy: can't initialize iptables table `filter': \
         Table does not exist (do you need to insmod?)"
    );
}

#[test]
fn a_forced_backend_needs_only_to_be_installed() {
    let c = choose(Mode::Legacy, &saved(HINTED), &Probe::Failed("x".to_owned())).unwrap();
    assert_eq!(c.backend, Backend::Legacy);
    assert_eq!(c.reason, "--iptables says so");
    let err = choose(Mode::Nft, &Probe::Missing, &saved(EMPTY)).unwrap_err();
    assert_eq!(err, BackendError::ForcedMissing(Backend::Nft));
    assert_eq!(
        err.to_string(),
        "--iptables nft: iptables-nft-restore is not installed"
    );
    assert_eq!("legacy".parse::<Mode>(), Ok(Mode::Legacy));
    assert_eq!(
        "iptables".parse::<Mode>(),
        Err("\"iptables\" is not auto, nft or legacy".to_owned())
    );
}

#[test]
fn program_names_follow_debians_iptables_package() {
    assert_eq!(
        Backend::Nft.program(Family::V4, Tool::Restore),
        "iptables-nft-restore"
    );
    assert_eq!(
        Backend::Legacy.program(Family::V6, Tool::Save),
        "ip6tables-legacy-save"
    );
}

#[test]
fn ipv6_is_skipped_without_kernel_support_or_when_disabled() {
    assert_eq!(ipv6_absent(Some(""), Some("0\n")), None);
    assert_eq!(ipv6_absent(Some(""), None), None);
    assert_eq!(
        ipv6_absent(None, None),
        Some("the kernel has no IPv6 (no /proc/net/if_inet6)")
    );
    assert_eq!(
        ipv6_absent(Some(""), Some("1\n")),
        Some("IPv6 is disabled in this network namespace (net.ipv6.conf.all.disable_ipv6 = 1)")
    );
}
