//! Sliding windows of golden samples per proxy and subject, in bounded memory (sans-IO: the
//! caller passes the time).
//!
//! # Time and slots
//!
//! Time is a monotonic [`Duration`] since an epoch of the caller's choosing (e.g. the
//! operator's start); a sample counts at the time it is recorded (its arrival), not at the
//! proxy's `timestamp_ms`, so proxies' clocks do not matter. Every series keeps three rings of
//! time slots and records every sample into all three:
//!
//! | ring | slot | slots | covers | answers windows |
//! |---|---|---|---|---|
//! | fine | 1 s | 10 | 10 s | up to 10 s |
//! | mid | 10 s | 6 | 1 m | over 10 s, up to 1 m |
//! | coarse | 1 m | 10 | 10 m | over 1 m, up to 10 m |
//!
//! A window is answered from the finest ring that covers it, rounded up to that ring's slot,
//! and ends with the slot of `now` (partly elapsed): a 10 s window is the 10 one-second slots
//! up to and including now's; 45 s is rounded up to 50 s, 5 ten-second slots. Windows over
//! 10 m are answered as 10 m. A sample older than its ring's oldest slot is not recorded in
//! that ring; a sample older than a window's first slot is not counted in it.
//!
//! # Memory
//!
//! A slot is [`SLOT_BYTES`] bytes (5 request counts, 15 latency buckets and connections
//! opened as `u32`, the active gauge as `u32`, bytes received and sent as `u64`, its slot
//! number as `u32`), a series 26 slots: [`SERIES_BYTES`] bytes (2,912), boxed, plus its
//! [`Subject`] key (a boxed name of at most [`MAX_NAME_BYTES`](super::decode::MAX_NAME_BYTES))
//! and the hash map's entry (41 bytes a bucket). Counts in a slot saturate at `u32::MAX` (over
//! 71 million a second in a 1-minute slot); bytes saturate at `u64::MAX`, in a slot and summed
//! over a window. A series exists once a sample of it is not nothing (an idle cluster costs
//! nothing); a proxy keeps at most [`Limits::max_series_per_proxy`] series (samples of more are
//! dropped and counted), the store at most [`Limits::max_proxies`] proxies, and a proxy that
//! recorded nothing for [`Limits::silence`] (10 m) is evicted ([`Store::forget`] removes one at
//! once).
//!
//! # Answers
//!
//! Counts of several series and proxies are summed, histograms bucket by bucket, before any
//! rate or percentile is computed: [`Golden`]. [`Store::snapshot`] keeps each series' [`Sums`]
//! over one window apart instead, so that several replicas' can be merged
//! ([`Snapshot::merge`]) before the same sums are made.

use std::{collections::HashMap, mem::size_of, time::Duration};

use switchyard_adapters::model::ProxyId;
use switchyard_proxy_config::metrics::{LATENCY_BUCKET_COUNT, LATENCY_BUCKETS_MICROS};

use super::{
    decode::{Latency, Sample, StatusClass, Subject, Value},
    snapshot::Snapshot,
};

/// The longest window a store answers: 10 minutes.
pub const MAX_WINDOW: Duration = Duration::from_secs(600);

/// The size of one time slot in bytes.
pub const SLOT_BYTES: usize = size_of::<Slot>();

/// The size of one series' slots in bytes (26 slots).
pub const SERIES_BYTES: usize = size_of::<Series>();

/// The store's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Series (subjects) kept per proxy; default 256 (a sidecar talking to 250 backends).
    pub max_series_per_proxy: usize,
    /// Proxies kept; default 20,000. Over every shard of a [`Shards`](super::Shards), which
    /// also counts its shards from it.
    pub max_proxies: usize,
    /// How long a proxy may record nothing before it is evicted; default 10 m (the longest
    /// window: nothing of it is left to answer by then).
    pub silence: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series_per_proxy: 256,
            max_proxies: 20_000,
            silence: MAX_WINDOW,
        }
    }
}

/// What the store dropped, since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Samples of a new series beyond [`Limits::max_series_per_proxy`].
    pub dropped_series_samples: u64,
    /// Records of a new proxy beyond [`Limits::max_proxies`].
    pub dropped_proxy_records: u64,
    /// Proxies evicted after [`Limits::silence`].
    pub evicted_proxies: u64,
}

/// The golden metrics of a window, summed over the series asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Golden {
    /// The window's length after rounding up to its ring's slot.
    pub window: Duration,
    /// Requests per status class, 1xx first.
    pub requests: [u64; 5],
    pub latency: Latency,
    /// Connections opened in the window.
    pub connections_opened: u64,
    /// Connections open: each series' latest gauge in the window, summed.
    pub connections_active: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl Golden {
    /// Requests answered with anything but a 5xx (1xx to 4xx: a 4xx is the client's failure,
    /// not the server's), as Linkerd and the SMI metrics count success.
    pub fn success_count(&self) -> u64 {
        saturating_sum(&self.requests[..StatusClass::ServerError.index()])
    }

    /// Requests answered with a 5xx.
    pub fn failure_count(&self) -> u64 {
        self.requests[StatusClass::ServerError.index()]
    }

    /// All requests.
    pub fn request_count(&self) -> u64 {
        saturating_sum(&self.requests)
    }

    /// Requests per second over the (rounded) window.
    pub fn requests_per_second(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.request_count() as f64 / secs
        } else {
            0.0
        }
    }

    /// The `q` quantile (0 to 1) of the latency, `None` without requests.
    ///
    /// The rule is Prometheus' `histogram_quantile`: the rank `q × count` falls in one bucket;
    /// the result is interpolated linearly between that bucket's lower bound (the previous
    /// bound, 0 for the first) and its upper bound, by the rank's position among the bucket's
    /// counts. A rank in the `+Inf` bucket answers the last finite bound (10 s). The answer is
    /// therefore always within the bucket of the true quantile.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let total = self.latency.count();
        if total == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, &here) in self.latency.buckets.iter().enumerate() {
            if here > 0 && below.saturating_add(here) as f64 >= rank {
                let Some(&upper) = LATENCY_BUCKETS_MICROS.get(i) else {
                    break;
                };
                let lower = i.checked_sub(1).map_or(0, |p| LATENCY_BUCKETS_MICROS[p]);
                let within = ((rank - below as f64) / here as f64).clamp(0.0, 1.0);
                let micros = lower as f64 + (upper - lower) as f64 * within;
                return Some(Duration::from_nanos((micros * 1e3).round() as u64));
            }
            below = below.saturating_add(here);
        }
        LATENCY_BUCKETS_MICROS
            .last()
            .map(|&m| Duration::from_micros(m))
    }

    /// What these sums count beyond `part` (a part of the same traffic, summed over the same
    /// window): requests per class and latency buckets subtracted (never below zero); the
    /// connections and bytes are left as they are.
    pub fn without(&self, part: &Golden) -> Golden {
        let mut out = *self;
        for (n, p) in out.requests.iter_mut().zip(&part.requests) {
            *n = n.saturating_sub(*p);
        }
        for (n, p) in out.latency.buckets.iter_mut().zip(&part.latency.buckets) {
            *n = n.saturating_sub(*p);
        }
        out
    }

    /// Adds one series' sums: its counts, and its latest gauge to the open connections.
    pub fn add(&mut self, sums: &Sums) {
        for (sum, &n) in self.requests.iter_mut().zip(&sums.requests) {
            *sum = sum.saturating_add(n);
        }
        for (sum, &n) in self.latency.buckets.iter_mut().zip(&sums.latency.buckets) {
            *sum = sum.saturating_add(n);
        }
        self.connections_opened = self
            .connections_opened
            .saturating_add(sums.connections_opened);
        self.connections_active = self
            .connections_active
            .saturating_add(sums.gauge.map_or(0, |g| g.value));
        self.bytes_received = self.bytes_received.saturating_add(sums.bytes_received);
        self.bytes_sent = self.bytes_sent.saturating_add(sums.bytes_sent);
    }
}

/// One series' sums over a window: what [`Golden`] adds up, per series, and what replicas send
/// each other ([`super::snapshot`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    /// Requests per status class, 1xx first.
    pub requests: [u64; 5],
    pub latency: Latency,
    /// Connections opened in the window.
    pub connections_opened: u64,
    /// The latest open-connections gauge in the window; `None` when none was recorded.
    pub gauge: Option<Gauge>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

/// A gauge's value and how long before the window's end it was recorded, to its ring's slot
/// (0: in the slot of the window's end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gauge {
    pub value: u64,
    pub age: Duration,
}

impl Sums {
    /// Whether the window holds nothing of the series: no count and no gauge.
    pub fn is_empty(&self) -> bool {
        *self == Sums::default()
    }

    fn add_slot(&mut self, slot: &Slot) {
        // The `u32` counts of at most 10 slots cannot overflow a `u64`; the byte counts are
        // `u64` already, and a proxy may report any of them (a slot saturates at `u64::MAX`).
        for (sum, &n) in self.requests.iter_mut().zip(&slot.requests) {
            *sum += u64::from(n);
        }
        for (sum, &n) in self.latency.buckets.iter_mut().zip(&slot.latency) {
            *sum += u64::from(n);
        }
        self.connections_opened += u64::from(slot.opened);
        self.bytes_received = self.bytes_received.saturating_add(slot.received);
        self.bytes_sent = self.bytes_sent.saturating_add(slot.sent);
    }
}

/// One time slot of one series.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// The slot's number since the epoch, plus 1 (0: never written).
    number: u32,
    opened: u32,
    /// The last gauge recorded in the slot, [`NO_GAUGE`] when none.
    active: u32,
    requests: [u32; 5],
    latency: [u32; LATENCY_BUCKET_COUNT],
    received: u64,
    sent: u64,
}

const NO_GAUGE: u32 = u32::MAX;

/// A ring of `N` slots of `SLOT_MS` milliseconds.
#[derive(Clone, Debug)]
struct Ring<const N: usize, const SLOT_MS: u64> {
    slots: [Slot; N],
}

impl<const N: usize, const SLOT_MS: u64> Default for Ring<N, SLOT_MS> {
    fn default() -> Self {
        Ring {
            slots: [Slot::default(); N],
        }
    }
}

fn saturating(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl<const N: usize, const SLOT_MS: u64> Ring<N, SLOT_MS> {
    const SPAN: Duration = Duration::from_millis(N as u64 * SLOT_MS);

    fn number(at: Duration) -> u32 {
        let ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        saturating(ms / SLOT_MS + 1)
    }

    fn record(&mut self, at: Duration, value: &Value) {
        let number = Self::number(at);
        let slot = &mut self.slots[number as usize % N];
        if slot.number > number {
            // A newer slot took its place: older than this ring covers.
            return;
        }
        if slot.number < number {
            *slot = Slot {
                number,
                active: NO_GAUGE,
                ..Slot::default()
            };
        }
        match *value {
            Value::Requests(class, n) => {
                let c = &mut slot.requests[class.index()];
                *c = c.saturating_add(saturating(n));
            }
            Value::Latency(latency) => {
                for (c, &n) in slot.latency.iter_mut().zip(&latency.buckets) {
                    *c = c.saturating_add(saturating(n));
                }
            }
            Value::ConnectionsOpened(n) => slot.opened = slot.opened.saturating_add(saturating(n)),
            // One below the "none" marker at most.
            Value::ConnectionsActive(n) => slot.active = saturating(n).min(NO_GAUGE - 1),
            Value::BytesReceived(n) => slot.received = slot.received.saturating_add(n),
            Value::BytesSent(n) => slot.sent = slot.sent.saturating_add(n),
        }
    }

    /// The sums of the `slots` slots ending with `now`'s, with the latest gauge among them.
    fn sum(&self, now: Duration, slots: u32) -> Sums {
        let last = Self::number(now);
        let first = last.saturating_sub(slots - 1).max(1);
        let mut out = Sums::default();
        for number in first..=last {
            let slot = &self.slots[number as usize % N];
            if slot.number == number {
                out.add_slot(slot);
                if slot.active != NO_GAUGE {
                    out.gauge = Some(Gauge {
                        value: u64::from(slot.active),
                        age: Duration::from_millis(u64::from(last - number) * SLOT_MS),
                    });
                }
            }
        }
        out
    }
}

/// One subject's windows.
#[derive(Clone, Debug, Default)]
struct Series {
    fine: Ring<10, 1_000>,
    mid: Ring<6, 10_000>,
    coarse: Ring<10, 60_000>,
}

impl Series {
    fn record(&mut self, at: Duration, value: &Value) {
        self.fine.record(at, value);
        self.mid.record(at, value);
        self.coarse.record(at, value);
    }

    fn sum(&self, now: Duration, window: Window) -> Sums {
        match window {
            Window::Fine(n) => self.fine.sum(now, n),
            Window::Mid(n) => self.mid.sum(now, n),
            Window::Coarse(n) => self.coarse.sum(now, n),
        }
    }
}

/// A window resolved to a ring and a number of its slots.
#[derive(Clone, Copy, Debug)]
enum Window {
    Fine(u32),
    Mid(u32),
    Coarse(u32),
}

impl Window {
    /// The ring and slots that answer `window`, and the window's length rounded up to them.
    fn of(window: Duration) -> (Window, Duration) {
        fn slots(window: Duration, slot_ms: u64) -> u32 {
            let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            saturating(ms.div_ceil(slot_ms).max(1))
        }
        let window = window.min(MAX_WINDOW);
        if window <= Ring::<10, 1_000>::SPAN {
            let n = slots(window, 1_000);
            (Window::Fine(n), Duration::from_secs(u64::from(n)))
        } else if window <= Ring::<6, 10_000>::SPAN {
            let n = slots(window, 10_000);
            (Window::Mid(n), Duration::from_secs(10 * u64::from(n)))
        } else {
            let n = slots(window, 60_000);
            (Window::Coarse(n), Duration::from_secs(60 * u64::from(n)))
        }
    }
}

/// One proxy's series.
#[derive(Debug, Default)]
struct ProxyWindows {
    last_record: Duration,
    /// Boxed: a map's spare buckets then cost a pointer each, not a series' slots.
    series: HashMap<Subject, Box<Series>>,
}

/// Golden metrics per proxy and subject over sliding windows up to 10 m.
#[derive(Debug, Default)]
pub struct Store {
    limits: Limits,
    proxies: HashMap<ProxyId, ProxyWindows>,
    stats: StoreStats,
    /// The minute of the last sweep for silent proxies.
    swept: u64,
}

impl Store {
    pub fn new(limits: Limits) -> Store {
        Store {
            limits,
            ..Store::default()
        }
    }

    /// What was dropped so far.
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// How many proxies are kept.
    pub fn proxies(&self) -> usize {
        self.proxies.len()
    }

    /// Records `samples` of `proxy` received at `at`. Evicts silent proxies once a minute.
    pub fn record(&mut self, proxy: &ProxyId, at: Duration, samples: &[Sample]) {
        self.sweep(at);
        self.record_admitting(proxy, at, samples, || true);
    }

    /// Evicts the silent proxies ([`Store::evict_silent`]) if `now` is in a later minute than
    /// the last sweep; how many. [`Store::record`] sweeps first; a caller of
    /// [`Store::record_admitting`] sweeps when it chooses.
    pub fn sweep(&mut self, now: Duration) -> usize {
        let minute = now.as_secs() / 60;
        if minute <= self.swept {
            return 0;
        }
        self.swept = minute;
        self.evict_silent(now)
    }

    /// Records as [`Store::record`] does, without sweeping, and keeps a proxy new to the store
    /// only if it is within [`Limits::max_proxies`] and `admit` (called then, and only then)
    /// agrees: for a cap shared by several stores (`super::shards`). A refused proxy counts in
    /// [`StoreStats::dropped_proxy_records`].
    pub fn record_admitting(
        &mut self,
        proxy: &ProxyId,
        at: Duration,
        samples: &[Sample],
        admit: impl FnOnce() -> bool,
    ) {
        if !self.proxies.contains_key(proxy) {
            if self.proxies.len() >= self.limits.max_proxies || !admit() {
                self.stats.dropped_proxy_records += 1;
                return;
            }
            self.proxies.insert(proxy.clone(), ProxyWindows::default());
        }
        let Some(windows) = self.proxies.get_mut(proxy) else {
            return;
        };
        windows.last_record = windows.last_record.max(at);
        for sample in samples {
            if let Some(series) = windows.series.get_mut(&sample.subject) {
                series.record(at, &sample.value);
            } else if sample.value.is_nothing() {
                // An idle subject costs nothing.
            } else if windows.series.len() >= self.limits.max_series_per_proxy {
                self.stats.dropped_series_samples += 1;
            } else {
                windows
                    .series
                    .entry(sample.subject.clone())
                    .or_default()
                    .record(at, &sample.value);
            }
        }
    }

    /// Removes the proxies that recorded nothing for [`Limits::silence`] before `now`; how
    /// many.
    pub fn evict_silent(&mut self, now: Duration) -> usize {
        let before = self.proxies.len();
        let silence = self.limits.silence;
        self.proxies
            .retain(|_, w| now.saturating_sub(w.last_record) <= silence);
        let evicted = before - self.proxies.len();
        self.stats.evicted_proxies += evicted as u64;
        evicted
    }

    /// Forgets `proxy` (its Pod is gone); whether it was kept.
    pub fn forget(&mut self, proxy: &ProxyId) -> bool {
        self.proxies.remove(proxy).is_some()
    }

    /// Every series of the proxies `include` accepts over the `window` ending at `now` (up to
    /// 10 m, rounded up to the answering ring's slot), leaving out the series with nothing in
    /// it: what this store adds to an answer, for merging with other replicas'
    /// ([`Snapshot::merge`]). Answers query the snapshot ([`Snapshot::query`]).
    pub fn snapshot(
        &self,
        now: Duration,
        window: Duration,
        mut include: impl FnMut(&ProxyId) -> bool,
    ) -> Snapshot {
        let (resolved, length) = Window::of(window);
        let mut out = Snapshot::empty(length);
        for (proxy, windows) in &self.proxies {
            if !include(proxy) {
                continue;
            }
            for (subject, series) in &windows.series {
                let sums = series.sum(now, resolved);
                if !sums.is_empty() {
                    out.insert(proxy, subject, sums);
                }
            }
        }
        out
    }

    /// The bytes the windows take, counted from the data structures' sizes: every map's
    /// allocated capacity (entries and control bytes, as hashbrown lays them out), and the
    /// keys' heap (names). Not counted: the allocator's own overhead.
    pub fn memory_bytes(&self) -> usize {
        fn map_bytes<K, V>(capacity: usize) -> usize {
            // hashbrown: one control byte per bucket plus a group's width; buckets are the
            // next power of two above capacity × 8/7.
            let buckets = if capacity == 0 {
                0
            } else {
                (capacity * 8 / 7).next_power_of_two()
            };
            buckets * (size_of::<(K, V)>() + 1) + if buckets > 0 { 16 } else { 0 }
        }
        let mut bytes =
            size_of::<Store>() + map_bytes::<ProxyId, ProxyWindows>(self.proxies.capacity());
        for (proxy, windows) in &self.proxies {
            bytes += proxy.namespace.capacity() + proxy.pod.capacity();
            bytes += map_bytes::<Subject, Box<Series>>(windows.series.capacity());
            bytes += windows.series.len() * size_of::<Series>();
            bytes += windows
                .series
                .keys()
                .map(|subject| match subject {
                    Subject::Upstream(c) => c.as_str().len(),
                    Subject::Listener(p) => p.as_str().len(),
                    Subject::Route(v, r) => {
                        v.as_str().len() + r.group.capacity() + r.name.capacity()
                    }
                })
                .sum::<usize>();
        }
        bytes
    }
}

/// The sum of `counts`, at most `u64::MAX`: a snapshot merged from another replica's JSON may
/// hold any counts, and a total must not wrap (nor panic where overflow is checked).
pub(crate) fn saturating_sum(counts: &[u64]) -> u64 {
    counts.iter().fold(0, |sum, &n| sum.saturating_add(n))
}
