//! `switchyard proxy-config POD`: what one proxy runs, per xDS type, like `istioctl
//! proxy-config`: the version it acknowledged last and its resources, the same JSON for Envoy
//! and the bundled proxy (both are served the same xDS), secrets redacted.
//!
//! ```text
//!  CLI ─kubeconfig─▶ API server ─pods/portforward─▶ operator Pods' 127.0.0.1:9091: GET /proxies/{proxy}/config
//!  CLI ──────────────────────────────────────────▶ `switchyard local --admin-addr`: same path
//! ```
//!
//! The proxy's own admin port listens on 127.0.0.1 inside its Pod by design, so the control
//! plane answers: each stream keeps the resources of the responses its proxy acknowledged.
//! In a cluster every operator Pod is asked until one holds the proxy's stream.

use std::{collections::BTreeMap, io::Write, net::SocketAddr};

use anyhow::Context as _;
use kube::Client;
use serde_json::Value;

use super::proxy_status::{admin_get, cell, columns, operator_pods, pod_get};
use crate::{
    controller::admin::config_path,
    xds::{ConfigDump, TypeFilter, TypeSync, TypeUrl, dump::TypeDump},
};

#[cfg(test)]
mod tests;

#[derive(Debug, clap::Args)]
pub struct ProxyConfigArgs {
    /// The proxy's Pod (in `--namespace`), or `<namespace>/<pod>`.
    pub pod: String,
    /// The Pod's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Only one xDS type: cds, eds, lds, rds, sds, tbds, or all.
    #[arg(long = "type", value_name = "TYPE", default_value = "all", value_parser = TypeFilter::parse)]
    pub types: TypeFilter,
    #[command(flatten)]
    pub control_plane: super::control_plane::ControlPlaneArgs,
    /// `table` (per type, each resource's name and a summary), or `json` (the control plane's
    /// answer: every resource as proto3 JSON).
    #[arg(short = 'o', long, value_enum, default_value_t = super::proxy_status::Format::Table)]
    pub output: super::proxy_status::Format,
}

/// Prints the proxy's configuration; `Ok(false)` when it has rejected a version of a type.
pub fn run(args: &ProxyConfigArgs, out: &mut dyn Write) -> anyhow::Result<bool> {
    let proxy = proxy_name(&args.pod, &args.namespace);
    let path = config_path(&proxy, args.types);
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let dump = runtime.block_on(async {
        match args.control_plane.admin {
            Some(addr) => direct(addr, &proxy, &path).await,
            None => {
                let client = args.control_plane.client().await?;
                through_api_server(
                    &client,
                    &args.control_plane.operator_namespace,
                    &proxy,
                    &path,
                )
                .await
            }
        }
    })?;
    match args.output {
        super::proxy_status::Format::Json => {
            writeln!(out, "{}", serde_json::to_string_pretty(&dump)?)?;
        }
        super::proxy_status::Format::Table => write!(out, "{}", table(&dump))?,
    }
    Ok(!dump
        .types
        .values()
        .any(|t| matches!(t.sync, TypeSync::Nacked { .. })))
}

/// `<namespace>/<pod>` from the argument and `--namespace`.
pub fn proxy_name(pod: &str, namespace: &str) -> String {
    if pod.contains('/') {
        pod.to_owned()
    } else {
        format!("{namespace}/{pod}")
    }
}

async fn direct(addr: SocketAddr, proxy: &str, path: &str) -> anyhow::Result<ConfigDump> {
    let (status, body) = admin_get(addr, path).await?;
    if status == http::StatusCode::NOT_FOUND {
        anyhow::bail!(
            "{addr} has no xds stream from proxy {proxy}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    anyhow::ensure!(
        status.is_success(),
        "{addr} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    parse(&addr.to_string(), &body)
}

/// Asks each running operator Pod until one holds the proxy's stream.
async fn through_api_server(
    client: &Client,
    namespace: &str,
    proxy: &str,
    path: &str,
) -> anyhow::Result<ConfigDump> {
    let pods = operator_pods(client, namespace).await?;
    for name in &pods {
        let (status, body) = pod_get(client, namespace, name, path).await?;
        if status == http::StatusCode::NOT_FOUND {
            continue;
        }
        anyhow::ensure!(
            status.is_success(),
            "operator Pod {namespace}/{name} answered {status} for proxy {proxy}: {}",
            String::from_utf8_lossy(&body)
        );
        return parse(name, &body);
    }
    anyhow::bail!(
        "no operator Pod in {namespace} ({}) has an xds stream from proxy {proxy}: is it running, and meshed (`switchyard proxy-status`)?",
        pods.join(", ")
    )
}

fn parse(control_plane: &str, body: &[u8]) -> anyhow::Result<ConfigDump> {
    serde_json::from_slice(body)
        .with_context(|| format!("{control_plane}: an answer that is not a proxy configuration"))
}

/// The table: a header line for the proxy, then per type its state and version and one row
/// per resource (name and a one-line summary), and a rejection's reason.
pub fn table(dump: &ConfigDump) -> String {
    let mut out = format!(
        "PROXY {}  DATA PLANE {}  PROTOCOL {}\n",
        dump.proxy, dump.data_plane, dump.protocol
    );
    let endpoints = endpoint_counts(dump);
    for t in TypeUrl::ALL {
        let Some(types) = dump.types.get(t.short_name()) else {
            continue;
        };
        out.push('\n');
        out.push_str(&format!(
            "{}  {}  version {}\n",
            t.short_name(),
            cell(Some(&types.sync)),
            types.version.as_deref().unwrap_or("-")
        ));
        out.push_str(&resource_rows(t, types, &endpoints));
        if let Some(nacked) = &types.nacked {
            out.push_str(&format!(
                "NACKED version {}: {}\n",
                nacked.version, nacked.message
            ));
        }
    }
    out
}

fn resource_rows(t: TypeUrl, types: &TypeDump, endpoints: &BTreeMap<String, usize>) -> String {
    if types.resources.is_empty() && types.omitted == 0 {
        return "  (none)\n".to_owned();
    }
    let mut rows = vec![vec!["  NAME".to_owned(), "SUMMARY".to_owned()]];
    for r in &types.resources {
        let name = r["name"]
            .as_str()
            .or_else(|| r["clusterName"].as_str())
            .unwrap_or("?");
        rows.push(vec![format!("  {name}"), summary(t, r, endpoints)]);
    }
    let mut out = columns(&rows);
    if types.omitted > 0 {
        out.push_str(&format!(
            "  ... {} more left out to bound the answer; ask for this type alone (--type {})\n",
            types.omitted,
            t.short_name().to_lowercase()
        ));
    }
    out
}

/// One line about a resource, from its proto3 JSON.
pub fn summary(t: TypeUrl, r: &Value, endpoints: &BTreeMap<String, usize>) -> String {
    if let Some(error) = r["error"].as_str() {
        return format!("cannot show: {error}");
    }
    match t {
        TypeUrl::Cluster => {
            let kind = r["type"].as_str().unwrap_or("STATIC").to_lowercase();
            let count = if kind == "eds" {
                let service = r["edsClusterConfig"]["serviceName"]
                    .as_str()
                    .or_else(|| r["name"].as_str())
                    .unwrap_or_default();
                endpoints.get(service).copied()
            } else {
                Some(lb_endpoints(&r["loadAssignment"]).count())
            };
            let mut parts = vec![kind];
            if let Some(n) = count {
                parts.push(plural(n, "endpoint"));
            }
            // Mesh clusters choose mTLS per endpoint (by its identity) with a socket match.
            if r["transportSocketMatches"]
                .as_array()
                .is_some_and(|m| !m.is_empty())
            {
                parts.push("mtls".to_owned());
            } else if r.get("transportSocket").is_some() {
                parts.push("tls".to_owned());
            }
            parts.join(", ")
        }
        TypeUrl::ClusterLoadAssignment => {
            let addrs: Vec<String> = lb_endpoints(r)
                .map(|e| socket_address(&e["endpoint"]["address"]))
                .collect();
            format!("{}: {}", plural(addrs.len(), "endpoint"), addrs.join(" "))
        }
        TypeUrl::Listener => {
            let chains = r["filterChains"].as_array().map_or(0, Vec::len);
            format!(
                "{}, {}",
                socket_address(&r["address"]),
                plural(chains, "filter chain")
            )
        }
        TypeUrl::RouteConfiguration => {
            let hosts: Vec<String> = r["virtualHosts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|vh| {
                    let domain = vh["domains"][0].as_str().unwrap_or("*");
                    let routes: Vec<String> = vh["routes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(route_action)
                        .collect();
                    format!("{domain} → {}", routes.join("; "))
                })
                .collect();
            hosts.join(" | ")
        }
        TypeUrl::Secret => {
            let mut parts = Vec::new();
            if r.get("tlsCertificate").is_some() {
                parts.push("tls certificate");
            }
            if r.get("validationContext").is_some() {
                parts.push("validation context");
            }
            if parts.is_empty() {
                parts.push("other");
            }
            parts.join(", ")
        }
        TypeUrl::TokenBucket => {
            // proto3 JSON: a UInt32Value is a number, a Duration a string such as "0.050s".
            let max = r["maxTokens"].as_u64().unwrap_or(0);
            let per_fill = r["tokensPerFill"].as_u64().unwrap_or(1);
            let every = r["fillInterval"].as_str().unwrap_or("?");
            format!("{max} tokens, {per_fill} more every {every}")
        }
    }
}

/// Where a route sends requests: a cluster, weighted clusters with their weights, or a
/// direct response.
fn route_action(route: &Value) -> String {
    let action = &route["route"];
    if let Some(cluster) = action["cluster"].as_str() {
        return cluster.to_owned();
    }
    if let Some(clusters) = action["weightedClusters"]["clusters"].as_array() {
        return clusters
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["name"].as_str().unwrap_or("?"),
                    c["weight"].as_u64().unwrap_or(0)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
    }
    if let Some(status) = route["directResponse"]["status"].as_u64() {
        return format!("direct response {status}");
    }
    "?".to_owned()
}

fn lb_endpoints(cla: &Value) -> impl Iterator<Item = &Value> {
    cla["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["lbEndpoints"].as_array().into_iter().flatten())
}

fn socket_address(address: &Value) -> String {
    let s = &address["socketAddress"];
    format!(
        "{}:{}",
        s["address"].as_str().unwrap_or("?"),
        s["portValue"].as_u64().unwrap_or(0)
    )
}

/// Endpoints per cluster load assignment in the dump, for the cluster summaries.
fn endpoint_counts(dump: &ConfigDump) -> BTreeMap<String, usize> {
    dump.types
        .get(TypeUrl::ClusterLoadAssignment.short_name())
        .into_iter()
        .flat_map(|t| &t.resources)
        .filter_map(|r| {
            Some((
                r["clusterName"].as_str()?.to_owned(),
                lb_endpoints(r).count(),
            ))
        })
        .collect()
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
