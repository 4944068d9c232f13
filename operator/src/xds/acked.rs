//! What a proxy runs, per xDS type: the resources of the last response it acknowledged, as
//! `switchyard proxy-config` shows them. The SotW and the delta state machines both record
//! their responses, ACKs and NACKs here, so the two protocols cannot disagree about it.
//!
//! ```text
//!  respond ──▶ sent(change) ──▶ in flight ──ACK──▶ applied (what the proxy runs)
//!                                    └──NACK──▶ rejected (version and reason), applied stays
//! ```
//!
//! Resources are the snapshot's own `Arc`s: a stream holds pointers, never copies. `applied`
//! is replaced whole on an ACK (never changed in place), so the status table shares it with an
//! `Arc` clone.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use super::snapshot::{Resources, Version, VersionedResource};

#[cfg(test)]
mod tests;

/// The resources of one type a proxy runs (or would run, for a response in flight), by name.
#[derive(Debug, Default)]
pub struct Applied {
    resources: BTreeMap<Arc<str>, Arc<VersionedResource>>,
}

/// A response the proxy rejected: the version it would have made and the proxy's reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub version: Version,
    pub message: String,
}

/// What one response changed, as its protocol says it.
#[derive(Debug)]
pub(crate) enum Change<'a> {
    /// State of the world: the response holds every resource of the type.
    Replace(&'a [Arc<VersionedResource>]),
    /// Delta: the response adds or replaces `resources` and removes `removed`.
    Update {
        resources: &'a [Arc<VersionedResource>],
        removed: &'a BTreeSet<Arc<str>>,
    },
}

/// One type of one stream: what the proxy acknowledged, what is in flight, what it rejected.
#[derive(Debug, Default)]
pub(crate) struct AckedConfig {
    /// `None` until the proxy has acknowledged (or was found holding) something of the type.
    applied: Option<Arc<Applied>>,
    /// The unacknowledged response, applied to `applied`: what an ACK makes current.
    in_flight: Option<Applied>,
    /// The last rejection, until a later response is acknowledged.
    rejected: Option<Rejected>,
    /// Delta: versions a reconnecting proxy says it holds, until the snapshot shows whether
    /// they are ours (then it runs those resources) or not (then they are sent anew).
    held_before: BTreeMap<Arc<str>, Version>,
}

/// A type as the status table keeps it: cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct AckedView {
    pub applied: Option<Arc<Applied>>,
    pub rejected: Option<Rejected>,
}

// === impl Applied ===

impl Applied {
    fn from_resources<'a>(resources: impl IntoIterator<Item = &'a Arc<VersionedResource>>) -> Self {
        Applied {
            resources: resources
                .into_iter()
                .map(|r| (r.shared_name().clone(), r.clone()))
                .collect(),
        }
    }

    /// The type's version: the hash over names and resource versions, in name order, which is
    /// what a SotW response's `version_info` carries for the same set.
    pub fn version(&self) -> Version {
        Version::combine(self.resources.iter().map(|(n, r)| (&**n, r.version())))
    }

    /// In name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<VersionedResource>> {
        self.resources.values()
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    fn apply(&self, change: &Change<'_>) -> Applied {
        match change {
            Change::Replace(resources) => Applied::from_resources(resources.iter()),
            Change::Update { resources, removed } => {
                let mut next = self.resources.clone();
                for name in removed.iter() {
                    next.remove(name);
                }
                for r in resources.iter() {
                    next.insert(r.shared_name().clone(), r.clone());
                }
                Applied { resources: next }
            }
        }
    }
}

// === impl AckedConfig ===

impl AckedConfig {
    /// A response went out; it is in flight until the proxy answers it.
    pub(crate) fn sent(&mut self, change: Change<'_>) {
        let base = self
            .applied
            .as_deref()
            .map_or_else(|| Applied::default().apply(&change), |a| a.apply(&change));
        self.in_flight = Some(base);
    }

    /// The proxy acknowledged the response in flight: it runs it now.
    pub(crate) fn acked(&mut self) {
        if let Some(applied) = self.in_flight.take() {
            self.applied = Some(Arc::new(applied));
            self.rejected = None;
        }
    }

    /// The proxy rejected the response in flight and keeps running what it had.
    pub(crate) fn nacked(&mut self, message: &str) {
        if let Some(rejected) = self.in_flight.take() {
            self.rejected = Some(Rejected {
                version: rejected.version(),
                message: message.to_owned(),
            });
        }
    }

    /// The proxy asked afresh without answering the response in flight; whether it applied
    /// it is unknown, so it does not count.
    pub(crate) fn forget_in_flight(&mut self) {
        self.in_flight = None;
    }

    /// SotW: a reconnecting proxy already holds exactly these (its `version_info` matched).
    pub(crate) fn adopt(&mut self, resources: &[Arc<VersionedResource>]) {
        self.applied = Some(Arc::new(Applied::from_resources(resources.iter())));
        self.in_flight = None;
    }

    /// Delta: a reconnecting proxy says it holds `name` at `version`
    /// (`initial_resource_versions`); [`AckedConfig::confirm_held`] settles it.
    pub(crate) fn held_before(&mut self, name: Arc<str>, version: Version) {
        self.held_before.insert(name, version);
    }

    /// Delta: the resources a reconnecting proxy holds at the snapshot's very version are
    /// what it runs (they are never resent); the others will be sent, so they are dropped.
    pub(crate) fn confirm_held(&mut self, available: &Resources) {
        if self.held_before.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held_before);
        let confirmed: Vec<&Arc<VersionedResource>> = held
            .iter()
            .filter_map(|(name, version)| available.get(name).filter(|r| r.version() == *version))
            .collect();
        if confirmed.is_empty() {
            return;
        }
        let mut resources = self
            .applied
            .as_ref()
            .map(|a| a.resources.clone())
            .unwrap_or_default();
        for r in confirmed {
            resources.insert(r.shared_name().clone(), r.clone());
        }
        self.applied = Some(Arc::new(Applied { resources }));
    }

    /// The proxy stopped asking for names `keep` refuses: it drops its copies.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let drops = |a: &Applied| a.resources.keys().any(|n| !keep(n));
        if let Some(applied) = &self.applied
            && drops(applied)
        {
            let mut resources = applied.resources.clone();
            resources.retain(|n, _| keep(n));
            self.applied = Some(Arc::new(Applied { resources }));
        }
        if let Some(in_flight) = &mut self.in_flight {
            in_flight.resources.retain(|n, _| keep(n));
        }
        self.held_before.retain(|n, _| keep(n));
    }

    /// What the status table keeps.
    pub(crate) fn view(&self) -> AckedView {
        AckedView {
            applied: self.applied.clone(),
            rejected: self.rejected.clone(),
        }
    }
}

// === impl AckedView ===

impl PartialEq for AckedView {
    /// Same `Arc` and same rejection: nothing to copy into the status table.
    fn eq(&self, other: &Self) -> bool {
        let same_applied = match (&self.applied, &other.applied) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_applied && self.rejected == other.rejected
    }
}
