//! Kubernetes mode (`switchyard controller`): watches feed the same index as local mode, the
//! same publisher serves xDS, and status conditions and Events go back to the SMI objects.
//!
//! Start-up order matters: the conversion webhook listens before any watch starts, so that
//! reading the SMI CRDs (which need the webhook to convert) cannot deadlock on ourselves.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime},
};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use switchyard_adapters::model::MeshSettings;
use switchyard_crds::{Kind, ObjectRef};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch as signal},
};

use crate::{
    identity::{self, CaConfig, CaFiles, MeshCa},
    index::{Index, ObjectKind},
    inject::{
        InjectConfig,
        server::{Injector, KubeNamespaces, event_channel, publish_events},
    },
    publish::Publisher,
    webhook,
    xds::server::{self, XdsConfig, XdsServer},
};

pub mod admin;
pub mod auth;
pub mod core;
pub mod lease;
pub mod metrics_api;
pub mod replica;
pub mod tap_api;
pub mod watch;

use self::{
    admin::{Admin, ControllerMetrics},
    auth::{PodAccounts, TokenReviewAuth},
    core::{Core, StatusWrite},
    lease::LeaseTiming,
    watch::{WatchMsg, Watched},
};

/// The field manager of every status write (server-side apply).
pub const FIELD_MANAGER: &str = "switchyard";
/// The Lease that elects the status writer, in the controller's namespace.
pub const LEASE_NAME: &str = "switchyard-status-writer";

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The controller's own namespace: where its Lease lives.
    pub namespace: String,
    /// This replica's name (the Pod name in a cluster), for the Lease and Events.
    pub identity: String,
    pub xds_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Where the admin routes plus what each proxy runs are served (`/proxies`): loopback in a
    /// cluster, reached by port-forward.
    pub debug_addr: SocketAddr,
    /// The webhook server's address (conversion and injection) and the directory holding
    /// `tls.crt` and `tls.key`.
    pub webhook: Option<(SocketAddr, PathBuf)>,
    /// The xDS server's certificate directory (`tls.crt`, `tls.key`): TLS when set.
    pub xds_cert_dir: Option<PathBuf>,
    /// Serve the aggregated APIs (the Traffic Metrics API and the tap API) on the webhook port
    /// to the aggregation layer and register their APIServices while serving (see
    /// [`metrics_api`], [`tap_api`]); needs `webhook`.
    pub metrics_apiservice: bool,
    /// What the injection webhook injects (served with the webhook server).
    pub inject: InjectConfig,
    pub settings: MeshSettings,
    pub ca: CaConfig,
    /// The mesh CA; every replica must load the same one. Without it a root is generated,
    /// which only suits a single replica.
    pub ca_files: Option<CaFiles>,
    /// The audience proxy tokens must carry; `switchyard` by default.
    pub audience: String,
    pub lease: LeaseTiming,
    /// How long the loop gathers watch events before publishing; 20 ms by default.
    pub debounce: Duration,
}

/// The controller's errors: all of them stop it at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("mesh ca: {0}")]
    Ca(#[from] identity::Error),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("webhook: {0}")]
    Webhook(#[from] webhook::WebhookError),
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ControllerError> {
    let (stop_tx, stop_rx) = signal::channel(false);
    let listen = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ControllerError::Listen { what, addr, source })
    };

    // 1. The webhook first (see the module docs), with the Traffic Metrics API if asked.
    let mut tasks = tokio::task::JoinSet::new();
    let telemetry: Arc<crate::telemetry::Telemetry> = Arc::default();
    // The index's view of workloads for the Traffic Metrics API, refreshed by the event loop.
    let (workloads_tx, workloads_rx) = signal::channel(Arc::default());
    let mut registration = None;
    // Who each proxy runs as, for the edges the Traffic Metrics API serves; the publisher
    // (made below) writes it.
    let identities = crate::edges::SharedPeers::default();
    // The tap sessions: opened by the tap API (and the debug port), fed by the access-log server.
    let taps = Arc::new(crate::tap::Hub::default());
    if let Some((addr, dir)) = &config.webhook {
        let tls = Arc::new(webhook::CertReloader::load(dir.clone())?);
        let mut apis = webhook::Apis::default();
        if config.metrics_apiservice {
            let front_proxy = Arc::new(metrics_api::FrontProxySettings::default());
            let replicas = Arc::new(replica::KubePeers {
                client: client.clone(),
                namespace: config.namespace.clone(),
                me: config.identity.clone(),
                port: addr.port(),
            });
            apis.metrics = Some(Arc::new(
                metrics_api::MetricsApi::new(
                    front_proxy.clone(),
                    telemetry.clone(),
                    workloads_rx.clone(),
                    identities.clone(),
                )
                .with_replicas(replicas.clone(), tls.clone()),
            ));
            apis.tap = Some(Arc::new(tap_api::TapApi::new(
                front_proxy.clone(),
                taps.clone(),
                Arc::new(tap_api::KubeAuthorizer(client.clone())),
                replicas,
                tls.clone(),
            )));
            tasks.spawn(metrics_api::refresh_front_proxy(
                client.clone(),
                front_proxy.clone(),
                stop_rx.clone(),
            ));
            let ca_file = dir.join(crate::install::pki::WEBHOOK_CA_CERT);
            let ca = std::fs::read_to_string(&ca_file).map_err(|source| {
                webhook::WebhookError::Read {
                    path: ca_file.clone(),
                    source,
                }
            })?;
            registration = Some(tokio::spawn(metrics_api::register(
                client.clone(),
                config.namespace.clone(),
                config.identity.clone(),
                crate::install::api_services(&config.namespace, &ca),
                front_proxy,
                stop_rx.clone(),
            )));
        }
        let listener = listen("webhook", *addr).await?;
        let (events, notes) = event_channel();
        tasks.spawn(publish_events(
            client.clone(),
            config.identity.clone(),
            notes,
        ));
        let injector = Injector::new(
            config.inject.clone(),
            Box::new(KubeNamespaces::new(client.clone())),
            events,
        );
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let stopped = async move {
                let _ = stop.changed().await;
            };
            let served =
                webhook::serve(listener, tls, Some(Arc::new(injector)), apis, stopped).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "webhook server stopped");
            }
        });
    }

    // 2. The mesh CA, the publisher and the xDS server.
    let ca_config = CaConfig {
        trust_domain: config.settings.trust_domain.clone(),
        ..config.ca.clone()
    };
    let ca = match &config.ca_files {
        Some(files) => MeshCa::from_files(&ca_config, files)?,
        None => {
            tracing::warn!(
                "no --ca-cert/--ca-key: generated a mesh CA that only this replica trusts"
            );
            MeshCa::generate(&ca_config, SystemTime::now())?
        }
    };
    identity::validate_workload_lifetime(ca_config.workload_lifetime)?;
    let mut publisher = Publisher::new(ca, ca_config.workload_lifetime);
    publisher.share_peers(identities);
    // A tapped proxy logs to the control plane as its bootstrap reaches it.
    let inject = config.inject.clone();
    publisher.tap_with(
        taps.clone(),
        Box::new(move |cfg| {
            let opts = inject.bootstrap_options(&cfg.proxy)?;
            Some(switchyard_adapters::envoy::TapSink::new(&opts))
        }),
    );
    let pods: PodAccounts = Arc::new(RwLock::new(BTreeMap::new()));
    let auth = Arc::new(TokenReviewAuth::new(
        client.clone(),
        config.audience.clone(),
        pods.clone(),
    ));
    let xds = XdsServer::new(publisher.store(), auth, XdsConfig::default())
        .with_taps(taps.clone(), publisher.peers())
        .with_telemetry(telemetry.clone());
    let xds_metrics = xds.metrics();
    let proxies = xds.statuses();
    let xds_listener = listen("xds", config.xds_addr).await?;
    tracing::info!(addr = %config.xds_addr, "xds server listening");
    let xds_tls = match &config.xds_cert_dir {
        Some(dir) => Some(Arc::new(webhook::CertReloader::load(dir.clone())?).server_config()?),
        None => {
            tracing::warn!(
                "no --xds-cert-dir: xds is served in plaintext, where Envoy sends no token"
            );
            None
        }
    };
    let mut xds_stop = stop_rx.clone();
    tasks.spawn(async move {
        let stopped = async move {
            let _ = xds_stop.changed().await;
        };
        let served = match xds_tls {
            Some(tls) => server::serve_listener_tls(xds_listener, xds, tls, stopped).await,
            None => server::serve_listener(xds_listener, xds, stopped).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "xds server stopped");
        }
    });

    // 3. Health and metrics.
    let metrics = Arc::new(ControllerMetrics::default());
    let admin = Admin {
        metrics: metrics.clone(),
        xds: xds_metrics,
        proxies: None,
        telemetry: None,
        peers: None,
        workloads: None,
        taps: None,
    };
    // The Traffic Metrics API and the edges are the aggregated API's (every replica's windows
    // merged), not the debug port's (this replica's share only).
    let debug = Admin {
        taps: Some(taps.clone()),
        proxies: Some(proxies),
        ..admin.clone()
    };
    tasks.spawn(admin::serve(
        listen("admin", config.admin_addr).await?,
        admin,
    ));
    tasks.spawn(admin::serve(
        listen("debug", config.debug_addr).await?,
        debug,
    ));

    // 4. Leader election for the status writer.
    let (leading_tx, leading_rx) = signal::channel(false);
    let lease_task = tokio::spawn(lease::run(
        client.clone(),
        config.namespace.clone(),
        LEASE_NAME.to_string(),
        config.identity.clone(),
        config.lease,
        leading_tx,
        stop_rx.clone(),
    ));

    // 5. Watches, then the event loop.
    let (tx, rx) = mpsc::channel(1024);
    let versions = Arc::new(RwLock::new(BTreeMap::new()));
    for watched in watch::core_resources() {
        tasks.spawn(watch::run(client.clone(), watched, tx.clone(), false));
    }
    for kind in Kind::ALL {
        let (client, tx, versions) = (client.clone(), tx.clone(), versions.clone());
        tasks.spawn(async move {
            let resource = watch::discover(&client, kind, &tx).await;
            tracing::info!(%kind, version = %resource.version, "watching");
            if let Ok(mut v) = versions.write() {
                v.insert(kind, resource.clone());
            }
            let watched = Watched {
                kind: ObjectKind::Smi(kind),
                resource,
            };
            watch::run(client, watched, tx, false).await;
        });
    }
    drop(tx);
    let writer = StatusWriter::new(client.clone(), &config, versions, metrics.clone());
    let core = Core::new(Index::new(config.settings.clone()), publisher);
    let event_loop = EventLoop {
        core,
        rx,
        leading: leading_rx,
        writer,
        metrics,
        pods,
        pods_version: None,
        workloads: workloads_tx,
        workloads_version: None,
        taps: taps.changes(),
        debounce: config.debounce,
        expected: Kind::ALL.len() + watch::core_resources().len(),
    };
    tokio::select! {
        () = event_loop.run() => {}
        () = shutdown => {}
    }
    let _ = stop_tx.send(true);
    // A held lease is released so another replica takes over without waiting for it to expire.
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    // The last serving replica unregisters the APIService (see metrics_api).
    if let Some(registration) = registration {
        let _ = tokio::time::timeout(Duration::from_secs(10), registration).await;
    }
    tasks.abort_all();
    Ok(())
}

/// The loop that owns the core: gathers watch events, publishes, hands status writes over.
struct EventLoop {
    core: Core,
    rx: mpsc::Receiver<WatchMsg>,
    leading: signal::Receiver<bool>,
    writer: StatusWriter,
    metrics: Arc<ControllerMetrics>,
    pods: PodAccounts,
    /// The [`Core::pod_accounts_version`] `pods` holds.
    pods_version: Option<u64>,
    /// The admin port's copy of [`Index::workloads`](crate::index::Index::workloads).
    workloads: signal::Sender<Arc<crate::index::Workloads>>,
    /// The [`Index::workloads_version`](crate::index::Index::workloads_version) it holds.
    workloads_version: Option<u64>,
    /// Ticks when a tap opens or closes: the proxies it selects are published again.
    taps: tokio::sync::watch::Receiver<u64>,
    debounce: Duration,
    /// Watches that must deliver a first list before the controller is ready.
    expected: usize,
}

impl EventLoop {
    async fn run(mut self) {
        let mut synced = 0;
        loop {
            let renewal = self
                .core
                .publisher()
                .next_renewal()
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .unwrap_or(Duration::from_secs(3600));
            let mut batch = Vec::new();
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(m) => batch.push(m),
                    None => return,
                },
                _ = self.leading.changed() => {
                    let lead = *self.leading.borrow_and_update();
                    self.metrics.set_leader(lead);
                    if lead {
                        self.core.forget_writes();
                    }
                }
                _ = tokio::time::sleep(renewal) => {}
                _ = self.taps.changed() => {}
            }
            if !batch.is_empty() {
                // Gather what arrives within the debounce: a burst becomes one publish.
                tokio::time::sleep(self.debounce).await;
                while let Ok(m) = self.rx.try_recv() {
                    batch.push(m);
                }
            }
            let started = Instant::now();
            let mut events = Vec::new();
            for msg in batch {
                match msg {
                    WatchMsg::Event(e) => events.push(e),
                    WatchMsg::Synced(kind) => {
                        synced += 1;
                        tracing::debug!(%kind, "watch synced");
                    }
                    WatchMsg::Restarted(kind) => self.metrics.watch_restarted(&kind.to_string()),
                }
            }
            let applied = self.core.apply(events);
            for f in &applied.decode_failures {
                self.metrics.decode_failed(&f.kind.to_string());
                tracing::warn!(kind = %f.kind, object = %f.object, error = %f.message, "object does not decode; its last good version stays in force");
            }
            // Rebuilt only when the view changed (Pods, Services, slices, splits, a Pod's
            // configured routes: `workloads_version`), not every batch.
            let version = self.core.index().workloads_version();
            if self.workloads_version != Some(version) {
                self.workloads
                    .send_replace(Arc::new(self.core.index().workloads()));
                self.workloads_version = Some(version);
            }
            if synced < self.expected {
                // Publishing a partial view (Pods without their Services) would push configs
                // that drop traffic; wait for every first list.
                continue;
            }
            self.metrics.set_synced();
            match self.core.publish(SystemTime::now()) {
                Ok(published) => {
                    for w in &published.warnings {
                        tracing::warn!("{w}");
                    }
                    for e in &published.errors {
                        tracing::error!("{e}");
                    }
                    if published.pushed > 0 {
                        tracing::info!(proxies = published.pushed, "pushed");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot publish"),
            }
            // The authenticator's copy, refreshed only when Pods changed (not every batch).
            if self.pods_version != Some(self.core.pod_accounts_version())
                && let Ok(mut pods) = self.pods.write()
            {
                pods.clone_from(self.core.pod_accounts());
                self.pods_version = Some(self.core.pod_accounts_version());
            }
            self.metrics.set_proxies(self.core.pod_accounts().len());
            self.metrics.reconciled(started.elapsed());
            if *self.leading.borrow() {
                let writes = self.core.status_writes(SystemTime::now());
                for failed in self.writer.write(writes).await {
                    self.core.write_failed(&failed);
                }
            }
        }
    }
}

/// Writes statuses (server-side apply on the status subresource) and Events.
struct StatusWriter {
    client: Client,
    versions: Arc<RwLock<BTreeMap<Kind, ApiResource>>>,
    recorder: Recorder,
    metrics: Arc<ControllerMetrics>,
}

impl StatusWriter {
    fn new(
        client: Client,
        config: &ControllerConfig,
        versions: Arc<RwLock<BTreeMap<Kind, ApiResource>>>,
        metrics: Arc<ControllerMetrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: "switchyard".into(),
            instance: Some(config.identity.clone()),
        };
        StatusWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            versions,
            metrics,
        }
    }

    /// Writes each status; returns the objects whose write failed.
    async fn write(&self, writes: Vec<StatusWrite>) -> Vec<ObjectRef> {
        let mut failed = Vec::new();
        for w in writes {
            let resource = self
                .versions
                .read()
                .ok()
                .and_then(|v| v.get(&w.object.kind).cloned());
            let Some(resource) = resource else {
                failed.push(w.object);
                continue;
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &w.object.namespace, &resource);
            let patch = serde_json::json!({
                "apiVersion": resource.api_version,
                "kind": resource.kind,
                "status": w.status,
            });
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match api
                .patch_status(&w.object.name, &params, &Patch::Apply(&patch))
                .await
            {
                Ok(obj) => {
                    self.metrics.status_written(true);
                    tracing::debug!(object = %w.object, "status written");
                    let reference = ObjectReference {
                        api_version: Some(resource.api_version.clone()),
                        kind: Some(resource.kind.clone()),
                        name: Some(w.object.name.clone()),
                        namespace: Some(w.object.namespace.clone()),
                        uid: obj.metadata.uid.clone(),
                        ..ObjectReference::default()
                    };
                    for note in &w.events {
                        let event = Event {
                            type_: if note.warning {
                                EventType::Warning
                            } else {
                                EventType::Normal
                            },
                            reason: note.reason.clone(),
                            note: Some(note.note.clone()),
                            action: "Reconcile".into(),
                            secondary: None,
                        };
                        match self.recorder.publish(&event, &reference).await {
                            Ok(()) => self.metrics.event_emitted(),
                            Err(e) => {
                                tracing::warn!(object = %w.object, error = %e, "cannot emit event");
                            }
                        }
                    }
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    // Deleted meanwhile; the watch will say so.
                }
                Err(e) => {
                    self.metrics.status_written(false);
                    tracing::warn!(object = %w.object, error = %e, "cannot write status");
                    failed.push(w.object);
                }
            }
        }
        failed
    }
}
