//! The tap sessions: what each selects, its rate and its queue; which proxies are tapped.
//!
//! ```text
//!  open(filter) ─▶ Session (queue) ◀─ publish(proxy, events): filter, then rate, then try_send
//!       │                                   (over the rate or a full queue: dropped, counted)
//!       └─▶ changes() ticks ─▶ the publisher recompiles the proxies whose `selects` changed
//! ```

use std::{
    collections::BTreeMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use switchyard_adapters::{
    envoy::{ProxyTap, TapMatch, TapRate},
    model::ProxyId,
};
use tokio::sync::{mpsc, watch};

use super::{TapEvent, reorder::Reorder};

/// Sessions open at once, over all users.
pub const MAX_SESSIONS: usize = 64;
/// Events a session holds for its reader before it drops new ones.
pub const SESSION_QUEUE: usize = 1_024;
/// Events per second a session shows unless it asks for another rate.
pub const DEFAULT_MAX_RPS: u32 = 100;
/// The highest rate a session may ask for.
pub const MAX_RPS: u32 = 1_000;

/// What a session shows: the requests of the proxies in `namespace` (only `pod`'s with one)
/// that match every other field given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapFilter {
    pub namespace: String,
    pub pod: Option<String>,
    /// Exact, upper-case (`GET`).
    pub method: Option<String>,
    /// Exact.
    pub authority: Option<String>,
    pub path_prefix: Option<String>,
    /// At most this many events a second; the rest are dropped.
    pub max_rps: u32,
}

impl TapFilter {
    /// A tap request's query: `namespace` (required), `pod`, `method`, `authority`, `path` (a
    /// prefix), `max_rps` (1 to [`MAX_RPS`], default [`DEFAULT_MAX_RPS`]); values
    /// percent-encoded.
    ///
    /// # Errors
    ///
    /// A missing namespace, an unknown parameter or a bad rate, naming the parameter.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut namespace = None;
        let mut filter = TapFilter {
            namespace: String::new(),
            pod: None,
            method: None,
            authority: None,
            path_prefix: None,
            max_rps: DEFAULT_MAX_RPS,
        };
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| format!("{key}: not UTF-8"))?
                .into_owned();
            let some = |v: String| (!v.is_empty()).then_some(v);
            match key {
                "namespace" => namespace = some(value),
                "pod" => filter.pod = some(value),
                "method" => filter.method = some(value.to_ascii_uppercase()),
                "authority" => filter.authority = some(value),
                "path" => filter.path_prefix = some(value),
                "max_rps" => {
                    filter.max_rps = value
                        .parse()
                        .ok()
                        .filter(|r| (1..=MAX_RPS).contains(r))
                        .ok_or_else(|| format!("max_rps={value}: a number from 1 to {MAX_RPS}"))?;
                }
                other => return Err(format!("{other}: not a tap parameter")),
            }
        }
        filter.namespace = namespace.ok_or("namespace: required")?;
        Ok(filter)
    }

    /// The query [`TapFilter::parse`] reads back as this filter, values percent-encoded.
    pub fn query(&self) -> String {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut query = vec![
            format!("namespace={}", enc(&self.namespace)),
            format!("max_rps={}", self.max_rps),
        ];
        for (key, value) in [
            ("pod", &self.pod),
            ("method", &self.method),
            ("authority", &self.authority),
            ("path", &self.path_prefix),
        ] {
            if let Some(v) = value {
                query.push(format!("{key}={}", enc(v)));
            }
        }
        query.join("&")
    }

    /// Whether the session wants `proxy`'s requests.
    pub fn selects(&self, proxy: &ProxyId) -> bool {
        proxy.namespace == self.namespace && self.pod.as_ref().is_none_or(|p| *p == proxy.pod)
    }

    /// Whether the session shows only some of a proxy's requests (by method, authority or
    /// path).
    pub fn filters_requests(&self) -> bool {
        self.method.is_some() || self.authority.is_some() || self.path_prefix.is_some()
    }

    /// Whether the session shows `event`.
    pub fn matches(&self, event: &TapEvent) -> bool {
        self.method.as_ref().is_none_or(|m| *m == event.method)
            && self
                .authority
                .as_ref()
                .is_none_or(|a| *a == event.authority)
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| event.path.starts_with(p.as_str()))
    }
}

/// Every open session; shared by the admin handlers (which open them), the access-log server
/// (which publishes to them) and the publisher (which asks what is tapped).
#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    sessions: BTreeMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    filter: TapFilter,
    tx: mpsc::Sender<TapEvent>,
    bucket: Bucket,
}

/// A token bucket of `rate` tokens a second, holding at most one second's worth.
#[derive(Debug)]
pub(super) struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(super) fn new(rate: u32, now: Instant) -> Self {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: now,
        }
    }

    pub(super) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            inner: Mutex::default(),
            changes: watch::channel(0).0,
        }
    }
}

/// An open tap: its events in the order their requests started, until it is dropped (which
/// closes it).
#[derive(Debug)]
pub struct Session {
    id: u64,
    /// The filter's `max_rps`, for streams that merge other replicas' events into this one's.
    max_rps: u32,
    hub: Arc<Hub>,
    events: mpsc::Receiver<TapEvent>,
    reorder: Reorder,
}

impl Session {
    /// The most events a second the session's filter asks for.
    pub fn max_rps(&self) -> u32 {
        self.max_rps
    }

    /// The next event, at least [`WINDOW`](super::reorder::WINDOW) after it arrived; `None`
    /// never comes while the session is open.
    pub async fn next(&mut self) -> Option<TapEvent> {
        loop {
            if let Some(event) = self.reorder.pop(tokio::time::Instant::now()) {
                return Some(event);
            }
            let event = match self.reorder.deadline() {
                Some(deadline) => tokio::select! {
                    event = self.events.recv() => event,
                    () = tokio::time::sleep_until(deadline) => continue,
                },
                None => self.events.recv().await,
            };
            let event = event?;
            self.reorder.push(event, tokio::time::Instant::now());
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.hub.close(self.id);
    }
}

impl Hub {
    /// Opens a session.
    ///
    /// # Errors
    ///
    /// When [`MAX_SESSIONS`] are open.
    pub fn open(self: &Arc<Self>, filter: TapFilter) -> Result<Session, String> {
        let (tx, events) = mpsc::channel(SESSION_QUEUE);
        let max_rps = filter.max_rps;
        let id = {
            let mut inner = self.lock();
            if inner.sessions.len() >= MAX_SESSIONS {
                return Err(format!(
                    "{MAX_SESSIONS} taps are open already; try again when one ends"
                ));
            }
            inner.next += 1;
            let id = inner.next;
            let bucket = Bucket::new(filter.max_rps, Instant::now());
            inner.sessions.insert(id, Entry { filter, tx, bucket });
            id
        };
        self.changes.send_modify(|n| *n += 1);
        Ok(Session {
            id,
            max_rps,
            hub: Arc::clone(self),
            events,
            reorder: Reorder::new(SESSION_QUEUE),
        })
    }

    fn close(&self, id: u64) {
        let removed = self.lock().sessions.remove(&id).is_some();
        if removed {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Ticks whenever a session opens or closes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether any open session selects `proxy`.
    pub fn selects(&self, proxy: &ProxyId) -> bool {
        self.tap(proxy).is_some()
    }

    /// What `proxy` is asked for while sessions select it: every request at the rates of the
    /// sessions that show every request, added up, and each request that matches a session
    /// that shows only some at that session's rate, on a bucket of its own (a bucket that all
    /// requests drew on would starve it); `None` when no session selects it.
    pub fn tap(&self, proxy: &ProxyId) -> Option<ProxyTap> {
        let inner = self.lock();
        let mut tap = None::<ProxyTap>;
        for (id, filter) in inner.sessions.iter().map(|(id, e)| (*id, &e.filter)) {
            if !filter.selects(proxy) {
                continue;
            }
            // Parsing keeps a session's rate at 1 or more; one of 0 shows nothing, and must
            // not leave an empty `ProxyTap`, which logs every request.
            let Some(rate) = NonZeroU32::new(filter.max_rps).map(TapRate::new) else {
                continue;
            };
            let tap = tap.get_or_insert_default();
            if filter.filters_requests() {
                tap.matching.push(TapMatch {
                    id,
                    method: filter.method.clone(),
                    authority: filter.authority.clone(),
                    path_prefix: filter.path_prefix.clone(),
                    rate,
                });
            } else {
                tap.every = Some(tap.every.map_or(rate, |sum| sum.plus(rate)));
            }
        }
        tap
    }

    /// How many sessions are open.
    pub fn sessions(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Hands `events` from `proxy` to the sessions that want them, within each session's rate
    /// and queue; returns how many were dropped for either.
    pub fn publish(&self, proxy: &ProxyId, events: &[TapEvent], now: Instant) -> usize {
        let mut dropped = 0;
        let mut inner = self.lock();
        for entry in inner.sessions.values_mut() {
            if !entry.filter.selects(proxy) {
                continue;
            }
            for event in events.iter().filter(|e| entry.filter.matches(e)) {
                if !entry.bucket.take(now) || entry.tx.try_send(event.clone()).is_err() {
                    dropped += 1;
                }
            }
        }
        dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
