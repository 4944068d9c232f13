//! Reading a Traffic Metrics API item (`TrafficMetrics`) in a test: a metric's value and a
//! latency quantity as a duration.

use std::time::Duration;

use serde_json::Value;

/// The value (a Kubernetes quantity, as a string) of metric `name` of `item`.
pub fn metric<'a>(item: &'a Value, name: &str) -> Option<&'a str> {
    item["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)?["value"]
        .as_str()
}

/// A quantity of seconds (`2`, `120m` = 120 ms, `250u` = 250 µs), as the API writes latencies,
/// as a duration; `None` when it is not one.
pub fn seconds_quantity(q: &str) -> Option<Duration> {
    let (n, scale) = match q.chars().last() {
        Some('m') => (&q[..q.len() - 1], 1e-3),
        Some('u') => (&q[..q.len() - 1], 1e-6),
        _ => (q, 1.0),
    };
    let seconds = n.parse::<f64>().ok()? * scale;
    Duration::try_from_secs_f64(seconds).ok()
}
