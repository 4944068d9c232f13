//! `switchyard top`: the busiest paths through the selected proxies over a few seconds, from the
//! tap stream (as `linkerd viz top`): source, destination, method, path, count, best, worst and
//! last latency, success rate.
//!
//! ```text
//!  tap events (as `switchyard tap` reads them) ─▶ by (source, destination, method, path) ─▶ table
//! ```

use std::{collections::BTreeMap, io::Write, time::Duration};

use super::{proxy_status::columns, tap::Selection};
use crate::tap::{Direction, TapEvent};

#[cfg(test)]
mod tests;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub select: Selection,
    /// How long to watch before printing (`10s`, `1m`).
    #[arg(long, default_value = "10s", value_parser = super::tap::duration)]
    pub duration: Duration,
    /// Rows shown, busiest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// One row's key: who called whom, how.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    source: String,
    destination: String,
    method: String,
    path: String,
}

/// One row's numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Row {
    count: u64,
    successes: u64,
    best: u64,
    worst: u64,
    last: u64,
}

/// What the events of a watch add up to.
#[derive(Debug, Default)]
pub struct Top {
    rows: BTreeMap<Key, Row>,
}

impl Top {
    /// Counts one request.
    pub fn add(&mut self, e: &TapEvent) {
        let who = |id: &Option<String>, addr: &Option<std::net::SocketAddr>| match id {
            // `spiffe://<domain>/ns/<ns>/sa/<sa>` reads as `<ns>/sa/<sa>`.
            Some(id) => id
                .split_once("/ns/")
                .map_or_else(|| id.clone(), |(_, rest)| rest.to_owned()),
            None => addr.map_or_else(|| "-".to_owned(), |a| a.ip().to_string()),
        };
        let destination = match e.direction {
            Direction::Inbound => e.proxy.clone(),
            Direction::Outbound => e.authority.clone(),
        };
        let key = Key {
            source: who(&e.source_identity, &e.source),
            destination,
            method: e.method.clone(),
            path: e.path.clone(),
        };
        let row = self.rows.entry(key).or_default();
        row.count += 1;
        if e.status != 0 && e.status < 500 {
            row.successes += 1;
        }
        row.best = if row.count == 1 {
            e.latency_micros
        } else {
            row.best.min(e.latency_micros)
        };
        row.worst = row.worst.max(e.latency_micros);
        row.last = e.latency_micros;
    }

    /// The table: `SOURCE DESTINATION METHOD PATH COUNT BEST WORST LAST SUCCESS_RATE`, busiest
    /// first, at most `limit` rows.
    pub fn table(&self, limit: usize) -> String {
        let mut rows: Vec<(&Key, &Row)> = self.rows.iter().collect();
        rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        let ms = |micros: u64| format!("{:.1}ms", micros as f64 / 1e3);
        let mut out = vec![
            [
                "SOURCE",
                "DESTINATION",
                "METHOD",
                "PATH",
                "COUNT",
                "BEST",
                "WORST",
                "LAST",
                "SUCCESS_RATE",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for (key, row) in rows.into_iter().take(limit) {
            out.push(vec![
                key.source.clone(),
                key.destination.clone(),
                key.method.clone(),
                key.path.clone(),
                row.count.to_string(),
                ms(row.best),
                ms(row.worst),
                ms(row.last),
                format!("{:.2}%", 100.0 * row.successes as f64 / row.count as f64),
            ]);
        }
        columns(&out)
    }
}

/// Watches for `--duration`, then prints the table.
pub fn run(args: &TopArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut top = Top::default();
    super::tap::watch(&args.select, Some(args.duration), |event| {
        top.add(&event);
        Ok(true)
    })?;
    write!(out, "{}", top.table(args.limit))?;
    Ok(())
}
