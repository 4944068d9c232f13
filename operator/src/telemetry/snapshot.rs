//! One window's sums per proxy and subject ([`Sums`]), as one replica's store holds them: what
//! the Traffic Metrics API and `edges` answer from, what one replica sends another, and the
//! merge of several replicas' into one. Sans-IO.
//!
//! ```text
//!  replica A's Store ─snapshot(window)─┐
//!  replica B's Store ─snapshot(window)─┼─ JSON (capped) ─▶ merge ─▶ Snapshot ─▶ answer
//!  …                                   ┘
//! ```
//!
//! # The merge
//!
//! Each proxy pushes to one replica at a time, so replicas usually hold disjoint proxies and
//! the merge is their union. A proxy whose stream moved to another replica within the window
//! has series on both: their counts and histogram buckets add up, exactly as one store would
//! have recorded them, and the open-connections gauge is the newer one (the smaller
//! [`Gauge::age`](super::Gauge::age); on a tie, within one slot, the larger value), as one store keeps the latest.
//! What one store would answer and what the merge answers therefore agree on counts,
//! percentiles (computed after the merge, from the summed buckets) and edges; they differ only
//! for a gauge recorded twice within one slot by two replicas.
//!
//! A replica's own shards ([`super::shards`]) hold disjoint proxies by construction (a proxy
//! lives in the shard its id hashes to), so their merge is exactly the union: the answer one
//! store holding every proxy gives, gauges included.

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, btree_map::Entry},
    io::Write,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use switchyard_adapters::model::ProxyId;
use switchyard_proxy_config::metrics::{LATENCY_BUCKET_COUNT, RouteStatName};

use super::{
    decode::{Latency, StatPrefix, Subject, UpstreamCluster, VirtualHost},
    window::{Golden, Sums},
};

/// Why a snapshot could not be written, read or merged.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "this replica's metrics for the window are larger than {limit} bytes (the replica answer's cap)"
    )]
    TooLarge { limit: usize },
    #[error("not a replica metrics answer: {0}")]
    Invalid(String),
    #[error("windows differ: {theirs:?} there, {ours:?} here (another version of the operator?)")]
    WindowMismatch { ours: Duration, theirs: Duration },
}

/// Every series with something in one window, per proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The window's length, rounded up to the answering ring's slot (the same for the same
    /// window on every replica).
    window: Duration,
    proxies: BTreeMap<ProxyId, BTreeMap<Subject, Sums>>,
}

impl Snapshot {
    /// Nothing, over a window of `window` (already rounded).
    pub fn empty(window: Duration) -> Self {
        Snapshot {
            window,
            proxies: BTreeMap::new(),
        }
    }

    /// The window's length after rounding.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Adds one series' sums (to what the snapshot holds of it already, as [`Snapshot::merge`]).
    pub fn insert(&mut self, proxy: &ProxyId, subject: &Subject, sums: Sums) {
        let series = self.proxies.entry(proxy.clone()).or_default();
        match series.get_mut(subject) {
            Some(held) => *held = merged(held, &sums),
            None => {
                series.insert(subject.clone(), sums);
            }
        }
    }

    /// Adds another replica's snapshot of the same window (see the module docs).
    ///
    /// # Errors
    ///
    /// The windows differ (rounded by other rings): nothing is merged.
    pub fn merge(&mut self, other: Snapshot) -> Result<(), SnapshotError> {
        if other.window != self.window {
            return Err(SnapshotError::WindowMismatch {
                ours: self.window,
                theirs: other.window,
            });
        }
        for (proxy, series) in other.proxies {
            match self.proxies.entry(proxy) {
                // A proxy only the other holds (every proxy, when the snapshots are of
                // disjoint proxies, as shards' are): its series are taken as they are, which
                // is what inserting them one by one into nothing gives, without copying keys.
                Entry::Vacant(vacant) => {
                    vacant.insert(series);
                }
                Entry::Occupied(mut held) => {
                    for (subject, sums) in series {
                        add(held.get_mut(), subject, sums);
                    }
                }
            }
        }
        Ok(())
    }

    /// The proxies with a series, in name order.
    pub fn proxies(&self) -> impl Iterator<Item = &ProxyId> {
        self.proxies.keys()
    }

    /// Whether `proxy` has a series.
    pub fn has(&self, proxy: &ProxyId) -> bool {
        self.proxies.contains_key(proxy)
    }

    /// The subjects `proxy` has series of, in order.
    pub fn subjects(&self, proxy: &ProxyId) -> impl Iterator<Item = &Subject> {
        self.proxies.get(proxy).into_iter().flat_map(|s| s.keys())
    }

    /// The golden metrics of `proxies` for the subjects `include` accepts, summed.
    pub fn query<'a>(
        &self,
        proxies: impl IntoIterator<Item = &'a ProxyId>,
        mut include: impl FnMut(&Subject) -> bool,
    ) -> Golden {
        let mut out = Golden {
            window: self.window,
            ..Golden::default()
        };
        for proxy in proxies {
            for (subject, sums) in self.proxies.get(proxy).into_iter().flatten() {
                if include(subject) {
                    out.add(sums);
                }
            }
        }
        out
    }

    /// The JSON a replica answers another with, at most `limit` bytes.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::TooLarge`] past `limit`: never a truncated answer.
    pub fn to_json(&self, limit: usize) -> Result<Vec<u8>, SnapshotError> {
        let wire = WireSnapshot {
            window_ms: u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX),
            proxies: self
                .proxies
                .iter()
                .map(|(proxy, series)| WireProxy {
                    namespace: proxy.namespace.clone(),
                    pod: proxy.pod.clone(),
                    series: series
                        .iter()
                        .map(|(s, sums)| WireSeries::of(s, sums))
                        .collect(),
                })
                .collect(),
        };
        let mut out = Capped {
            bytes: Vec::new(),
            limit,
        };
        serde_json::to_writer(&mut out, &wire).map_err(|e| match e.io_error_kind() {
            Some(std::io::ErrorKind::OutOfMemory) => SnapshotError::TooLarge { limit },
            _ => SnapshotError::Invalid(e.to_string()),
        })?;
        Ok(out.bytes)
    }

    /// Reads what [`Snapshot::to_json`] wrote.
    ///
    /// # Errors
    ///
    /// Not that JSON (a field missing or of another type, a series named twice).
    pub fn from_json(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let wire: WireSnapshot =
            serde_json::from_slice(bytes).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        let mut out = Snapshot::empty(Duration::from_millis(wire.window_ms));
        for proxy in wire.proxies {
            let id = ProxyId {
                namespace: proxy.namespace,
                pod: proxy.pod,
            };
            for series in proxy.series {
                let (subject, sums) = series.into_parts()?;
                if out
                    .proxies
                    .get(&id)
                    .is_some_and(|s| s.contains_key(&subject))
                {
                    return Err(SnapshotError::Invalid(format!(
                        "proxy {id}: series {subject:?} twice"
                    )));
                }
                out.insert(&id, &subject, sums);
            }
        }
        Ok(out)
    }
}

/// Adds one series' sums to a proxy's, as [`Snapshot::insert`].
fn add(series: &mut BTreeMap<Subject, Sums>, subject: Subject, sums: Sums) {
    match series.entry(subject) {
        Entry::Occupied(mut held) => {
            let both = merged(held.get(), &sums);
            held.insert(both);
        }
        Entry::Vacant(vacant) => {
            vacant.insert(sums);
        }
    }
}

/// Two replicas' sums of one series (see the module docs).
fn merged(a: &Sums, b: &Sums) -> Sums {
    let add = |x: u64, y: u64| x.saturating_add(y);
    let mut out = *a;
    for (sum, &n) in out.requests.iter_mut().zip(&b.requests) {
        *sum = add(*sum, n);
    }
    for (sum, &n) in out.latency.buckets.iter_mut().zip(&b.latency.buckets) {
        *sum = add(*sum, n);
    }
    out.connections_opened = add(a.connections_opened, b.connections_opened);
    out.bytes_received = add(a.bytes_received, b.bytes_received);
    out.bytes_sent = add(a.bytes_sent, b.bytes_sent);
    out.gauge = match (a.gauge, b.gauge) {
        (Some(x), Some(y)) => Some(
            if (y.age, std::cmp::Reverse(y.value)) < (x.age, std::cmp::Reverse(x.value)) {
                y
            } else {
                x
            },
        ),
        (x, y) => x.or(y),
    };
    out
}

/// A writer that refuses to grow past `limit` bytes.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            return Err(std::io::ErrorKind::OutOfMemory.into());
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// === the wire ===

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSnapshot {
    window_ms: u64,
    proxies: Vec<WireProxy>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireProxy {
    namespace: String,
    pod: String,
    series: Vec<WireSeries>,
}

/// One series; `upstream`, `listener`, or `virtual_host` with `route` names its subject.
/// Zeros are left out.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSeries {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listener: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    virtual_host: Option<String>,
    /// A [`RouteStatName`] as its `stat_prefix` writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    route: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    requests: [u64; 5],
    #[serde(default, skip_serializing_if = "is_zero")]
    latency: [u64; LATENCY_BUCKET_COUNT],
    #[serde(default, skip_serializing_if = "is_zero")]
    opened: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gauge: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gauge_age_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    received: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    sent: u64,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl WireSeries {
    fn of(subject: &Subject, sums: &Sums) -> Self {
        let (mut upstream, mut listener, mut virtual_host, mut route) = (None, None, None, None);
        match subject {
            Subject::Upstream(c) => upstream = Some(c.as_str().to_owned()),
            Subject::Listener(p) => listener = Some(p.as_str().to_owned()),
            Subject::Route(vhost, name) => {
                virtual_host = Some(vhost.as_str().to_owned());
                route = Some(name.to_string());
            }
        }
        WireSeries {
            upstream,
            listener,
            virtual_host,
            route,
            requests: sums.requests,
            latency: sums.latency.buckets,
            opened: sums.connections_opened,
            gauge: sums.gauge.map(|g| g.value),
            gauge_age_ms: sums
                .gauge
                .map(|g| u64::try_from(g.age.as_millis()).unwrap_or(u64::MAX)),
            received: sums.bytes_received,
            sent: sums.bytes_sent,
        }
    }

    fn into_parts(self) -> Result<(Subject, Sums), SnapshotError> {
        let subject = match (self.upstream, self.listener, self.virtual_host, self.route) {
            (Some(c), None, None, None) => Subject::Upstream(UpstreamCluster::new(c)),
            (None, Some(p), None, None) => Subject::Listener(StatPrefix::new(p)),
            (None, None, Some(vhost), Some(route)) => {
                let Some(name) = RouteStatName::parse(&route) else {
                    return Err(SnapshotError::Invalid(format!(
                        "series route {route:?}: not a route stat name"
                    )));
                };
                Subject::Route(VirtualHost::new(vhost), name)
            }
            _ => {
                return Err(SnapshotError::Invalid(
                    "a series names exactly one of upstream, listener, or virtual_host with route"
                        .into(),
                ));
            }
        };
        let gauge = match (self.gauge, self.gauge_age_ms) {
            (Some(value), Some(age)) => Some(super::window::Gauge {
                value,
                age: Duration::from_millis(age),
            }),
            (None, None) => None,
            _ => {
                return Err(SnapshotError::Invalid(format!(
                    "series {subject:?}: gauge and gauge_age_ms go together"
                )));
            }
        };
        Ok((
            subject,
            Sums {
                requests: self.requests,
                latency: Latency {
                    buckets: self.latency,
                },
                connections_opened: self.opened,
                gauge,
                bytes_received: self.received,
                bytes_sent: self.sent,
            },
        ))
    }
}
