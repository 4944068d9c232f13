//! A mesh in Kubernetes mode on a real node, for end-to-end tests: `switchyard install` piped
//! into `kubectl apply` on the [`node_cluster`], so the operator runs as its own Deployment (two
//! replicas, the install's image and RBAC); backends are Deployments of the echo workload whose
//! EndpointSlices Kubernetes' own controller writes; client proxies authenticate with their
//! Pods' ServiceAccount tokens.
//!
//! Until sidecar injection exists, a client's proxy is a host process started inside its Pod's
//! network and pid namespaces (`nsenter`): it binds the Pod's IP as an injected sidecar would,
//! and dies with the Pod or the cluster.
//!
//! The CRDs and the operator are cluster-wide, so one mesh runs at a time per test process:
//! [`KubeMesh::start`] takes a process-wide lock that the mesh holds until dropped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a panic is the test's failure report"
)]

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use serde_json::Value;

use crate::{
    DataPlane,
    kube::{KubeCluster, Namespace, PodProcess, node_cluster},
    mesh::{Response, Sidecar, http_get, start_proxy_with, wait_for},
    switchyard_bin,
};

/// The operator's namespace, as `switchyard install` creates it.
pub const OPERATOR_NAMESPACE: &str = "switchyard-system";
/// The operator Pods' label.
pub const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=switchyard";
/// The operator replicas the install runs (its default).
pub const OPERATOR_REPLICAS: usize = 2;
/// The API server's audience: tokens the operator uses to talk to it.
const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// The operator's admin port (`/readyz`, `/metrics`), on every replica's Pod IP.
pub const OPERATOR_ADMIN_PORT: u16 = 9090;
/// The echo workload's HTTP port in backend Pods; their Services expose it on 80.
pub const ECHO_HTTP_PORT: u16 = 8080;

/// One replica of the operator: a Pod of the `switchyard` Deployment.
#[derive(Clone, Debug)]
pub struct Operator {
    pub name: String,
    pub ip: IpAddr,
}

impl Operator {
    /// `GET path` on the admin port.
    pub fn admin_get(&self, path: &str) -> std::io::Result<Response> {
        http_get(
            SocketAddr::new(self.ip, OPERATOR_ADMIN_PORT),
            "admin",
            path,
            &[],
        )
    }

    /// A sample of `/metrics` (summed over labels), 0 when absent or unreachable.
    pub fn metric(&self, name: &str) -> u64 {
        let Ok(r) = self.admin_get("/metrics") else {
            return 0;
        };
        r.body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let base = series.split('{').next()?;
                (base == name).then(|| value.parse::<f64>().ok())?
            })
            .map(|v| v as u64)
            .sum()
    }

    /// A labelled sample, e.g. `switchyard_status_writes_total{result="ok"}`.
    pub fn metric_series(&self, series: &str) -> u64 {
        let Ok(r) = self.admin_get("/metrics") else {
            return 0;
        };
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    pub fn is_ready(&self) -> bool {
        self.admin_get("/readyz").is_ok_and(|r| r.status == 200)
    }
}

/// The Kubernetes-mode mesh of one test.
pub struct KubeMesh {
    pub cluster: &'static KubeCluster,
    pub ns: Namespace<'static>,
    pub dir: tempfile::TempDir,
    pub data_plane: DataPlane,
    operator_kubeconfig: PathBuf,
    sidecars: Vec<(Sidecar, PodProcess)>,
    _serial: MutexGuard<'static, ()>,
}

/// Per process: the PKI directory `switchyard install` reuses (so installing again for the
/// next test rotates nothing).
fn pki_dir() -> &'static Path {
    static PKI: OnceLock<tempfile::TempDir> = OnceLock::new();
    PKI.get_or_init(|| tempfile::tempdir().expect("pki dir"))
        .path()
}

impl KubeMesh {
    /// Installs Switchyard into the node cluster (`switchyard install | kubectl apply`; again
    /// for every test, which changes nothing once installed), waits until both operator
    /// replicas are ready, and makes a namespace for the test.
    pub fn start(prefix: &str) -> KubeMesh {
        static SERIAL: Mutex<()> = Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let cluster = node_cluster();
        let data_plane = DataPlane::from_env();
        let yaml = install_yaml(data_plane);
        cluster.kubectl_stdin_ok(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            &yaml,
        );
        cluster.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ]);
        let dir = tempfile::tempdir().expect("tempdir");
        let token = cluster.create_token(
            OPERATOR_NAMESPACE,
            "switchyard",
            API_AUDIENCE,
            None,
            Duration::from_secs(3600),
        );
        let operator_kubeconfig = dir.path().join("operator.kubeconfig");
        cluster.kubeconfig_for_token(&token, &operator_kubeconfig);
        let ns = cluster.namespace(prefix);
        let mesh = KubeMesh {
            cluster,
            ns,
            dir,
            data_plane,
            operator_kubeconfig,
            sidecars: Vec::new(),
            _serial: serial,
        };
        mesh.wait_operators_ready(OPERATOR_REPLICAS, Duration::from_secs(120));
        mesh
    }

    /// The test namespace's name.
    pub fn ns(&self) -> &str {
        self.ns.name()
    }

    /// A kubeconfig with a token of the operator's ServiceAccount (what its Pods run as).
    pub fn operator_kubeconfig(&self) -> &Path {
        &self.operator_kubeconfig
    }

    /// The operator's Pods that are running (not being deleted), by name.
    pub fn operators(&self) -> Vec<Operator> {
        let list =
            self.cluster
                .get_json(&["pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR]);
        let mut ops: Vec<Operator> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| {
                Some(Operator {
                    name: p["metadata"]["name"].as_str()?.to_owned(),
                    ip: p["status"]["podIP"].as_str()?.parse().ok()?,
                })
            })
            .collect();
        ops.sort_by(|a, b| a.name.cmp(&b.name));
        ops
    }

    /// The operator replica named `name`, waiting up to 10 s for it: a replacement replica can
    /// take the lease before the kubelet has written its IP into its status.
    ///
    /// # Panics
    ///
    /// When no running operator Pod has that name by then.
    pub fn operator(&self, name: &str) -> Operator {
        let mut found = None;
        wait_for(
            Duration::from_secs(10),
            || {
                found = self.operators().into_iter().find(|o| o.name == name);
                found.is_some()
            },
            &format!("running operator Pod {name}"),
        );
        found.expect("found")
    }

    /// Waits until `n` operator Pods run and answer `/readyz`, and the Deployment reports
    /// them available.
    pub fn wait_operators_ready(&self, n: usize, within: Duration) {
        wait_for(
            within,
            || {
                let ops = self.operators();
                ops.len() == n && ops.iter().all(Operator::is_ready) && {
                    let d = self.cluster.get_json(&[
                        "deployment",
                        "switchyard",
                        "-n",
                        OPERATOR_NAMESPACE,
                    ]);
                    d["status"]["availableReplicas"].as_u64() == Some(n as u64)
                }
            },
            &format!("{n} operator replicas to be ready"),
        );
    }

    /// `kubectl delete pod` of an operator replica (graceful: SIGTERM, as a rollout or a node
    /// drain does), without waiting for it to go.
    pub fn delete_operator_pod(&self, name: &str) {
        self.cluster.kubectl_ok(&[
            "delete",
            "pod",
            name,
            "-n",
            OPERATOR_NAMESPACE,
            "--wait=false",
        ]);
    }

    /// `kubectl apply -f -` of `yaml` in the test namespace.
    pub fn apply(&self, yaml: &str) {
        self.cluster.apply_yaml(self.ns(), yaml);
    }

    /// `kubectl <args> -n <ns>`.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["-n", self.ns()]);
        self.cluster.kubectl_ok(&all)
    }

    /// An unmeshed backend: a Deployment `name` of `replicas` echo servers answering with
    /// `name`, and a ClusterIP Service `name` (port 80, `http`) selecting them; returns once
    /// the Deployment is available and the Service's EndpointSlice lists every replica ready.
    pub fn backend(&self, name: &str, replicas: u32) {
        self.apply(&echo_deployment(name, replicas, &["--name", name]));
        self.apply(&service_yaml(name, name));
        self.cluster
            .wait_deployment_available(self.ns(), name, Duration::from_secs(60));
        self.cluster.wait_ready_endpoints(
            self.ns(),
            name,
            replicas as usize,
            Duration::from_secs(30),
        );
    }

    /// Creates client Pod `pod` (ServiceAccount `sa`, created if missing; the echo workload
    /// sleeping), starts its proxy as a host process in the Pod's network and pid namespaces
    /// with a Pod-bound token of audience `switchyard`, and waits until the proxy is ready.
    pub fn sidecar(&mut self, pod: &str, sa: &str, labels: &[(&str, &str)]) -> Sidecar {
        let _ = self
            .cluster
            .kubectl()
            .args(["create", "serviceaccount", sa, "-n", self.ns()])
            .output();
        self.apply(&sleeper_pod(pod, sa, labels));
        let ip = self
            .cluster
            .wait_pod_running(self.ns(), pod, Duration::from_secs(60));
        let token = self.cluster.create_token(
            self.ns(),
            sa,
            "switchyard",
            Some(pod),
            Duration::from_secs(3600),
        );
        let token_file = self.dir.path().join(format!("{pod}.token"));
        std::fs::write(&token_file, token).expect("token file");
        let xds = self.cluster.service_ip(OPERATOR_NAMESPACE, "switchyard");
        // The harness dials the Service's IP; the certificate holds the Service's name.
        let ca_file = self.xds_ca_file();
        let out = Command::new(switchyard_bin())
            .args(["bootstrap", "--pod"])
            .arg(format!("{}/{pod}", self.ns()))
            .arg("--pod-ip")
            .arg(ip.to_string())
            // The test drives the proxy from the host, outside the Pod: its admin interface
            // listens on the Pod's IP instead of 127.0.0.1 (an injected proxy's stays there).
            .arg("--admin-ip")
            .arg(ip.to_string())
            .arg("--token-file")
            .arg(&token_file)
            .arg("--xds-host")
            .arg(xds.to_string())
            .args(["--xds-port", "15010"])
            .arg("--xds-ca-file")
            .arg(&ca_file)
            .args([
                "--xds-server-name",
                &format!("switchyard.{OPERATOR_NAMESPACE}.svc"),
            ])
            .output()
            .expect("switchyard bootstrap");
        assert!(
            out.status.success(),
            "switchyard bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = self.dir.path().join(format!("{pod}.bootstrap.json"));
        std::fs::write(&path, &out.stdout).expect("bootstrap");
        let bootstrap: Value = serde_json::from_slice(&out.stdout).expect("json");
        let log = self.dir.path().join(format!("{pod}.proxy.log"));
        let nsenter = self.cluster.nsenter_pod(self.ns(), pod);
        let (sidecar, child) =
            start_proxy_with(pod, &path, &bootstrap, self.data_plane, &log, &nsenter);
        self.sidecars
            .push((sidecar.clone(), PodProcess::new(child)));
        wait_for(
            Duration::from_secs(30),
            || sidecar.admin_get("/ready").is_ok_and(|r| r.status == 200),
            &format!("{pod}'s proxy to be ready"),
        );
        sidecar
    }

    /// A file holding the CA certificate the operator's xDS certificate chains to: the webhook
    /// Secret's `ca.crt` (public), which the injector also gives to Pods.
    pub fn xds_ca_file(&self) -> PathBuf {
        let out = self
            .cluster
            .kubectl()
            .args([
                "get",
                "secret",
                "switchyard-webhook-tls",
                "-n",
                OPERATOR_NAMESPACE,
                "-o",
                r#"go-template={{index .data "ca.crt" | base64decode}}"#,
            ])
            .output()
            .expect("kubectl get secret");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = self.dir.path().join("xds-ca.crt");
        std::fs::write(&file, &out.stdout).expect("xds ca file");
        file
    }

    /// `status.conditions` of an SMI object, by type: (status, reason, message).
    pub fn conditions(&self, resource: &str, name: &str) -> Vec<(String, String, String, String)> {
        let obj = self.cluster.get_json(&[resource, name, "-n", self.ns()]);
        obj["status"]["conditions"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                        (s("type"), s("status"), s("reason"), s("message"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether condition `type_` of the object has `status` (and `reason`, when given).
    pub fn has_condition(
        &self,
        resource: &str,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> bool {
        self.conditions(resource, name)
            .iter()
            .any(|(t, s, r, _)| t == type_ && s == status && reason.is_none_or(|want| r == want))
    }

    /// Events about `name` in the test namespace, as (type, reason, message).
    pub fn events_about(&self, name: &str) -> Vec<(String, String, String)> {
        let list = self.cluster.get_json(&[
            "events.events.k8s.io",
            "-n",
            self.ns(),
            "--field-selector",
            &format!("regarding.name={name}"),
        ]);
        list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|e| {
                        let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                        (s("type"), s("reason"), s("note"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The holder of the status writer's Lease.
    pub fn lease_holder(&self) -> String {
        let lease = self.cluster.get_json(&[
            "lease",
            "switchyard-status-writer",
            "-n",
            OPERATOR_NAMESPACE,
        ]);
        lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The last lines of every operator Pod's log (current and previous containers).
    pub fn operator_logs(&self, lines: usize) -> String {
        let tail = format!("--tail={lines}");
        let out = self
            .cluster
            .kubectl()
            .args([
                "logs",
                "-n",
                OPERATOR_NAMESPACE,
                "-l",
                OPERATOR_SELECTOR,
                "--prefix",
                "--all-containers",
                &tail,
            ])
            .output();
        match out {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => format!("kubectl logs: {e}"),
        }
    }
}

/// `switchyard install` for the node cluster: the images [`crate::images::node_images`]
/// imported, the data plane of this run, and the PKI of this process.
fn install_yaml(data_plane: DataPlane) -> String {
    let images = crate::images::node_images();
    let out = Command::new(switchyard_bin())
        .args(["install", "--namespace", OPERATOR_NAMESPACE, "--image"])
        .arg(&images.operator)
        .args(["--data-plane", data_plane.as_str(), "--pki-dir"])
        .arg(pki_dir())
        .output()
        .expect("switchyard install");
    assert!(
        out.status.success(),
        "switchyard install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A Deployment of `replicas` echo servers labelled `app: name`, with `args` after `serve`.
pub fn echo_deployment(name: &str, replicas: u32, args: &[&str]) -> String {
    let image = &crate::images::node_images().echo;
    let mut all = vec!["serve", "--http", "8080"];
    all.extend_from_slice(args);
    let args = serde_json::to_string(&all).expect("json");
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: echo
        image: {image}
        imagePullPolicy: IfNotPresent
        args: {args}
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        ports: [{{name: http, containerPort: {ECHO_HTTP_PORT}}}]
        readinessProbe:
          httpGet: {{path: /, port: http}}
          periodSeconds: 1
"#
    )
}

/// A ClusterIP Service `name` selecting `app: app`, port 80 (`http`) to the echo port.
pub fn service_yaml(name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {app}}}\n  ports: [{{name: http, port: 80, targetPort: {ECHO_HTTP_PORT}}}]\n"
    )
}

/// A Pod `name` running as `sa` that only sleeps (a client whose traffic a proxy carries),
/// marked as running a proxy (`switchyard.dev/proxy-version`, what the injector will write):
/// its host-process proxy is started in its namespaces.
fn sleeper_pod(name: &str, sa: &str, labels: &[(&str, &str)]) -> String {
    let image = &crate::images::node_images().echo;
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"switchyard.dev/proxy-version": env!("CARGO_PKG_VERSION")},
        },
        "spec": {
            "serviceAccountName": sa,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "args": ["sleep"],
            }],
        },
    })
    .to_string()
}

impl Drop for KubeMesh {
    fn drop(&mut self) {
        for (_, p) in self.sidecars.iter_mut().rev() {
            p.kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- operator logs (last lines) ---\n{}",
                self.operator_logs(60)
            );
            for (s, _) in &self.sidecars {
                let text = std::fs::read_to_string(&s.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "--- proxy {} (last lines) ---\n{}",
                    s.pod,
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
            }
        }
    }
}
