//! `serve`: the listeners, and the shutdown every one of them follows (keep serving for the
//! delay, stop accepting, finish what is in flight within [`DRAIN_LIMIT`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::listen::ListenAddr;
use crate::{Error, say};

mod grpc;
mod http_echo;
mod lines;

pub use http_echo::HeadersEcho;
pub(crate) use lines::read_line;

/// How long requests in flight may take to finish once the server stops accepting.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// What `serve` listens on and answers with.
#[derive(Debug)]
pub(crate) struct ServeConfig {
    pub(crate) name: String,
    pub(crate) http: Vec<ListenAddr>,
    pub(crate) grpc: Option<ListenAddr>,
    pub(crate) tcp: Option<ListenAddr>,
    pub(crate) banner: Option<ListenAddr>,
    pub(crate) shutdown_delay: Duration,
}

/// What every listener shares.
#[derive(Debug)]
struct Ctx {
    name: String,
    /// `name` as a header value, checked once.
    served_by: HeaderValue,
}

/// Becomes `true` when listeners must stop accepting and wind down.
type Drain = watch::Receiver<bool>;

/// SIGTERM and SIGINT, installed before the server says it is up, so that a signal sent right
/// after the start-up line is handled rather than killing the process.
pub(crate) struct Termination {
    term: Signal,
    int: Signal,
}

// === impl Termination ===

impl Termination {
    pub(crate) fn new() -> Result<Self, Error> {
        Ok(Termination {
            term: signal(SignalKind::terminate()).map_err(Error::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(Error::Signal)?,
        })
    }

    /// Waits for either signal and names it.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Serves until SIGTERM or SIGINT, then shuts down as the module docs say.
pub(crate) async fn serve(config: ServeConfig) -> Result<(), Error> {
    let ServeConfig {
        name,
        http,
        grpc,
        tcp,
        banner,
        shutdown_delay,
    } = config;
    let served_by = HeaderValue::from_str(&name).map_err(|_| Error::Arg {
        flag: "--name",
        value: name.clone(),
        reason: "must be printable ASCII, as it is sent in a header".to_owned(),
    })?;
    let ctx = Arc::new(Ctx { name, served_by });
    let mut termination = Termination::new()?;

    let mut http_listeners = Vec::new();
    for addr in http {
        http_listeners.push(bind("http", addr).await?);
    }
    let grpc = optional_bind("grpc", grpc).await?;
    let tcp = optional_bind("tcp", tcp).await?;
    let banner = optional_bind("banner", banner).await?;

    let mut startup = format!("serving name={}", ctx.name);
    for (what, (_, addr)) in http_listeners
        .iter()
        .map(|l| ("http", l))
        .chain(grpc.iter().map(|l| ("grpc", l)))
        .chain(tcp.iter().map(|l| ("tcp", l)))
        .chain(banner.iter().map(|l| ("banner", l)))
    {
        startup.push_str(&format!(" {what}={addr}"));
    }

    let (drain_tx, drain) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (listener, _) in http_listeners {
        tasks.spawn(http_echo::serve(listener, ctx.clone(), drain.clone()));
    }
    if let Some((listener, _)) = grpc {
        tasks.spawn(grpc::serve(listener, ctx.clone(), drain.clone()));
    }
    if let Some((listener, _)) = tcp {
        tasks.spawn(lines::serve(
            listener,
            lines::Protocol::Echo,
            ctx.clone(),
            drain.clone(),
        ));
    }
    if let Some((listener, _)) = banner {
        tasks.spawn(lines::serve(
            listener,
            lines::Protocol::Banner,
            ctx.clone(),
            drain.clone(),
        ));
    }
    say(format_args!("{startup}"));

    let signal = termination.recv().await;
    say(format_args!(
        "{signal}: serving for {} more, then draining",
        humantime::format_duration(shutdown_delay)
    ));
    tokio::time::sleep(shutdown_delay).await;
    let _ = drain_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => say(format_args!("drained, exiting")),
        Err(_) => say(format_args!(
            "still busy after {}, exiting",
            humantime::format_duration(DRAIN_LIMIT)
        )),
    }
    Ok(())
}

/// The listener and the address it got (the port is chosen by the kernel when 0 was asked for).
async fn bind(what: &'static str, addr: ListenAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listen_err = |source| Error::Listen {
        what,
        addr: addr.0,
        source,
    };
    let listener = TcpListener::bind(addr.0).await.map_err(listen_err)?;
    let bound = listener.local_addr().map_err(listen_err)?;
    Ok((listener, bound))
}

async fn optional_bind(
    what: &'static str,
    addr: Option<ListenAddr>,
) -> Result<Option<(TcpListener, SocketAddr)>, Error> {
    match addr {
        Some(addr) => bind(what, addr).await.map(Some),
        None => Ok(None),
    }
}

/// Waits until `drain` turns `true` (or its sender is gone).
async fn drained(drain: &mut Drain) {
    let _ = drain.wait_for(|d| *d).await;
}

/// Accept errors (such as running out of file descriptors) are logged and retried after a
/// pause, so that they neither stop the listener nor spin.
async fn accept_failed(what: &str, error: &std::io::Error) {
    say(format_args!("{what} accept failed: {error}"));
    tokio::time::sleep(Duration::from_millis(100)).await;
}
