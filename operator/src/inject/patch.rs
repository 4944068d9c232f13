//! What injection adds to a Pod, and the same as an RFC 6902 JSON patch.
//!
//! The patch only adds: it never rewrites what the Pod already has, so fields this build does
//! not know (a newer Kubernetes's) pass through untouched.

use std::collections::BTreeMap;

use json_patch::{
    AddOperation, Patch, PatchOperation,
    jsonptr::{PointerBuf, Token},
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString};
use serde_json::Value;
use switchyard_adapters::model::DataPlane;

use super::{
    BOOTSTRAP_FILE, INIT_CONTAINER, InjectConfig, InjectError, PROXY_CONTAINER, PodTemplate,
    RUN_DIR, RUN_VOLUME, TOKEN_DIR, TOKEN_EXPIRATION_SECONDS, TOKEN_FILE, TOKEN_VOLUME, Target,
    XTABLES_VOLUME,
};
use crate::{
    annotations,
    intercept::{CidrList, PortList},
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
    /// Set on the Pod: `switchyard.dev/proxy-version` and the resolved
    /// `switchyard.dev/data-plane`.
    pub annotations: BTreeMap<String, String>,
    /// Put before the Pod's own init containers, in this order: `switchyard-init`, then
    /// `switchyard-proxy`, so that the Pod's init containers already have the mesh.
    pub init_containers: Vec<Container>,
    /// Appended to the Pod's volumes.
    pub volumes: Vec<Volume>,
}

impl Injection {
    pub(super) fn new(data_plane: DataPlane, skip: &Skips, config: &InjectConfig) -> Self {
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
            ]),
            init_containers: vec![
                init_container(skip, config),
                proxy_container(data_plane, config),
            ],
            volumes: volumes(config),
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

fn init_container(skip: &Skips, config: &InjectConfig) -> Container {
    let mut args: Vec<String> = vec![
        "proxy-init".into(),
        "--proxy-uid".into(),
        config.proxy_uid.to_string(),
        "--inbound-port".into(),
        config.ports.inbound.to_string(),
        "--outbound-port".into(),
        config.ports.outbound.to_string(),
    ];
    let mut list = |flag: &str, value: String| {
        if !value.is_empty() {
            args.extend([flag.to_owned(), value]);
        }
    };
    list("--skip-inbound-ports", skip.inbound_ports.to_string());
    list("--skip-outbound-ports", skip.outbound_ports.to_string());
    list("--skip-outbound-cidrs", skip.outbound_cidrs.to_string());
    args.extend([
        "--bootstrap-out".into(),
        format!("{RUN_DIR}/{BOOTSTRAP_FILE}"),
        "--token-file".into(),
        format!("{TOKEN_DIR}/{TOKEN_FILE}"),
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
        env: Some(downward_env()),
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
            vec![
                "-c".into(),
                bootstrap,
                "--disable-hot-restart".into(),
                "-l".into(),
                "warning".into(),
            ],
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
        // The app starts only once the proxy has its configuration (up to 120 s).
        startup_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".into()),
                port: IntOrString::Int(i32::from(config.ports.admin)),
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
