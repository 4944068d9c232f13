//! What the Traffic Metrics API needs of the index, as a snapshot: which Pods make up each
//! Deployment, StatefulSet, DaemonSet and Service, which of them are meshed, the routes each
//! meshed Pod's inbound HTTP ports count, and each TrafficSplit's apex and backends. Built by
//! [`Index::workloads`](super::Index::workloads) when these change and handed to whoever
//! answers the API, so that the answer stays sans-IO and never holds the index.
//!
//! # A Pod's workload
//!
//! The Pod's controller (`metadata.ownerReferences[]` with `controller: true`): a StatefulSet
//! or a DaemonSet directly; a Deployment through its ReplicaSet. ReplicaSets are not watched:
//! the Deployment controller names each ReplicaSet `<deployment>-<pod-template-hash>` and
//! labels its Pods `pod-template-hash: <hash>` (`kubectl` and the Deployment controller rely on
//! the same rule), so the Pod alone names its Deployment. Watching ReplicaSets instead would
//! cost a watch, the memory of every old revision a Deployment keeps (ten by default) and RBAC
//! on `replicasets` for one name the Pod already carries. A ReplicaSet made by hand has no
//! `pod-template-hash` label, so its Pods belong to no Deployment, which is right.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use switchyard_adapters::model::{ProxyConfig, ProxyId, RouteStatName, ServiceName};

use super::{Key, store::Store};

#[cfg(test)]
mod tests;

/// The label the Deployment controller puts on a ReplicaSet's Pods, the suffix of the
/// ReplicaSet's name.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The kinds of workload a Pod can belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// The workload a Pod belongs to, in the Pod's namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub kind: WorkloadKind,
    pub name: String,
}

impl Owner {
    /// The workload of a Pod with this metadata: its controller's, a ReplicaSet's Deployment by
    /// the `pod-template-hash` naming rule (see the module doc). `None` for a Pod without a
    /// controller, or whose controller is of another kind (a Job, a bare ReplicaSet).
    pub fn of(meta: &ObjectMeta) -> Option<Owner> {
        let controller = meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))?;
        let name = controller.name.clone();
        let (kind, name) = match (controller.api_version.as_str(), controller.kind.as_str()) {
            ("apps/v1", "StatefulSet") => (WorkloadKind::StatefulSet, name),
            ("apps/v1", "DaemonSet") => (WorkloadKind::DaemonSet, name),
            ("apps/v1", "ReplicaSet") => {
                let hash = meta.labels.as_ref()?.get(POD_TEMPLATE_HASH_LABEL)?;
                let deployment = name.strip_suffix(hash.as_str())?.strip_suffix('-')?;
                if deployment.is_empty() {
                    return None;
                }
                (WorkloadKind::Deployment, deployment.to_owned())
            }
            _ => return None,
        };
        Some(Owner { kind, name })
    }
}

/// A Pod as the lookup knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodEntry {
    pub owner: Option<Owner>,
    /// It runs a Switchyard proxy (in a cluster, the injector's annotation says so; in local
    /// mode every Pod does).
    pub meshed: bool,
    /// The routes its proxy is configured to count on its inbound HTTP ports (the named
    /// matches the TrafficTargets to its identity use: the inbound routes the index compiled
    /// into its configuration), whether or not any request took them; empty for a Pod without
    /// a proxy.
    pub routes: BTreeSet<RouteStatName>,
}

/// A TrafficSplit's apex and backends, as its last valid version says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The apex (root) Service's name, in the split's namespace.
    pub apex: String,
    pub backends: Vec<SplitBackend>,
}

/// One backend of a split: its Service (in the split's namespace) and weight as written (a
/// v1alpha1 quantity in thousandths when it has a fraction: `500m` is 500).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitBackend {
    pub service: String,
    pub weight: u32,
}

/// The snapshot: Pods (meshed or not) with their workload, the Pods behind each Service, and
/// the TrafficSplits. Empty by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workloads {
    pods: BTreeMap<ProxyId, PodEntry>,
    /// `(kind, namespace, name)` of each workload → its Pods: a list of workloads and each
    /// one's Pods without a scan of every Pod.
    owned: BTreeMap<(WorkloadKind, String, String), BTreeSet<ProxyId>>,
    /// Service → the Pods its EndpointSlices name (ready or not).
    services: BTreeMap<ServiceName, BTreeSet<ProxyId>>,
    splits: BTreeMap<Key, Split>,
}

impl Workloads {
    /// Adds a Pod (replacing what was known of it).
    pub fn insert_pod(&mut self, pod: ProxyId, entry: PodEntry) {
        let key = |ns: &str, o: &Owner| (o.kind, ns.to_owned(), o.name.clone());
        if let Some(o) = entry.owner.as_ref() {
            self.owned
                .entry(key(&pod.namespace, o))
                .or_default()
                .insert(pod.clone());
        }
        let old = self.pods.insert(pod.clone(), entry);
        if let Some(o) = old.and_then(|e| e.owner)
            && self.pods.get(&pod).and_then(|e| e.owner.as_ref()) != Some(&o)
            && let Some(set) = self.owned.get_mut(&key(&pod.namespace, &o))
        {
            set.remove(&pod);
            if set.is_empty() {
                self.owned.remove(&key(&pod.namespace, &o));
            }
        }
    }

    /// Adds a Service with the Pods behind it.
    pub fn insert_service(
        &mut self,
        service: ServiceName,
        pods: impl IntoIterator<Item = ProxyId>,
    ) {
        self.services.entry(service).or_default().extend(pods);
    }

    /// Adds a TrafficSplit.
    pub fn insert_split(&mut self, namespace: &str, name: &str, split: Split) {
        self.splits
            .insert((namespace.to_owned(), name.to_owned()), split);
    }

    /// Every Pod known, in name order.
    pub fn pods(&self) -> impl Iterator<Item = (&ProxyId, &PodEntry)> {
        self.pods.iter()
    }

    /// One Pod.
    pub fn pod(&self, pod: &ProxyId) -> Option<&PodEntry> {
        self.pods.get(pod)
    }

    /// The workloads of a kind, in a namespace or all, in (namespace, name) order.
    pub fn workloads(&self, kind: WorkloadKind, namespace: Option<&str>) -> Vec<(String, String)> {
        let start = (
            kind,
            namespace.unwrap_or_default().to_owned(),
            String::new(),
        );
        self.owned
            .range(start..)
            .map(|((k, ns, name), _)| (k, ns, name))
            .take_while(|(k, ns, _)| **k == kind && namespace.is_none_or(|n| *ns == n))
            .map(|(_, ns, name)| (ns.clone(), name.clone()))
            .collect()
    }

    /// The Pods of one workload, in name order; empty when none is known.
    pub fn pods_of(&self, kind: WorkloadKind, namespace: &str, name: &str) -> Vec<&ProxyId> {
        self.owned
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .into_iter()
            .flatten()
            .collect()
    }

    /// The Services, in a namespace or all.
    pub fn services(&self, namespace: Option<&str>) -> Vec<&ServiceName> {
        self.services
            .keys()
            .filter(|s| namespace.is_none_or(|ns| s.namespace == ns))
            .collect()
    }

    /// The Pods behind a Service; `None` when the Service is not known.
    pub fn service_pods(&self, namespace: &str, name: &str) -> Option<&BTreeSet<ProxyId>> {
        self.services.get(&ServiceName::new(namespace, name))
    }

    /// The TrafficSplits, in a namespace or all: `(namespace, name)` and the split.
    pub fn splits(&self, namespace: Option<&str>) -> Vec<(&Key, &Split)> {
        self.splits
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|n| ns == n))
            .collect()
    }

    /// One TrafficSplit.
    pub fn split(&self, namespace: &str, name: &str) -> Option<&Split> {
        self.splits.get(&(namespace.to_owned(), name.to_owned()))
    }
}

/// The routes a proxy's configuration counts, on every inbound port: the names of the
/// [`InboundRoute`](switchyard_adapters::model::InboundRoute)s the index compiled for its xDS,
/// so that what the API lists and what the proxy counts have one definition.
pub(super) fn configured_routes(proxy: &ProxyConfig) -> BTreeSet<RouteStatName> {
    proxy
        .inbound
        .iter()
        .flat_map(|port| port.routes.iter().map(|r| r.name.clone()))
        .collect()
}

/// The snapshot of what `store` holds, with each meshed Pod's routes from `proxies` (the
/// index's published configuration of each Pod in `store`).
pub(super) fn snapshot(store: &Store, proxies: &BTreeMap<ProxyId, ProxyConfig>) -> Workloads {
    let mut out = Workloads::default();
    let id = |(ns, pod): &Key| ProxyId {
        namespace: ns.clone(),
        pod: pod.clone(),
    };
    for (key, info) in &store.pods {
        let pod = id(key);
        let routes = proxies.get(&pod).map(configured_routes).unwrap_or_default();
        out.insert_pod(
            pod,
            PodEntry {
                owner: info.owner.clone(),
                meshed: true,
                routes,
            },
        );
    }
    for (key, owner) in &store.unmeshed_pods {
        // A Pod is either; should both be recorded, its proxy wins.
        if out.pod(&id(key)).is_none() {
            out.insert_pod(
                id(key),
                PodEntry {
                    owner: owner.clone(),
                    meshed: false,
                    routes: BTreeSet::new(),
                },
            );
        }
    }
    for name in store.services.keys() {
        let pods = store
            .refs
            .slices_by_service
            .get(name)
            .filter_map(|slice| store.slices.get(slice))
            .flat_map(|slice| slice.endpoints.iter().filter_map(|e| e.pod.clone()))
            .map(|pod| ProxyId {
                namespace: name.namespace.clone(),
                pod,
            })
            .collect::<Vec<_>>();
        out.insert_service(name.clone(), pods);
    }
    for ((ns, name), stored) in &store.splits {
        let Some(ts) = &stored.good else { continue };
        let Some(apex) = super::store::root_of(ns, ts) else {
            continue;
        };
        let weights: Vec<switchyard_crds::Decimal> = ts
            .backends
            .iter()
            .map(|b| b.weight.map_or(switchyard_crds::Decimal::ZERO, |w| w.0))
            .collect();
        let ints = switchyard_crds::weight::integer_weights(&weights).unwrap_or_default();
        let backends = ts
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| SplitBackend {
                service: b.service.clone(),
                weight: ints
                    .get(i)
                    .map_or(0, |w| u32::try_from(*w).unwrap_or(u32::MAX)),
            })
            .collect();
        out.insert_split(
            ns,
            name,
            Split {
                apex: apex.name,
                backends,
            },
        );
    }
    out
}
