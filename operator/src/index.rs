//! The index: a synchronous, incremental view of SMI objects, Services, EndpointSlices, Pods and
//! ServiceAccounts, resolved into the mesh model with a status per SMI object.
//!
//! ```text
//!  apply/delete/reset ─▶ ingest ─▶ store ─▶ dirty services ─▶ outbound ─▶ OutboundService + Clusters (Arc)
//!                                    │                  └───▶ inbound  ─▶ ProxyConfig per Pod
//!                                    └─▶ status: conditions per SMI object
//! ```
//!
//! `ingest` turns objects into the `store` and marks what they can affect; `outbound`, `inbound`
//! and `status` are functions over a read-only store; this module publishes what they return.
//! Every change marks the Services it can affect (a split's root, the roots that use a Service as
//! a backend, …); only those are recomputed. Outbound pieces are shared by every proxy, so a
//! change re-publishes `Arc` pointers, not copies. The index does no IO.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Pod, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
};
use switchyard_adapters::model::{
    Cluster, ClusterName, DataPlane, MeshSettings, OutboundService, ProxyConfig, ProxyId,
    ServiceName, UnknownDataPlane,
};
use switchyard_crds::{Kind, ObjectRef, SmiObject};

use store::Store;

mod inbound;
mod ingest;
mod outbound;
mod refs;
mod status;
mod store;
#[cfg(test)]
mod tests;
pub mod workloads;

pub(crate) use ingest::object_key;
pub use status::{ConditionState, ObjectStatus, reasons};
pub use workloads::{Owner, WorkloadKind, Workloads};

/// The clusters the index has published, by name.
type Clusters = BTreeMap<ClusterName, Arc<Cluster>>;

/// The Pod annotation that chooses a workload's data plane, `envoy` or `bundled`, over the
/// mesh setting ([`MeshSettings::data_plane`]).
pub const DATA_PLANE_ANNOTATION: &str = "switchyard.dev/data-plane";

/// The Pod annotation the injector sets (`true`) on a Pod whose traffic it redirects through
/// the proxy: that proxy is compiled to route by original destination
/// ([`Capture::Intercepted`](switchyard_adapters::envoy::Capture)); other proxies (local mode,
/// a proxy run beside a Pod by hand) are addressed by their application.
pub const INTERCEPTED_ANNOTATION: &str = "switchyard.dev/intercepted";

/// `disabled` on a Pod: its proxy is never tapped, whatever a tap selects (the injector writes
/// the Namespace's value onto the Pods it injects). Requests to the Pod stay visible from
/// tapped callers' proxies.
pub const TAP_ANNOTATION: &str = "switchyard.dev/tap";

/// A Pod whose [`DATA_PLANE_ANNOTATION`] names no data plane; it runs the mesh's instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "pod {pod}: metadata.annotations[\"{DATA_PLANE_ANNOTATION}\"]: {source}; the mesh setting \
     ({fallback}) applies"
)]
pub struct InvalidDataPlane {
    pub pod: ProxyId,
    pub source: UnknownDataPlane,
    /// The data plane the Pod gets instead: the mesh setting.
    pub fallback: DataPlane,
}

impl InvalidDataPlane {
    /// The problem with a proxy's [`DATA_PLANE_ANNOTATION`], if its value names no data plane.
    pub fn of(proxy: &ProxyConfig) -> Option<Self> {
        Some(InvalidDataPlane {
            pod: proxy.proxy.clone(),
            source: proxy.unknown_data_plane.clone()?,
            fallback: proxy.data_plane,
        })
    }
}

/// Anything the index stores.
#[derive(Clone, Debug)]
pub enum Object {
    Smi(Box<SmiObject>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(Box<Pod>),
    ServiceAccount(Box<ServiceAccount>),
}

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Smi(o) => ObjectKind::Smi(o.kind()),
            Object::Service(_) => ObjectKind::Service,
            Object::EndpointSlice(_) => ObjectKind::EndpointSlice,
            Object::Pod(_) => ObjectKind::Pod,
            Object::ServiceAccount(_) => ObjectKind::ServiceAccount,
        }
    }
}

/// The kinds of [`Object`], for `delete` and `reset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Smi(Kind),
    Service,
    EndpointSlice,
    Pod,
    ServiceAccount,
}

/// Lowercase, as kinds appear in every report line (`trafficsplit demo/web: …`).
impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectKind::Smi(k) => k.fmt(f),
            ObjectKind::Service => f.write_str("service"),
            ObjectKind::EndpointSlice => f.write_str("endpointslice"),
            ObjectKind::Pod => f.write_str("pod"),
            ObjectKind::ServiceAccount => f.write_str("serviceaccount"),
        }
    }
}

/// Namespace and name.
type Key = (String, String);

/// What changed since the last [`Index::take_changes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Outbound services or clusters changed: every proxy's configuration is affected.
    pub outbound: bool,
    /// Proxies whose own configuration (inbound ports, data plane) changed, or that appeared or
    /// disappeared.
    pub proxies: BTreeSet<ProxyId>,
    /// SMI objects whose status changed.
    pub statuses: BTreeSet<ObjectRef>,
}

/// The synchronous mesh index.
#[derive(Debug)]
pub struct Index {
    store: Store,

    /// Shared with every `ProxyConfig` handed out; changed copy-on-write, so an unchanged map
    /// stays the same allocation.
    outbound: Arc<BTreeMap<ServiceName, Arc<OutboundService>>>,
    clusters: Arc<Clusters>,
    statuses: BTreeMap<ObjectRef, ObjectStatus>,
    /// Each proxy's own configuration, its `outbound` and `clusters` left empty: the shared
    /// ones above are added when it is handed out.
    proxies: BTreeMap<ProxyId, ProxyConfig>,

    dirty: Dirty,
    changes: Changes,
    /// Bumped by every change that can change [`Index::workloads`].
    workloads_version: u64,
}

/// What the next [`Index::recompute`] must bring up to date.
#[derive(Debug, Default)]
struct Dirty {
    /// Services whose clusters and outbound routes to recompute.
    services: BTreeSet<ServiceName>,
    /// TrafficSplits whose status to recompute (besides those of dirty roots).
    splits: BTreeSet<Key>,
    /// Pods whose inbound configuration to recompute.
    pods: BTreeSet<Key>,
    /// TrafficTargets whose status to recompute.
    targets: BTreeSet<Key>,
}

// === impl Index ===

impl Index {
    pub fn new(settings: MeshSettings) -> Self {
        Index {
            store: Store::new(settings),
            outbound: Arc::default(),
            clusters: Arc::default(),
            statuses: BTreeMap::new(),
            proxies: BTreeMap::new(),
            dirty: Dirty::default(),
            changes: Changes::default(),
            workloads_version: 0,
        }
    }

    pub fn settings(&self) -> &MeshSettings {
        &self.store.settings
    }

    /// Adds or replaces an object, then brings the model up to date.
    pub fn apply(&mut self, obj: Object) {
        self.apply_one(obj);
        self.recompute();
    }

    /// Adds or replaces many objects, then brings the model up to date once: the same result as
    /// applying them one by one, with each affected piece recomputed once (an initial list).
    pub fn apply_all(&mut self, objects: impl IntoIterator<Item = Object>) {
        for obj in objects {
            self.apply_one(obj);
        }
        self.recompute();
    }

    /// Removes an object, then brings the model up to date.
    pub fn delete(&mut self, kind: ObjectKind, namespace: &str, name: &str) {
        self.delete_one(kind, namespace, name);
        self.recompute();
    }

    /// Replaces every object of one kind (a watch restart or a full re-read of a directory).
    pub fn reset(&mut self, kind: ObjectKind, objects: Vec<Object>) {
        let keep: BTreeSet<Key> = objects.iter().filter_map(object_key).collect();
        for (ns, name) in self.keys_of(kind) {
            if !keep.contains(&(ns.clone(), name.clone())) {
                self.delete_one(kind, &ns, &name);
            }
        }
        self.apply_all(objects);
    }

    /// What changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Whether `proxy` may be tapped: its Pod is known and not annotated
    /// [`TAP_ANNOTATION`]`: disabled`.
    pub fn tap_allowed(&self, proxy: &ProxyId) -> bool {
        self.store
            .pods
            .get(&(proxy.namespace.clone(), proxy.pod.clone()))
            .is_some_and(|p| !p.tap_disabled)
    }

    /// The configuration of one proxy, or `None` when the index knows no such Pod.
    pub fn proxy_config(&self, proxy: &ProxyId) -> Option<ProxyConfig> {
        self.proxies.get(proxy).map(|own| self.shared(own))
    }

    /// The configuration of every proxy the index knows, in proxy order: the index's whole
    /// output per proxy, which is all publishing needs.
    pub fn proxy_configs(&self) -> impl Iterator<Item = ProxyConfig> + '_ {
        self.proxies.values().map(|own| self.shared(own))
    }

    /// The status of one SMI object.
    pub fn status(&self, obj: &ObjectRef) -> Option<&ObjectStatus> {
        self.statuses.get(obj)
    }

    pub fn statuses(&self) -> &BTreeMap<ObjectRef, ObjectStatus> {
        &self.statuses
    }

    pub(crate) fn keys_of(&self, kind: ObjectKind) -> Vec<Key> {
        self.store.keys_of(kind)
    }

    /// What the Traffic Metrics API needs to resolve workloads, Services and TrafficSplits
    /// into Pods, and each meshed Pod's configured routes: a snapshot, O(Pods + endpoints +
    /// routes) to build, so build it when [`Index::workloads_version`] changed.
    pub fn workloads(&self) -> Workloads {
        workloads::snapshot(&self.store, &self.proxies)
    }

    /// Changes whenever [`Index::workloads`] may: a Pod, Service, EndpointSlice or TrafficSplit
    /// was applied or deleted, a Pod without a proxy recorded or forgotten, or a proxy's
    /// configured inbound routes changed (whatever changed them: a TrafficTarget or
    /// HTTPRouteGroup, the Pod's identity, the ports its Services give it). Every public
    /// method that changes the index has bumped it by the time it returns.
    pub fn workloads_version(&self) -> u64 {
        self.workloads_version
    }

    /// Records a Pod that runs no proxy, with its workload (`Some`), or forgets it (`None`):
    /// it is counted in its workload's `MESHED` column and nothing else. A Pod is either this
    /// or applied as an [`Object::Pod`]; the caller keeps the two apart.
    pub fn set_unmeshed_pod(&mut self, namespace: &str, name: &str, owner: Option<Option<Owner>>) {
        let key = (namespace.to_owned(), name.to_owned());
        let changed = match owner {
            Some(owner) => self.store.unmeshed_pods.insert(key, owner.clone()) != Some(owner),
            None => self.store.unmeshed_pods.remove(&key).is_some(),
        };
        if changed {
            self.workloads_version += 1;
        }
    }

    /// Replaces every Pod without a proxy (a relist of Pods).
    pub fn reset_unmeshed_pods(&mut self, pods: impl IntoIterator<Item = (Key, Option<Owner>)>) {
        let next: BTreeMap<Key, Option<Owner>> = pods.into_iter().collect();
        if next != self.store.unmeshed_pods {
            self.store.unmeshed_pods = next;
            self.workloads_version += 1;
        }
    }

    fn touch_workloads(&mut self, kind: ObjectKind) {
        if matches!(
            kind,
            ObjectKind::Pod
                | ObjectKind::Service
                | ObjectKind::EndpointSlice
                | ObjectKind::Smi(Kind::TrafficSplit)
        ) {
            self.workloads_version += 1;
        }
    }

    /// A proxy's own configuration with the outbound services and clusters every proxy shares.
    fn shared(&self, own: &ProxyConfig) -> ProxyConfig {
        ProxyConfig {
            outbound: self.outbound.clone(),
            clusters: self.clusters.clone(),
            ..own.clone()
        }
    }

    // --- recomputation ---

    fn recompute(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        // Clusters first: a root's routes exclude backends by their clusters' endpoints.
        for svc in &dirty.services {
            self.recompute_clusters(svc);
        }
        for svc in &dirty.services {
            self.recompute_outbound(svc);
        }
        let mut splits = dirty.splits;
        for root in &dirty.services {
            splits.extend(self.store.refs.splits_by_root.get(root).cloned());
        }
        for key in splits {
            self.recompute_split_status(key);
        }
        for key in &dirty.pods {
            self.recompute_inbound(key);
        }
        for key in dirty.targets {
            if let Some(stored) = self.store.targets.get(&key) {
                let st = status::target(&self.store, &key, stored);
                let (namespace, name) = key;
                self.set_status(
                    ObjectRef {
                        kind: Kind::TrafficTarget,
                        namespace,
                        name,
                    },
                    st,
                );
            }
        }
    }

    /// Publishes one Service's clusters, dropping those of ports it no longer has.
    fn recompute_clusters(&mut self, name: &ServiceName) {
        let mut keep = BTreeSet::new();
        for cluster in outbound::clusters(&self.store, name) {
            keep.insert(cluster.name.clone());
            self.publish_cluster(cluster);
        }
        let stale: Vec<ClusterName> = self
            .store
            .refs
            .clusters_by_service
            .get(name)
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for k in stale {
            self.store
                .refs
                .clusters_by_service
                .set(name.clone(), k.clone(), false);
            Arc::make_mut(&mut self.clusters).remove(&k);
            self.changes.outbound = true;
        }
        for k in keep {
            self.store
                .refs
                .clusters_by_service
                .set(name.clone(), k, true);
        }
    }

    /// Publishes one Service's outbound routing table (or its removal).
    fn recompute_outbound(&mut self, name: &ServiceName) {
        let Some(svc) = outbound::service(&self.store, &self.clusters, name) else {
            if self.outbound.contains_key(name) {
                Arc::make_mut(&mut self.outbound).remove(name);
                self.changes.outbound = true;
            }
            return;
        };
        if self.outbound.get(name).map(|o| **o != svc).unwrap_or(true) {
            Arc::make_mut(&mut self.outbound).insert(name.clone(), Arc::new(svc));
            self.changes.outbound = true;
        }
    }

    fn publish_cluster(&mut self, cluster: Cluster) {
        if self
            .clusters
            .get(&cluster.name)
            .map(|c| **c != cluster)
            .unwrap_or(true)
        {
            Arc::make_mut(&mut self.clusters).insert(cluster.name.clone(), Arc::new(cluster));
            self.changes.outbound = true;
        }
    }

    fn recompute_split_status(&mut self, key: Key) {
        if !self.store.splits.contains_key(&key) {
            return;
        }
        let status = status::split(&self.store, &self.clusters, &key);
        let (namespace, name) = key;
        self.set_status(
            ObjectRef {
                kind: Kind::TrafficSplit,
                namespace,
                name,
            },
            status,
        );
    }

    fn set_status(&mut self, obj: ObjectRef, status: ObjectStatus) {
        if self.statuses.get(&obj) != Some(&status) {
            self.statuses.insert(obj.clone(), status);
            self.changes.statuses.insert(obj);
        }
    }

    /// Recomputes one proxy's own configuration (or drops it with its Pod).
    fn recompute_inbound(&mut self, key: &Key) {
        let id = ProxyId {
            namespace: key.0.clone(),
            pod: key.1.clone(),
        };
        let next = inbound::proxy(&self.store, &id);
        // `Some(the previous configuration)` when it changed.
        let replaced = match next {
            Some(cfg) if self.proxies.get(&id) != Some(&cfg) => {
                Some(self.proxies.insert(id.clone(), cfg))
            }
            Some(_) => None,
            None => self.proxies.remove(&id).map(Some),
        };
        if let Some(old) = replaced {
            // The workloads view lists each Pod's configured routes: a TrafficTarget or an
            // HTTPRouteGroup changes them without a Pod, Service or slice changing.
            let routes = |cfg: Option<&ProxyConfig>| cfg.map(workloads::configured_routes);
            if routes(old.as_ref()) != routes(self.proxies.get(&id)) {
                self.workloads_version += 1;
            }
            self.changes.proxies.insert(id);
        }
    }
}
