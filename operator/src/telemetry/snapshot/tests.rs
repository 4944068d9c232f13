//! Tests of snapshots: what a replica sends another, and the merge.

use std::time::Duration;

use switchyard_adapters::model::ProxyId;

use super::*;
use crate::telemetry::{Limits, Sample, StatusClass, Store, Value};

fn proxy(pod: &str) -> ProxyId {
    ProxyId {
        namespace: "demo".into(),
        pod: pod.into(),
    }
}

fn store() -> Store {
    let mut store = Store::new(Limits::default());
    let web = Subject::Upstream(UpstreamCluster::new("demo/web|80"));
    let inbound = Subject::Listener(StatPrefix::new("inbound_8080"));
    let mut latency = Latency::default();
    latency.observe_micros(1_500);
    latency.observe_micros(250_000);
    store.record(
        &proxy("client-0"),
        Duration::from_secs(3),
        &[
            Sample {
                subject: web.clone(),
                value: Value::Requests(StatusClass::Success, 9),
            },
            Sample {
                subject: web.clone(),
                value: Value::Latency(latency),
            },
            Sample {
                subject: web.clone(),
                value: Value::ConnectionsActive(2),
            },
            Sample {
                subject: web,
                value: Value::BytesSent(1_000),
            },
        ],
    );
    let route = Subject::Route(
        VirtualHost::new("inbound|8080"),
        RouteStatName {
            group: "web.routes".into(),
            name: "errors".into(),
        },
    );
    store.record(
        &proxy("web-0"),
        Duration::from_secs(4),
        &[
            Sample {
                subject: inbound,
                value: Value::Requests(StatusClass::ServerError, 1),
            },
            Sample {
                subject: route,
                value: Value::Requests(StatusClass::ServerError, 1),
            },
        ],
    );
    store
}

#[test]
fn a_snapshot_reads_back_as_it_was_written() {
    let data = store().snapshot(Duration::from_secs(5), Duration::from_secs(10), |_| true);
    assert_eq!(data.proxies().count(), 2);
    let json = data.to_json(1 << 20).unwrap();
    assert_eq!(Snapshot::from_json(&json).unwrap(), data);
    // Zeros are left out on the wire.
    let text = String::from_utf8(json).unwrap();
    assert!(!text.contains("\"opened\""), "{text}");
    // A route's series names its virtual host and its stat name, escaped as on the proxy.
    assert!(
        text.contains(r#""virtual_host":"inbound|8080","route":"web_2eroutes__errors""#),
        "{text}"
    );
    // Only the proxies asked for.
    let web_only = store().snapshot(Duration::from_secs(5), Duration::from_secs(10), |p| {
        p.pod == "web-0"
    });
    assert_eq!(web_only.proxies().collect::<Vec<_>>(), [&proxy("web-0")]);
}

#[test]
fn a_snapshot_over_the_cap_is_an_error_not_a_truncation() {
    let data = store().snapshot(Duration::from_secs(5), Duration::from_secs(10), |_| true);
    let whole = data.to_json(1 << 20).unwrap().len();
    assert!(matches!(
        data.to_json(whole - 1),
        Err(SnapshotError::TooLarge { limit }) if limit == whole - 1
    ));
    assert_eq!(data.to_json(whole).unwrap().len(), whole);
}

#[test]
fn bad_answers_and_other_windows_are_refused() {
    for bad in [
        "{}",
        r#"{"window_ms":10000,"proxies":[{"namespace":"demo","pod":"a","series":[{}]}]}"#,
        r#"{"window_ms":10000,"proxies":[{"namespace":"demo","pod":"a","series":[{"upstream":"x","listener":"y"}]}]}"#,
        r#"{"window_ms":10000,"proxies":[{"namespace":"demo","pod":"a","series":[{"upstream":"x","gauge":3}]}]}"#,
        r#"{"window_ms":10000,"proxies":[{"namespace":"demo","pod":"a","series":[{"upstream":"x"},{"upstream":"x"}]}]}"#,
        r#"{"window_ms":10000,"proxies":[{"namespace":"demo","pod":"a","series":[{"upstream":"x","latency":[1]}]}]}"#,
        r#"{"window_ms":10000,"proxies":[{"namespace":"demo","pod":"a","series":[{"virtual_host":"v"}]}]}"#,
        r#"{"window_ms":10000,"proxies":[{"namespace":"demo","pod":"a","series":[{"virtual_host":"v","route":"no.dots"}]}]}"#,
        r#"{"window_ms":10000,"proxies":[{"namespace":"demo","pod":"a","series":[{"upstream":"x","route":"g__m"}]}]}"#,
    ] {
        assert!(
            matches!(
                Snapshot::from_json(bad.as_bytes()),
                Err(SnapshotError::Invalid(_))
            ),
            "{bad}"
        );
    }
    let mut ten = Snapshot::empty(Duration::from_secs(10));
    let minute = store().snapshot(Duration::from_secs(5), Duration::from_secs(60), |_| true);
    let err = ten.merge(minute).unwrap_err();
    assert!(matches!(err, SnapshotError::WindowMismatch { .. }), "{err}");
    assert_eq!(ten.proxies().count(), 0, "nothing merged");
}

#[test]
fn the_newer_gauge_wins_and_counts_add_up() {
    let web = Subject::Upstream(UpstreamCluster::new("demo/web|80"));
    let gauge = |value, age| Sums {
        requests: [0, 1, 0, 0, 0],
        gauge: Some(crate::telemetry::Gauge {
            value,
            age: Duration::from_secs(age),
        }),
        ..Sums::default()
    };
    let window = Duration::from_secs(60);
    let mut a = Snapshot::empty(window);
    a.insert(&proxy("client-0"), &web, gauge(7, 30));
    let mut b = Snapshot::empty(window);
    b.insert(&proxy("client-0"), &web, gauge(3, 10));
    let mut c = Snapshot::empty(window);
    c.insert(&proxy("client-0"), &web, gauge(5, 10));
    a.merge(b).unwrap();
    let g = a.query([&proxy("client-0")], |_| true);
    assert_eq!((g.request_count(), g.connections_active), (2, 3));
    // The same slot on two replicas: the larger.
    a.merge(c).unwrap();
    let g = a.query([&proxy("client-0")], |_| true);
    assert_eq!((g.request_count(), g.connections_active), (3, 5));
}
