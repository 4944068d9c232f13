//! The token buckets of access logs' `process_ratelimit` filters: one per resource name in the
//! process, shared by every listener and access log that names it, as Envoy's
//! `RateLimiterProviderSingleton` keeps them.
//!
//! A bucket starts full (`max_tokens`) and gains `tokens_per_fill` tokens for every whole
//! `fill_interval` since it was made, never more than `max_tokens`; a request that reaches it
//! in an access log's filter takes one token, and one that finds none does not pass it. A new
//! configuration whose bucket is unchanged keeps it, tokens and all; a changed one replaces it
//! with a full bucket; a removed one lets no request through (Envoy's always-deny fallback)
//! until it comes back.
//!
//! Taking a token is lock-free: one `AtomicU64` holds the tokens and the fill tick they were
//! counted at, updated by compare-and-swap, and the fills are computed from the monotonic
//! clock (no timer). Only request threads take tokens; the registry's lock is taken when a
//! configuration is published and when a connection starts, never per request, and never by
//! the access log's own (SCHED_IDLE) thread.

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Instant,
};

use arc_swap::ArcSwapOption;

use crate::config::TokenBucketConfig;

/// The buckets of the process, by resource name.
#[derive(Debug, Default)]
pub struct Buckets {
    /// Every name a configuration or a connection asked for; a name neither holds any more is
    /// forgotten at the next configuration.
    by_name: Mutex<HashMap<String, Arc<Slot>>>,
}

/// Where the access logs that name a bucket find it: what it holds is replaced when the
/// bucket's configuration changes, so a connection that resolved its slot once sees the new
/// bucket at its next request.
#[derive(Debug, Default)]
pub struct Slot {
    /// `None` while the configuration has no bucket of the name: nothing is logged.
    bucket: ArcSwapOption<Bucket>,
}

/// One token bucket.
#[derive(Debug)]
pub struct Bucket {
    config: TokenBucketConfig,
    /// `fill_interval` in nanoseconds (at least 50 ms, so never 0).
    interval_nanos: u64,
    /// When the bucket was made, full: fills are whole `fill_interval`s from here.
    made: Instant,
    /// The tokens (high 32 bits) and the fill tick (low 32 bits, whole intervals since `made`,
    /// wrapping) they were counted at.
    state: AtomicU64,
}

// === impl Buckets ===

impl Buckets {
    /// Keeps the buckets of `configured` (by resource name), replacing those whose
    /// configuration changed with full ones; the others hold no bucket any more.
    pub fn configure(&self, configured: &BTreeMap<String, Arc<TokenBucketConfig>>) {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, config) in configured {
            let slot = by_name.entry(name.clone()).or_default();
            let current = slot.bucket.load();
            let same = Option::as_ref(&current).is_some_and(|b| b.config == **config);
            if !same {
                slot.bucket
                    .store(Some(Arc::new(Bucket::new(**config, Instant::now()))));
            }
        }
        by_name.retain(|name, slot| {
            if configured.contains_key(name) {
                return true;
            }
            slot.bucket.store(None);
            // Still held by a connection, whose logs stay denied until the bucket returns.
            Arc::strong_count(slot) > 1
        });
    }

    /// The slot of the bucket `name`, empty until a configuration has one of that name.
    pub fn slot(&self, name: &str) -> Arc<Slot> {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = by_name.get(name) {
            return Arc::clone(slot);
        }
        Arc::clone(by_name.entry(name.to_owned()).or_default())
    }
}

// === impl Slot ===

impl Slot {
    /// Takes a token from the bucket now; `false` when it has none, or there is no bucket.
    pub fn take(&self) -> bool {
        let bucket = self.bucket.load();
        Option::as_ref(&bucket).is_some_and(|bucket| bucket.take_at(Instant::now()))
    }

    /// The bucket the slot holds now.
    pub fn bucket(&self) -> Option<Arc<Bucket>> {
        self.bucket.load_full()
    }
}

// === impl Bucket ===

impl Bucket {
    /// A full bucket, made at `now`.
    pub fn new(config: TokenBucketConfig, now: Instant) -> Self {
        Bucket {
            config,
            interval_nanos: nanos(config.fill_interval).max(1),
            made: now,
            state: AtomicU64::new(pack(config.max_tokens, 0)),
        }
    }

    pub fn config(&self) -> &TokenBucketConfig {
        &self.config
    }

    /// Takes a token at `now` (a monotonic instant not before the bucket was made); whether
    /// there was one.
    pub fn take_at(&self, now: Instant) -> bool {
        let tick = self.tick(now);
        let mut current = self.state.load(Relaxed);
        loop {
            let (tokens, tick) = self.filled(current, tick);
            if tokens == 0 {
                return false;
            }
            let taken = pack(tokens - 1, tick);
            match self
                .state
                .compare_exchange_weak(current, taken, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// The tokens left at `now`.
    pub fn available_at(&self, now: Instant) -> u32 {
        self.filled(self.state.load(Relaxed), self.tick(now)).0
    }

    /// The tokens of `state` with the fills up to `tick` added, and the tick they are counted
    /// at.
    fn filled(&self, state: u64, tick: u32) -> (u32, u32) {
        let (tokens, at) = unpack(state);
        let elapsed = tick.wrapping_sub(at);
        // Another thread read the clock after this one and counted a later tick first: there
        // is nothing more to fill.
        if elapsed > u32::MAX / 2 {
            return (tokens, at);
        }
        let TokenBucketConfig {
            max_tokens,
            tokens_per_fill,
            ..
        } = self.config;
        let filled = u64::from(elapsed)
            .saturating_mul(u64::from(tokens_per_fill))
            .saturating_add(u64::from(tokens))
            .min(u64::from(max_tokens));
        // At most `max_tokens`, a u32.
        (u32::try_from(filled).unwrap_or(max_tokens), tick)
    }

    /// Whole fill intervals from the bucket's start to `now`, wrapping at 2³² (at least
    /// 6.8 years of 50 ms intervals; a bucket untouched that long is full anyway).
    fn tick(&self, now: Instant) -> u32 {
        let elapsed = nanos(now.saturating_duration_since(self.made));
        // Truncation is the wrap the tick arithmetic expects.
        (elapsed / self.interval_nanos) as u32
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn pack(tokens: u32, tick: u32) -> u64 {
    (u64::from(tokens) << 32) | u64::from(tick)
}

fn unpack(state: u64) -> (u32, u32) {
    // The halves of a `pack`ed value.
    ((state >> 32) as u32, state as u32)
}
