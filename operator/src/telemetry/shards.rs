//! Every proxy's windows split into shards by a hash of its id, each behind its own lock, so
//! that a query over every proxy holds any lock a push needs for one shard's part only.
//!
//! ```text
//!   push(proxy, at) ─hash(proxy) % n─▶ lock shard i ─▶ Store i: record (its proxies only)
//!                                                        │ a new proxy reserves one of
//!                                                        ▼ max_proxies first
//!                                               kept: AtomicUsize (every shard's proxies)
//!
//!   query(now, window) ─▶ lock 0: Store 0 snapshot, unlock ─┐
//!                         lock 1: Store 1 snapshot, unlock ─┼─▶ Snapshot::merge (no lock held)
//!                         …       lock n-1 …               ─┘        ─▶ Snapshot
//! ```
//!
//! # Why
//!
//! With one lock over one [`Store`], a query over every proxy held the lock every push needs
//! for as long as it read every series: 16 ms at 1,000 proxies, growing with them, with the
//! pushing tokio workers blocked all that time. Here a push locks the shard of its proxy, and a
//! query locks one shard at a time for that shard's part of the snapshot; the merge of the
//! parts runs under no lock. A lock is therefore held by a query for one shard's proxies, and
//! the shards are counted from the cap, not from the proxies there are ([`shards_for`]: one
//! per [`PROXIES_PER_SHARD`] proxies of [`Limits::max_proxies`], at least [`MIN_SHARDS`]):
//! about 64 proxies a shard on average at the cap, fewer below it, whatever the number of
//! proxies. The hash is keyed per process ([`RandomState`]): pod names cannot be chosen to
//! pile into one shard.
//!
//! Finer locks (one per proxy, under a map's lock) would bound a query's hold by one proxy's
//! series, but every push would take two locks and the map's lock would still be held by a
//! query for every proxy's handle; shards keep one lock a push and keep [`Store`] whole.
//!
//! # Limits, as one store keeps them
//!
//! - [`Limits::max_proxies`] is over every shard: `kept` counts the proxies of all shards, and
//!   a proxy new to its shard reserves one under the cap (compare and swap) before it is
//!   inserted, so shards never hold more together, and no shard refuses a proxy while the
//!   others leave room. Evictions and [`Shards::forget`] give theirs back after removing.
//! - [`Limits::max_series_per_proxy`] is per proxy, and a proxy lives in one shard.
//! - Silent proxies ([`Limits::silence`]) are evicted once a minute: the first push of a
//!   minute sweeps every shard in turn (one lock at a time), before it records, as one store
//!   swept before recording. A push racing it may see a shard not yet swept.
//! - [`Shards::stats`] and [`Shards::memory_bytes`] are the shards' summed.
//!
//! # What a query sees
//!
//! Each proxy's series are read together, under its shard's lock; shards are read one after
//! another, so a push during a query is in the answer if its shard is read after it. A sliding
//! window loses nothing by that: the push is in the next answer.

#[cfg(test)]
mod tests;

use std::{
    hash::{BuildHasher, RandomState},
    mem::size_of,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use switchyard_adapters::model::ProxyId;

use super::{Limits, Sample, Snapshot, Store, StoreStats};

/// Proxies per shard at the cap, on average: 64 (a query holds a shard's lock 1 to 2 ms at 24
/// busy series a proxy, from the benchmark's 20 to 28 µs a proxy).
pub const PROXIES_PER_SHARD: usize = 64;

/// The fewest shards: 16, for small caps (an empty shard costs about 120 bytes).
pub const MIN_SHARDS: usize = 16;

/// The most shards: 4,096 (past 262,144 proxies, shards grow instead).
pub const MAX_SHARDS: usize = 4_096;

/// The shards for a cap of `max_proxies` proxies: one per [`PROXIES_PER_SHARD`], between
/// [`MIN_SHARDS`] and [`MAX_SHARDS`]; 313 for the default 20,000.
pub fn shards_for(max_proxies: usize) -> usize {
    max_proxies
        .div_ceil(PROXIES_PER_SHARD)
        .clamp(MIN_SHARDS, MAX_SHARDS)
}

/// Stores of disjoint proxies, each behind its own lock, answering as one [`Store`] (see the
/// module docs). Time is the caller's, as for [`Store`].
#[derive(Debug)]
pub struct Shards {
    shards: Box<[Mutex<Store>]>,
    hasher: RandomState,
    max_proxies: usize,
    /// Proxies kept in every shard, plus those being admitted: never above `max_proxies`.
    kept: AtomicUsize,
    /// The minute of the last sweep of every shard for silent proxies.
    swept: AtomicU64,
}

// === impl Shards ===

impl Shards {
    /// [`shards_for`] the cap of `limits`.
    pub fn new(limits: Limits) -> Self {
        Self::with_shards(limits, shards_for(limits.max_proxies))
    }

    /// `shards` shards (at least 1; 1 is one store behind one lock).
    pub fn with_shards(limits: Limits, shards: usize) -> Self {
        Shards {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Store::new(limits)))
                .collect(),
            hasher: RandomState::new(),
            max_proxies: limits.max_proxies,
            kept: AtomicUsize::new(0),
            swept: AtomicU64::new(0),
        }
    }

    /// How many shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard `proxy` lives in.
    pub fn shard_of(&self, proxy: &ProxyId) -> usize {
        // The remainder is below the shard count, a usize.
        (self.hasher.hash_one(proxy) % self.shards.len() as u64) as usize
    }

    /// Proxies kept (and being admitted), over every shard.
    pub fn proxies(&self) -> usize {
        self.kept.load(Ordering::Acquire)
    }

    /// Records `samples` of `proxy` received at `at`, locking its shard only (and, the first
    /// time in a minute, every shard in turn to evict the silent proxies).
    pub fn record(&self, proxy: &ProxyId, at: Duration, samples: &[Sample]) {
        self.sweep(at);
        let mut store = lock(&self.shards[self.shard_of(proxy)]);
        self.record_in(&mut store, proxy, at, samples);
    }

    fn record_in(&self, store: &mut Store, proxy: &ProxyId, at: Duration, samples: &[Sample]) {
        store.record_admitting(proxy, at, samples, || self.reserve());
    }

    /// Takes one of the cap's places for a new proxy, if one is left.
    fn reserve(&self) -> bool {
        self.kept
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |kept| {
                (kept < self.max_proxies).then_some(kept + 1)
            })
            .is_ok()
    }

    /// Evicts the silent proxies of every shard, if `now` is in a later minute than the last
    /// sweep and no other push is making this minute's.
    fn sweep(&self, now: Duration) {
        let minute = now.as_secs() / 60;
        let last = self.swept.load(Ordering::Acquire);
        if minute <= last
            || self
                .swept
                .compare_exchange(last, minute, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        for shard in &*self.shards {
            let evicted = lock(shard).sweep(now);
            self.kept.fetch_sub(evicted, Ordering::AcqRel);
        }
    }

    /// Forgets `proxy` (its Pod is gone); whether it was kept.
    pub fn forget(&self, proxy: &ProxyId) -> bool {
        let forgotten = lock(&self.shards[self.shard_of(proxy)]).forget(proxy);
        if forgotten {
            self.kept.fetch_sub(1, Ordering::AcqRel);
        }
        forgotten
    }

    /// Every series of the proxies `include` accepts over the `window` ending at `now`, as
    /// [`Store::snapshot`] answers for one store holding every proxy: each shard's part under
    /// its lock alone, merged under none.
    pub fn snapshot(
        &self,
        now: Duration,
        window: Duration,
        include: impl FnMut(&ProxyId) -> bool,
    ) -> Snapshot {
        self.snapshot_with(now, window, include, |_| {})
    }

    /// [`Shards::snapshot`], calling `during` with each shard's number while its lock is held
    /// (after its part is taken): the tests' hook into a query in progress.
    fn snapshot_with(
        &self,
        now: Duration,
        window: Duration,
        mut include: impl FnMut(&ProxyId) -> bool,
        mut during: impl FnMut(usize),
    ) -> Snapshot {
        // Lazily: each shard is locked while its part is taken, and released before the
        // part is merged.
        let mut parts = (0..self.shards.len()).filter_map(|shard| {
            self.snapshot_shard_with(shard, now, window, &mut include, &mut during)
        });
        let Some(mut out) = parts.next() else {
            return Store::default().snapshot(now, window, |_| false);
        };
        for part in parts {
            if let Err(error) = out.merge(part) {
                // Every shard rounds the same window to the same ring: not reached.
                tracing::error!(%error, "telemetry shards answered different windows");
            }
        }
        out
    }

    /// One shard's part of [`Shards::snapshot`], taken under that shard's lock alone; `None`
    /// past the last shard. For a caller that spreads a query's work (and the benchmark, which
    /// times each lock's hold).
    pub fn snapshot_shard(
        &self,
        shard: usize,
        now: Duration,
        window: Duration,
        include: impl FnMut(&ProxyId) -> bool,
    ) -> Option<Snapshot> {
        self.snapshot_shard_with(shard, now, window, include, |_| {})
    }

    fn snapshot_shard_with(
        &self,
        shard: usize,
        now: Duration,
        window: Duration,
        include: impl FnMut(&ProxyId) -> bool,
        mut during: impl FnMut(usize),
    ) -> Option<Snapshot> {
        let store = lock(self.shards.get(shard)?);
        let part = store.snapshot(now, window, include);
        during(shard);
        Some(part)
    }

    /// What every shard dropped, summed.
    pub fn stats(&self) -> StoreStats {
        self.shards
            .iter()
            .map(|shard| lock(shard).stats())
            .fold(StoreStats::default(), |sum, s| StoreStats {
                dropped_series_samples: sum.dropped_series_samples + s.dropped_series_samples,
                dropped_proxy_records: sum.dropped_proxy_records + s.dropped_proxy_records,
                evicted_proxies: sum.evicted_proxies + s.evicted_proxies,
            })
    }

    /// The bytes the windows take ([`Store::memory_bytes`] of every shard, summed), with the
    /// shards' locks and this handle.
    pub fn memory_bytes(&self) -> usize {
        let locks = self.shards.len() * (size_of::<Mutex<Store>>() - size_of::<Store>());
        size_of::<Shards>()
            + locks
            + self
                .shards
                .iter()
                .map(|shard| lock(shard).memory_bytes())
                .sum::<usize>()
    }
}

fn lock(shard: &Mutex<Store>) -> MutexGuard<'_, Store> {
    // A panic while recording leaves windows that are still windows: keep serving them.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
impl Shards {
    /// [`Shards::record`] if `proxy`'s shard is not locked now, without the minute's sweep;
    /// whether it recorded.
    fn try_record(&self, proxy: &ProxyId, at: Duration, samples: &[Sample]) -> bool {
        use std::sync::TryLockError;
        let mut store = match self.shards[self.shard_of(proxy)].try_lock() {
            Ok(store) => store,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        self.record_in(&mut store, proxy, at, samples);
        true
    }
}
