use std::time::Duration;

use super::percentile_ms;

#[test]
fn nearest_rank_percentiles() {
    let latencies: Vec<_> = (1..=100).map(Duration::from_millis).collect();
    assert_eq!(percentile_ms(&latencies, 0.50), 50.0);
    assert_eq!(percentile_ms(&latencies, 0.99), 99.0);
    assert_eq!(percentile_ms(&latencies[..1], 0.99), 1.0);
    assert_eq!(percentile_ms(&[], 0.5), 0.0);
}
