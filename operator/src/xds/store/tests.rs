use super::*;
use crate::xds::{
    fixtures::{cluster, snapshot},
    snapshot::TypeUrl,
};

fn snap(rev: i64) -> Arc<Snapshot> {
    snapshot(vec![(TypeUrl::Cluster, "a", cluster("a", rev))])
}

#[test]
fn set_reports_whether_anything_changed() {
    let store = SnapshotStore::new();
    let key = ProxyKey::from("default/web-0");
    assert!(store.set(key.clone(), snap(1)));
    assert!(
        !store.set(key.clone(), snap(1)),
        "same content, new allocation"
    );
    assert!(store.set(key.clone(), snap(2)));
    assert_eq!(
        store.get(&key).unwrap().version(TypeUrl::Cluster),
        snap(2).version(TypeUrl::Cluster)
    );
    assert_eq!(store.keys(), [key]);
}

#[tokio::test]
async fn subscribers_wait_for_the_first_snapshot_and_see_only_changes() {
    let store = SnapshotStore::new();
    let key = ProxyKey::from("default/web-0");
    let mut sub = store.subscribe(key.clone());
    assert!(sub.latest().is_none());
    assert_eq!(store.subscribers(&key), 1);

    store.set(key.clone(), snap(1));
    assert!(sub.changed().await);
    assert!(sub.latest().is_some());

    store.set(key.clone(), snap(1));
    let unchanged = tokio::time::timeout(std::time::Duration::from_millis(20), sub.changed());
    assert!(
        unchanged.await.is_err(),
        "an identical snapshot wakes nobody"
    );
}

#[test]
fn entries_without_snapshot_or_stream_are_dropped() {
    let store = SnapshotStore::new();
    let key = ProxyKey::from("unknown");
    let sub = store.subscribe(key.clone());
    drop(sub);
    assert_eq!(store.subscribers(&key), 0);
    assert!(
        store.lock().is_empty(),
        "an unknown proxy's stream leaves nothing behind"
    );

    store.set(key.clone(), snap(1));
    let mut sub = store.subscribe(key.clone());
    assert!(store.remove(&key));
    assert!(
        sub.latest().is_none(),
        "open streams learn the proxy is gone"
    );
    assert!(store.keys().is_empty());
    drop(sub);
    assert!(store.lock().is_empty());
    assert!(!store.remove(&key));
}
