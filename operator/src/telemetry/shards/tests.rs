use std::{collections::BTreeSet, time::Duration};

use proptest::prelude::*;
use switchyard_adapters::model::ProxyId;
use switchyard_proxy_config::metrics::LATENCY_BUCKET_COUNT;

use super::{MIN_SHARDS, Shards, shards_for};
use crate::telemetry::{
    Latency, Limits, Sample, StatPrefix, StatusClass, Store, Subject, UpstreamCluster, Value,
};

// === Utils ===

fn proxy(i: usize) -> ProxyId {
    ProxyId {
        namespace: format!("ns-{}", i % 3),
        pod: format!("web-{i}"),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ok(n: u64) -> Sample {
    Sample {
        subject: Subject::Upstream(UpstreamCluster::new("demo/web|80")),
        value: Value::Requests(StatusClass::Success, n),
    }
}

fn subject(i: usize) -> Subject {
    match i % 3 {
        0 => Subject::Upstream(UpstreamCluster::new(format!("demo/svc-{i}|80"))),
        1 => Subject::Listener(StatPrefix::new(format!("inbound_{i}"))),
        _ => Subject::Upstream(UpstreamCluster::new("demo/web|80")),
    }
}

fn value(kind: usize, n: u64) -> Value {
    match kind % 6 {
        0 => Value::Requests(StatusClass::ALL[n as usize % 5], n),
        1 => {
            let mut latency = Latency::default();
            latency.buckets[n as usize % LATENCY_BUCKET_COUNT] = n;
            Value::Latency(latency)
        }
        2 => Value::ConnectionsOpened(n),
        3 => Value::ConnectionsActive(n),
        4 => Value::BytesReceived(n),
        _ => Value::BytesSent(n),
    }
}

/// Runs a query over every shard of `shards` and, while it holds each shard's lock, pushes
/// once for each of 64 known proxies without waiting (`try_record`): how many pushes completed
/// during the query. Deterministic: the hook runs inside the query, on this thread.
fn pushes_during_a_query(shards: &Shards) -> usize {
    let proxies: Vec<ProxyId> = (0..64).map(proxy).collect();
    for p in &proxies {
        shards.record(p, secs(1), &[ok(1)]);
    }
    let mut completed = 0;
    shards.snapshot_with(
        secs(2),
        secs(10),
        |_| true,
        |held| {
            for p in &proxies {
                let done = shards.try_record(p, secs(2), &[ok(1)]);
                // A push waits only when its proxy lives in the shard being read.
                assert_eq!(done, shards.shard_of(p) != held, "{p} during shard {held}");
                completed += usize::from(done);
            }
        },
    );
    completed
}

// === the locks a query holds ===

#[test]
fn a_push_completes_while_a_query_holds_another_shard() {
    let shards = Shards::new(Limits::default());
    let completed = pushes_during_a_query(&shards);
    assert!(
        completed > 0,
        "no push completed while a query was in progress"
    );

    // The same with a blocking push (`record`, as the server calls it) from another thread,
    // made while the query holds the first shard: it returns before the query goes on.
    let held_first = 0;
    let other = (0..)
        .map(proxy)
        .find(|p| shards.shard_of(p) != held_first)
        .expect("proxies outside shard 0");
    let mut pushed = false;
    shards.snapshot_with(
        secs(3),
        secs(10),
        |_| true,
        |held| {
            if held == held_first {
                std::thread::scope(|s| s.spawn(|| shards.record(&other, secs(3), &[ok(5)])).join())
                    .expect("push");
                pushed = true;
            }
        },
    );
    assert!(pushed);
    let snapshot = shards.snapshot(secs(3), secs(1), |p| *p == other);
    assert_eq!(snapshot.query([&other], |_| true).request_count(), 5);
}

#[test]
fn one_lock_blocks_every_push_during_a_query() {
    // The old design, one store behind one lock, is one shard: what the test above catches.
    let one = Shards::with_shards(Limits::default(), 1);
    assert_eq!(pushes_during_a_query(&one), 0);
}

#[test]
fn shards_are_counted_from_the_cap() {
    assert_eq!(shards_for(Limits::default().max_proxies), 313);
    assert_eq!(shards_for(10), MIN_SHARDS);
    assert_eq!(Shards::new(Limits::default()).shard_count(), 313);
    assert_eq!(Shards::with_shards(Limits::default(), 0).shard_count(), 1);
}

// === limits over every shard ===

#[test]
fn the_proxy_cap_is_over_every_shard() {
    let limits = Limits {
        max_proxies: 5,
        ..Limits::default()
    };
    let shards = Shards::with_shards(limits, 16);
    for i in 0..100 {
        shards.record(&proxy(i), secs(1), &[ok(1)]);
    }
    // The first five, wherever they hash, and no other: no shard refuses while there is room.
    assert_eq!(shards.proxies(), 5);
    assert_eq!(shards.stats().dropped_proxy_records, 95);
    let kept = shards.snapshot(secs(1), secs(10), |_| true);
    assert_eq!(
        kept.proxies().cloned().collect::<BTreeSet<_>>(),
        (0..5).map(proxy).collect::<BTreeSet<_>>()
    );

    // Forgetting one makes room for one.
    assert!(shards.forget(&proxy(0)));
    assert!(!shards.forget(&proxy(0)));
    shards.record(&proxy(50), secs(2), &[ok(1)]);
    shards.record(&proxy(51), secs(2), &[ok(1)]);
    assert_eq!(shards.proxies(), 5);
    assert!(shards.snapshot(secs(2), secs(10), |_| true).has(&proxy(50)));
    assert!(!shards.snapshot(secs(2), secs(10), |_| true).has(&proxy(51)));

    // Silent proxies are evicted from every shard by the first push of a later minute, before
    // it records: that push finds room.
    shards.record(&proxy(1), secs(500), &[ok(1)]);
    shards.record(&proxy(60), secs(620), &[ok(1)]);
    assert_eq!(shards.stats().evicted_proxies, 4);
    assert_eq!(shards.proxies(), 2);
    let kept = shards.snapshot(secs(620), secs(600), |_| true);
    assert_eq!(
        kept.proxies().cloned().collect::<BTreeSet<_>>(),
        [proxy(1), proxy(60)].into_iter().collect()
    );
}

#[test]
fn the_proxy_cap_holds_under_concurrent_pushes() {
    let limits = Limits {
        max_proxies: 50,
        ..Limits::default()
    };
    let shards = Shards::with_shards(limits, 16);
    std::thread::scope(|s| {
        for t in 0..4 {
            let shards = &shards;
            s.spawn(move || {
                for i in 0..200 {
                    shards.record(&proxy(t * 1_000 + i), secs(1), &[ok(1)]);
                }
            });
        }
    });
    assert_eq!(shards.proxies(), 50);
    assert_eq!(shards.stats().dropped_proxy_records, 750);
    assert_eq!(
        shards
            .snapshot(secs(1), secs(10), |_| true)
            .proxies()
            .count(),
        50
    );
}

#[test]
fn memory_is_the_stores_summed() {
    let empty = Shards::with_shards(Limits::default(), 16);
    let shards = Shards::with_shards(Limits::default(), 16);
    let mut store = Store::default();
    shards.record(&proxy(1), secs(1), &[ok(1)]);
    store.record(&proxy(1), secs(1), &[ok(1)]);
    assert_eq!(
        shards.memory_bytes() - empty.memory_bytes(),
        store.memory_bytes() - Store::default().memory_bytes()
    );
}

// === one store's answers ===

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any pushes, recorded in shards and in one store: the same snapshots (counts, buckets,
    /// gauges) for every window, and the same stats, caps and evictions included.
    #[test]
    fn shards_answer_as_one_store(
        shard_count in 1usize..40,
        pushes in prop::collection::vec(
            (0usize..40, prop::collection::vec((0usize..7, 0usize..6, 0u64..1_000), 0..4), 0u64..8_000),
            1..300,
        ),
    ) {
        let limits = Limits {
            max_series_per_proxy: 4,
            max_proxies: 24,
            ..Limits::default()
        };
        let shards = Shards::with_shards(limits, shard_count);
        let mut store = Store::new(limits);
        let mut at = Duration::ZERO;
        for (i, (p, samples, step_ms)) in pushes.iter().enumerate() {
            at += Duration::from_millis(*step_ms);
            let samples: Vec<Sample> = samples
                .iter()
                .map(|&(s, kind, n)| Sample { subject: subject(s), value: value(kind, n) })
                .collect();
            shards.record(&proxy(*p), at, &samples);
            store.record(&proxy(*p), at, &samples);
            if i % 25 == 0 {
                prop_assert_eq!(
                    shards.snapshot(at, secs(10), |_| true),
                    store.snapshot(at, secs(10), |_| true)
                );
            }
        }
        for window in [secs(1), secs(10), secs(45), secs(60), secs(600)] {
            prop_assert_eq!(
                shards.snapshot(at, window, |_| true),
                store.snapshot(at, window, |_| true)
            );
            prop_assert_eq!(
                shards.snapshot(at, window, |p| p.namespace == "ns-1"),
                store.snapshot(at, window, |p| p.namespace == "ns-1")
            );
        }
        prop_assert_eq!(shards.stats(), store.stats());
        prop_assert_eq!(shards.proxies(), store.proxies());
    }
}
