//! Interception for real: the `switchyard proxy-init` binary installs its rules in network
//! namespaces this test creates (and always deletes), with iptables-nft and with
//! iptables-legacy, and real TCP connections show what is redirected and what is not.
//!
//! Needs root, `ip` (iproute2) and Debian's `iptables` package (both backends); without them the
//! tests fail and say so. Nothing touches the host's own network namespace or rules: the Pod and
//! the rest of the world are two namespaces joined by a veth pair, and the xtables lock is a
//! file of the test's own.
//!
//! ```text
//!  netns "pod"                                     netns "world"
//!  lo: 127.0.0.1, ::6                              lo: 10.150.0.10 fd00:100::10 (a Service)
//!  eth0 10.200.0.2 fd00:200::2  ◀── veth ──▶  eth0     10.96.0.10 fd00:10:96::10 (skipped CIDRs)
//!  listeners: outbound :15001, inbound :15006,     eth0 10.200.0.1 fd00:200::1
//!  admin :15000, health :15020,                    listeners: remote :80 :5432, UDP :53
//!  app :8080 and :9090
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use switchyard_e2e::netns::{APP_UID, Netns, POD_V4, PROXY_UID};

const SERVICE_V4: Ipv4Addr = Ipv4Addr::new(10, 150, 0, 10);
const SKIPPED_V4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const POD_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 2);
const WORLD_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1);
const SERVICE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 0x10);
const SKIPPED_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0x10);
const INBOUND_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
const INBOUND_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// The skip lists: the configuration of the `skip.v4.rules` and `skip.v6.rules` golden files
/// (`operator/src/intercept/tests.rs`, `skipping()`), so the kernel is held to the same text
/// the generator is.
const SKIP_INBOUND: &str = "9090, 8000-8010";
const SKIP_OUTBOUND_PORTS: &str = "5432,6379,443";
const SKIP_OUTBOUND_CIDRS: &str = "10.96.0.0/12,169.254.169.254,fd00:10:96::/108";
const SKIPPED_PORT: u16 = 5432;
const SKIPPED_INBOUND_PORT: u16 = 9090;
const APP_PORT: u16 = 8080;

const TIMEOUT: Duration = Duration::from_secs(3);

// === Utils ===

/// Who a client connection is made as.
#[derive(Clone, Copy, Debug)]
enum Who {
    Root,
    /// The proxy's UID (and GID).
    Proxy,
    /// Another UID, with the proxy's GID.
    ProxyGroup,
    /// Neither the proxy's UID nor its GID.
    App,
}

/// Listeners answering one line per connection, stopped when dropped.
#[derive(Default)]
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// What a listener answers.
#[derive(Clone, Copy)]
enum Reply {
    /// `<label> <address the connection reached>`.
    Local(&'static str),
    /// `<label> <SO_ORIGINAL_DST>`: a proxy port.
    OriginalDst(&'static str),
}

/// A pod namespace and a world namespace joined by a veth pair, and the test's own files.
struct Lab {
    pod: Netns,
    world: Netns,
    dir: tempfile::TempDir,
}

impl Servers {
    fn tcp(&mut self, listener: TcpListener, reply: Reply) {
        listener.set_nonblocking(true).unwrap();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let line = match reply {
                            Reply::Local(label) => {
                                format!("{label} {}", stream.local_addr().unwrap())
                            }
                            Reply::OriginalDst(label) => {
                                format!("{label} {}", original_dst(&stream))
                            }
                        };
                        let _ = stream.write_all(line.as_bytes());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        }));
    }

    /// Answers every datagram with `udp <address it reached>`.
    fn udp(&mut self, socket: UdpSocket) {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let line = format!("udp {}", socket.local_addr().unwrap());
                    let _ = socket.send_to(line.as_bytes(), from);
                }
            }
        }));
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Lab {
    /// The two namespaces, wired and addressed; `tag` keeps parallel tests apart.
    fn new(tag: &str) -> Self {
        require_root_and_tools();
        let (pod, world) = Netns::pod_and_world(tag);
        for (ns, v6) in [(&pod, POD_V6), (&world, WORLD_V6)] {
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]);
        }
        for a in [SERVICE_V4, SKIPPED_V4] {
            world.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        for a in [SERVICE_V6, SKIPPED_V6] {
            world.ip(&["addr", "add", &format!("{a}/128"), "dev", "lo"]);
        }
        pod.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &WORLD_V6.to_string(),
        ]);
        // Only ::1 is local on IPv6 loopback: the inbound proxy's ::6 must be added.
        pod.ip(&[
            "addr",
            "add",
            &format!("{INBOUND_SOURCE_V6}/128"),
            "dev",
            "lo",
        ]);
        let dir = tempfile::Builder::new()
            .prefix("switchyard-intercept-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("token"), "a-token\n").unwrap();
        std::fs::write(
            dir.path().join("xds-ca.crt"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        Lab { pod, world, dir }
    }

    fn bootstrap_out(&self) -> PathBuf {
        self.dir.path().join("run/bootstrap.json")
    }

    /// The flags of `switchyard proxy-init` and `switchyard bootstrap` for this Pod.
    fn pod_flags(&self) -> Vec<String> {
        [
            "--pod",
            "demo/web-0",
            "--pod-ip",
            &POD_V4.to_string(),
            "--token-file",
            &self.dir.path().join("token").to_string_lossy(),
            "--xds-host",
            "switchyard.mesh.svc",
            "--xds-ca-file",
            &self.dir.path().join("xds-ca.crt").to_string_lossy(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// `switchyard proxy-init` in the pod namespace, as the init container runs it.
    fn proxy_init(&self, iptables: &str) -> String {
        std::fs::create_dir_all(self.bootstrap_out().parent().unwrap()).unwrap();
        let output = self
            .iptables_env(&mut self.pod.exec(switchyard_e2e::switchyard_bin()))
            .arg("proxy-init")
            .args(self.pod_flags())
            .args(["--iptables", iptables])
            .args(["--skip-inbound-ports", SKIP_INBOUND])
            .args(["--skip-outbound-ports", SKIP_OUTBOUND_PORTS])
            .args(["--skip-outbound-cidrs", SKIP_OUTBOUND_CIDRS])
            .arg("--bootstrap-out")
            .arg(self.bootstrap_out())
            .output()
            .unwrap();
        let text = text(&output);
        assert!(output.status.success(), "proxy-init failed:\n{text}");
        text
    }

    /// The xtables lock is the test's own file, never the host's `/run/xtables.lock`.
    fn iptables_env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command.env("XTABLES_LOCKFILE", self.dir.path().join("xtables.lock"))
    }

    /// `<family>tables-<backend>-save -t nat` in the pod namespace.
    fn nat(&self, program: &str) -> String {
        let output = self
            .iptables_env(&mut self.pod.exec(program))
            .args(["-t", "nat"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{program}: {}", text(&output));
        String::from_utf8(output.stdout).unwrap()
    }

    /// The stand-ins of the proxy, the app and the world.
    fn serve(&self) -> Servers {
        let mut servers = Servers::default();
        let tcp = |ns: &Netns, ip: IpAddr, port: u16| -> TcpListener {
            ns.enter(|| {
                let socket = Socket::new(
                    Domain::for_address(SocketAddr::new(ip, port)),
                    Type::STREAM,
                    Some(Protocol::TCP),
                )
                .unwrap();
                if ip.is_ipv6() {
                    socket.set_only_v6(true).unwrap();
                }
                socket.set_reuse_address(true).unwrap();
                socket.bind(&SocketAddr::new(ip, port).into()).unwrap();
                socket.listen(64).unwrap();
                socket.into()
            })
        };
        for any in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ] {
            // The listeners of the Pod run as root: not the proxy's UID, as the test demands.
            servers.tcp(tcp(&self.pod, any, 15001), Reply::OriginalDst("outbound"));
            servers.tcp(tcp(&self.pod, any, 15006), Reply::OriginalDst("inbound"));
            servers.tcp(tcp(&self.pod, any, 15000), Reply::Local("admin"));
            servers.tcp(tcp(&self.pod, any, 15020), Reply::Local("health"));
            servers.tcp(tcp(&self.pod, any, APP_PORT), Reply::Local("app"));
            servers.tcp(
                tcp(&self.pod, any, SKIPPED_INBOUND_PORT),
                Reply::Local("app"),
            );
            servers.tcp(tcp(&self.world, any, 80), Reply::Local("remote"));
            servers.tcp(tcp(&self.world, any, SKIPPED_PORT), Reply::Local("remote"));
        }
        let udp = self
            .world
            .enter(|| UdpSocket::bind(SocketAddr::new(SERVICE_V4.into(), 53)).unwrap());
        servers.udp(udp);
        servers
    }
}

/// Runs `f` in `ns` as `who`.
fn enter<T: Send>(ns: &Netns, who: Who, f: impl FnOnce() -> T + Send) -> T {
    match who {
        Who::Root => ns.enter(f),
        Who::Proxy => ns.enter_as(PROXY_UID, PROXY_UID, f),
        Who::ProxyGroup => ns.enter_as(APP_UID, PROXY_UID, f),
        Who::App => ns.enter_as(APP_UID, APP_UID, f),
    }
}

/// The connection's destination before REDIRECT rewrote it.
fn original_dst(stream: &TcpStream) -> SocketAddr {
    let sock = SockRef::from(stream);
    let addr = if stream.local_addr().unwrap().is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    addr.expect("SO_ORIGINAL_DST").as_socket().unwrap()
}

/// Connects to `to` (from `from` when given) and returns the line the listener answered, or
/// the error.
fn ask(to: SocketAddr, from: Option<IpAddr>) -> String {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP)).unwrap();
    if let Some(from) = from {
        socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    }
    if let Err(e) = socket.connect_timeout(&to.into(), TIMEOUT) {
        return format!("error: {e}");
    }
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut stream: TcpStream = socket.into();
    let mut line = String::new();
    match stream.read_to_string(&mut line) {
        Ok(_) => line,
        Err(e) => format!("error: {e}"),
    }
}

fn to(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn run_ok(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {}", text(&output));
}

fn require_root_and_tools() {
    switchyard_e2e::require_root(
        "the interception tests create network namespaces and install iptables rules in them",
    );
    for program in ["ip", "iptables-nft", "iptables-legacy"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{program} not found: these tests need iproute2 and Debian's iptables package, \
             which has both backends (scripts/ensure-node-packages.sh installs it)"
        );
    }
}

/// The `-A` lines of an `iptables-save` (or restore input), by chain, in order.
fn rules_by_chain(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("-A ")) {
        let (chain, spec) = line.split_once(' ').unwrap();
        chains
            .entry(chain.to_owned())
            .or_default()
            .push(spec.to_owned());
    }
    chains
}

fn golden(name: &str) -> BTreeMap<String, Vec<String>> {
    let path = switchyard_e2e::workspace_root()
        .join("operator/src/intercept/golden")
        .join(name);
    rules_by_chain(&std::fs::read_to_string(&path).unwrap())
}

/// Installs the rules with `backend` twice, holding both tables to the golden files each time,
/// then checks every path a connection can take.
fn intercepts_with(backend: &str, tag: &str) {
    let lab = Lab::new(tag);
    let first = lab.proxy_init(backend);
    assert!(
        first.contains(&format!("iptables: {backend} (--iptables says so)")),
        "{first}"
    );
    let v4 = lab.nat(&format!("iptables-{backend}-save"));
    let v6 = lab.nat(&format!("ip6tables-{backend}-save"));
    assert_eq!(rules_by_chain(&v4), golden("skip.v4.rules"), "{v4}");
    assert_eq!(rules_by_chain(&v6), golden("skip.v6.rules"), "{v6}");
    let other = if backend == "nft" { "legacy" } else { "nft" };
    let untouched = lab.nat(&format!("iptables-{other}-save"));
    assert!(!untouched.contains("SWITCHYARD"), "{untouched}");

    // The init container runs again after a sandbox is recreated: same rules, no duplicates.
    let again = lab.proxy_init(backend);
    assert_eq!(
        lab.nat(&format!("iptables-{backend}-save"))
            .lines()
            .filter(|l| l.starts_with("-A"))
            .collect::<Vec<_>>(),
        v4.lines()
            .filter(|l| l.starts_with("-A"))
            .collect::<Vec<_>>(),
        "{again}"
    );
    assert_eq!(
        rules_by_chain(&lab.nat(&format!("ip6tables-{backend}-save"))),
        golden("skip.v6.rules")
    );

    let bootstrap = lab.bootstrap_out();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&bootstrap).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o644, "the proxy's UID reads it");
    let printed = Command::new(switchyard_e2e::switchyard_bin())
        .arg("bootstrap")
        .args(lab.pod_flags())
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", text(&printed));
    assert_eq!(std::fs::read(&bootstrap).unwrap(), printed.stdout);

    let _servers = lab.serve();
    let pod =
        |who: Who, dest: SocketAddr, from: Option<IpAddr>| enter(&lab.pod, who, || ask(dest, from));
    let world = |dest: SocketAddr| lab.world.enter(|| ask(dest, None));

    // Outbound: the app's TCP goes to the outbound proxy, which recovers where it was going.
    for (service, skipped) in [
        (IpAddr::from(SERVICE_V4), IpAddr::from(SKIPPED_V4)),
        (SERVICE_V6.into(), SKIPPED_V6.into()),
    ] {
        let service_80 = to(service, 80);
        assert_eq!(
            pod(Who::App, service_80, None),
            format!("outbound {service_80}")
        );
        assert_eq!(
            pod(Who::Root, service_80, None),
            format!("outbound {service_80}")
        );
        // The proxy's own connections, by UID or by GID, leave the Pod.
        assert_eq!(
            pod(Who::Proxy, service_80, None),
            format!("remote {service_80}")
        );
        assert_eq!(
            pod(Who::ProxyGroup, service_80, None),
            format!("remote {service_80}")
        );
        // Skipped port and CIDR.
        let skipped_port = to(service, SKIPPED_PORT);
        assert_eq!(
            pod(Who::App, skipped_port, None),
            format!("remote {skipped_port}")
        );
        let skipped_cidr = to(skipped, 80);
        assert_eq!(
            pod(Who::App, skipped_cidr, None),
            format!("remote {skipped_cidr}")
        );
    }

    // UDP (DNS) is never redirected.
    let udp = enter(&lab.pod, Who::App, || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        socket.send_to(b"query", to(SERVICE_V4, 53)).unwrap();
        let mut buf = [0; 64];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    assert_eq!(udp, format!("udp {}", to(SERVICE_V4, 53)));

    for (pod_ip, inbound_source, loopback) in [
        (
            IpAddr::from(POD_V4),
            IpAddr::from(INBOUND_SOURCE_V4),
            IpAddr::from(Ipv4Addr::LOCALHOST),
        ),
        (
            POD_V6.into(),
            INBOUND_SOURCE_V6.into(),
            Ipv6Addr::LOCALHOST.into(),
        ),
    ] {
        let app = to(pod_ip, APP_PORT);
        // Inbound: to the inbound proxy, except skipped ports and the proxy's own.
        assert_eq!(world(app), format!("inbound {app}"));
        let skipped = to(pod_ip, SKIPPED_INBOUND_PORT);
        assert_eq!(world(skipped), format!("app {skipped}"));
        // The health port is let through (the kubelet's probes); the admin port is not: from
        // outside the Pod it reaches the inbound proxy, never the admin interface.
        let health = to(pod_ip, 15020);
        assert_eq!(world(health), format!("health {health}"));
        let admin = to(pod_ip, 15000);
        assert_eq!(world(admin), format!("inbound {admin}"));

        // Loopback: the app calling itself is let through; the outbound proxy calling its own
        // Pod IP (an app calling its own Service) goes through the inbound proxy; the inbound
        // proxy reaching the app from 127.0.0.6 / ::6 is let through.
        assert_eq!(pod(Who::App, app, None), format!("app {app}"));
        assert_eq!(pod(Who::Proxy, app, None), format!("inbound {app}"));
        assert_eq!(
            pod(Who::Proxy, app, Some(inbound_source)),
            format!("app {app}")
        );
        let local = to(loopback, APP_PORT);
        assert_eq!(pod(Who::App, local, None), format!("app {local}"));
        assert_eq!(pod(Who::Proxy, local, None), format!("app {local}"));
    }
}

// === Tests ===

#[test]
fn nft_redirects_exactly_what_it_should() {
    intercepts_with("nft", "nft");
}

#[test]
fn legacy_redirects_exactly_what_it_should() {
    // Fail, not skip, when this kernel has no legacy x_tables: the lead must know.
    require_root_and_tools();
    let probe = Netns::new(format!("sy-probe-{}", std::process::id()));
    let output = probe
        .exec("iptables-legacy")
        .args(["-t", "nat", "-S"])
        .env(
            "XTABLES_LOCKFILE",
            std::env::temp_dir().join(format!("sy-xtables-{}.lock", std::process::id())),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "iptables-legacy cannot use this kernel's nat table (no ip_tables/iptable_nat?): {}",
        text(&output)
    );
    drop(probe);
    intercepts_with("legacy", "legacy");
}

#[test]
fn auto_follows_the_backend_that_holds_rules_and_defaults_to_nft() {
    let lab = Lab::new("auto");
    let out = lab.proxy_init("auto");
    assert!(
        out.contains("iptables: nft (no rules in either backend; nft is the default)"),
        "{out}"
    );
    assert!(lab.nat("iptables-nft-save").contains("SWITCHYARD_OUTPUT"));

    // A namespace whose legacy tables hold kubelet's hint (as on a legacy node).
    let legacy = Lab::new("auto-legacy");
    run_ok(
        legacy
            .iptables_env(&mut legacy.pod.exec("iptables-legacy"))
            .args(["-t", "mangle", "-N", "KUBE-IPTABLES-HINT"]),
    );
    let out = legacy.proxy_init("auto");
    assert!(
        out.contains("iptables: legacy (its tables hold kubelet's KUBE-IPTABLES-HINT chain)"),
        "{out}"
    );
    assert!(
        legacy
            .nat("iptables-legacy-save")
            .contains("SWITCHYARD_OUTPUT")
    );
    assert!(!legacy.nat("iptables-nft-save").contains("SWITCHYARD"));
    // Re-running keeps to the backend it chose.
    let out = legacy.proxy_init("auto");
    assert!(out.contains("iptables: legacy ("), "{out}");
}

#[test]
fn ipv6_is_skipped_where_the_namespace_has_none() {
    let lab = Lab::new("no-v6");
    run_ok(
        lab.pod
            .exec("sysctl")
            .args(["-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]),
    );
    let out = lab.proxy_init("nft");
    assert!(
        out.contains(
            "IPv6: skipped: IPv6 is disabled in this network namespace \
             (net.ipv6.conf.all.disable_ipv6 = 1)"
        ),
        "{out}"
    );
    assert!(!out.contains("ip6tables"), "{out}");
    assert!(lab.nat("iptables-nft-save").contains("SWITCHYARD_OUTPUT"));
    assert!(!lab.nat("ip6tables-nft-save").contains("SWITCHYARD"));
}
