//! Connection limits of filter chains (`envoy.filters.network.connection_limit`): how many
//! connections each chain has open, and a slot for each.

#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

/// The open connections of every limited chain, by listener and chain name. A chain keeps its
/// count across configuration updates that keep the chain, as Envoy keeps an unchanged chain;
/// the table holds one counter per chain name ever limited, which the configuration bounds.
#[derive(Debug, Default)]
pub(super) struct ConnectionSlots {
    open: Mutex<HashMap<(String, String), Arc<AtomicU64>>>,
}

/// One open connection of a limited chain; gives its place back when dropped.
#[derive(Debug)]
pub(super) struct Slot(Arc<AtomicU64>);

impl ConnectionSlots {
    /// A slot on `listener`'s chain `chain`, unless `max` of its connections are open.
    pub(super) fn acquire(&self, listener: &str, chain: &str, max: u64) -> Option<Slot> {
        let counter = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (listener.to_owned(), chain.to_owned());
            open.entry(key).or_default().clone()
        };
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(counter))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
