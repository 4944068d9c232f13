use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::*;
use crate::config::{Endpoint, OutlierDetection};

// === Utils ===

fn endpoint(port: u16, weight: u32) -> Endpoint {
    Endpoint {
        address: SocketAddr::from(([10, 0, 0, 1], port)),
        weight,
        socket_labels: BTreeMap::new(),
    }
}

fn endpoints(n: u16) -> Arc<[Endpoint]> {
    (0..n).map(|i| endpoint(8000 + i, 1)).collect()
}

fn outlier(consecutive_5xx: u32, max_ejection_percent: u32) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx,
        consecutive_gateway_failure: None,
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Reports one outcome for the endpoint at `index`, whatever the balancer would pick.
fn report(balancer: &Balancer, index: usize, now: Instant, outcome: Outcome) -> Option<Ejection> {
    let others: Vec<usize> = (0..balancer.endpoints().len())
        .filter(|&i| i != index)
        .collect();
    let pick = balancer.pick(now, &others).expect("an endpoint");
    assert_eq!(pick.index(), index, "the only endpoint not excluded");
    pick.complete(now, outcome)
}

fn counts(balancer: &Balancer, seed: u64, n: usize, now: Instant, exclude: &[usize]) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut counts = vec![0; balancer.endpoints().len()];
    for _ in 0..n {
        let pick = balancer
            .pick_with(&mut rng, now, exclude)
            .expect("an endpoint");
        counts[pick.index()] += 1;
    }
    counts
}

// === Tests ===

#[test]
fn empty_cluster_picks_nothing() {
    let balancer = Balancer::new(Arc::from(Vec::new()), None);
    assert!(balancer.pick(Instant::now(), &[]).is_none());
}

#[test]
fn cheaper_endpoint_is_preferred() {
    let now = Instant::now();
    let balancer = Balancer::new(endpoints(4), None);
    report(&balancer, 0, now, Outcome::Success(ms(1)));
    for index in 1..4 {
        report(&balancer, index, now, Outcome::Success(ms(50)));
    }
    let counts = counts(&balancer, 7, 3000, now, &[]);
    // Endpoint 0 is in half of the drawn pairs and wins each of them; the others share the
    // rest: about 1500 against 500 each.
    assert!(counts[0] > 1300, "{counts:?}");
    for &count in &counts[1..] {
        assert!((350..650).contains(&count), "{counts:?}");
    }
}

#[test]
fn pending_requests_shift_picks() {
    let now = Instant::now();
    let balancer = Balancer::new(endpoints(2), None);
    report(&balancer, 0, now, Outcome::Success(ms(10)));
    report(&balancer, 1, now, Outcome::Success(ms(30)));
    assert_eq!(balancer.pick(now, &[]).map(|p| p.index()), Some(0));

    // Three requests in flight: 10 ms × 4 costs more than 30 ms × 1.
    let held: Vec<Pick> = (0..3)
        .map(|_| balancer.pick(now, &[1]).expect("an endpoint"))
        .collect();
    assert!(held.iter().all(|pick| pick.index() == 0));
    assert_eq!(balancer.pending(0), 3);
    assert_eq!(balancer.pick(now, &[]).map(|p| p.index()), Some(1));

    drop(held);
    assert_eq!(balancer.pending(0), 0);
    assert_eq!(balancer.pick(now, &[]).map(|p| p.index()), Some(0));
}

#[test]
fn excluded_endpoints_are_skipped_until_none_is_left() {
    let now = Instant::now();
    let balancer = Balancer::new(endpoints(3), None);
    let counts = counts(&balancer, 1, 200, now, &[0, 1]);
    assert_eq!(counts, vec![0, 0, 200]);

    let counts = self::counts(&balancer, 1, 300, now, &[0, 1, 2]);
    assert!(counts.iter().all(|&count| count > 0), "{counts:?}");
}

#[test]
fn latency_estimate_takes_peaks_and_decays() {
    let t0 = Instant::now();
    let balancer = Balancer::new(endpoints(2), None);
    assert_eq!(balancer.rtt_estimate(0, t0), Some(DEFAULT_RTT));

    report(&balancer, 0, t0, Outcome::Success(ms(100)));
    // A faster sample at the same instant does not move the estimate: no time has passed.
    report(&balancer, 0, t0, Outcome::Success(ms(10)));
    assert_eq!(balancer.rtt_estimate(0, t0), Some(ms(100)));

    // One time constant later the estimate has decayed to 1/e, and a 10 ms sample moves it
    // the remaining way by 1 - 1/e.
    let t1 = t0 + DEFAULT_DECAY;
    let decayed = balancer.rtt_estimate(0, t1).expect("an estimate");
    assert!((decayed.as_secs_f64() - 0.1 / std::f64::consts::E).abs() < 1e-6);
    report(&balancer, 0, t1, Outcome::Success(ms(10)));
    let expected = 0.1 / std::f64::consts::E + 0.01 * (1.0 - 1.0 / std::f64::consts::E);
    let estimate = balancer.rtt_estimate(0, t1).expect("an estimate");
    assert!(
        (estimate.as_secs_f64() - expected).abs() < 1e-6,
        "{estimate:?}"
    );

    // A slower sample is the new estimate at once.
    report(&balancer, 0, t1, Outcome::Failure5xx(ms(500)));
    assert_eq!(balancer.rtt_estimate(0, t1), Some(ms(500)));
    // Gateway failures leave it alone.
    report(&balancer, 0, t1, Outcome::GatewayFailure);
    assert_eq!(balancer.rtt_estimate(0, t1), Some(ms(500)));
}

#[test]
fn consecutive_5xx_ejects_for_a_while() {
    let t0 = Instant::now();
    let balancer = Balancer::new(endpoints(3), Some(outlier(3, 100)));
    assert_eq!(report(&balancer, 0, t0, Outcome::Failure5xx(ms(1))), None);
    assert_eq!(report(&balancer, 0, t0, Outcome::GatewayFailure), None);
    assert!(!balancer.is_ejected(0, t0));
    let ejection = report(&balancer, 0, t0, Outcome::Failure5xx(ms(1)));
    assert_eq!(
        ejection,
        Some(Ejection {
            address: balancer.endpoints()[0].address,
            times: 1,
            duration: Duration::from_secs(30),
        })
    );
    assert!(balancer.is_ejected(0, t0));
    assert_eq!(counts(&balancer, 3, 300, t0, &[])[0], 0);

    // Back after the ejection time.
    let t1 = t0 + Duration::from_secs(30);
    assert!(!balancer.is_ejected(0, t1));
    assert!(counts(&balancer, 3, 300, t1, &[])[0] > 0);

    // The second ejection, soon after, lasts twice as long.
    for _ in 0..2 {
        assert_eq!(report(&balancer, 0, t1, Outcome::Failure5xx(ms(1))), None);
    }
    let second = report(&balancer, 0, t1, Outcome::Failure5xx(ms(1))).expect("ejected");
    assert_eq!(
        (second.times, second.duration),
        (2, Duration::from_secs(60))
    );
    assert!(balancer.is_ejected(0, t1 + Duration::from_secs(59)));
    assert!(!balancer.is_ejected(0, t1 + Duration::from_secs(60)));

    // Long healthy, the multiplier has worn off again.
    let t2 = t1 + Duration::from_secs(60) + EJECTION_MULTIPLIER_DECAY * 5;
    for _ in 0..2 {
        report(&balancer, 0, t2, Outcome::Failure5xx(ms(1)));
    }
    let third = report(&balancer, 0, t2, Outcome::Failure5xx(ms(1))).expect("ejected");
    assert_eq!((third.times, third.duration), (1, Duration::from_secs(30)));
}

#[test]
fn success_resets_the_failure_count() {
    let now = Instant::now();
    let balancer = Balancer::new(endpoints(2), Some(outlier(3, 100)));
    for outcome in [
        Outcome::Failure5xx(ms(1)),
        Outcome::Failure5xx(ms(1)),
        Outcome::Success(ms(1)),
        Outcome::Failure5xx(ms(1)),
        Outcome::Failure5xx(ms(1)),
    ] {
        assert_eq!(report(&balancer, 0, now, outcome), None);
    }
    assert!(!balancer.is_ejected(0, now));
    assert!(report(&balancer, 0, now, Outcome::Failure5xx(ms(1))).is_some());
}

#[test]
fn consecutive_gateway_failures_eject_and_other_5xx_reset_them() {
    let now = Instant::now();
    let settings = OutlierDetection {
        consecutive_gateway_failure: Some(2),
        ..outlier(5, 100)
    };
    let balancer = Balancer::new(endpoints(2), Some(settings));
    assert_eq!(report(&balancer, 0, now, Outcome::GatewayFailure), None);
    // A 500 is a 5xx but not a gateway failure: the gateway run starts over.
    assert_eq!(report(&balancer, 0, now, Outcome::Failure5xx(ms(1))), None);
    assert_eq!(report(&balancer, 0, now, Outcome::GatewayFailure), None);
    assert!(!balancer.is_ejected(0, now));
    assert!(report(&balancer, 0, now, Outcome::GatewayFailure).is_some());
    assert!(balancer.is_ejected(0, now));
}

#[test]
fn no_outlier_detection_never_ejects() {
    let now = Instant::now();
    let balancer = Balancer::new(endpoints(2), None);
    for _ in 0..20 {
        assert_eq!(report(&balancer, 0, now, Outcome::GatewayFailure), None);
    }
    assert!(!balancer.is_ejected(0, now));
}

#[test]
fn ejections_stop_at_max_ejection_percent() {
    let now = Instant::now();
    let balancer = Balancer::new(endpoints(4), Some(outlier(1, 50)));
    assert!(report(&balancer, 0, now, Outcome::GatewayFailure).is_some());
    assert!(report(&balancer, 1, now, Outcome::GatewayFailure).is_some());
    // A third would be 75 %.
    assert_eq!(report(&balancer, 2, now, Outcome::GatewayFailure), None);
    assert!(!balancer.is_ejected(2, now));

    // Once the first two are back, the third may go.
    let later = now + Duration::from_secs(30);
    assert!(report(&balancer, 2, later, Outcome::GatewayFailure).is_some());
}

#[test]
fn max_ejection_percent_is_strict_unless_one_host_is_always_allowed() {
    let now = Instant::now();
    // One of four is 25 %, above 10 %: Envoy ejects nothing.
    let strict = Balancer::new(endpoints(4), Some(outlier(1, 10)));
    assert_eq!(report(&strict, 0, now, Outcome::GatewayFailure), None);
    assert!(!strict.is_ejected(0, now));

    let settings = BalancerSettings {
        always_eject_one_host: true,
        ..BalancerSettings::default()
    };
    let lenient = Balancer::with_settings(endpoints(4), Some(outlier(1, 10)), settings);
    assert!(report(&lenient, 0, now, Outcome::GatewayFailure).is_some());
    assert_eq!(report(&lenient, 1, now, Outcome::GatewayFailure), None);
}

#[test]
fn every_endpoint_ejected_is_panic_mode() {
    let now = Instant::now();
    let balancer = Balancer::new(endpoints(3), Some(outlier(1, 100)));
    for index in 0..3 {
        assert!(report(&balancer, index, now, Outcome::GatewayFailure).is_some());
    }
    let counts = counts(&balancer, 5, 300, now, &[]);
    assert!(counts.iter().all(|&count| count > 0), "{counts:?}");
    // Exclusion still holds in panic mode.
    assert_eq!(
        self::counts(&balancer, 5, 100, now, &[0, 1]),
        vec![0, 0, 100]
    );
}

#[test]
fn ejected_endpoints_are_skipped_before_excluded_ones_are_allowed() {
    let now = Instant::now();
    let balancer = Balancer::new(endpoints(3), Some(outlier(1, 100)));
    assert!(report(&balancer, 2, now, Outcome::GatewayFailure).is_some());
    // 0 and 1 were tried, 2 is ejected: a retry goes back to a tried endpoint, not to 2.
    let counts = counts(&balancer, 9, 200, now, &[0, 1]);
    assert_eq!(counts[2], 0, "{counts:?}");
    assert_eq!(counts[0] + counts[1], 200);
}

#[test]
fn update_keeps_the_state_of_endpoints_that_stay() {
    let now = Instant::now();
    let old = Balancer::new(endpoints(3), Some(outlier(1, 100)));
    report(&old, 1, now, Outcome::Success(ms(80)));
    assert!(report(&old, 2, now, Outcome::GatewayFailure).is_some());
    let held = old.pick(now, &[0, 2]).expect("an endpoint");
    assert_eq!(held.index(), 1);

    // Endpoint 0 goes, a new one comes, 1 changes weight, 2 stays; the order changes.
    let next: Arc<[Endpoint]> =
        vec![endpoint(8002, 1), endpoint(9000, 1), endpoint(8001, 5)].into();
    let new = old.update(next, Some(outlier(1, 100)));
    assert!(new.is_ejected(0, now), "8002 stays ejected");
    assert!(!new.is_ejected(1, now));
    assert_eq!(
        new.rtt_estimate(2, now),
        Some(ms(80)),
        "8001 keeps its estimate"
    );
    assert_eq!(new.rtt_estimate(1, now), Some(DEFAULT_RTT), "9000 is new");
    assert_eq!(new.pending(2), 1, "the request picked before the update");

    // A request picked from the old balancer finishes into the shared state.
    assert_eq!(held.complete(now, Outcome::Success(ms(200))), None);
    assert_eq!(new.pending(2), 0);
    assert_eq!(new.rtt_estimate(2, now), Some(ms(200)));
}

#[test]
fn weights_bias_the_draw() {
    let now = Instant::now();
    let weighted: Arc<[Endpoint]> =
        vec![endpoint(8000, 8), endpoint(8001, 1), endpoint(8002, 1)].into();
    let balancer = Balancer::new(weighted, None);
    // Equal costs: the first drawn wins the tie, so picks follow the weights.
    let counts = counts(&balancer, 11, 4000, now, &[]);
    assert!((2900..3500).contains(&counts[0]), "{counts:?}");
    assert!((250..550).contains(&counts[1]), "{counts:?}");
    assert!((250..550).contains(&counts[2]), "{counts:?}");
}

#[test]
fn concurrent_picks_balance_pending() {
    let balancer = Balancer::new(endpoints(5), Some(outlier(5, 20)));
    let now = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let balancer = balancer.clone();
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(thread);
                for i in 0..2000u64 {
                    let pick = balancer.pick_with(&mut rng, now, &[]).expect("an endpoint");
                    let outcome = if i % 7 == 0 {
                        Outcome::Failure5xx(ms(2))
                    } else {
                        Outcome::Success(ms(1 + i % 5))
                    };
                    pick.complete(now, outcome);
                }
            });
        }
    });
    assert!((0..5).all(|index| balancer.pending(index) == 0));
}

#[test]
fn pick_weighted_follows_weights_and_skips_zero() {
    let mut rng = fastrand::Rng::with_seed(42);
    let items = [("a", 1), ("zero", 0), ("b", 3)];
    let mut a = 0;
    let mut b = 0;
    for _ in 0..4000 {
        match pick_weighted(&items, &mut rng) {
            Some(&"a") => a += 1,
            Some(&"b") => b += 1,
            other => panic!("unexpected pick {other:?}"),
        }
    }
    assert!((800..1200).contains(&a), "a {a}, b {b}");
    assert_eq!(a + b, 4000);

    let zeros = [("x", 0), ("y", 0)];
    assert_eq!(pick_weighted(&zeros, &mut rng), None);
    let none: [(&str, u32); 0] = [];
    assert_eq!(pick_weighted(&none, &mut rng), None);
}

#[test]
fn an_endpoint_that_never_answered_is_tried_once_its_default_estimate_decays() {
    let t0 = Instant::now();
    let balancer = Balancer::new(endpoints(2), None);
    report(&balancer, 0, t0, Outcome::Success(ms(10)));
    // Endpoint 1 starts at the 30 ms default: endpoint 0 wins every comparison.
    assert_eq!(counts(&balancer, 3, 100, t0, &[])[1], 0);
    // Endpoint 0 keeps answering in 10 ms; endpoint 1's default decays (to 6.7 ms at 15 s).
    let t1 = t0 + Duration::from_secs(15);
    report(&balancer, 0, t1, Outcome::Success(ms(10)));
    assert_eq!(counts(&balancer, 3, 100, t1, &[])[1], 100);
}
