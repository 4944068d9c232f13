//! The SMI Traffic Metrics API (`metrics.smi-spec.io/v1alpha1`) on the wire: which request a
//! path asks for, and the objects it answers with. Sans-IO: the aggregated API server hands a
//! path and query in, gets a [`Request`] or a [`RequestError`] (as a Kubernetes `Status`), and
//! serializes what the metric windows answer.
//!
//! ```text
//!   kubectl get --raw /apis/metrics.smi-spec.io/v1alpha1/namespaces/demo/deployments/web/edges?t=1m
//!        │ the API server authenticates, authorizes (RBAC on metrics.smi-spec.io) and proxies
//!        ▼
//!   Request::parse ──► Request::Edges { kind: Deployment, namespace, name, window: 60 s }
//!        │ the windows answer with GoldenMetrics per edge
//!        ▼
//!   TrafficMetricsList { resource, items: [TrafficMetrics { edge, window, metrics }] }
//! ```
//!
//! # Where the spec and the SDK disagree
//!
//! The spec (`apis/traffic-metrics/v1alpha1/traffic-metrics.md`) writes latencies with unit
//! `seconds` and an `edge.side`, and a `backend` for TrafficSplits; the Go SDK's `v1alpha1`
//! package has neither `side` nor `backend` and writes the unit `ms`. Switchyard follows the
//! spec: unit `seconds`, values as Kubernetes quantities of seconds (`"12m"` is 12 ms, `"250u"`
//! 250 µs), `side` always set, `backend` on TrafficSplit items. Counts are plain integers.
//!
//! # Beyond the spec: annotations
//!
//! The spec's metric names are exactly five; Switchyard's other figures ride on each item's
//! `metadata.annotations`, where a client that knows only the spec ignores them:
//!
//! | annotation | on | value |
//! |---|---|---|
//! | [`metrics.switchyard.dev/pods`](PODS_ANNOTATION) | Pods, workloads, Services, namespaces | the resource's Pods, meshed or not |
//! | [`metrics.switchyard.dev/meshed-pods`](MESHED_PODS_ANNOTATION) | the same | those of them that run a proxy |
//! | [`metrics.switchyard.dev/p95-response-latency`](P95_LATENCY_ANNOTATION) | every item with a latency | the 95th percentile, a quantity of seconds as the spec's latencies |
//! | [`metrics.switchyard.dev/tcp-open-connections`](TCP_OPEN_CONNECTIONS_ANNOTATION) | every item | TCP connections open at the end of the window (not opened in it) |
//! | [`metrics.switchyard.dev/partial`](PARTIAL_ANNOTATION) | the answer (a list, or the item) | only when an operator replica's windows are missing from it: which and why |
//! | [`metrics.switchyard.dev/route`](ROUTE_ANNOTATION) | `/routes` items | the route: `<route group>/<match>`, or `[DEFAULT]` |
//!
//! # Beyond the spec: `edges`
//!
//! `/apis/metrics.smi-spec.io/v1alpha1/edges?t=1m[&namespace=NS]` answers Switchyard's view of
//! who talks to whom, with identities and mTLS ([`crate::edges`], an
//! [`EdgeList`](crate::edges::EdgeList)), for `switchyard edges`. It is not in discovery (an
//! SMI client sees the spec's resources only); the API server authorizes it as `list` on
//! resource `edges` of the group, cluster-wide, which `switchyard-metrics-reader` grants.
//!
//! # Beyond the spec: routes
//!
//! The spec has no route kind. Switchyard serves `/namespaces/{ns}/{resource}/{name}/routes` for
//! Pods, workloads and Services ([`Request::Routes`]): a `TrafficMetricsList` with one item per
//! route of the object's Pods (a named match of an HTTPRouteGroup that a TrafficTarget to them
//! uses), then `[DEFAULT]`, as Linkerd's `viz routes` shows them: every route configured on
//! the Pods, with zero counts when none of its requests came in the window, and any other
//! route their proxies counted in the window (one just removed from the configuration);
//! discovery lists `{resource}/routes` beside `{resource}/edges`.

#[cfg(test)]
mod tests;

use std::{fmt, time::Duration};

use serde::Serialize;
use switchyard_adapters::model::ProxyId;

use crate::{
    index::{
        WorkloadKind, Workloads,
        workloads::{Split, SplitBackend},
    },
    telemetry::Snapshot,
};

/// The API group.
pub const GROUP: &str = "metrics.smi-spec.io";
/// The one version served.
pub const VERSION: &str = "v1alpha1";
/// The longest window the metrics are kept for (the windows' own bound); a longer `?t=` is
/// refused.
pub use crate::telemetry::window::MAX_WINDOW;
/// The window when the request gives no `?t=`, as smi-metrics defaults it.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// The kinds metrics are served for: Pods, the workloads and Services made of Pods, namespaces,
/// and TrafficSplits (per backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    Namespace,
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    Service,
    TrafficSplit,
}

impl ResourceKind {
    /// Every kind, in the order discovery lists them.
    pub const ALL: [ResourceKind; 7] = [
        ResourceKind::Namespace,
        ResourceKind::Pod,
        ResourceKind::Deployment,
        ResourceKind::StatefulSet,
        ResourceKind::DaemonSet,
        ResourceKind::Service,
        ResourceKind::TrafficSplit,
    ];

    /// The resource name in paths (`deployments`).
    pub fn plural(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "namespaces",
            ResourceKind::Pod => "pods",
            ResourceKind::Deployment => "deployments",
            ResourceKind::StatefulSet => "statefulsets",
            ResourceKind::DaemonSet => "daemonsets",
            ResourceKind::Service => "services",
            ResourceKind::TrafficSplit => "trafficsplits",
        }
    }

    /// The kind in object references (`Deployment`).
    pub fn kind(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "Namespace",
            ResourceKind::Pod => "Pod",
            ResourceKind::Deployment => "Deployment",
            ResourceKind::StatefulSet => "StatefulSet",
            ResourceKind::DaemonSet => "DaemonSet",
            ResourceKind::Service => "Service",
            ResourceKind::TrafficSplit => "TrafficSplit",
        }
    }

    /// Whether objects of the kind live in a namespace (all but namespaces).
    pub fn namespaced(self) -> bool {
        self != ResourceKind::Namespace
    }

    /// The workload kind, for the kinds Pods belong to through their controller.
    pub fn workload(self) -> Option<WorkloadKind> {
        match self {
            ResourceKind::Deployment => Some(WorkloadKind::Deployment),
            ResourceKind::StatefulSet => Some(WorkloadKind::StatefulSet),
            ResourceKind::DaemonSet => Some(WorkloadKind::DaemonSet),
            _ => None,
        }
    }

    /// Whether `/routes` is served for the kind: the kinds made of Pods that serve (not
    /// namespaces, not TrafficSplits).
    pub fn has_routes(self) -> bool {
        matches!(
            self,
            ResourceKind::Pod
                | ResourceKind::Deployment
                | ResourceKind::StatefulSet
                | ResourceKind::DaemonSet
                | ResourceKind::Service
        )
    }

    fn from_plural(plural: &str) -> Option<ResourceKind> {
        ResourceKind::ALL.into_iter().find(|k| k.plural() == plural)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plural())
    }
}

/// What a request asks for. Paths are relative to `/apis/metrics.smi-spec.io/v1alpha1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `/`: the `APIResourceList` (the aggregator's availability check reads it too).
    Discovery,
    /// `/{resource}` (every namespace) or `/namespaces/{ns}/{resource}`: one item per object.
    List {
        kind: ResourceKind,
        namespace: Option<String>,
        window: Duration,
    },
    /// `/namespaces/{name}` or `/namespaces/{ns}/{resource}/{name}`: one object's metrics.
    Get {
        kind: ResourceKind,
        namespace: Option<String>,
        name: String,
        window: Duration,
    },
    /// The same with `/edges`: one item per peer the object exchanged traffic with.
    Edges {
        kind: ResourceKind,
        namespace: Option<String>,
        name: String,
        window: Duration,
    },
    /// `/edges[?namespace=]`, Switchyard's beside the spec's: who talks to whom, with
    /// identities and mTLS, as `switchyard edges` shows it ([`crate::edges`]): an
    /// [`EdgeList`](crate::edges::EdgeList) of the edges with an end in `namespace` (every edge
    /// without).
    MeshEdges {
        namespace: Option<String>,
        window: Duration,
    },
    /// Switchyard's extension, `/namespaces/{ns}/{resource}/{name}/routes` for Pods, workloads
    /// and Services: one item per route configured on the object's Pods or counted by their
    /// proxies in the window, a configured route without traffic with zero counts (see
    /// [`ROUTE_ANNOTATION`]), then [`DEFAULT_ROUTE`].
    Routes {
        kind: ResourceKind,
        namespace: String,
        name: String,
        window: Duration,
    },
}

/// Whose series an answer reads: every proxy's, or those of one namespace's Pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxies<'a> {
    All,
    Namespace(&'a str),
}

impl Proxies<'_> {
    /// Whether `proxy` is one of them.
    pub fn contains(&self, proxy: &ProxyId) -> bool {
        match self {
            Proxies::All => true,
            Proxies::Namespace(ns) => proxy.namespace == *ns,
        }
    }
}

/// Why a request cannot be answered; the HTTP status and a message naming the part at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the path {path:?} is not under /apis/{GROUP}/{VERSION}")]
    OutsideGroup { path: String },
    #[error("{what:?} is not a resource of {GROUP}/{VERSION}")]
    UnknownResource { what: String },
    #[error("the path {path:?} names no resource, object or edges of {GROUP}/{VERSION}")]
    UnknownPath { path: String },
    #[error("{kind} {name:?} is not known to the mesh")]
    Unknown { kind: ResourceKind, name: String },
    #[error("{kind} {name:?} has no metrics: no proxy of it pushed any")]
    NoMetrics { kind: ResourceKind, name: String },
    #[error("query parameter t={value:?}: {reason}")]
    Window { value: String, reason: String },
}

impl RequestError {
    /// The HTTP status: 404 for what does not exist, 400 for a bad window.
    pub fn status(&self) -> http::StatusCode {
        match self {
            RequestError::Window { .. } => http::StatusCode::BAD_REQUEST,
            _ => http::StatusCode::NOT_FOUND,
        }
    }

    /// The Kubernetes `Status` object `kubectl` prints the message of.
    pub fn to_status(&self) -> serde_json::Value {
        crate::api_status::failure(self.status(), &self.to_string())
    }
}

impl Request {
    /// Parses a path (with the `/apis/metrics.smi-spec.io/v1alpha1` prefix, as the aggregator
    /// forwards it) and its query string (without the `?`).
    ///
    /// # Errors
    ///
    /// The path is outside the group, names an unknown resource or shape, or `t` is not a
    /// duration in (0, [`MAX_WINDOW`]].
    pub fn parse(path: &str, query: Option<&str>) -> Result<Request, RequestError> {
        let prefix = format!("/apis/{GROUP}/{VERSION}");
        let rest = path
            .strip_prefix(&prefix)
            .ok_or_else(|| RequestError::OutsideGroup {
                path: path.to_owned(),
            })?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(RequestError::OutsideGroup {
                path: path.to_owned(),
            });
        }
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        let window = window(query)?;
        let kind = |plural: &str| {
            ResourceKind::from_plural(plural).ok_or_else(|| RequestError::UnknownResource {
                what: plural.to_owned(),
            })
        };
        let namespaced = |k: ResourceKind| {
            if k.namespaced() {
                Ok(k)
            } else {
                Err(RequestError::UnknownPath {
                    path: path.to_owned(),
                })
            }
        };
        let owned = |s: &str| s.to_owned();
        match parts.as_slice() {
            [] => Ok(Request::Discovery),
            ["edges"] => Ok(Request::MeshEdges {
                namespace: query
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .find_map(|pair| pair.strip_prefix("namespace="))
                    .filter(|ns| !ns.is_empty())
                    .map(owned),
                window,
            }),
            [plural] => Ok(Request::List {
                kind: kind(plural)?,
                namespace: None,
                window,
            }),
            ["namespaces", name] => Ok(Request::Get {
                kind: ResourceKind::Namespace,
                namespace: None,
                name: owned(name),
                window,
            }),
            ["namespaces", name, "edges"] => Ok(Request::Edges {
                kind: ResourceKind::Namespace,
                namespace: None,
                name: owned(name),
                window,
            }),
            ["namespaces", ns, plural] => Ok(Request::List {
                kind: namespaced(kind(plural)?)?,
                namespace: Some(owned(ns)),
                window,
            }),
            ["namespaces", ns, plural, name] => Ok(Request::Get {
                kind: namespaced(kind(plural)?)?,
                namespace: Some(owned(ns)),
                name: owned(name),
                window,
            }),
            ["namespaces", ns, plural, name, "routes"] => {
                let kind = kind(plural)?;
                if !kind.has_routes() {
                    return Err(RequestError::UnknownPath {
                        path: path.to_owned(),
                    });
                }
                Ok(Request::Routes {
                    kind,
                    namespace: owned(ns),
                    name: owned(name),
                    window,
                })
            }
            ["namespaces", ns, plural, name, "edges"] => Ok(Request::Edges {
                kind: namespaced(kind(plural)?)?,
                namespace: Some(owned(ns)),
                name: owned(name),
                window,
            }),
            _ => Err(RequestError::UnknownPath {
                path: path.to_owned(),
            }),
        }
    }
}

impl Request {
    /// The window asked for; `None` for discovery.
    pub fn window(&self) -> Option<Duration> {
        match self {
            Request::Discovery => None,
            Request::List { window, .. }
            | Request::Get { window, .. }
            | Request::Edges { window, .. }
            | Request::Routes { window, .. }
            | Request::MeshEdges { window, .. } => Some(*window),
        }
    }

    /// Whose series the answer reads: one namespace's Pods for what lives in a namespace,
    /// every proxy for the rest (a TrafficSplit's callers, and an edge's client, may be in any
    /// namespace).
    pub fn proxies(&self) -> Proxies<'_> {
        match self {
            Request::Get {
                kind: ResourceKind::Namespace,
                name,
                ..
            }
            | Request::Edges {
                kind: ResourceKind::Namespace,
                name,
                ..
            } => Proxies::Namespace(name),
            Request::List {
                kind,
                namespace: Some(ns),
                ..
            }
            | Request::Get {
                kind,
                namespace: Some(ns),
                ..
            }
            | Request::Edges {
                kind,
                namespace: Some(ns),
                ..
            } if *kind != ResourceKind::TrafficSplit => Proxies::Namespace(ns),
            // A route is the server's: only its own Pods' proxies count it.
            Request::Routes { namespace, .. } => Proxies::Namespace(namespace),
            _ => Proxies::All,
        }
    }
}

/// The `t` query parameter, a Go duration (`30s`, `1m`, `1m30s`, `500ms`, `1h`); the default
/// when absent.
fn window(query: Option<&str>) -> Result<Duration, RequestError> {
    let Some(value) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("t="))
    else {
        return Ok(DEFAULT_WINDOW);
    };
    let bad = |reason: &str| RequestError::Window {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let window = go_duration(value).ok_or_else(|| {
        bad("not a duration: a number and a unit (h, m, s, ms), repeated, as 1m30s")
    })?;
    if window.is_zero() {
        return Err(bad("the window must be longer than zero"));
    }
    if window > MAX_WINDOW {
        return Err(bad("metrics are kept for 10m; ask for 10m or less"));
    }
    Ok(window)
}

/// A Go `time.ParseDuration` string of whole numbers: `1h`, `2m30s`, `250ms`.
pub fn go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// The `APIResourceList` served at the group version's root.
pub fn discovery() -> serde_json::Value {
    let resources: Vec<serde_json::Value> = ResourceKind::ALL
        .into_iter()
        .flat_map(|k| {
            let routes = k.has_routes().then(|| format!("{}/routes", k.plural()));
            [k.plural().to_owned(), format!("{}/edges", k.plural())]
                .into_iter()
                .chain(routes)
                .map(move |name| {
                    serde_json::json!({
                        "name": name,
                        "singularName": "",
                        "namespaced": k.namespaced(),
                        "kind": "TrafficMetrics",
                        "verbs": ["get", "list"],
                    })
                })
        })
        .collect();
    serde_json::json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": resources,
    })
}

/// An object reference as the spec writes it; empty fields are left out (an edge to "any
/// resource" is `{}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObjectReference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ObjectReference {
    /// A reference to one object of `kind`.
    pub fn to(kind: ResourceKind, namespace: Option<&str>, name: &str) -> Self {
        ObjectReference {
            kind: Some(kind.kind().to_owned()),
            namespace: namespace.map(str::to_owned),
            name: Some(name.to_owned()),
        }
    }
}

/// Which way an edge's traffic flows, seen from the `resource`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The resource sent it to the edge's resource.
    To,
    /// The resource received it from the edge's resource.
    From,
}

/// Which proxy measured it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Client,
    Server,
}

/// The traffic an item counts: between `resource` and this edge's resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub direction: Direction,
    pub side: Side,
    pub resource: ObjectReference,
}

impl Edge {
    /// An object's own item: what its Pods served, from anyone (the spec's empty edge
    /// resource), measured by their proxies.
    pub fn served() -> Self {
        Edge {
            direction: Direction::From,
            side: Side::Server,
            resource: ObjectReference::default(),
        }
    }
}

/// For TrafficSplit items: the backend of the apex the item counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub apex: String,
    pub name: String,
    pub weight: u32,
}

/// The golden numbers of some traffic over a window, as the metric windows compute them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GoldenMetrics {
    /// Responses that were not 5xx (HTTP and gRPC requests only; TCP connections are not counted).
    pub success_count: u64,
    /// 5xx responses and requests that got no response.
    pub failure_count: u64,
    /// Latency percentiles; `None` when nothing was measured.
    pub p50: Option<Duration>,
    pub p90: Option<Duration>,
    pub p99: Option<Duration>,
    /// The 95th percentile, not one of the spec's metrics: served as
    /// [`P95_LATENCY_ANNOTATION`].
    pub p95: Option<Duration>,
    /// TCP connections open at each proxy's latest push in the window, summed over the
    /// proxies and clusters counted; served as [`TCP_OPEN_CONNECTIONS_ANNOTATION`].
    pub tcp_open_connections: u64,
}

/// One metric of an item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Metric {
    pub name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'static str>,
    /// A Kubernetes quantity.
    pub value: String,
}

impl GoldenMetrics {
    /// The spec's five metrics, latencies first as the spec lists them. A percentile with no
    /// measurement is left out rather than written as zero.
    pub fn metrics(&self) -> Vec<Metric> {
        let latency = |name, d: Option<Duration>| {
            d.map(|d| Metric {
                name,
                unit: Some("seconds"),
                value: seconds_quantity(d),
            })
        };
        [
            latency("p99_response_latency", self.p99),
            latency("p90_response_latency", self.p90),
            latency("p50_response_latency", self.p50),
            Some(Metric {
                name: "success_count",
                unit: None,
                value: self.success_count.to_string(),
            }),
            Some(Metric {
                name: "failure_count",
                unit: None,
                value: self.failure_count.to_string(),
            }),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Switchyard's figures beyond the spec's five, as item annotations: the p95 latency (left
    /// out without a measurement, as the spec's percentiles) and the open TCP connections.
    pub fn annotations(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        if let Some(p95) = self.p95 {
            out.insert(
                P95_LATENCY_ANNOTATION.to_owned(),
                seconds_quantity(p95).into(),
            );
        }
        out.insert(
            TCP_OPEN_CONNECTIONS_ANNOTATION.to_owned(),
            self.tcp_open_connections.to_string().into(),
        );
        out
    }
}

/// A duration as a Kubernetes quantity of seconds at microsecond precision, in its shortest
/// exact form: `2`, `12m` (12 ms), `250u` (250 µs), `0`.
pub fn seconds_quantity(d: Duration) -> String {
    let micros = d.as_micros();
    if micros == 0 {
        "0".to_owned()
    } else if micros.is_multiple_of(1_000_000) {
        (micros / 1_000_000).to_string()
    } else if micros.is_multiple_of(1_000) {
        format!("{}m", micros / 1_000)
    } else {
        format!("{micros}u")
    }
}

/// The metrics of one resource (and edge) over a window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficMetrics {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: serde_json::Value,
    pub resource: ObjectReference,
    pub edge: Edge,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// RFC 3339, UTC, seconds.
    pub timestamp: String,
    /// A Go duration (`30s`, `1m0s`).
    pub window: String,
    pub metrics: Vec<Metric>,
}

impl TrafficMetrics {
    /// An item for `resource`'s traffic across `edge`, at `timestamp` (RFC 3339) over `window`.
    pub fn new(
        resource: ObjectReference,
        edge: Edge,
        timestamp: &str,
        window: Duration,
        golden: &GoldenMetrics,
    ) -> Self {
        let metadata = serde_json::json!({
            "name": resource.name,
            "namespace": resource.namespace,
            "creationTimestamp": timestamp,
            "annotations": golden.annotations(),
        });
        TrafficMetrics {
            api_version: "metrics.smi-spec.io/v1alpha1",
            kind: "TrafficMetrics",
            metadata,
            resource,
            edge,
            backend: None,
            timestamp: timestamp.to_owned(),
            window: go_format(window),
            metrics: golden.metrics(),
        }
    }
}

/// Items for one kind, or one resource's edges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficMetricsList {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: serde_json::Value,
    pub resource: ObjectReference,
    pub items: Vec<TrafficMetrics>,
}

impl TrafficMetricsList {
    pub fn new(resource: ObjectReference, items: Vec<TrafficMetrics>) -> Self {
        TrafficMetricsList {
            api_version: "metrics.smi-spec.io/v1alpha1",
            kind: "TrafficMetricsList",
            metadata: serde_json::json!({}),
            resource,
            items,
        }
    }
}

/// A window as Go's `Duration.String` writes it, to the millisecond: `500ms`, `1.5s`, `30s`,
/// `1m0s`, `10m0s`.
pub fn go_format(d: Duration) -> String {
    let secs = d.as_secs();
    let ms = d.subsec_millis();
    if secs == 0 && ms > 0 {
        return format!("{ms}ms");
    }
    let frac = if ms == 0 {
        String::new()
    } else {
        format!(".{ms:03}").trim_end_matches('0').to_owned()
    };
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}{frac}s")
    } else if m > 0 {
        format!("{m}m{s}{frac}s")
    } else {
        format!("{s}{frac}s")
    }
}

/// The metadata annotation of an item that counts the Pods of its resource (a workload, a
/// Service, a namespace; `1` for a Pod), meshed or not; the `MESHED` column's denominator.
pub const PODS_ANNOTATION: &str = "metrics.switchyard.dev/pods";
/// The metadata annotation of an item that counts the Pods of its resource that run a proxy;
/// the `MESHED` column's numerator.
pub const MESHED_PODS_ANNOTATION: &str = "metrics.switchyard.dev/meshed-pods";

/// The metadata annotation of every item with its 95th latency percentile, which the spec's
/// five metrics do not have: a Kubernetes quantity of seconds like theirs (`"120m"` is 120 ms),
/// computed from the same histogram by the same rule
/// ([`Golden::latency_quantile`](crate::telemetry::Golden::latency_quantile)). Left out when
/// nothing was measured; the `LATENCY_P95` column.
pub const P95_LATENCY_ANNOTATION: &str = "metrics.switchyard.dev/p95-response-latency";
/// The metadata annotation of every item with the TCP connections open at the end of its
/// window (each proxy's `cluster.upstream_cx_active` gauge at its latest push in the window,
/// summed; not the connections opened in the window), a whole number: for a Pod, workload,
/// Service or namespace, the connections its proxies hold to their application (the inbound
/// clusters, `inbound|<port>`); for an edge or a split backend, those the callers' proxies
/// hold to the Service's endpoints. A TCP-proxied port has one per client connection; an HTTP
/// port the proxy's pooled connections, whose number is the data plane's choice. The
/// `TCP_CONN` column.
pub const TCP_OPEN_CONNECTIONS_ANNOTATION: &str = "metrics.switchyard.dev/tcp-open-connections";

/// The metadata annotation of an answer (a list's, or a single item's) that some operator
/// replica's metrics are missing from it: `replica <pod> did not answer: <why>`, one such
/// note per replica, joined with `; `. Its counts are then too low by what that replica held
/// (the proxies whose metrics streams landed on it); absent when every replica answered.
pub const PARTIAL_ANNOTATION: &str = "metrics.switchyard.dev/partial";

/// Marks an answer of [`answer`] as missing some replicas' metrics ([`PARTIAL_ANNOTATION`],
/// `notes` joined); leaves it as it is without notes.
pub fn mark_partial(answer: &mut serde_json::Value, notes: &[String]) {
    if notes.is_empty() {
        return;
    }
    let Some(object) = answer.as_object_mut() else {
        return;
    };
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| serde_json::json!({}));
    if !metadata.is_object() {
        *metadata = serde_json::json!({});
    }
    let annotations = &mut metadata["annotations"];
    if !annotations.is_object() {
        *annotations = serde_json::json!({});
    }
    annotations[PARTIAL_ANNOTATION] = notes.join("; ").into();
}

/// The metadata annotation of a `/routes` item (Switchyard's extension of the API) naming its
/// route: `<route group>/<match name>` for a named match of an HTTPRouteGroup that a
/// TrafficTarget to the object uses (the group is in the object's namespace; its name has no
/// `/`, so the first `/` ends it), or [`DEFAULT_ROUTE`]. The `ROUTE` column.
pub const ROUTE_ANNOTATION: &str = "metrics.switchyard.dev/route";

/// The route of the requests that matched none of an object's named routes, as Linkerd names
/// it.
pub const DEFAULT_ROUTE: &str = "[DEFAULT]";

/// The Pods of one object, and whether each runs a proxy.
type Members = Vec<(ProxyId, bool)>;

/// Answers `request` from the windows and the index's view of workloads, at `timestamp`
/// (RFC 3339): a `TrafficMetrics`, a `TrafficMetricsList` or the discovery document.
///
/// - A Pod's metrics are what its proxy served (the HTTP connection managers of its inbound
///   listeners, `inbound_<port>`), so every caller is counted, meshed or not, and a request the
///   proxy refused counts too.
/// - Every other kind but TrafficSplits is an aggregate of its Pods, as the spec says: a
///   namespace's Pods, a Deployment's, StatefulSet's or DaemonSet's
///   ([`Owner::of`](crate::index::Owner::of)), the Pods a
///   Service's EndpointSlices name. Its items carry [`PODS_ANNOTATION`] and
///   [`MESHED_PODS_ANNOTATION`]. Their open connections are those of their Pods' inbound
///   clusters, to the application.
/// - Edges of those are the Services their Pods called, from their proxies' outbound clusters
///   (`direction: to`, `side: client`).
/// - A TrafficSplit has one item per backend, with `backend: {apex, name, weight}`: the spec's
///   "requests sent to the apex for that one backend". Those are counted where they are sent,
///   by the callers' proxies, on the backend Service's outbound clusters
///   (`<namespace>/<backend>|<port>`, DESIGN §3), summed over every proxy (`direction: from`,
///   `side: client`). The backend's own inbound would count its direct callers and its
///   unmeshed callers too, and no longer tell the split's share. A cluster's series does not
///   know which route chose it, so a caller that addresses the backend Service directly is
///   counted as well. The split's edges are the same per calling Pod.
/// - Every item carries [`P95_LATENCY_ANNOTATION`] (when it has a latency: from the same
///   histogram as its percentiles) and [`TCP_OPEN_CONNECTIONS_ANNOTATION`] (for edges and
///   split backends, from the same clusters as its metrics).
///
/// - [`Request::MeshEdges`] are [`crate::edges::edges`] over the same series, with what the
///   control plane compiled for each proxy (`peers`: identities and clusters).
///
/// `data` holds the series of the request's window ([`Request::window`]) of at least the
/// proxies [`Request::proxies`] names: in a cluster, every replica's merged
/// ([`Snapshot::merge`]), so an object whose Pods pushed nothing anywhere answers zeros.
///
/// # Errors
///
/// An object that is neither known nor has metrics (404).
pub fn answer(
    data: &Snapshot,
    workloads: &Workloads,
    peers: &crate::edges::Peers,
    request: &Request,
    timestamp: &str,
) -> Result<serde_json::Value, RequestError> {
    fn value(v: &impl Serialize) -> serde_json::Value {
        serde_json::to_value(v).unwrap_or_default()
    }
    let ctx = Context {
        data,
        workloads,
        proxies: data.proxies().cloned().collect(),
        timestamp,
    };
    // A split's items (or edges), one list per split whatever the request.
    let split_list = |namespace: &Option<String>,
                      name: &str,
                      window: Duration,
                      edges: bool|
     -> Result<serde_json::Value, RequestError> {
        let ns = namespace.as_deref().unwrap_or_default();
        let split = workloads
            .split(ns, name)
            .ok_or_else(|| RequestError::Unknown {
                kind: ResourceKind::TrafficSplit,
                name: name.to_owned(),
            })?;
        Ok(value(&TrafficMetricsList::new(
            ObjectReference::to(ResourceKind::TrafficSplit, Some(ns), name),
            if edges {
                ctx.split_edges(ns, name, split, window)
            } else {
                ctx.split_items(ns, name, split, window)
            },
        )))
    };
    match request {
        Request::Discovery => Ok(discovery()),
        Request::MeshEdges { namespace, .. } => Ok(value(&crate::edges::EdgeList::new(
            crate::edges::edges(data, peers, namespace.as_deref()),
        ))),
        Request::Get {
            kind: ResourceKind::TrafficSplit,
            namespace,
            name,
            window,
        } => split_list(namespace, name, *window, false),
        Request::Get {
            kind,
            namespace,
            name,
            window,
        } => {
            let members = ctx.members(*kind, namespace.as_deref(), name)?;
            Ok(value(&ctx.item(
                *kind,
                namespace.as_deref(),
                name,
                &members,
                *window,
            )))
        }
        Request::List {
            kind,
            namespace,
            window,
        } => {
            let items: Vec<TrafficMetrics> = match kind {
                ResourceKind::TrafficSplit => workloads
                    .splits(namespace.as_deref())
                    .into_iter()
                    .flat_map(|((ns, name), split)| ctx.split_items(ns, name, split, *window))
                    .collect(),
                _ => ctx
                    .objects(*kind, namespace.as_deref())
                    .into_iter()
                    .filter_map(|(ns, name)| {
                        let members = ctx.members(*kind, ns.as_deref(), &name).ok()?;
                        Some(ctx.item(*kind, ns.as_deref(), &name, &members, *window))
                    })
                    .collect(),
            };
            let list = TrafficMetricsList::new(
                ObjectReference {
                    kind: Some(kind.kind().to_owned()),
                    namespace: namespace.clone(),
                    name: None,
                },
                items,
            );
            Ok(value(&list))
        }
        Request::Edges {
            kind: ResourceKind::TrafficSplit,
            namespace,
            name,
            window,
        } => split_list(namespace, name, *window, true),
        Request::Routes {
            kind,
            namespace,
            name,
            window,
        } => {
            let members = ctx.members(*kind, Some(namespace), name)?;
            let pods: Vec<&ProxyId> = members.iter().map(|(p, _)| p).collect();
            let items = ctx.routes(*kind, namespace, name, &pods, *window);
            let list =
                TrafficMetricsList::new(ObjectReference::to(*kind, Some(namespace), name), items);
            Ok(value(&list))
        }
        Request::Edges {
            kind,
            namespace,
            name,
            window,
        } => {
            let members = ctx.members(*kind, namespace.as_deref(), name)?;
            let pods: Vec<&ProxyId> = members.iter().map(|(p, _)| p).collect();
            let items = ctx.edges(*kind, namespace.as_deref(), name, &pods, *window);
            let list = TrafficMetricsList::new(
                ObjectReference::to(*kind, namespace.as_deref(), name),
                items,
            );
            Ok(value(&list))
        }
    }
}

/// What one answer reads from.
struct Context<'a> {
    data: &'a Snapshot,
    workloads: &'a Workloads,
    /// The proxies with series, in name order.
    proxies: Vec<ProxyId>,
    timestamp: &'a str,
}

impl Context<'_> {
    fn has_windows(&self, pod: &ProxyId) -> bool {
        self.data.has(pod)
    }

    /// Whether a Pod runs a proxy: the index says so, or its proxy pushed metrics.
    fn meshed(&self, pod: &ProxyId) -> bool {
        self.workloads.pod(pod).is_some_and(|e| e.meshed) || self.has_windows(pod)
    }

    /// The objects of a kind (other than TrafficSplit) in scope, in name order: what the index
    /// knows of, and for Pods and namespaces, what pushed metrics.
    fn objects(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
    ) -> Vec<(Option<String>, String)> {
        let in_scope = |p: &&ProxyId| namespace.is_none_or(|ns| p.namespace == ns);
        let pods = || {
            let known = self.workloads.pods().map(|(p, _)| p);
            let mut all: Vec<&ProxyId> = known.chain(&self.proxies).filter(in_scope).collect();
            all.sort_by(|a, b| cmp_ids(a, b));
            all.dedup();
            all
        };
        let mut out: Vec<(Option<String>, String)> = match kind.workload() {
            Some(w) => self
                .workloads
                .workloads(w, namespace)
                .into_iter()
                .map(|(ns, name)| (Some(ns), name))
                .collect(),
            None => match kind {
                ResourceKind::Namespace => pods()
                    .into_iter()
                    .map(|p| (None, p.namespace.clone()))
                    .collect(),
                ResourceKind::Service => self
                    .workloads
                    .services(namespace)
                    .into_iter()
                    .map(|s| (Some(s.namespace.clone()), s.name.clone()))
                    .collect(),
                _ => pods()
                    .into_iter()
                    .map(|p| (Some(p.namespace.clone()), p.pod.clone()))
                    .collect(),
            },
        };
        out.dedup();
        out
    }

    /// The Pods of one object (not a TrafficSplit).
    fn members(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Members, RequestError> {
        let ns = namespace.unwrap_or_default();
        let with_meshed = |pods: Vec<ProxyId>| -> Members {
            pods.into_iter()
                .map(|p| {
                    let m = self.meshed(&p);
                    (p, m)
                })
                .collect()
        };
        let members = match (kind, kind.workload()) {
            (_, Some(w)) => with_meshed(
                self.workloads
                    .pods_of(w, ns, name)
                    .into_iter()
                    .cloned()
                    .collect(),
            ),
            (ResourceKind::Service, _) => {
                let pods =
                    self.workloads
                        .service_pods(ns, name)
                        .ok_or_else(|| RequestError::Unknown {
                            kind,
                            name: name.to_owned(),
                        })?;
                // A Service without endpoints is known, with no Pods.
                if pods.is_empty() {
                    return Ok(Vec::new());
                }
                with_meshed(pods.iter().cloned().collect())
            }
            (ResourceKind::Namespace, _) => {
                let known = self.workloads.pods().map(|(p, _)| p);
                let mut pods: Vec<ProxyId> = known
                    .chain(&self.proxies)
                    .filter(|p| p.namespace == name)
                    .cloned()
                    .collect();
                pods.sort_by(cmp_ids);
                pods.dedup();
                with_meshed(pods)
            }
            _ => {
                let pod = ProxyId {
                    namespace: ns.to_owned(),
                    pod: name.to_owned(),
                };
                if self.workloads.pod(&pod).is_some() || self.has_windows(&pod) {
                    with_meshed(vec![pod])
                } else {
                    Vec::new()
                }
            }
        };
        if members.is_empty() {
            return Err(match kind {
                ResourceKind::Pod | ResourceKind::Namespace => RequestError::NoMetrics {
                    kind,
                    name: name.to_owned(),
                },
                _ => RequestError::Unknown {
                    kind,
                    name: name.to_owned(),
                },
            });
        }
        Ok(members)
    }

    /// What the object's Pods served, with their count and meshed count.
    fn item(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
        name: &str,
        members: &Members,
        window: Duration,
    ) -> TrafficMetrics {
        use crate::telemetry::Subject;
        let pods = || members.iter().map(|(p, _)| p);
        let inbound =
            |s: &Subject| matches!(s, Subject::Listener(p) if p.as_str().starts_with("inbound_"));
        let mut golden = GoldenMetrics::of(&self.data.query(pods(), inbound));
        // Connections are counted on clusters, not connection managers: the inbound clusters,
        // to the application. Their requests are the listeners' again, so a query of their own.
        let to_application =
            |s: &Subject| matches!(s, Subject::Upstream(c) if is_inbound_cluster(c.as_str()));
        golden.tcp_open_connections = self.data.query(pods(), to_application).connections_active;
        let mut item = TrafficMetrics::new(
            ObjectReference::to(kind, namespace, name),
            Edge::served(),
            self.timestamp,
            window,
            &golden,
        );
        let meshed = members.iter().filter(|(_, m)| *m).count();
        if let Some(annotations) = item.metadata["annotations"].as_object_mut() {
            annotations.insert(PODS_ANNOTATION.to_owned(), members.len().to_string().into());
            annotations.insert(MESHED_PODS_ANNOTATION.to_owned(), meshed.to_string().into());
        }
        item
    }

    /// The Services `pods` called, one item each (their outbound clusters).
    fn edges(
        &self,
        kind: ResourceKind,
        namespace: Option<&str>,
        name: &str,
        pods: &[&ProxyId],
        window: Duration,
    ) -> Vec<TrafficMetrics> {
        use crate::telemetry::Subject;
        let mut services: Vec<(String, String)> = pods
            .iter()
            .flat_map(|p| self.data.subjects(p))
            .filter_map(|s| match s {
                Subject::Upstream(c) => service_of(c.as_str()),
                Subject::Listener(_) | Subject::Route(..) => None,
            })
            .collect();
        services.sort();
        services.dedup();
        services
            .into_iter()
            .map(|(ns, svc)| {
                let g = self.data.query(pods.iter().copied(), to_service(&ns, &svc));
                TrafficMetrics::new(
                    ObjectReference::to(kind, namespace, name),
                    Edge {
                        direction: Direction::To,
                        side: Side::Client,
                        resource: ObjectReference::to(ResourceKind::Service, Some(&ns), &svc),
                    },
                    self.timestamp,
                    window,
                    &GoldenMetrics::of(&g),
                )
            })
            .collect()
    }

    /// One item per route of `pods`, by name, then [`DEFAULT_ROUTE`]. The routes are those
    /// configured on the Pods ([`PodEntry::routes`](crate::index::workloads::PodEntry::routes)),
    /// with zero counts and no latency when none was taken in the window, as Linkerd's
    /// `viz routes` lists a route without traffic; and those the Pods' proxies counted in the
    /// window, so a route just removed from the configuration still shows its traffic. A
    /// route's item is what its route stats counted on the Pods' inbound virtual hosts; the
    /// default's is what their inbound clusters (to the application) counted beyond the
    /// routes. Both are charged by the proxy's router at once, so the default is exact: the
    /// requests that reached the application by no named route (a request the proxy refused or
    /// answered itself, which never reached a cluster, counts in no route; the Pod's own item
    /// counts it).
    fn routes(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
        pods: &[&ProxyId],
        window: Duration,
    ) -> Vec<TrafficMetrics> {
        use crate::telemetry::Subject;
        use switchyard_proxy_config::metrics::RouteStatName;
        let inbound_route = |s: &Subject| -> Option<RouteStatName> {
            match s {
                Subject::Route(vhost, route) if is_inbound_cluster(vhost.as_str()) => {
                    Some(route.clone())
                }
                _ => None,
            }
        };
        let configured = pods
            .iter()
            .filter_map(|p| self.workloads.pod(p))
            .flat_map(|e| e.routes.iter().cloned());
        let mut routes: Vec<RouteStatName> = pods
            .iter()
            .flat_map(|p| self.data.subjects(p))
            .filter_map(inbound_route)
            .chain(configured)
            .collect();
        routes.sort();
        routes.dedup();
        let item = |route: String, g: &crate::telemetry::Golden| {
            let mut item = TrafficMetrics::new(
                ObjectReference::to(kind, Some(namespace), name),
                Edge::served(),
                self.timestamp,
                window,
                &GoldenMetrics::of(g),
            );
            if let Some(annotations) = item.metadata["annotations"].as_object_mut() {
                annotations.insert(ROUTE_ANNOTATION.to_owned(), route.into());
            }
            item
        };
        let mut out: Vec<TrafficMetrics> = routes
            .iter()
            .map(|route| {
                let g = self.data.query(pods.iter().copied(), |s| {
                    inbound_route(s).as_ref() == Some(route)
                });
                item(format!("{}/{}", route.group, route.name), &g)
            })
            .collect();
        let all = self.data.query(
            pods.iter().copied(),
            |s| matches!(s, Subject::Upstream(c) if is_inbound_cluster(c.as_str())),
        );
        let named = self
            .data
            .query(pods.iter().copied(), |s| inbound_route(s).is_some());
        out.push(item(DEFAULT_ROUTE.to_owned(), &all.without(&named)));
        out
    }

    /// One item per backend of a split: what every proxy sent to the backend's clusters.
    fn split_items(
        &self,
        namespace: &str,
        name: &str,
        split: &Split,
        window: Duration,
    ) -> Vec<TrafficMetrics> {
        split
            .backends
            .iter()
            .map(|b| {
                let g = self
                    .data
                    .query(&self.proxies, to_service(namespace, &b.service));
                self.split_item(
                    namespace,
                    name,
                    split,
                    b,
                    ObjectReference::default(),
                    window,
                    &g,
                )
            })
            .collect()
    }

    /// One item per calling Pod and backend of a split.
    fn split_edges(
        &self,
        namespace: &str,
        name: &str,
        split: &Split,
        window: Duration,
    ) -> Vec<TrafficMetrics> {
        // Each proxy's subjects read once, not once per backend.
        let subjects: Vec<_> = self
            .proxies
            .iter()
            .map(|p| (p, self.data.subjects(p).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::new();
        for b in &split.backends {
            let to_backend = to_service(namespace, &b.service);
            for &(caller, ref called) in &subjects {
                if !called.iter().any(|s| to_backend(s)) {
                    continue;
                }
                let g = self.data.query([caller], to_service(namespace, &b.service));
                let from =
                    ObjectReference::to(ResourceKind::Pod, Some(&caller.namespace), &caller.pod);
                out.push(self.split_item(namespace, name, split, b, from, window, &g));
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn split_item(
        &self,
        namespace: &str,
        name: &str,
        split: &Split,
        backend: &SplitBackend,
        from: ObjectReference,
        window: Duration,
        g: &crate::telemetry::Golden,
    ) -> TrafficMetrics {
        let mut item = TrafficMetrics::new(
            ObjectReference::to(ResourceKind::TrafficSplit, Some(namespace), name),
            Edge {
                direction: Direction::From,
                side: Side::Client,
                resource: from,
            },
            self.timestamp,
            window,
            &GoldenMetrics::of(g),
        );
        item.backend = Some(Backend {
            apex: split.apex.clone(),
            name: backend.service.clone(),
            weight: backend.weight,
        });
        item
    }
}

/// Accepts the outbound clusters of one Service.
fn to_service<'a>(
    namespace: &'a str,
    service: &'a str,
) -> impl Fn(&crate::telemetry::Subject) -> bool + 'a {
    move |s| {
        matches!(s, crate::telemetry::Subject::Upstream(c)
            if service_of(c.as_str()).is_some_and(|(n, v)| n == namespace && v == service))
    }
}

/// Whether a cluster is an inbound port's local cluster, to the application
/// ([`inbound_name`](switchyard_adapters::envoy::inbound_name), `inbound|<port>`).
fn is_inbound_cluster(cluster: &str) -> bool {
    switchyard_adapters::envoy::inbound_port(cluster).is_some()
}

fn cmp_ids(a: &ProxyId, b: &ProxyId) -> std::cmp::Ordering {
    (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod))
}

/// The Service an outbound cluster name (`<namespace>/<service>|<port>`, DESIGN §3) is for;
/// `None` for the proxy's other clusters (`inbound|<port>`, its static ones).
fn service_of(cluster: &str) -> Option<(String, String)> {
    let (service, _port) = cluster.split_once('|')?;
    let (ns, name) = service.split_once('/')?;
    (!ns.is_empty() && !name.is_empty()).then(|| (ns.to_owned(), name.to_owned()))
}

impl GoldenMetrics {
    /// The spec's numbers of a window's sums.
    pub fn of(g: &crate::telemetry::Golden) -> Self {
        GoldenMetrics {
            success_count: g.success_count(),
            failure_count: g.failure_count(),
            p50: g.latency_quantile(0.50),
            p90: g.latency_quantile(0.90),
            p95: g.latency_quantile(0.95),
            p99: g.latency_quantile(0.99),
            tcp_open_connections: g.connections_active,
        }
    }
}
