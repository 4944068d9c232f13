//! A data plane behind real interception: `switchyard proxy-init` installs its redirect rules in
//! a Pod network namespace, the real `switchyard-proxy` (or Envoy) runs there as the proxy's UID,
//! and an xDS snapshot in the intercepted shape is served to it by a fake control plane: the
//! `outbound` listener on 15001 (the `original_dst` filter, chains per ClusterIP and port, the
//! HTTP inspector on undeclared ports, the loop guard, the passthrough default) and the
//! `inbound` listener on 15006 (the TLS inspector, chains per app port, the passthrough, and
//! clusters that reach the app from 127.0.0.6). The app's plain TCP connections, and the
//! world's to the Pod, then show what the proxy does with each original destination.
//!
//! The same snapshot runs on Envoy with `SWITCHYARD_DATA_PLANE=envoy` (the default; Envoy from
//! `SWITCHYARD_ENVOY` or `.venv`), so both data planes are held to the same behaviour; the
//! bundled proxy with `SWITCHYARD_DATA_PLANE=bundled`.
//!
//! Needs root, `ip`, `setpriv` and iptables-nft. Namespaces, processes and threads are the
//! test's own and go when it ends, failed or not.
//!
//! ```text
//!  netns "pod"                                   netns "world"
//!  eth0 10.200.0.2 ◀──────── veth ────────▶ eth0 10.200.0.1
//!  the proxy (UID 1337): outbound :15001         lo: 10.150.1.10 web :8080 (HTTP)
//!  inbound :15006, admin 127.0.0.1:15000            10.150.1.11 kv :8080 (HTTP), :7000 (banner)
//!  fake xDS 127.0.0.1:15010                          10.150.1.12 db :5432
//!  the app (UID 1000), serving :8080 and :9999       10.150.2.1 elsewhere :9999
//!  ClusterIPs (nowhere): web 10.150.0.10:80 (HTTP), kv 10.150.0.11:7000 (undeclared),
//!                        db 10.150.0.12:5432 (TCP)
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster,
            core::v3::{BindConfig, SocketAddress, TrafficDirection, socket_address},
            listener::v3::Listener,
            route::v3::RouteConfiguration,
        },
        service::discovery::v3::{
            DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
            Resource,
            aggregated_discovery_service_server::{
                AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
            },
        },
    },
    google::protobuf::Any,
};
use prost::Name;
use switchyard_e2e::{
    DataPlane,
    mesh::Killed,
    netns::{APP_UID, Netns, POD_V4, PROXY_UID},
};
use switchyard_proxy_config::test_support::{
    self, any, capture_listener, chain, close, duration, hcm, http_inspector, original_dst,
    passthrough, port_match, routes_to, service_chain, tcp_proxy, tls_inspector,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

const WEB_VIP: Ipv4Addr = Ipv4Addr::new(10, 150, 0, 10);
const KV_VIP: Ipv4Addr = Ipv4Addr::new(10, 150, 0, 11);
const DB_VIP: Ipv4Addr = Ipv4Addr::new(10, 150, 0, 12);
const WEB: Ipv4Addr = Ipv4Addr::new(10, 150, 1, 10);
const KV: Ipv4Addr = Ipv4Addr::new(10, 150, 1, 11);
const DB: Ipv4Addr = Ipv4Addr::new(10, 150, 1, 12);
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(10, 150, 2, 1);
const OUTBOUND: u16 = 15001;
const INBOUND: u16 = 15006;
/// The app's declared port, and one the configuration does not know.
const APP_PORT: u16 = 8080;
const OTHER_APP_PORT: u16 = 9999;
/// Where the inbound proxy reaches the app from: the redirect rules let it through.
const INBOUND_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
const ADMIN: u16 = 15000;
const XDS: u16 = 15010;
/// The listener filters' timeout of the shape.
const DETECT: Duration = test_support::LISTENER_FILTERS_TIMEOUT;

// === Utils ===

/// What a world listener answers.
#[derive(Clone, Copy)]
enum Reply {
    /// `<label> <address the connection reached>` on accept, then close.
    Banner(&'static str),
    /// One HTTP/1.1 response to one request, its body `<label> <address reached>`.
    Http(&'static str),
    /// `<label> <address reached> from <peer address>` after a line, then close.
    Peer(&'static str),
}

/// Listeners in the world namespace, stopped when dropped.
#[derive(Default)]
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    fn serve(&mut self, ns: &Netns, at: SocketAddr, reply: Reply) {
        let listener = ns.enter(|| TcpListener::bind(at).unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || answer(stream, reply));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        }));
    }
}

fn answer(mut stream: TcpStream, reply: Reply) {
    let reached = stream.local_addr().unwrap();
    match reply {
        Reply::Banner(label) => {
            let _ = write!(stream, "{label} {reached}\r\n");
        }
        Reply::Peer(label) => {
            // A line first: closing with it unread would reset the connection.
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut byte = [0u8; 1];
            while stream.read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {}
            let peer = stream.peer_addr().unwrap().ip();
            let _ = write!(stream, "{label} {reached} from {peer}\r\n");
        }
        Reply::Http(label) => {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = format!("{label} {reached}");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
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

/// The pod and world namespaces joined by a veth pair, and the test's own files.
struct Lab {
    pod: Netns,
    world: Netns,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        switchyard_e2e::require_root(
            "the interception tests create network namespaces and install iptables rules in them",
        );
        let (pod, world) = Netns::pod_and_world("proxy");
        for a in [WEB, KV, DB, ELSEWHERE] {
            world.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        let dir = tempfile::Builder::new()
            .prefix("switchyard-intercept-proxy-")
            .tempdir()
            .unwrap();
        // The proxy runs as its own UID and reads its bootstrap from here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(dir.path().join("token"), "a-token\n").unwrap();
        Lab { pod, world, dir }
    }

    /// `switchyard proxy-init` in the pod namespace, as the init container runs it. Only its
    /// rules are used (the data plane gets a bootstrap of this test's own, on plaintext ADS to
    /// the fake control plane), so the xDS CA it requires is any certificate.
    fn proxy_init(&self) {
        let ca = rcgen::generate_simple_self_signed(vec!["xds.test".to_owned()]).unwrap();
        let ca_file = self.dir.path().join("xds-ca.crt");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let output = self
            .pod
            .exec(switchyard_e2e::switchyard_bin())
            .env("XTABLES_LOCKFILE", self.dir.path().join("xtables.lock"))
            .arg("proxy-init")
            .args(["--pod", "demo/client-0", "--pod-ip", &POD_V4.to_string()])
            .arg("--token-file")
            .arg(self.dir.path().join("token"))
            .args(["--xds-host", "127.0.0.1", "--iptables", "nft"])
            .arg("--xds-ca-file")
            .arg(&ca_file)
            .arg("--bootstrap-out")
            .arg(self.dir.path().join("init-bootstrap.json"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "proxy-init failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The data plane in the pod namespace as the proxy's UID, on delta ADS to the fake
    /// control plane; the bootstrap is Envoy's, of which the bundled proxy reads its part.
    fn start_proxy(&self, plane: DataPlane) -> Killed {
        let bootstrap = serde_json::json!({
            "node": { "id": "demo/client-0", "cluster": "demo" },
            "admin": { "address": { "socket_address": {
                "address": "127.0.0.1", "port_value": ADMIN } } },
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "DELTA_GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [{ "envoy_grpc": { "cluster_name": "xds" } }]
                },
                "cds_config": { "ads": {}, "resource_api_version": "V3" },
                "lds_config": { "ads": {}, "resource_api_version": "V3" }
            },
            "static_resources": { "clusters": [{
                "name": "xds",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} }
                    }
                },
                "load_assignment": { "cluster_name": "xds", "endpoints": [{ "lb_endpoints": [{
                    "endpoint": { "address": { "socket_address": {
                        "address": "127.0.0.1", "port_value": XDS } } }
                }] }] }
            }] }
        });
        let path = self.dir.path().join("bootstrap.json");
        std::fs::write(&path, bootstrap.to_string()).unwrap();
        let log = std::fs::File::create(self.log()).unwrap();
        let mut command = self.pod.exec("setpriv");
        command.args([
            &format!("--reuid={PROXY_UID}"),
            &format!("--regid={PROXY_UID}"),
            "--clear-groups",
            "--",
        ]);
        match plane {
            DataPlane::Bundled => command
                .arg(switchyard_e2e::proxy_bin())
                .arg("--bootstrap")
                .arg(&path)
                .env("RUST_LOG", "info,switchyard_proxy=debug"),
            DataPlane::Envoy => command
                .arg(switchyard_e2e::mesh::envoy_bin())
                .arg("-c")
                .arg(&path)
                .args(["--disable-hot-restart", "-l", "info"]),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the data plane");
        Killed(child)
    }

    fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("proxy.log")
    }

    fn proxy_log(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

/// What the app (another UID, so its connections are redirected) gets back after sending
/// `send` to `to`, until the connection closes; and how long that took.
fn app(lab: &Lab, to: SocketAddr, send: &str) -> (String, Duration) {
    lab.pod.enter_as(APP_UID, APP_UID, || {
        let started = Instant::now();
        let Ok(mut conn) = TcpStream::connect_timeout(&to, Duration::from_secs(3)) else {
            return ("error: connect".to_owned(), started.elapsed());
        };
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(send.as_bytes()).unwrap();
        let mut out = String::new();
        if let Err(e) = conn.read_to_string(&mut out) {
            out.push_str(&format!("error: {e}"));
        }
        (out, started.elapsed())
    })
}

/// The first flight of a real TLS client: its ClientHello.
fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("app.demo.svc").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// An HTTP/1.1 GET with `Host: host`: the body the app gets.
fn get(lab: &Lab, to: SocketAddr, host: &str) -> String {
    let (raw, _) = app(
        lab,
        to,
        &format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"),
    );
    let response = switchyard_e2e::mesh::parse_response(&raw);
    assert_eq!(response.status, 200, "{raw}\n{}", lab.proxy_log());
    response.body
}

// === the xDS snapshot, in the intercepted shape ===

fn outbound_listener() -> Listener {
    capture_listener(
        "outbound",
        OUTBOUND,
        TrafficDirection::Outbound,
        // The inspector runs only on the undeclared port, 7000.
        vec![original_dst(), http_inspector(&[7000])],
        vec![
            service_chain(
                "demo/db|5432",
                &DB_VIP.to_string(),
                5432,
                false,
                tcp_proxy("demo/db|5432", "demo/db|5432"),
            ),
            service_chain(
                "demo/kv|7000|http",
                &KV_VIP.to_string(),
                7000,
                true,
                hcm("demo/kv|7000"),
            ),
            service_chain(
                "demo/kv|7000",
                &KV_VIP.to_string(),
                7000,
                false,
                tcp_proxy("demo/kv|7000", "demo/kv|7000"),
            ),
            service_chain(
                "demo/web|80",
                &WEB_VIP.to_string(),
                80,
                false,
                hcm("demo/web|80"),
            ),
            chain("loop", Some(port_match(OUTBOUND, "")), close()),
        ],
        chain("passthrough", None, tcp_proxy("passthrough", "passthrough")),
    )
}

/// The `inbound` listener of a permissive Pod serving `APP_PORT`: TLS there would be mTLS
/// (closed here, for want of certificates), plaintext goes to the app; other ports pass
/// through.
fn inbound_listener() -> Listener {
    capture_listener(
        "inbound",
        INBOUND,
        TrafficDirection::Inbound,
        vec![original_dst(), tls_inspector()],
        vec![
            chain(
                &format!("inbound|{APP_PORT}"),
                Some(port_match(APP_PORT, "tls")),
                close(),
            ),
            chain(
                &format!("inbound|{APP_PORT}|plaintext"),
                Some(port_match(APP_PORT, "")),
                tcp_proxy("inbound", &format!("inbound|{APP_PORT}")),
            ),
        ],
        chain(
            "passthrough",
            None,
            tcp_proxy("inbound-passthrough", "inbound-passthrough"),
        ),
    )
}

/// Connections of `c` come from `INBOUND_SOURCE`.
fn from_inbound_source(c: Cluster) -> Cluster {
    Cluster {
        upstream_bind_config: Some(BindConfig {
            source_address: Some(SocketAddress {
                address: INBOUND_SOURCE.to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..c
    }
}

/// A STATIC cluster of `ip:port`; 1 s to connect.
fn static_cluster(name: &str, ip: Ipv4Addr, port: u16) -> Cluster {
    Cluster {
        connect_timeout: Some(duration(Duration::from_secs(1))),
        ..test_support::static_cluster_at(name, SocketAddr::from((ip, port)))
    }
}

/// The snapshot by type URL: `(name, resource)`.
fn snapshot() -> BTreeMap<String, Vec<(String, Any)>> {
    let named = |name: &str, a: Any| (name.to_owned(), a);
    let passthrough = passthrough("passthrough");
    let clusters = [
        from_inbound_source(static_cluster(
            &format!("inbound|{APP_PORT}"),
            POD_V4,
            APP_PORT,
        )),
        from_inbound_source(Cluster {
            name: "inbound-passthrough".to_owned(),
            ..passthrough.clone()
        }),
        static_cluster("demo/web|80", WEB, 8080),
        // The undeclared port's backend, HTTP and server-first at once, stands here as two.
        static_cluster("demo/kv-http|7000", KV, 8080),
        static_cluster("demo/kv|7000", KV, 7000),
        static_cluster("demo/db|5432", DB, 5432),
        passthrough,
    ]
    .iter()
    .map(|c| named(&c.name, any(c)))
    .collect();
    BTreeMap::from([
        (Cluster::type_url(), clusters),
        (
            Listener::type_url(),
            vec![
                named("outbound", any(&outbound_listener())),
                named("inbound", any(&inbound_listener())),
            ],
        ),
        (
            RouteConfiguration::type_url(),
            vec![
                named("demo/web|80", any(&routes_to("demo/web|80", "demo/web|80"))),
                named(
                    "demo/kv|7000",
                    any(&routes_to("demo/kv|7000", "demo/kv-http|7000")),
                ),
            ],
        ),
    ])
}

// === the fake control plane ===

/// Delta ADS serving a fixed snapshot: every subscription gets the resources it names (all of
/// them for a wildcard); NACKs are kept for the test to report. Enough for one proxy that never
/// unsubscribes.
struct FakeAds {
    snapshot: Arc<BTreeMap<String, Vec<(String, Any)>>>,
    nacks: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeAds {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("delta ADS only"))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let snapshot = self.snapshot.clone();
        let nacks = self.nacks.clone();
        tokio::spawn(async move {
            let mut nonce = 0u64;
            while let Ok(Some(r)) = requests.message().await {
                if let Some(status) = &r.error_detail {
                    nacks.lock().unwrap().push(status.message.clone());
                }
                // An ACK or NACK answers a response; a request without nonce subscribes.
                if !r.response_nonce.is_empty() {
                    continue;
                }
                let names = &r.resource_names_subscribe;
                // Envoy asks for all clusters and listeners with an empty list.
                let wildcard = names.iter().any(|n| n == "*")
                    || (names.is_empty()
                        && [Cluster::type_url(), Listener::type_url()].contains(&r.type_url));
                let resources = snapshot
                    .get(&r.type_url)
                    .into_iter()
                    .flatten()
                    .filter(|(name, _)| wildcard || names.contains(name))
                    .map(|(name, resource)| Resource {
                        name: name.clone(),
                        version: "1".to_owned(),
                        resource: Some(resource.clone()),
                        ..Default::default()
                    })
                    .collect();
                nonce += 1;
                let response = DeltaDiscoveryResponse {
                    system_version_info: "1".to_owned(),
                    type_url: r.type_url.clone(),
                    nonce: nonce.to_string(),
                    resources,
                    ..Default::default()
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves the snapshot on `127.0.0.1:15010` inside the pod namespace (the socket is made
/// there; the server runs on `rt`).
fn serve_xds(lab: &Lab, rt: &tokio::runtime::Runtime) -> Arc<Mutex<Vec<String>>> {
    let listener = lab
        .pod
        .enter(|| TcpListener::bind((Ipv4Addr::LOCALHOST, XDS)).unwrap());
    listener.set_nonblocking(true).unwrap();
    let nacks = Arc::new(Mutex::new(Vec::new()));
    let ads = FakeAds {
        snapshot: Arc::new(snapshot()),
        nacks: nacks.clone(),
    };
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(ads))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
    });
    nacks
}

// === the test ===

#[test]
fn redirected_connections_are_routed_by_original_destination() {
    let lab = Lab::new();
    lab.proxy_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let nacks = serve_xds(&lab, &rt);
    let mut servers = Servers::default();
    for (ip, port, reply) in [
        (WEB, 8080, Reply::Http("web")),
        (KV, 8080, Reply::Http("kv-http")),
        (KV, 7000, Reply::Banner("+OK kv")),
        (DB, 5432, Reply::Banner("db")),
        (ELSEWHERE, 9999, Reply::Banner("elsewhere")),
    ] {
        servers.serve(&lab.world, SocketAddr::from((ip, port)), reply);
    }
    for port in [APP_PORT, OTHER_APP_PORT] {
        servers.serve(
            &lab.pod,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
            Reply::Peer("app"),
        );
    }
    let plane = DataPlane::from_env();
    let _proxy = lab.start_proxy(plane);

    // Ready once it has the whole snapshot; its admin port is the proxy's own (not redirected).
    let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = lab.pod.enter(|| {
            switchyard_e2e::mesh::http_request(admin, "GET", "admin", "/ready", &[], "")
                .is_ok_and(|r| r.status == 200)
        });
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy never became ready; NACKs: {:?}\n{}",
            nacks.lock().unwrap(),
            lab.proxy_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(nacks.lock().unwrap().is_empty(), "{:?}", nacks.lock());
    let log = || lab.proxy_log();

    // A ClusterIP and port: that service's backend, whatever the Host says.
    let web = get(&lab, SocketAddr::from((WEB_VIP, 80)), "db.demo.svc");
    assert_eq!(web, "web 10.150.1.10:8080", "{}", log());
    let (db, _) = app(&lab, SocketAddr::from((DB_VIP, 5432)), "");
    assert_eq!(db, "db 10.150.1.12:5432\r\n", "{}", log());

    // An undeclared port: HTTP is detected and routed as HTTP...
    let kv = get(&lab, SocketAddr::from((KV_VIP, 7000)), "anything");
    assert_eq!(kv, "kv-http 10.150.1.11:8080", "{}", log());
    // ...and a server-first protocol, silent until the server speaks, still works once the
    // detection gives up.
    let (banner, waited) = app(&lab, SocketAddr::from((KV_VIP, 7000)), "");
    assert_eq!(banner, "+OK kv 10.150.1.11:7000\r\n", "{}", log());
    assert!(
        waited >= DETECT - Duration::from_millis(50) && waited < DETECT * 5,
        "the banner came after {waited:?}"
    );

    // An unknown destination passes through unchanged, without waiting for detection.
    let elsewhere = SocketAddr::from((ELSEWHERE, 9999));
    let (through, waited) = app(&lab, elsewhere, "");
    assert_eq!(through, format!("elsewhere {elsewhere}\r\n"), "{}", log());
    assert!(waited < DETECT, "{waited:?}");

    // Straight to the outbound port (not redirected): the loop guard closes it.
    for to in [
        SocketAddr::from((Ipv4Addr::LOCALHOST, OUTBOUND)),
        SocketAddr::from((POD_V4, OUTBOUND)),
    ] {
        let (closed, waited) = app(&lab, to, "GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        // Closed with the request unread, which the kernel may answer with a reset.
        assert!(
            closed.is_empty() || closed.contains("Connection reset"),
            "{to}: {closed}"
        );
        assert!(waited < DETECT, "{to}: {waited:?}");
    }

    // Inbound: a connection to the app's port reaches it through the inbound proxy, from
    // 127.0.0.6 (from the Pod IP it would be redirected to the proxy again); so does one to a
    // port the configuration does not know, through the passthrough.
    let world = |to: SocketAddr, send: &[u8]| {
        lab.world.enter(|| {
            let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            conn.write_all(send).unwrap();
            let mut out = String::new();
            if let Err(e) = conn.read_to_string(&mut out) {
                out.push_str(&format!("error: {e}"));
            }
            out
        })
    };
    for port in [APP_PORT, OTHER_APP_PORT] {
        let to = SocketAddr::from((POD_V4, port));
        assert_eq!(
            world(to, b"hello\r\n"),
            format!("app {to} from {INBOUND_SOURCE}\r\n"),
            "{}",
            log()
        );
    }
    // TLS to the app's port takes the TLS chain (a stand-in that closes), detected per port.
    let tls = world(SocketAddr::from((POD_V4, APP_PORT)), &client_hello());
    assert!(
        tls.is_empty() || tls.contains("Connection reset"),
        "{tls}\n{}",
        log()
    );

    // Passthrough connections are counted as other TCP proxy connections are.
    let (path, line): (&str, fn(&str) -> String) = match plane {
        DataPlane::Bundled => ("/metrics", |backend| {
            let direction = if backend.starts_with("inbound") {
                "inbound"
            } else {
                "outbound"
            };
            format!(
                "tcp_connections_opened_total{{direction=\"{direction}\",\
                 listener=\"{direction}\",backend=\"{backend}\",peer=\"\"}} 1"
            )
        }),
        DataPlane::Envoy => ("/stats", |backend| {
            format!("cluster.{backend}.upstream_cx_total: 1\n")
        }),
    };
    let stats = lab.pod.enter(|| {
        switchyard_e2e::mesh::http_request(admin, "GET", "admin", path, &[], "").unwrap()
    });
    for backend in [
        "passthrough",
        "demo/kv|7000",
        "demo/db|5432",
        "inbound-passthrough",
        "inbound|8080",
    ] {
        let line = line(backend);
        assert!(stats.body.contains(&line), "{line}:\n{}", stats.body);
    }
    drop(servers);
    drop(rt);
}
