//! The skip lists of interception, as the `switchyard.dev/skip-*` annotations and
//! `switchyard proxy-init`'s flags write them: ports and ranges (`80,443,8000-8010`) and CIDRs
//! (`10.0.0.0/8,fd00::/8`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A port, or an inclusive range of ports (`8000-8010`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

/// Ports and ranges, sorted, with overlapping and adjacent ranges merged (so the same set always
/// gives the same rules, however it was written).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortList(Vec<PortRange>);

/// An IPv4 or IPv6 network; the address has no bits set past the prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// CIDRs of both families, sorted and without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CidrList(Vec<Cidr>);

/// An element of a list that does not parse: names the list (the annotation or flag it came
/// from), the element, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{list}: {element:?} {reason}")]
pub struct ListError {
    /// The annotation (`switchyard.dev/skip-outbound-ports`) or flag (`--skip-outbound-ports`).
    pub list: String,
    /// The element as written (trimmed).
    pub element: String,
    /// What is wrong, a phrase that follows the element.
    pub reason: &'static str,
}

// === impl PortRange ===

impl PortRange {
    /// The ports `first..=last`; `None` if `first` is 0 or after `last`.
    pub fn new(first: u16, last: u16) -> Option<Self> {
        (first != 0 && first <= last).then_some(PortRange { first, last })
    }

    /// One port; `None` for 0.
    pub fn port(port: u16) -> Option<Self> {
        Self::new(port, port)
    }

    pub fn first(self) -> u16 {
        self.first
    }

    pub fn last(self) -> u16 {
        self.last
    }

    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// How many of the `multiport` match's 15 slots this takes: a range takes two.
    pub(crate) fn multiport_slots(self) -> usize {
        if self.first == self.last { 1 } else { 2 }
    }

    /// As `multiport --dports` writes it: `80` or `8000:8010`.
    pub(crate) fn iptables(self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}:{}", self.first, self.last)
        }
    }

    fn parse(element: &str) -> Result<Self, &'static str> {
        const NOT_A_PORT: &str = "is not a port (1-65535) or a range of ports (8000-8010)";
        let port = |s: &str| -> Result<u16, &'static str> {
            match s.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(NOT_A_PORT),
                Ok(p) => Ok(p),
            }
        };
        match element.split_once('-') {
            None => Ok(PortRange::port(port(element)?).ok_or(NOT_A_PORT)?),
            Some((first, last)) => PortRange::new(port(first)?, port(last)?)
                .ok_or("is a range whose first port is after its last"),
        }
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

// === impl PortList ===

impl PortList {
    /// Parses a comma-separated list of ports and ranges (`80,443,8000-8010`; spaces around
    /// elements are allowed; an empty or all-blank value is the empty list). `list` names where
    /// the value came from, for the error.
    pub fn parse(list: &str, value: &str) -> Result<Self, ListError> {
        elements(list, value, PortRange::parse).map(PortList::from_iter)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = PortRange> + '_ {
        self.0.iter().copied()
    }

    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(port))
    }

    /// The union of this list and `other`.
    pub fn union(&self, other: &PortList) -> PortList {
        self.iter().chain(other.iter()).collect()
    }

    /// Groups that each fit one `multiport` match (at most 15 slots, a range taking two), as
    /// `--dports` values: `80,443,8000:8010`.
    pub(crate) fn multiport_groups(&self) -> Vec<String> {
        const SLOTS: usize = 15;
        let mut groups: Vec<(usize, Vec<String>)> = Vec::new();
        for range in self.iter() {
            match groups.last_mut() {
                Some((used, items)) if *used + range.multiport_slots() <= SLOTS => {
                    *used += range.multiport_slots();
                    items.push(range.iptables());
                }
                _ => groups.push((range.multiport_slots(), vec![range.iptables()])),
            }
        }
        groups
            .into_iter()
            .map(|(_, items)| items.join(","))
            .collect()
    }
}

impl FromIterator<PortRange> for PortList {
    fn from_iter<I: IntoIterator<Item = PortRange>>(iter: I) -> Self {
        let mut ranges: Vec<PortRange> = iter.into_iter().collect();
        ranges.sort();
        let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(r.first) <= u32::from(last.last) + 1 => {
                    last.last = last.last.max(r.last);
                }
                _ => merged.push(r),
            }
        }
        PortList(merged)
    }
}

/// As the annotations write it: `80,443,8000-8010`.
impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        comma_separated(f, &self.0)
    }
}

// === impl Cidr ===

impl Cidr {
    /// `network/prefix`, with the bits past the prefix cleared (as iptables does); `None` when
    /// the prefix is longer than the address.
    pub fn new(address: IpAddr, prefix: u8) -> Option<Self> {
        let network = match address {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => return None,
        };
        Some(Cidr { network, prefix })
    }

    pub fn network(self) -> IpAddr {
        self.network
    }

    pub fn prefix(self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(self) -> bool {
        self.network.is_ipv4()
    }

    fn parse(element: &str) -> Result<Self, &'static str> {
        const NOT_A_CIDR: &str = "is not an IP address or a CIDR (10.0.0.0/8, fd00::/8)";
        let (address, prefix) = match element.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (element, None),
        };
        let address: IpAddr = address.trim().parse().map_err(|_| NOT_A_CIDR)?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.trim().parse::<u8>().map_err(|_| NOT_A_CIDR)?,
        };
        Cidr::new(address, prefix).ok_or(if max == 32 {
            "has a prefix longer than 32 bits"
        } else {
            "has a prefix longer than 128 bits"
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

// === impl CidrList ===

impl CidrList {
    /// Parses a comma-separated list of CIDRs of either family (`10.0.0.0/8, fd00::/8`; an
    /// address alone is a /32 or /128; an empty value is the empty list). `list` names where
    /// the value came from, for the error.
    pub fn parse(list: &str, value: &str) -> Result<Self, ListError> {
        elements(list, value, Cidr::parse).map(CidrList::from_iter)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Cidr> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<Cidr> for CidrList {
    fn from_iter<I: IntoIterator<Item = Cidr>>(iter: I) -> Self {
        let mut cidrs: Vec<Cidr> = iter.into_iter().collect();
        cidrs.sort();
        cidrs.dedup();
        CidrList(cidrs)
    }
}

/// As the annotations write it: `10.0.0.0/8,fd00::/8`.
impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        comma_separated(f, &self.0)
    }
}

fn comma_separated(f: &mut fmt::Formatter<'_>, items: &[impl fmt::Display]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// The elements of a comma-separated `value`, each parsed by `parse`.
fn elements<T>(
    list: &str,
    value: &str,
    parse: impl Fn(&str) -> Result<T, &'static str>,
) -> Result<Vec<T>, ListError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|element| {
            let element = element.trim();
            let reason = if element.is_empty() {
                Err("is empty (elements are separated by single commas)")
            } else {
                parse(element)
            };
            reason.map_err(|reason| ListError {
                list: list.to_owned(),
                element: element.to_owned(),
                reason,
            })
        })
        .collect()
}
