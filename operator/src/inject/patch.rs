//! What injection adds to a Pod, and the same as an RFC 6902 JSON patch.
//!
//! The patch adds, and replaces only the application's probes it rewrites: everything else the
//! Pod already has, fields this build does not know (a newer Kubernetes's) among them, passes
//! through untouched.
//!
//! Probes: in strict mode the kubelet's plaintext probes of an application port would be
//! redirected to the inbound proxy and fail its mTLS. As Istio and OSM do, an HTTP probe
//! (`httpGet`, HTTP, no `host`) is rewritten to the proxy's health port,
//! `/app-health/<container>/<startupz|livez|readyz>`, and the proxy forwards it to the
//! application's original port and path on the Pod's IP (`switchyard-init --app-probe`, which
//! writes it into the bootstrap). A probe that cannot be forwarded that way (`tcpSocket`,
//! `grpc`, HTTPS, or a `host`) has its port left out of inbound interception instead: that port
//! is then reached without the proxy, which the skip annotation would do too.

use std::collections::BTreeMap;

use json_patch::{
    AddOperation, Patch, PatchOperation, ReplaceOperation,
    jsonptr::{PointerBuf, Token},
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString};
use serde_json::Value;
use switchyard_adapters::{envoy::AppProbe, model::DataPlane};

use super::{
    BOOTSTRAP_FILE, INIT_CONTAINER, InjectConfig, InjectError, PROXY_CONTAINER, PodTemplate,
    RUN_DIR, RUN_VOLUME, TOKEN_DIR, TOKEN_EXPIRATION_SECONDS, TOKEN_FILE, TOKEN_VOLUME, Target,
    XTABLES_VOLUME,
};
use crate::{
    annotations,
    intercept::{CidrList, PortList, PortRange},
};

/// What interception leaves alone, from the Pod's annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Skips {
    pub(super) inbound_ports: PortList,
    pub(super) outbound_ports: PortList,
    pub(super) outbound_cidrs: CidrList,
}

/// Everything injection adds to one Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    /// The data plane chosen (Pod, then Namespace, then the mesh default).
    pub data_plane: DataPlane,
    /// Set on the Pod: `switchyard.dev/proxy-version`, the resolved
    /// `switchyard.dev/data-plane`, and `switchyard.dev/intercepted: "true"`.
    pub annotations: BTreeMap<String, String>,
    /// Put before the Pod's own init containers, in this order: `switchyard-init`, then
    /// `switchyard-proxy`, so that the Pod's init containers already have the mesh.
    pub init_containers: Vec<Container>,
    /// Appended to the Pod's volumes.
    pub volumes: Vec<Volume>,
    /// The application's probes pointed at the health port.
    pub probes: Vec<ProbeRewrite>,
}

/// One application probe, rewritten.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeRewrite {
    /// Index in `spec.containers`.
    pub container: usize,
    /// `startupProbe`, `livenessProbe` or `readinessProbe`.
    pub field: &'static str,
    pub probe: Probe,
}

/// What the Pod's probes need: the rewrites, the forwards the proxy serves for them, and the
/// ports of the probes that cannot be forwarded.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct ProbeRewrites {
    pub(super) rewrites: Vec<ProbeRewrite>,
    pub(super) app_probes: Vec<AppProbe>,
    pub(super) skip_ports: PortList,
}

impl ProbeRewrites {
    /// The probes of `spec`'s containers, against a proxy whose health port is `health_port`.
    pub(super) fn of(spec: &PodSpec, health_port: u16) -> Self {
        let mut out = ProbeRewrites::default();
        let mut skip = Vec::new();
        for (i, c) in spec.containers.iter().enumerate() {
            let probes = [
                ("startupProbe", "startupz", &c.startup_probe),
                ("livenessProbe", "livez", &c.liveness_probe),
                ("readinessProbe", "readyz", &c.readiness_probe),
            ];
            for (field, kind, probe) in probes {
                let Some(probe) = probe else { continue };
                if let Some(get) = &probe.http_get {
                    let Some(port) = container_port(c, &get.port) else {
                        continue;
                    };
                    let https = get
                        .scheme
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
                    if https || get.host.is_some() {
                        skip.push(port);
                        continue;
                    }
                    let path = format!("/app-health/{}/{kind}", c.name);
                    let target = match get.path.as_deref().unwrap_or("/") {
                        p if p.starts_with('/') => p.to_owned(),
                        p => format!("/{p}"),
                    };
                    out.app_probes.push(AppProbe {
                        path: path.clone(),
                        port,
                        target,
                    });
                    let mut rewritten = probe.clone();
                    rewritten.http_get = Some(HTTPGetAction {
                        path: Some(path),
                        port: IntOrString::Int(i32::from(health_port)),
                        scheme: Some("HTTP".into()),
                        host: None,
                        http_headers: get.http_headers.clone(),
                    });
                    out.rewrites.push(ProbeRewrite {
                        container: i,
                        field,
                        probe: rewritten,
                    });
                } else if let Some(tcp) = &probe.tcp_socket {
                    skip.extend(container_port(c, &tcp.port));
                } else if let Some(grpc) = &probe.grpc {
                    skip.extend(u16::try_from(grpc.port).ok());
                }
            }
        }
        out.skip_ports = skip.into_iter().filter_map(PortRange::port).collect();
        out
    }
}

/// A probe's port as a number: itself, or the container port of that name.
fn container_port(c: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

impl Injection {
    pub(super) fn new(
        data_plane: DataPlane,
        skip: &Skips,
        probes: &ProbeRewrites,
        config: &InjectConfig,
    ) -> Self {
        Injection {
            data_plane,
            annotations: BTreeMap::from([
                (
                    annotations::PROXY_VERSION.to_owned(),
                    config.version.clone(),
                ),
                (
                    annotations::DATA_PLANE.to_owned(),
                    data_plane.as_str().to_owned(),
                ),
                (annotations::INTERCEPTED.to_owned(), "true".to_owned()),
            ]),
            init_containers: vec![
                init_container(skip, &probes.app_probes, config),
                proxy_container(data_plane, config),
            ],
            volumes: volumes(config),
            probes: probes.rewrites.clone(),
        }
    }

    /// The proxy container's image.
    pub fn proxy_image(&self) -> &str {
        self.init_containers
            .iter()
            .find(|c| c.name == PROXY_CONTAINER)
            .and_then(|c| c.image.as_deref())
            .unwrap_or_default()
    }

    /// Refuses a Pod that already uses a name the injection adds (without being injected).
    pub(super) fn check_names(
        &self,
        target: &Target<'_>,
        spec: &PodSpec,
    ) -> Result<(), InjectError> {
        let taken = |field: &str, name: &str| InjectError {
            object: target.to_string(),
            field: format!("{}.{field}", target.spec_path()),
            reason: format!("{name:?} is a name the Switchyard injector adds; rename it"),
        };
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            if let Some(ours) = self.init_containers.iter().find(|o| o.name == c.name) {
                let field = if spec.containers.iter().any(|x| x.name == c.name) {
                    "containers"
                } else {
                    "initContainers"
                };
                return Err(taken(field, &ours.name));
            }
        }
        for v in spec.volumes.iter().flatten() {
            if self.volumes.iter().any(|o| o.name == v.name) {
                return Err(taken("volumes", &v.name));
            }
        }
        Ok(())
    }

    /// The JSON patch that makes `template`, found at `at` in its document (empty for a Pod
    /// itself, `/spec/template` in a Deployment), injected.
    pub fn json_patch(&self, template: PodTemplate<'_>, at: &PointerBuf) -> Patch {
        let path = |tokens: &[&str]| {
            let mut p = at.clone();
            for t in tokens {
                p.push_back(Token::new(*t));
            }
            p
        };
        let add =
            |path: PointerBuf, value: Value| PatchOperation::Add(AddOperation { path, value });
        let mut ops = Vec::new();

        // Annotations: one `add` each into a map that exists; else the map at once.
        let annotations: serde_json::Map<String, Value> = self
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        match template.metadata {
            None => ops.push(add(
                path(&["metadata"]),
                serde_json::json!({ "annotations": annotations }),
            )),
            Some(meta) if meta.annotations.is_none() => {
                ops.push(add(
                    path(&["metadata", "annotations"]),
                    Value::Object(annotations),
                ));
            }
            Some(_) => ops.extend(
                annotations
                    .into_iter()
                    .map(|(k, v)| add(path(&["metadata", "annotations", &k]), v)),
            ),
        }

        // Init containers go first: inserting at 0 in reverse order keeps ours in order.
        let containers: Vec<Value> = self.init_containers.iter().map(to_value).collect();
        match &template.spec.init_containers {
            None => ops.push(add(
                path(&["spec", "initContainers"]),
                Value::Array(containers),
            )),
            Some(_) => ops.extend(
                containers
                    .into_iter()
                    .rev()
                    .map(|c| add(path(&["spec", "initContainers", "0"]), c)),
            ),
        }

        for rewrite in &self.probes {
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path: path(&[
                    "spec",
                    "containers",
                    &rewrite.container.to_string(),
                    rewrite.field,
                ]),
                value: to_value(&rewrite.probe),
            }));
        }

        let volumes: Vec<Value> = self.volumes.iter().map(to_value).collect();
        match &template.spec.volumes {
            None => ops.push(add(path(&["spec", "volumes"]), Value::Array(volumes))),
            Some(_) => ops.extend(
                volumes
                    .into_iter()
                    .map(|v| add(path(&["spec", "volumes", "-"]), v)),
            ),
        }
        Patch(ops)
    }
}

/// Serialising the k8s-openapi types cannot fail (string keys, no non-finite floats); a
/// `Null` here would be a bug the tests catch.
fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

// === The containers and volumes ===

fn init_container(skip: &Skips, app_probes: &[AppProbe], config: &InjectConfig) -> Container {
    let mut args: Vec<String> = vec![
        "proxy-init".into(),
        "--proxy-uid".into(),
        config.proxy_uid.to_string(),
        "--inbound-port".into(),
        config.ports.inbound.to_string(),
        "--outbound-port".into(),
        config.ports.outbound.to_string(),
        "--health-port".into(),
        config.ports.health.to_string(),
    ];
    let mut list = |flag: &str, value: String| {
        if !value.is_empty() {
            args.extend([flag.to_owned(), value]);
        }
    };
    list("--skip-inbound-ports", skip.inbound_ports.to_string());
    list("--skip-outbound-ports", skip.outbound_ports.to_string());
    list("--skip-outbound-cidrs", skip.outbound_cidrs.to_string());
    for probe in app_probes {
        args.extend([
            "--app-probe".to_owned(),
            format!("{}={}:{}", probe.path, probe.port, probe.target),
        ]);
    }
    args.extend([
        "--bootstrap-out".into(),
        format!("{RUN_DIR}/{BOOTSTRAP_FILE}"),
        "--token-file".into(),
        super::token_path(),
        "--xds-host".into(),
        config.xds_host.clone(),
        "--xds-port".into(),
        config.xds_port.to_string(),
    ]);
    let r = &config.resources;
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(config.images.init.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        // The image's entrypoint is `switchyard`; only the arguments are ours.
        args: Some(args),
        env: Some(init_env(config)),
        resources: Some(resources(
            &r.cpu_request,
            &r.init_memory_request,
            &r.init_memory_limit,
        )),
        // Root with exactly the two capabilities iptables needs, for the Pod's network
        // namespace only; nothing else (no privilege escalation, no writable root).
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount(TOKEN_VOLUME, TOKEN_DIR, true),
            mount(RUN_VOLUME, RUN_DIR, false),
            mount(XTABLES_VOLUME, "/run", false),
        ]),
        ..Container::default()
    }
}

fn proxy_container(data_plane: DataPlane, config: &InjectConfig) -> Container {
    let bootstrap = format!("{RUN_DIR}/{BOOTSTRAP_FILE}");
    // The images' entrypoints are `switchyard-proxy` and `envoy`; only the arguments are ours.
    let (args, memory_request) = match data_plane {
        DataPlane::Bundled => (
            vec!["--bootstrap".into(), bootstrap],
            &config.resources.bundled_memory_request,
        ),
        DataPlane::Envoy => (
            ["-c".to_owned(), bootstrap]
                .into_iter()
                .chain(switchyard_adapters::envoy::ENVOY_FLAGS.map(str::to_owned))
                .chain(["-l".to_owned(), "warning".to_owned()])
                .collect(),
            &config.resources.envoy_memory_request,
        ),
    };
    let uid = i64::from(config.proxy_uid);
    Container {
        name: PROXY_CONTAINER.into(),
        image: Some(config.images.proxy(data_plane).to_owned()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        // A native sidecar: started in order before the app, running for the Pod's life.
        restart_policy: Some("Always".into()),
        env: Some(downward_env()),
        // The app starts only once the proxy has its configuration (up to 120 s). The probe
        // calls the health port: the admin port listens on 127.0.0.1, out of the kubelet's reach.
        startup_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".into()),
                port: IntOrString::Int(i32::from(config.ports.health)),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(1),
            failure_threshold: Some(120),
            ..Probe::default()
        }),
        resources: Some(resources(
            &config.resources.cpu_request,
            memory_request,
            &config.resources.proxy_memory_limit,
        )),
        security_context: Some(SecurityContext {
            run_as_user: Some(uid),
            run_as_group: Some(uid),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount(TOKEN_VOLUME, TOKEN_DIR, true),
            mount(RUN_VOLUME, RUN_DIR, true),
        ]),
        ..Container::default()
    }
}

fn volumes(config: &InjectConfig) -> Vec<Volume> {
    let empty_dir = |medium: Option<&str>| EmptyDirVolumeSource {
        medium: medium.map(str::to_owned),
        size_limit: None,
    };
    vec![
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(config.audience.clone()),
                        expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                        path: TOKEN_FILE.into(),
                    }),
                    ..VolumeProjection::default()
                }]),
                default_mode: None,
            }),
            ..Volume::default()
        },
        Volume {
            name: RUN_VOLUME.into(),
            empty_dir: Some(empty_dir(Some("Memory"))),
            ..Volume::default()
        },
        Volume {
            name: XTABLES_VOLUME.into(),
            empty_dir: Some(empty_dir(None)),
            ..Volume::default()
        },
    ]
}

/// `switchyard-init`'s environment: the downward API's, and the xDS CA certificate (public)
/// it writes into the bootstrap.
fn init_env(config: &InjectConfig) -> Vec<EnvVar> {
    let mut env = downward_env();
    if let Some(pem) = &config.xds_ca {
        env.push(EnvVar {
            name: crate::cli::controller::XDS_CA_ENV.into(),
            value: Some(pem.clone()),
            value_from: None,
        });
    }
    env
}

/// The Pod's name, namespace, IP and ServiceAccount, from the downward API.
fn downward_env() -> Vec<EnvVar> {
    [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_IP", "status.podIP"),
        ("POD_SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ]
    .into_iter()
    .map(|(name, field)| EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: field.into(),
            }),
            ..EnvVarSource::default()
        }),
    })
    .collect()
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn resources(cpu: &Quantity, memory: &Quantity, memory_limit: &Quantity) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), cpu.clone()),
            ("memory".to_owned(), memory.clone()),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            memory_limit.clone(),
        )])),
        ..ResourceRequirements::default()
    }
}
