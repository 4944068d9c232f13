//! A mesh in Kubernetes mode for end-to-end tests: `switchyard install` applied to the real
//! kube-apiserver, `switchyard controller` replicas running as its ServiceAccount (so with
//! exactly the install manifests' permissions), workloads created with `kubectl`, and proxies
//! on loopback that authenticate with their Pods' ServiceAccount tokens.
//!
//! The CRDs and the operator namespace are cluster-wide, so one mesh runs at a time per test
//! process: [`KubeMesh::start`] takes a process-wide lock that the mesh holds until dropped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a panic is the test's failure report"
)]

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use crate::{
    DataPlane,
    kube::{KubeCluster, Namespace, cluster},
    mesh::{Response, Sidecar, free_port, http_get, start_proxy, wait_for},
    switchyard_bin,
};

/// The operator's namespace, as `switchyard install` creates it.
pub const OPERATOR_NAMESPACE: &str = "switchyard-system";
/// The API server's audience: tokens the operator uses to talk to it.
const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// One replica of `switchyard controller`.
pub struct Operator {
    pub name: String,
    pub xds: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl Operator {
    /// `GET path` on the admin port.
    pub fn admin_get(&self, path: &str) -> std::io::Result<Response> {
        http_get(self.admin, "admin", path, &[])
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

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The Kubernetes-mode mesh of one test.
pub struct KubeMesh {
    pub cluster: &'static KubeCluster,
    pub ns: Namespace<'static>,
    pub dir: tempfile::TempDir,
    pub data_plane: DataPlane,
    pub operators: Vec<Operator>,
    operator_kubeconfig: PathBuf,
    sidecars: Vec<(Sidecar, Child)>,
    _serial: MutexGuard<'static, ()>,
}

/// Per process: the PKI directory `switchyard install` reuses, and the webhook port its CRDs
/// point at (the first replica of every mesh serves it).
struct Shared {
    pki: tempfile::TempDir,
    webhook_port: u16,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| Shared {
        pki: tempfile::tempdir().expect("pki dir"),
        webhook_port: free_port(),
    })
}

impl KubeMesh {
    /// Installs Switchyard into the cluster (`switchyard install | kubectl apply`), makes a
    /// namespace for the test, and starts one operator replica, `switchyard-0`, ready.
    pub fn start(prefix: &str) -> KubeMesh {
        static SERIAL: Mutex<()> = Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let cluster = cluster();
        let shared = shared();
        let install = Command::new(switchyard_bin())
            .args([
                "install",
                "--namespace",
                OPERATOR_NAMESPACE,
                "--webhook-url",
            ])
            .arg(format!("https://127.0.0.1:{}/convert", shared.webhook_port))
            .arg("--pki-dir")
            .arg(shared.pki.path())
            .output()
            .expect("switchyard install");
        assert!(
            install.status.success(),
            "switchyard install failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
        let yaml = String::from_utf8(install.stdout).expect("utf-8");
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
        let mut mesh = KubeMesh {
            cluster,
            ns,
            dir,
            data_plane: DataPlane::from_env(),
            operators: Vec::new(),
            operator_kubeconfig,
            sidecars: Vec::new(),
            _serial: serial,
        };
        mesh.start_operator();
        mesh
    }

    /// The test namespace's name.
    pub fn ns(&self) -> &str {
        self.ns.name()
    }

    /// The kubeconfig of the operator's ServiceAccount.
    pub fn operator_kubeconfig(&self) -> &Path {
        &self.operator_kubeconfig
    }

    /// Starts another replica (`switchyard-<n>`) and waits until it is ready. The first one
    /// also serves the conversion webhook the CRDs point at.
    pub fn start_operator(&mut self) -> usize {
        let i = self.operators.len();
        let name = format!("switchyard-{i}");
        let pki = shared().pki.path();
        // The CRDs' webhook port is taken by no one between meshes, so `free_port` may offer it
        // again: every port here must differ from it and from each other.
        let mut taken = vec![shared().webhook_port];
        let mut port = || loop {
            let p = free_port();
            if !taken.contains(&p) {
                taken.push(p);
                return p;
            }
        };
        let xds = SocketAddr::from(([127, 0, 0, 1], port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], port()));
        let webhook_port = if i == 0 {
            shared().webhook_port
        } else {
            port()
        };
        let args: Vec<String> = vec![
            "controller".into(),
            "--kubeconfig".into(),
            self.operator_kubeconfig.display().to_string(),
            "--namespace".into(),
            OPERATOR_NAMESPACE.into(),
            "--name".into(),
            name.clone(),
            "--xds-addr".into(),
            xds.to_string(),
            "--admin-addr".into(),
            admin.to_string(),
            "--webhook-addr".into(),
            format!("127.0.0.1:{webhook_port}"),
            "--webhook-cert-dir".into(),
            pki.join("webhook").display().to_string(),
            "--ca-cert".into(),
            pki.join("ca.crt").display().to_string(),
            "--ca-key".into(),
            pki.join("ca.key").display().to_string(),
            "--data-plane".into(),
            self.data_plane.as_str().into(),
            "--lease-duration-secs".into(),
            "4".into(),
            "--lease-retry-secs".into(),
            "1".into(),
        ];
        let log = self.dir.path().join(format!("{name}.log"));
        let mut op = Operator {
            name,
            xds,
            admin,
            log,
            child: None,
            args,
        };
        spawn_operator(&mut op);
        self.operators.push(op);
        self.wait_operator_ready(i);
        i
    }

    fn wait_operator_ready(&mut self, i: usize) {
        let op = &mut self.operators[i];
        let what = format!("operator {} to be ready", op.name);
        wait_for(
            Duration::from_secs(30),
            || {
                if let Some(Ok(Some(status))) = op.child.as_mut().map(Child::try_wait) {
                    panic!(
                        "operator {} exited ({status}):\n{}",
                        op.name,
                        std::fs::read_to_string(&op.log).unwrap_or_default()
                    );
                }
                op.is_ready()
            },
            &what,
        );
    }

    /// SIGKILLs replica `i` (no lease release, no goodbye to proxies).
    pub fn kill_operator(&mut self, i: usize) {
        if let Some(mut c) = self.operators[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts replica `i` again with the same arguments and waits until it is ready.
    pub fn restart_operator(&mut self, i: usize) {
        self.kill_operator(i);
        spawn_operator(&mut self.operators[i]);
        self.wait_operator_ready(i);
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

    /// A Service without selector whose EndpointSlice points at `addr` (an unmeshed backend).
    pub fn backend_service(&self, name: &str, addr: SocketAddr) {
        self.cluster
            .create_service(self.ns(), name, &[("http", 80, addr.port())], &[]);
        self.cluster.apply_endpoint_slice(
            self.ns(),
            name,
            ("http", addr.port()),
            &[(addr.ip(), None)],
        );
    }

    /// Creates Pod `pod` (ServiceAccount `sa`, created if missing) at `ip`, starts its proxy
    /// with a Pod-bound token of audience `switchyard`, and waits until the proxy is ready.
    pub fn sidecar(&mut self, pod: &str, sa: &str, labels: &[(&str, &str)], ip: IpAddr) -> Sidecar {
        self.cluster.create_service_account(self.ns(), sa);
        self.cluster.create_pod(self.ns(), pod, sa, labels, ip);
        let token = self.cluster.create_token(
            self.ns(),
            sa,
            "switchyard",
            Some(pod),
            Duration::from_secs(3600),
        );
        let token_file = self.dir.path().join(format!("{pod}.token"));
        std::fs::write(&token_file, token).expect("token file");
        let xds = self.operators[0].xds;
        let out = Command::new(switchyard_bin())
            .args(["bootstrap", "--pod"])
            .arg(format!("{}/{pod}", self.ns()))
            .arg("--pod-ip")
            .arg(ip.to_string())
            .arg("--token-file")
            .arg(&token_file)
            .args(["--xds-host", "127.0.0.1", "--xds-port"])
            .arg(xds.port().to_string())
            .output()
            .expect("switchyard bootstrap");
        assert!(
            out.status.success(),
            "switchyard bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = self.dir.path().join(format!("{pod}.bootstrap.json"));
        std::fs::write(&path, &out.stdout).expect("bootstrap");
        let bootstrap: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let log = self.dir.path().join(format!("{pod}.proxy.log"));
        let (sidecar, child) = start_proxy(pod, &path, &bootstrap, self.data_plane, &log);
        self.sidecars.push((sidecar.clone(), child));
        wait_for(
            Duration::from_secs(30),
            || sidecar.admin_get("/ready").is_ok_and(|r| r.status == 200),
            &format!("{pod}'s proxy to be ready"),
        );
        sidecar
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
}

fn spawn_operator(op: &mut Operator) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&op.log)
        .expect("operator log");
    let child = Command::new(switchyard_bin())
        .args(&op.args)
        .env("RUST_LOG", "info,switchyard=debug")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start switchyard controller");
    op.child = Some(child);
}

impl Drop for KubeMesh {
    fn drop(&mut self) {
        for (_, c) in self.sidecars.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for op in &mut self.operators {
            if let Some(mut c) = op.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            for op in &self.operators {
                let text = op.log_text();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "--- operator {} (last lines) ---\n{}",
                    op.name,
                    lines[lines.len().saturating_sub(60)..].join("\n")
                );
            }
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
