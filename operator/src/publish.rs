//! From the index to the snapshot store, shared by local mode and the controller: keeps
//! workload certificates current and recompiles, for its data plane, every proxy whose
//! configuration or certificate changed. One pass over the index's output: each proxy's
//! [`ProxyConfig`] says all that its compile needs (data plane, address, capture).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use switchyard_adapters::{
    bundled::BundledAdapter,
    envoy::{self, Capture, EnvoyOptions, ProxyTap, Resource, TapSink},
    model::{DataPlane, Identity, MeshSettings, ProxyConfig, ProxyId},
};
use switchyard_crds::ObjectRef;

use crate::{
    edges::{Peers, SharedPeers},
    identity::{self, Certificates, MeshCa},
    index::{Index, InvalidDataPlane, ObjectStatus},
    intercept,
    tap::Hub,
    xds::{
        snapshot::{SharedVersions, Snapshot},
        store::{ProxyKey, SnapshotStore},
    },
};

/// A proxy whose snapshot could not be built; it keeps its last one.
#[derive(Debug, thiserror::Error)]
#[error("proxy {proxy}: {message}")]
pub struct PublishError {
    pub proxy: ProxyId,
    pub message: String,
}

/// What one [`Publisher::publish`] did.
#[derive(Debug, Default)]
pub struct Published {
    /// Proxies seen for the first time (local mode writes their bootstrap).
    pub added: Vec<ProxyId>,
    /// Proxies whose Pod is gone; their snapshot was removed.
    pub removed: Vec<ProxyId>,
    /// Proxies that got a snapshot different from the one they had.
    pub pushed: usize,
    /// SMI objects whose status changed, with their new status.
    pub statuses: Vec<(ObjectRef, ObjectStatus)>,
    /// Adapter warnings, invalid data-plane annotations, failed certificate renewals.
    pub warnings: Vec<String>,
    /// Proxies that could not be compiled; they keep their last snapshot.
    pub errors: Vec<PublishError>,
}

/// Compiles and publishes snapshots; owns the adapter caches and the workload certificates.
pub struct Publisher {
    adapter: BundledAdapter,
    store: SnapshotStore,
    versioned: SharedVersions,
    certs: Certificates,
    workload_lifetime: Duration,
    proxies: BTreeSet<ProxyId>,
    peers: SharedPeers,
    taps: Option<Taps>,
}

/// What tapping needs: the sessions, and where each proxy would send its requests.
struct Taps {
    hub: Arc<Hub>,
    sink: SinkOf,
    /// The proxies compiled with the access log, and how, as of the last publish.
    tapped: BTreeMap<ProxyId, ProxyTap>,
}

/// How `proxy` is to be tapped: when a session selects it and its Pod allows it.
fn tapping(taps: &Taps, index: &Index, proxy: &ProxyId) -> Option<ProxyTap> {
    taps.hub.tap(proxy).filter(|_| index.tap_allowed(proxy))
}

/// Where one proxy reaches the control plane (as its bootstrap says), for its tap's access log;
/// `None` when that is not known (the proxy is then not tapped).
pub type SinkOf = Box<dyn Fn(&ProxyConfig) -> Option<TapSink> + Send + Sync>;

// === impl Publisher ===

impl Publisher {
    /// `workload_lifetime` is checked on every publish (see [`Certificates::sync`]).
    pub fn new(ca: MeshCa, workload_lifetime: Duration) -> Self {
        Publisher {
            adapter: BundledAdapter::new(),
            store: SnapshotStore::new(),
            versioned: SharedVersions::default(),
            certs: Certificates::new(ca),
            workload_lifetime,
            proxies: BTreeSet::new(),
            peers: SharedPeers::default(),
            taps: None,
        }
    }

    /// Taps the proxies `hub`'s sessions select: from the next publish on, their HTTP connection
    /// managers log requests to `sink(proxy)`, up to the sessions' rates ([`Hub::tap`]), and
    /// stop when no session selects them.
    pub fn tap_with(&mut self, hub: Arc<Hub>, sink: SinkOf) {
        self.taps = Some(Taps {
            hub,
            sink,
            tapped: BTreeMap::new(),
        });
    }

    /// Whether a session opened or closed since the last publish changes what is tapped.
    pub fn taps_changed(&self, index: &Index) -> bool {
        self.taps.as_ref().is_some_and(|t| {
            self.proxies
                .iter()
                .any(|p| tapping(t, index, p).as_ref() != t.tapped.get(p))
        })
    }

    /// Who each proxy runs as and what it may call, as of the last publish (for edges).
    pub fn peers(&self) -> SharedPeers {
        self.peers.clone()
    }

    /// Publishes [`Publisher::peers`] into `peers` from now on (a handle made before the
    /// publisher, e.g. the aggregated API's).
    pub fn share_peers(&mut self, peers: SharedPeers) {
        self.peers = peers;
    }

    pub fn store(&self) -> SnapshotStore {
        self.store.clone()
    }

    pub fn ca(&self) -> &MeshCa {
        self.certs.ca()
    }

    /// Whether a workload certificate is due for renewal at `now`.
    pub fn renewal_due(&self, now: SystemTime) -> bool {
        self.certs.next_renewal().is_some_and(|at| at <= now)
    }

    /// When the next certificate renewal is due; `None` without certificates.
    pub fn next_renewal(&self) -> Option<SystemTime> {
        self.certs.next_renewal()
    }

    /// Whether any proxy has been published.
    pub fn has_proxies(&self) -> bool {
        !self.proxies.is_empty()
    }

    /// Takes the index's changes and publishes what they affect, plus every proxy whose
    /// certificate was (re)issued. A proxy that fails to compile keeps its last snapshot and is
    /// listed in [`Published::errors`]; the others are published. The only error is an invalid
    /// workload lifetime, and nothing is published then.
    pub fn publish(
        &mut self,
        index: &mut Index,
        now: SystemTime,
    ) -> Result<Published, identity::Error> {
        let changes = index.take_changes();
        let index = &*index;
        let mut out = Published::default();
        let configs: Vec<ProxyConfig> = index.proxy_configs().collect();
        let identities: BTreeSet<Identity> = configs.iter().map(|c| c.identity.clone()).collect();
        let certs = self.certs.sync(&identities, self.workload_lifetime, now)?;
        for (identity, error) in &certs.failed {
            out.warnings
                .push(format!("identity {identity}: no new certificate: {error}"));
        }
        let renewed: BTreeSet<Identity> = certs.changed().into_iter().cloned().collect();
        for obj in &changes.statuses {
            if let Some(st) = index.status(obj) {
                out.statuses.push((obj.clone(), st.clone()));
            }
        }
        // Proxies whose tapping starts, ends or changes its rate are compiled again.
        let tapped: BTreeMap<ProxyId, ProxyTap> = match &self.taps {
            Some(t) => configs
                .iter()
                .filter_map(|c| Some((c.proxy.clone(), tapping(t, index, &c.proxy)?)))
                .collect(),
            None => BTreeMap::new(),
        };
        let retap: BTreeSet<ProxyId> = match &mut self.taps {
            Some(t) => {
                let changed = (t.tapped.iter())
                    .filter(|(p, how)| tapped.get(*p) != Some(*how))
                    .chain(tapped.iter().filter(|(p, _)| !t.tapped.contains_key(*p)))
                    .map(|(p, _)| p.clone())
                    .collect();
                t.tapped = tapped;
                changed
            }
            None => BTreeSet::new(),
        };
        let mut proxies = BTreeSet::new();
        for cfg in &configs {
            let proxy = &cfg.proxy;
            proxies.insert(proxy.clone());
            let is_new = self.proxies.insert(proxy.clone());
            if is_new {
                out.added.push(proxy.clone());
            }
            let renewed = renewed.contains(&cfg.identity);
            let retapped = retap.contains(proxy);
            if !(is_new
                || renewed
                || retapped
                || changes.outbound
                || changes.proxies.contains(proxy))
            {
                continue;
            }
            match self.compile(cfg, index.settings(), &mut out.warnings) {
                Ok(snapshot) => {
                    if self.store.set(proxy_key(proxy), snapshot) {
                        out.pushed += 1;
                    }
                }
                Err(e) => out.errors.push(e),
            }
        }
        let gone: Vec<ProxyId> = self.proxies.difference(&proxies).cloned().collect();
        for proxy in gone {
            self.store.remove(&proxy_key(&proxy));
            self.proxies.remove(&proxy);
            out.removed.push(proxy);
        }
        self.peers
            .set(Peers::new(&index.settings().trust_domain, &configs));
        self.adapter.evict_unused();
        self.versioned.evict_unused();
        Ok(out)
    }

    /// The resources and warnings one proxy would get now, without publishing them.
    pub fn compile_proxy(&mut self, index: &Index, proxy: &ProxyId) -> Option<envoy::Output> {
        let cfg = index.proxy_config(proxy)?;
        let out = self.compile_for(&cfg, index.settings());
        let invalid = InvalidDataPlane::of(&cfg).map(|e| e.to_string());
        Some(envoy::Output {
            resources: out
                .resources
                .into_iter()
                .map(Arc::unwrap_or_clone)
                .collect(),
            warnings: invalid.into_iter().chain(out.warnings).collect(),
        })
    }

    /// The adapter caches' sizes (listeners, route tables, clusters), for tests.
    pub fn adapter_cache_len(&self) -> (usize, usize, usize) {
        self.adapter.cache_len()
    }

    fn compile_for(
        &mut self,
        cfg: &ProxyConfig,
        settings: &MeshSettings,
    ) -> envoy::Output<Arc<Resource>> {
        let opts = envoy_options(cfg);
        let mut out = match cfg.data_plane {
            DataPlane::Envoy => self.adapter.envoy().compile_shared(cfg, settings, &opts),
            DataPlane::Bundled => self.adapter.compile_shared(cfg, settings, &opts),
        };
        let tapped =
            (self.taps.as_ref()).and_then(|t| Some((t.tapped.get(&cfg.proxy)?, (t.sink)(cfg)?)));
        if let Some((how, sink)) = tapped {
            envoy::tap(&mut out, &sink, how);
        }
        out
    }

    fn compile(
        &mut self,
        cfg: &ProxyConfig,
        settings: &MeshSettings,
        warnings: &mut Vec<String>,
    ) -> Result<Snapshot, PublishError> {
        let proxy = &cfg.proxy;
        let out = self.compile_for(cfg, settings);
        if let Some(invalid) = InvalidDataPlane::of(cfg) {
            warnings.push(invalid.to_string());
        }
        warnings.extend(
            out.warnings
                .into_iter()
                .map(|w| format!("proxy {proxy}: {w}")),
        );
        let failed = |e: String| PublishError {
            proxy: proxy.clone(),
            message: e,
        };
        let mut builder = Snapshot::builder();
        for r in &out.resources {
            self.versioned
                .get(r)
                .and_then(|v| builder.add_shared(v).map(|_| ()))
                .map_err(|e| failed(e.to_string()))?;
        }
        if let Some(cert) = self.certs.get(&cfg.identity) {
            let secrets = envoy::secrets(
                &cfg.identity,
                settings,
                cert.cert_chain_pem(),
                cert.private_key_pem().expose(),
                self.certs.ca().trust_bundle_pem(),
            );
            for r in secrets {
                builder
                    .add_any(r.name, r.resource)
                    .map_err(|e| failed(e.to_string()))?;
            }
        }
        Ok(builder.build())
    }
}

/// How a proxy's listeners are compiled: mTLS always, bound to the Pod's IP (a loopback address
/// in local mode and in the end-to-end tests). An intercepted Pod's proxy takes every
/// connection on the capture ports and reaches its application on the Pod's IP (the proxy's
/// own connections are exempt from the redirect).
pub fn envoy_options(proxy: &ProxyConfig) -> EnvoyOptions {
    let pod_ip = proxy.address.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let addressed = EnvoyOptions {
        mtls: true,
        bind_ip: pod_ip,
        ..EnvoyOptions::default()
    };
    if !proxy.intercepted {
        return addressed;
    }
    EnvoyOptions {
        app_ip: pod_ip,
        health_port: intercept::HEALTH_PORT,
        capture: Capture::Intercepted {
            outbound: intercept::OUTBOUND_PORT,
            inbound: intercept::INBOUND_PORT,
        },
        ..addressed
    }
}

/// The snapshot store's key of a proxy: `namespace/pod`, as authenticators produce it.
pub fn proxy_key(proxy: &ProxyId) -> ProxyKey {
    ProxyKey::new(proxy.to_string())
}
