//! The injection webhook's IO: the Namespace's annotations read through the API (cached for a
//! few seconds), the answer computed by [`super::admission`], and its Event handed to
//! a task that publishes Events off the admission path.
//!
//! ```text
//!  POST /inject ─▶ Injector::review ─▶ admission::parse ─▶ namespace_to_read ─▶ NamespaceSource (TTL cache, then GET)
//!                                                        └▶ admission::answer ─▶ response
//!                                                                             └▶ Note ─▶ channel ─▶ publish_events ─▶ events.k8s.io
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tokio::sync::mpsc;

use super::{
    InjectConfig,
    admission::{self, Note},
};

#[cfg(test)]
mod tests;

/// How long a Namespace's annotations are reused: 2 s. A burst of Pods (a ReplicaSet scaling
/// up) reads the Namespace once; an annotation changed on the Namespace applies to Pods created
/// 2 s later.
pub const NAMESPACE_TTL: Duration = Duration::from_secs(2);
/// Namespaces kept at most; beyond it, expired entries are dropped, then everything.
const NAMESPACE_CACHE_MAX: usize = 4096;
/// How long one Namespace read may take before the review fails (and `failurePolicy` decides):
/// 5 s, half the webhook's `timeoutSeconds`.
const NAMESPACE_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Events waiting to be published; beyond it, new ones are dropped (and logged) rather than
/// holding up admission.
pub const EVENT_QUEUE: usize = 1024;

/// The annotations of one Namespace (empty when it has none or does not exist).
pub type Annotations = BTreeMap<String, String>;

/// Why a review could not be answered; the webhook then fails and `failurePolicy` decides.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("reading namespace {namespace}: {reason}")]
    Namespace { namespace: String, reason: String },
    #[error("writing the admission review: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// Where the injector reads a Namespace's annotations.
pub trait NamespaceSource: Send + Sync {
    fn annotations<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Annotations, String>>;
}

/// Answers injection reviews.
pub struct Injector {
    config: InjectConfig,
    namespaces: Box<dyn NamespaceSource>,
    events: mpsc::Sender<Note>,
}

impl Injector {
    /// `events` receives the Note of every answer that has one ([`publish_events`] takes the
    /// other end).
    pub fn new(
        config: InjectConfig,
        namespaces: Box<dyn NamespaceSource>,
        events: mpsc::Sender<Note>,
    ) -> Self {
        Injector {
            config,
            namespaces,
            events,
        }
    }

    pub fn config(&self) -> &InjectConfig {
        &self.config
    }

    /// The response body (an `AdmissionReview`) for a request body.
    pub async fn review(&self, body: &[u8]) -> Result<Vec<u8>, ReviewError> {
        let request = match admission::parse(body) {
            Ok(request) => request,
            Err(refusal) => return serde_json::to_vec(&refusal).map_err(ReviewError::Serialize),
        };
        let annotations = match admission::namespace_to_read(&request, &self.config) {
            Some(namespace) => self
                .namespaces
                .annotations(namespace)
                .await
                .map_err(|reason| ReviewError::Namespace {
                    namespace: namespace.to_owned(),
                    reason,
                })?,
            None => Annotations::new(),
        };
        let answer = admission::answer(&request, &annotations, &self.config);
        if let Some(note) = answer.note
            && let Err(e) = self.events.try_send(note)
        {
            tracing::warn!(error = %e, "injection event dropped");
        }
        serde_json::to_vec(&answer.review).map_err(ReviewError::Serialize)
    }
}

/// A channel for [`Injector::new`] and [`publish_events`].
pub fn event_channel() -> (mpsc::Sender<Note>, mpsc::Receiver<Note>) {
    mpsc::channel(EVENT_QUEUE)
}

/// Publishes the injector's Events until every sender is gone. `instance` is this replica's name.
pub async fn publish_events(client: Client, instance: String, mut notes: mpsc::Receiver<Note>) {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "switchyard-injector".into(),
            instance: Some(instance),
        },
    );
    while let Some(note) = notes.recv().await {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.note),
            action: "Inject".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &note.regarding).await {
            tracing::warn!(%error, reason = note.reason, "cannot emit injection event");
        }
    }
}

// === impl KubeNamespaces ===

/// Namespaces read through the API server, each reused for [`NAMESPACE_TTL`].
pub struct KubeNamespaces {
    api: Api<Namespace>,
    cache: Mutex<TtlCache<Annotations>>,
}

impl KubeNamespaces {
    pub fn new(client: Client) -> Self {
        KubeNamespaces {
            api: Api::all(client),
            cache: Mutex::new(TtlCache::new(NAMESPACE_TTL, NAMESPACE_CACHE_MAX)),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, TtlCache<Annotations>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NamespaceSource for KubeNamespaces {
    fn annotations<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Annotations, String>> {
        Box::pin(async move {
            if let Some(hit) = self.cache().get(namespace, Instant::now()) {
                return Ok(hit);
            }
            let read = tokio::time::timeout(NAMESPACE_READ_TIMEOUT, self.api.get_opt(namespace));
            let annotations = match read.await {
                Err(_) => return Err(format!("no answer within {NAMESPACE_READ_TIMEOUT:?}")),
                Ok(Err(e)) => return Err(e.to_string()),
                // A Namespace that does not exist holds no Pods: the API server refuses them.
                Ok(Ok(ns)) => ns
                    .and_then(|ns| ns.metadata.annotations)
                    .unwrap_or_default(),
            };
            self.cache()
                .insert(namespace.to_owned(), annotations.clone(), Instant::now());
            Ok(annotations)
        })
    }
}

/// Values reused for a while, by key; the caller says what time it is.
#[derive(Debug)]
struct TtlCache<V> {
    ttl: Duration,
    max: usize,
    entries: HashMap<String, (Instant, V)>,
}

impl<V: Clone> TtlCache<V> {
    fn new(ttl: Duration, max: usize) -> Self {
        TtlCache {
            ttl,
            max,
            entries: HashMap::new(),
        }
    }

    fn get(&self, key: &str, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(_, v)| v.clone())
    }

    fn insert(&mut self, key: String, value: V, now: Instant) {
        if self.entries.len() >= self.max {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
            if self.entries.len() >= self.max {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (now, value));
    }
}
