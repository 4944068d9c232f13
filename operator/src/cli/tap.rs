//! `switchyard tap`: live requests through the selected proxies, one line each, as they end.
//!
//! ```text
//!  CLI ──GET /tap?namespace=…──────────────────────────────────────────▶ `switchyard local --admin-addr`
//!  CLI ─kubeconfig (--as)─▶ API server ─GET /apis/tap.switchyard.dev/v1alpha1/watch/namespaces/NS/pods/POD/tap?…
//!        RBAC: watch on pods/tap (ClusterRole switchyard-tap) ─▶ one operator replica, which merges every replica's
//! ```
//!
//! In a cluster the user's own credentials decide, through the tap API (see
//! `controller::tap_api`): no port-forward, and the replica that answers merges the events of
//! the proxies whose access-log streams landed on the others. A refusal prints the API
//! server's message and fails. The tap ends with `--count` events, after `--duration`, or on
//! Ctrl-C; the control plane untaps the proxies within a second.

use std::{io::Write, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};

use crate::{
    controller::tap_api,
    tap::{TAP_PATH, TapEvent, TapFilter, hub::MAX_RPS, stream::Lines},
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

impl Selection {
    /// The session's filter.
    ///
    /// # Errors
    ///
    /// A resource that is not a Pod, or a rate out of range.
    pub fn filter(&self) -> anyhow::Result<TapFilter> {
        let pod = match &self.resource {
            None => None,
            Some(resource) => Some(match resource.split_once('/') {
                Some(("pod" | "pods" | "po", name)) => name.to_owned(),
                None => resource.clone(),
                Some((kind, _)) => anyhow::bail!(
                    "{resource}: tap selects pods (pod/NAME) or a whole namespace, not {kind}"
                ),
            }),
        };
        if !(1..=MAX_RPS).contains(&self.max_rps) {
            anyhow::bail!("--max-rps {}: a number from 1 to {MAX_RPS}", self.max_rps);
        }
        Ok(TapFilter {
            namespace: self.namespace.clone(),
            pod,
            method: self.method.clone(),
            authority: self.authority.clone(),
            path_prefix: self.path.clone(),
            max_rps: self.max_rps,
        })
    }
}

/// The admin path of the tap (local mode).
pub fn path(filter: &TapFilter) -> String {
    format!("{TAP_PATH}?{}", filter.query())
}

/// The tap API's path for `filter` through the API server: the Pod's `tap` subresource, or the
/// namespace's `tap`, under `watch/` (a long-running request); the rest of the filter in the query.
pub fn api_path(filter: &TapFilter) -> String {
    // Names are DNS labels and subdomains: kept as they are; anything else encoded.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let segment = |s: &str| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string();
    let base = format!(
        "/apis/{}/{}/watch/namespaces/{}",
        tap_api::GROUP,
        tap_api::VERSION,
        segment(&filter.namespace)
    );
    let target = match &filter.pod {
        Some(pod) => format!("{base}/pods/{}/tap", segment(pod)),
        None => format!("{base}/tap"),
    };
    let mut query = vec![format!("max_rps={}", filter.max_rps)];
    for (key, value) in [
        ("method", &filter.method),
        ("authority", &filter.authority),
        ("path", &filter.path_prefix),
    ] {
        if let Some(v) = value {
            query.push(format!("{key}={}", enc(v)));
        }
    }
    format!("{target}?{}", query.join("&"))
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
    let filter = select.filter()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let (tx, mut rx) = mpsc::channel::<anyhow::Result<TapEvent>>(1_024);
        let mut tasks = tokio::task::JoinSet::new();
        match select.control_plane.admin {
            Some(addr) => {
                let io = tokio::net::TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connecting to {addr}"))?;
                tasks.spawn(events(io, path(&filter), addr.to_string(), tx));
            }
            None => {
                let client = select.control_plane.client().await?;
                tasks.spawn(api_events(client, api_path(&filter), tx));
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

/// Reads the tap API's stream through the API server into `tx` until it ends or `tx` is
/// closed; a refusal (403 and the like) goes to `tx` with the API server's message.
async fn api_events(
    client: kube::Client,
    path: String,
    tx: mpsc::Sender<anyhow::Result<TapEvent>>,
) {
    if let Err(e) = api_stream(&client, &path, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

async fn api_stream(
    client: &kube::Client,
    path: &str,
    tx: &mpsc::Sender<anyhow::Result<TapEvent>>,
) -> anyhow::Result<()> {
    let request = http::Request::get(path)
        .body(kube::client::Body::empty())
        .context("the request")?;
    let response = client
        .send(request)
        .await
        .with_context(|| format!("asking the API server for {path}"))?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let message = crate::tap::stream::refusal(body).await;
        anyhow::bail!("the API server answered {status}: {message}");
    }
    read_lines(&mut body, "the tap API", tx).await
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
        let message = crate::tap::stream::refusal(body).await;
        anyhow::bail!("{from} answered {status}: {message}");
    }
    read_lines(&mut body, from, tx).await?;
    connection.abort();
    Ok(())
}

/// Hands each event line of a tap stream's `body` to `tx`, until the body ends or `tx` closes.
async fn read_lines<B>(
    body: &mut B,
    from: &str,
    tx: &mpsc::Sender<anyhow::Result<TapEvent>>,
) -> anyhow::Result<()>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut lines = Lines::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("reading {from}'s tap"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for line in lines
            .push(&data)
            .map_err(|e| anyhow::anyhow!("{from}: {e}"))?
        {
            let event = serde_json::from_slice(&line)
                .with_context(|| format!("{from} sent a line that is no tap event"));
            if tx.send(event).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}
