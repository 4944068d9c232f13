//! Reverse references between stored objects, so that a change finds what it affects by lookup
//! instead of by scanning every object of a kind (which made bulk loads quadratic).

use std::collections::{BTreeMap, BTreeSet};

use switchyard_adapters::model::{ClusterName, Identity, ServiceName};

use super::Key;

/// `(namespace, label, value)`.
pub(super) type LabelKey = (String, String, String);

/// A one-to-many relation kept as sorted sets; empty sets are dropped so memory follows the
/// objects that exist.
#[derive(Debug)]
pub(super) struct MultiMap<K, V>(BTreeMap<K, BTreeSet<V>>);

impl<K, V> Default for MultiMap<K, V> {
    fn default() -> Self {
        MultiMap(BTreeMap::new())
    }
}

impl<K: Ord, V: Ord> MultiMap<K, V> {
    /// Adds (`present`) or removes the pair `k → v`.
    pub(super) fn set(&mut self, k: K, v: V, present: bool) {
        if present {
            self.0.entry(k).or_default().insert(v);
        } else if let Some(set) = self.0.get_mut(&k) {
            set.remove(&v);
            if set.is_empty() {
                self.0.remove(&k);
            }
        }
    }

    /// Every `v` with `k → v`, in order.
    pub(super) fn get<'a>(&'a self, k: &K) -> impl Iterator<Item = &'a V> + 'a {
        self.0.get(k).into_iter().flatten()
    }

    /// How many `v` have `k → v`.
    pub(super) fn count(&self, k: &K) -> usize {
        self.0.get(k).map_or(0, BTreeSet::len)
    }
}

/// Every reverse reference the index keeps. Splits and targets are indexed by their served
/// (last good) version, which is the one routing and access use.
#[derive(Debug, Default)]
pub(super) struct Refs {
    /// Service → the clusters published for its ports.
    pub clusters_by_service: MultiMap<ServiceName, ClusterName>,
    /// Service → its EndpointSlices.
    pub slices_by_service: MultiMap<ServiceName, Key>,
    /// Pod → the EndpointSlices whose endpoints name it (an endpoint's identity is its Pod's).
    pub slices_by_pod: MultiMap<Key, Key>,
    /// Root Service → TrafficSplits rooted there.
    pub splits_by_root: MultiMap<ServiceName, Key>,
    /// Backend Service → TrafficSplits naming it.
    pub splits_by_backend: MultiMap<ServiceName, Key>,
    /// HTTPRouteGroup → TrafficSplits naming it in `matches`.
    pub splits_by_group: MultiMap<Key, Key>,
    /// Destination identity → TrafficTargets.
    pub targets_by_destination: MultiMap<Identity, Key>,
    /// Route object (namespace, name, of any route kind) → TrafficTargets whose rules name it.
    pub targets_by_route: MultiMap<Key, Key>,
    /// Identity → Pods running as it.
    pub pods_by_identity: MultiMap<Identity, Key>,
    /// Label → Pods carrying it.
    pub pods_by_label: MultiMap<LabelKey, Key>,
    /// Label → Services whose selector requires it.
    pub services_by_selector: MultiMap<LabelKey, ServiceName>,
}
