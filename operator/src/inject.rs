//! Sidecar injection: one patch function decides whether a Pod (or a workload's Pod template)
//! joins the mesh, and what joining adds to it. The admission webhook and `switchyard inject`
//! both call it.
//!
//! ```text
//!  Pod template + Namespace annotations + InjectConfig ─▶ decide ─▶ Decision::Inject(Injection)
//!                                                           │          │ json_patch (RFC 6902)
//!                                                           │          ├─▶ AdmissionReview (admission)
//!                                                           │          └─▶ applied to the YAML (workload)
//!                                                           ├─▶ Decision::Skip(SkipReason)
//!                                                           └─▶ InjectError (an invalid annotation)
//! ```
//!
//! Enrolment: `switchyard.dev/inject` on the Pod, else on its Namespace; `enabled` injects.
//! Never injected: the system namespaces, the operator's own, `hostNetwork` Pods, and Pods that
//! already have a proxy, so a second pass over an injected Pod changes nothing.
//!
//! An injected Pod gets, before its own init containers, `switchyard-init` (installs the
//! redirect rules and writes the proxy's bootstrap: `switchyard proxy-init`) and
//! `switchyard-proxy` (the data plane, a native sidecar: an init container with
//! `restartPolicy: Always`, started before the app and stopped after it), a projected
//! ServiceAccount token for the control plane, and the annotations that say which proxy runs.
//! The application's probes are left as they are.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::{
    api::core::v1::PodSpec,
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use switchyard_adapters::model::DataPlane;
use switchyard_images::Image;

use crate::{
    annotations::{self, InjectMode},
    intercept::{self, CidrList, PortList},
};

pub mod admission;
#[cfg(test)]
pub(crate) mod fixtures;
mod patch;
pub mod server;
pub mod workload;

#[cfg(test)]
mod tests;

pub use patch::Injection;

/// The init container that sets up interception and writes the proxy's bootstrap.
pub const INIT_CONTAINER: &str = "switchyard-init";
/// The proxy: a native sidecar (init container with `restartPolicy: Always`).
pub const PROXY_CONTAINER: &str = "switchyard-proxy";
/// The projected ServiceAccount token the proxy authenticates to the control plane with.
pub const TOKEN_VOLUME: &str = "switchyard-token";
/// Where [`TOKEN_VOLUME`] is mounted, in the init container and the proxy.
pub const TOKEN_DIR: &str = "/var/run/secrets/switchyard";
/// The token's file name in [`TOKEN_DIR`].
pub const TOKEN_FILE: &str = "token";
/// How long a projected token is valid: 86400 s (the kubelet renews it at 80 %).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 86_400;
/// A memory-backed emptyDir the init container writes the bootstrap into.
pub const RUN_VOLUME: &str = "switchyard-run";
/// Where [`RUN_VOLUME`] is mounted.
pub const RUN_DIR: &str = "/var/run/switchyard";
/// The bootstrap's file name in [`RUN_DIR`].
pub const BOOTSTRAP_FILE: &str = "bootstrap.json";
/// The init container's `/run`, where iptables takes its lock (the root file system is
/// read-only).
pub const XTABLES_VOLUME: &str = "switchyard-xtables";
/// Namespaces never injected, whatever their annotations: the cluster's own.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Everything the injector needs besides the Pod: what to inject and where it connects.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectConfig {
    pub images: Images,
    /// The operator's namespace: never injected (its Pods serve the webhook).
    pub operator_namespace: String,
    /// The control plane, as proxies reach it (default `switchyard.<operator ns>.svc:15010`).
    pub xds_host: String,
    pub xds_port: u16,
    /// The data plane of Pods whose Pod and Namespace do not choose one.
    pub default_data_plane: DataPlane,
    /// Written to `switchyard.dev/proxy-version` (default: this build's version).
    pub version: String,
    /// The audience of the projected token (default `switchyard`, what the xDS server checks).
    pub audience: String,
    /// The CA certificate (PEM) proxies verify the control plane's xDS certificate with; given
    /// to `switchyard-init` in its environment, which writes it into the bootstrap. Without it
    /// `switchyard-init` fails (the proxy could not reach the control plane).
    pub xds_ca: Option<String>,
    pub proxy_uid: u32,
    pub ports: ProxyPorts,
    pub resources: ProxyResources,
}

/// The images injected, as full references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// `switchyard-init` runs `switchyard proxy-init`: the operator's image.
    pub init: String,
    /// The bundled proxy (`switchyard-proxy`).
    pub bundled: String,
    pub envoy: String,
}

/// The proxy's ports in the Pod (DESIGN §3). Interception never redirects them inbound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyPorts {
    /// The admin interface, on 127.0.0.1 only: 15000.
    pub admin: u16,
    /// `/ready`, `/live`, `/metrics` on the Pod's IP and nothing else: 15020. The kubelet's
    /// startup probe calls it.
    pub health: u16,
    /// Where outbound connections are redirected: 15001.
    pub outbound: u16,
    /// Where inbound connections are redirected: 15006.
    pub inbound: u16,
}

/// Resource requests and limits of the injected containers.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyResources {
    /// CPU request of each injected container: `10m`.
    pub cpu_request: Quantity,
    /// Memory request of the bundled proxy: `32Mi`.
    pub bundled_memory_request: Quantity,
    /// Memory request of Envoy: `64Mi`.
    pub envoy_memory_request: Quantity,
    /// Memory limit of the proxy, either data plane: `256Mi`.
    pub proxy_memory_limit: Quantity,
    /// Memory request of the init container: `16Mi`.
    pub init_memory_request: Quantity,
    /// Memory limit of the init container: `64Mi`.
    pub init_memory_limit: Quantity,
}

/// The object whose Pod template is looked at, for messages: `pod demo/web-5d9c-` or
/// `deployment demo/web`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// Lower case: `pod`, `deployment`, `cronjob`, …
    pub kind: &'a str,
    /// The namespace, when known (`switchyard inject` on a manifest that names none does not).
    pub namespace: Option<&'a str>,
    /// The name, or the `generateName` prefix of a Pod a controller creates.
    pub name: &'a str,
    /// The field path of the Pod template's metadata in the object: `metadata` for a Pod,
    /// `spec.template.metadata` for a Deployment.
    pub metadata_path: &'a str,
}

/// A Pod, or a Pod template, as the injector reads it.
#[derive(Clone, Copy, Debug)]
pub struct PodTemplate<'a> {
    /// `None` when the template has no `metadata` at all.
    pub metadata: Option<&'a ObjectMeta>,
    pub spec: &'a PodSpec,
}

/// What the patch function decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Inject(Box<Injection>),
    Skip(SkipReason),
}

/// Why a Pod is not injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `kube-system`, `kube-public` or `kube-node-lease`.
    SystemNamespace(String),
    /// The operator's namespace, which must keep working while the webhook does not.
    OperatorNamespace(String),
    /// A container or init container named `switchyard-proxy`, or `switchyard.dev/proxy-version`.
    AlreadyInjected,
    /// `switchyard.dev/inject: disabled` on the Pod, or on the Namespace with none on the Pod.
    Disabled(Level),
    /// Neither the Pod nor its Namespace carries `switchyard.dev/inject`.
    NotEnrolled,
    /// `hostNetwork: true`: interception would redirect the node's traffic.
    HostNetwork,
}

/// Where an annotation was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Pod,
    Namespace,
}

/// A Pod the injector refuses: an annotation it reads has a value it does not accept, or a name
/// it adds is taken. The message names the object and the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {reason}")]
pub struct InjectError {
    /// `pod demo/web-x`, `namespace demo`, `deployment demo/web`.
    pub object: String,
    /// `metadata.annotations["switchyard.dev/inject"]`, `spec.volumes`.
    pub field: String,
    pub reason: String,
}

// === impl InjectConfig ===

impl InjectConfig {
    /// The defaults for an operator in `operator_namespace`: the images `make images` builds
    /// for this version, the control plane at `switchyard.<ns>.svc:15010`, the Envoy data plane.
    pub fn new(operator_namespace: &str) -> Self {
        InjectConfig {
            images: Images::new(
                switchyard_images::DEFAULT_REGISTRY,
                switchyard_images::DEFAULT_TAG,
            ),
            operator_namespace: operator_namespace.to_owned(),
            xds_host: default_xds_host(operator_namespace),
            xds_port: crate::install::XDS_PORT.unsigned_abs() as u16,
            default_data_plane: DataPlane::Envoy,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            audience: crate::controller::auth::DEFAULT_AUDIENCE.to_owned(),
            xds_ca: None,
            proxy_uid: intercept::PROXY_UID,
            ports: ProxyPorts::default(),
            resources: ProxyResources::default(),
        }
    }

    /// Whether Pods in `namespace` are never injected, and why.
    pub fn exempt(&self, namespace: &str) -> Option<SkipReason> {
        if SYSTEM_NAMESPACES.contains(&namespace) {
            Some(SkipReason::SystemNamespace(namespace.to_owned()))
        } else if namespace == self.operator_namespace {
            Some(SkipReason::OperatorNamespace(namespace.to_owned()))
        } else {
            None
        }
    }
}

/// `switchyard.<namespace>.svc`: the operator's Service, as Pods in any namespace resolve it.
impl InjectConfig {
    /// The bootstrap options an injected Pod's proxy reaches the control plane with, as
    /// `switchyard-init` writes them (xDS address, the projected token's file, the CA): for
    /// configuration that names the control plane again, a tap's access log. `None` without
    /// [`InjectConfig::xds_ca`], with which no injected proxy connects at all.
    pub fn bootstrap_options(
        &self,
        proxy: &switchyard_adapters::model::ProxyId,
    ) -> Option<switchyard_adapters::envoy::BootstrapOptions> {
        let ca = self.xds_ca.clone()?;
        Some(switchyard_adapters::envoy::BootstrapOptions::new(
            proxy.to_string(),
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            self.xds_host.clone(),
            self.xds_port,
            token_path(),
            switchyard_adapters::envoy::XdsCa::Pem(ca),
        ))
    }
}

/// Where an injected proxy reads its ServiceAccount token: `<TOKEN_DIR>/<TOKEN_FILE>`.
pub fn token_path() -> String {
    format!("{TOKEN_DIR}/{TOKEN_FILE}")
}

pub fn default_xds_host(operator_namespace: &str) -> String {
    format!("{}.{operator_namespace}.svc", crate::install::NAME)
}

impl Images {
    /// The project's images in `registry` with `tag`.
    pub fn new(registry: &str, tag: &str) -> Self {
        Images {
            init: Image::Operator.reference(registry, tag),
            bundled: Image::Proxy.reference(registry, tag),
            envoy: Image::Envoy.reference(registry, tag),
        }
    }

    /// The proxy image of a data plane.
    pub fn proxy(&self, data_plane: DataPlane) -> &str {
        match data_plane {
            DataPlane::Bundled => &self.bundled,
            DataPlane::Envoy => &self.envoy,
        }
    }
}

impl Default for ProxyPorts {
    fn default() -> Self {
        ProxyPorts {
            admin: intercept::ADMIN_PORT,
            health: intercept::HEALTH_PORT,
            outbound: intercept::OUTBOUND_PORT,
            inbound: intercept::INBOUND_PORT,
        }
    }
}

impl Default for ProxyResources {
    fn default() -> Self {
        let q = |s: &str| Quantity(s.to_owned());
        ProxyResources {
            cpu_request: q("10m"),
            bundled_memory_request: q("32Mi"),
            envoy_memory_request: q("64Mi"),
            proxy_memory_limit: q("256Mi"),
            init_memory_request: q("16Mi"),
            init_memory_limit: q("64Mi"),
        }
    }
}

// === impl Target ===

impl Target<'_> {
    /// The field path of the Pod template's spec: `spec`, `spec.template.spec`.
    pub fn spec_path(&self) -> String {
        match self.metadata_path.strip_suffix("metadata") {
            Some(prefix) => format!("{prefix}spec"),
            None => "spec".to_owned(),
        }
    }
}

/// `pod demo/web-x`, or `deployment web` when the namespace is not known.
impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

// === impl SkipReason ===

impl SkipReason {
    /// Whether an `InjectionSkipped` Event is worth emitting: someone asked about this Pod
    /// (an annotation, `hostNetwork` in an enrolled namespace). Pods nobody enrolled, and the
    /// webhook's second look at a Pod it injected (reinvocation), stay quiet.
    pub fn is_reported(&self) -> bool {
        !matches!(self, SkipReason::NotEnrolled | SkipReason::AlreadyInjected)
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inject = annotations::INJECT;
        match self {
            SkipReason::SystemNamespace(ns) => {
                write!(
                    f,
                    "namespace {ns} belongs to the cluster and is never meshed"
                )
            }
            SkipReason::OperatorNamespace(ns) => {
                write!(
                    f,
                    "namespace {ns} runs the Switchyard operator and is never meshed"
                )
            }
            SkipReason::AlreadyInjected => f.write_str("the pod already has a Switchyard proxy"),
            SkipReason::Disabled(Level::Pod) => write!(f, "the pod is annotated {inject}=disabled"),
            SkipReason::Disabled(Level::Namespace) => {
                write!(f, "the namespace is annotated {inject}=disabled")
            }
            SkipReason::NotEnrolled => {
                write!(
                    f,
                    "neither the pod nor its namespace is annotated {inject}=enabled"
                )
            }
            SkipReason::HostNetwork => {
                f.write_str("the pod uses the host's network (hostNetwork: true)")
            }
        }
    }
}

// === decide ===

/// The patch function: whether `template`, of `target`, in a namespace annotated
/// `namespace_annotations`, gets a proxy, and if so exactly what is added. Pure: same input,
/// same answer.
///
/// # Errors
///
/// An annotation the decision reads has a value it does not accept (`switchyard.dev/inject` on
/// the Pod or the Namespace; when injecting, `switchyard.dev/data-plane` and the skip lists), or
/// a container or volume name the injection adds is already taken.
pub fn decide(
    target: &Target<'_>,
    template: PodTemplate<'_>,
    namespace_annotations: &BTreeMap<String, String>,
    config: &InjectConfig,
) -> Result<Decision, InjectError> {
    if let Some(reason) = target.namespace.and_then(|ns| config.exempt(ns)) {
        return Ok(Decision::Skip(reason));
    }
    let empty = BTreeMap::new();
    let pod_annotations = template
        .metadata
        .and_then(|m| m.annotations.as_ref())
        .unwrap_or(&empty);
    if has_proxy(pod_annotations, template.spec) {
        return Ok(Decision::Skip(SkipReason::AlreadyInjected));
    }

    let pod = Annotations::pod(target, pod_annotations);
    let ns = Annotations::namespace(target, namespace_annotations);
    // Both are checked, whichever decides: a Namespace annotation that says neither `enabled`
    // nor `disabled` is a mistake its owner wants to hear about.
    let pod_mode = pod.parse::<InjectMode>(annotations::INJECT)?;
    let ns_mode = ns.parse::<InjectMode>(annotations::INJECT)?;
    match (pod_mode, ns_mode) {
        (Some(InjectMode::Enabled), _) | (None, Some(InjectMode::Enabled)) => {}
        (Some(InjectMode::Disabled), _) => {
            return Ok(Decision::Skip(SkipReason::Disabled(Level::Pod)));
        }
        (None, Some(InjectMode::Disabled)) => {
            return Ok(Decision::Skip(SkipReason::Disabled(Level::Namespace)));
        }
        (None, None) => return Ok(Decision::Skip(SkipReason::NotEnrolled)),
    }
    if template.spec.host_network == Some(true) {
        return Ok(Decision::Skip(SkipReason::HostNetwork));
    }

    let data_plane = match pod.parse::<DataPlane>(annotations::DATA_PLANE)? {
        Some(d) => d,
        None => ns
            .parse::<DataPlane>(annotations::DATA_PLANE)?
            .unwrap_or(config.default_data_plane),
    };
    let list = |e: intercept::ListError| format!("{:?} {}", e.element, e.reason);
    let skip = patch::Skips {
        inbound_ports: pod
            .read(annotations::SKIP_INBOUND_PORTS, |key, v| {
                PortList::parse(key, v).map_err(list)
            })?
            .unwrap_or_default(),
        outbound_ports: pod
            .read(annotations::SKIP_OUTBOUND_PORTS, |key, v| {
                PortList::parse(key, v).map_err(list)
            })?
            .unwrap_or_default(),
        outbound_cidrs: pod
            .read(annotations::SKIP_OUTBOUND_CIDRS, |key, v| {
                CidrList::parse(key, v).map_err(list)
            })?
            .unwrap_or_default(),
    };
    let probes = patch::ProbeRewrites::of(template.spec, config.ports.health);
    let skip = patch::Skips {
        inbound_ports: skip.inbound_ports.union(&probes.skip_ports),
        ..skip
    };
    // Tapping off on the Pod, else as its Namespace says: written onto the Pod, where the
    // control plane reads it.
    let tap = match pod.parse::<InjectMode>(annotations::TAP)? {
        Some(mode) => mode,
        None => ns
            .parse::<InjectMode>(annotations::TAP)?
            .unwrap_or(InjectMode::Enabled),
    };
    let mut injection = Injection::new(data_plane, &skip, &probes, config);
    if tap == InjectMode::Disabled {
        injection
            .annotations
            .insert(annotations::TAP.to_owned(), tap.as_str().to_owned());
    }
    injection.check_names(target, template.spec)?;
    Ok(Decision::Inject(Box::new(injection)))
}

/// Whether the Pod already runs a Switchyard proxy: ours by name, or marked by the annotation.
fn has_proxy(annotations: &BTreeMap<String, String>, spec: &PodSpec) -> bool {
    annotations.contains_key(annotations::PROXY_VERSION)
        || spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == PROXY_CONTAINER)
}

/// One object's annotations, and how to name them in an error.
struct Annotations<'a> {
    values: &'a BTreeMap<String, String>,
    /// `pod demo/web-x`, `namespace demo`.
    object: String,
    /// Where the annotations' metadata is in the object: `metadata`, `spec.template.metadata`.
    metadata_path: &'a str,
}

impl<'a> Annotations<'a> {
    fn pod(target: &Target<'a>, values: &'a BTreeMap<String, String>) -> Self {
        Annotations {
            values,
            object: target.to_string(),
            metadata_path: target.metadata_path,
        }
    }

    fn namespace(target: &Target<'_>, values: &'a BTreeMap<String, String>) -> Self {
        Annotations {
            values,
            object: format!("namespace {}", target.namespace.unwrap_or_default()),
            metadata_path: "metadata",
        }
    }

    /// The value of `key` parsed, `None` when absent.
    fn parse<T>(&self, key: &str) -> Result<Option<T>, InjectError>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        self.read(key, |_, v| v.parse().map_err(|e: T::Err| e.to_string()))
    }

    /// The value of `key` read by `read(key, value)`, `None` when absent; its error is the
    /// reason the value is refused.
    fn read<T>(
        &self,
        key: &str,
        read: impl FnOnce(&str, &str) -> Result<T, String>,
    ) -> Result<Option<T>, InjectError> {
        self.values
            .get(key)
            .map(|v| {
                read(key, v).map_err(|reason| InjectError {
                    object: self.object.clone(),
                    field: format!("{}.annotations[{key:?}]", self.metadata_path),
                    reason,
                })
            })
            .transpose()
    }
}
