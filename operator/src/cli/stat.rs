//! `switchyard stat KIND [NAME]`: what each Pod, workload, Service, namespace or TrafficSplit
//! backend served over a window, from the golden metrics the proxies push to the control
//! plane, through the SMI Traffic Metrics API's paths: meshed Pods, success rate, requests per
//! second, latency percentiles (p50, p95, p99) and open TCP connections, as Linkerd's `viz
//! stat` shows them; for TrafficSplits, one row per backend with its apex and weight. The p95
//! and the connections are Switchyard's annotations on each item (the spec has neither; see
//! [`crate::traffic_metrics`]). `stat routes KIND/NAME` shows one object's routes (Switchyard's
//! `/routes` extension): ROUTE, SUCCESS, RPS and the latency percentiles; a configured route
//! without traffic is a row like any object's without traffic (`-`, `0.0rps`).
//!
//! ```text
//!  CLI ───────────────────────────────────────────▶ `switchyard local --admin-addr`: GET /apis/metrics.smi-spec.io/v1alpha1/...
//!  CLI ─kubeconfig (--as)─▶ API server (RBAC: switchyard-metrics-reader) ─▶ the same, from one replica
//! ```
//!
//! In a cluster each proxy's metrics stream lands on one replica; the replica the API server
//! picks merges every replica's windows before it answers (see `controller::metrics_api`), so
//! one answer is the whole mesh's, as `kubectl get --raw` reads it. An answer missing a
//! replica carries [`PARTIAL_ANNOTATION`]; stat prints it as a warning on stderr.

use std::{io::Write, time::Duration};

use anyhow::Context as _;
use serde_json::Value;

use super::proxy_status::columns;
use crate::traffic_metrics::{
    GROUP, MESHED_PODS_ANNOTATION, P95_LATENCY_ANNOTATION, PARTIAL_ANNOTATION, PODS_ANNOTATION,
    ROUTE_ANNOTATION, ResourceKind, TCP_OPEN_CONNECTIONS_ANNOTATION, VERSION, go_duration,
    go_format,
};

#[cfg(test)]
mod tests;

#[derive(Debug, clap::Args)]
pub struct StatArgs {
    /// What to show: `pods` (`po`), `namespaces` (`ns`), `deployments` (`deploy`),
    /// `statefulsets` (`sts`), `daemonsets` (`ds`), `services` (`svc`) or `trafficsplits`
    /// (`ts`); singular forms too. Or `routes` (`route`, `rt`) with `KIND/NAME` (a Pod,
    /// workload or Service: `deploy/web`): one row per route configured on the object's
    /// Pods (zeros when nothing took it) or taken in the window, then `[DEFAULT]`.
    #[arg(value_parser = shown)]
    pub kind: Shown,
    /// One object; all of the kind without it. For `routes`, `KIND/NAME`.
    pub name: Option<String>,
    /// The namespace of the objects.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Objects of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// The window: a duration up to 10m (`10s`, `1m`, `1m30s`).
    #[arg(short = 't', long = "window", default_value = "1m", value_parser = window)]
    pub window: Duration,
    #[command(flatten)]
    pub control_plane: super::control_plane::ControlPlaneArgs,
    /// `table`, or `json` (the `TrafficMetricsList`).
    #[arg(short = 'o', long, value_enum, default_value_t = super::proxy_status::Format::Table)]
    pub output: super::proxy_status::Format,
}

fn window(s: &str) -> Result<Duration, String> {
    go_duration(s).ok_or_else(|| format!("{s:?}: a duration such as 10s, 1m or 1m30s"))
}

/// What `stat` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// The objects of a kind.
    Kind(ResourceKind),
    /// The routes of one object (Switchyard's `/routes` extension of the metrics API).
    Routes,
}

/// What a word names: `routes`, or a kind.
fn shown(s: &str) -> Result<Shown, String> {
    match s {
        "rt" | "route" | "routes" => Ok(Shown::Routes),
        other => kind(other).map(Shown::Kind),
    }
}

/// The kind a word names, with kubectl's short names.
fn kind(s: &str) -> Result<ResourceKind, String> {
    let kind = match s {
        "po" | "pod" | "pods" => ResourceKind::Pod,
        "ns" | "namespace" | "namespaces" => ResourceKind::Namespace,
        "deploy" | "deployment" | "deployments" => ResourceKind::Deployment,
        "sts" | "statefulset" | "statefulsets" => ResourceKind::StatefulSet,
        "ds" | "daemonset" | "daemonsets" => ResourceKind::DaemonSet,
        "svc" | "service" | "services" => ResourceKind::Service,
        "ts" | "trafficsplit" | "trafficsplits" => ResourceKind::TrafficSplit,
        other => {
            return Err(format!(
                "{other:?}: stat shows pods, namespaces, deployments, statefulsets, daemonsets, services or trafficsplits"
            ));
        }
    };
    Ok(kind)
}

/// The object of `stat routes KIND/NAME`.
fn routes_of(name: Option<&str>) -> anyhow::Result<(ResourceKind, &str)> {
    let Some((word, name)) = name.and_then(|n| n.split_once('/')) else {
        anyhow::bail!("stat routes: name one object as KIND/NAME, e.g. deploy/web or po/web-0");
    };
    let kind = kind(word).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        kind.has_routes() && !name.is_empty(),
        "stat routes {word}/{name}: routes are shown for a pod, deployment, statefulset, daemonset or service"
    );
    Ok((kind, name))
}

/// The API path of the request.
pub fn path(args: &StatArgs) -> anyhow::Result<String> {
    let root = format!("/apis/{GROUP}/{VERSION}");
    let t = go_format(args.window);
    let kind = match args.kind {
        Shown::Kind(kind) => kind,
        Shown::Routes => {
            let (kind, name) = routes_of(args.name.as_deref())?;
            return Ok(format!(
                "{root}/namespaces/{}/{}/{name}/routes?t={t}",
                args.namespace,
                kind.plural()
            ));
        }
    };
    Ok(match (kind, &args.name) {
        (ResourceKind::Namespace, Some(name)) => format!("{root}/namespaces/{name}?t={t}"),
        (ResourceKind::Namespace, None) => format!("{root}/namespaces?t={t}"),
        (kind, _) if args.all_namespaces => format!("{root}/{}?t={t}", kind.plural()),
        (kind, Some(name)) => format!(
            "{root}/namespaces/{}/{}/{name}?t={t}",
            args.namespace,
            kind.plural()
        ),
        (kind, None) => format!(
            "{root}/namespaces/{}/{}?t={t}",
            args.namespace,
            kind.plural()
        ),
    })
}

/// Prints the table or the JSON.
pub fn run(args: &StatArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.window > Duration::ZERO && args.window <= crate::traffic_metrics::MAX_WINDOW,
        "--window {}: metrics are kept for 10m; ask for 10m or less",
        go_format(args.window)
    );
    let path = path(args)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let (from, status, body) = runtime.block_on(args.control_plane.get(&path))?;
    let (items, partial) = items(&from, status, &body)?;
    if let Some(partial) = partial {
        eprintln!("warning: some replicas' metrics are missing: {partial}");
    }
    match args.output {
        super::proxy_status::Format::Json => {
            let list = serde_json::json!({
                "apiVersion": format!("{GROUP}/{VERSION}"),
                "kind": "TrafficMetricsList",
                "items": items,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        }
        super::proxy_status::Format::Table => match args.kind {
            Shown::Kind(kind) => write!(out, "{}", table(kind, &items))?,
            Shown::Routes => write!(out, "{}", routes_table(&items))?,
        },
    }
    Ok(())
}

/// The items of an answer (a list's, or the one object), and its
/// [`PARTIAL_ANNOTATION`] if any.
fn items(
    from: &str,
    status: http::StatusCode,
    body: &[u8],
) -> anyhow::Result<(Vec<Value>, Option<String>)> {
    let value: Value = serde_json::from_slice(body)
        .with_context(|| format!("{from}: an answer that is not JSON ({status})"))?;
    if !status.is_success() {
        anyhow::bail!(
            "{from} answered {status}: {}",
            value["message"].as_str().unwrap_or("no message")
        );
    }
    let partial = value["metadata"]["annotations"][PARTIAL_ANNOTATION]
        .as_str()
        .map(str::to_owned);
    let items = match value["kind"].as_str() {
        Some("TrafficMetricsList") => value["items"].as_array().cloned().unwrap_or_default(),
        _ => vec![value],
    };
    Ok((items, partial))
}

/// An item's open TCP connections ([`TCP_OPEN_CONNECTIONS_ANNOTATION`]); `None` from a control
/// plane that does not write it.
fn tcp_open_connections(item: &Value) -> Option<u64> {
    item["metadata"]["annotations"][TCP_OPEN_CONNECTIONS_ANNOTATION]
        .as_str()?
        .parse()
        .ok()
}

/// One row per item: NAME (namespace/name for namespaced kinds), MESHED (meshed Pods / Pods),
/// SUCCESS, RPS, LATENCY_P50/P95/P99 (the spec's p50 and p99, Switchyard's p95 annotation),
/// TCP_CONN (connections open at the end of the window); for TrafficSplits APEX, BACKEND and
/// WEIGHT in place of MESHED, one row per backend. `-` where there is nothing to show.
pub fn table(kind: ResourceKind, items: &[Value]) -> String {
    let split = kind == ResourceKind::TrafficSplit;
    let head: &[&str] = if split {
        &["NAME", "APEX", "BACKEND", "WEIGHT"]
    } else {
        &["NAME", "MESHED"]
    };
    let mut rows = vec![
        head.iter()
            .chain(&[
                "SUCCESS",
                "RPS",
                "LATENCY_P50",
                "LATENCY_P95",
                "LATENCY_P99",
                "TCP_CONN",
            ])
            .map(|c| (*c).to_owned())
            .collect::<Vec<_>>(),
    ];
    for item in items {
        let r = &item["resource"];
        let name = match r["namespace"].as_str() {
            Some(ns) => format!("{ns}/{}", r["name"].as_str().unwrap_or("?")),
            None => r["name"].as_str().unwrap_or("?").to_owned(),
        };
        let [success, rps, p50, p95, p99] = golden_cells(item);
        let annotations = &item["metadata"]["annotations"];
        let tcp = tcp_open_connections(item).map_or("-".to_owned(), |n| n.to_string());
        let mut row = vec![name];
        if split {
            let b = &item["backend"];
            let text = |v: &Value| match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => "-".to_owned(),
            };
            row.extend([text(&b["apex"]), text(&b["name"]), text(&b["weight"])]);
        } else {
            let meshed = match (
                annotations[MESHED_PODS_ANNOTATION].as_str(),
                annotations[PODS_ANNOTATION].as_str(),
            ) {
                (Some(m), Some(n)) => format!("{m}/{n}"),
                _ => "-".to_owned(),
            };
            row.push(meshed);
        }
        row.extend([success, rps, p50, p95, p99, tcp]);
        rows.push(row);
    }
    columns(&rows)
}

/// One row per route item: ROUTE ([`ROUTE_ANNOTATION`]), SUCCESS, RPS, LATENCY_P50,
/// LATENCY_P95, LATENCY_P99, as [`table`] computes them.
pub fn routes_table(items: &[Value]) -> String {
    let mut rows = vec![
        [
            "ROUTE",
            "SUCCESS",
            "RPS",
            "LATENCY_P50",
            "LATENCY_P95",
            "LATENCY_P99",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for item in items {
        let route = item["metadata"]["annotations"][ROUTE_ANNOTATION]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        let [success, rps, p50, p95, p99] = golden_cells(item);
        rows.push(vec![route, success, rps, p50, p95, p99]);
    }
    columns(&rows)
}

/// An item's SUCCESS, RPS, LATENCY_P50, LATENCY_P95 and LATENCY_P99 cells.
fn golden_cells(item: &Value) -> [String; 5] {
    let metric = |n: &str| {
        item["metrics"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == n))
            .and_then(|m| m["value"].as_str())
            .map(str::to_owned)
    };
    let count = |n| metric(n).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let (ok, failed) = (count("success_count"), count("failure_count"));
    let window = item["window"]
        .as_str()
        .and_then(go_duration)
        .unwrap_or(Duration::from_secs(60));
    let success = if ok + failed == 0 {
        "-".to_owned()
    } else {
        format!("{:.2}%", 100.0 * ok as f64 / (ok + failed) as f64)
    };
    let rps = format!("{:.1}rps", (ok + failed) as f64 / window.as_secs_f64());
    let latency = |q: Option<String>| q.map_or("-".to_owned(), |q| millis(&q));
    let p95 = item["metadata"]["annotations"][P95_LATENCY_ANNOTATION]
        .as_str()
        .map(str::to_owned);
    [
        success,
        rps,
        latency(metric("p50_response_latency")),
        latency(p95),
        latency(metric("p99_response_latency")),
    ]
}

/// A quantity of seconds (`12m`, `250u`, `2`) in milliseconds, as `12ms`.
fn millis(quantity: &str) -> String {
    let (number, scale) = match quantity.chars().last() {
        Some('m') => (&quantity[..quantity.len() - 1], 1.0),
        Some('u') => (&quantity[..quantity.len() - 1], 1e-3),
        _ => (quantity, 1e3),
    };
    match number.parse::<f64>() {
        Ok(n) => {
            let ms = n * scale;
            if ms >= 10.0 || ms == ms.trunc() {
                format!("{ms:.0}ms")
            } else {
                format!("{ms:.2}ms")
            }
        }
        Err(_) => quantity.to_owned(),
    }
}
