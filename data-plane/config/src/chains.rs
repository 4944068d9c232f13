//! Filter chain matches, and Envoy's choice among them for one connection.
//!
//! Envoy files chains into a tree with one level per match field, and walks it: destination
//! port (exact, else unset), destination IP (longest `prefix_ranges` entry, unset being
//! `0.0.0.0/0` and `::/0`), server names (the proxy has none), transport protocol (exact,
//! else unset), application protocols (one listed, else unset). At each level it keeps the
//! most specific candidates that exist and never comes back: when those fail at a later
//! level, the connection takes the `default_filter_chain`, or is closed without one, even if a
//! less specific branch would have matched. [`ChainSelector`] is that tree; a lookup costs a
//! hash lookup per level, and one per distinct prefix length at the IP level, however many
//! chains there are.
//!
//! The levels are exposed one by one ([`ChainSelector::by_destination`],
//! [`TransportLevel::by_transport`], [`ApplicationLevel::by_application`]), so the proxy
//! inspects a connection's first bytes only when the candidates it is left with depend on
//! them.

#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr},
};

/// A chain's `filter_chain_match`, in the fields the proxy implements; the default
/// (everything unset) takes any connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainMatch {
    pub destination_port: Option<u16>,
    /// The destination address is in one of these; empty for any address.
    pub prefix_ranges: Vec<CidrRange>,
    pub transport_protocol: Option<TransportProtocol>,
    /// The connection's application protocol is one of these; empty for any, or none.
    pub application_protocols: Vec<AppProtocol>,
}

/// An address range: an address, masked to its prefix length as Envoy masks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CidrRange {
    address: IpAddr,
    len: u8,
}

/// What a connection's first bytes are, as `transport_protocol` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportProtocol {
    /// `tls`: a TLS ClientHello.
    Tls,
    /// `raw_buffer`: anything else.
    RawBuffer,
}

/// An application protocol the HTTP inspector recognizes, as `application_protocols` names
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// `http/1.0`: an HTTP/1 request line of any version but 1.1.
    Http10,
    /// `http/1.1`.
    Http11,
    /// `h2c`: the HTTP/2 connection preface, in plaintext.
    H2c,
}

/// A set of ports, as sorted, disjoint, non-adjacent half-open ranges within `0..65536`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<(u32, u32)>,
}

/// Chains by their matches, for Envoy's selection: indices into the listener's chains.
#[derive(Clone, Debug, Default)]
pub struct ChainSelector {
    by_port: HashMap<u16, AddressLevel>,
    any_port: Option<AddressLevel>,
    default: Option<usize>,
}

/// Two chains whose matches overlap exactly: Envoy refuses such a listener, since which of
/// them takes a connection would be undefined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DuplicateMatch {
    /// The later chain.
    pub chain: usize,
    /// The chain it repeats (the same one when a chain lists one match twice).
    pub other: usize,
}

/// The destination IP level: candidates by prefix, per family.
#[derive(Clone, Debug, Default)]
struct AddressLevel {
    v4: Prefixes,
    v6: Prefixes,
}

/// The transport protocol level: the candidates left once port and IP chose theirs.
#[derive(Clone, Debug, Default)]
pub struct TransportLevel {
    tls: Option<ApplicationLevel>,
    raw_buffer: Option<ApplicationLevel>,
    any: Option<ApplicationLevel>,
}

/// The application protocol level: at most one chain per protocol, and one for the rest.
#[derive(Clone, Debug, Default)]
pub struct ApplicationLevel {
    /// By [`AppProtocol::index`].
    by_protocol: [Option<usize>; 3],
    any: Option<usize>,
}

/// Prefixes of one family by length, longest first; addresses as integers.
#[derive(Clone, Debug, Default)]
struct Prefixes {
    by_len: Vec<(u8, HashMap<u128, TransportLevel>)>,
}

// === impl ChainMatch ===

impl ChainMatch {
    /// Any connection: no field set.
    pub const ANY: ChainMatch = ChainMatch {
        destination_port: None,
        prefix_ranges: Vec::new(),
        transport_protocol: None,
        application_protocols: Vec::new(),
    };
}

// === impl CidrRange ===

impl CidrRange {
    /// The range of `address` masked to `len` bits; `None` when `len` is longer than the
    /// address.
    pub fn new(address: IpAddr, len: u8) -> Option<CidrRange> {
        let (bits, width) = bits(address.to_canonical());
        if len > width {
            return None;
        }
        let masked = mask(bits, width, len);
        let address = match address.to_canonical() {
            IpAddr::V4(_) => IpAddr::V4(u32::try_from(masked).ok()?.into()),
            IpAddr::V6(_) => IpAddr::V6(masked.into()),
        };
        Some(CidrRange { address, len })
    }

    /// The first address of the range.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, width) = bits(self.address);
        let (b, other) = bits(ip.to_canonical());
        width == other && mask(b, width, self.len) == a
    }
}

impl fmt::Display for CidrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.len)
    }
}

/// An address as an integer, and its width in bits.
fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

/// The first `len` of `width` bits.
fn mask(bits: u128, width: u8, len: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let host = u32::from(width.saturating_sub(len));
    bits >> host << host
}

// === impl TransportProtocol ===

impl TransportProtocol {
    /// The name `transport_protocol` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportProtocol::Tls => "tls",
            TransportProtocol::RawBuffer => "raw_buffer",
        }
    }
}

// === impl AppProtocol ===

impl AppProtocol {
    pub const ALL: [AppProtocol; 3] = [AppProtocol::Http10, AppProtocol::Http11, AppProtocol::H2c];

    /// The name `application_protocols` uses (and the HTTP inspector sets).
    pub fn as_str(self) -> &'static str {
        match self {
            AppProtocol::Http10 => "http/1.0",
            AppProtocol::Http11 => "http/1.1",
            AppProtocol::H2c => "h2c",
        }
    }

    /// The protocol of a name `application_protocols` may hold.
    pub fn from_name(name: &str) -> Option<AppProtocol> {
        AppProtocol::ALL.into_iter().find(|p| p.as_str() == name)
    }

    fn index(self) -> usize {
        match self {
            AppProtocol::Http10 => 0,
            AppProtocol::Http11 => 1,
            AppProtocol::H2c => 2,
        }
    }
}

// === impl PortSet ===

/// One past the last port.
const PORTS_END: u32 = 1 << 16;

impl PortSet {
    /// Every port.
    pub fn all() -> PortSet {
        PortSet {
            ranges: vec![(0, PORTS_END)],
        }
    }

    /// No port.
    pub fn empty() -> PortSet {
        PortSet { ranges: Vec::new() }
    }

    /// The ports in `start..end`, clipped to the ports there are.
    pub fn range(start: u32, end: u32) -> PortSet {
        Self::normalized(vec![(start, end.min(PORTS_END))])
    }

    pub fn union(&self, other: &PortSet) -> PortSet {
        Self::normalized(self.ranges.iter().chain(&other.ranges).copied().collect())
    }

    /// The ports not in this set.
    pub fn complement(&self) -> PortSet {
        let mut ranges = Vec::with_capacity(self.ranges.len() + 1);
        let mut at = 0;
        for &(start, end) in &self.ranges {
            if start > at {
                ranges.push((at, start));
            }
            at = end;
        }
        if at < PORTS_END {
            ranges.push((at, PORTS_END));
        }
        PortSet { ranges }
    }

    pub fn contains(&self, port: u16) -> bool {
        let port = u32::from(port);
        self.ranges
            .binary_search_by(|&(start, end)| {
                if end <= port {
                    std::cmp::Ordering::Less
                } else if start > port {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }

    /// The ranges as first and last port, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        self.ranges.iter().map(|&(start, end)| {
            (
                u16::try_from(start).unwrap_or(u16::MAX),
                u16::try_from(end - 1).unwrap_or(u16::MAX),
            )
        })
    }

    fn normalized(mut ranges: Vec<(u32, u32)>) -> PortSet {
        ranges.retain(|(start, end)| start < end);
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        PortSet { ranges: merged }
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (first, last)) in self.ranges().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
        }
        Ok(())
    }
}

// === impl ChainSelector ===

impl ChainSelector {
    /// Files chains by their matches (`matches`, in chain order); `default` is the index of
    /// the default chain, which takes what the others leave. Fails on two identical matches,
    /// as Envoy does.
    pub fn build<'a>(
        matches: impl IntoIterator<Item = &'a ChainMatch>,
        default: Option<usize>,
    ) -> Result<ChainSelector, DuplicateMatch> {
        let mut selector = ChainSelector {
            default,
            ..ChainSelector::default()
        };
        for (chain, m) in matches.into_iter().enumerate() {
            let level = match m.destination_port {
                Some(port) => selector.by_port.entry(port).or_default(),
                None => selector.any_port.get_or_insert_default(),
            };
            if m.prefix_ranges.is_empty() {
                for any in [
                    CidrRange::new(IpAddr::from([0u8; 4]), 0),
                    CidrRange::new(IpAddr::from([0u8; 16]), 0),
                ]
                .into_iter()
                .flatten()
                {
                    level.insert(any).insert(chain, m)?;
                }
            }
            for range in &m.prefix_ranges {
                level.insert(*range).insert(chain, m)?;
            }
        }
        Ok(selector)
    }

    /// The candidates after the destination port and IP levels; `None` when no chain is left
    /// (the default chain then takes the connection).
    pub fn by_destination(&self, destination: SocketAddr) -> Option<&TransportLevel> {
        let level = match self.by_port.get(&destination.port()) {
            Some(level) => level,
            None => self.any_port.as_ref()?,
        };
        level.lookup(destination.ip())
    }

    /// The default chain's index.
    pub fn default_chain(&self) -> Option<usize> {
        self.default
    }

    /// The chain a connection takes, all it is known about it: the most specific candidates
    /// level by level, else the default chain; `None` when it is to be closed.
    pub fn select(
        &self,
        destination: SocketAddr,
        transport: TransportProtocol,
        application: Option<AppProtocol>,
    ) -> Option<usize> {
        self.by_destination(destination)
            .and_then(|t| t.by_transport(transport))
            .and_then(|a| a.by_application(application))
            .or(self.default)
    }

    /// Whether some chain matches on the transport protocol: the listener detects TLS.
    pub fn matches_transport(&self) -> bool {
        self.levels()
            .any(|t| t.tls.is_some() || t.raw_buffer.is_some())
    }

    /// Whether some chain matches on application protocols.
    pub fn matches_application(&self) -> bool {
        self.levels()
            .flat_map(|t| [&t.tls, &t.raw_buffer, &t.any])
            .flatten()
            .any(ApplicationLevel::detects)
    }

    /// Every transport level of the tree.
    fn levels(&self) -> impl Iterator<Item = &TransportLevel> {
        self.by_port
            .values()
            .chain(&self.any_port)
            .flat_map(|a| [&a.v4, &a.v6])
            .flat_map(|p| &p.by_len)
            .flat_map(|(_, by_address)| by_address.values())
    }
}

// === impl AddressLevel ===

impl AddressLevel {
    /// The transport level of a range, made if need be.
    fn insert(&mut self, range: CidrRange) -> &mut TransportLevel {
        let (bits, _) = bits(range.address);
        let prefixes = match range.address {
            IpAddr::V4(_) => &mut self.v4,
            IpAddr::V6(_) => &mut self.v6,
        };
        let at = match prefixes
            .by_len
            .binary_search_by(|(len, _)| range.len.cmp(len))
        {
            Ok(at) => at,
            Err(at) => {
                prefixes.by_len.insert(at, (range.len, HashMap::new()));
                at
            }
        };
        prefixes.by_len[at].1.entry(bits).or_default()
    }

    /// The longest prefix holding `ip`.
    fn lookup(&self, ip: IpAddr) -> Option<&TransportLevel> {
        let ip = ip.to_canonical();
        let (bits, width) = bits(ip);
        let prefixes = match ip {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        };
        prefixes
            .by_len
            .iter()
            .find_map(|(len, by_address)| by_address.get(&mask(bits, width, *len)))
    }
}

// === impl TransportLevel ===

impl TransportLevel {
    /// Whether the candidates depend on the transport protocol, which takes a look at the
    /// first bytes.
    pub fn detects(&self) -> bool {
        self.tls.is_some() || self.raw_buffer.is_some()
    }

    /// The candidates for a transport protocol: those that name it, else those that name
    /// none.
    pub fn by_transport(&self, transport: TransportProtocol) -> Option<&ApplicationLevel> {
        let exact = match transport {
            TransportProtocol::Tls => self.tls.as_ref(),
            TransportProtocol::RawBuffer => self.raw_buffer.as_ref(),
        };
        exact.or(self.any.as_ref())
    }

    fn insert(&mut self, chain: usize, m: &ChainMatch) -> Result<(), DuplicateMatch> {
        let level = match m.transport_protocol {
            Some(TransportProtocol::Tls) => &mut self.tls,
            Some(TransportProtocol::RawBuffer) => &mut self.raw_buffer,
            None => &mut self.any,
        };
        level.get_or_insert_with(Default::default).insert(chain, m)
    }
}

// === impl ApplicationLevel ===

impl ApplicationLevel {
    /// Whether the candidates depend on the application protocol, which the HTTP inspector
    /// finds.
    pub fn detects(&self) -> bool {
        self.by_protocol.iter().any(Option::is_some)
    }

    /// The chain for an application protocol: the one that lists it, else the one that lists
    /// none.
    pub fn by_application(&self, application: Option<AppProtocol>) -> Option<usize> {
        application
            .and_then(|p| self.by_protocol[p.index()])
            .or(self.any)
    }

    fn insert(&mut self, chain: usize, m: &ChainMatch) -> Result<(), DuplicateMatch> {
        let put = |slot: &mut Option<usize>| match *slot {
            Some(other) => Err(DuplicateMatch { chain, other }),
            None => {
                *slot = Some(chain);
                Ok(())
            }
        };
        if m.application_protocols.is_empty() {
            return put(&mut self.any);
        }
        for protocol in &m.application_protocols {
            put(&mut self.by_protocol[protocol.index()])?;
        }
        Ok(())
    }
}
