//! `switchyard controller` (Kubernetes mode) and `switchyard bootstrap` (a proxy's bootstrap for
//! a cluster, with its ServiceAccount token).

use std::{io::Write, net::IpAddr, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use switchyard_adapters::{
    envoy::{self, AppProbe, BootstrapOptions, XdsCa},
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
    /// Address of the admin routes plus `/proxies` and `/proxies/{proxy}/config` (what each
    /// proxy runs, for `switchyard proxy-status` and `proxy-config`, which reach it by
    /// port-forward). Keep it on loopback: other Pods must not read the mesh's configuration.
    #[arg(long, default_value_t = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, crate::install::DEBUG_PORT)))]
    pub debug_addr: SocketAddr,
    /// Address of the webhooks (HTTPS: `/convert`, `/inject`); off without `--webhook-cert-dir`.
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// Directory with the webhook's `tls.crt` and `tls.key` (reloaded when they change).
    #[arg(long)]
    pub webhook_cert_dir: Option<PathBuf>,
    /// Directory with the xDS server's `tls.crt`, `tls.key` (reloaded when they change) and
    /// `ca.crt` (what injected proxies verify it with). Without it xDS is plaintext, and Envoy
    /// proxies cannot authenticate (gRPC sends their token only over TLS).
    #[arg(long)]
    pub xds_cert_dir: Option<PathBuf>,
    /// Serve the aggregated APIs to the API server's aggregation layer on the webhook port (the
    /// SMI Traffic Metrics API and the tap API), and register their APIServices
    /// (`v1alpha1.metrics.smi-spec.io`, `v1alpha1.tap.switchyard.dev`, to the Service
    /// `switchyard` in --namespace, port 443, trusting ca.crt in --webhook-cert-dir) while this
    /// replica serves. Needs --webhook-cert-dir.
    #[arg(long, requires = "webhook_cert_dir")]
    pub metrics_apiservice: bool,
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
#[derive(Clone, Debug, clap::Args)]
pub struct InjectArgs {
    /// The bundled proxy's image [default: localhost/switchyard-proxy:VERSION].
    #[arg(long, value_name = "IMAGE")]
    pub proxy_image: Option<String>,
    /// Envoy's image [default: localhost/switchyard-envoy:VERSION].
    #[arg(long, value_name = "IMAGE")]
    pub envoy_image: Option<String>,
    /// The image of the `switchyard-init` container, which runs `switchyard proxy-init`: the
    /// operator's own [default: localhost/switchyard:VERSION].
    #[arg(long, value_name = "IMAGE")]
    pub init_image: Option<String>,
    /// The control plane's host as injected proxies dial it [default: switchyard.NAMESPACE.svc].
    #[arg(long, value_name = "HOST")]
    pub xds_host: Option<String>,
    /// The control plane's port as injected proxies dial it (the Service's xDS port).
    #[arg(long, default_value_t = 15010)]
    pub xds_port: u16,
    /// The CA certificate (PEM file) injected proxies verify the control plane with [default
    /// for the controller: ca.crt in --xds-cert-dir].
    #[arg(long, value_name = "FILE")]
    pub xds_ca_file: Option<PathBuf>,
}

impl InjectArgs {
    /// The injector's configuration for an operator in `namespace` with these mesh settings.
    pub(crate) fn config(
        &self,
        namespace: &str,
        default_data_plane: DataPlane,
        audience: &str,
    ) -> anyhow::Result<InjectConfig> {
        let defaults = InjectConfig::new(namespace);
        let image = |flag: &Option<String>, default: String| flag.clone().unwrap_or(default);
        let xds_ca = match &self.xds_ca_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("--xds-ca-file {}", file.display()))?,
            ),
            None => None,
        };
        Ok(InjectConfig {
            images: Images {
                init: image(&self.init_image, defaults.images.init.clone()),
                bundled: image(&self.proxy_image, defaults.images.bundled.clone()),
                envoy: image(&self.envoy_image, defaults.images.envoy.clone()),
            },
            xds_host: self.xds_host.clone().unwrap_or(defaults.xds_host.clone()),
            xds_port: self.xds_port,
            default_data_plane,
            audience: audience.to_owned(),
            xds_ca,
            ..defaults
        })
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
        let mut inject_args = args.inject.clone();
        if inject_args.xds_ca_file.is_none() {
            inject_args.xds_ca_file = args
                .xds_cert_dir
                .as_ref()
                .map(|dir| dir.join(crate::install::pki::WEBHOOK_CA_CERT));
        }
        let inject = inject_args.config(&args.namespace, settings.data_plane, &args.audience)?;
        let config = ControllerConfig {
            namespace: args.namespace.clone(),
            identity,
            xds_addr: args.xds_addr,
            admin_addr: args.admin_addr,
            debug_addr: args.debug_addr,
            webhook: args
                .webhook_cert_dir
                .clone()
                .map(|dir| (args.webhook_addr, dir)),
            xds_cert_dir: args.xds_cert_dir.clone(),
            metrics_apiservice: args.metrics_apiservice,
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
    client_as(kubeconfig, None).await
}

/// [`client`] acting as user `as_user` when given (impersonation, as `kubectl --as`).
pub(crate) async fn client_as(
    kubeconfig: Option<&std::path::Path>,
    as_user: Option<&str>,
) -> anyhow::Result<kube::Client> {
    let mut config = kubeconfig::config(kubeconfig).await?;
    if let Some(user) = as_user {
        config.auth_info.impersonate = Some(user.to_owned());
    }
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

/// The environment variable that carries the xDS CA (PEM) to `switchyard-init`.
pub const XDS_CA_ENV: &str = "SWITCHYARD_XDS_CA";

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// The Pod this proxy runs in, `namespace/name` (its `node.id`) [default:
    /// $POD_NAMESPACE/$POD_NAME, as the downward API sets them in an injected Pod].
    #[arg(long)]
    pub pod: Option<String>,
    /// The Pod's IP, where its listeners bind.
    #[arg(long, env = "POD_IP")]
    pub pod_ip: IpAddr,
    /// Where the admin interface (which can drain or stop the proxy) listens: loopback, so
    /// only the Pod's own processes reach it.
    #[arg(long, default_value = "127.0.0.1")]
    pub admin_ip: IpAddr,
    /// The health port on the Pod's IP: `/ready`, `/live` and `/metrics`, nothing else (the
    /// kubelet's probes); interception lets it through.
    #[arg(long, default_value_t = crate::intercept::HEALTH_PORT)]
    pub health_port: u16,
    /// An application HTTP probe the injector rewrote, `PATH=PORT:TARGET`
    /// (`/app-health/web/readyz=8080:/healthz`): the health port answers `GET PATH` with the
    /// application's answer to `GET TARGET` on the Pod's IP at PORT. Repeatable.
    #[arg(long = "app-probe", value_name = "PATH=PORT:TARGET")]
    pub app_probes: Vec<String>,
    /// A file holding the Pod's ServiceAccount token (audience `switchyard`), as the proxy
    /// sees it: the bootstrap names it and the proxy reads it for every xDS stream.
    #[arg(long)]
    pub token_file: PathBuf,
    /// The controller's xDS host.
    #[arg(long, default_value = "switchyard.switchyard-system.svc")]
    pub xds_host: String,
    #[arg(long, default_value_t = 15010)]
    pub xds_port: u16,
    /// The name the control plane's certificate holds, when --xds-host is not it (an IP).
    #[arg(long, value_name = "NAME")]
    pub xds_server_name: Option<String>,
    /// The CA certificate (PEM file, as the proxy sees it) the control plane's certificate is
    /// verified with.
    #[arg(long, value_name = "FILE")]
    pub xds_ca_file: Option<PathBuf>,
    /// The same CA as PEM text, written into the bootstrap (a CA certificate is public); the
    /// injector sets it in `switchyard-init`'s environment.
    #[arg(long, env = XDS_CA_ENV, value_name = "PEM", hide_env_values = true)]
    pub xds_ca: Option<String>,
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
    // The token itself stays in its file (the proxy reads it there for every stream); that it
    // is there is checked now, where a mistake is easy to see.
    std::fs::metadata(&args.token_file)
        .with_context(|| format!("--token-file {}", args.token_file.display()))?;
    let xds_ca = match (&args.xds_ca_file, &args.xds_ca) {
        (Some(file), _) => {
            std::fs::metadata(file).with_context(|| format!("--xds-ca-file {}", file.display()))?;
            XdsCa::File(file.clone())
        }
        (None, Some(pem)) if pem.contains("-----BEGIN CERTIFICATE-----") => XdsCa::Pem(pem.clone()),
        (None, Some(_)) => anyhow::bail!("{XDS_CA_ENV}: no PEM certificate"),
        (None, None) => anyhow::bail!(
            "--xds-ca-file or {XDS_CA_ENV} is required: the CA the control plane's \
             certificate is verified with"
        ),
    };
    let mut b = BootstrapOptions::new(
        pod,
        args.admin_ip,
        args.xds_host.clone(),
        args.xds_port,
        args.token_file.clone(),
        xds_ca,
    );
    b.xds_server_name = args.xds_server_name.clone();
    b.health = Some(SocketAddr::new(args.pod_ip, args.health_port));
    b.app_probes = args
        .app_probes
        .iter()
        .map(|p| parse_app_probe(p))
        .collect::<anyhow::Result<_>>()?;
    if args.delta {
        b.api = envoy::XdsApi::Delta;
    }
    let mut json = serde_json::to_vec_pretty(&envoy::bootstrap(&b))?;
    json.push(b'\n');
    Ok(json)
}

/// `PATH=PORT:TARGET`, both paths absolute.
fn parse_app_probe(text: &str) -> anyhow::Result<AppProbe> {
    let bad = || anyhow::anyhow!("--app-probe {text:?}: expected PATH=PORT:TARGET");
    let (path, rest) = text.split_once('=').ok_or_else(bad)?;
    let (port, target) = rest.split_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if !path.starts_with('/') || !target.starts_with('/') || port == 0 {
        return Err(bad());
    }
    Ok(AppProbe {
        path: path.to_owned(),
        port,
        target: target.to_owned(),
    })
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
