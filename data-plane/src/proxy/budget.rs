//! Retry budgets: retries may add at most a share of a cluster's requests, plus a small
//! reserve per second, so retries cannot multiply load on a struggling backend (as in
//! Finagle and Linkerd).

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Instant,
};

/// Retries allowed per request, in thousandths: 20 %.
const RATIO_MILLI: i64 = 200;
/// Retries always allowed per second, however few requests there are.
const MIN_PER_SECOND: i64 = 10;
/// The most tokens a quiet cluster saves up, in thousandths of a retry.
const MAX_BALANCE_MILLI: i64 = 100_000;

/// One cluster's budget, in thousandths of a retry.
#[derive(Debug)]
struct Budget {
    balance: AtomicI64,
    /// When the reserve was last topped up.
    refilled: Mutex<Instant>,
}

impl Budget {
    fn new(now: Instant) -> Self {
        Budget {
            balance: AtomicI64::new(MIN_PER_SECOND * 1000),
            refilled: Mutex::new(now),
        }
    }

    fn deposit(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((b + RATIO_MILLI).min(MAX_BALANCE_MILLI))
            });
    }

    fn refill(&self, now: Instant) {
        if let Ok(mut last) = self.refilled.try_lock() {
            let elapsed = now.saturating_duration_since(*last);
            let add = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX) * MIN_PER_SECOND;
            if add >= 1000 {
                *last = now;
                let _ = self
                    .balance
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                        Some(b.saturating_add(add).min(MAX_BALANCE_MILLI))
                    });
            }
        }
    }

    fn withdraw(&self, now: Instant) -> bool {
        self.refill(now);
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= 1000).then_some(b - 1000)
            })
            .is_ok()
    }
}

/// The budgets of every cluster.
#[derive(Debug, Default)]
pub(super) struct Budgets {
    by_cluster: Mutex<HashMap<String, std::sync::Arc<Budget>>>,
}

impl Budgets {
    fn get(&self, cluster: &str, now: Instant) -> Option<std::sync::Arc<Budget>> {
        let mut map = self.by_cluster.lock().ok()?;
        // Look up by `&str` first: the common case allocates nothing.
        if let Some(b) = map.get(cluster) {
            return Some(b.clone());
        }
        let budget = std::sync::Arc::new(Budget::new(now));
        map.insert(cluster.to_owned(), budget.clone());
        Some(budget)
    }

    /// Counts a first attempt, which earns the cluster a share of a retry.
    pub(super) fn deposit(&self, cluster: &str) {
        if let Some(b) = self.get(cluster, Instant::now()) {
            b.deposit();
        }
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub(super) fn withdraw(&self, cluster: &str) -> bool {
        self.withdraw_at(cluster, Instant::now())
    }

    pub(super) fn withdraw_at(&self, cluster: &str, now: Instant) -> bool {
        self.get(cluster, now).is_some_and(|b| b.withdraw(now))
    }
}
