//! `switchyard tap`: live requests through the selected proxies, one line each, as they end.
//!
//! ```text
//!  CLI ──GET /tap?namespace=…──────────────────────▶ `switchyard local --admin-addr`
//!  CLI ─kubeconfig─▶ API server ─pods/portforward─▶ every operator Pod's 127.0.0.1:9091: the same, merged
//! ```
//!
//! A proxy's requests reach the replica that holds its access-log stream, so in a cluster every
//! replica is asked and the lines are merged as they come. The tap ends with `--count`
//! events, after `--duration`, or on Ctrl-C; the control plane untaps the proxies within a
//! second.

use std::{io::Write, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};

use super::{controller::client, proxy_status::operator_pods};
use crate::{
    install::DEBUG_PORT,
    tap::{TAP_PATH, TapEvent},
};

/// Which requests a tap (or `top`) shows, and where it asks for them.
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// What to tap: `pod/NAME` (or `po/NAME`), or nothing for every proxy in the namespace.
    pub resource: Option<String>,
    /// The namespace of the proxies tapped.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Only requests with this method (`GET`).
    #[arg(long)]
    pub method: Option<String>,
    /// Only requests to this authority (`web.demo:80`, as the client wrote it).
    #[arg(long)]
    pub authority: Option<String>,
    /// Only requests whose path starts with this.
    #[arg(long)]
    pub path: Option<String>,
    /// At most this many requests a second are shown (the rest are dropped), 1 to 1000.
    #[arg(long, default_value_t = 100)]
    pub max_rps: u32,
    #[command(flatten)]
    pub control_plane: super::control_plane::ControlPlaneArgs,
}

#[derive(Debug, clap::Args)]
pub struct TapArgs {
    #[command(flatten)]
    pub select: Selection,
    /// Stop after this many requests.
    #[arg(long)]
    pub count: Option<usize>,
    /// Stop after this long (`30s`, `2m`); until Ctrl-C without it.
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// `line` (one line per request) or `json` (one JSON object per line).
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Line)]
    pub output: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Line,
    Json,
}

pub(super) fn duration(s: &str) -> Result<Duration, String> {
    crate::traffic_metrics::go_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?}: a duration such as 30s or 2m"))
}

/// The admin path of the tap.
pub fn path(args: &Selection) -> anyhow::Result<String> {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut query = vec![
        format!("namespace={}", enc(&args.namespace)),
        format!("max_rps={}", args.max_rps),
    ];
    if let Some(resource) = &args.resource {
        let pod = match resource.split_once('/') {
            Some(("pod" | "pods" | "po", name)) => name,
            None => resource.as_str(),
            Some((kind, _)) => anyhow::bail!(
                "{resource}: tap selects pods (pod/NAME) or a whole namespace, not {kind}"
            ),
        };
        query.push(format!("pod={}", enc(pod)));
    }
    for (key, value) in [
        ("method", &args.method),
        ("authority", &args.authority),
        ("path", &args.path),
    ] {
        if let Some(v) = value {
            query.push(format!("{key}={}", enc(v)));
        }
    }
    Ok(format!("{TAP_PATH}?{}", query.join("&")))
}

/// Prints requests until the count, the duration or Ctrl-C.
pub fn run(args: &TapArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut shown = 0;
    watch(&args.select, args.duration, |event| {
        match args.output {
            Format::Line => writeln!(out, "{}", event.line())?,
            Format::Json => writeln!(out, "{}", serde_json::to_string(&event)?)?,
        }
        out.flush()?;
        shown += 1;
        Ok(args.count.is_none_or(|c| shown < c))
    })
}

/// Hands `on_event` every request `select` shows, for `duration` (until Ctrl-C without one)
/// or until it returns `false`.
pub(super) fn watch(
    select: &Selection,
    duration: Option<Duration>,
    mut on_event: impl FnMut(TapEvent) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let path = path(select)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let (tx, mut rx) = mpsc::channel::<anyhow::Result<TapEvent>>(1_024);
        let mut tasks = tokio::task::JoinSet::new();
        match select.control_plane.admin {
            Some(addr) => {
                let io = tokio::net::TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connecting to {addr}"))?;
                tasks.spawn(events(io, path.clone(), addr.to_string(), tx));
            }
            None => {
                let client = client(select.control_plane.kubeconfig.as_deref()).await?;
                let ns = &select.control_plane.operator_namespace;
                for pod in operator_pods(&client, ns).await? {
                    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
                        kube::Api::namespaced(client.clone(), ns);
                    let mut forwarder = pods.portforward(&pod, &[DEBUG_PORT]).await.with_context(|| {
                        format!("port-forwarding to operator Pod {ns}/{pod} (needs create on pods/portforward in {ns})")
                    })?;
                    let io = forwarder
                        .take_stream(DEBUG_PORT)
                        .context("the port-forward has no stream")?;
                    let tx = tx.clone();
                    let (path, from) = (path.clone(), format!("operator Pod {ns}/{pod}"));
                    tasks.spawn(async move {
                        events(io, path, from, tx).await;
                        drop(forwarder);
                    });
                }
                drop(tx);
            }
        }
        let deadline = duration.map(|d| tokio::time::Instant::now() + d);
        loop {
            let next = async {
                match deadline {
                    Some(at) => tokio::time::timeout_at(at, rx.recv()).await.ok().flatten(),
                    None => rx.recv().await,
                }
            };
            let event = tokio::select! {
                e = next => e,
                _ = tokio::signal::ctrl_c() => None,
            };
            let Some(event) = event else { break };
            if !on_event(event?)? {
                break;
            }
        }
        tasks.abort_all();
        anyhow::Ok(())
    })
}

/// Reads one control plane's tap stream into `tx` until it ends or `tx` is closed.
async fn events<S>(io: S, path: String, from: String, tx: mpsc::Sender<anyhow::Result<TapEvent>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Err(e) = stream(io, &path, &from, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

async fn stream<S>(
    io: S,
    path: &str,
    from: &str,
    tx: &mpsc::Sender<anyhow::Result<TapEvent>>,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .with_context(|| format!("starting HTTP with {from}"))?;
    let connection = tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .context("the request")?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("asking {from} for {path}"))?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        anyhow::bail!(
            "{from} answered {status}: {}",
            String::from_utf8_lossy(&text).trim()
        );
    }
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("reading {from}'s tap"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            // Blank lines are the server's heartbeat.
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let event = serde_json::from_slice(&line)
                .with_context(|| format!("{from} sent a line that is no tap event"));
            if tx.send(event).await.is_err() {
                connection.abort();
                return Ok(());
            }
        }
    }
    connection.abort();
    Ok(())
}
