use std::{
    collections::BTreeMap,
    sync::{
        Arc, Barrier,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use super::*;

fn config(max_tokens: u32, tokens_per_fill: u32, fill_interval: Duration) -> TokenBucketConfig {
    TokenBucketConfig {
        max_tokens,
        tokens_per_fill,
        fill_interval,
    }
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn a_bucket_starts_full_and_refills_per_whole_interval_up_to_its_max() {
    let made = Instant::now();
    let ms = |n| made + Duration::from_millis(n);
    let bucket = Bucket::new(config(5, 2, Duration::from_millis(100)), made);
    assert_eq!(bucket.available_at(made), 5);
    for _ in 0..5 {
        assert!(bucket.take_at(ms(10)));
    }
    assert!(!bucket.take_at(ms(99)), "empty, and no whole interval yet");
    // One whole interval: two tokens.
    assert_eq!(bucket.available_at(ms(199)), 2);
    assert!(bucket.take_at(ms(150)));
    assert!(bucket.take_at(ms(150)));
    assert!(!bucket.take_at(ms(199)));
    // Two more intervals: four; thirty more: full, not more.
    assert_eq!(bucket.available_at(ms(300)), 4);
    assert_eq!(bucket.available_at(ms(3_100)), 5);
    for _ in 0..5 {
        assert!(bucket.take_at(ms(3_100)));
    }
    assert!(!bucket.take_at(ms(3_100)));
    // A clock read before the last take (another thread's) fills nothing.
    assert!(!bucket.take_at(ms(3_000)));
}

#[test]
fn racing_threads_take_exactly_the_tokens_there_are() {
    let bucket = Arc::new(Bucket::new(config(100, 1, HOUR), Instant::now()));
    let taken = Arc::new(AtomicU32::new(0));
    let start = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (bucket, taken, start) = (bucket.clone(), taken.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..1_000 {
                    if bucket.take_at(Instant::now()) {
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(taken.load(Ordering::Relaxed), 100);
    assert_eq!(bucket.available_at(Instant::now()), 0);
}

#[test]
fn an_unchanged_bucket_keeps_its_tokens_and_a_changed_one_starts_full() {
    let buckets = Buckets::default();
    let slot = buckets.slot("tap");
    assert!(!slot.take(), "no bucket configured: nothing is logged");

    let three = BTreeMap::from([("tap".to_owned(), Arc::new(config(3, 1, HOUR)))]);
    buckets.configure(&three);
    assert!(slot.take() && slot.take());
    // The same configuration again (another listener changed): one token left.
    buckets.configure(&three.clone());
    assert!(slot.take());
    assert!(!slot.take());
    assert!(
        Arc::ptr_eq(&buckets.slot("tap"), &slot),
        "one bucket per name"
    );

    // A new rate: a new, full bucket, which the slot's holders see.
    let five = BTreeMap::from([("tap".to_owned(), Arc::new(config(5, 1, HOUR)))]);
    buckets.configure(&five);
    for _ in 0..5 {
        assert!(slot.take());
    }
    assert!(!slot.take());

    // Removed: nothing is logged, then back, full.
    buckets.configure(&BTreeMap::new());
    assert!(slot.bucket().is_none());
    assert!(!slot.take());
    buckets.configure(&five);
    assert_eq!(
        slot.bucket().map(|b| b.available_at(Instant::now())),
        Some(5)
    );
}

#[test]
fn names_no_one_holds_are_forgotten() {
    let buckets = Buckets::default();
    buckets.configure(&BTreeMap::from([(
        "tap".to_owned(),
        Arc::new(config(1, 1, HOUR)),
    )]));
    let held = buckets.slot("tap");
    assert!(held.take());
    buckets.configure(&BTreeMap::new());
    // Still held: the same slot, empty.
    assert!(Arc::ptr_eq(&buckets.slot("tap"), &held));
    drop(held);
    buckets.configure(&BTreeMap::new());
    assert_eq!(
        buckets
            .by_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len(),
        0
    );
}
