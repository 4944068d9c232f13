//! Sidecar injection on the real node: the operator's mutating webhook, installed by
//! `switchyard install`, adds `switchyard-init` and the `switchyard-proxy` native sidecar to
//! the Pods of enrolled namespaces, with the image of the Pod's data plane (Pod annotation,
//! then Namespace annotation, then the mesh default: `SWITCHYARD_DATA_PLANE`); leaves the
//! others alone; refuses invalid annotations; reports Events; and produces what
//! `switchyard inject -f` produces for the same template.
//!
//! The assertions are on the admitted Pod objects, and on one injected Deployment rolling out:
//! `switchyard-init` installs interception and exits 0, the proxy passes its startup probe, and
//! only then does the app start. The suite pins both data planes through annotations itself,
//! so it runs once, not again per data plane.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{process::Command, time::Duration};

use serde_json::{Value, json};
use switchyard_e2e::{
    DataPlane,
    images::node_images,
    kube::KubeCluster,
    kube_mesh::{KubeMesh, OPERATOR_NAMESPACE},
    mesh::wait_for,
    switchyard_bin,
};

const INJECT: &str = "switchyard.dev/inject";
const DATA_PLANE: &str = "switchyard.dev/data-plane";
const PROXY_VERSION: &str = "switchyard.dev/proxy-version";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A Deployment `name` of one echo server, labelled `app: name`, with these Pod template
/// annotations. Namespace-less, so it applies into any namespace.
fn deployment(name: &str, annotations: &[(&str, &str)]) -> Value {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "echo",
                        "image": node_images().echo,
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["serve", "--http", "8080"],
                    }],
                },
            },
        },
    })
}

/// A bare Pod `name` with these annotations.
fn pod(name: &str, annotations: &[(&str, &str)]) -> Value {
    let mut d = deployment(name, annotations);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": d["spec"]["template"]["metadata"]["annotations"].take()},
        "spec": d["spec"]["template"]["spec"].take(),
    })
}

/// The first Pod of Deployment `app` in `ns`, once its ReplicaSet created one.
fn pod_of(cluster: &KubeCluster, ns: &str, app: &str) -> Value {
    let mut found = Value::Null;
    wait_for(
        Duration::from_secs(60),
        || {
            let list = cluster.get_json(&["pods", "-n", ns, "-l", &format!("app={app}")]);
            match list["items"].as_array().and_then(|i| i.first()) {
                Some(p) => {
                    found = p.clone();
                    true
                }
                None => false,
            }
        },
        &format!("a pod of deployment {ns}/{app}"),
    );
    found
}

fn init_names(pod: &Value) -> Vec<String> {
    pod["spec"]["initContainers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| c["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn other(dp: DataPlane) -> DataPlane {
    match dp {
        DataPlane::Envoy => DataPlane::Bundled,
        DataPlane::Bundled => DataPlane::Envoy,
    }
}

fn proxy_image(dp: DataPlane) -> &'static str {
    match dp {
        DataPlane::Envoy => &node_images().envoy,
        DataPlane::Bundled => &node_images().proxy,
    }
}

/// Asserts that `pod` was injected with the proxy of `dp`.
fn assert_injected(pod: &Value, dp: DataPlane) {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    assert_eq!(
        init_names(pod),
        ["switchyard-init", "switchyard-proxy"],
        "{name}"
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations[PROXY_VERSION], VERSION, "{name}");
    assert_eq!(annotations[DATA_PLANE], dp.as_str(), "{name}");

    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(init["image"], node_images().operator.as_str());
    assert_eq!(init["args"][0], "proxy-init");
    let args = init["args"].to_string();
    assert!(
        args.contains(&format!(
            r#""--xds-host","switchyard.{OPERATOR_NAMESPACE}.svc","--xds-port","15010""#
        )),
        "{args}"
    );
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );

    let proxy = &pod["spec"]["initContainers"][1];
    assert_eq!(proxy["image"], proxy_image(dp), "{name}");
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["startupProbe"]["httpGet"]["port"], 15020);
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
    for c in [init, proxy] {
        let env: Vec<&str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        // switchyard-init also gets the xDS CA (public) to write into the bootstrap.
        let mut want = vec!["POD_NAME", "POD_NAMESPACE", "POD_IP", "POD_SERVICE_ACCOUNT"];
        if c == init {
            want.push("SWITCHYARD_XDS_CA");
        }
        assert_eq!(env, want);
        let mounts = c["volumeMounts"].to_string();
        assert!(
            mounts.contains(r#""mountPath":"/var/run/secrets/switchyard""#),
            "{mounts}"
        );
    }
    let token = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "switchyard-token")
        .unwrap_or_else(|| panic!("{name}: no switchyard-token volume"));
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "switchyard", "expirationSeconds": 86400, "path": "token"})
    );
}

/// `(type, reason, note)` of the Events about `name` in `ns`, once one with `reason` exists.
fn wait_event(mesh: &KubeMesh, ns: &str, name: &str, reason: &str) -> (String, String, String) {
    let mut found = None;
    wait_for(
        Duration::from_secs(20),
        || {
            let list = mesh.cluster.get_json(&[
                "events.events.k8s.io",
                "-n",
                ns,
                "--field-selector",
                &format!("regarding.name={name}"),
            ]);
            found = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                    (s("reason") == reason).then(|| (s("type"), s("reason"), s("note")))
                });
            found.is_some()
        },
        &format!("a {reason} event about {ns}/{name}"),
    );
    found.unwrap()
}

/// Issue 14 finding 2, on the real node: the proxy's admin port listens on 127.0.0.1 inside the
/// Pod, so from the node (as from any other Pod) neither `POST /healthcheck/fail` nor
/// `GET /config_dump` reaches it; the health port answers `/ready` on the Pod's IP, and the
/// proxy is still ready afterwards.
fn admin_is_out_of_reach_and_probes_are_served(cluster: &KubeCluster, ns: &str, app: &str) {
    use std::net::{IpAddr, SocketAddr};
    use switchyard_e2e::mesh::http_request;

    let pod = pod_of(cluster, ns, app);
    let ip: IpAddr = pod["status"]["podIP"].as_str().unwrap().parse().unwrap();
    let health = SocketAddr::new(ip, 15020);
    let admin = SocketAddr::new(ip, 15000);
    let ready = http_request(health, "GET", "health", "/ready", &[], "").unwrap();
    assert_eq!(ready.status, 200, "{ns}/{app}: /ready on the health port");
    for (method, path) in [("POST", "/healthcheck/fail"), ("GET", "/config_dump")] {
        match http_request(admin, method, "admin", path, &[], "") {
            Err(e) => eprintln!("{ns}/{app}: {method} {admin}{path}: {e}"),
            Ok(r) => {
                eprintln!("{ns}/{app}: {method} {admin}{path}: status {}", r.status);
                assert_ne!(r.status, 200, "{method} {path} reached the admin interface");
                assert!(!r.body.contains("configs"), "{}", r.body);
            }
        }
    }
    let ready = http_request(health, "GET", "health", "/ready", &[], "").unwrap();
    assert_eq!(ready.status, 200, "{ns}/{app}: still ready");
}

fn annotate_namespace(cluster: &KubeCluster, ns: &str, annotations: &[(&str, &str)]) {
    let mut args = vec!["annotate".to_owned(), "namespace".to_owned(), ns.to_owned()];
    args.extend(annotations.iter().map(|(k, v)| format!("{k}={v}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster.kubectl_ok(&args);
}

fn apply(cluster: &KubeCluster, ns: &str, object: &Value) {
    cluster.apply_yaml(ns, &object.to_string());
}

#[test]
fn an_enrolled_namespace_gets_the_data_planes_proxy_and_nothing_else_is_touched() {
    let mesh = KubeMesh::start("inject");
    let cluster = mesh.cluster;
    let dp = mesh.data_plane;
    let ns = mesh.ns().to_owned();
    annotate_namespace(cluster, &ns, &[(INJECT, "enabled")]);

    // A Deployment rolled out: the mesh default data plane.
    apply(cluster, &ns, &deployment("web", &[]));
    let web = pod_of(cluster, &ns, "web");
    assert_injected(&web, dp);
    // The Event is about the ReplicaSet, where `kubectl describe` shows it.
    let rs = web["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap();
    let (kind, _, note) = wait_event(&mesh, &ns, rs, "Injected");
    assert_eq!(kind, "Normal");
    assert!(
        note.contains(&format!("injected the {} proxy", dp.as_str())),
        "{note}"
    );

    // The Pod's annotation chooses the other data plane.
    apply(
        cluster,
        &ns,
        &deployment("other", &[(DATA_PLANE, other(dp).as_str())]),
    );
    assert_injected(&pod_of(cluster, &ns, "other"), other(dp));

    // A Pod annotated disabled is left alone, and says why.
    apply(cluster, &ns, &pod("opted-out", &[(INJECT, "disabled")]));
    let opted_out = cluster.get_json(&["pod", "opted-out", "-n", &ns]);
    assert!(init_names(&opted_out).is_empty(), "{opted_out}");
    assert!(opted_out["metadata"]["annotations"][PROXY_VERSION].is_null());
    let (kind, _, note) = wait_event(&mesh, &ns, "opted-out", "InjectionSkipped");
    assert_eq!(kind, "Normal");
    assert!(
        note.contains("annotated switchyard.dev/inject=disabled"),
        "{note}"
    );

    // An invalid value is refused, with the message, and a Warning.
    let bad = pod("bad", &[(INJECT, "yes")]);
    let out = cluster.kubectl_stdin(&["create", "-n", &ns, "-f", "-"], &bad.to_string());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "created: {stderr}");
    assert!(
        stderr.contains(&format!(
            r#"admission webhook "inject.switchyard.dev" denied the request: pod {ns}/bad: metadata.annotations["switchyard.dev/inject"]: "yes" is not enabled or disabled"#
        )),
        "{stderr}"
    );
    let (kind, _, _) = wait_event(&mesh, &ns, "bad", "InjectionRejected");
    assert_eq!(kind, "Warning");

    // A server-side dry run gets the injection, and no Event.
    let dry = pod("dry", &[]);
    let out = cluster.kubectl_stdin_ok(
        &[
            "create",
            "-n",
            &ns,
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ],
        &dry.to_string(),
    );
    assert_injected(&serde_json::from_str(&out).unwrap(), dp);
    std::thread::sleep(Duration::from_secs(2));
    let events = mesh.events_about("dry");
    assert!(events.is_empty(), "{events:?}");

    // A namespace that chooses the data plane.
    let ns_dp = cluster.namespace("inject-dp");
    annotate_namespace(
        cluster,
        &ns_dp,
        &[(INJECT, "enabled"), (DATA_PLANE, other(dp).as_str())],
    );
    apply(cluster, &ns_dp, &deployment("web", &[]));
    assert_injected(&pod_of(cluster, &ns_dp, "web"), other(dp));

    // Both proxies got their configuration (their startup probes passed): each reached the
    // control plane over TLS with the injected CA and its token read from the projected file.
    for n in [ns.as_str(), &ns_dp] {
        cluster.wait_deployment_available(n, "web", Duration::from_secs(120));
        admin_is_out_of_reach_and_probes_are_served(cluster, n, "web");
    }

    // A namespace nobody enrolled.
    let plain = cluster.namespace("plain");
    apply(cluster, &plain, &deployment("web", &[]));
    let p = pod_of(cluster, &plain, "web");
    assert!(init_names(&p).is_empty(), "{p}");
    assert!(p["metadata"]["annotations"][PROXY_VERSION].is_null(), "{p}");

    // kube-system: never, whatever the Pod says.
    let system = pod("inject-e2e-never", &[(INJECT, "enabled")]);
    cluster.kubectl_stdin_ok(
        &["create", "-n", "kube-system", "-f", "-"],
        &system.to_string(),
    );
    let p = cluster.get_json(&["pod", "inject-e2e-never", "-n", "kube-system"]);
    cluster.kubectl_ok(&[
        "delete",
        "pod",
        "inject-e2e-never",
        "-n",
        "kube-system",
        "--wait=false",
    ]);
    assert!(init_names(&p).is_empty(), "{p}");
}

#[test]
fn switchyard_inject_gives_the_pod_the_webhook_gives() {
    let mesh = KubeMesh::start("inject-cli");
    let cluster = mesh.cluster;
    let dp = mesh.data_plane;
    let ns = mesh.ns().to_owned();
    annotate_namespace(cluster, &ns, &[(INJECT, "enabled")]);
    let template = deployment("web", &[]);
    apply(cluster, &ns, &template);
    let by_webhook = pod_of(cluster, &ns, "web");

    let file = mesh.dir.path().join("web.json");
    std::fs::write(&file, template.to_string()).unwrap();
    let out = Command::new(switchyard_bin())
        .args(["inject", "--data-plane", dp.as_str(), "--xds-ca-file"])
        .arg(mesh.xds_ca_file())
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("deployment web: injected"), "{stderr}");
    // Applied where nobody enrolled anything: the webhook finds the proxy there and passes.
    let plain = cluster.namespace("inject-cli-plain");
    cluster.kubectl_stdin_ok(
        &["apply", "-n", &plain, "-f", "-"],
        &String::from_utf8(out.stdout).unwrap(),
    );
    let by_cli = pod_of(cluster, &plain, "web");

    // Both went through the same server-side defaults; the ServiceAccount token volume differs
    // by name per Pod, and is not ours.
    let ours = |pod: &Value| {
        let strip = |c: &Value| {
            let mut c = c.clone();
            if let Some(mounts) = c["volumeMounts"].as_array_mut() {
                mounts.retain(|m| !m["name"].as_str().unwrap().starts_with("kube-api-access-"));
            }
            c
        };
        let inits: Vec<Value> = pod["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(strip)
            .collect();
        let volumes: Vec<Value> = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["name"].as_str().unwrap().starts_with("switchyard-"))
            .cloned()
            .collect();
        let a = &pod["metadata"]["annotations"];
        (
            inits,
            volumes,
            a[PROXY_VERSION].clone(),
            a[DATA_PLANE].clone(),
        )
    };
    assert_injected(&by_webhook, dp);
    assert_injected(&by_cli, dp);
    assert_eq!(ours(&by_cli), ours(&by_webhook));
    let (inits, volumes, ..) = ours(&by_webhook);
    assert_eq!(inits.len(), 2);
    assert_eq!(volumes.len(), 3);
}

/// Scales the operator back to two replicas however the test ends: the other tests of this
/// process need it.
struct ScaleBack<'a>(&'a KubeMesh);

impl Drop for ScaleBack<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .cluster
            .kubectl()
            .args([
                "scale",
                "deployment",
                "switchyard",
                "-n",
                OPERATOR_NAMESPACE,
                "--replicas=2",
            ])
            .output();
        if !std::thread::panicking() {
            self.0.wait_operators_ready(2, Duration::from_secs(120));
        }
    }
}

#[test]
fn with_no_operator_running_its_namespace_and_kube_system_still_create_pods() {
    let mesh = KubeMesh::start("inject-down");
    let cluster = mesh.cluster;
    let scale_back = ScaleBack(&mesh);
    cluster.kubectl_ok(&[
        "scale",
        "deployment",
        "switchyard",
        "-n",
        OPERATOR_NAMESPACE,
        "--replicas=0",
    ]);
    wait_for(
        Duration::from_secs(60),
        || {
            let eps = cluster.ready_endpoints(OPERATOR_NAMESPACE, "switchyard");
            eps.is_empty() && mesh.operators().is_empty()
        },
        "no operator replica running",
    );

    // The operator's own namespace never calls the webhook, so it can always restart.
    for (ns, name) in [
        (OPERATOR_NAMESPACE, "inject-e2e-operator-ns"),
        ("kube-system", "inject-e2e-system"),
    ] {
        let p = pod(name, &[(INJECT, "enabled")]);
        cluster.kubectl_stdin_ok(&["create", "-n", ns, "-f", "-"], &p.to_string());
        cluster.kubectl_ok(&["delete", "pod", name, "-n", ns, "--wait=false"]);
    }
    // Elsewhere, failurePolicy Fail refuses new Pods until a replica answers again.
    let p = pod("refused", &[]);
    let out = cluster.kubectl_stdin(&["create", "-n", mesh.ns(), "-f", "-"], &p.to_string());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "created while no injector runs");
    assert!(
        stderr.contains(r#"failed calling webhook "inject.switchyard.dev""#),
        "{stderr}"
    );

    drop(scale_back);
    // And once it runs (and its Service has the endpoints), Pods are created again.
    wait_for(
        Duration::from_secs(30),
        || {
            let out =
                cluster.kubectl_stdin(&["create", "-n", mesh.ns(), "-f", "-"], &p.to_string());
            out.status.success()
        },
        "a pod to be created once the operator runs",
    );
}

/// Issue 13 (probes): in strict mode, with no TrafficTarget, an injected Deployment whose app
/// has HTTP readiness and liveness probes on its own port becomes Ready on either data plane:
/// the injector points the probes at the proxy's health port, which forwards them to the app
/// (past mTLS, which the kubelet cannot speak). The app's own answer decides: a probe the app
/// fails keeps its Pod unready.
#[test]
fn http_probes_of_an_injected_pod_pass_in_strict_mode_and_the_apps_answer_decides() {
    let mesh = KubeMesh::start("inject-probes");
    let cluster = mesh.cluster;
    let ns = mesh.ns().to_owned();
    annotate_namespace(cluster, &ns, &[(INJECT, "enabled")]);
    let probed = |name: &str, data_plane: DataPlane, ready_path: &str| {
        let mut d = deployment(name, &[(DATA_PLANE, data_plane.as_str())]);
        let app = &mut d["spec"]["template"]["spec"]["containers"][0];
        app["ports"] = json!([{"name": "http", "containerPort": 8080}]);
        app["readinessProbe"] = json!({
            "httpGet": {"path": ready_path, "port": "http"},
            "periodSeconds": 1,
        });
        app["livenessProbe"] = json!({
            "httpGet": {"path": "/status/200", "port": 8080},
            "periodSeconds": 2,
        });
        d
    };
    for dp in [mesh.data_plane, other(mesh.data_plane)] {
        let name = format!("probed-{}", dp.as_str());
        apply(cluster, &ns, &probed(&name, dp, "/status/200"));
        let available = || {
            cluster.get_json(&["deployment", &name, "-n", &ns])["status"]["availableReplicas"]
                .as_i64()
                .unwrap_or(0)
                >= 1
        };
        let start = std::time::Instant::now();
        while !available() && start.elapsed() < Duration::from_secs(90) {
            std::thread::sleep(Duration::from_secs(1));
        }
        if !available() {
            let run = |args: &[&str]| {
                let out = cluster.kubectl().args(args).output().unwrap();
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            };
            let selector = format!("app={name}");
            panic!(
                "{name} not available:\n{}\n--- proxy log ---\n{}",
                run(&["describe", "pods", "-n", &ns, "-l", &selector]),
                run(&[
                    "logs",
                    "-n",
                    &ns,
                    "-l",
                    &selector,
                    "-c",
                    "switchyard-proxy",
                    "--tail",
                    "40"
                ]),
            );
        }
        let pod = pod_of(cluster, &ns, &name);
        let probe = &pod["spec"]["containers"][0]["readinessProbe"]["httpGet"];
        assert_eq!(probe["port"], 15020, "{probe}");
        assert_eq!(probe["path"], "/app-health/echo/readyz", "{probe}");
    }

    // The app says it is not ready: so does its Pod, while the proxy itself is up.
    let dp = mesh.data_plane;
    apply(cluster, &ns, &probed("sick", dp, "/status/503"));
    std::thread::sleep(Duration::from_secs(15));
    let pod = pod_of(cluster, &ns, "sick");
    let condition = |kind: &str| {
        pod["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .map(|c| c["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(condition("Initialized").as_deref(), Some("True"), "{pod}");
    assert_eq!(condition("Ready").as_deref(), Some("False"), "{pod}");
}
