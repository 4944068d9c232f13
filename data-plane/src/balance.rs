//! Endpoint selection for a cluster: power of two choices over a peak-EWMA latency estimate,
//! with passive health checking (consecutive-failure outlier ejection) as Envoy does it.
//!
//! The core is synchronous and does no IO; time is always a parameter, so tests need no clock.
//!
//! # Load estimate
//!
//! As in Finagle's and Linkerd's `PeakEwma`, each endpoint keeps an exponentially weighted
//! moving average of its round-trip times that jumps up at once to a slower sample (the
//! "peak") and decays towards faster ones with the time constant [`DEFAULT_DECAY`]. While no
//! response arrives the estimate also decays towards zero, so an endpoint that was slow a while
//! ago is tried again. The cost of an endpoint is `rtt_estimate × (pending + 1)`, where `pending`
//! counts the requests picked and not finished yet. An endpoint that has not answered yet costs
//! [`DEFAULT_RTT`] (Linkerd's default).
//!
//! # Picking
//!
//! [`Balancer::pick`] draws two distinct endpoints at random, each with a chance proportional to
//! its `weight`, and takes the cheaper one. Endpoints already tried (`exclude`) and ejected
//! endpoints are skipped; when that leaves nothing, excluded endpoints are allowed again, and
//! when every endpoint is ejected the balancer picks among all of them (Envoy's panic mode).
//!
//! # Outlier detection
//!
//! Reported outcomes count consecutive failures the way Envoy's detector does: any 5xx or
//! gateway failure adds to `consecutive_5xx`; a gateway failure (502/503/504, connect failure,
//! reset) adds to the gateway counter, another 5xx resets it; a success resets both. When a
//! counter reaches its threshold the endpoint is ejected for `base_ejection_time × n` (its n-th
//! ejection), at most [`MAX_EJECTION_TIME`] or `base_ejection_time` if longer. As in current
//! Envoy, `max_ejection_percent` is strict: an ejection that would put the ejected share of the
//! cluster above it does not happen (Envoy's `always_eject_one_host`, off by default, is
//! [`BalancerSettings::always_eject_one_host`]). Envoy lowers the multiplier `n` again while the
//! endpoint stays healthy; here it drops by one for every [`EJECTION_MULTIPLIER_DECAY`] the
//! endpoint has been back. Ejected endpoints return when their time is up, checked lazily when
//! the balancer looks at them (Envoy sweeps every `interval` instead).
//!
//! # Sharing
//!
//! A [`Balancer`] is cheap to clone and safe to use from many tasks at once: each endpoint has
//! its own atomics and a short-lived mutex; nothing is locked across endpoints on the pick
//! path. On an EDS update, [`Balancer::update`] builds the next balancer and carries over the
//! state of every endpoint whose address stays, so the data path can swap an
//! `Arc<Balancer>` (or a `Balancer`) per cluster without resetting latency or ejections.

#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::config::{Endpoint, OutlierDetection};

/// How fast the latency estimate forgets: the time constant of its exponential decay (Linkerd's
/// and Finagle's default).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// The latency an endpoint is assumed to have before its first response (Linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// The longest ejection unless `base_ejection_time` is longer (Envoy's `max_ejection_time`
/// default).
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// The ejection multiplier of an endpoint drops by one for each such period it stays healthy
/// after an ejection (Envoy's default `interval`, at which its detector does the same).
pub const EJECTION_MULTIPLIER_DECAY: Duration = Duration::from_secs(10);

/// Tunables of a [`Balancer`]; [`Default`] gives the documented defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalancerSettings {
    /// Time constant of the latency estimate's decay; default [`DEFAULT_DECAY`].
    pub decay: Duration,
    /// Latency assumed for an endpoint that has not answered yet; default [`DEFAULT_RTT`].
    pub default_rtt: Duration,
    /// Allow one ejection even when it exceeds `max_ejection_percent` (Envoy's
    /// `always_eject_one_host`); default `false`, as in Envoy.
    pub always_eject_one_host: bool,
}

/// How a request to a picked endpoint ended, for the latency estimate and outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not a 5xx, with the time it took (to the response head, or for TCP
    /// to the connection).
    Success(Duration),
    /// A 5xx response other than 502, 503 or 504, with the time it took.
    Failure5xx(Duration),
    /// A connect failure, a reset before the response, or a 502/503/504. It does not update
    /// the latency estimate: a fast failure must not make an endpoint look fast.
    GatewayFailure,
}

/// The load balancer of one cluster. Cheap to clone: clones share all state.
#[derive(Clone, Debug)]
pub struct Balancer {
    shared: Arc<Shared>,
}

/// An endpoint handed out by [`Balancer::pick`]. It counts as pending until dropped; report
/// how the request went with [`Pick::complete`].
#[derive(Debug)]
pub struct Pick {
    shared: Arc<Shared>,
    index: usize,
}

/// An ejection caused by [`Pick::complete`], for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    pub address: SocketAddr,
    /// How many times this endpoint has been ejected, this one included (after the healthy-time
    /// discount described in the module docs).
    pub times: u32,
    /// How long this ejection lasts.
    pub duration: Duration,
}

#[derive(Debug)]
struct Shared {
    endpoints: Arc<[Endpoint]>,
    states: Box<[Arc<EndpointState>]>,
    /// `weight` of each endpoint, zero taken as one: Envoy requires at least 1.
    weights: Box<[u64]>,
    /// Prefix sums of `weights`: `cumulative[i]` is the total weight of endpoints `0..=i`.
    cumulative: Box<[u64]>,
    outlier: Option<OutlierDetection>,
    settings: BalancerSettings,
    /// Serializes ejection decisions so that two endpoints failing at once cannot both slip
    /// under `max_ejection_percent`. Only taken when a failure threshold is reached.
    ejecting: Mutex<()>,
}

/// What the balancer knows of one endpoint; shared with the next balancer after an update when
/// the address stays.
#[derive(Debug, Default)]
struct EndpointState {
    /// Requests picked and not finished.
    pending: AtomicUsize,
    /// Set while the endpoint may be ejected; the deadline under `health` is the truth. Lets
    /// the pick path skip the lock for the (usual) endpoint that is not ejected.
    ejected: AtomicBool,
    health: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    /// The latency estimate in nanoseconds, as of `updated_at`; `None` before any sample.
    rtt_ns: Option<f64>,
    updated_at: Option<Instant>,
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    /// Ejected until then; kept after expiry to discount the multiplier later.
    ejected_until: Option<Instant>,
    times_ejected: u32,
    /// Whether a real answer was seen; until then `rtt_ns` is the decaying default, which the
    /// first sample replaces.
    sampled: bool,
}

/// Which endpoints a pick may take.
#[derive(Clone, Copy)]
struct Filter {
    skip_excluded: bool,
    skip_ejected: bool,
}

// === impl BalancerSettings ===

impl Default for BalancerSettings {
    fn default() -> Self {
        BalancerSettings {
            decay: DEFAULT_DECAY,
            default_rtt: DEFAULT_RTT,
            always_eject_one_host: false,
        }
    }
}

// === impl Balancer ===

impl Balancer {
    /// A balancer over `endpoints` with the default [`BalancerSettings`]; `outlier` `None`
    /// turns ejection off.
    pub fn new(endpoints: Arc<[Endpoint]>, outlier: Option<OutlierDetection>) -> Self {
        Self::with_settings(endpoints, outlier, BalancerSettings::default())
    }

    /// A balancer with explicit settings; every endpoint starts fresh.
    pub fn with_settings(
        endpoints: Arc<[Endpoint]>,
        outlier: Option<OutlierDetection>,
        settings: BalancerSettings,
    ) -> Self {
        let now = Instant::now();
        let states = endpoints
            .iter()
            .map(|_| Arc::new(EndpointState::fresh(&settings, now)))
            .collect();
        Self::build(endpoints, states, outlier, settings)
    }

    /// The balancer for a new endpoint set (an EDS update) or new outlier settings: endpoints
    /// whose address was already there keep their latency estimate, pending count and
    /// ejection state. `self` stays usable; picks made from it still report into the shared
    /// endpoint state.
    pub fn update(&self, endpoints: Arc<[Endpoint]>, outlier: Option<OutlierDetection>) -> Self {
        let mut old: HashMap<SocketAddr, &Arc<EndpointState>> = self
            .shared
            .endpoints
            .iter()
            .zip(self.shared.states.iter())
            .map(|(endpoint, state)| (endpoint.address, state))
            .collect();
        // `remove`, so a duplicated address gets the old state once and fresh state after.
        let now = Instant::now();
        let settings = self.shared.settings;
        let states = endpoints
            .iter()
            .map(|endpoint| match old.remove(&endpoint.address) {
                Some(state) => Arc::clone(state),
                None => Arc::new(EndpointState::fresh(&settings, now)),
            })
            .collect();
        Self::build(endpoints, states, outlier, self.shared.settings)
    }

    fn build(
        endpoints: Arc<[Endpoint]>,
        states: Box<[Arc<EndpointState>]>,
        outlier: Option<OutlierDetection>,
        settings: BalancerSettings,
    ) -> Self {
        let weights: Box<[u64]> = endpoints
            .iter()
            .map(|endpoint| u64::from(endpoint.weight.max(1)))
            .collect();
        let cumulative = weights
            .iter()
            .scan(0u64, |total, weight| {
                *total += weight;
                Some(*total)
            })
            .collect();
        Balancer {
            shared: Arc::new(Shared {
                endpoints,
                states,
                weights,
                cumulative,
                outlier,
                settings,
                ejecting: Mutex::new(()),
            }),
        }
    }

    /// The endpoints, in the order their indices refer to.
    pub fn endpoints(&self) -> &Arc<[Endpoint]> {
        &self.shared.endpoints
    }

    /// The outlier detection settings, if ejection is on.
    pub fn outlier_detection(&self) -> Option<&OutlierDetection> {
        self.shared.outlier.as_ref()
    }

    /// Picks an endpoint with the thread's random generator; see [`Balancer::pick_with`].
    pub fn pick(&self, now: Instant, exclude: &[usize]) -> Option<Pick> {
        self.pick_with(&mut fastrand::Rng::new(), now, exclude)
    }

    /// Picks an endpoint: the cheaper of two drawn at random by weight, skipping the indices in
    /// `exclude` (endpoints already tried) and ejected endpoints, with the fallbacks described
    /// in the module docs. `None` only when the cluster has no endpoint.
    pub fn pick_with(
        &self,
        rng: &mut fastrand::Rng,
        now: Instant,
        exclude: &[usize],
    ) -> Option<Pick> {
        let shared = &self.shared;
        let index = match shared.endpoints.len() {
            0 => return None,
            1 => 0,
            _ => match self.pick_fast(rng, now, exclude) {
                Some(index) => index,
                None => self.pick_filtered(rng, now, exclude)?,
            },
        };
        shared.states[index].pending.fetch_add(1, Ordering::Relaxed);
        Some(Pick {
            shared: Arc::clone(shared),
            index,
        })
    }

    /// Whether the endpoint at `index` is ejected at `now`.
    pub fn is_ejected(&self, index: usize, now: Instant) -> bool {
        self.shared.is_ejected(index, now)
    }

    /// The endpoint's latency estimate at `now` (decayed since its last sample); `None` for an
    /// index out of range.
    pub fn rtt_estimate(&self, index: usize, now: Instant) -> Option<Duration> {
        let state = self.shared.states.get(index)?;
        let rtt_ns = state.rtt_ns(now, &self.shared.settings);
        Some(Duration::from_nanos(rtt_ns as u64))
    }

    /// Requests picked from the endpoint at `index` and not finished; 0 for an index out of
    /// range.
    pub fn pending(&self, index: usize) -> usize {
        self.shared
            .states
            .get(index)
            .map_or(0, |state| state.pending.load(Ordering::Relaxed))
    }

    /// The usual case: two weighted draws over all endpoints, no list built, no lock taken
    /// except to read the two costs. `None` when a draw hits an excluded or (possibly) ejected
    /// endpoint; the caller then draws again from the eligible ones.
    fn pick_fast(&self, rng: &mut fastrand::Rng, now: Instant, exclude: &[usize]) -> Option<usize> {
        let shared = &self.shared;
        let total = shared.cumulative.last().copied().unwrap_or(0);
        let first = shared.find(rng.u64(0..total));
        // Draw the second among the others: skip over the first one's share of the range.
        let first_start = shared.cumulative[first] - shared.weights[first];
        let mut point = rng.u64(0..total - shared.weights[first]);
        if point >= first_start {
            point += shared.weights[first];
        }
        let second = shared.find(point);
        let usable = |index: usize| {
            !exclude.contains(&index) && !shared.states[index].ejected.load(Ordering::Relaxed)
        };
        if !usable(first) || !usable(second) {
            return None;
        }
        Some(shared.cheaper(first, second, now))
    }

    /// Draws from the endpoints that are neither excluded nor ejected, relaxing the filter
    /// step by step when none is.
    fn pick_filtered(
        &self,
        rng: &mut fastrand::Rng,
        now: Instant,
        exclude: &[usize],
    ) -> Option<usize> {
        let shared = &self.shared;
        let filters = [
            Filter {
                skip_excluded: true,
                skip_ejected: true,
            },
            Filter {
                skip_excluded: false,
                skip_ejected: true,
            },
            // Panic mode: every endpoint is ejected.
            Filter {
                skip_excluded: true,
                skip_ejected: false,
            },
            Filter {
                skip_excluded: false,
                skip_ejected: false,
            },
        ];
        let mut candidates = Vec::new();
        for filter in filters {
            candidates.clear();
            candidates.extend((0..shared.endpoints.len()).filter(|&index| {
                let excluded = filter.skip_excluded && exclude.contains(&index);
                let ejected = filter.skip_ejected && shared.is_ejected(index, now);
                !excluded && !ejected
            }));
            if !candidates.is_empty() {
                break;
            }
        }
        match candidates[..] {
            [] => None,
            [only] => Some(only),
            _ => {
                let weight = |index: usize| shared.weights[index];
                let total: u64 = candidates.iter().map(|&index| weight(index)).sum();
                let first_at = weighted_position(&candidates, weight, rng.u64(0..total));
                let first = candidates.swap_remove(first_at);
                let second_at =
                    weighted_position(&candidates, weight, rng.u64(0..total - weight(first)));
                Some(shared.cheaper(first, candidates[second_at], now))
            }
        }
    }
}

/// The position in `items` whose share of the cumulative weight holds `point`.
fn weighted_position(items: &[usize], weight: impl Fn(usize) -> u64, mut point: u64) -> usize {
    for (position, &index) in items.iter().enumerate() {
        let w = weight(index);
        if point < w {
            return position;
        }
        point -= w;
    }
    items.len().saturating_sub(1)
}

// === impl Shared ===

impl Shared {
    /// The endpoint whose share of the cumulative weight holds `point` (`point < total`).
    fn find(&self, point: u64) -> usize {
        self.cumulative
            .partition_point(|&end| end <= point)
            .min(self.cumulative.len() - 1)
    }

    fn cheaper(&self, a: usize, b: usize, now: Instant) -> usize {
        if self.cost(b, now) < self.cost(a, now) {
            b
        } else {
            a
        }
    }

    fn cost(&self, index: usize, now: Instant) -> f64 {
        let state = &self.states[index];
        let pending = state.pending.load(Ordering::Relaxed) as f64;
        state.rtt_ns(now, &self.settings) * (pending + 1.0)
    }

    fn is_ejected(&self, index: usize, now: Instant) -> bool {
        let Some(state) = self.states.get(index) else {
            return false;
        };
        if !state.ejected.load(Ordering::Relaxed) {
            return false;
        }
        let health = state.lock();
        match health.ejected_until {
            Some(until) if until > now => true,
            _ => {
                state.ejected.store(false, Ordering::Relaxed);
                false
            }
        }
    }

    /// Records an outcome for the endpoint at `index`; ejects it when a threshold is reached
    /// and the cap allows.
    fn record(&self, index: usize, now: Instant, outcome: Outcome) -> Option<Ejection> {
        let state = &self.states[index];
        let tripped = {
            let mut health = state.lock();
            match outcome {
                Outcome::Success(rtt) | Outcome::Failure5xx(rtt) => {
                    health.observe_rtt(rtt, now, &self.settings);
                }
                // Failures are outlier detection's to judge (as Linkerd's failure accrual):
                // an endpoint that keeps failing is ejected after a few, which a latency
                // penalty would only delay by steering picks away before it is.
                Outcome::GatewayFailure => {}
            }
            let outlier = self.outlier.as_ref()?;
            match outcome {
                Outcome::Success(_) => {
                    health.consecutive_5xx = 0;
                    health.consecutive_gateway = 0;
                }
                Outcome::Failure5xx(_) => {
                    health.consecutive_5xx += 1;
                    health.consecutive_gateway = 0;
                }
                Outcome::GatewayFailure => {
                    health.consecutive_5xx += 1;
                    health.consecutive_gateway += 1;
                }
            }
            let reached = |count: u32, threshold: u32| threshold > 0 && count >= threshold;
            let tripped = reached(health.consecutive_5xx, outlier.consecutive_5xx)
                || outlier
                    .consecutive_gateway_failure
                    .is_some_and(|threshold| reached(health.consecutive_gateway, threshold));
            if tripped {
                // Envoy resets the counters whether or not the ejection happens, so a host kept
                // in by the cap needs a fresh run of failures to be considered again.
                health.consecutive_5xx = 0;
                health.consecutive_gateway = 0;
            }
            tripped
        };
        if tripped {
            self.eject(index, now)
        } else {
            None
        }
    }

    fn eject(&self, index: usize, now: Instant) -> Option<Ejection> {
        let outlier = self.outlier.as_ref()?;
        let _ejecting = self.ejecting.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_ejected(index, now) {
            return None;
        }
        let ejected = (0..self.endpoints.len())
            .filter(|&other| self.is_ejected(other, now))
            .count();
        // Strict, as in Envoy: the share after this ejection must stay within the cap.
        let within_cap = (ejected as u64 + 1) * 100
            <= u64::from(outlier.max_ejection_percent) * self.endpoints.len() as u64;
        let first_allowed = self.settings.always_eject_one_host && ejected == 0;
        if !within_cap && !first_allowed {
            return None;
        }

        let state = &self.states[index];
        let mut health = state.lock();
        if let Some(until) = health.ejected_until {
            let healthy_for = now.saturating_duration_since(until);
            let periods = healthy_for.as_nanos() / EJECTION_MULTIPLIER_DECAY.as_nanos().max(1);
            let periods = u32::try_from(periods).unwrap_or(u32::MAX);
            health.times_ejected = health.times_ejected.saturating_sub(periods);
        }
        health.times_ejected = health.times_ejected.saturating_add(1);
        let max = MAX_EJECTION_TIME.max(outlier.base_ejection_time);
        let duration = outlier
            .base_ejection_time
            .saturating_mul(health.times_ejected)
            .min(max);
        health.ejected_until = Some(now + duration);
        state.ejected.store(true, Ordering::Relaxed);
        Some(Ejection {
            address: self.endpoints[index].address,
            times: health.times_ejected,
            duration,
        })
    }
}

// === impl EndpointState ===

impl EndpointState {
    /// A new endpoint: its estimate starts at the default latency as of `now` and decays like
    /// any other, so an endpoint that has not answered yet is tried soon even under light
    /// load instead of looking slower than the others forever (as in tower's peak EWMA).
    fn fresh(settings: &BalancerSettings, now: Instant) -> Self {
        EndpointState {
            health: Mutex::new(Health {
                rtt_ns: Some(settings.default_rtt.as_nanos() as f64),
                updated_at: Some(now),
                ..Health::default()
            }),
            ..EndpointState::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Health> {
        // The state stays consistent whatever panicked while holding the lock: every update is
        // a handful of plain assignments.
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latency estimate at `now`, in nanoseconds, decayed towards zero since the last
    /// sample. Reading does not store the decay: decays compose, so the result is the same.
    fn rtt_ns(&self, now: Instant, settings: &BalancerSettings) -> f64 {
        let health = self.lock();
        match (health.rtt_ns, health.updated_at) {
            (Some(rtt_ns), Some(at)) => rtt_ns * decay_factor(now, at, settings.decay),
            _ => settings.default_rtt.as_nanos() as f64,
        }
    }
}

// === impl Health ===

impl Health {
    fn observe_rtt(&mut self, rtt: Duration, now: Instant, settings: &BalancerSettings) {
        let sample = rtt.as_nanos() as f64;
        let previous = match (self.rtt_ns, self.updated_at) {
            (Some(rtt_ns), Some(at)) => Some((rtt_ns, decay_factor(now, at, settings.decay))),
            _ => None,
        };
        let first = !self.sampled;
        self.sampled = true;
        let next = match previous {
            None => sample,
            Some(_) if first => sample,
            // The peak: a slower sample counts in full at once.
            Some((estimate, _)) if sample > estimate => sample,
            Some((estimate, decay)) => estimate * decay + sample * (1.0 - decay),
        };
        self.rtt_ns = Some(next);
        // Never move backwards, so that an outcome reported with an earlier `now` than a
        // previous one cannot make the elapsed time negative.
        self.updated_at = Some(match self.updated_at {
            Some(at) if at > now => at,
            _ => now,
        });
    }
}

/// `exp(-elapsed / decay)`: how much of the old estimate is left after `elapsed`.
fn decay_factor(now: Instant, since: Instant, decay: Duration) -> f64 {
    let elapsed = now.saturating_duration_since(since).as_secs_f64();
    let decay = decay.as_secs_f64();
    if decay <= 0.0 {
        return 0.0;
    }
    (-elapsed / decay).exp()
}

// === impl Pick ===

impl Pick {
    /// The index of the endpoint in [`Balancer::endpoints`], for `exclude` on a retry.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The picked endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoints[self.index]
    }

    /// The picked endpoint's address.
    pub fn address(&self) -> SocketAddr {
        self.endpoint().address
    }

    /// Reports how the request went, updating the latency estimate and outlier detection, and
    /// finishes the pick. Returns the ejection it caused, if any. A pick dropped without a
    /// report (a cancelled request) only stops counting as pending.
    pub fn complete(self, now: Instant, outcome: Outcome) -> Option<Ejection> {
        self.shared.record(self.index, now, outcome)
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.shared.states[self.index]
            .pending
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Chooses one item with a chance proportional to its weight (weighted clusters); items of
/// weight zero are never chosen. `None` when there is no item or every weight is zero.
pub fn pick_weighted<'a, T>(items: &'a [(T, u32)], rng: &mut fastrand::Rng) -> Option<&'a T> {
    let total: u64 = items.iter().map(|(_, weight)| u64::from(*weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = rng.u64(0..total);
    for (item, weight) in items {
        let weight = u64::from(*weight);
        if point < weight {
            return Some(item);
        }
        point -= weight;
    }
    None
}
