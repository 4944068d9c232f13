//! The certificates the mesh needs right now: issued on demand, rotated before they expire.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use switchyard_adapters::model::Identity;

use super::{Error, MeshCa, WorkloadCert, validate_workload_lifetime};

/// One workload certificate per identity that needs one, signed by the mesh CA.
///
/// The store does no IO and reads no clock: the caller calls [`Certificates::sync`] whenever the
/// set of identities changes and again at [`Certificates::next_renewal`].
#[derive(Debug)]
pub struct Certificates {
    ca: MeshCa,
    certs: BTreeMap<Identity, Arc<WorkloadCert>>,
}

/// What one [`Certificates::sync`] did.
#[derive(Debug, Default)]
pub struct Changes {
    /// Identities that got a new certificate: first issue, rotation, or a changed lifetime.
    pub issued: BTreeSet<Identity>,
    /// Identities whose certificate was dropped: nothing needs them any more, or their renewal
    /// failed after they expired.
    pub removed: BTreeSet<Identity>,
    /// Identities that need a certificate but did not get one. A still-valid previous
    /// certificate is kept; the caller should retry after a back-off.
    pub failed: BTreeMap<Identity, Error>,
}

// === impl Certificates ===

impl Certificates {
    pub fn new(ca: MeshCa) -> Self {
        Certificates {
            ca,
            certs: BTreeMap::new(),
        }
    }

    /// The CA, for its trust bundle.
    pub fn ca(&self) -> &MeshCa {
        &self.ca
    }

    pub fn get(&self, identity: &Identity) -> Option<&Arc<WorkloadCert>> {
        self.certs.get(identity)
    }

    /// Every certificate, ordered by identity.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<WorkloadCert>> {
        self.certs.values()
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Brings the store in line with `wanted`, the identities that need a certificate now:
    /// issues certificates for new identities, reissues those at or after their
    /// [`WorkloadCert::renew_at`] or issued with another lifetime, and drops those no longer
    /// wanted. `lifetime` is checked as documented on [`super::CaConfig::workload_lifetime`];
    /// an invalid one is the only error, and nothing changes then.
    pub fn sync<'a>(
        &mut self,
        wanted: impl IntoIterator<Item = &'a Identity>,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Changes, Error> {
        validate_workload_lifetime(lifetime)?;
        let wanted: BTreeSet<&Identity> = wanted.into_iter().collect();
        let mut changes = Changes::default();

        self.certs.retain(|identity, _| {
            let keep = wanted.contains(identity);
            if !keep {
                changes.removed.insert(identity.clone());
            }
            keep
        });

        for identity in wanted {
            let due = match self.certs.get(identity) {
                Some(cert) => now >= cert.renew_at() || cert.lifetime() != lifetime,
                None => true,
            };
            if !due {
                continue;
            }
            match self.ca.issue(identity, lifetime, now) {
                Ok(cert) => {
                    self.certs.insert(identity.clone(), Arc::new(cert));
                    changes.issued.insert(identity.clone());
                }
                Err(error) => {
                    if self
                        .certs
                        .get(identity)
                        .is_some_and(|old| now >= old.not_after())
                    {
                        self.certs.remove(identity);
                        changes.removed.insert(identity.clone());
                    }
                    changes.failed.insert(identity.clone(), error);
                }
            }
        }
        Ok(changes)
    }

    /// The earliest [`WorkloadCert::renew_at`]: call [`Certificates::sync`] again then. `None`
    /// when the store is empty. It may be in the past after a failed renewal; back off then.
    pub fn next_renewal(&self) -> Option<SystemTime> {
        self.certs.values().map(|cert| cert.renew_at()).min()
    }
}

// === impl Changes ===

impl Changes {
    /// Whether nothing was issued, removed or failed.
    pub fn is_empty(&self) -> bool {
        self.issued.is_empty() && self.removed.is_empty() && self.failed.is_empty()
    }

    /// The identities whose certificate changed (issued or removed), in order.
    pub fn changed(&self) -> BTreeSet<&Identity> {
        self.issued.iter().chain(&self.removed).collect()
    }
}
