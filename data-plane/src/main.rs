//! `switchyard-proxy`: starts the bundled sidecar from an Envoy-style bootstrap file.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::Parser;
use switchyard_proxy::{
    admin, ads::Ads, bootstrap::Bootstrap, metrics::Registry, metrics_push, proxy, state::State,
};

// After a burst of 2,000 connections glibc's malloc kept the proxy at 7× its idle memory for
// good (fragmented arenas it cannot trim). jemalloc's background thread returns freed pages to
// the OS on a timer, see `DIRTY_DECAY_MS`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long jemalloc keeps freed pages before handing them back to the OS: 1 s (its default,
/// 10 s, held a burst's memory that long). Reusing a page within that time costs nothing; after
/// it, a page fault.
const DIRTY_DECAY_MS: isize = 1_000;

/// The Switchyard sidecar proxy. Reads the same bootstrap file as Envoy and gets everything
/// else over ADS from the control plane.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Envoy v3 bootstrap (JSON) written by the control plane.
    #[arg(long, short = 'c', visible_alias = "config-path")]
    bootstrap: PathBuf,
    /// Worker threads; 1 runs everything on one thread, which is what a sidecar should
    /// usually get.
    #[arg(long, env = "SWITCHYARD_PROXY_THREADS", default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let decay = tune_allocator();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(error) = decay {
        tracing::warn!(%error, "could not set the allocator's decay time; freed memory returns to the OS more slowly");
    }
    let bootstrap = Bootstrap::load(&args.bootstrap)
        .with_context(|| format!("bootstrap {}", args.bootstrap.display()))?;
    tracing::info!(
        variant = if bootstrap.delta {
            "delta"
        } else {
            "state of the world"
        },
        "ADS as the bootstrap asks"
    );
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(bootstrap))
}

async fn run(bootstrap: Bootstrap) -> anyhow::Result<()> {
    let state = Arc::new(State::default());
    let metrics = Arc::new(Registry::default());
    let admin = admin::bind(bootstrap.admin)
        .await
        .with_context(|| format!("admin address {}", bootstrap.admin))?;
    tracing::info!(node = %bootstrap.node_id, admin = %bootstrap.admin, "starting");
    tokio::spawn(admin::serve(admin, state.clone(), metrics.clone()));
    if let Some(address) = bootstrap.health {
        let health = admin::bind(address)
            .await
            .with_context(|| format!("health address {address}"))?;
        tracing::info!(health = %address, "serving /ready, /live and /metrics");
        tokio::spawn(admin::serve_health(
            health,
            state.clone(),
            metrics.clone(),
            bootstrap.health_forwards.clone(),
        ));
    }
    if let Some(sink) = bootstrap.metrics_sink {
        tracing::info!(interval = ?sink.flush_interval, "pushing golden metrics to the control plane");
        tokio::spawn(metrics_push::stream::run(
            bootstrap.clone(),
            metrics.clone(),
            sink.flush_interval,
            sink.batch_size,
        ));
    }
    let data_path = proxy::Context::with_control_plane(state.clone(), metrics, bootstrap.clone());
    tokio::spawn(Ads::new(bootstrap, state).run());
    tokio::spawn(proxy::run_listeners(data_path));
    shutdown().await;
    tracing::info!("stopping");
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Sets [`DIRTY_DECAY_MS`] for the arenas that exist (4096 is `MALLCTL_ARENAS_ALL`) and those
/// made later.
fn tune_allocator() -> Result<(), tikv_jemalloc_ctl::Error> {
    use tikv_jemalloc_ctl::{Access as _, AsName as _};
    b"arenas.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS)?;
    b"arena.4096.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS)
}
