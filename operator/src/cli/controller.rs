//! `switchyard controller` (Kubernetes mode) and `switchyard bootstrap` (a proxy's bootstrap for
//! a cluster, with its ServiceAccount token).

use std::{io::Write, net::IpAddr, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use switchyard_adapters::{
    envoy::{self, BootstrapOptions},
    model::DataPlane,
};

use super::{
    kubeconfig,
    local::{CaArgs, MeshArgs},
};
use crate::{
    controller::{self, ControllerConfig, auth::DEFAULT_AUDIENCE, lease::LeaseTiming},
    identity::CaConfig,
    inject::{Images, InjectConfig},
};

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// The controller's namespace (its Lease lives there).
    #[arg(long, default_value = "switchyard-system", env = "POD_NAMESPACE")]
    pub namespace: String,
    /// This replica's name, for the Lease and Events [default: the host name].
    #[arg(long, env = "POD_NAME")]
    pub name: Option<String>,
    /// A kubeconfig file [default: $KUBECONFIG or ~/.kube/config, else the in-cluster config].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address of the xDS (ADS) server.
    #[arg(long, default_value = "0.0.0.0:15010")]
    pub xds_addr: SocketAddr,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    /// Address of the webhooks (HTTPS: `/convert`, `/inject`); off without `--webhook-cert-dir`.
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// Directory with the webhook's `tls.crt` and `tls.key` (reloaded when they change).
    #[arg(long)]
    pub webhook_cert_dir: Option<PathBuf>,
    /// What the injection webhook injects.
    #[command(flatten)]
    pub inject: InjectArgs,
    /// The mesh CA; every replica must load the same one.
    #[command(flatten)]
    pub ca: CaArgs,
    /// The audience proxies' ServiceAccount tokens must be issued for.
    #[arg(long, default_value = DEFAULT_AUDIENCE)]
    pub audience: String,
    /// How long the status writer's Lease lasts without renewal (seconds).
    #[arg(long, default_value_t = 15)]
    pub lease_duration_secs: u64,
    /// How often each replica checks the Lease (seconds).
    #[arg(long, default_value_t = 2)]
    pub lease_retry_secs: u64,
    #[command(flatten)]
    pub mesh: MeshArgs,
}

/// The injector's settings: the images it injects and where its proxies find the control plane.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// The bundled proxy's image [default: localhost/switchyard-proxy:<version>].
    #[arg(long, value_name = "IMAGE")]
    pub proxy_image: Option<String>,
    /// Envoy's image [default: localhost/switchyard-envoy:<version>].
    #[arg(long, value_name = "IMAGE")]
    pub envoy_image: Option<String>,
    /// The image of the `switchyard-init` container, which runs `switchyard proxy-init`: the
    /// operator's own [default: localhost/switchyard:<version>].
    #[arg(long, value_name = "IMAGE")]
    pub init_image: Option<String>,
    /// The control plane's host as injected proxies dial it [default: switchyard.NAMESPACE.svc].
    #[arg(long, value_name = "HOST")]
    pub xds_host: Option<String>,
    /// The control plane's port as injected proxies dial it (the Service's xDS port).
    #[arg(long, default_value_t = 15010)]
    pub xds_port: u16,
}

impl InjectArgs {
    /// The injector's configuration for an operator in `namespace` with these mesh settings.
    pub(crate) fn config(
        &self,
        namespace: &str,
        default_data_plane: DataPlane,
        audience: &str,
    ) -> InjectConfig {
        let defaults = InjectConfig::new(namespace);
        let image = |flag: &Option<String>, default: String| flag.clone().unwrap_or(default);
        InjectConfig {
            images: Images {
                init: image(&self.init_image, defaults.images.init.clone()),
                bundled: image(&self.proxy_image, defaults.images.bundled.clone()),
                envoy: image(&self.envoy_image, defaults.images.envoy.clone()),
            },
            xds_host: self.xds_host.clone().unwrap_or(defaults.xds_host.clone()),
            xds_port: self.xds_port,
            default_data_plane,
            audience: audience.to_owned(),
            ..defaults
        }
    }
}

/// Runs the controller until SIGINT or SIGTERM.
pub fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let client = client(args.kubeconfig.as_deref()).await?;
        let identity = match args.name.clone() {
            Some(n) => n,
            None => hostname(),
        };
        let settings = args.mesh.settings();
        let inject = args
            .inject
            .config(&args.namespace, settings.data_plane, &args.audience);
        let config = ControllerConfig {
            namespace: args.namespace.clone(),
            identity,
            xds_addr: args.xds_addr,
            admin_addr: args.admin_addr,
            webhook: args
                .webhook_cert_dir
                .clone()
                .map(|dir| (args.webhook_addr, dir)),
            inject,
            settings,
            ca: CaConfig::default(),
            ca_files: args.ca.files(),
            audience: args.audience.clone(),
            lease: LeaseTiming {
                duration: Duration::from_secs(args.lease_duration_secs.max(1)),
                retry: Duration::from_secs(args.lease_retry_secs.max(1)),
            },
            debounce: Duration::from_millis(20),
        };
        controller::run(client, config, shutdown_signal()).await?;
        Ok(())
    })
}

/// A client for the cluster `kubeconfig` names, else the one `kubectl` would find (see
/// [`kubeconfig::config`]); its error says once what was tried.
pub(crate) async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = kubeconfig::config(kubeconfig).await?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| format!("switchyard-{}", std::process::id()))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// The Pod this proxy runs in, `namespace/name` (its `node.id`) [default:
    /// $POD_NAMESPACE/$POD_NAME, as the downward API sets them in an injected Pod].
    #[arg(long)]
    pub pod: Option<String>,
    /// The Pod's IP, where its listeners bind.
    #[arg(long, env = "POD_IP")]
    pub pod_ip: IpAddr,
    /// A file holding the Pod's ServiceAccount token (audience `switchyard`).
    #[arg(long)]
    pub token_file: PathBuf,
    /// The controller's xDS host.
    #[arg(long, default_value = "switchyard.switchyard-system.svc")]
    pub xds_host: String,
    #[arg(long, default_value_t = 15010)]
    pub xds_port: u16,
    /// Incremental (delta) ADS instead of state of the world.
    #[arg(long)]
    pub delta: bool,
}

/// Prints the Envoy v3 bootstrap (also read by `switchyard-proxy`) for one Pod.
pub fn run_bootstrap(args: &BootstrapArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    out.write_all(&bootstrap(args, &|name| std::env::var(name).ok())?)?;
    Ok(())
}

/// One Pod's proxy bootstrap, pretty JSON ending in a newline: what `switchyard bootstrap`
/// prints and `switchyard proxy-init` writes. `env` reads the downward-API variables that stand
/// in for a missing `--pod`.
pub fn bootstrap(
    args: &BootstrapArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<u8>> {
    let pod = pod_id(args.pod.as_deref(), env)?;
    controller::auth::parse_node_id(&pod).map_err(anyhow::Error::msg)?;
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading {}", args.token_file.display()))?;
    let mut b = BootstrapOptions::new(
        pod,
        args.pod_ip,
        args.xds_host.clone(),
        args.xds_port,
        token.trim().to_string(),
    );
    if args.delta {
        b.api = envoy::XdsApi::Delta;
    }
    let mut json = serde_json::to_vec_pretty(&envoy::bootstrap(&b))?;
    json.push(b'\n');
    Ok(json)
}

/// `--pod`, else `$POD_NAMESPACE/$POD_NAME`.
fn pod_id(flag: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    if let Some(pod) = flag {
        return Ok(pod.to_owned());
    }
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    match (var("POD_NAMESPACE"), var("POD_NAME")) {
        (Some(ns), Some(name)) => Ok(format!("{ns}/{name}")),
        _ => anyhow::bail!(
            "--pod is required (or POD_NAMESPACE and POD_NAME in the environment, from the \
             downward API)"
        ),
    }
}
