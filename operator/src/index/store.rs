//! What the index was told: the Kubernetes and SMI objects it stores (SMI objects as their last
//! valid version, with the problems of the newest), the reverse references between them, and
//! the queries resolution shares (which splits a root has, which Pods a selector picks).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use switchyard_adapters::model::{
    DataPlane, HttpMatch, Identity, MeshSettings, Protocol, ServiceName, UnknownDataPlane,
};
use switchyard_crds::{
    Kind,
    access::TrafficTarget,
    specs::{HttpRouteGroup, PortMatch},
    split::{self, TrafficSplit},
    validate,
};

use super::{Key, ObjectKind, refs::Refs, workloads::Owner};

/// Every stored object, by kind, and the references between them. Resolution reads it through
/// `&Store`; only ingest (`ingest.rs`) writes it.
#[derive(Debug)]
pub(super) struct Store {
    pub(super) settings: MeshSettings,
    pub(super) services: BTreeMap<ServiceName, ServiceInfo>,
    pub(super) slices: BTreeMap<Key, SliceInfo>,
    pub(super) pods: BTreeMap<Key, PodInfo>,
    pub(super) service_accounts: BTreeSet<Key>,
    /// Pods without a proxy (a cluster's Pods the injector left alone), with their workload:
    /// only for the Traffic Metrics API's `MESHED` count, never resolved into configuration.
    pub(super) unmeshed_pods: BTreeMap<Key, Option<Owner>>,
    pub(super) splits: BTreeMap<Key, Stored<TrafficSplit>>,
    pub(super) targets: BTreeMap<Key, Stored<TrafficTarget>>,
    pub(super) groups: BTreeMap<Key, Stored<HttpRouteGroup>>,
    pub(super) tcp_routes: BTreeMap<Key, Stored<PortMatch>>,
    pub(super) udp_routes: BTreeMap<Key, Stored<PortMatch>>,
    pub(super) refs: Refs,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct ServiceInfo {
    pub(super) cluster_ip: Option<IpAddr>,
    pub(super) selector: BTreeMap<String, String>,
    pub(super) ports: Vec<ServicePort>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct ServicePort {
    pub(super) name: Option<String>,
    pub(super) port: u16,
    pub(super) target: TargetPort,
    pub(super) protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct SliceInfo {
    pub(super) service: String,
    /// Port name (empty when unnamed) → port number.
    pub(super) ports: Vec<(String, u16)>,
    pub(super) endpoints: Vec<SliceEndpoint>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct SliceEndpoint {
    pub(super) addresses: Vec<IpAddr>,
    pub(super) ready: bool,
    pub(super) pod: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct PodInfo {
    pub(super) service_account: String,
    /// `status.podIP`: where the pod's sidecar listens (a loopback address in local mode).
    pub(super) ip: Option<IpAddr>,
    pub(super) labels: BTreeMap<String, String>,
    /// Container ports by name, to resolve named target ports.
    pub(super) named_ports: BTreeMap<String, u16>,
    /// The [`DATA_PLANE_ANNOTATION`], when present: the data plane, or the value that is not one.
    pub(super) data_plane: Option<Result<DataPlane, UnknownDataPlane>>,
    /// [`INTERCEPTED_ANNOTATION`](super::INTERCEPTED_ANNOTATION) is `true`: redirect rules
    /// send the Pod's traffic through its proxy, which routes by original destination.
    pub(super) intercepted: bool,
    /// [`TAP_ANNOTATION`](super::TAP_ANNOTATION) is `disabled`: the Pod's proxy is never tapped.
    pub(super) tap_disabled: bool,
    /// The workload the Pod belongs to ([`Owner::of`]).
    pub(super) owner: Option<Owner>,
}

/// An SMI object as last applied, and the last version of it that was valid.
#[derive(Clone, Debug)]
pub(super) struct Stored<T> {
    /// Served: the newest version without errors. `None` until one arrives.
    pub(super) good: Option<T>,
    pub(super) generation: Option<i64>,
    /// Validation problems of the newest version, as status messages.
    pub(super) problems: Vec<validate::Problem>,
}

// === impl Store ===

impl Store {
    pub(super) fn new(settings: MeshSettings) -> Self {
        Store {
            settings,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            pods: BTreeMap::new(),
            service_accounts: BTreeSet::new(),
            unmeshed_pods: BTreeMap::new(),
            splits: BTreeMap::new(),
            targets: BTreeMap::new(),
            groups: BTreeMap::new(),
            tcp_routes: BTreeMap::new(),
            udp_routes: BTreeMap::new(),
            refs: Refs::default(),
        }
    }

    pub(super) fn keys_of(&self, kind: ObjectKind) -> Vec<Key> {
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

    /// Pods in `namespace` whose labels satisfy `selector` (an empty selector selects none).
    pub(super) fn pods_selected_by(
        &self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> Vec<Key> {
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

    /// Splits for a root: those with `matches` (oldest first) and the winning catch-all.
    pub(super) fn splits_for(
        &self,
        root: &ServiceName,
    ) -> (Vec<&TrafficSplit>, Option<&TrafficSplit>) {
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
}

// === impl Stored ===

impl<T: Clone> Stored<T> {
    pub(super) fn new(generation: Option<i64>) -> Self {
        Stored {
            good: None,
            generation,
            problems: Vec::new(),
        }
    }

    /// Records a new version. A valid one replaces the served version (returned); an invalid
    /// one leaves the last good version in force and only changes the problems reported.
    pub(super) fn update(
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

pub(super) fn ns_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| switchyard_crds::DEFAULT_NAMESPACE.into())
}

/// The identity a TrafficTarget governs: its destination ServiceAccount, in its own namespace.
pub(super) fn destination_of(ns: &str, tt: &TrafficTarget) -> Option<Identity> {
    let d = &tt.destination.subject;
    (d.kind == "ServiceAccount").then(|| Identity::new(ns, d.name.clone()))
}

/// Whether a (non-empty) Service selector selects a Pod with these labels.
pub(super) fn selects(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub(super) fn root_of(ns: &str, ts: &TrafficSplit) -> Option<ServiceName> {
    split::root_service_name(&ts.service, ns)
        .ok()
        .map(|n| ServiceName::new(ns, n))
}

/// Oldest first: creation time, then name (DESIGN §4, several splits for one root).
pub(super) fn age_key(ts: &TrafficSplit) -> (Option<String>, String) {
    (
        ts.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        ts.metadata.name.clone().unwrap_or_default(),
    )
}

pub(super) fn http_match(m: &switchyard_crds::specs::HttpMatch) -> HttpMatch {
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
