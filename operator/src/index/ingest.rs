//! Kubernetes and SMI objects into the store: each apply or delete updates the stored object and
//! its reverse references, and marks what it can affect (Services, Pods, statuses) for the next
//! recomputation. Nothing is resolved here.

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use switchyard_adapters::model::{Identity, Protocol, ServiceName};
use switchyard_crds::{
    Kind, ObjectRef, SmiObject,
    access::TrafficTarget,
    split::TrafficSplit,
    validate::{self, Severity},
};

use super::{
    DATA_PLANE_ANNOTATION, INTERCEPTED_ANNOTATION, Index, Key, Object, ObjectKind, ObjectStatus,
    store::{
        PodInfo, ServiceInfo, ServicePort, SliceEndpoint, SliceInfo, Stored, TargetPort,
        destination_of, root_of,
    },
    workloads::Owner,
};

// === impl Index ===

impl Index {
    pub(super) fn apply_one(&mut self, obj: Object) {
        self.touch_workloads(obj.kind());
        match obj {
            Object::Service(svc) => self.apply_service(&svc),
            Object::EndpointSlice(slice) => self.apply_slice(&slice),
            Object::Pod(pod) => self.apply_pod(&pod),
            Object::ServiceAccount(sa) => {
                if let Some(key) = meta_key(&sa.metadata) {
                    self.store.service_accounts.insert(key);
                }
            }
            Object::Smi(smi) => self.apply_smi(*smi),
        }
    }

    pub(super) fn delete_one(&mut self, kind: ObjectKind, namespace: &str, name: &str) {
        self.touch_workloads(kind);
        let key = (namespace.to_string(), name.to_string());
        match kind {
            ObjectKind::Service => {
                let svc = ServiceName::new(namespace, name);
                self.set_service(svc, None);
            }
            ObjectKind::EndpointSlice => self.set_slice(key, None),
            ObjectKind::Pod => self.set_pod(key, None),
            ObjectKind::ServiceAccount => {
                self.store.service_accounts.remove(&key);
            }
            ObjectKind::Smi(k) => {
                match k {
                    Kind::TrafficSplit => {
                        if let Some(old) = self.store.splits.remove(&key).and_then(|s| s.good) {
                            self.index_split(&key, &old, false);
                        }
                    }
                    Kind::TrafficTarget => {
                        if let Some(old) = self.store.targets.remove(&key).and_then(|s| s.good) {
                            self.index_target(&key, &old, false);
                        }
                    }
                    Kind::HttpRouteGroup => {
                        self.store.groups.remove(&key);
                        self.mark_route(&key, true);
                    }
                    Kind::TcpRoute => {
                        self.store.tcp_routes.remove(&key);
                        self.mark_route(&key, false);
                    }
                    Kind::UdpRoute => {
                        self.store.udp_routes.remove(&key);
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
        if self.store.services.get(&name) == info.as_ref() {
            return;
        }
        let old = match info {
            Some(info) => self.store.services.insert(name.clone(), info),
            None => self.store.services.remove(&name),
        };
        // Unlink the old version before linking the new, so references both share survive.
        if let Some(old) = old {
            self.index_service(&name, &old, false);
        }
        if let Some(new) = self.store.services.get(&name).cloned() {
            self.index_service(&name, &new, true);
        }
        self.mark_service(&name);
    }

    fn index_service(&mut self, name: &ServiceName, info: &ServiceInfo, present: bool) {
        for (k, v) in &info.selector {
            let label = (name.namespace.clone(), k.clone(), v.clone());
            self.store
                .refs
                .services_by_selector
                .set(label, name.clone(), present);
        }
        // The Pods it selects serve (or stop serving) its ports.
        let pods = self.store.pods_selected_by(&name.namespace, &info.selector);
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
        if self.store.slices.get(&key) == info.as_ref() {
            return;
        }
        let old = match info {
            Some(info) => self.store.slices.insert(key.clone(), info),
            None => self.store.slices.remove(&key),
        };
        if let Some(old) = old {
            self.index_slice(&key, &old, false);
        }
        if let Some(new) = self.store.slices.get(&key).cloned() {
            self.index_slice(&key, &new, true);
        }
    }

    fn index_slice(&mut self, key: &Key, info: &SliceInfo, present: bool) {
        let service = ServiceName::new(key.0.clone(), info.service.clone());
        self.store
            .refs
            .slices_by_service
            .set(service.clone(), key.clone(), present);
        for pod in info.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
            self.store
                .refs
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
            intercepted: pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(INTERCEPTED_ANNOTATION))
                .is_some_and(|v| v == "true"),
            tap_disabled: pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(super::TAP_ANNOTATION))
                .is_some_and(|v| v == "disabled"),
            owner: Owner::of(&pod.metadata),
        };
        self.set_pod(key, Some(info));
    }

    fn set_pod(&mut self, key: Key, info: Option<PodInfo>) {
        if self.store.pods.get(&key) == info.as_ref() {
            return;
        }
        let identity_changed = self.store.pods.get(&key).map(|p| &p.service_account)
            != info.as_ref().map(|p| &p.service_account);
        let old = match info {
            Some(info) => self.store.pods.insert(key.clone(), info),
            None => self.store.pods.remove(&key),
        };
        if let Some(old) = old {
            self.index_pod(&key, &old, false);
        }
        if let Some(new) = self.store.pods.get(&key).cloned() {
            self.index_pod(&key, &new, true);
        }
        self.dirty.pods.insert(key.clone());
        if identity_changed {
            // Endpoints carry their Pod's identity.
            let services: Vec<ServiceName> = self
                .store
                .refs
                .slices_by_pod
                .get(&key)
                .filter_map(|s| {
                    let slice = self.store.slices.get(s)?;
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
        self.store
            .refs
            .pods_by_identity
            .set(identity, key.clone(), present);
        for (k, v) in &info.labels {
            let label = (key.0.clone(), k.clone(), v.clone());
            self.store
                .refs
                .pods_by_label
                .set(label, key.clone(), present);
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
                    .store
                    .splits
                    .entry(key.clone())
                    .or_insert_with(|| Stored::new(generation));
                if let Some(old) = stored.update(valid.then_some(ts), generation, problems) {
                    self.index_split(&key, &old, false);
                }
                if let Some(new) = self.store.splits.get(&key).and_then(|s| s.good.clone()) {
                    self.index_split(&key, &new, true);
                }
                self.dirty.splits.insert(key);
            }
            SmiObject::TrafficTarget(tt) => {
                let stored = self
                    .store
                    .targets
                    .entry(key.clone())
                    .or_insert_with(|| Stored::new(generation));
                if let Some(old) = stored.update(valid.then_some(tt), generation, problems) {
                    self.index_target(&key, &old, false);
                }
                if let Some(new) = self.store.targets.get(&key).and_then(|s| s.good.clone()) {
                    self.index_target(&key, &new, true);
                }
                self.dirty.targets.insert(key);
            }
            SmiObject::HttpRouteGroup(g) => {
                let stored = self
                    .store
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
                    .store
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
                    .store
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

    /// Links (or unlinks) a served split's references, marking its root.
    fn index_split(&mut self, key: &Key, ts: &TrafficSplit, present: bool) {
        let ns = &key.0;
        if let Some(root) = root_of(ns, ts) {
            self.dirty.services.insert(root.clone());
            self.store
                .refs
                .splits_by_root
                .set(root, key.clone(), present);
        }
        for b in &ts.backends {
            let svc = ServiceName::new(ns.clone(), b.service.clone());
            self.store
                .refs
                .splits_by_backend
                .set(svc, key.clone(), present);
        }
        for m in &ts.matches {
            let group = (ns.clone(), m.name.clone());
            self.store
                .refs
                .splits_by_group
                .set(group, key.clone(), present);
        }
    }

    /// Links (or unlinks) a served target's references, marking the Pods it governs.
    fn index_target(&mut self, key: &Key, tt: &TrafficTarget, present: bool) {
        if let Some(destination) = destination_of(&key.0, tt) {
            self.mark_identity(&destination);
            self.store
                .refs
                .targets_by_destination
                .set(destination, key.clone(), present);
        }
        for rule in &tt.rules {
            let route = (key.0.clone(), rule.name.clone());
            self.store
                .refs
                .targets_by_route
                .set(route, key.clone(), present);
        }
    }

    /// A Service (or its endpoints) changed: it and every root that uses it as a backend.
    fn mark_service(&mut self, svc: &ServiceName) {
        self.dirty.services.insert(svc.clone());
        let roots: Vec<ServiceName> = self
            .store
            .refs
            .splits_by_backend
            .get(svc)
            .filter_map(|key| root_of(&key.0, self.store.splits.get(key)?.good.as_ref()?))
            .collect();
        self.dirty.services.extend(roots);
    }

    /// A route object changed: the targets naming it, their Pods, and (for an HTTPRouteGroup)
    /// the roots of the splits naming it.
    fn mark_route(&mut self, route: &Key, http: bool) {
        if http {
            let roots: Vec<ServiceName> = self
                .store
                .refs
                .splits_by_group
                .get(route)
                .filter_map(|key| root_of(&key.0, self.store.splits.get(key)?.good.as_ref()?))
                .collect();
            self.dirty.services.extend(roots);
        }
        let targets: Vec<Key> = self
            .store
            .refs
            .targets_by_route
            .get(route)
            .cloned()
            .collect();
        for key in targets {
            let destination = self
                .store
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
        let pods: Vec<Key> = self
            .store
            .refs
            .pods_by_identity
            .get(identity)
            .cloned()
            .collect();
        self.dirty.pods.extend(pods);
    }
}

// === helpers ===

pub(super) fn meta_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<Key> {
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

/// Application protocol from `appProtocol`, or failing that the port name's prefix (Istio's
/// convention, which Linkerd and OSM also read): `tcp` declares opaque TCP; anything else is
/// [`Protocol::Unknown`] (TCP, with HTTP detected on intercepted connections).
pub(super) fn protocol_of(app_protocol: Option<&str>, name: Option<&str>) -> Protocol {
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
    } else if p == "tcp" || p.starts_with("tcp-") {
        Protocol::Tcp
    } else {
        Protocol::Unknown
    }
}
