//! `switchyard proxy-status`: every proxy connected to the control plane, its data plane, and
//! per xDS type whether it runs the latest configuration (`SYNCED`), has not acknowledged it yet
//! (`STALE`), rejected it (`NACKED`, with the proxy's reason), or has not been sent any, like
//! `istioctl proxy-status`.
//!
//! ```text
//!  CLI ─kubeconfig─▶ API server ─pods/portforward─▶ each operator Pod's 127.0.0.1:9091: GET /proxies
//!  CLI ──────────────────────────────────────────▶ `switchyard local --admin-addr`:    GET /proxies
//! ```
//!
//! Each operator replica serves xDS, so a cluster's proxies are spread over them; the table says
//! which replica each is connected to. Reading through the API server means the user's own
//! credentials decide (`create` on `pods/portforward` in the operator's namespace); the
//! operator serves the list on loopback only, so other Pods cannot read it.

use std::{io::Write, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};

use super::controller::client;
use crate::{
    controller::admin::PROXIES_PATH,
    install::{DEBUG_PORT, DEFAULT_NAMESPACE, selector},
    xds::{ProxyStatus, TypeSync, TypeUrl},
};

#[cfg(test)]
mod tests;

/// How long one control plane may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct ProxyStatusArgs {
    /// Ask this control plane's admin address directly (`switchyard local --admin-addr`)
    /// instead of a cluster's operator Pods.
    #[arg(long, value_name = "HOST:PORT", env = "SWITCHYARD_ADMIN_ADDR")]
    pub admin: Option<SocketAddr>,
    /// The operator's namespace, in a cluster.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// A kubeconfig file [default: $KUBECONFIG or ~/.kube/config, else the in-cluster config].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// `table`, or `json` (every field, one array).
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A proxy's status and the control plane it is connected to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Connected {
    /// The operator Pod, or the admin address asked.
    pub control_plane: String,
    #[serde(flatten)]
    pub status: ProxyStatus,
}

/// Prints every connected proxy; `Ok(false)` when one has rejected its configuration.
pub fn run(args: &ProxyStatusArgs, out: &mut dyn Write) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let connected = runtime.block_on(async {
        match args.admin {
            Some(addr) => direct(addr).await,
            None => {
                let client = client(args.kubeconfig.as_deref()).await?;
                through_api_server(&client, &args.namespace).await
            }
        }
    })?;
    match args.output {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&connected)?)?,
        Format::Table => write!(out, "{}", table(&connected))?,
    }
    Ok(!connected.iter().any(|c| {
        c.status
            .types
            .values()
            .any(|t| matches!(t, TypeSync::Nacked { .. }))
    }))
}

/// `GET http://<addr>/proxies`.
async fn direct(addr: SocketAddr) -> anyhow::Result<Vec<Connected>> {
    let (status, body) = admin_get(addr, PROXIES_PATH).await?;
    anyhow::ensure!(
        status.is_success(),
        "{addr} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    parse(&addr.to_string(), &body)
}

/// `GET http://<addr><path>` on a control plane's admin port: the status and the body.
pub(super) async fn admin_get(
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{addr}{path}")
        .parse()
        .context("the admin address")?;
    let response = tokio::time::timeout(TIMEOUT, client.get(uri))
        .await
        .with_context(|| format!("{addr} did not answer in {TIMEOUT:?}"))?
        .with_context(|| format!("asking {addr} for {path}"))?;
    let status = response.status();
    let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
        .await
        .with_context(|| format!("{addr} did not finish its answer in {TIMEOUT:?}"))?
        .with_context(|| format!("reading {addr}'s answer"))?
        .to_bytes();
    Ok((status, body))
}

/// The running operator Pods in `namespace`, by name; an error when there are none.
pub(super) async fn operator_pods(client: &Client, namespace: &str) -> anyhow::Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&selector()))
        .await
        .with_context(|| format!("listing the operator's Pods in {namespace}"))?;
    let running: Vec<String> = list
        .items
        .iter()
        .filter(|pod| {
            pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && pod.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|pod| pod.metadata.name.clone())
        .collect();
    anyhow::ensure!(
        !running.is_empty(),
        "no running operator Pod in {namespace}: is Switchyard installed there (`switchyard check --namespace {namespace}`)?"
    );
    Ok(running)
}

/// `GET <path>` on operator Pod `name`'s loopback debug port ([`DEBUG_PORT`]), through a
/// port-forward by the API server: the status and the body.
pub(super) async fn pod_get(
    client: &Client,
    namespace: &str,
    name: &str,
    path: &str,
) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let asked = async {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let mut forwarder = pods
            .portforward(name, &[DEBUG_PORT])
            .await
            .context("opening the port-forward")?;
        let stream = forwarder
            .take_stream(DEBUG_PORT)
            .context("the port-forward has no stream")?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("starting HTTP over the port-forward")?;
        let connection = tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .context("the request")?;
        let response = sender.send_request(request).await.context("sending")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        drop(sender);
        connection.abort();
        forwarder.abort();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(TIMEOUT, asked)
        .await
        .map_err(|_| anyhow::anyhow!("no answer in {TIMEOUT:?}"))?
        .with_context(|| {
            format!(
                "asking operator Pod {namespace}/{name} for {path} (needs create on pods/portforward in {namespace})"
            )
        })
}

/// Every running operator Pod's `/proxies`, each through a port-forward.
async fn through_api_server(client: &Client, namespace: &str) -> anyhow::Result<Vec<Connected>> {
    let mut all = Vec::new();
    for name in operator_pods(client, namespace).await? {
        let (status, body) = pod_get(client, namespace, &name, PROXIES_PATH).await?;
        anyhow::ensure!(
            status.is_success(),
            "operator Pod {namespace}/{name} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        all.extend(parse(&name, &body)?);
    }
    all.sort_by(|a, b| {
        (&a.status.proxy, &a.status.node, &a.control_plane).cmp(&(
            &b.status.proxy,
            &b.status.node,
            &b.control_plane,
        ))
    });
    Ok(all)
}

fn parse(control_plane: &str, body: &[u8]) -> anyhow::Result<Vec<Connected>> {
    let statuses: Vec<ProxyStatus> = serde_json::from_slice(body)
        .with_context(|| format!("{control_plane}: an answer that is not a proxy list"))?;
    Ok(statuses
        .into_iter()
        .map(|status| Connected {
            control_plane: control_plane.to_owned(),
            status,
        })
        .collect())
}

/// The table: one row per proxy, a column per xDS type; then each NACK's reason.
pub fn table(connected: &[Connected]) -> String {
    let mut rows = vec![
        ["PROXY", "DATA PLANE", "PROTOCOL"]
            .into_iter()
            .map(str::to_owned)
            .chain(TypeUrl::ALL.iter().map(|t| t.short_name().to_owned()))
            .chain(["CONTROL PLANE".to_owned()])
            .collect::<Vec<_>>(),
    ];
    let mut reasons = Vec::new();
    for c in connected {
        let s = &c.status;
        let mut row = vec![s.proxy.clone(), s.data_plane.clone(), s.protocol.clone()];
        for t in TypeUrl::ALL {
            let sync = s.types.get(t.short_name());
            row.push(cell(sync).to_owned());
            if let Some(TypeSync::Nacked { message }) = sync {
                reasons.push(format!("{} {}: {message}", s.proxy, t.short_name()));
            }
        }
        row.push(c.control_plane.clone());
        rows.push(row);
    }
    let mut out = columns(&rows);
    if connected.is_empty() {
        out.push_str("no proxy is connected\n");
    }
    for r in reasons {
        out.push_str(&format!("NACKED {r}\n"));
    }
    out
}

/// Rows as left-aligned columns two spaces apart, one line each. Widths are in characters, as
/// `format!` pads (`√` and `×` are one column, not their two or three bytes).
pub(super) fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub(super) fn cell(sync: Option<&TypeSync>) -> &'static str {
    match sync {
        None | Some(TypeSync::NotRequested) => "-",
        Some(TypeSync::NotSent) => "NOT SENT",
        Some(TypeSync::Synced) => "SYNCED",
        Some(TypeSync::Stale) => "STALE",
        Some(TypeSync::Nacked { .. }) => "NACKED",
    }
}
