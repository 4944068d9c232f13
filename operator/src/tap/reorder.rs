//! Puts a session's events back in the order their requests started (sans-IO). Each of a
//! proxy's workers logs on its own stream and flushes on its own timer, so two requests made
//! one after the other on two connections can arrive the other way round.
//!
//! ```text
//!  push(event, arrived) ─▶ held, earliest start first ─▶ pop(now): the earliest, once it has
//!                                                          been held for WINDOW
//! ```

use std::{cmp::Reverse, collections::BinaryHeap, time::Duration};

use tokio::time::Instant;

use super::TapEvent;

/// How long an event is held for an earlier one to catch up: twice the proxies' flush interval
/// ([`switchyard_adapters::envoy::TAP_FLUSH_INTERVAL`]), the most two workers' flushes of
/// requests made in order can be apart.
pub const WINDOW: Duration = switchyard_adapters::envoy::TAP_FLUSH_INTERVAL.saturating_mul(2);

/// The events held, bounded by `max`: past it, the earliest goes out at once.
#[derive(Debug)]
pub struct Reorder {
    held: BinaryHeap<Reverse<Held>>,
    arrivals: u64,
    max: usize,
}

#[derive(Debug)]
struct Held {
    start_micros: u64,
    /// Arrival order, for events that started in the same microsecond.
    arrival: u64,
    arrived: Instant,
    event: TapEvent,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl Held {
    fn key(&self) -> (u64, u64) {
        (self.start_micros, self.arrival)
    }
}

impl Reorder {
    /// Holds at most `max` events.
    pub fn new(max: usize) -> Self {
        Reorder {
            held: BinaryHeap::new(),
            arrivals: 0,
            max: max.max(1),
        }
    }

    /// Holds `event`, which arrived at `arrived`.
    pub fn push(&mut self, event: TapEvent, arrived: Instant) {
        self.arrivals += 1;
        self.held.push(Reverse(Held {
            start_micros: event.start_micros,
            arrival: self.arrivals,
            arrived,
            event,
        }));
    }

    /// The earliest-started event held, if it has been held for [`WINDOW`] by `now` or more
    /// than `max` are held.
    pub fn pop(&mut self, now: Instant) -> Option<TapEvent> {
        let Reverse(head) = self.held.peek()?;
        if self.held.len() <= self.max && now < head.arrived + WINDOW {
            return None;
        }
        self.held.pop().map(|Reverse(h)| h.event)
    }

    /// When [`pop`](Self::pop) will next give an event, if one is held.
    pub fn deadline(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse(h)| h.arrived + WINDOW)
    }
}
