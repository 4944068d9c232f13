use super::Top;
use crate::tap::TapEvent;

fn event(path: &str, status: u32, latency_micros: u64) -> TapEvent {
    TapEvent {
        source: Some("10.0.0.9:41000".parse().unwrap()),
        source_identity: Some("spiffe://cluster.local/ns/demo/sa/client".to_owned()),
        status,
        latency_micros,
        ..crate::tap::tests::event("GET", path)
    }
}

#[test]
fn the_busiest_paths_come_first_with_their_latencies_and_success() {
    let mut top = Top::default();
    for e in [
        event("/a", 200, 3_000),
        event("/b", 200, 1_000),
        event("/a", 500, 9_000),
        event("/a", 200, 2_000),
    ] {
        top.add(&e);
    }
    // An unmeshed caller shows by its address.
    let mut plain = event("/a", 200, 500);
    plain.source_identity = None;
    top.add(&plain);
    let rows: Vec<Vec<String>> = top
        .table(10)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "SOURCE",
                "DESTINATION",
                "METHOD",
                "PATH",
                "COUNT",
                "BEST",
                "WORST",
                "LAST",
                "SUCCESS_RATE"
            ],
            vec![
                "demo/sa/client",
                "demo/web-0",
                "GET",
                "/a",
                "3",
                "2.0ms",
                "9.0ms",
                "2.0ms",
                "66.67%"
            ],
            vec![
                "10.0.0.9",
                "demo/web-0",
                "GET",
                "/a",
                "1",
                "0.5ms",
                "0.5ms",
                "0.5ms",
                "100.00%"
            ],
            vec![
                "demo/sa/client",
                "demo/web-0",
                "GET",
                "/b",
                "1",
                "1.0ms",
                "1.0ms",
                "1.0ms",
                "100.00%"
            ],
        ]
    );
    assert_eq!(top.table(1).lines().count(), 2, "the limit counts rows");
}
