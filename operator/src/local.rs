//! Local mode, the embedded default: a directory of Kubernetes YAML instead of a cluster, fed
//! through the same index and served over the same xDS server.
//!
//! Every Pod in the directory is a proxy. For each, local mode writes an Envoy bootstrap and a
//! random bearer token into the state directory (`<dir>/.switchyard/` by default); the xDS
//! server maps that token, never `node.id`, to the Pod's snapshot. The bootstrap names the
//! token's file (never the token), and the xDS server serves TLS with a certificate from a CA
//! of its own in `<state dir>/xds/`, which the bootstrap names as the roots to verify it with.
//!
//! Each proxy is compiled for its data plane (the Pod's `switchyard.dev/data-plane` annotation,
//! else the mesh setting; see [`Local::data_plane`]): with the Envoy adapter, or with the bundled
//! adapter, which leaves out what `switchyard-proxy` does not implement. Both share one cache,
//! and the bootstrap is the same Envoy v3 file for both (`switchyard-proxy --bootstrap <file>`).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use envoy_types::pb::envoy::config::core::v3::Node;
use switchyard_adapters::{
    envoy::{self, BootstrapOptions},
    model::{DataPlane, MeshSettings, ProxyConfig, ProxyId},
};
use tonic::{Status, metadata::MetadataMap};

/// `switchyard compile` prints resources as `switchyard proxy-config` does.
pub use crate::xds::render::render_resource;
use crate::{
    identity::{self, CaConfig, CaFiles, MeshCa},
    index::{Index, ObjectStatus},
    publish::{Publisher, envoy_options, proxy_key},
    xds::{
        auth::{AuthFuture, Authenticate, StaticTokens, VerifyFuture},
        store::{ProxyKey, SnapshotStore},
    },
};

pub mod source;
#[cfg(test)]
mod tests;

use source::DirSource;

/// How local mode runs.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// The directory of manifests to watch.
    pub dir: PathBuf,
    /// Where bootstraps and tokens are written.
    pub state_dir: PathBuf,
    /// Where the xDS server listens; `127.0.0.1:15010` by default.
    pub xds_addr: SocketAddr,
    /// Mesh-wide settings, among them the data plane of Pods without an annotation.
    pub settings: MeshSettings,
    /// How often the directory is re-read; 100 ms by default.
    pub poll: Duration,
    pub xds_api: envoy::XdsApi,
    /// Workload certificate lifetime (default 24 h) and the generated root's; the trust domain
    /// is `settings.trust_domain`'s.
    pub ca: CaConfig,
    /// A CA to issue from instead of a generated root.
    pub ca_files: Option<CaFiles>,
}

impl LocalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        LocalConfig {
            state_dir: dir.join(".switchyard"),
            dir,
            xds_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15010),
            settings: MeshSettings::default(),
            poll: Duration::from_millis(100),
            xds_api: envoy::XdsApi::default(),
            ca: CaConfig::default(),
            ca_files: None,
        }
    }
}

/// Local mode's errors.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make a random token: {0}")]
    Random(String),
    #[error("proxy {proxy}: {message}")]
    Snapshot { proxy: ProxyId, message: String },
    #[error("mesh ca: {0}")]
    Ca(#[from] identity::Error),
    #[error("xds serving certificate: {0}")]
    Pki(#[from] crate::install::PkiError),
    /// The directory, or a file in it, could not be read at start.
    #[error(transparent)]
    Unreadable(#[from] source::Unreadable),
}

/// Bearer tokens that grow as Pods appear.
#[derive(Debug, Default)]
pub struct LocalTokens(RwLock<StaticTokens>);

impl LocalTokens {
    fn lookup(&self, metadata: &MetadataMap) -> Result<ProxyKey, Status> {
        self.0
            .read()
            .map_err(|_| Status::internal("token table poisoned"))
            .and_then(|tokens| tokens.lookup(metadata))
    }
}

impl Authenticate for LocalTokens {
    fn verify<'a>(&'a self, metadata: &'a MetadataMap) -> VerifyFuture<'a> {
        Box::pin(std::future::ready(self.lookup(metadata).map(drop)))
    }

    fn authenticate<'a>(&'a self, metadata: &'a MetadataMap, _node: &'a Node) -> AuthFuture<'a> {
        Box::pin(std::future::ready(self.lookup(metadata)))
    }
}

/// What one tick did, for the log.
#[derive(Debug, Default)]
pub struct Tick {
    /// Problems found in changed files, in `switchyard validate` format.
    pub reports: Vec<String>,
    /// SMI objects whose status changed, with their new status.
    pub statuses: Vec<(switchyard_crds::ObjectRef, ObjectStatus)>,
    /// Proxies that got a new snapshot.
    pub pushed: usize,
    /// Adapter warnings (listener clashes, resources the bundled proxy does not implement),
    /// and Pods with an invalid `switchyard.dev/data-plane` annotation.
    pub warnings: Vec<String>,
}

/// The state of a local control plane; `tick` does one round of IO-free work plus file IO.
pub struct Local {
    config: LocalConfig,
    source: DirSource,
    index: Index,
    publisher: Publisher,
    tokens: Arc<LocalTokens>,
    taps: Arc<crate::tap::Hub>,
    proxies: BTreeMap<ProxyId, String>,
    /// Whether the xDS server's certificate is in the state directory (written on the first
    /// tick that reads the directory, so a directory that cannot be read leaves nothing behind).
    xds_tls_written: bool,
}

// === impl Local ===

impl Local {
    pub fn new(config: LocalConfig) -> Result<Self, LocalError> {
        let ca_config = CaConfig {
            trust_domain: config.settings.trust_domain.clone(),
            ..config.ca.clone()
        };
        let ca = match &config.ca_files {
            Some(files) => MeshCa::from_files(&ca_config, files)?,
            None => MeshCa::generate(&ca_config, SystemTime::now())?,
        };
        identity::validate_workload_lifetime(ca_config.workload_lifetime)?;
        let mut publisher = Publisher::new(ca, ca_config.workload_lifetime);
        let taps = Arc::new(crate::tap::Hub::default());
        let sink_config = config.clone();
        publisher.tap_with(
            taps.clone(),
            Box::new(move |cfg| Some(envoy::TapSink::new(&bootstrap_options(&sink_config, cfg)))),
        );
        Ok(Local {
            xds_tls_written: false,
            publisher,
            taps,
            source: DirSource::new(config.dir.clone()),
            index: Index::new(config.settings.clone()),
            tokens: Arc::new(LocalTokens::default()),
            proxies: BTreeMap::new(),
            config,
        })
    }

    pub fn store(&self) -> SnapshotStore {
        self.publisher.store()
    }

    /// Who each proxy runs as and what it may call, as of the last scan (for edges).
    pub fn peers(&self) -> crate::edges::SharedPeers {
        self.publisher.peers()
    }

    pub fn tokens(&self) -> Arc<LocalTokens> {
        self.tokens.clone()
    }

    /// The xDS server's `tls.crt` and `tls.key` (and the `ca.crt` proxies verify them with),
    /// written by the first [`Local::tick`].
    /// The tap sessions: a session opened here taps the proxies it selects from the next tick.
    pub fn taps(&self) -> Arc<crate::tap::Hub> {
        self.taps.clone()
    }

    pub fn xds_tls_dir(&self) -> PathBuf {
        self.config.state_dir.join(XDS_TLS_DIR)
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Re-reads the directory and publishes what changed (see [`Local::tick_at`]).
    pub fn tick(&mut self) -> Result<Tick, LocalError> {
        self.tick_at(SystemTime::now())
    }

    /// One round at `now`: when files changed, feeds them to the index; publishes the proxies the
    /// changes affect and those whose certificate is due; writes bootstraps of new proxies. The
    /// first round fails with [`LocalError::Unreadable`] when the directory or a file in it
    /// cannot be read; later rounds report it and keep what was read before.
    pub fn tick_at(&mut self, now: SystemTime) -> Result<Tick, LocalError> {
        let scan = self.source.scan()?;
        if !self.xds_tls_written {
            crate::install::pki::serving_dir(
                &self.xds_tls_dir(),
                "Switchyard local xDS CA",
                &xds_sans(self.config.xds_addr.ip()),
                // The wall clock, whatever `now` a test passes: real clients check the dates.
                SystemTime::now(),
            )?;
            self.xds_tls_written = true;
        }
        let mut tick = Tick {
            reports: scan.reports,
            ..Tick::default()
        };
        let renewal_due = self.publisher.renewal_due(now);
        let quiet = !scan.changed && !renewal_due && !self.publisher.taps_changed(&self.index);
        if quiet && self.publisher.has_proxies() {
            return Ok(tick);
        }
        if scan.changed || !self.publisher.has_proxies() {
            self.source.feed(&mut self.index);
        }
        let published = self.publisher.publish(&mut self.index, now)?;
        for proxy in &published.added {
            if let Some(cfg) = self.index.proxy_config(proxy) {
                self.register(&cfg)?;
            }
        }
        for proxy in &published.removed {
            self.proxies.remove(proxy);
        }
        tick.pushed = published.pushed;
        tick.statuses = published.statuses;
        tick.warnings = published.warnings;
        match published.errors.into_iter().next() {
            Some(e) => Err(LocalError::Snapshot {
                proxy: e.proxy,
                message: e.message,
            }),
            None => Ok(tick),
        }
    }

    /// Reads the directory into the index without publishing anything (`switchyard compile`).
    pub fn tick_without_state(&mut self) -> Result<Tick, LocalError> {
        let scan = self.source.scan()?;
        self.source.feed(&mut self.index);
        Ok(Tick {
            reports: scan.reports,
            ..Tick::default()
        })
    }

    /// The resources and warnings one proxy would get, without publishing them.
    pub fn compile_proxy(&mut self, proxy: &ProxyId) -> Option<envoy::Output> {
        self.publisher.compile_proxy(&self.index, proxy)
    }

    pub fn data_plane(&self, proxy: &ProxyId) -> Option<DataPlane> {
        self.index.proxy_config(proxy).map(|c| c.data_plane)
    }

    pub fn adapter_cache_len(&self) -> (usize, usize, usize) {
        self.publisher.adapter_cache_len()
    }

    fn register(&mut self, cfg: &ProxyConfig) -> Result<(), LocalError> {
        let proxy = &cfg.proxy;
        let base = format!("{}.{}", proxy.namespace, proxy.pod);
        // A proxy reads its bootstrap once: a restarted control plane must keep accepting the
        // token the running proxy already holds.
        let kept = std::fs::read_to_string(self.config.state_dir.join(token_file(proxy)))
            .ok()
            .filter(|t| t.len() == 48 && t.bytes().all(|b| b.is_ascii_hexdigit()));
        let token = match kept {
            Some(t) => t,
            None => {
                let mut raw = [0u8; 24];
                getrandom::fill(&mut raw).map_err(|e| LocalError::Random(e.to_string()))?;
                raw.iter().map(|b| format!("{b:02x}")).collect()
            }
        };
        if let Ok(mut t) = self.tokens.0.write() {
            t.insert(token.clone(), proxy_key(proxy));
        }
        let b = bootstrap_options(&self.config, cfg);
        let dir = &self.config.state_dir;
        let token_file = token_file(proxy);
        let json = serde_json::to_string_pretty(&envoy::bootstrap(&b)).unwrap_or_default();
        // The token first: a proxy started on the bootstrap reads it on its first stream.
        write(dir, &token_file, &token)?;
        write(dir, &format!("{base}.bootstrap.json"), &json)?;
        self.proxies.insert(proxy.clone(), token);
        Ok(())
    }
}

/// The bootstrap local mode writes for `cfg`'s proxy: its token and the xDS server's CA in
/// the state directory, the health port as in a Pod.
fn bootstrap_options(config: &LocalConfig, cfg: &ProxyConfig) -> BootstrapOptions {
    let opts = envoy_options(cfg);
    let dir = &config.state_dir;
    let mut b = BootstrapOptions::new(
        cfg.proxy.to_string(),
        opts.bind_ip,
        config.xds_addr.ip().to_string(),
        config.xds_addr.port(),
        absolute(&dir.join(token_file(&cfg.proxy))),
        envoy::XdsCa::File(absolute(
            &dir.join(XDS_TLS_DIR)
                .join(crate::install::pki::WEBHOOK_CA_CERT),
        )),
    );
    b.api = config.xds_api;
    // The health port as in a Pod, so the local suites cover it; the admin port stays on
    // the Pod's loopback address (local mode has no Pod to keep it inside).
    b.health = Some(SocketAddr::new(opts.bind_ip, crate::intercept::HEALTH_PORT));
    b
}

/// A proxy's token file in the state directory: `<namespace>.<pod>.token`.
fn token_file(proxy: &ProxyId) -> String {
    format!("{}.{}.token", proxy.namespace, proxy.pod)
}

/// The state directory's subdirectory of the xDS server's certificate.
const XDS_TLS_DIR: &str = "xds";

/// The names the local xDS server's certificate holds: its address (loopback when it listens
/// on all addresses) and `localhost`.
fn xds_sans(ip: IpAddr) -> Vec<crate::install::Host> {
    use crate::install::Host;
    let mut sans = vec![
        Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Host::Dns("localhost".into()),
    ];
    if !ip.is_unspecified() && ip != IpAddr::V4(Ipv4Addr::LOCALHOST) {
        sans.insert(0, Host::Ip(ip));
    }
    sans
}

/// `path` made absolute against the working directory: a proxy may run elsewhere.
fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Writes a state file readable by its owner only (a token is a key to that Pod's identity and
/// so to its private key over SDS), through a rename so that a reader never sees half a file.
fn write(dir: &std::path::Path, name: &str, content: &str) -> Result<(), LocalError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    private_dir(dir)
        .and_then(|()| {
            let mut f = private_file(&tmp)?;
            std::io::Write::write_all(&mut f, content.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| LocalError::Write { path, source })
}

#[cfg(unix)]
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}

/// Formats a status for the log: `Accepted=False (Invalid): …`.
pub fn describe(status: &ObjectStatus) -> String {
    status
        .conditions
        .iter()
        .map(|c| {
            format!(
                "{}={} ({}): {}",
                c.type_,
                if c.status { "True" } else { "False" },
                c.reason,
                c.message
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
