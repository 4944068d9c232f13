use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use serde_json::{Value, json};

use super::*;
use crate::{
    annotations,
    inject::{admission::INJECTED, fixtures::pod_review},
};

/// Namespaces from a table, counting reads; `broken` fails every read.
#[derive(Default)]
struct FakeNamespaces {
    table: BTreeMap<String, Annotations>,
    reads: Arc<AtomicUsize>,
    broken: bool,
}

impl NamespaceSource for FakeNamespaces {
    fn annotations<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Annotations, String>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let answer = if self.broken {
            Err("connection refused".to_owned())
        } else {
            Ok(self.table.get(namespace).cloned().unwrap_or_default())
        };
        Box::pin(async move { answer })
    }
}

fn body(namespace: &str) -> Vec<u8> {
    serde_json::to_vec(&pod_review("u1", namespace, json!({"name": "web-0"}))).unwrap()
}

fn injector(namespaces: FakeNamespaces) -> (Injector, mpsc::Receiver<Note>) {
    let (tx, rx) = event_channel();
    let config = InjectConfig::new("switchyard-system");
    (Injector::new(config, Box::new(namespaces), tx), rx)
}

#[tokio::test]
async fn a_review_reads_the_namespace_and_hands_the_event_over() {
    let reads = Arc::new(AtomicUsize::new(0));
    let namespaces = FakeNamespaces {
        table: BTreeMap::from([(
            "demo".to_owned(),
            Annotations::from([(annotations::INJECT.to_owned(), "enabled".to_owned())]),
        )]),
        reads: reads.clone(),
        broken: false,
    };
    let (injector, mut events) = injector(namespaces);
    let answer: Value =
        serde_json::from_slice(&injector.review(&body("demo")).await.unwrap()).unwrap();
    assert_eq!(answer["response"]["uid"], "u1");
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    assert_eq!(reads.load(Ordering::SeqCst), 1);
    let note = events.try_recv().unwrap();
    assert_eq!(note.reason, INJECTED);
    assert_eq!(note.regarding.name.as_deref(), Some("web-0"));

    // Un-enrolled: read, admitted unchanged, nothing to report.
    let answer: Value =
        serde_json::from_slice(&injector.review(&body("other")).await.unwrap()).unwrap();
    assert!(answer["response"].get("patch").is_none());
    assert!(events.try_recv().is_err());
}

#[tokio::test]
async fn exempt_namespaces_are_answered_without_reading_them() {
    let reads = Arc::new(AtomicUsize::new(0));
    let (injector, _events) = injector(FakeNamespaces {
        reads: reads.clone(),
        broken: true,
        ..FakeNamespaces::default()
    });
    for ns in ["switchyard-system", "kube-system"] {
        let answer: Value =
            serde_json::from_slice(&injector.review(&body(ns)).await.unwrap()).unwrap();
        assert_eq!(answer["response"]["allowed"], true, "{ns}");
    }
    assert_eq!(reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_namespace_that_cannot_be_read_fails_the_review() {
    let (injector, _events) = injector(FakeNamespaces {
        broken: true,
        ..FakeNamespaces::default()
    });
    let e = injector.review(&body("demo")).await.unwrap_err();
    assert_eq!(e.to_string(), "reading namespace demo: connection refused");
}

#[tokio::test]
async fn a_full_event_queue_drops_events_rather_than_waiting() {
    let namespaces = FakeNamespaces {
        table: BTreeMap::from([(
            "demo".to_owned(),
            Annotations::from([(annotations::INJECT.to_owned(), "enabled".to_owned())]),
        )]),
        ..FakeNamespaces::default()
    };
    let (injector, mut events) = injector(namespaces);
    for _ in 0..EVENT_QUEUE + 5 {
        injector.review(&body("demo")).await.unwrap();
    }
    let mut queued = 0;
    while events.try_recv().is_ok() {
        queued += 1;
    }
    assert_eq!(queued, EVENT_QUEUE);
}

#[test]
fn the_namespace_cache_expires_and_stays_bounded() {
    let start = Instant::now();
    let mut cache = TtlCache::new(Duration::from_secs(2), 2);
    cache.insert("a".into(), 1, start);
    assert_eq!(cache.get("a", start + Duration::from_millis(1999)), Some(1));
    assert_eq!(cache.get("a", start + Duration::from_secs(2)), None);
    assert_eq!(cache.get("b", start), None);
    cache.insert("b".into(), 2, start + Duration::from_secs(3));
    // Full: the expired `a` goes to make room, the live `b` stays.
    cache.insert("c".into(), 3, start + Duration::from_secs(3));
    assert_eq!(cache.entries.len(), 2);
    assert_eq!(cache.get("b", start + Duration::from_secs(3)), Some(2));
    // Full of live entries: start over.
    cache.insert("d".into(), 4, start + Duration::from_secs(3));
    assert_eq!(cache.entries.len(), 1);
    assert_eq!(cache.get("d", start + Duration::from_secs(3)), Some(4));
}
