use json_patch::jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::json_lookup::{names, strings};

const NS: &str = "demo";

fn config() -> InjectConfig {
    InjectConfig::new("switchyard-system")
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A Pod with one container and these annotations.
fn pod(pod_annotations: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-x", "annotations": annotations(pod_annotations)},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    })
}

fn decide_in(
    ns: &str,
    pod: &Value,
    ns_annotations: &[(&str, &str)],
) -> Result<Decision, InjectError> {
    decide_with(ns, pod, ns_annotations, &config())
}

fn decide_with(
    ns: &str,
    pod: &Value,
    ns_annotations: &[(&str, &str)],
    config: &InjectConfig,
) -> Result<Decision, InjectError> {
    let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
    let spec = typed.spec.clone().unwrap_or_default();
    let metadata = pod.get("metadata").map(|_| &typed.metadata);
    let target = Target {
        kind: "pod",
        namespace: Some(ns),
        name: "web-x",
        metadata_path: "metadata",
    };
    decide(
        &target,
        PodTemplate {
            metadata,
            spec: &spec,
        },
        &annotations(ns_annotations),
        config,
    )
}

/// The Pod after injection, or the reason it was skipped.
fn injected(pod: &Value, ns_annotations: &[(&str, &str)]) -> Result<Value, SkipReason> {
    injected_with(pod, ns_annotations, &config())
}

fn injected_with(
    pod: &Value,
    ns_annotations: &[(&str, &str)],
    config: &InjectConfig,
) -> Result<Value, SkipReason> {
    match decide_with(NS, pod, ns_annotations, config).unwrap() {
        Decision::Skip(reason) => Err(reason),
        Decision::Inject(injection) => {
            let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
            let spec = typed.spec.clone().unwrap();
            let metadata = pod.get("metadata").map(|_| &typed.metadata);
            let patch = injection.json_patch(
                PodTemplate {
                    metadata,
                    spec: &spec,
                },
                &PointerBuf::new(),
            );
            let mut out = pod.clone();
            json_patch::patch(&mut out, &patch).unwrap();
            Ok(out)
        }
    }
}

// === Enrolment ===

#[test]
fn the_pod_annotation_wins_over_the_namespace_and_absence_means_no() {
    use InjectMode::{Disabled, Enabled};
    let cases = [
        // (pod, namespace, injected?, skip reason)
        (None, None, Err(SkipReason::NotEnrolled)),
        (None, Some(Enabled), Ok(())),
        (
            None,
            Some(Disabled),
            Err(SkipReason::Disabled(Level::Namespace)),
        ),
        (Some(Enabled), None, Ok(())),
        (Some(Enabled), Some(Enabled), Ok(())),
        (Some(Enabled), Some(Disabled), Ok(())),
        (Some(Disabled), None, Err(SkipReason::Disabled(Level::Pod))),
        (
            Some(Disabled),
            Some(Enabled),
            Err(SkipReason::Disabled(Level::Pod)),
        ),
        (
            Some(Disabled),
            Some(Disabled),
            Err(SkipReason::Disabled(Level::Pod)),
        ),
    ];
    for (on_pod, on_ns, expected) in cases {
        let pod_a: Vec<(&str, &str)> = on_pod
            .map(|m: InjectMode| (annotations::INJECT, m.as_str()))
            .into_iter()
            .collect();
        let ns_a: Vec<(&str, &str)> = on_ns
            .map(|m: InjectMode| (annotations::INJECT, m.as_str()))
            .into_iter()
            .collect();
        let got = injected(&pod(&pod_a), &ns_a).map(|_| ());
        assert_eq!(got, expected, "pod {on_pod:?}, namespace {on_ns:?}");
    }
}

#[test]
fn invalid_inject_values_are_refused_naming_the_object_and_the_annotation() {
    let e = decide_in(NS, &pod(&[(annotations::INJECT, "yes")]), &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"pod demo/web-x: metadata.annotations["switchyard.dev/inject"]: "yes" is not enabled or disabled"#
    );
    // The namespace's is checked too, even when the Pod decides.
    let e = decide_in(
        NS,
        &pod(&[(annotations::INJECT, "enabled")]),
        &[(annotations::INJECT, "true")],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"namespace demo: metadata.annotations["switchyard.dev/inject"]: "true" is not enabled or disabled"#
    );
}

#[test]
fn every_skip_reason() {
    let enabled = [(annotations::INJECT, "enabled")];
    for ns in SYSTEM_NAMESPACES {
        assert_eq!(
            decide_in(ns, &pod(&enabled), &enabled).unwrap(),
            Decision::Skip(SkipReason::SystemNamespace(ns.to_owned()))
        );
    }
    // Even an invalid annotation: these namespaces are never looked at.
    assert_eq!(
        decide_in(
            "switchyard-system",
            &pod(&[(annotations::INJECT, "yes")]),
            &[]
        )
        .unwrap(),
        Decision::Skip(SkipReason::OperatorNamespace(
            "switchyard-system".to_owned()
        ))
    );
    let mut host = pod(&enabled);
    host["spec"]["hostNetwork"] = json!(true);
    assert_eq!(injected(&host, &[]), Err(SkipReason::HostNetwork));

    let marked = pod(&[
        (annotations::INJECT, "enabled"),
        (annotations::PROXY_VERSION, "0.0.9"),
    ]);
    assert_eq!(injected(&marked, &[]), Err(SkipReason::AlreadyInjected));
    for list in ["containers", "initContainers"] {
        let mut p = pod(&enabled);
        p["spec"][list] = json!([{"name": PROXY_CONTAINER, "image": "x"}]);
        if list == "initContainers" {
            p["spec"]["containers"] = json!([{"name": "app", "image": "app:1"}]);
        }
        assert_eq!(
            injected(&p, &[]),
            Err(SkipReason::AlreadyInjected),
            "{list}"
        );
    }
    assert_eq!(injected(&pod(&[]), &[]), Err(SkipReason::NotEnrolled));

    // Only what someone asked for is worth an Event.
    assert!(SkipReason::Disabled(Level::Pod).is_reported());
    assert!(SkipReason::HostNetwork.is_reported());
    assert!(!SkipReason::NotEnrolled.is_reported());
    assert!(!SkipReason::AlreadyInjected.is_reported());
    assert_eq!(
        SkipReason::Disabled(Level::Pod).to_string(),
        "the pod is annotated switchyard.dev/inject=disabled"
    );
}

// === The patch ===

#[test]
fn an_injected_pod_has_exactly_these_containers_volumes_and_annotations() {
    let out = injected(&pod(&[(annotations::INJECT, "enabled")]), &[]).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let env = json!([
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_SERVICE_ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
    ]);
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-x",
            "annotations": {
                "switchyard.dev/inject": "enabled",
                "switchyard.dev/proxy-version": version,
                "switchyard.dev/data-plane": "envoy",
                "switchyard.dev/intercepted": "true",
            },
        },
        "spec": {
            "containers": [{"name": "app", "image": "app:1"}],
            "initContainers": [
                {
                    "name": "switchyard-init",
                    "image": format!("localhost/switchyard:{version}"),
                    "imagePullPolicy": "IfNotPresent",
                    "args": [
                        "proxy-init", "--proxy-uid", "1337", "--inbound-port", "15006",
                        "--outbound-port", "15001",
                        "--health-port", "15020",
                        "--bootstrap-out", "/var/run/switchyard/bootstrap.json",
                        "--token-file", "/var/run/secrets/switchyard/token",
                        "--xds-host", "switchyard.switchyard-system.svc", "--xds-port", "15010",
                    ],
                    "env": env,
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "16Mi"},
                        "limits": {"memory": "64Mi"},
                    },
                    "securityContext": {
                        "runAsUser": 0,
                        "runAsNonRoot": false,
                        "privileged": false,
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "switchyard-token", "mountPath": "/var/run/secrets/switchyard", "readOnly": true},
                        {"name": "switchyard-run", "mountPath": "/var/run/switchyard"},
                        {"name": "switchyard-xtables", "mountPath": "/run"},
                    ],
                },
                {
                    "name": "switchyard-proxy",
                    "image": format!("localhost/switchyard-envoy:{version}"),
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["-c", "/var/run/switchyard/bootstrap.json", "--disable-hot-restart", "--drain-strategy", "immediate", "-l", "warning"],
                    "restartPolicy": "Always",
                    "env": env,
                    "startupProbe": {
                        "httpGet": {"path": "/ready", "port": 15020},
                        "periodSeconds": 1,
                        "failureThreshold": 120,
                    },
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "64Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                    "securityContext": {
                        "runAsUser": 1337,
                        "runAsGroup": 1337,
                        "runAsNonRoot": true,
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "switchyard-token", "mountPath": "/var/run/secrets/switchyard", "readOnly": true},
                        {"name": "switchyard-run", "mountPath": "/var/run/switchyard", "readOnly": true},
                    ],
                },
            ],
            "volumes": [
                {
                    "name": "switchyard-token",
                    "projected": {"sources": [{"serviceAccountToken": {
                        "audience": "switchyard",
                        "expirationSeconds": 86400,
                        "path": "token",
                    }}]},
                },
                {"name": "switchyard-run", "emptyDir": {"medium": "Memory"}},
                {"name": "switchyard-xtables", "emptyDir": {}},
            ],
        },
    });
    assert_eq!(
        out,
        expected,
        "{}",
        serde_json::to_string_pretty(&out).unwrap()
    );
}

#[test]
fn the_bundled_proxy_gets_its_own_image_arguments_and_memory_request() {
    let out = injected(
        &pod(&[
            (annotations::INJECT, "enabled"),
            (annotations::DATA_PLANE, "bundled"),
        ]),
        &[],
    )
    .unwrap();
    let proxy = &out["spec"]["initContainers"][1];
    assert_eq!(
        proxy["image"],
        format!("localhost/switchyard-proxy:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        proxy["args"],
        json!(["--bootstrap", "/var/run/switchyard/bootstrap.json"])
    );
    assert_eq!(proxy["resources"]["requests"]["memory"], "32Mi");
    assert_eq!(proxy["resources"]["limits"]["memory"], "256Mi");
}

#[test]
fn tapping_is_off_where_the_pod_or_else_its_namespace_says_so() {
    let enabled = (annotations::INJECT, "enabled");
    let tap = |on_pod: Option<&str>, on_ns: Option<&str>| {
        let mut pod_annotations = vec![enabled];
        pod_annotations.extend(on_pod.map(|v| (annotations::TAP, v)));
        let ns: Vec<_> = on_ns.map(|v| (annotations::TAP, v)).into_iter().collect();
        let out = injected_with(&pod(&pod_annotations), &ns, &config()).unwrap();
        out["metadata"]["annotations"][annotations::TAP].clone()
    };
    // Tapping is on unless something says otherwise; nothing is written then.
    assert_eq!(tap(None, None), Value::Null);
    assert_eq!(tap(None, Some("disabled")), "disabled");
    assert_eq!(tap(Some("disabled"), None), "disabled");
    // The Pod's own value wins (and stays where it was written).
    assert_eq!(tap(Some("enabled"), Some("disabled")), "enabled");
    let e = decide_in(NS, &pod(&[enabled]), &[(annotations::TAP, "off")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"namespace demo: metadata.annotations["switchyard.dev/tap"]: "off" is not enabled or disabled"#
    );
}

#[test]
fn the_data_plane_comes_from_the_pod_then_the_namespace_then_the_mesh_default() {
    let enabled = (annotations::INJECT, "enabled");
    let bundled_default = InjectConfig {
        default_data_plane: DataPlane::Bundled,
        ..config()
    };
    let dp = |pod_dp: Option<&str>, ns_dp: Option<&str>, config: &InjectConfig| {
        let mut on_pod = vec![enabled];
        on_pod.extend(pod_dp.map(|d| (annotations::DATA_PLANE, d)));
        let on_ns: Vec<_> = ns_dp
            .map(|d| (annotations::DATA_PLANE, d))
            .into_iter()
            .collect();
        let out = injected_with(&pod(&on_pod), &on_ns, config).unwrap();
        let written = out["metadata"]["annotations"][annotations::DATA_PLANE].clone();
        let image = out["spec"]["initContainers"][1]["image"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(image.contains(if written == "envoy" {
            "switchyard-envoy"
        } else {
            "switchyard-proxy"
        }));
        written
    };
    assert_eq!(dp(None, None, &config()), "envoy");
    assert_eq!(dp(None, None, &bundled_default), "bundled");
    assert_eq!(dp(None, Some("bundled"), &config()), "bundled");
    assert_eq!(dp(None, Some("envoy"), &bundled_default), "envoy");
    assert_eq!(
        dp(Some("envoy"), Some("bundled"), &bundled_default),
        "envoy"
    );
    assert_eq!(dp(Some("bundled"), Some("envoy"), &config()), "bundled");

    let e = decide_in(
        NS,
        &pod(&[enabled, (annotations::DATA_PLANE, "linkerd")]),
        &[],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"pod demo/web-x: metadata.annotations["switchyard.dev/data-plane"]: "linkerd" is not a data plane (envoy or bundled)"#
    );
    let e = decide_in(NS, &pod(&[enabled]), &[(annotations::DATA_PLANE, "Envoy")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"namespace demo: metadata.annotations["switchyard.dev/data-plane"]: "Envoy" is not a data plane (envoy or bundled)"#
    );
    // Not injected: the data plane is not read, so not refused.
    assert!(decide_in(NS, &pod(&[(annotations::DATA_PLANE, "linkerd")]), &[]).is_ok());
}

#[test]
fn bad_skip_lists_are_refused_naming_the_annotation_and_the_element() {
    for (key, value, reason) in [
        (
            annotations::SKIP_INBOUND_PORTS,
            "80,http",
            r#""http" is not a port (1-65535) or a range of ports (8000-8010)"#,
        ),
        (
            annotations::SKIP_OUTBOUND_PORTS,
            "100-10",
            r#""100-10" is a range whose first port is after its last"#,
        ),
        (
            annotations::SKIP_OUTBOUND_CIDRS,
            "10.0.0.0/33",
            r#""10.0.0.0/33" has a prefix longer than 32 bits"#,
        ),
    ] {
        let e = decide_in(
            NS,
            &pod(&[(annotations::INJECT, "enabled"), (key, value)]),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field, format!("metadata.annotations[{key:?}]"));
        assert_eq!(e.reason, reason);
    }
}

#[test]
fn the_patch_puts_ours_first_keeps_what_the_pod_has_and_adds_maps_that_are_missing() {
    let enabled = (annotations::INJECT, "enabled");
    let mut p = pod(&[enabled]);
    p["metadata"]["annotations"]["other"] = json!("kept");
    p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m:1"}]);
    p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    // Fields this build may not know are carried through untouched.
    p["spec"]["someFutureField"] = json!({"x": 1});
    let out = injected(&p, &[]).unwrap();
    assert_eq!(
        names(&out["spec"]["initContainers"]),
        ["switchyard-init", "switchyard-proxy", "migrate"]
    );
    assert_eq!(
        names(&out["spec"]["volumes"]),
        [
            "data",
            "switchyard-token",
            "switchyard-run",
            "switchyard-xtables"
        ]
    );
    assert_eq!(out["metadata"]["annotations"]["other"], "kept");
    assert_eq!(out["spec"]["someFutureField"], json!({"x": 1}));

    // A namespace-enrolled Pod with no annotations, or no metadata at all.
    let mut bare = pod(&[]);
    bare["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let out = injected(&bare, &[enabled]).unwrap();
    assert_eq!(out["metadata"]["name"], "web-x");
    assert_eq!(
        out["metadata"]["annotations"][annotations::DATA_PLANE],
        "envoy"
    );
    bare.as_object_mut().unwrap().remove("metadata");
    let out = injected(&bare, &[enabled]).unwrap();
    assert_eq!(
        out["metadata"]["annotations"][annotations::PROXY_VERSION],
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn a_name_the_injector_adds_that_the_pod_already_uses_is_refused() {
    let enabled = (annotations::INJECT, "enabled");
    let mut p = pod(&[enabled]);
    p["spec"]["volumes"] = json!([{"name": RUN_VOLUME, "emptyDir": {}}]);
    let e = decide_in(NS, &p, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"pod demo/web-x: spec.volumes: "switchyard-run" is a name the Switchyard injector adds; rename it"#
    );
    let mut p = pod(&[enabled]);
    p["spec"]["initContainers"] = json!([{"name": INIT_CONTAINER, "image": "x"}]);
    assert_eq!(
        decide_in(NS, &p, &[]).unwrap_err().field,
        "spec.initContainers"
    );
}

#[test]
fn the_configuration_reaches_the_patch() {
    let config = InjectConfig {
        images: Images::new("registry.example/mesh", "v9"),
        xds_host: "xds.example".into(),
        xds_port: 18000,
        audience: "aud".into(),
        version: "9.9.9".into(),
        ..InjectConfig::new("mesh")
    };
    let out = injected_with(&pod(&[(annotations::INJECT, "enabled")]), &[], &config).unwrap();
    let init = &out["spec"]["initContainers"][0];
    assert_eq!(init["image"], "registry.example/mesh/switchyard:v9");
    let args = init["args"].to_string();
    assert!(
        args.contains(r#""--xds-host","xds.example","--xds-port","18000""#),
        "{args}"
    );
    assert_eq!(
        out["spec"]["initContainers"][1]["image"],
        "registry.example/mesh/switchyard-envoy:v9"
    );
    assert_eq!(
        out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "aud"
    );
    assert_eq!(
        out["metadata"]["annotations"][annotations::PROXY_VERSION],
        "9.9.9"
    );
    assert_eq!(
        config.exempt("mesh"),
        Some(SkipReason::OperatorNamespace("mesh".into()))
    );
    assert_eq!(config.exempt("switchyard-system"), None);
}

// === Idempotence ===

fn arb_pod() -> impl Strategy<Value = (Value, Vec<(&'static str, &'static str)>)> {
    let inject = prop::option::of(prop::sample::select(vec!["enabled", "disabled"]));
    let data_plane = prop::option::of(prop::sample::select(vec!["envoy", "bundled"]));
    (
        inject.clone(),
        inject,
        data_plane.clone(),
        data_plane,
        prop::option::of(prop::collection::vec("[a-z]{1,6}", 0..3)),
        prop::option::of(prop::collection::vec("[a-z]{1,6}", 0..3)),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(pod_inject, ns_inject, pod_dp, ns_dp, inits, volumes, host, has_annotations)| {
                let mut on_pod = Vec::new();
                on_pod.extend(pod_inject.map(|v| (annotations::INJECT, v)));
                on_pod.extend(pod_dp.map(|v| (annotations::DATA_PLANE, v)));
                let mut p = pod(&on_pod);
                if !has_annotations && on_pod.is_empty() {
                    p["metadata"].as_object_mut().unwrap().remove("annotations");
                }
                if let Some(inits) = inits {
                    let list: Vec<Value> = inits
                        .iter()
                        .enumerate()
                        .map(|(i, n)| json!({"name": format!("{n}-{i}"), "image": "i"}))
                        .collect();
                    p["spec"]["initContainers"] = Value::Array(list);
                }
                if let Some(volumes) = volumes {
                    let list: Vec<Value> = volumes
                        .iter()
                        .enumerate()
                        .map(|(i, n)| json!({"name": format!("{n}-{i}"), "emptyDir": {}}))
                        .collect();
                    p["spec"]["volumes"] = Value::Array(list);
                }
                if host {
                    p["spec"]["hostNetwork"] = json!(true);
                }
                let mut on_ns = Vec::new();
                on_ns.extend(ns_inject.map(|v| (annotations::INJECT, v)));
                on_ns.extend(ns_dp.map(|v| (annotations::DATA_PLANE, v)));
                (p, on_ns)
            },
        )
}

proptest! {
    /// Injecting an injected Pod changes nothing, and the same Pod always gets the same patch.
    #[test]
    fn injection_is_idempotent_and_deterministic((p, on_ns) in arb_pod()) {
        let first = injected(&p, &on_ns);
        prop_assert_eq!(&first, &injected(&p, &on_ns));
        if let Ok(once) = first {
            prop_assert_eq!(injected(&once, &on_ns), Err(SkipReason::AlreadyInjected));
            // Whatever the namespace says now.
            prop_assert_eq!(injected(&once, &[]), Err(SkipReason::AlreadyInjected));
            let containers = once["spec"]["initContainers"].as_array().unwrap();
            prop_assert_eq!(containers[1]["name"].as_str(), Some(PROXY_CONTAINER));
        }
    }
}

/// The init container's command line is one `switchyard proxy-init` accepts, with the Pod's
/// skip lists (normalised) and the proxy's ports and user as interception reads them.
#[test]
fn the_init_containers_arguments_are_a_proxy_init_command_line() {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    let out = injected(
        &pod(&[
            (annotations::INJECT, "enabled"),
            (annotations::SKIP_INBOUND_PORTS, "9000-9100, 8081"),
            (annotations::SKIP_OUTBOUND_PORTS, "5432,6379"),
            (
                annotations::SKIP_OUTBOUND_CIDRS,
                "fd00::/8, 169.254.169.254",
            ),
        ]),
        &[],
    )
    .unwrap();
    let args = strings(&out["spec"]["initContainers"][0]["args"]);
    let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(after("--skip-inbound-ports"), "8081,9000-9100");
    assert_eq!(
        after("--skip-outbound-cidrs"),
        "169.254.169.254/32,fd00::/8"
    );
    // The image's entrypoint is the `switchyard` binary; the downward API gives POD_IP.
    let cli = Cli::try_parse_from(
        ["switchyard"]
            .into_iter()
            .chain(args)
            .chain(["--pod-ip", "10.1.0.7"]),
    )
    .unwrap();
    let Command::ProxyInit(init) = cli.command else {
        panic!("not proxy-init: {:?}", cli.command)
    };
    let config = init.config().unwrap();
    assert_eq!(config.proxy_uid, 1337);
    assert_eq!(config.inbound_port, 15006);
    assert_eq!(config.outbound_port, 15001);
    assert_eq!(config.skip_inbound_ports.to_string(), "8081,9000-9100");
    assert_eq!(config.skip_outbound_ports.to_string(), "5432,6379");
    assert_eq!(
        config.skip_outbound_cidrs.to_string(),
        "169.254.169.254/32,fd00::/8"
    );
    assert_eq!(
        init.bootstrap_out,
        std::path::Path::new("/var/run/switchyard/bootstrap.json")
    );
    assert_eq!(
        init.bootstrap.token_file,
        std::path::Path::new("/var/run/secrets/switchyard/token")
    );
    assert_eq!(init.bootstrap.xds_host, "switchyard.switchyard-system.svc");
    assert_eq!(init.bootstrap.xds_port, 15010);
}

/// HTTP probes move to the health port, where the proxy forwards them to the application;
/// probes it cannot forward get their port let through interception instead.
#[test]
fn http_probes_are_rewritten_to_the_health_port_and_other_probes_ports_are_skipped() {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    let mut p = pod(&[(annotations::INJECT, "enabled")]);
    p["spec"]["containers"] = json!([
        {
            "name": "web",
            "image": "web:1",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {
                "httpGet": {"path": "healthz?full=1", "port": "http",
                            "httpHeaders": [{"name": "x-probe", "value": "1"}]},
                "periodSeconds": 3,
            },
            "livenessProbe": {"httpGet": {"port": 8081}},
            "startupProbe": {"tcpSocket": {"port": 9000}},
        },
        {
            "name": "tls",
            "image": "tls:1",
            "readinessProbe": {"httpGet": {"path": "/", "port": 8443, "scheme": "HTTPS"}},
            "livenessProbe": {"grpc": {"port": 9090}},
            "startupProbe": {"exec": {"command": ["true"]}},
        },
    ]);
    let out = injected(&p, &[]).unwrap();
    let web = &out["spec"]["containers"][0];
    assert_eq!(
        web["readinessProbe"],
        json!({
            "httpGet": {"path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP",
                        "httpHeaders": [{"name": "x-probe", "value": "1"}]},
            "periodSeconds": 3,
        })
    );
    assert_eq!(
        web["livenessProbe"]["httpGet"],
        json!({"path": "/app-health/web/livez", "port": 15020, "scheme": "HTTP"})
    );
    assert_eq!(
        web["startupProbe"],
        p["spec"]["containers"][0]["startupProbe"]
    );
    assert_eq!(out["spec"]["containers"][1], p["spec"]["containers"][1]);

    let args: Vec<String> = out["spec"]["initContainers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let cli = Cli::try_parse_from(
        std::iter::once("switchyard".to_owned())
            .chain(args)
            .chain(["--pod-ip".to_owned(), "10.1.0.7".to_owned()]),
    )
    .unwrap();
    let Command::ProxyInit(init) = cli.command else {
        panic!("not proxy-init")
    };
    assert_eq!(
        init.bootstrap.app_probes,
        [
            "/app-health/web/livez=8081:/",
            "/app-health/web/readyz=8080:/healthz?full=1",
        ]
    );
    // The TCP, HTTPS and gRPC probes' ports bypass the inbound proxy.
    assert_eq!(
        init.config().unwrap().skip_inbound_ports.to_string(),
        "8443,9000,9090"
    );
    // Injecting again changes nothing.
    assert_eq!(injected(&out, &[]), Err(SkipReason::AlreadyInjected));
}
