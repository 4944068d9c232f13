//! A real Kubernetes API for end-to-end tests: one kube-apiserver (with embedded etcd) per test
//! process, started by `kube-harness` on loopback, driven with the real `kubectl`.
//!
//! There is no controller-manager, scheduler or kubelet: Pods stay `Pending` until a test
//! writes their status ([`KubeCluster::set_pod_ip`]), deleted namespaces stay `Terminating`
//! with their content, and nothing is garbage-collected. Tests isolate themselves with a
//! [`Namespace`] each.
//!
//! Loopback addresses, as kube-apiserver v1.34 validates them: a Pod's `status.podIP` may be
//! `127.0.0.x` (or `::1`); `IPv4`/`IPv6` EndpointSlices and v1 Endpoints refuse loopback
//! ("may not be in the loopback range"); an `FQDN` EndpointSlice accepts `127.0.0.x` as a
//! name, and the API server's service resolver (webhooks by Service, with the harness's
//! `--enable-aggregator-routing`) dials it. [`KubeCluster::apply_endpoint_slice`] uses that.
//!
//! The cluster lives as long as the test process: `kube-harness` shuts down when its standard
//! input (a pipe held by [`KubeCluster`]) closes, which the kernel does when the process exits,
//! however it exits; a shell wrapper then removes the state directory.

#![allow(
    clippy::expect_used,
    reason = "test harness: a panic is the test's failure report"
)]

use std::{
    collections::hash_map::RandomState,
    fmt,
    fs::File,
    hash::{BuildHasher, Hasher},
    io::{Read, Seek, SeekFrom, Write},
    net::IpAddr,
    ops::Deref,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Output, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::workspace_root;

/// How long a start may take before `ready` appears: the first start after a build loads a
/// large binary, and CI machines are shared.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the harness and removes its state directory once it exits, unless a test asked to keep
/// it. Signals are trapped so that the shell outlives a Ctrl-C long enough to clean up; the
/// harness itself stops on the same signal or when its standard input (inherited) closes.
const WRAPPER: &str = r#"trap : HUP INT TERM
"$0" apiserver --dir "$1" --exit-on-stdin-eof
status=$?
[ -e "$1/keep" ] || rm -rf "$1"
exit $status"#;

/// The directory holding `kube-harness` and `kubectl`.
///
/// Runs `e2e/kube-harness/build.sh` once per process (a no-op when the binaries match their
/// sources; the first build takes many minutes) into `$OUT`, by default
/// `<workspace>/target/kube-harness`. `SWITCHYARD_KUBE_HARNESS_DIR` names a directory of
/// prebuilt binaries instead, and nothing is built.
///
/// # Panics
///
/// When the build fails or the binaries are missing: no Kubernetes test can run without them.
pub fn harness_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os("SWITCHYARD_KUBE_HARNESS_DIR") {
            Some(prebuilt) => PathBuf::from(prebuilt),
            None => build_harness(),
        };
        for bin in ["kube-node", "kubectl"] {
            assert!(
                dir.join(bin).is_file(),
                "{} is missing: build it with e2e/kube-harness/build.sh (needs Go) or point \
                 SWITCHYARD_KUBE_HARNESS_DIR at prebuilt binaries",
                dir.join(bin).display()
            );
        }
        dir
    })
}

/// The `kubectl` built next to `kube-harness`.
pub fn kubectl_bin() -> PathBuf {
    harness_bin_dir().join("kubectl")
}

fn build_harness() -> PathBuf {
    let out = std::env::var_os("OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/kube-harness"));
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("creating {}: {e}", out.display()));
    // Test binaries run in parallel under some runners; one Go build at a time is enough,
    // and the others then find the stamp up to date.
    let lock = File::create(out.join(".build.lock"))
        .unwrap_or_else(|e| panic!("creating {}/.build.lock: {e}", out.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("locking {}/.build.lock: {e}", out.display()));
    let script = workspace_root().join("e2e/kube-harness/build.sh");
    let started = Instant::now();
    // Its progress goes to this process's stderr: a first build takes long enough that
    // silence would look like a hang.
    let status = Command::new("bash")
        .arg(&script)
        .env("OUT", &out)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        status.success(),
        "{} failed ({status}) after {:?}: Kubernetes end-to-end tests need Go (see \
         e2e/kube-harness/go.mod for the version) and the Go module proxy, or \
         SWITCHYARD_KUBE_HARNESS_DIR pointing at prebuilt binaries",
        script.display(),
        started.elapsed()
    );
    out
}

/// The API-server-only cluster of this test process (kube-apiserver and etcd on loopback, no
/// node), started on first use.
///
/// # Panics
///
/// When it does not start twice in a row; the message carries the end of the harness's log.
pub fn cluster() -> &'static KubeCluster {
    static CLUSTER: OnceLock<KubeCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| KubeCluster::start(Mode::ApiServer))
}

/// The real single-node cluster of this test process, started on first use: `kube-node
/// cluster` (API server, controller-manager, scheduler, kubelet with containerd and CNI,
/// kube-proxy, CoreDNS) in network namespaces of its own, with the images of
/// [`crate::images::node_images`] imported. Needs root.
///
/// # Panics
///
/// When it does not start; the message carries the end of its log.
pub fn node_cluster() -> &'static KubeCluster {
    static CLUSTER: OnceLock<KubeCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| KubeCluster::start(Mode::Node))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    ApiServer,
    Node,
}

/// A running Kubernetes API (with etcd), reachable with an admin token (group
/// `system:masters`); in a node cluster, with a kubelet, controllers and networking too.
pub struct KubeCluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    /// The harness process (for the API-server-only mode, a shell wrapper around it).
    wrapper: Mutex<Child>,
    /// Never written to, and never closed while the process lives: its EOF is the harness's
    /// signal to stop.
    _stdin: ChildStdin,
    /// The harness's output. Read through this handle, it stays readable even after the
    /// wrapper removed the directory.
    log: Mutex<File>,
    started_in: Duration,
    /// The CRD YAML applied last, so that applying the same again is skipped.
    crds: Mutex<Option<String>>,
    node: Option<Node>,
}

/// Where a node cluster lives, as `kube-node cluster` reports it (its `ready` file): every
/// address is on this machine, in namespaces the cluster created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The cluster's index on this machine (the third octet of its ranges).
    pub index: u8,
    /// The Node object's name.
    pub name: String,
    /// The node's address (API server, kubelet, cluster DNS), reachable from the host.
    pub ip: IpAddr,
    /// The host's end of the veth to the node.
    pub host_ip: IpAddr,
    /// The host's interface to the node (removed with the cluster).
    pub host_link: String,
    pub pod_cidr: String,
    pub service_cidr: String,
    /// Cluster DNS (CoreDNS), port 53.
    pub dns_ip: IpAddr,
    /// PID (in this machine's namespace) of the cluster's init: every process of the cluster
    /// is in its pid namespace.
    pub init_pid: u32,
}

impl KubeCluster {
    fn start(mode: Mode) -> KubeCluster {
        let bin = harness_bin_dir().join("kube-node");
        let mut failures = Vec::new();
        // The API-server-only harness picks free ports and releases them before etcd and the
        // API server bind them, so another process can take one in between: a second try gets
        // new ports. A node's ports are its own.
        let attempts = if mode == Mode::Node { 1 } else { 2 };
        for attempt in 1..=attempts {
            match Self::try_start(&bin, mode) {
                Ok(cluster) => return cluster,
                Err(e) => {
                    eprintln!("kube-node ({mode:?}): start attempt {attempt} failed: {e}");
                    failures.push(e);
                }
            }
        }
        panic!(
            "the Kubernetes cluster ({mode:?}) did not start:\n{}",
            failures.join("\n---\n")
        );
    }

    fn try_start(bin: &Path, mode: Mode) -> Result<KubeCluster, String> {
        // Built (or found current) before the clock starts: on a cold CI machine building the
        // set took most of the ready timeout, and the cluster was given up on before it logged.
        let images = (mode == Mode::Node).then(crate::images::node_images);
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("switchyard-kube-")
            .tempdir()
            .map_err(|e| format!("creating a state directory: {e}"))?
            // Removed by the harness when it exits; a `static` is never dropped.
            .keep();
        let log_path = dir.join("harness.log");
        let log = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let out = log.try_clone().map_err(|e| format!("log handle: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("log handle: {e}"))?;
        let mut cmd = match mode {
            Mode::ApiServer => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(WRAPPER).arg(bin).arg(&dir);
                cmd
            }
            Mode::Node => {
                // It removes its directory itself, and tears the whole cluster down when its
                // standard input closes or on SIGINT/SIGTERM.
                let images = images.ok_or("a node cluster without its images")?;
                let mut cmd = Command::new(bin);
                cmd.arg("cluster")
                    .arg("--dir")
                    .arg(&dir)
                    .arg("--exit-on-stdin-eof")
                    .arg("--sandbox-image")
                    .arg(&images.sandbox);
                for archive in &images.archives {
                    cmd.arg("--image").arg(archive);
                }
                cmd
            }
        };
        let mut wrapper = cmd
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stdin = wrapper
            .stdin
            .take()
            .ok_or("the harness has no stdin pipe")?;
        let log = Mutex::new(log);
        let ready = dir.join("ready");
        let (server, node) = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                match parse_ready(mode, &text) {
                    Ok(found) => break found,
                    Err(e) => {
                        let tail = log_tail(&log, 40);
                        return Err(abandon(
                            wrapper,
                            stdin,
                            format!("{}: {e}\n{tail}", ready.display()),
                        ));
                    }
                }
            }
            if let Ok(Some(status)) = wrapper.try_wait() {
                let tail = log_tail(&log, 40);
                return Err(format!(
                    "kube-node exited ({status}) before it was ready; its log ends:\n{tail}"
                ));
            }
            if started.elapsed() > READY_TIMEOUT {
                let tail = log_tail(&log, 40);
                let msg =
                    format!("kube-node not ready after {READY_TIMEOUT:?}; its log ends:\n{tail}");
                return Err(abandon(wrapper, stdin, msg));
            }
            thread::sleep(Duration::from_millis(50));
        };
        let started_in = started.elapsed();
        eprintln!(
            "kube-node ({mode:?}): ready on {server} in {started_in:?} ({})",
            dir.display()
        );
        Ok(KubeCluster {
            kubeconfig: dir.join("kubeconfig"),
            server,
            dir,
            wrapper: Mutex::new(wrapper),
            _stdin: stdin,
            log,
            started_in,
            crds: Mutex::new(None),
            node,
        })
    }

    /// The node, in a node cluster ([`node_cluster`]); `None` without one.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// Starts a node cluster owned by the caller, for tests of the cluster's own life cycle
    /// (the others share [`node_cluster`]).
    ///
    /// # Panics
    ///
    /// When it does not start.
    pub fn start_node() -> KubeCluster {
        KubeCluster::start(Mode::Node)
    }

    /// Stops the cluster as a test process's exit does: closes the harness's standard input
    /// and waits until it has torn everything down.
    ///
    /// # Panics
    ///
    /// When it does not exit within 60 s.
    pub fn stop(self) -> std::process::ExitStatus {
        let KubeCluster {
            _stdin, wrapper, ..
        } = self;
        drop(_stdin);
        let mut wrapper = wrapper.into_inner().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = wrapper.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = wrapper.kill();
                panic!("kube-node did not exit within 60 s of its standard input closing");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the harness process, leaving no chance to tear down: what is left is for the
    /// kernel and the next cluster's reaper.
    pub fn kill(self) {
        let mut wrapper = self.wrapper.into_inner().unwrap_or_else(|p| p.into_inner());
        let _ = wrapper.kill();
        let _ = wrapper.wait();
    }

    /// The cluster's own processes (not the Pods'), as (component, resident set size in KiB):
    /// the `kube-node` components by subcommand, containerd and its shims.
    pub fn component_rss_kib(&self) -> Vec<(String, u64)> {
        let Some(node) = &self.node else {
            return Vec::new();
        };
        let ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
        let Some(cluster_ns) = ns(node.init_pid) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if ns(pid).as_ref() != Some(&cluster_ns) {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let program = args
                .first()
                .map(|a| a.rsplit('/').next().unwrap_or(a).to_owned());
            let name = match program.as_deref() {
                Some("kube-node") => {
                    format!("kube-node {}", args.get(1).map_or("", String::as_str))
                }
                Some(other) => other.to_owned(),
                None => continue,
            };
            let rss = crate::proc_status_kib(pid, "VmRSS:").unwrap_or(0);
            out.push((name, rss));
        }
        out.sort();
        out
    }

    /// The harness's state directory: certificates, etcd data, `kubeconfig`, the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An admin kubeconfig (token of group `system:masters`, default namespace `default`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> String {
        self.server.clone()
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> String {
        self.read("token").trim().to_owned()
    }

    /// The CA certificate (PEM) that signed the API server's serving certificate.
    pub fn ca_pem(&self) -> String {
        self.read("ca.crt")
    }

    /// How long the start that succeeded took, until `/readyz` answered ok.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The harness's output so far (kube-apiserver and etcd logs).
    pub fn log(&self) -> String {
        read_all(&self.log)
    }

    /// The resident set size of the API-server-only harness process in KiB, from `/proc`;
    /// `None` when it cannot be found (not Linux, or it exited).
    pub fn harness_rss_kib(&self) -> Option<u64> {
        let wrapper = self.wrapper.lock().ok()?.id();
        let pid = child_pid_of(wrapper)?;
        crate::proc_status_kib(pid, "VmRSS:")
    }

    fn read(&self, name: &str) -> String {
        // A node cluster's API server keeps its credentials in a directory of its own.
        let dir = match self.node {
            Some(_) => self.dir.join("apiserver"),
            None => self.dir.clone(),
        };
        let path = dir.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    // === kubectl ===

    /// `kubectl` with the admin kubeconfig and a discovery cache of this cluster's own.
    pub fn kubectl(&self) -> Command {
        self.kubectl_as(&self.kubeconfig)
    }

    /// `kubectl` with another kubeconfig of this cluster (e.g. from
    /// [`KubeCluster::kubeconfig_for_token`]).
    pub fn kubectl_as(&self, kubeconfig: &Path) -> Command {
        let mut cmd = Command::new(kubectl_bin());
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `kubectl <args>` and returns its stdout.
    ///
    /// # Panics
    ///
    /// When it fails; the message has its arguments, stdout and stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl().args(args).output().expect("running kubectl");
        ok_stdout(args, &out)
    }

    /// Runs `kubectl <args>` with `input` on stdin (e.g. `apply -f -`), whatever its outcome.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        run_with_stdin(self.kubectl().args(args), input)
    }

    /// Like [`KubeCluster::kubectl_stdin`], returning stdout.
    ///
    /// # Panics
    ///
    /// When `kubectl` fails; the message has its arguments, stdout and stderr.
    pub fn kubectl_stdin_ok(&self, args: &[&str], input: &str) -> String {
        ok_stdout(args, &self.kubectl_stdin(args, input))
    }

    /// `kubectl get <args> -o json`, parsed.
    ///
    /// # Panics
    ///
    /// When `kubectl` fails or prints something other than JSON.
    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl_ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {all:?}: {e}: {out}"))
    }

    /// Objects of a YAML (or JSON) stream as JSON, as `kubectl` reads them (no server-side
    /// defaults, nothing stored). A `List` is flattened into its items.
    ///
    /// # Panics
    ///
    /// When `kubectl` cannot read the input.
    pub fn yaml_to_json(&self, yaml: &str) -> Vec<Value> {
        let out = self.kubectl_stdin_ok(
            &[
                "create",
                "--dry-run=client",
                "--validate=false",
                "-o",
                "json",
                "-f",
                "-",
            ],
            yaml,
        );
        let mut objects = Vec::new();
        for value in serde_json::Deserializer::from_str(&out).into_iter::<Value>() {
            let value = value.unwrap_or_else(|e| panic!("kubectl printed bad JSON: {e}: {out}"));
            match value["items"].as_array() {
                Some(items) if value["kind"] == "List" => objects.extend(items.iter().cloned()),
                _ => objects.push(value),
            }
        }
        objects
    }

    // === CRDs ===

    /// Installs the CRDs of `manifests/crds/` (conversion strategy `None`) and waits until they
    /// are `Established`. Skipped when they are what was applied last in this process.
    ///
    /// # Panics
    ///
    /// When applying fails or they are not established within 60 s.
    pub fn install_crds(&self) {
        self.apply_crds_yaml(&crd_manifests());
    }

    /// Applies CRDs (server-side, taking over fields from other managers, e.g. the output of
    /// `switchyard install` with a conversion webhook) and waits until they are
    /// `Established`. Skipped when `yaml` is what was applied last in this process.
    ///
    /// CRDs are cluster-wide: tests that need different CRDs must not run at the same time in
    /// one process; calls are serialised, and [`KubeCluster::install_crds`] puts the plain
    /// ones back.
    ///
    /// # Panics
    ///
    /// When applying fails or they are not established within 60 s.
    pub fn apply_crds_yaml(&self, yaml: &str) {
        let mut last = self.crds.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() == Some(yaml) {
            return;
        }
        // Forget the previous state first: if this apply fails half-way, the next call retries.
        *last = None;
        self.kubectl_stdin_ok(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=switchyard-e2e",
                "-f",
                "-",
            ],
            yaml,
        );
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ]);
        *last = Some(yaml.to_owned());
    }

    // === namespaces ===

    /// Creates a namespace `<prefix>-<n>-<random>` labelled `switchyard.dev/e2e=<test binary>`,
    /// deleted (without waiting) when the returned guard drops.
    ///
    /// With `SWITCHYARD_KEEP_NAMESPACES=1`, a namespace dropped while its thread panics is kept
    /// and the harness's state directory (etcd data) is kept after the process exits; the
    /// cluster itself still stops with the test process. To inspect it afterwards, run
    /// `kube-node apiserver --dir <dir>` again and use the new `<dir>/kubeconfig`.
    ///
    /// # Panics
    ///
    /// When the namespace cannot be created.
    pub fn namespace(&self, prefix: &str) -> Namespace<'_> {
        static N: AtomicUsize = AtomicUsize::new(1);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = namespace_name(prefix, n, random_u64());
        let ns = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"switchyard.dev/e2e": test_binary_label()}},
        });
        self.kubectl_stdin_ok(&["create", "-f", "-"], &ns.to_string());
        Namespace {
            cluster: self,
            name,
        }
    }

    // === identities ===

    /// Creates ServiceAccount `namespace/name`.
    ///
    /// # Panics
    ///
    /// When `kubectl` fails (e.g. it exists).
    pub fn create_service_account(&self, namespace: &str, name: &str) {
        self.kubectl_ok(&["create", "serviceaccount", name, "-n", namespace]);
    }

    /// A token of ServiceAccount `namespace/service_account` for `audience`, valid for `ttl`
    /// (whole seconds, at least 10 minutes: the API server refuses shorter), bound to Pod
    /// `bound_pod` of the same namespace if given (it then carries the Pod's name and UID and
    /// stops being valid when the Pod is deleted).
    ///
    /// # Panics
    ///
    /// When `kubectl` fails (e.g. the account or the Pod does not exist, or `ttl` is under
    /// 10 minutes).
    pub fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        audience: &str,
        bound_pod: Option<&str>,
        ttl: Duration,
    ) -> String {
        let duration = format!("{}s", ttl.as_secs());
        let mut args = vec![
            "create",
            "token",
            service_account,
            "-n",
            namespace,
            "--audience",
            audience,
            "--duration",
            &duration,
        ];
        if let Some(pod) = bound_pod {
            args.extend_from_slice(&["--bound-object-kind", "Pod", "--bound-object-name", pod]);
        }
        self.kubectl_ok(&args).trim().to_owned()
    }

    /// Writes a kubeconfig for this cluster (same server and CA) that authenticates with
    /// `token`, e.g. to run the operator as its ServiceAccount.
    ///
    /// # Panics
    ///
    /// When the file cannot be written.
    pub fn kubeconfig_for_token(&self, token: &str, path: &Path) {
        std::fs::write(path, kubeconfig_yaml(&self.server, &self.ca_pem(), token))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    // === workloads on loopback ===

    /// `kubectl apply -n <namespace> -f -` of `yaml` (objects naming another namespace are
    /// refused by `kubectl`). The API server drops a Pod's status on create, so every Pod
    /// whose YAML carries `status.podIP` gets it written afterwards with
    /// [`KubeCluster::set_pod_ip`].
    ///
    /// # Panics
    ///
    /// When `kubectl` fails.
    pub fn apply_yaml(&self, namespace: &str, yaml: &str) {
        self.kubectl_stdin_ok(&["apply", "-n", namespace, "-f", "-"], yaml);
        if !yaml.contains("podIP") {
            return;
        }
        for object in self.yaml_to_json(yaml) {
            let ip = object["status"]["podIP"].as_str();
            let name = object["metadata"]["name"].as_str();
            if let (true, Some(ip), Some(name)) = (object["kind"] == "Pod", ip, name) {
                let ip: IpAddr = ip
                    .parse()
                    .unwrap_or_else(|e| panic!("pod {namespace}/{name}: status.podIP {ip}: {e}"));
                self.set_pod_ip(namespace, name, ip);
            }
        }
    }

    /// Creates Pod `namespace/name` running as `service_account` with `labels` (one container
    /// `app`; no kubelet will run it) and marks it running and ready at `ip`.
    ///
    /// # Panics
    ///
    /// When `kubectl` fails.
    pub fn create_pod(
        &self,
        namespace: &str,
        name: &str,
        service_account: &str,
        labels: &[(&str, &str)],
        ip: IpAddr,
    ) {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "serviceAccountName": service_account,
                "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
            },
        });
        self.kubectl_stdin_ok(&["create", "-f", "-"], &pod.to_string());
        self.set_pod_ip(namespace, name, ip);
    }

    /// Writes Pod `namespace/pod`'s status as a kubelet would once it runs at `ip`: phase
    /// `Running`, `podIP`/`podIPs`, conditions `Ready` and `ContainersReady` true.
    ///
    /// # Panics
    ///
    /// When `kubectl` fails.
    pub fn set_pod_ip(&self, namespace: &str, pod: &str, ip: IpAddr) {
        let patch = pod_status_patch(ip);
        self.kubectl_ok(&[
            "patch",
            "pod",
            pod,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
    }

    /// Creates Service `namespace/name` of type ClusterIP (an address of 10.96.0.0/16 is
    /// allocated) with `ports` as (name, port, target port), selecting `selector`.
    ///
    /// # Panics
    ///
    /// When `kubectl` fails.
    pub fn create_service(
        &self,
        namespace: &str,
        name: &str,
        ports: &[(&str, u16, u16)],
        selector: &[(&str, &str)],
    ) {
        let ports: Vec<Value> = ports
            .iter()
            .map(|(n, port, target)| json!({"name": n, "port": port, "targetPort": target, "protocol": "TCP"}))
            .collect();
        let selector: serde_json::Map<String, Value> = selector
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        let svc = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": ports, "selector": selector},
        });
        self.kubectl_stdin_ok(&["create", "-f", "-"], &svc.to_string());
    }

    /// Applies EndpointSlice `<service>-e2e` of Service `namespace/service` (what the
    /// EndpointSlice controller would write; there is none here): one port (name, port) and a
    /// ready endpoint per (address, Pod name for `targetRef`).
    ///
    /// The API server refuses loopback addresses in `IPv4` and `IPv6` slices ("may not be in
    /// the loopback range"), so a slice of loopback addresses has `addressType: FQDN`, which
    /// accepts `127.0.0.x` as a name. The API server's own resolver (webhooks under
    /// `--enable-aggregator-routing`) uses `addresses[0]` whatever the type; a reader that
    /// skips FQDN slices, as kube-proxy does, sees no endpoints. Other addresses get the
    /// slice type of their family; all addresses must be of one kind.
    ///
    /// # Panics
    ///
    /// When `kubectl` fails.
    pub fn apply_endpoint_slice(
        &self,
        namespace: &str,
        service: &str,
        port: (&str, u16),
        endpoints: &[(IpAddr, Option<&str>)],
    ) {
        let slice = endpoint_slice_json(namespace, service, port, endpoints);
        self.kubectl_stdin_ok(&["apply", "-f", "-"], &slice.to_string());
    }
}

// === a node cluster's workloads ===

impl KubeCluster {
    /// Waits until Pod `namespace/pod` runs with an IP (its containers started) and returns
    /// the IP.
    ///
    /// # Panics
    ///
    /// After `within`, with the Pod's status.
    pub fn wait_pod_running(&self, namespace: &str, pod: &str, within: Duration) -> IpAddr {
        let deadline = Instant::now() + within;
        loop {
            let p = self.get_json(&["pod", pod, "-n", namespace]);
            if p["status"]["phase"] == "Running"
                && let Some(ip) = p["status"]["podIP"].as_str().and_then(|ip| ip.parse().ok())
            {
                return ip;
            }
            assert!(
                Instant::now() < deadline,
                "pod {namespace}/{pod} not running after {within:?}: {}",
                p["status"]
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until Deployment `namespace/name` has all its replicas updated and available.
    ///
    /// # Panics
    ///
    /// After `within`, with `kubectl rollout status`'s output.
    pub fn wait_deployment_available(&self, namespace: &str, name: &str, within: Duration) {
        let timeout = format!("--timeout={}s", within.as_secs());
        let out = self
            .kubectl()
            .args([
                "rollout",
                "status",
                "deployment",
                name,
                "-n",
                namespace,
                &timeout,
            ])
            .output()
            .expect("running kubectl");
        assert!(
            out.status.success(),
            "deployment {namespace}/{name} not available after {within:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until the EndpointSlices of Service `namespace/service` list `n` ready endpoints,
    /// and returns their addresses.
    ///
    /// # Panics
    ///
    /// After `within`.
    pub fn wait_ready_endpoints(
        &self,
        namespace: &str,
        service: &str,
        n: usize,
        within: Duration,
    ) -> Vec<IpAddr> {
        let deadline = Instant::now() + within;
        loop {
            let ready = self.ready_endpoints(namespace, service);
            if ready.len() == n {
                return ready;
            }
            assert!(
                Instant::now() < deadline,
                "service {namespace}/{service}: {} ready endpoints after {within:?}, want {n}: {ready:?}",
                ready.len()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ready endpoint addresses of Service `namespace/service`, from its EndpointSlices.
    pub fn ready_endpoints(&self, namespace: &str, service: &str) -> Vec<IpAddr> {
        let label = format!("kubernetes.io/service-name={service}");
        let slices = self.get_json(&["endpointslices", "-n", namespace, "-l", &label]);
        let mut ips: Vec<IpAddr> = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a.as_str()?.parse().ok())
            .collect();
        ips.sort();
        ips
    }

    /// The ClusterIP of Service `namespace/name`.
    ///
    /// # Panics
    ///
    /// When it has none.
    pub fn service_ip(&self, namespace: &str, name: &str) -> IpAddr {
        let svc = self.get_json(&["service", name, "-n", namespace]);
        svc["spec"]["clusterIP"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| panic!("service {namespace}/{name} has no clusterIP: {svc}"))
    }

    /// The PID (in this machine's namespace) of Pod `namespace/pod`'s sandbox (pause)
    /// process, whose network and pid namespaces are the Pod's. Found through the Pod's
    /// cgroup (`.../pod<uid>/...`, the kubelet's cgroupfs layout).
    ///
    /// # Panics
    ///
    /// When the Pod has no running sandbox on this machine.
    pub fn pod_sandbox_pid(&self, namespace: &str, pod: &str) -> u32 {
        let uid = self.kubectl_ok(&[
            "get",
            "pod",
            pod,
            "-n",
            namespace,
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        let needle = format!("/pod{}/", uid.trim());
        let pids = std::fs::read_dir("/proc")
            .expect("reading /proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
        for pid in pids {
            let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
                continue;
            };
            if !cgroup.contains(&needle) {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.starts_with(b"/pause") {
                return pid;
            }
        }
        panic!(
            "pod {namespace}/{pod} (uid {}) has no sandbox process",
            uid.trim()
        );
    }

    /// `nsenter` arguments that run a host program inside Pod `namespace/pod`'s network and
    /// pid namespaces: it binds the Pod's IP, and the kernel kills it with the Pod (or the
    /// cluster).
    pub fn nsenter_pod(&self, namespace: &str, pod: &str) -> Vec<std::ffi::OsString> {
        let pid = self.pod_sandbox_pid(namespace, pod);
        [
            "nsenter",
            "--target",
            &pid.to_string(),
            "--net",
            "--pid",
            "--",
        ]
        .iter()
        .map(Into::into)
        .collect()
    }
}

/// A host process started through `nsenter` into a Pod's pid namespace: `nsenter` forks, so
/// the program is its child; killing it kills the program first.
pub struct PodProcess {
    nsenter: Child,
}

impl PodProcess {
    pub fn new(nsenter: Child) -> PodProcess {
        PodProcess { nsenter }
    }

    /// Kills the program (SIGKILL) and `nsenter`, and reaps `nsenter`.
    pub fn kill(&mut self) {
        if let Some(pid) = child_pid_of(self.nsenter.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.nsenter.kill();
        let _ = self.nsenter.wait();
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A namespace for one test; deleted when dropped (see [`KubeCluster::namespace`]).
pub struct Namespace<'a> {
    cluster: &'a KubeCluster,
    name: String,
}

impl Namespace<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Deref for Namespace<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Namespace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Namespace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Namespace").field(&self.name).finish()
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let keep = std::env::var("SWITCHYARD_KEEP_NAMESPACES").is_ok_and(|v| v == "1");
        if keep && thread::panicking() {
            let dir = self.cluster.dir();
            // The wrapper leaves the state directory in place when this file exists.
            let _ = File::create(dir.join("keep"));
            eprintln!(
                "SWITCHYARD_KEEP_NAMESPACES: kept namespace {} (kubectl --kubeconfig {} -n {} …). \
                 The cluster stops when this test process exits; its etcd data stays in {}: \
                 restart it with `{} apiserver --dir {}` and use the new kubeconfig there",
                self.name,
                self.cluster.kubeconfig().display(),
                self.name,
                dir.display(),
                harness_bin_dir().join("kube-node").display(),
                dir.display(),
            );
            return;
        }
        let out = self
            .cluster
            .kubectl()
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "deleting namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("deleting namespace {}: {e}", self.name),
        }
    }
}

// === helpers ===

/// The YAML of every CRD in `manifests/crds/`, in file-name order.
fn crd_manifests() -> String {
    let dir = workspace_root().join("manifests/crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no CRDs in {}", dir.display());
    files
        .iter()
        .map(|p| {
            std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The API server's URL and, for a node cluster, the node, from the harness's `ready` file: a
/// port (API-server-only mode, on 127.0.0.1) or `kube-node cluster`'s layout (JSON).
fn parse_ready(mode: Mode, text: &str) -> Result<(String, Option<Node>), String> {
    match mode {
        Mode::ApiServer => {
            let port: u16 = text.trim().parse().map_err(|e| format!("{e}: {text:?}"))?;
            Ok((format!("https://127.0.0.1:{port}"), None))
        }
        Mode::Node => {
            let v: Value = serde_json::from_str(text).map_err(|e| format!("{e}: {text:?}"))?;
            let str_of = |k: &str| {
                v[k].as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("ready: no {k}: {text}"))
            };
            let ip_of = |k: &str| {
                str_of(k)?
                    .parse::<IpAddr>()
                    .map_err(|e| format!("ready: {k}: {e}"))
            };
            let num_of = |k: &str| {
                v[k].as_u64()
                    .ok_or_else(|| format!("ready: no {k}: {text}"))
            };
            let node = Node {
                index: u8::try_from(num_of("index")?).map_err(|e| format!("ready: index: {e}"))?,
                name: str_of("node")?,
                ip: ip_of("nodeIP")?,
                host_ip: ip_of("hostIP")?,
                host_link: str_of("hostLink")?,
                pod_cidr: str_of("podCIDR")?,
                service_cidr: str_of("serviceCIDR")?,
                dns_ip: ip_of("dnsIP")?,
                init_pid: u32::try_from(num_of("initPID")?)
                    .map_err(|e| format!("ready: initPID: {e}"))?,
            };
            Ok((str_of("server")?, Some(node)))
        }
    }
}

/// Gives up on a start: closing stdin stops the harness; a harness that ignores it is killed.
fn abandon(mut wrapper: Child, stdin: ChildStdin, msg: String) -> String {
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = wrapper.try_wait() {
            return msg;
        }
        thread::sleep(Duration::from_millis(50));
    }
    if let Some(pid) = child_pid_of(wrapper.id()) {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    let _ = wrapper.kill();
    let _ = wrapper.wait();
    msg
}

fn read_all(log: &Mutex<File>) -> String {
    let mut file = log.lock().unwrap_or_else(|p| p.into_inner());
    let mut text = String::new();
    if file.seek(SeekFrom::Start(0)).is_ok() {
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

fn log_tail(log: &Mutex<File>, lines: usize) -> String {
    let text = read_all(log);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The pid of a process whose parent is `parent`, found by scanning `/proc`.
fn child_pid_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        (parent_pid(&stat)? == parent).then_some(pid)
    })
}

/// The parent pid from `/proc/<pid>/stat` (`pid (comm) state ppid …`; `comm` may hold spaces
/// and parentheses, so fields are counted after the last `)`).
fn parent_pid(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    let mut stdin = child.stdin.take().expect("kubectl stdin");
    let input = input.to_owned();
    // Written from another thread: a child that answers before reading everything would
    // otherwise block on a full stdout pipe while this thread blocks on a full stdin pipe.
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("waiting for kubectl");
    let _ = writer.join();
    out
}

fn ok_stdout(args: &[&str], out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn random_u64() -> u64 {
    // Each `RandomState` is seeded from the OS once per thread and then incremented; hashing
    // the time and pid in makes names differ across processes sharing a cluster directory.
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// `<prefix>-<n>-<6 random base-36 digits>`, a valid DNS label (RFC 1123, at most 63
/// characters): the prefix is lowercased, other characters become `-`, and it is shortened to
/// fit; an empty prefix becomes `e2e`.
fn namespace_name(prefix: &str, n: usize, random: u64) -> String {
    let suffix = format!("-{n}-{}", base36(random, 6));
    let clean: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut clean = clean.trim_matches('-').to_owned();
    clean.truncate(63 - suffix.len());
    let clean = clean.trim_end_matches('-');
    let clean = if clean.is_empty() { "e2e" } else { clean };
    format!("{clean}{suffix}")
}

fn base36(mut v: u64, digits: usize) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..digits)
        .map(|_| {
            let c = ALPHABET[(v % 36) as usize] as char;
            v /= 36;
            c
        })
        .collect()
}

/// The label value naming this test binary: its file name without Cargo's `-<hash>` suffix.
fn test_binary_label() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let stem = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    label_value(&stem)
}

/// `stem` without a trailing `-<16 hex digits>`, made a valid label value (alphanumerics,
/// `-`, `_`, `.`; starting and ending alphanumeric; at most 63 characters).
fn label_value(stem: &str) -> String {
    let base = match stem.rsplit_once('-') {
        Some((base, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            base
        }
        _ => stem,
    };
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let clean = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if clean.is_empty() {
        "unknown".to_owned()
    } else {
        clean.to_owned()
    }
}

fn kubeconfig_yaml(server: &str, ca_pem: &str, token: &str) -> String {
    // JSON is YAML, and serde_json escapes whatever the PEM and token hold.
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {
            "server": server,
            "certificate-authority-data": base64(ca_pem.as_bytes()),
        }}],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "token"}}],
        "current-context": "e2e",
    })
    .to_string()
}

/// Standard base64 with padding (RFC 4648 §4), e.g. for a webhook's `caBundle`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pod_status_patch(ip: IpAddr) -> Value {
    let ip = ip.to_string();
    json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
    }})
}

fn endpoint_slice_json(
    namespace: &str,
    service: &str,
    (port_name, port): (&str, u16),
    endpoints: &[(IpAddr, Option<&str>)],
) -> Value {
    let family = match endpoints.first() {
        Some((ip, _)) if ip.is_loopback() => "FQDN",
        Some((IpAddr::V6(_), _)) => "IPv6",
        _ => "IPv4",
    };
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, pod)| {
            let mut e = json!({"addresses": [ip.to_string()], "conditions": {"ready": true}});
            if let Some(pod) = pod {
                e["targetRef"] = json!({"kind": "Pod", "name": pod, "namespace": namespace});
            }
            e
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-e2e"),
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "switchyard-e2e",
            },
        },
        "addressType": family,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

#[cfg(test)]
mod tests;
