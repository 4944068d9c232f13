//! Metric conventions every proxy shares with the control plane: one definition for the bundled
//! proxy's histograms, the Envoy bootstrap's `histogram_bucket_settings` and the operator's
//! decoding of what either pushes.

/// Upper bounds (inclusive) of the latency histogram buckets in microseconds: 0.5 ms to 10 s.
/// A last `+Inf` bucket takes the rest, so a histogram has `LATENCY_BUCKETS_MICROS.len() + 1`
/// buckets. Envoy records request times in whole milliseconds: its bootstrap gets these bounds
/// divided by 1,000 (see [`latency_buckets_millis`]).
pub const LATENCY_BUCKETS_MICROS: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// The number of latency buckets, `+Inf` included.
pub const LATENCY_BUCKET_COUNT: usize = LATENCY_BUCKETS_MICROS.len() + 1;

/// [`LATENCY_BUCKETS_MICROS`] in milliseconds, the unit of Envoy's `*_rq_time` histograms (for
/// `stats_config.histogram_bucket_settings`).
pub fn latency_buckets_millis() -> impl ExactSizeIterator<Item = f64> {
    LATENCY_BUCKETS_MICROS.iter().map(|&micros| micros as f64 / 1e3)
}
