//! Transparent interception: the `nat` rules that send a Pod's TCP through its proxy, written as
//! `iptables-restore --noflush` input (sans-IO; `switchyard proxy-init` runs them).
//!
//! ```text
//!  PREROUTING -p tcp ─▶ SWITCHYARD_INBOUND ── skipped inbound ports (health, proxy ports, list) ─▶ RETURN
//!                                         └─▶ SWITCHYARD_IN_REDIRECT ─▶ REDIRECT :15006 (inbound proxy)
//!  OUTPUT -p tcp ─▶ SWITCHYARD_OUTPUT, first match wins:
//!    -s 127.0.0.6 -o lo                       RETURN   inbound proxy → app (it connects from 127.0.0.6)
//!    -o lo ! -d 127.0.0.1, uid proxy          SWITCHYARD_IN_REDIRECT   outbound proxy → own Pod IP
//!                                                      (hairpin: an app calling its own Service)
//!    -o lo, uid not proxy                     RETURN   app → itself
//!    uid proxy / gid proxy                    RETURN   the proxy's own connections
//!    -d 127.0.0.1                             RETURN
//!    skipped outbound CIDRs, skipped ports    RETURN
//!    everything else                          SWITCHYARD_REDIRECT ─▶ REDIRECT :15001 (outbound proxy)
//! ```
//!
//! Only TCP is redirected: UDP (DNS above all) is never touched. IPv6 gets the same rules with
//! `::1` for `127.0.0.1` and `::6` for `127.0.0.6` (as Istio does; an inbound proxy on an IPv6
//! Pod must connect to its app from `::6`, which it has to add to `lo` first: unlike
//! `127.0.0.0/8`, only `::1` is local on Linux by default).
//!
//! Re-running is safe and converges: the `SWITCHYARD_*` chains are declared (which, with
//! `--noflush`, flushes them if they exist) and flushed, then refilled; the jumps from
//! `PREROUTING` and `OUTPUT` are read from the current table and only added when not there
//! exactly once (any other jump to our chains is deleted first). Every rule is written the way
//! `iptables-save` prints it, and carries a `switchyard/<what>` comment.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub mod backend;
pub mod list;
pub mod save;

pub use backend::{Backend, BackendError, Choice, Mode, Probe, Tool};
pub use list::{Cidr, CidrList, ListError, PortList, PortRange};
pub use save::Saved;

/// The UID (and GID) of the proxies, whose connections are never redirected.
pub const PROXY_UID: u32 = switchyard_images::PROXY_UID;
/// The proxy's admin port: 127.0.0.1 in a Pod, so it is not in the inbound skip list (a
/// connection to it from outside the Pod is redirected to the inbound port, and fails there).
pub const ADMIN_PORT: u16 = 15000;
/// The proxy's health port (`/ready`, `/live`, `/metrics` only): never redirected inbound, so
/// the kubelet's probes reach it.
pub const HEALTH_PORT: u16 = 15020;
/// The outbound proxy's port: where the app's outgoing TCP is redirected.
pub const OUTBOUND_PORT: u16 = 15001;
/// The inbound proxy's port: where TCP arriving at the Pod is redirected.
pub const INBOUND_PORT: u16 = 15006;
/// The source address the inbound proxy connects to its app from, so that `OUTPUT` can tell
/// "inbound proxy → app" (let through) from "outbound proxy → own Pod IP" (hairpin).
pub const INBOUND_SOURCE_V4: Ipv4Addr = switchyard_adapters::envoy::INBOUND_SOURCE;
/// [`INBOUND_SOURCE_V4`] for IPv6.
pub const INBOUND_SOURCE_V6: Ipv6Addr = switchyard_adapters::envoy::INBOUND_SOURCE_V6;

/// The chains this module owns, all in table `nat`.
pub const INBOUND_CHAIN: &str = "SWITCHYARD_INBOUND";
pub const IN_REDIRECT_CHAIN: &str = "SWITCHYARD_IN_REDIRECT";
pub const OUTPUT_CHAIN: &str = "SWITCHYARD_OUTPUT";
pub const REDIRECT_CHAIN: &str = "SWITCHYARD_REDIRECT";
const CHAINS: [&str; 4] = [
    INBOUND_CHAIN,
    IN_REDIRECT_CHAIN,
    OUTPUT_CHAIN,
    REDIRECT_CHAIN,
];

/// An address family: `iptables` or `ip6tables`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

/// What to redirect, and what not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterceptConfig {
    /// The proxy's UID; its connections are not redirected (default [`PROXY_UID`]).
    pub proxy_uid: u32,
    /// The proxy's GID; its connections are not redirected either (default [`PROXY_UID`]).
    pub proxy_gid: u32,
    /// Where inbound TCP goes (default [`INBOUND_PORT`]).
    pub inbound_port: u16,
    /// Where outbound TCP goes (default [`OUTBOUND_PORT`]).
    pub outbound_port: u16,
    /// The proxy's health port, never redirected inbound (default [`HEALTH_PORT`]).
    pub health_port: u16,
    /// Inbound destination ports let through to the app (e.g. kubelet's probe ports).
    pub skip_inbound_ports: PortList,
    /// Outbound destination ports that bypass the proxy.
    pub skip_outbound_ports: PortList,
    /// Outbound destination networks that bypass the proxy, both families.
    pub skip_outbound_cidrs: CidrList,
}

/// A `nat` table does not hold what [`restore_input`] installs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("table nat ({family}): {problem}")]
pub struct NotInstalled {
    pub family: Family,
    pub problem: String,
}

// === impl Family ===

impl Family {
    /// `127.0.0.1/32` or `::1/128`.
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    /// [`INBOUND_SOURCE_V4`] or [`INBOUND_SOURCE_V6`], as a host CIDR.
    fn inbound_source(self) -> String {
        match self {
            Family::V4 => format!("{INBOUND_SOURCE_V4}/32"),
            Family::V6 => format!("{INBOUND_SOURCE_V6}/128"),
        }
    }

    fn holds(self, cidr: Cidr) -> bool {
        matches!(
            (self, cidr.network()),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

// === impl InterceptConfig ===

impl Default for InterceptConfig {
    fn default() -> Self {
        InterceptConfig {
            proxy_uid: PROXY_UID,
            proxy_gid: PROXY_UID,
            inbound_port: INBOUND_PORT,
            outbound_port: OUTBOUND_PORT,
            health_port: HEALTH_PORT,
            skip_inbound_ports: PortList::default(),
            skip_outbound_ports: PortList::default(),
            skip_outbound_cidrs: CidrList::default(),
        }
    }
}

impl InterceptConfig {
    /// Every inbound port let through: the health and proxy ports, then the configured list.
    pub fn inbound_ports_skipped(&self) -> PortList {
        let own = [self.health_port, self.outbound_port, self.inbound_port]
            .into_iter()
            .filter_map(PortRange::port);
        own.collect::<PortList>().union(&self.skip_inbound_ports)
    }

    /// `-A` lines of the four chains (without the jumps into them), in chain order, as
    /// `iptables-save` prints them.
    fn chain_rules(&self, family: Family) -> Vec<(&'static str, String)> {
        let uid = self.proxy_uid;
        let gid = self.proxy_gid;
        let lo = family.loopback();
        let mut rules = Vec::new();
        let mut add = |chain: &'static str, spec: String| rules.push((chain, spec));

        for ports in self.inbound_ports_skipped().multiport_groups() {
            add(
                INBOUND_CHAIN,
                format!(
                    "-p tcp -m multiport --dports {ports} {} -j RETURN",
                    comment("skip-inbound-ports")
                ),
            );
        }
        add(
            INBOUND_CHAIN,
            format!(
                "-p tcp {} -j {IN_REDIRECT_CHAIN}",
                comment("redirect-inbound")
            ),
        );

        add(
            IN_REDIRECT_CHAIN,
            format!(
                "-p tcp {} -j REDIRECT --to-ports {}",
                comment("to-inbound-port"),
                self.inbound_port
            ),
        );

        let src = family.inbound_source();
        add(
            OUTPUT_CHAIN,
            format!(
                "-s {src} -o lo {} -j RETURN",
                comment("inbound-proxy-to-app")
            ),
        );
        add(
            OUTPUT_CHAIN,
            format!(
                "! -d {lo} -o lo -m owner --uid-owner {uid} {} -j {IN_REDIRECT_CHAIN}",
                comment("hairpin-to-own-pod")
            ),
        );
        add(
            OUTPUT_CHAIN,
            format!(
                "-o lo -m owner ! --uid-owner {uid} {} -j RETURN",
                comment("app-to-own-pod")
            ),
        );
        add(
            OUTPUT_CHAIN,
            format!(
                "-m owner --uid-owner {uid} {} -j RETURN",
                comment("proxy-uid")
            ),
        );
        add(
            OUTPUT_CHAIN,
            format!(
                "-m owner --gid-owner {gid} {} -j RETURN",
                comment("proxy-gid")
            ),
        );
        add(
            OUTPUT_CHAIN,
            format!("-d {lo} {} -j RETURN", comment("loopback")),
        );
        for cidr in self.skip_outbound_cidrs.iter().filter(|c| family.holds(*c)) {
            add(
                OUTPUT_CHAIN,
                format!("-d {cidr} {} -j RETURN", comment("skip-outbound-cidrs")),
            );
        }
        for ports in self.skip_outbound_ports.multiport_groups() {
            add(
                OUTPUT_CHAIN,
                format!(
                    "-p tcp -m multiport --dports {ports} {} -j RETURN",
                    comment("skip-outbound-ports")
                ),
            );
        }
        add(
            OUTPUT_CHAIN,
            format!("{} -j {REDIRECT_CHAIN}", comment("redirect-outbound")),
        );

        add(
            REDIRECT_CHAIN,
            format!(
                "-p tcp {} -j REDIRECT --to-ports {}",
                comment("to-outbound-port"),
                self.outbound_port
            ),
        );
        rules
    }
}

/// The jumps into our chains from the built-in ones.
fn jumps() -> [(&'static str, String); 2] {
    [
        (
            "PREROUTING",
            format!("-p tcp {} -j {INBOUND_CHAIN}", comment("inbound")),
        ),
        (
            "OUTPUT",
            format!("-p tcp {} -j {OUTPUT_CHAIN}", comment("outbound")),
        ),
    ]
}

/// Why this network namespace has no IPv6 to intercept, or `None` when it has some: from the
/// text of `/proc/net/if_inet6` (absent when the kernel has no IPv6) and of
/// `/proc/sys/net/ipv6/conf/all/disable_ipv6` (`1` when IPv6 is off in this namespace).
pub fn ipv6_absent(if_inet6: Option<&str>, disable_ipv6: Option<&str>) -> Option<&'static str> {
    if if_inet6.is_none() {
        return Some("the kernel has no IPv6 (no /proc/net/if_inet6)");
    }
    if disable_ipv6.map(str::trim) == Some("1") {
        return Some(
            "IPv6 is disabled in this network namespace (net.ipv6.conf.all.disable_ipv6 = 1)",
        );
    }
    None
}

fn comment(what: &str) -> String {
    format!("-m comment --comment \"switchyard/{what}\"")
}

fn ours(target: Option<String>) -> bool {
    target.is_some_and(|t| CHAINS.contains(&t.as_str()))
}

/// Every `-A` line the `nat` table of `family` holds for `config` once installed: the jumps from
/// `PREROUTING` and `OUTPUT`, then each chain's rules; `(chain, spec)` as `iptables-save`
/// prints them.
pub fn expected_rules(config: &InterceptConfig, family: Family) -> Vec<(&'static str, String)> {
    let mut rules: Vec<_> = jumps().into_iter().collect();
    rules.extend(config.chain_rules(family));
    rules
}

/// The `iptables-restore --noflush` input that installs `config` for `family`, given what the
/// `nat` table holds now (`current`, from `iptables-save -t nat`; empty on a fresh Pod).
pub fn restore_input(config: &InterceptConfig, family: Family, current: &Saved) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# switchyard proxy-init: {family} nat rules (iptables-restore --noflush)"
    );
    out.push_str("*nat\n");
    for chain in CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for chain in CHAINS {
        let _ = writeln!(out, "-F {chain}");
    }
    for (chain, spec) in config.chain_rules(family) {
        let _ = writeln!(out, "-A {chain} {spec}");
    }
    let nat = current.table("nat");
    for (chain, spec) in jumps() {
        let existing: Vec<&save::Rule> = nat
            .map(|t| t.rules_of(chain).filter(|r| ours(r.target())).collect())
            .unwrap_or_default();
        if existing.len() == 1 && existing[0].spec == spec {
            continue;
        }
        // `-D` removes the first rule that matches, so one per line printed.
        for rule in existing {
            let _ = writeln!(out, "-D {chain} {}", rule.spec);
        }
        let _ = writeln!(out, "-A {chain} {spec}");
    }
    out.push_str("COMMIT\n");
    out
}

/// Checks, after installing, that `nat` (from `iptables-save -t nat`) holds exactly one jump
/// from each built-in chain and as many rules in each of our chains as `config` asks for. Counts
/// rather than text, so that another iptables version's spelling of a rule is no failure.
pub fn check_installed(
    config: &InterceptConfig,
    family: Family,
    nat: &Saved,
) -> Result<(), NotInstalled> {
    let fail = |problem: String| Err(NotInstalled { family, problem });
    let Some(table) = nat.table("nat") else {
        return fail("iptables-save printed no nat table".to_owned());
    };
    for (chain, _) in jumps() {
        let n = table.rules_of(chain).filter(|r| ours(r.target())).count();
        if n != 1 {
            return fail(format!(
                "{chain} has {n} jumps into SWITCHYARD_* chains, not 1"
            ));
        }
    }
    let wanted = config.chain_rules(family);
    for chain in CHAINS {
        let want = wanted.iter().filter(|(c, _)| *c == chain).count();
        let have = table.rules_of(chain).count();
        if want != have {
            return fail(format!("{chain} has {have} rules, not {want}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
