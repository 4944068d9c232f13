//! The annotations Switchyard reads and writes on Kubernetes objects, and what they mean.
//!
//! ```text
//!  switchyard.dev/inject          on a Namespace or a Pod (template): enabled | disabled. The
//!                                 Pod's value wins; anything else is rejected by the injector.
//!  switchyard.dev/data-plane      on a Pod, else its Namespace: envoy | bundled; else the mesh
//!                                 default. The injector writes the value it chose onto the Pod.
//!  switchyard.dev/proxy-version   on a Pod: it runs a Switchyard proxy (set by the injector,
//!                                 or by whoever runs one beside the Pod); the value is the
//!                                 version that put it there. Only such Pods are in the mesh.
//!  switchyard.dev/skip-inbound-ports, switchyard.dev/skip-outbound-ports
//!                                 on a Pod: ports (`80`) and ranges (`9000-9100`), comma
//!                                 separated, that interception leaves alone.
//!  switchyard.dev/skip-outbound-cidrs
//!                                 on a Pod: IPv4 and IPv6 CIDRs, comma separated, whose
//!                                 outbound traffic interception leaves alone.
//! ```

use std::{fmt, net::IpAddr, str::FromStr};

use serde_json::Value;

pub use crate::index::DATA_PLANE_ANNOTATION as DATA_PLANE;

/// Marks a Pod that runs a Switchyard proxy: in Kubernetes mode only these Pods get a proxy
/// configuration, and only their endpoints are reached over mTLS. Local mode treats every Pod
/// as meshed (each Pod in its directory is a proxy).
pub const PROXY_VERSION: &str = "switchyard.dev/proxy-version";
/// Enrols a Namespace's or a Pod's workloads in the mesh: [`InjectMode`].
pub const INJECT: &str = "switchyard.dev/inject";
/// Inbound ports interception leaves alone: [`PortRanges`].
pub const SKIP_INBOUND_PORTS: &str = "switchyard.dev/skip-inbound-ports";
/// Outbound ports interception leaves alone: [`PortRanges`].
pub const SKIP_OUTBOUND_PORTS: &str = "switchyard.dev/skip-outbound-ports";
/// Outbound destinations interception leaves alone: [`Cidrs`].
pub const SKIP_OUTBOUND_CIDRS: &str = "switchyard.dev/skip-outbound-cidrs";

/// Whether a Pod (as the watch delivers it, JSON) carries [`PROXY_VERSION`] with a value.
pub fn is_meshed(pod: &Value) -> bool {
    pod["metadata"]["annotations"][PROXY_VERSION]
        .as_str()
        .is_some_and(|v| !v.is_empty())
}

// === InjectMode ===

/// The value of [`INJECT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InjectMode {
    Enabled,
    Disabled,
}

/// An [`INJECT`] value that is neither `enabled` nor `disabled`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not enabled or disabled")]
pub struct UnknownInjectMode(pub String);

impl InjectMode {
    pub fn as_str(self) -> &'static str {
        match self {
            InjectMode::Enabled => "enabled",
            InjectMode::Disabled => "disabled",
        }
    }
}

impl fmt::Display for InjectMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InjectMode {
    type Err = UnknownInjectMode;

    /// Exact, lower-case values only, as Kubernetes compares annotation values: `true`, `yes`
    /// or `Enabled` are refused rather than guessed at.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enabled" => Ok(InjectMode::Enabled),
            "disabled" => Ok(InjectMode::Disabled),
            other => Err(UnknownInjectMode(other.to_owned())),
        }
    }
}

// === PortRanges ===

/// A comma-separated list of TCP ports and inclusive ranges, `80,443,9000-9100`; blanks around
/// items are ignored and an empty value is an empty list. Displayed in the same syntax, without
/// blanks, in the order written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortRanges(Vec<PortRange>);

/// Ports `first..=last`; one port when they are equal. Never port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// Why a [`PortRanges`] or [`Cidrs`] value does not parse; says which item.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{item:?}: {reason}")]
pub struct ListError {
    pub item: String,
    pub reason: &'static str,
}

impl PortRanges {
    pub fn ranges(&self) -> &[PortRange] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for PortRanges {
    type Err = ListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_list(s, |item| {
            let port = |p: &str| match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err("not a port (1-65535) or a range of ports (a-b)"),
                Ok(p) => Ok(p),
            };
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => (port(item)?, port(item)?),
            };
            if first > last {
                return Err("the range ends before it starts");
            }
            Ok(PortRange { first, last })
        })
        .map(PortRanges)
    }
}

impl fmt::Display for PortRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        join(f, &self.0)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

// === Cidrs ===

/// A comma-separated list of IPv4 and IPv6 CIDRs, `10.0.0.0/8,fd00::/8`; a bare address means
/// that one host (`/32`, `/128`). Blanks around items are ignored; an empty value is an empty
/// list. Displayed with every prefix length written, in the order written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cidrs(Vec<Cidr>);

/// A network: an address with no bits set past `prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidrs {
    pub fn cidrs(&self) -> &[Cidr] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for Cidrs {
    type Err = ListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_list(s, |item| {
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a.trim(), Some(p.trim())),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| "not an IPv4 or IPv6 CIDR (address/prefix length)")?;
            let bits = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => bits,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= bits)
                    .ok_or("the prefix length is out of range")?,
            };
            if network(addr, prefix) != addr {
                return Err("has bits set past the prefix length");
            }
            Ok(Cidr { addr, prefix })
        })
        .map(Cidrs)
    }
}

impl fmt::Display for Cidrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        join(f, &self.0)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `addr` with every bit past `prefix` cleared.
fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// Each non-blank item of a comma-separated value, trimmed, read by `item`; the first that does
/// not read is the error, named.
fn parse_list<T>(
    s: &str,
    item: impl Fn(&str) -> Result<T, &'static str>,
) -> Result<Vec<T>, ListError> {
    s.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(|i| {
            item(i).map_err(|reason| ListError {
                item: i.to_owned(),
                reason,
            })
        })
        .collect()
}

fn join<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        item.fmt(f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
