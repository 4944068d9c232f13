//! `switchyard local DIR` and `switchyard compile -f DIR --proxy NS/NAME`.

use std::{io::Write, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use switchyard_adapters::model::{AccessMode, DataPlane, ListenerPolicy, MeshSettings, ProxyId};

use crate::{
    controller::admin::Admin,
    identity::CaFiles,
    local::{self, Local, LocalConfig},
    xds::server::{self, XdsConfig},
};

/// Mesh-wide settings shared by `local` and `compile`.
#[derive(Debug, Clone, clap::Args)]
pub struct MeshArgs {
    /// `strict` denies what no TrafficTarget allows; `permissive` allows everything.
    #[arg(
        long,
        value_enum,
        default_value = "strict",
        env = "SWITCHYARD_ACCESS_MODE"
    )]
    pub access_mode: Mode,
    /// SPIFFE trust domain of workload identities.
    #[arg(long, default_value = "cluster.local", env = "SWITCHYARD_TRUST_DOMAIN")]
    pub trust_domain: String,
    /// Data plane of workloads whose Pod has no `switchyard.dev/data-plane` annotation:
    /// `envoy`, or `bundled` (`switchyard-proxy`, which gets only the xDS it implements).
    #[arg(
        long,
        value_enum,
        default_value = "envoy",
        env = "SWITCHYARD_DATA_PLANE"
    )]
    pub data_plane: DataPlaneArg,
    /// HTTP: how long a request's headers may take from their first byte to their last; the
    /// peer then gets 408. `0s` turns it off.
    #[arg(
        long,
        default_value_t = DurationArg(ListenerPolicy::default().request_headers_timeout),
        env = "SWITCHYARD_REQUEST_HEADERS_TIMEOUT"
    )]
    pub request_headers_timeout: DurationArg,
    /// HTTP: a downstream connection with no request in flight this long is closed. `0s`
    /// turns it off.
    #[arg(
        long,
        default_value_t = DurationArg(ListenerPolicy::default().http_idle_timeout),
        env = "SWITCHYARD_HTTP_IDLE_TIMEOUT"
    )]
    pub http_idle_timeout: DurationArg,
    /// HTTP: a request with nothing received or sent this long ends (504 before its
    /// response). `0s` turns it off.
    #[arg(
        long,
        default_value_t = DurationArg(ListenerPolicy::default().stream_idle_timeout),
        env = "SWITCHYARD_STREAM_IDLE_TIMEOUT"
    )]
    pub stream_idle_timeout: DurationArg,
    /// TCP: a proxied connection with no bytes either way this long is closed. `0s` turns it
    /// off.
    #[arg(
        long,
        default_value_t = DurationArg(ListenerPolicy::default().tcp_idle_timeout),
        env = "SWITCHYARD_TCP_IDLE_TIMEOUT"
    )]
    pub tcp_idle_timeout: DurationArg,
    /// Open connections per filter chain of every listener (per listener, or per port of an
    /// intercepted one); a connection beyond it is closed at once. `0` for no limit.
    #[arg(
        long,
        default_value_t = ListenerPolicy::default().max_connections.map_or(0, |m| m.get()),
        env = "SWITCHYARD_MAX_CONNECTIONS"
    )]
    pub max_connections: u32,
}

/// A duration flag: a number with a unit `s`, `m`, `h` or `d`, printed the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl std::str::FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(DurationArg)
    }
}

impl std::fmt::Display for DurationArg {
    /// In the largest unit that divides it: `10s`, `5m`, `1h`; whole seconds only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.as_secs();
        match [(86_400, "d"), (3600, "h"), (60, "m")]
            .into_iter()
            .find(|(unit, _)| secs > 0 && secs.is_multiple_of(*unit))
        {
            Some((unit, name)) => write!(f, "{}{name}", secs / unit),
            None => write!(f, "{secs}s"),
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    Strict,
    Permissive,
}

/// The values of `--data-plane`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataPlaneArg {
    Envoy,
    Bundled,
}

impl From<DataPlaneArg> for DataPlane {
    fn from(d: DataPlaneArg) -> Self {
        match d {
            DataPlaneArg::Envoy => DataPlane::Envoy,
            DataPlaneArg::Bundled => DataPlane::Bundled,
        }
    }
}

impl MeshArgs {
    pub(crate) fn settings(&self) -> MeshSettings {
        MeshSettings {
            trust_domain: self.trust_domain.clone(),
            access_mode: match self.access_mode {
                Mode::Strict => AccessMode::Strict,
                Mode::Permissive => AccessMode::Permissive,
            },
            data_plane: self.data_plane.into(),
            listener_policy: ListenerPolicy {
                request_headers_timeout: self.request_headers_timeout.0,
                http_idle_timeout: self.http_idle_timeout.0,
                stream_idle_timeout: self.stream_idle_timeout.0,
                tcp_idle_timeout: self.tcp_idle_timeout.0,
                max_connections: std::num::NonZeroU32::new(self.max_connections),
            },
            ..MeshSettings::default()
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// Directory of Kubernetes YAML: SMI objects, Services, EndpointSlices, Pods, ServiceAccounts.
    pub dir: PathBuf,
    /// Address of the xDS (ADS) server.
    #[arg(long, default_value = "127.0.0.1:15010", env = "SWITCHYARD_XDS_ADDR")]
    pub xds_addr: SocketAddr,
    /// Address of the admin port: `/healthz`, `/readyz`, `/metrics`, and `/proxies` for
    /// `switchyard proxy-status --admin` (port 0 takes a free one, printed at start).
    #[arg(long, default_value = "127.0.0.1:15014", env = "SWITCHYARD_ADMIN_ADDR")]
    pub admin_addr: SocketAddr,
    /// Where Envoy bootstraps and proxy tokens are written [default: DIR/.switchyard].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// A burst of edits within this window becomes one push (milliseconds).
    #[arg(long, default_value_t = 50)]
    pub debounce_ms: u64,
    /// Bootstraps use incremental (delta) ADS instead of state of the world.
    #[arg(long)]
    pub delta: bool,
    /// Lifetime of workload certificates, renewed at two thirds of it: a number with a unit,
    /// `s`, `m`, `h` or `d` (e.g. `24h`, `90s`).
    #[arg(long, default_value = "24h", value_parser = parse_duration, env = "SWITCHYARD_CERT_LIFETIME")]
    pub cert_lifetime: Duration,
    #[command(flatten)]
    pub ca: CaArgs,
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// The mesh CA to issue from, shared by `local` and `controller`. Without it a root is
/// generated at start and kept in memory only (one process trusts it).
#[derive(Debug, Clone, clap::Args)]
pub struct CaArgs {
    /// The mesh CA's certificate chain (PEM, issuing certificate first).
    #[arg(long, requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The mesh CA's private key (unencrypted PKCS#8 PEM).
    #[arg(long, requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// The trust bundle (PEM roots), when `--ca-cert` ends at an intermediate.
    #[arg(long, requires = "ca_cert")]
    pub ca_bundle: Option<PathBuf>,
}

impl CaArgs {
    /// The files, when `--ca-cert` and `--ca-key` were given.
    pub fn files(&self) -> Option<CaFiles> {
        Some(CaFiles {
            cert_chain: self.ca_cert.clone()?,
            key: self.ca_key.clone()?,
            trust_bundle: self.ca_bundle.clone(),
        })
    }
}

/// `90s`, `15m`, `24h`, `7d`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let unit = s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(s.len(), |(i, _)| i);
    let (n, unit) = s.split_at(unit);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with a unit s, m, h or d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// Directory (or file) of manifests.
    #[arg(short = 'f', long = "filename")]
    pub dir: PathBuf,
    /// The proxy, as NAMESPACE/POD.
    #[arg(long)]
    pub proxy: String,
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// Runs local mode until interrupted.
pub fn run_local(args: LocalArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut config = LocalConfig::new(&args.dir);
    config.xds_addr = args.xds_addr;
    if let Some(dir) = args.state_dir {
        config.state_dir = dir;
    }
    config.settings = args.mesh.settings();
    if args.delta {
        config.xds_api = switchyard_adapters::envoy::XdsApi::Delta;
    }
    config.ca.workload_lifetime = args.cert_lifetime;
    config.ca_files = args.ca.files();
    let debounce = Duration::from_millis(args.debounce_ms);
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let poll = config.poll;
        // Bind first: with port 0 the bootstraps must name the port actually taken.
        let listener = tokio::net::TcpListener::bind(config.xds_addr)
            .await
            .with_context(|| format!("binding {}", config.xds_addr))?;
        let addr = listener.local_addr().context("the xds address")?;
        config.xds_addr = addr;
        let state_dir = config.state_dir.clone();
        let mut local = Local::new(config)?;
        // Read the directory before serving: a path that cannot be read now is a mistake to stop
        // on, not to retry every tick.
        let first = local.tick()?;
        let store = local.store();
        let auth = local.tokens();
        let tls =
            Arc::new(crate::webhook::CertReloader::load(local.xds_tls_dir())?).server_config()?;
        let xds_config = XdsConfig {
            debounce,
            ..XdsConfig::default()
        };
        let xds = server::XdsServer::new(
            store,
            auth as Arc<dyn crate::xds::auth::Authenticate>,
            xds_config,
        )
        .with_taps(local.taps(), local.peers());
        let admin_listener = tokio::net::TcpListener::bind(args.admin_addr)
            .await
            .with_context(|| format!("binding the admin address {}", args.admin_addr))?;
        let admin_addr = admin_listener.local_addr().context("the admin address")?;
        // The index's view of workloads for the Traffic Metrics API, refreshed every tick
        // that changed it.
        let mut workloads_version = local.index().workloads_version();
        let (workloads_tx, workloads_rx) =
            tokio::sync::watch::channel(Arc::new(local.index().workloads()));
        let admin = Admin {
            metrics: Arc::default(),
            xds: xds.metrics(),
            // Local mode's admin address is loopback by default, and only its user's.
            proxies: Some(xds.statuses()),
            telemetry: Some(xds.telemetry()),
            peers: Some(local.peers()),
            workloads: Some(workloads_rx),
            taps: Some(local.taps()),
        };
        // Local mode has read its directory once already: that is its first sync.
        admin.metrics.set_synced();
        let admin_task = tokio::spawn(crate::controller::admin::serve(admin_listener, admin));
        writeln!(
            out,
            "switchyard local: serving xds on {addr}, admin on {admin_addr}; bootstraps in {}",
            state_dir.display()
        )?;
        print_tick(out, &first)?;
        let server = tokio::spawn(server::serve_listener_tls(listener, xds, tls, async {
            let _ = tokio::signal::ctrl_c().await;
        }));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
        // A tap opening or closing is published at once, not at the next poll.
        let mut taps = local.taps().changes();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = taps.changed() => {}
                _ = tokio::signal::ctrl_c() => break,
            }
            print_tick(out, &local.tick()?)?;
            if local.index().workloads_version() != workloads_version {
                workloads_version = local.index().workloads_version();
                workloads_tx.send_replace(Arc::new(local.index().workloads()));
            }
        }
        server.abort();
        admin_task.abort();
        Ok(())
    })
}

/// One tick's lines for the user, flushed.
fn print_tick(out: &mut dyn Write, tick: &local::Tick) -> std::io::Result<()> {
    for r in &tick.reports {
        writeln!(out, "{r}")?;
    }
    for (obj, st) in &tick.statuses {
        writeln!(out, "{obj}: {}", local::describe(st))?;
    }
    for w in &tick.warnings {
        writeln!(out, "warning: {w}")?;
    }
    if tick.pushed > 0 {
        writeln!(
            out,
            "published new configuration to {} proxies",
            tick.pushed
        )?;
    }
    out.flush()
}

/// Prints the xDS resources one proxy would get, as JSON, with the data plane they were compiled
/// for (`dataPlane`) and the warnings (resources the bundled proxy does not implement are left
/// out with one each).
pub fn run_compile(args: CompileArgs, out: &mut dyn Write) -> anyhow::Result<bool> {
    let (namespace, pod) = args
        .proxy
        .split_once('/')
        .context("--proxy must be NAMESPACE/POD")?;
    let proxy = ProxyId {
        namespace: namespace.into(),
        pod: pod.into(),
    };
    let mut config = LocalConfig::new(&args.dir);
    config.settings = args.mesh.settings();
    let config_data_plane = config.settings.data_plane;
    let mut local = Local::new(config)?;
    let tick = local.tick_without_state()?;
    for r in &tick.reports {
        eprintln!("{r}");
    }
    let Some(output) = local.compile_proxy(&proxy) else {
        anyhow::bail!("no Pod {proxy} in {}", args.dir.display());
    };
    let resources: Vec<serde_json::Value> = output
        .resources
        .iter()
        .map(|r| {
            serde_json::json!({
                "typeUrl": r.type_url,
                "name": r.name,
                "resource": crate::local::render_resource(&r.resource),
            })
        })
        .collect();
    let data_plane = local.data_plane(&proxy).unwrap_or(config_data_plane);
    let doc = serde_json::json!({
        "proxy": proxy.to_string(),
        "dataPlane": data_plane.as_str(),
        "resources": resources,
        "warnings": output.warnings,
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)?;
    Ok(tick.reports.is_empty())
}
