//! The index: a synchronous, incremental view of SMI objects, Services, EndpointSlices, Pods and
//! ServiceAccounts, resolved into the mesh model with a status per SMI object.
//!
//! ```text
//!  apply/delete/reset ──▶ stored objects ──▶ dirty services ──▶ OutboundService + Clusters (Arc)
//!                                  │                                     │
//!                                  └─▶ conditions per SMI object         └─▶ ProxyConfig per Pod
//! ```
//!
//! Every change marks the Services it can affect (a split's root, the roots that use a Service as
//! a backend, …); only those are recomputed. Outbound pieces are shared by every proxy, so a
//! change re-publishes `Arc` pointers, not copies. The index does no IO.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Pod, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
};
use switchyard_adapters::model::{
    Authorization, Cluster, ClusterName, DataPlane, Endpoint, HttpMatch, Identity, InboundPort,
    InboundRule, MeshSettings, OutboundPort, OutboundService, Protocol, ProxyConfig, ProxyId,
    Route, ServiceName, UnknownDataPlane, WeightedCluster,
};
use switchyard_crds::{
    Decimal, Kind, ObjectRef, SmiObject,
    access::TrafficTarget,
    specs::{HttpRouteGroup, PortMatch},
    split::{self, TrafficSplit},
    validate::{self, Severity},
    weight,
};

use refs::Refs;

mod refs;
mod status;
#[cfg(test)]
mod tests;

pub use status::{ConditionState, ObjectStatus, reasons};

/// The Pod annotation that chooses a workload's data plane, `envoy` or `bundled`, over the
/// mesh setting ([`MeshSettings::data_plane`]).
pub const DATA_PLANE_ANNOTATION: &str = "switchyard.dev/data-plane";

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

#[derive(Clone, Debug, PartialEq)]
struct ServiceInfo {
    cluster_ip: Option<IpAddr>,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
}

#[derive(Clone, Debug, PartialEq)]
struct ServicePort {
    name: Option<String>,
    port: u16,
    target: TargetPort,
    protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq)]
enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq)]
struct SliceInfo {
    service: String,
    /// Port name (empty when unnamed) → port number.
    ports: Vec<(String, u16)>,
    endpoints: Vec<SliceEndpoint>,
}

#[derive(Clone, Debug, PartialEq)]
struct SliceEndpoint {
    addresses: Vec<IpAddr>,
    ready: bool,
    pod: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
struct PodInfo {
    service_account: String,
    /// `status.podIP`: where the pod's sidecar listens (a loopback address in local mode).
    ip: Option<IpAddr>,
    labels: BTreeMap<String, String>,
    /// Container ports by name, to resolve named target ports.
    named_ports: BTreeMap<String, u16>,
    /// The [`DATA_PLANE_ANNOTATION`], when present: the data plane, or the value that is not one.
    data_plane: Option<Result<DataPlane, UnknownDataPlane>>,
}

/// What the index knows about one proxy besides the shared outbound model.
#[derive(Clone, Debug, PartialEq)]
struct ProxyEntry {
    identity: Identity,
    /// Where its listeners bind: an IP change (a Pod's status written after its creation)
    /// recompiles the proxy.
    ip: Option<IpAddr>,
    inbound: Vec<InboundPort>,
    data_plane: DataPlane,
    invalid_data_plane: Option<InvalidDataPlane>,
}

/// An SMI object as last applied, and the last version of it that was valid.
#[derive(Clone, Debug)]
struct Stored<T> {
    /// Served: the newest version without errors. `None` until one arrives.
    good: Option<T>,
    generation: Option<i64>,
    /// Validation problems of the newest version, as status messages.
    problems: Vec<validate::Problem>,
}

/// The synchronous mesh index.
#[derive(Debug)]
pub struct Index {
    settings: MeshSettings,
    services: BTreeMap<ServiceName, ServiceInfo>,
    slices: BTreeMap<Key, SliceInfo>,
    pods: BTreeMap<Key, PodInfo>,
    service_accounts: BTreeSet<Key>,
    splits: BTreeMap<Key, Stored<TrafficSplit>>,
    targets: BTreeMap<Key, Stored<TrafficTarget>>,
    groups: BTreeMap<Key, Stored<HttpRouteGroup>>,
    tcp_routes: BTreeMap<Key, Stored<PortMatch>>,
    udp_routes: BTreeMap<Key, Stored<PortMatch>>,
    refs: Refs,

    /// Shared with every `ProxyConfig` handed out; changed copy-on-write, so an unchanged map
    /// stays the same allocation.
    outbound: Arc<BTreeMap<ServiceName, Arc<OutboundService>>>,
    clusters: Arc<BTreeMap<ClusterName, Arc<Cluster>>>,
    statuses: BTreeMap<ObjectRef, ObjectStatus>,
    proxy_inbound: BTreeMap<ProxyId, ProxyEntry>,

    dirty: Dirty,
    changes: Changes,
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
            settings,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            pods: BTreeMap::new(),
            service_accounts: BTreeSet::new(),
            splits: BTreeMap::new(),
            targets: BTreeMap::new(),
            groups: BTreeMap::new(),
            tcp_routes: BTreeMap::new(),
            udp_routes: BTreeMap::new(),
            refs: Refs::default(),
            outbound: Arc::default(),
            clusters: Arc::default(),
            statuses: BTreeMap::new(),
            proxy_inbound: BTreeMap::new(),
            dirty: Dirty::default(),
            changes: Changes::default(),
        }
    }

    pub fn settings(&self) -> &MeshSettings {
        &self.settings
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

    /// The configuration of one proxy, or `None` when the index knows no such Pod.
    pub fn proxy_config(&self, proxy: &ProxyId) -> Option<ProxyConfig> {
        let entry = self.proxy_inbound.get(proxy)?;
        Some(ProxyConfig {
            proxy: proxy.clone(),
            identity: entry.identity.clone(),
            outbound: self.outbound.clone(),
            clusters: self.clusters.clone(),
            inbound: entry.inbound.clone(),
        })
    }

    /// The data plane a proxy runs: its Pod's [`DATA_PLANE_ANNOTATION`] when valid, else the
    /// mesh setting. `None` when the index knows no such Pod.
    pub fn data_plane(&self, proxy: &ProxyId) -> Option<DataPlane> {
        self.proxy_inbound.get(proxy).map(|e| e.data_plane)
    }

    /// The problem with a proxy's [`DATA_PLANE_ANNOTATION`], if its value names no data plane.
    pub fn invalid_data_plane(&self, proxy: &ProxyId) -> Option<&InvalidDataPlane> {
        self.proxy_inbound.get(proxy)?.invalid_data_plane.as_ref()
    }

    /// The identity a proxy's workload runs as (its Pod's ServiceAccount).
    pub fn proxy_identity(&self, proxy: &ProxyId) -> Option<&Identity> {
        self.proxy_inbound.get(proxy).map(|e| &e.identity)
    }

    /// Every proxy the index knows.
    pub fn proxies(&self) -> impl Iterator<Item = &ProxyId> {
        self.proxy_inbound.keys()
    }

    /// A proxy's pod IP (`status.podIP`), where its listeners bind.
    pub fn pod_ip(&self, proxy: &ProxyId) -> Option<IpAddr> {
        self.pods
            .get(&(proxy.namespace.clone(), proxy.pod.clone()))?
            .ip
    }

    /// The status of one SMI object.
    pub fn status(&self, obj: &ObjectRef) -> Option<&ObjectStatus> {
        self.statuses.get(obj)
    }

    pub fn statuses(&self) -> &BTreeMap<ObjectRef, ObjectStatus> {
        &self.statuses
    }

    pub(crate) fn keys_of(&self, kind: ObjectKind) -> Vec<Key> {
        match kind {
            ObjectKind::Service => self
                .services
                .keys()
                .map(|s| (s.namespace.clone(), s.name.clone()))
                .collect(),
            ObjectKind::EndpointSlice => self.slices.keys().cloned().collect(),
            ObjectKind::Pod => self.pods.keys().cloned().collect(),
            ObjectKind::ServiceAccount => self.service_accounts.iter().cloned().collect(),
            ObjectKind::Smi(Kind::TrafficSplit) => self.splits.keys().cloned().collect(),
            ObjectKind::Smi(Kind::TrafficTarget) => self.targets.keys().cloned().collect(),
            ObjectKind::Smi(Kind::HttpRouteGroup) => self.groups.keys().cloned().collect(),
            ObjectKind::Smi(Kind::TcpRoute) => self.tcp_routes.keys().cloned().collect(),
            ObjectKind::Smi(Kind::UdpRoute) => self.udp_routes.keys().cloned().collect(),
        }
    }

    // --- applying objects ---

    fn apply_one(&mut self, obj: Object) {
        match obj {
            Object::Service(svc) => self.apply_service(&svc),
            Object::EndpointSlice(slice) => self.apply_slice(&slice),
            Object::Pod(pod) => self.apply_pod(&pod),
            Object::ServiceAccount(sa) => {
                if let Some(key) = meta_key(&sa.metadata) {
                    self.service_accounts.insert(key);
                }
            }
            Object::Smi(smi) => self.apply_smi(*smi),
        }
    }

    fn delete_one(&mut self, kind: ObjectKind, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        match kind {
            ObjectKind::Service => {
                let svc = ServiceName::new(namespace, name);
                self.set_service(svc, None);
            }
            ObjectKind::EndpointSlice => self.set_slice(key, None),
            ObjectKind::Pod => self.set_pod(key, None),
            ObjectKind::ServiceAccount => {
                self.service_accounts.remove(&key);
            }
            ObjectKind::Smi(k) => {
                match k {
                    Kind::TrafficSplit => {
                        if let Some(old) = self.splits.remove(&key).and_then(|s| s.good) {
                            self.index_split(&key, &old, false);
                        }
                    }
                    Kind::TrafficTarget => {
                        if let Some(old) = self.targets.remove(&key).and_then(|s| s.good) {
                            self.index_target(&key, &old, false);
                        }
                    }
                    Kind::HttpRouteGroup => {
                        self.groups.remove(&key);
                        self.mark_route(&key, true);
                    }
                    Kind::TcpRoute => {
                        self.tcp_routes.remove(&key);
                        self.mark_route(&key, false);
                    }
                    Kind::UdpRoute => {
                        self.udp_routes.remove(&key);
                        self.mark_route(&key, false);
                    }
                }
                let obj = ObjectRef {
                    kind: k,
                    namespace: namespace.into(),
                    name: name.into(),
                };
                if self.statuses.remove(&obj).is_some() {
                    self.changes.statuses.insert(obj);
                }
            }
        }
    }

    fn apply_service(&mut self, svc: &Service) {
        let Some((namespace, name)) = meta_key(&svc.metadata) else {
            return;
        };
        let spec = svc.spec.clone().unwrap_or_default();
        let cluster_ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
        let ports = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                let port = u16::try_from(p.port).ok()?;
                let target = match p.target_port {
                    None => TargetPort::Number(port),
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                        TargetPort::Number(u16::try_from(n).ok()?)
                    }
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
                        TargetPort::Name(s)
                    }
                };
                let protocol = protocol_of(p.app_protocol.as_deref(), p.name.as_deref());
                Some(ServicePort {
                    name: p.name,
                    port,
                    target,
                    protocol,
                })
            })
            .collect();
        let info = ServiceInfo {
            cluster_ip,
            selector: spec.selector.unwrap_or_default(),
            ports,
        };
        self.set_service(ServiceName::new(namespace, name), Some(info));
    }

    /// Stores (`Some`) or removes a Service, keeping its selector indexed and marking the Pods it
    /// selected or selects and the routes that use it.
    fn set_service(&mut self, name: ServiceName, info: Option<ServiceInfo>) {
        if self.services.get(&name) == info.as_ref() {
            return;
        }
        let old = match info {
            Some(info) => self.services.insert(name.clone(), info),
            None => self.services.remove(&name),
        };
        // Unlink the old version before linking the new, so references both share survive.
        if let Some(old) = old {
            self.index_service(&name, &old, false);
        }
        if let Some(new) = self.services.get(&name).cloned() {
            self.index_service(&name, &new, true);
        }
        self.mark_service(&name);
    }

    fn index_service(&mut self, name: &ServiceName, info: &ServiceInfo, present: bool) {
        for (k, v) in &info.selector {
            let label = (name.namespace.clone(), k.clone(), v.clone());
            self.refs
                .services_by_selector
                .set(label, name.clone(), present);
        }
        // The Pods it selects serve (or stop serving) its ports.
        let pods = self.pods_selected_by(&name.namespace, &info.selector);
        self.dirty.pods.extend(pods);
    }

    fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some(key) = meta_key(&slice.metadata) else {
            return;
        };
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .cloned()
        else {
            return;
        };
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    u16::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .map(|e| SliceEndpoint {
                addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                // Kubernetes: a nil `ready` means ready.
                ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                pod: e
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| r.name.clone()),
            })
            .collect();
        self.set_slice(
            key,
            Some(SliceInfo {
                service,
                ports,
                endpoints,
            }),
        );
    }

    fn set_slice(&mut self, key: Key, info: Option<SliceInfo>) {
        if self.slices.get(&key) == info.as_ref() {
            return;
        }
        let old = match info {
            Some(info) => self.slices.insert(key.clone(), info),
            None => self.slices.remove(&key),
        };
        if let Some(old) = old {
            self.index_slice(&key, &old, false);
        }
        if let Some(new) = self.slices.get(&key).cloned() {
            self.index_slice(&key, &new, true);
        }
    }

    fn index_slice(&mut self, key: &Key, info: &SliceInfo, present: bool) {
        let service = ServiceName::new(key.0.clone(), info.service.clone());
        self.refs
            .slices_by_service
            .set(service.clone(), key.clone(), present);
        for pod in info.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
            self.refs
                .slices_by_pod
                .set((key.0.clone(), pod.clone()), key.clone(), present);
        }
        self.mark_service(&service);
    }

    fn apply_pod(&mut self, pod: &Pod) {
        let Some(key) = meta_key(&pod.metadata) else {
            return;
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let named_ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
            .collect();
        let info = PodInfo {
            service_account: spec
                .service_account_name
                .unwrap_or_else(|| "default".into()),
            ip: pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            named_ports,
            data_plane: pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DATA_PLANE_ANNOTATION))
                .map(|v| v.parse()),
        };
        self.set_pod(key, Some(info));
    }

    fn set_pod(&mut self, key: Key, info: Option<PodInfo>) {
        if self.pods.get(&key) == info.as_ref() {
            return;
        }
        let identity_changed = self.pods.get(&key).map(|p| &p.service_account)
            != info.as_ref().map(|p| &p.service_account);
        let old = match info {
            Some(info) => self.pods.insert(key.clone(), info),
            None => self.pods.remove(&key),
        };
        if let Some(old) = old {
            self.index_pod(&key, &old, false);
        }
        if let Some(new) = self.pods.get(&key).cloned() {
            self.index_pod(&key, &new, true);
        }
        self.dirty.pods.insert(key.clone());
        if identity_changed {
            // Endpoints carry their Pod's identity.
            let services: Vec<ServiceName> = self
                .refs
                .slices_by_pod
                .get(&key)
                .filter_map(|s| {
                    let slice = self.slices.get(s)?;
                    Some(ServiceName::new(s.0.clone(), slice.service.clone()))
                })
                .collect();
            for svc in services {
                self.mark_service(&svc);
            }
        }
    }

    fn index_pod(&mut self, key: &Key, info: &PodInfo, present: bool) {
        let identity = Identity::new(key.0.clone(), info.service_account.clone());
        self.refs
            .pods_by_identity
            .set(identity, key.clone(), present);
        for (k, v) in &info.labels {
            let label = (key.0.clone(), k.clone(), v.clone());
            self.refs.pods_by_label.set(label, key.clone(), present);
        }
    }

    fn apply_smi(&mut self, obj: SmiObject) {
        let r = obj.object_ref();
        let key = (r.namespace.clone(), r.name.clone());
        let generation = obj.metadata().generation;
        let problems = validate::validate_canonical(&obj);
        let valid = !problems.iter().any(|p| p.severity == Severity::Error);
        match obj {
            SmiObject::TrafficSplit(ts) => {
                let stored = self
                    .splits
                    .entry(key.clone())
                    .or_insert_with(|| Stored::new(generation));
                if let Some(old) = stored.update(valid.then_some(ts), generation, problems) {
                    self.index_split(&key, &old, false);
                }
                if let Some(new) = self.splits.get(&key).and_then(|s| s.good.clone()) {
                    self.index_split(&key, &new, true);
                }
                self.dirty.splits.insert(key);
            }
            SmiObject::TrafficTarget(tt) => {
                let stored = self
                    .targets
                    .entry(key.clone())
                    .or_insert_with(|| Stored::new(generation));
                if let Some(old) = stored.update(valid.then_some(tt), generation, problems) {
                    self.index_target(&key, &old, false);
                }
                if let Some(new) = self.targets.get(&key).and_then(|s| s.good.clone()) {
                    self.index_target(&key, &new, true);
                }
                self.dirty.targets.insert(key);
            }
            SmiObject::HttpRouteGroup(g) => {
                let stored = self
                    .groups
                    .entry(key.clone())
                    .or_insert_with(|| Stored::new(generation));
                stored.update(valid.then_some(g), generation, problems);
                let st = ObjectStatus::accepted(stored.generation, &stored.problems);
                self.set_status(r, st);
                self.mark_route(&key, true);
            }
            SmiObject::TcpRoute(t) => {
                let stored = self
                    .tcp_routes
                    .entry(key.clone())
                    .or_insert_with(|| Stored::new(generation));
                stored.update(valid.then_some(t.ports), generation, problems);
                let st = ObjectStatus::accepted(stored.generation, &stored.problems);
                self.set_status(r, st);
                self.mark_route(&key, false);
            }
            SmiObject::UdpRoute(u) => {
                let stored = self
                    .udp_routes
                    .entry(key.clone())
                    .or_insert_with(|| Stored::new(generation));
                stored.update(valid.then_some(u.ports), generation, problems);
                let st = ObjectStatus::accepted(stored.generation, &stored.problems);
                self.set_status(r, st);
                self.mark_route(&key, false);
            }
        }
    }

    // --- dependency tracking ---

    /// Links (or unlinks) a served split's references, marking its root.
    fn index_split(&mut self, key: &Key, ts: &TrafficSplit, present: bool) {
        let ns = &key.0;
        if let Some(root) = root_of(ns, ts) {
            self.dirty.services.insert(root.clone());
            self.refs.splits_by_root.set(root, key.clone(), present);
        }
        for b in &ts.backends {
            let svc = ServiceName::new(ns.clone(), b.service.clone());
            self.refs.splits_by_backend.set(svc, key.clone(), present);
        }
        for m in &ts.matches {
            let group = (ns.clone(), m.name.clone());
            self.refs.splits_by_group.set(group, key.clone(), present);
        }
    }

    /// Links (or unlinks) a served target's references, marking the Pods it governs.
    fn index_target(&mut self, key: &Key, tt: &TrafficTarget, present: bool) {
        if let Some(destination) = destination_of(&key.0, tt) {
            self.mark_identity(&destination);
            self.refs
                .targets_by_destination
                .set(destination, key.clone(), present);
        }
        for rule in &tt.rules {
            let route = (key.0.clone(), rule.name.clone());
            self.refs.targets_by_route.set(route, key.clone(), present);
        }
    }

    /// A Service (or its endpoints) changed: it and every root that uses it as a backend.
    fn mark_service(&mut self, svc: &ServiceName) {
        self.dirty.services.insert(svc.clone());
        let roots: Vec<ServiceName> = self
            .refs
            .splits_by_backend
            .get(svc)
            .filter_map(|key| root_of(&key.0, self.splits.get(key)?.good.as_ref()?))
            .collect();
        self.dirty.services.extend(roots);
    }

    /// A route object changed: the targets naming it, their Pods, and (for an HTTPRouteGroup)
    /// the roots of the splits naming it.
    fn mark_route(&mut self, route: &Key, http: bool) {
        if http {
            let roots: Vec<ServiceName> = self
                .refs
                .splits_by_group
                .get(route)
                .filter_map(|key| root_of(&key.0, self.splits.get(key)?.good.as_ref()?))
                .collect();
            self.dirty.services.extend(roots);
        }
        let targets: Vec<Key> = self.refs.targets_by_route.get(route).cloned().collect();
        for key in targets {
            let destination = self
                .targets
                .get(&key)
                .and_then(|s| s.good.as_ref())
                .and_then(|tt| destination_of(&key.0, tt));
            if let Some(d) = destination {
                self.mark_identity(&d);
            }
            self.dirty.targets.insert(key);
        }
    }

    fn mark_identity(&mut self, identity: &Identity) {
        let pods: Vec<Key> = self.refs.pods_by_identity.get(identity).cloned().collect();
        self.dirty.pods.extend(pods);
    }

    /// Pods in `namespace` whose labels satisfy `selector` (an empty selector selects none).
    fn pods_selected_by(&self, namespace: &str, selector: &BTreeMap<String, String>) -> Vec<Key> {
        // Walk the rarest label's Pods and check the rest.
        let Some(label) = selector
            .iter()
            .map(|(k, v)| (namespace.to_string(), k.clone(), v.clone()))
            .min_by_key(|l| self.refs.pods_by_label.count(l))
        else {
            return Vec::new();
        };
        self.refs
            .pods_by_label
            .get(&label)
            .filter(|key| {
                self.pods
                    .get(*key)
                    .is_some_and(|p| selects(selector, &p.labels))
            })
            .cloned()
            .collect()
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
            splits.extend(self.refs.splits_by_root.get(root).cloned());
        }
        for key in splits {
            self.recompute_split_status(key);
        }
        for key in &dirty.pods {
            self.recompute_inbound(key);
        }
        for key in dirty.targets {
            if let Some(stored) = self.targets.get(&key) {
                let st = self.target_status(&key, stored);
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

    /// Recomputes one Service's clusters: one per port, with its ready endpoints.
    fn recompute_clusters(&mut self, name: &ServiceName) {
        let ports = self
            .services
            .get(name)
            .map(|i| i.ports.clone())
            .unwrap_or_default();

        // Clusters: one per service port.
        let mut keep = BTreeSet::new();
        for p in &ports {
            let cluster = Cluster {
                name: ClusterName::new(name, p.port),
                service: name.clone(),
                port: p.port,
                protocol: p.protocol,
                endpoints: self.endpoints(name, p),
            };
            keep.insert(cluster.name.clone());
            self.publish_cluster(cluster);
        }
        let stale: Vec<ClusterName> = self
            .refs
            .clusters_by_service
            .get(name)
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for k in stale {
            self.refs
                .clusters_by_service
                .set(name.clone(), k.clone(), false);
            Arc::make_mut(&mut self.clusters).remove(&k);
            self.changes.outbound = true;
        }
        for k in keep {
            self.refs.clusters_by_service.set(name.clone(), k, true);
        }
    }

    /// Recomputes one Service's outbound routing table.
    fn recompute_outbound(&mut self, name: &ServiceName) {
        let Some(info) = self.services.get(name) else {
            if self.outbound.contains_key(name) {
                Arc::make_mut(&mut self.outbound).remove(name);
                self.changes.outbound = true;
            }
            return;
        };
        let ports = info
            .ports
            .iter()
            .map(|p| self.outbound_port(name, p))
            .collect();
        let svc = OutboundService {
            name: name.clone(),
            hostnames: name.hostnames(&self.settings.cluster_domain),
            cluster_ip: info.cluster_ip,
            ports,
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

    /// Ready endpoints of one Service port, resolved through its EndpointSlices.
    fn endpoints(&self, name: &ServiceName, port: &ServicePort) -> Vec<Endpoint> {
        let mut out = BTreeSet::new();
        let port_name = port.name.clone().unwrap_or_default();
        for key in self.refs.slices_by_service.get(name) {
            let Some(slice) = self.slices.get(key) else {
                continue;
            };
            let ns = &key.0;
            let slice_port = slice
                .ports
                .iter()
                .find(|(n, _)| *n == port_name)
                .or_else(|| {
                    (slice.ports.len() == 1 && port.name.is_none()).then(|| &slice.ports[0])
                })
                .map(|(_, p)| *p);
            let Some(slice_port) = slice_port else {
                continue;
            };
            for e in slice.endpoints.iter().filter(|e| e.ready) {
                let identity = e.pod.as_ref().and_then(|pod| {
                    let info = self.pods.get(&(ns.clone(), pod.clone()))?;
                    Some(Identity::new(ns.clone(), info.service_account.clone()))
                });
                for addr in &e.addresses {
                    out.insert(Endpoint {
                        address: SocketAddr::new(*addr, slice_port),
                        identity: identity.clone(),
                    });
                }
            }
        }
        out.into_iter().collect()
    }

    /// The routing table of one root Service port: split routes (with matches, oldest first),
    /// then the catch-all.
    fn outbound_port(&self, root: &ServiceName, port: &ServicePort) -> OutboundPort {
        let own = vec![WeightedCluster {
            cluster: ClusterName::new(root, port.port),
            weight: 1,
        }];
        let (with_matches, catch_all) = self.splits_for(root);
        let mut routes = Vec::new();
        if matches!(port.protocol, Protocol::Http | Protocol::Http2) {
            for ts in with_matches {
                let matches = self.split_matches(ts);
                if matches.is_empty() {
                    // A split whose route groups resolve to nothing matches no request.
                    continue;
                }
                let backends = self
                    .resolve_backends(root, port.port, ts)
                    .unwrap_or_else(|_| own.clone());
                routes.push(Route {
                    name: split_route_name(ts),
                    matches,
                    backends,
                });
            }
        }
        let default = match catch_all {
            Some(ts) => Route {
                name: split_route_name(ts),
                matches: Vec::new(),
                backends: self
                    .resolve_backends(root, port.port, ts)
                    .unwrap_or_else(|_| own.clone()),
            },
            None => Route {
                name: "default".into(),
                matches: Vec::new(),
                backends: own,
            },
        };
        routes.push(default);
        OutboundPort {
            port: port.port,
            protocol: port.protocol,
            routes,
        }
    }

    /// Splits for a root: those with `matches` (oldest first) and the winning catch-all.
    fn splits_for(&self, root: &ServiceName) -> (Vec<&TrafficSplit>, Option<&TrafficSplit>) {
        let mut all: Vec<&TrafficSplit> = self
            .refs
            .splits_by_root
            .get(root)
            .filter_map(|key| self.splits.get(key)?.good.as_ref())
            .collect();
        all.sort_by_key(|ts| age_key(ts));
        let (with, without): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|ts| !ts.matches.is_empty());
        (with, without.first().copied())
    }

    /// The HTTP matches of a split: every match of every route group it names, ORed.
    fn split_matches(&self, ts: &TrafficSplit) -> Vec<HttpMatch> {
        let ns = ns_of(&ts.metadata);
        let mut out = Vec::new();
        for m in &ts.matches {
            if let Some(g) = self
                .groups
                .get(&(ns.clone(), m.name.clone()))
                .and_then(|g| g.good.as_ref())
            {
                out.extend(g.matches.iter().map(http_match));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The weighted clusters of a split for one root port, after the DESIGN §4 exclusions.
    /// `Err` means the split is inactive for this port: send traffic to the root's own endpoints.
    fn resolve_backends(
        &self,
        root: &ServiceName,
        port: u16,
        ts: &TrafficSplit,
    ) -> Result<Vec<WeightedCluster>, ()> {
        let mut kept: Vec<(ClusterName, Decimal)> = Vec::new();
        for b in &ts.backends {
            let Some(w) = b.weight.map(|w| w.0) else {
                continue;
            };
            if w.is_zero() {
                continue;
            }
            let svc = ServiceName::new(root.namespace.clone(), b.service.clone());
            let Some(info) = self.services.get(&svc) else {
                continue;
            };
            if !info.ports.iter().any(|p| p.port == port) {
                continue;
            }
            let cluster = ClusterName::new(&svc, port);
            if self
                .clusters
                .get(&cluster)
                .map(|c| c.endpoints.is_empty())
                .unwrap_or(true)
            {
                continue;
            }
            kept.push((cluster, w));
        }
        let weights: Vec<Decimal> = kept.iter().map(|(_, w)| *w).collect();
        let ints = weight::data_plane_weights(&weights).ok_or(())?;
        let out: Vec<WeightedCluster> = kept
            .into_iter()
            .zip(ints)
            .filter(|(_, w)| *w > 0)
            .map(|((cluster, _), weight)| WeightedCluster { cluster, weight })
            .collect();
        if out.is_empty() { Err(()) } else { Ok(out) }
    }

    fn recompute_split_status(&mut self, key: Key) {
        if !self.splits.contains_key(&key) {
            return;
        }
        let status = self.split_status(&key);
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

    fn split_status(&self, key: &Key) -> ObjectStatus {
        let Some(stored) = self.splits.get(key) else {
            return ObjectStatus::default();
        };
        let mut st = ObjectStatus::accepted(stored.generation, &stored.problems);
        let Some(ts) = stored.good.as_ref() else {
            return st;
        };
        let ns = &key.0;
        let Some(root) = root_of(ns, ts) else {
            return st;
        };

        let mut unresolved = Vec::new();
        let root_info = self.services.get(&root);
        if root_info.is_none() {
            unresolved.push((
                reasons::ROOT_NOT_FOUND,
                format!("spec.service: Service {root} not found"),
            ));
        }
        for (i, b) in ts.backends.iter().enumerate() {
            let svc = ServiceName::new(ns.clone(), b.service.clone());
            let Some(info) = self.services.get(&svc) else {
                unresolved.push((
                    reasons::BACKEND_NOT_FOUND,
                    format!("spec.backends[{i}].service: Service {svc} not found; excluded"),
                ));
                continue;
            };
            if let Some(root_info) = root_info {
                let missing: Vec<String> = root_info
                    .ports
                    .iter()
                    .filter(|rp| !info.ports.iter().any(|p| p.port == rp.port))
                    .map(|rp| rp.port.to_string())
                    .collect();
                if !missing.is_empty() {
                    unresolved.push((
                        reasons::BACKEND_PORT_MISSING,
                        format!("spec.backends[{i}].service: Service {svc} lacks port {}; excluded for that port", missing.join(", ")),
                    ));
                }
            }
            let ready = info.ports.iter().any(|p| {
                self.clusters
                    .get(&ClusterName::new(&svc, p.port))
                    .map(|c| !c.endpoints.is_empty())
                    .unwrap_or(false)
            });
            if !ready && b.weight.map(|w| !w.0.is_zero()).unwrap_or(false) {
                unresolved.push((
                    reasons::BACKEND_NOT_READY,
                    format!("spec.backends[{i}].service: Service {svc} has no ready endpoints; excluded while empty"),
                ));
            }
        }
        let ns = ns.clone();
        for (i, m) in ts.matches.iter().enumerate() {
            match self.groups.get(&(ns.clone(), m.name.clone())) {
                Some(g) if g.good.is_some() => {}
                _ => unresolved.push((
                    reasons::ROUTE_GROUP_NOT_FOUND,
                    format!("spec.matches[{i}].name: HTTPRouteGroup {ns}/{} not found; this split matches nothing", m.name),
                )),
            }
        }
        st.set_resolved(stored.generation, unresolved);

        if ts.matches.is_empty() {
            let (_, winner) = self.splits_for(&root);
            match winner {
                Some(w) if !std::ptr::eq(w, ts) => st.set_conflicted(
                    stored.generation,
                    format!("root Service {root} already has TrafficSplit {}/{} (older); this one is ignored", ns_of(&w.metadata), w.metadata.name.clone().unwrap_or_default()),
                ),
                _ => st.set_not_conflicted(stored.generation),
            }
        }
        st
    }

    /// Recomputes one proxy's inbound configuration and data plane (or drops them with its Pod).
    fn recompute_inbound(&mut self, key: &Key) {
        let id = ProxyId {
            namespace: key.0.clone(),
            pod: key.1.clone(),
        };
        let next = self.pods.get(key).map(|pod| {
            let identity = Identity::new(key.0.clone(), pod.service_account.clone());
            let inbound = self.inbound_ports(&key.0, pod, &identity);
            let fallback = self.settings.data_plane;
            let (data_plane, invalid_data_plane) = match &pod.data_plane {
                None => (fallback, None),
                Some(Ok(chosen)) => (*chosen, None),
                Some(Err(unknown)) => (
                    fallback,
                    Some(InvalidDataPlane {
                        pod: id.clone(),
                        source: unknown.clone(),
                        fallback,
                    }),
                ),
            };
            ProxyEntry {
                identity,
                ip: pod.ip,
                inbound,
                data_plane,
                invalid_data_plane,
            }
        });
        let changed = match next {
            Some(cfg) if self.proxy_inbound.get(&id) != Some(&cfg) => {
                self.proxy_inbound.insert(id.clone(), cfg);
                true
            }
            Some(_) => false,
            None => self.proxy_inbound.remove(&id).is_some(),
        };
        if changed {
            self.changes.proxies.insert(id);
        }
    }

    /// The ports a Pod serves, from the Services that select it, with who may use each.
    fn inbound_ports(&self, ns: &str, pod: &PodInfo, identity: &Identity) -> Vec<InboundPort> {
        let candidates: BTreeSet<&ServiceName> = pod
            .labels
            .iter()
            .flat_map(|(k, v)| {
                let label = (ns.to_string(), k.clone(), v.clone());
                self.refs
                    .services_by_selector
                    .get(&label)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut ports: BTreeMap<u16, Protocol> = BTreeMap::new();
        for svc in candidates {
            let Some(info) = self.services.get(svc) else {
                continue;
            };
            if !selects(&info.selector, &pod.labels) {
                continue;
            }
            for p in &info.ports {
                let target = match &p.target {
                    TargetPort::Number(n) => Some(*n),
                    TargetPort::Name(n) => pod.named_ports.get(n).copied(),
                };
                if let Some(t) = target {
                    ports.entry(t).or_insert(p.protocol);
                }
            }
        }
        ports
            .into_iter()
            .map(|(port, protocol)| InboundPort {
                port,
                protocol,
                authorization: self.authorization(identity, port, protocol),
            })
            .collect()
    }

    /// What TrafficTargets allow on one port of one identity (DESIGN §4).
    fn authorization(&self, identity: &Identity, port: u16, protocol: Protocol) -> Authorization {
        if self.settings.access_mode == switchyard_adapters::model::AccessMode::Permissive {
            return Authorization::AllowAll;
        }
        let mut rules = Vec::new();
        for (ns, name) in self.refs.targets_by_destination.get(identity) {
            let Some(tt) = self
                .targets
                .get(&(ns.clone(), name.clone()))
                .and_then(|s| s.good.as_ref())
            else {
                continue;
            };
            if tt.destination.port.is_some_and(|p| p != port) {
                continue;
            }
            let sources: Vec<Identity> = tt
                .sources
                .iter()
                .filter(|s| s.kind == "ServiceAccount")
                .map(|s| {
                    Identity::new(
                        s.namespace.clone().unwrap_or_else(|| ns.clone()),
                        s.name.clone(),
                    )
                })
                .collect();
            if sources.is_empty() {
                continue;
            }
            let is_http = matches!(protocol, Protocol::Http | Protocol::Http2);
            for rule in &tt.rules {
                let key = (ns.clone(), rule.name.clone());
                let matches = match rule.kind.as_str() {
                    "HTTPRouteGroup" if is_http => {
                        let Some(g) = self.groups.get(&key).and_then(|g| g.good.as_ref()) else {
                            continue;
                        };
                        let allowed: Vec<HttpMatch> = g
                            .matches
                            .iter()
                            .filter(|m| rule.matches.is_empty() || rule.matches.contains(&m.name))
                            .map(http_match)
                            .collect();
                        if allowed.is_empty() {
                            continue;
                        }
                        allowed
                    }
                    "TCPRoute" if !is_http => {
                        let Some(ports) = self.tcp_routes.get(&key).and_then(|r| r.good.as_ref())
                        else {
                            continue;
                        };
                        if !ports.ports.is_empty() && !ports.ports.contains(&port) {
                            continue;
                        }
                        Vec::new()
                    }
                    _ => continue,
                };
                rules.push(InboundRule {
                    name: format!("{ns}/{name}"),
                    sources: sources.clone(),
                    matches,
                });
            }
        }
        Authorization::Allow(rules)
    }

    fn target_status(&self, key: &Key, stored: &Stored<TrafficTarget>) -> ObjectStatus {
        let mut st = ObjectStatus::accepted(stored.generation, &stored.problems);
        let Some(tt) = stored.good.as_ref() else {
            return st;
        };
        let mut unresolved = Vec::new();
        for (i, rule) in tt.rules.iter().enumerate() {
            let k = (key.0.clone(), rule.name.clone());
            let found = match rule.kind.as_str() {
                "HTTPRouteGroup" => match self.groups.get(&k).and_then(|g| g.good.as_ref()) {
                    Some(g) => {
                        for (j, m) in rule.matches.iter().enumerate() {
                            if !g.matches.iter().any(|x| &x.name == m) {
                                unresolved.push((
                                    reasons::MATCH_NOT_FOUND,
                                    format!("spec.rules[{i}].matches[{j}]: HTTPRouteGroup {}/{} has no match {m:?}; it allows nothing", key.0, rule.name),
                                ));
                            }
                        }
                        true
                    }
                    None => false,
                },
                "TCPRoute" => self
                    .tcp_routes
                    .get(&k)
                    .and_then(|r| r.good.as_ref())
                    .is_some(),
                "UDPRoute" => self
                    .udp_routes
                    .get(&k)
                    .and_then(|r| r.good.as_ref())
                    .is_some(),
                _ => true,
            };
            if !found {
                unresolved.push((
                    reasons::ROUTE_NOT_FOUND,
                    format!(
                        "spec.rules[{i}]: {} {}/{} not found; this rule allows nothing",
                        rule.kind, key.0, rule.name
                    ),
                ));
            }
        }
        st.set_resolved(stored.generation, unresolved);
        st
    }
}

// === impl Stored ===

impl<T: Clone> Stored<T> {
    fn new(generation: Option<i64>) -> Self {
        Stored {
            good: None,
            generation,
            problems: Vec::new(),
        }
    }

    /// Records a new version. A valid one replaces the served version (returned); an invalid
    /// one leaves the last good version in force and only changes the problems reported.
    fn update(
        &mut self,
        valid: Option<T>,
        generation: Option<i64>,
        problems: Vec<validate::Problem>,
    ) -> Option<T> {
        self.generation = generation;
        self.problems = problems;
        match valid {
            Some(v) => self.good.replace(v),
            None => None,
        }
    }
}

// === helpers ===

fn meta_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((
        meta.namespace
            .clone()
            .unwrap_or_else(|| switchyard_crds::DEFAULT_NAMESPACE.into()),
        meta.name.clone()?,
    ))
}

/// An object's namespace and name.
pub(crate) fn object_key(obj: &Object) -> Option<Key> {
    match obj {
        Object::Smi(o) => {
            let r = o.object_ref();
            Some((r.namespace, r.name))
        }
        Object::Service(o) => meta_key(&o.metadata),
        Object::EndpointSlice(o) => meta_key(&o.metadata),
        Object::Pod(o) => meta_key(&o.metadata),
        Object::ServiceAccount(o) => meta_key(&o.metadata),
    }
}

fn ns_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| switchyard_crds::DEFAULT_NAMESPACE.into())
}

/// The identity a TrafficTarget governs: its destination ServiceAccount, in its own namespace.
fn destination_of(ns: &str, tt: &TrafficTarget) -> Option<Identity> {
    let d = &tt.destination.subject;
    (d.kind == "ServiceAccount").then(|| Identity::new(ns, d.name.clone()))
}

/// Whether a (non-empty) Service selector selects a Pod with these labels.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn root_of(ns: &str, ts: &TrafficSplit) -> Option<ServiceName> {
    split::root_service_name(&ts.service, ns)
        .ok()
        .map(|n| ServiceName::new(ns, n))
}

/// Oldest first: creation time, then name (DESIGN §4, several splits for one root).
fn age_key(ts: &TrafficSplit) -> (Option<String>, String) {
    (
        ts.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        ts.metadata.name.clone().unwrap_or_default(),
    )
}

fn split_route_name(ts: &TrafficSplit) -> String {
    format!(
        "{}/{}",
        ns_of(&ts.metadata),
        ts.metadata.name.clone().unwrap_or_default()
    )
}

fn http_match(m: &switchyard_crds::specs::HttpMatch) -> HttpMatch {
    let mut methods: Vec<String> = m
        .methods
        .iter()
        .filter(|x| x.as_str() != "*")
        .cloned()
        .collect();
    if m.methods.iter().any(|x| x == "*") {
        methods.clear();
    }
    methods.sort();
    methods.dedup();
    HttpMatch {
        path_regex: m.path_regex.clone().filter(|p| !p.is_empty()),
        methods,
        headers: m
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect(),
    }
}

/// Application protocol from `appProtocol`, or failing that the port name's prefix (Istio's
/// convention, which Linkerd and OSM also read). Unknown ports are proxied as opaque TCP.
fn protocol_of(app_protocol: Option<&str>, name: Option<&str>) -> Protocol {
    let p = app_protocol.or(name).unwrap_or("").to_ascii_lowercase();
    if p == "grpc"
        || p == "http2"
        || p == "h2c"
        || p == "kubernetes.io/h2c"
        || p.starts_with("grpc-")
        || p.starts_with("http2-")
    {
        Protocol::Http2
    } else if p == "http" || p.starts_with("http-") {
        Protocol::Http
    } else {
        Protocol::Tcp
    }
}
