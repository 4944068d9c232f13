//! `switchyard edges`: who talks to whom over a window, with the client's and the server's
//! identities and whether the edge is mTLS, from the golden metrics the proxies push.
//!
//! ```text
//!  CLI ────────────────────────────────────────▶ `switchyard local --admin-addr`: GET /apis/metrics.smi-spec.io/v1alpha1/edges?t=1m&namespace=NS
//!  CLI ─kubeconfig (--as)─▶ API server (RBAC: list edges in metrics.smi-spec.io) ─▶ the same, from one replica
//! ```
//!
//! Each replica knows the edges of the proxies whose metrics stream it holds; the replica that
//! answers merges every replica's windows first (see `controller::metrics_api`). An answer
//! missing a replica carries [`PARTIAL_ANNOTATION`]; edges prints it as a warning on stderr.

use std::{io::Write, time::Duration};

use anyhow::Context as _;

use super::proxy_status::columns;
use crate::{
    edges::{Edge, EdgeList},
    traffic_metrics::{GROUP, MAX_WINDOW, PARTIAL_ANNOTATION, VERSION, go_duration, go_format},
};

#[cfg(test)]
mod tests;

#[derive(Debug, clap::Args)]
pub struct EdgesArgs {
    /// The edges with an end in this namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Every edge.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// The window: a duration up to 10m (`10s`, `1m`, `1m30s`).
    #[arg(short = 't', long = "window", default_value = "1m", value_parser = window)]
    pub window: Duration,
    #[command(flatten)]
    pub control_plane: super::control_plane::ControlPlaneArgs,
    /// `table`, `wide` (adds CLIENT_ID and SERVER_ID) or `json`.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
}

fn window(s: &str) -> Result<Duration, String> {
    match go_duration(s) {
        Some(d) if d > Duration::ZERO && d <= MAX_WINDOW => Ok(d),
        Some(_) => Err(format!(
            "{s:?}: metrics are kept for {}; ask for that or less",
            go_format(MAX_WINDOW)
        )),
        None => Err(format!("{s:?}: a duration such as 10s, 1m or 1m30s")),
    }
}

/// The API path of the request (Switchyard's `edges` beside the spec's resources).
pub fn path(args: &EdgesArgs) -> String {
    let t = go_format(args.window);
    let root = format!("/apis/{GROUP}/{VERSION}/edges?t={t}");
    if args.all_namespaces {
        root
    } else {
        format!("{root}&namespace={}", args.namespace)
    }
}

/// Prints the table or the JSON.
pub fn run(args: &EdgesArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = path(args);
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let (from, status, body) = runtime.block_on(args.control_plane.get(&path))?;
    let list = decode(&from, status, &body)?;
    if let Some(partial) = list.metadata["annotations"][PARTIAL_ANNOTATION].as_str() {
        eprintln!("warning: some replicas' metrics are missing: {partial}");
    }
    let edges = list.items;
    match args.output {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&edges)?)?,
        Format::Table => write!(out, "{}", table(&edges, false))?,
        Format::Wide => write!(out, "{}", table(&edges, true))?,
    }
    Ok(())
}

fn decode(from: &str, status: http::StatusCode, body: &[u8]) -> anyhow::Result<EdgeList> {
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
        anyhow::bail!("{from} answered {status}: {message}");
    }
    serde_json::from_slice(body).with_context(|| format!("{from}: an answer that is not edges"))
}

/// `SRC DST SRC_NS DST_NS SECURED`, as `linkerd viz edges` writes them; `wide` adds the
/// identities.
pub fn table(edges: &[Edge], wide: bool) -> String {
    let mut header = ["SRC", "DST", "SRC_NS", "DST_NS", "SECURED"]
        .map(str::to_owned)
        .to_vec();
    if wide {
        header.extend(["CLIENT_ID", "SERVER_ID"].map(str::to_owned));
    }
    let mut rows = vec![header];
    for e in edges {
        let ns = |end: &crate::edges::End| end.namespace().unwrap_or("-").to_owned();
        let mut row = vec![
            e.src.display_name(),
            e.dst.display_name(),
            ns(&e.src),
            ns(&e.dst),
            e.secured.display().to_owned(),
        ];
        if wide {
            row.push(e.client_id.clone().unwrap_or_else(|| "-".to_owned()));
            row.push(if e.server_ids.is_empty() {
                "-".to_owned()
            } else {
                e.server_ids.join(",")
            });
        }
        rows.push(row);
    }
    columns(&rows)
}
