//! `load`: constant-rate HTTP requests with latency measured from each one's scheduled time.
//!
//! Request `i` is due at `start + i / rate` and is sent then even if earlier ones have not
//! answered, so a slow server shows as latency rather than as a lower rate (coordinated
//! omission, corrected as oha and wrk2 do). If the client itself falls behind, late requests go
//! out at once and their lateness counts in their latency.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::http_get::{ClientOptions, Outcome, RequestTemplate, client, json, send};
use crate::cli::Output;
use crate::{Error, say};

/// How many distinct error messages the summary keeps.
const MAX_ERRORS: usize = 10;

/// The JSON output of `load -o json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Requests that got no response or a status other than 2xx.
    pub failed: u64,
    /// Responses per status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Responses per body.
    pub by_body: BTreeMap<String, u64>,
    /// The first distinct failure messages (`status 503`, `timed out after 5s`, …), at most 10.
    pub errors: Vec<String>,
    /// Median latency of all requests, milliseconds (failures count at the time they failed).
    pub p50_ms: f64,
    /// 99th-percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// Sends `rate` requests a second for `duration`, then waits for the last answers (each bounded
/// by the request timeout) and prints the summary.
pub(crate) async fn load(
    template: &RequestTemplate,
    options: &ClientOptions,
    rate: u32,
    duration: Duration,
    output: Output,
) -> Result<u8, Error> {
    let client = client(options);
    let period = Duration::from_secs(1) / rate;
    let total = (u128::from(rate) * duration.as_millis() / 1000) as u64;
    let (tx, mut rx) = mpsc::unbounded_channel::<(Outcome, Duration)>();
    let start = Instant::now();
    let mut due = start;
    for _ in 0..total {
        tokio::time::sleep_until(due).await;
        let (client, template, tx) = (client.clone(), template.clone(), tx.clone());
        let timeout = options.timeout;
        let scheduled = due;
        tokio::spawn(async move {
            let outcome = send(&client, &template, timeout).await;
            let _ = tx.send((outcome, scheduled.elapsed()));
        });
        due += period;
    }
    drop(tx);

    let mut summary = LoadSummary {
        sent: total,
        ..LoadSummary::default()
    };
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut seen = BTreeSet::new();
    while let Some((outcome, latency)) = rx.recv().await {
        latencies.push(latency);
        let failure = match outcome {
            Ok((status, body)) => {
                *summary.by_status.entry(status.as_u16()).or_default() += 1;
                *summary.by_body.entry(body).or_default() += 1;
                if status.is_success() {
                    summary.ok += 1;
                    continue;
                }
                format!("status {}", status.as_u16())
            }
            Err(error) => error,
        };
        summary.failed += 1;
        if summary.errors.len() < MAX_ERRORS && seen.insert(failure.clone()) {
            summary.errors.push(failure);
        }
    }
    latencies.sort();
    summary.p50_ms = percentile_ms(&latencies, 0.50);
    summary.p99_ms = percentile_ms(&latencies, 0.99);
    match output {
        Output::Json => say(format_args!("{}", json(&summary))),
        Output::Text => say(format_args!(
            "sent={} ok={} failed={} p50_ms={:.2} p99_ms={:.2}",
            summary.sent, summary.ok, summary.failed, summary.p50_ms, summary.p99_ms
        )),
    }
    Ok(u8::from(summary.failed > 0))
}

/// Nearest-rank percentile of sorted `latencies`, in milliseconds; 0 when there are none.
fn percentile_ms(latencies: &[Duration], q: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "ranks of at most 300,000 latencies"
    )]
    let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
    latencies[rank - 1].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests;
