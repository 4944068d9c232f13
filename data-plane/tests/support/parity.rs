//! The harness of the parity tests: Envoy and the bundled proxy, both on ADS from an in-test control plane.
//!
//! ```text
//!   test ──HTTP──▶ bundled proxy ─┐            ┌─▶ app (loopback, by path)
//!   test ──HTTP──▶ Envoy ─────────┴─ listener ─┘
//!                  both ──ADS + the test's sink (gRPC, the `xds` cluster)──▶ ControlPlane
//! ```

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use envoy_types::pb::{
    envoy::{
        config::listener::v3::Listener,
        service::discovery::v3::{
            DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
            aggregated_discovery_service_server::{
                AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
            },
        },
    },
    google::protobuf::Any,
};
use prost::Name;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_stream::{
    StreamExt as _,
    wrappers::{ReceiverStream, TcpListenerStream},
};
use tonic::{Request, Response, Status, Streaming, service::Routes};

/// How long anything the test waits for may take.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);
pub(crate) const BUNDLED: &str = "bundled~web-0";
pub(crate) const ENVOY: &str = "envoy~web-1";

// === the control plane ===

/// The resources of a type for a node's listener port, given the test's current state.
type Resources<S> = Arc<dyn Fn(&str, u16, &S) -> Vec<Any> + Send + Sync>;

/// Serves each node (by its listener port) the test's resources, once per type per stream; a
/// change of the state re-sends the listener to every stream.
struct Ads<S> {
    /// The listener port of each node id.
    ports: HashMap<String, u16>,
    resources: Resources<S>,
    state: watch::Receiver<S>,
}

#[tonic::async_trait]
impl<S: Clone + Send + Sync + 'static> AggregatedDiscoveryService for Ads<S> {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let (ports, resources) = (self.ports.clone(), Arc::clone(&self.resources));
        let mut state = self.state.clone();
        tokio::spawn(async move {
            let mut port = None;
            let mut answered = Vec::new();
            let mut version = 1;
            loop {
                let request = tokio::select! {
                    request = requests.message() => match request {
                        Ok(Some(request)) => request,
                        _ => return,
                    },
                    Ok(()) = state.changed(), if port.is_some() => {
                        version += 1;
                        let now = state.borrow_and_update().clone();
                        let type_url = Listener::type_url();
                        let response = DiscoveryResponse {
                            version_info: version.to_string(),
                            resources: resources(&type_url, port.unwrap_or_default(), &now),
                            type_url,
                            nonce: format!("v{version}"),
                            ..Default::default()
                        };
                        if tx.send(Ok(response)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                if let Some(node) = &request.node {
                    port = ports.get(&node.id).copied();
                }
                let Some(port) = port else { return };
                if answered.contains(&request.type_url) {
                    continue;
                }
                answered.push(request.type_url.clone());
                let now = state.borrow_and_update().clone();
                let response = DiscoveryResponse {
                    version_info: version.to_string(),
                    resources: resources(&request.type_url, port, &now),
                    type_url: request.type_url.clone(),
                    nonce: format!("n{}", answered.len()),
                    ..Default::default()
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("state of the world only"))
    }
}

/// The in-test control plane: ADS and the test's sink (whose messages arrive on `received`),
/// whose streams the test can end and whose new connections it can refuse (closed as soon as
/// accepted).
pub(crate) struct ControlPlane<S, T> {
    pub(crate) address: SocketAddr,
    /// What the test's sink received.
    pub(crate) received: mpsc::UnboundedReceiver<T>,
    /// A send ends the sink's streams open then.
    pub(crate) stop: watch::Sender<()>,
    pub(crate) refusing: Arc<AtomicBool>,
    /// What the resources depend on; a change re-sends every node its listener.
    #[allow(dead_code, reason = "the metrics test's resources never change")]
    pub(crate) state: watch::Sender<S>,
    pub(crate) server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl<S: Clone + Send + Sync + 'static, T> ControlPlane<S, T> {
    /// `sink` builds the test's gRPC service from where it hands its messages and the signal
    /// that ends its streams.
    pub(crate) async fn start(
        ports: HashMap<String, u16>,
        state: S,
        resources: impl Fn(&str, u16, &S) -> Vec<Any> + Send + Sync + 'static,
        sink: impl FnOnce(mpsc::UnboundedSender<T>, watch::Receiver<()>) -> Routes,
    ) -> Self {
        let (state, watched) = watch::channel(state);
        let (tx, received) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(());
        let refusing = Arc::new(AtomicBool::new(false));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let incoming = TcpListenerStream::new(listener).filter({
            let refusing = Arc::clone(&refusing);
            move |_| !refusing.load(Ordering::Relaxed)
        });
        let ads = Ads {
            ports,
            resources: Arc::new(resources),
            state: watched,
        };
        let routes = sink(tx, stopped).add_service(AggregatedDiscoveryServiceServer::new(ads));
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming(incoming),
        );
        ControlPlane {
            address,
            received,
            stop,
            refusing,
            state,
            server,
        }
    }
}

// === the application ===

/// An HTTP/1.1 server on 127.0.0.1; `answer` gets each connection on its own thread.
pub(crate) fn start_app(answer: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || answer(conn));
        }
    });
    addr
}

/// A request's path and its body (read by its `content-length`); `None` if it does not arrive
/// whole within 5 s.
pub(crate) fn read_request(conn: &TcpStream) -> Option<(String, Vec<u8>)> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut length = 0;
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return None,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, body))
}

// === the proxies ===

/// Kills and reaps a process when the test ends, however it ends.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `SWITCHYARD_ENVOY`, else the workspace's `.venv/bin/envoy`.
fn envoy_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_ENVOY") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/envoy");
    assert!(
        venv.exists(),
        "no Envoy: set SWITCHYARD_ENVOY or run scripts/ensure-envoy.sh"
    );
    venv
}

/// The static cluster of the control plane (HTTP/2).
fn xds_cluster(control_plane: SocketAddr) -> Value {
    json!({
        "name": "xds",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "xds",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": control_plane.ip().to_string(), "port_value": control_plane.port(),
            }}}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
    })
}

/// A bootstrap for either proxy: the node, the admin port, ADS (CDS and LDS) to the control
/// plane's `xds` cluster; a test adds its sink.
pub(crate) fn bootstrap(node: &str, admin: u16, control_plane: SocketAddr) -> Value {
    let ads = json!({"ads": {}, "resource_api_version": "V3"});
    json!({
        "node": {"id": node, "cluster": "web"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {"clusters": [xds_cluster(control_plane)]},
    })
}

/// Writes `bootstrap` into `dir`, starts Envoy (if `node` is [`ENVOY`], with `envoy_args` too)
/// or the bundled proxy on it, logging to `dir/{node}.log`, and waits until its admin port
/// says it is ready.
pub(crate) fn start(
    node: &str,
    admin: u16,
    bootstrap: &Value,
    envoy_args: &[&str],
    dir: &Path,
) -> Killed {
    let path = dir.join(format!("{node}.json"));
    std::fs::write(&path, bootstrap.to_string()).unwrap();
    let log = std::fs::File::create(dir.join(format!("{node}.log"))).unwrap();
    let mut command = if node == ENVOY {
        let mut c = Command::new(envoy_bin());
        c.arg("-c")
            .arg(&path)
            .args(["--disable-hot-restart", "-l", "warning"])
            .args(envoy_args);
        c
    } else {
        let mut c = Command::new(env!("CARGO_BIN_EXE_switchyard-proxy"));
        c.arg("--bootstrap").arg(&path);
        c
    };
    let child = Killed(
        command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {node}: {e}")),
    );
    let deadline = Instant::now() + PATIENCE;
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    while !ready(admin) {
        assert!(
            Instant::now() < deadline,
            "{node} not ready: {}",
            std::fs::read_to_string(dir.join(format!("{node}.log"))).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Whether the admin port answers `GET /ready` with 200.
fn ready(admin: SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(&admin, Duration::from_secs(1)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn
        .write_all(b"GET /ready HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = conn.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}
