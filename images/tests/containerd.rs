//! The images run for real: a private containerd imports the archives and runs them with runc.
//!
//! Needs root, and containerd, ctr and runc (Debian: `apt-get install containerd runc`); without
//! them the test fails and says so. The containerd is this test's own: its root, state, socket
//! and runc state live in a temporary directory, the CRI plugin is off, containers get no cgroup,
//! and it runs in a private mount namespace (`unshare --mount --propagation private`), so the
//! overlay mounts of its containers vanish with it. The test checks that nothing it started
//! outlives it: no process and no mount naming its directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use switchyard_e2e::netns::Netns;
use switchyard_images::{BuiltImage, Image, build, envoy_elf, image_spec};

const TAG: &str = "containerd-test";
const NAMESPACE: &str = "switchyard-images-test";

// === Utils ===

/// A containerd of this test's own; stopped, with everything it started, when dropped.
struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
}

impl Containerd {
    fn start() -> Self {
        require_root();
        for tool in ["containerd", "ctr", "runc", "unshare"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "{tool} not found: this test runs the images in a real containerd \
                 (Debian: apt-get install containerd runc)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("switchyard-ctr-")
            .tempdir()
            .unwrap();
        let d = dir.path().display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        // `unshare` execs containerd: the child's PID is containerd's.
        let daemon = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "containerd",
                "--config",
            ])
            .arg(dir.path().join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let containerd = Containerd { dir, daemon };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !containerd.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 20 s:\n{}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr_command(&self) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", NAMESPACE]);
        command
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command().args(args).output().unwrap()
    }

    /// `ctr run --rm` in the host's network namespace, with runc's state and the stdio FIFOs
    /// in this test's directory and no cgroup for the container.
    fn run_command(&self, image: &str, id: &str, args: &[&str]) -> Command {
        self.run_command_with(&["--net-host"], image, id, args)
    }

    /// [`Containerd::run_command`] with other `ctr run` options than `--net-host`.
    fn run_command_with(&self, options: &[&str], image: &str, id: &str, args: &[&str]) -> Command {
        let mut command = self.ctr_command();
        command
            .arg("run")
            .arg("--rm")
            .arg("--runc-root")
            .arg(self.dir.path().join("runc"))
            .arg("--fifo-dir")
            .arg(self.dir.path().join("fifo"))
            .arg("--cgroup=")
            .args(options)
            .args([image, id])
            .args(args);
        command
    }

    fn run(&self, image: &str, id: &str, args: &[&str]) -> (i32, String) {
        self.run_with(&["--net-host"], image, id, args)
    }

    fn run_with(&self, options: &[&str], image: &str, id: &str, args: &[&str]) -> (i32, String) {
        let output = self
            .run_command_with(options, image, id, args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code().unwrap_or(-1), text)
    }

    /// The host PID of a running container's first process.
    fn task_pid(&self, id: &str) -> u32 {
        let tasks = self.ctr(&["task", "ls"]);
        let tasks = String::from_utf8_lossy(&tasks.stdout).into_owned();
        tasks
            .lines()
            .find_map(|l| {
                let mut fields = l.split_whitespace();
                (fields.next() == Some(id)).then(|| fields.next())?
            })
            .unwrap_or_else(|| panic!("no task {id} in:\n{tasks}"))
            .parse()
            .unwrap()
    }

    /// Processes whose command line names this test's directory (containerd, its shims).
    fn processes(&self) -> Vec<u32> {
        processes_naming(self.dir.path())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Containers first (runc removes their state), then containerd, then any shim left.
        let tasks = self.ctr(&["task", "ls", "-q"]);
        for id in String::from_utf8_lossy(&tasks.stdout).lines() {
            let _ = self.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
            let _ = self.ctr(&["task", "delete", "--force", id]);
            let _ = self.ctr(&["container", "delete", id]);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.daemon.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        for pid in self.processes() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn require_root() {
    switchyard_e2e::require_root("this test runs a private containerd and runc");
}

fn processes_naming(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().map_while(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) && pid != std::process::id() {
            pids.push(pid);
        }
    }
    pids
}

fn mounts_naming(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(str::to_owned)
        .collect()
}

fn build_image(image: Image, binary: &Path, out: &Path) -> BuiltImage {
    let spec = image_spec(image, binary, "localhost", TAG);
    build(&spec, &out.join(format!("{}.tar", image.repository()))).unwrap()
}

fn uid_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .unwrap()
        .to_owned()
}

/// The operator image as the injected init container uses it: its iptables run, `proxy-init
/// --dry-run` works as the image's own user, and, as root with `NET_ADMIN` in a network
/// namespace of the test's own (the init container's `runAsUser: 0`), `proxy-init` installs the
/// rules with either backend and writes the bootstrap.
fn proxy_init_runs_from_the_operator_image(
    containerd: &Containerd,
    namespaces: &[(&str, Netns)],
    built: &[(Image, BuiltImage)],
    out: &Path,
) {
    let operator = Image::Operator.reference("localhost", TAG);
    for (program, backend) in [
        ("iptables-nft", "(nf_tables)"),
        ("ip6tables-legacy", "(legacy)"),
    ] {
        let (code, text) = containerd.run(&operator, program, &[program, "--version"]);
        assert_eq!(code, 0, "{text}");
        assert!(
            text.starts_with("ip") && text.contains(backend),
            "{program}: {text}"
        );
    }

    let secrets = out.join("secrets");
    let run = out.join("run");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(secrets.join("token"), "a-token\n").unwrap();
    // The xDS CA (public), which the injector passes in the environment instead.
    std::fs::write(
        secrets.join("xds-ca.crt"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    // The proxy's UID writes nothing here; the init container (root) does.
    let mounts = [
        format!(
            "type=bind,src={},dst=/var/run/secrets/switchyard,options=rbind:ro",
            secrets.display()
        ),
        format!(
            "type=bind,src={},dst=/var/run/switchyard,options=rbind:rw",
            run.display()
        ),
    ];
    let pod_flags = [
        "switchyard",
        "proxy-init",
        "--pod",
        "demo/web-0",
        "--pod-ip",
        "10.244.0.7",
        "--token-file",
        "/var/run/secrets/switchyard/token",
        "--xds-ca-file",
        "/var/run/secrets/switchyard/xds-ca.crt",
        "--bootstrap-out",
        "/var/run/switchyard/bootstrap.json",
        "--skip-outbound-ports",
        "5432",
    ];
    let mut options = vec!["--net-host"];
    for m in &mounts {
        options.extend(["--mount", m]);
    }
    let dry: Vec<&str> = pod_flags.iter().copied().chain(["--dry-run"]).collect();
    let (code, text) = containerd.run_with(&options, &operator, "proxy-init-dry", &dry);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("dry run: nothing is changed"), "{text}");
    assert!(text.contains("--to-ports 15001"), "{text}");
    assert!(!run.join("bootstrap.json").exists(), "{text}");

    // ctr has no --user: the same spec, as root.
    let (_, archive) = built.iter().find(|(i, _)| *i == Image::Operator).unwrap();
    let mut spec = image_spec(
        Image::Operator,
        switchyard_e2e::switchyard_bin(),
        "localhost",
        TAG,
    );
    spec.name = format!("localhost/switchyard-as-root:{TAG}");
    spec.user = switchyard_images::User { uid: 0, gid: 0 };
    let root = build(&spec, &out.join("switchyard-as-root.tar")).unwrap();
    assert_ne!(root.digest, archive.digest);
    let imported = containerd.ctr(&["images", "import", &root.path.to_string_lossy()]);
    assert!(imported.status.success(), "{imported:?}");

    for (backend, netns) in namespaces {
        let with_ns = format!("network:{}", netns.path().display());
        let mut options = vec!["--with-ns", &with_ns, "--cap-add", "CAP_NET_ADMIN"];
        for m in &mounts {
            options.extend(["--mount", m]);
        }
        let args: Vec<&str> = pod_flags
            .iter()
            .copied()
            .chain(["--iptables", backend])
            .collect();
        let (code, text) = containerd.run_with(
            &options,
            &root.name,
            &format!("proxy-init-{backend}"),
            &args,
        );
        assert_eq!(code, 0, "{text}");
        assert!(
            text.contains(&format!("iptables: {backend} (--iptables says so)")),
            "{text}"
        );
        // Not the "wrote <bootstrap>" line: `ctr run` can exit before it copies the last of
        // a task's output (CI lost this line once, exit code 0); the file itself is read below.
        // The rules are in the namespace, as the host's own iptables sees them.
        let saved = netns
            .exec(format!("iptables-{backend}-save"))
            .args(["-t", "nat"])
            .output()
            .unwrap();
        let saved = String::from_utf8_lossy(&saved.stdout);
        assert!(
            saved.contains("-A SWITCHYARD_OUTPUT -p tcp -m multiport --dports 5432 -m comment --comment \"switchyard/skip-outbound-ports\" -j RETURN"),
            "{saved}"
        );
        assert!(
            saved.contains(
                "-A OUTPUT -p tcp -m comment --comment \"switchyard/outbound\" -j SWITCHYARD_OUTPUT"
            ),
            "{saved}"
        );
        let bootstrap: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("bootstrap.json")).unwrap()).unwrap();
        assert_eq!(bootstrap["node"]["id"], "demo/web-0");
        std::fs::remove_file(run.join("bootstrap.json")).unwrap();
    }
}

// === Tests ===

#[test]
fn images_import_and_run_in_containerd() {
    let envoy: PathBuf = envoy_elf(&switchyard_e2e::mesh::envoy_bin()).unwrap();
    let binaries = [
        (Image::Operator, switchyard_e2e::switchyard_bin().to_owned()),
        (Image::Proxy, switchyard_e2e::proxy_bin().to_owned()),
        (Image::Envoy, envoy),
        (Image::Echo, switchyard_e2e::echo_bin().to_owned()),
    ];
    let out = tempfile::tempdir().unwrap();
    let built: Vec<_> = binaries
        .iter()
        .map(|(image, binary)| (*image, build_image(*image, binary, out.path())))
        .collect();

    // Before containerd: its private mount namespace only sees the `ip netns` mounts that
    // exist when it starts. Deleted after it stops.
    require_root();
    let namespaces = ["nft", "legacy"].map(|backend| {
        let name = format!("sy-ctr-{}-{backend}", std::process::id());
        (backend, Netns::new(name))
    });
    let containerd = Containerd::start();
    let dir = containerd.dir.path().to_owned();
    for (image, archive) in &built {
        let imported = containerd.ctr(&["images", "import", &archive.path.to_string_lossy()]);
        let text = String::from_utf8_lossy(&imported.stdout);
        assert!(imported.status.success(), "{image}: {imported:?}");
        assert!(
            text.contains(&format!("unpacking {} ({})", archive.name, archive.digest)),
            "imported under its name and digest: {text}"
        );
    }
    let listed = containerd.ctr(&["images", "ls", "-q"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    for (image, _) in &built {
        assert!(
            listed.contains(&image.reference("localhost", TAG)),
            "{listed}"
        );
    }

    let reference = |image: Image| image.reference("localhost", TAG);
    let (code, text) = containerd.run(&reference(Image::Envoy), "envoy", &["envoy", "--version"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("envoy  version: "), "{text}");

    let (code, text) = containerd.run(
        &reference(Image::Operator),
        "operator",
        &["switchyard", "--help"],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Usage: switchyard"), "{text}");

    proxy_init_runs_from_the_operator_image(&containerd, &namespaces, &built, out.path());

    let (code, text) = containerd.run(
        &reference(Image::Proxy),
        "proxy",
        &["switchyard-proxy", "--help"],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Usage: switchyard-proxy"), "{text}");

    // The echo server with the image's own entrypoint, in the host's network namespace on a
    // loopback port, answering a client on the host and a client in another container (which
    // resolves `localhost` through the image's nsswitch.conf and the host's /etc/hosts).
    let mut server = containerd
        .run_command(
            &reference(Image::Echo),
            "echo-server",
            &[
                "switchyard-echo",
                "serve",
                "--name",
                "in-a-container",
                "--http",
                "127.0.0.1:0",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = BufReader::new(server.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let startup = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the echo server started");
    let http = startup
        .split(' ')
        .find_map(|f| f.strip_prefix("http="))
        .unwrap_or_else(|| panic!("{startup}"))
        .to_owned();
    let port = http.rsplit(':').next().unwrap();

    let from_host = Command::new(switchyard_e2e::echo_bin())
        .args(["get", &format!("http://{http}/")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&from_host.stdout),
        "200 in-a-container\n"
    );

    let (code, text) = containerd.run(
        &reference(Image::Echo),
        "echo-client",
        &[
            "switchyard-echo",
            "get",
            &format!("http://localhost:{port}/"),
        ],
    );
    assert_eq!((code, text.as_str()), (0, "200 in-a-container\n"));

    let pid = containerd.task_pid("echo-server");
    assert_eq!(
        uid_of(pid),
        Image::Echo.user().uid.to_string(),
        "runs as its image's user"
    );

    let killed = containerd.ctr(&["task", "kill", "--signal", "SIGTERM", "echo-server"]);
    assert!(killed.status.success(), "{killed:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the echo server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit 0 on SIGTERM as PID 1: {status:?}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l.starts_with("SIGTERM: ")), "{rest:?}");

    drop(containerd);
    assert_eq!(
        processes_naming(&dir),
        Vec::<u32>::new(),
        "processes left behind"
    );
    assert_eq!(
        mounts_naming(&dir),
        Vec::<String>::new(),
        "mounts left behind"
    );
}
