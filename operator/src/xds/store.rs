//! The snapshot store: the latest snapshot per proxy, and a watch for each proxy's streams.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::watch;

use super::snapshot::Snapshot;

#[cfg(test)]
mod tests;

/// Which proxy a snapshot is for. Comes from an authenticated credential, never from `node.id`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyKey(Arc<str>);

/// One proxy's latest snapshot; `None` until published (or after removal).
type Slot = watch::Sender<Option<Arc<Snapshot>>>;

/// Per-proxy snapshots. Cloning gives another handle to the same store.
#[derive(Clone, Default)]
pub struct SnapshotStore {
    proxies: Arc<Mutex<HashMap<ProxyKey, Slot>>>,
}

/// A stream's view of one proxy's snapshot. `None` until the first snapshot is published.
pub struct SnapshotSubscription {
    key: ProxyKey,
    rx: watch::Receiver<Option<Arc<Snapshot>>>,
    store: SnapshotStore,
}

// === impl ProxyKey ===

impl ProxyKey {
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        ProxyKey(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProxyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProxyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyKey({:?})", &*self.0)
    }
}

impl From<&str> for ProxyKey {
    fn from(key: &str) -> Self {
        ProxyKey::new(key)
    }
}

impl From<String> for ProxyKey {
    fn from(key: String) -> Self {
        ProxyKey::new(key)
    }
}

// === impl SnapshotStore ===

impl SnapshotStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ProxyKey, Slot>> {
        // The map stays consistent even if a holder panicked: every update is a single insert.
        self.proxies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes a proxy's snapshot. Returns whether it differs from the one before; only then
    /// are the proxy's streams woken, so unchanged proxies get no push.
    pub fn set(&self, key: ProxyKey, snapshot: impl Into<Arc<Snapshot>>) -> bool {
        let snapshot = snapshot.into();
        let mut proxies = self.lock();
        let tx = proxies
            .entry(key)
            .or_insert_with(|| watch::Sender::new(None));
        tx.send_if_modified(|current| match current {
            Some(current) if current.same_content(&snapshot) => false,
            _ => {
                *current = Some(snapshot);
                true
            }
        })
    }

    pub fn get(&self, key: &ProxyKey) -> Option<Arc<Snapshot>> {
        self.lock().get(key).and_then(|tx| tx.borrow().clone())
    }

    /// Forgets a proxy's snapshot. Streams still open keep serving what they have, rather than
    /// being told to drop every listener of a pod that is probably shutting down anyway; a
    /// later `set` for the same key reaches them.
    pub fn remove(&self, key: &ProxyKey) -> bool {
        let mut proxies = self.lock();
        let Some(tx) = proxies.get(key) else {
            return false;
        };
        let had = tx.borrow().is_some();
        if tx.receiver_count() == 0 {
            proxies.remove(key);
        } else {
            tx.send_replace(None);
        }
        had
    }

    /// Watches a proxy's snapshot, which may not exist yet.
    pub fn subscribe(&self, key: ProxyKey) -> SnapshotSubscription {
        let mut proxies = self.lock();
        let tx = proxies
            .entry(key.clone())
            .or_insert_with(|| watch::Sender::new(None));
        SnapshotSubscription {
            key,
            rx: tx.subscribe(),
            store: self.clone(),
        }
    }

    /// Keys with a published snapshot.
    pub fn keys(&self) -> Vec<ProxyKey> {
        let proxies = self.lock();
        proxies
            .iter()
            .filter(|(_, tx)| tx.borrow().is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Open subscriptions (streams) for a proxy.
    pub fn subscribers(&self, key: &ProxyKey) -> usize {
        self.lock().get(key).map_or(0, |tx| tx.receiver_count())
    }
}

impl fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("proxies", &self.lock().len())
            .finish()
    }
}

// === impl SnapshotSubscription ===

impl SnapshotSubscription {
    pub fn key(&self) -> &ProxyKey {
        &self.key
    }

    /// The newest snapshot, marking it seen.
    pub fn latest(&mut self) -> Option<Arc<Snapshot>> {
        self.rx.borrow_and_update().clone()
    }

    /// Waits for a snapshot newer than the last one seen. `false` once the store is gone.
    /// Cancel-safe, so it can sit in a `select!`.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

impl fmt::Debug for SnapshotSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotSubscription")
            .field("key", &self.key)
            .finish()
    }
}

impl Drop for SnapshotSubscription {
    /// Drops the entry of a proxy that has no snapshot and no other stream, so connections from
    /// unknown or deleted proxies leave nothing behind.
    fn drop(&mut self) {
        let mut proxies = self.store.lock();
        if let Some(tx) = proxies.get(&self.key)
            && tx.borrow().is_none()
            && tx.receiver_count() <= 1
        {
            proxies.remove(&self.key);
        }
    }
}
