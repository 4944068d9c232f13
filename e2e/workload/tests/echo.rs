//! `switchyard-echo serve` on loopback, driven by its own client subcommands as processes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use switchyard_echo::{GetSummary, HeadersEcho, LoadSummary};

const ECHO: &str = env!("CARGO_BIN_EXE_switchyard-echo");

// === Utils ===

/// A running server on loopback ports the kernel chose; killed when dropped.
struct Server {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
    tcp: SocketAddr,
    banner: SocketAddr,
    /// Every line it printed after the start-up line.
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, &[])
    }

    fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(ECHO);
        command.args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--tcp",
            "127.0.0.1:0",
            "--banner",
            "127.0.0.1:0",
        ]);
        command.args(extra).envs(env.iter().copied());
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (first_tx, first_rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut stdout = stdout.lines();
            let _ = first_tx.send(stdout.next());
            for line in stdout.map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let startup = first_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a start-up line within 10 s")
            .expect("the server printed something")
            .unwrap();
        let addr = |what: &str| -> SocketAddr {
            let prefix = format!("{what}=");
            startup
                .split(' ')
                .find_map(|field| field.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {what} in {startup:?}"))
                .parse()
                .unwrap()
        };
        Server {
            http: addr("http"),
            grpc: addr("grpc"),
            tcp: addr("tcp"),
            banner: addr("banner"),
            child,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client subcommand: its exit code and standard output lines.
fn client(args: &[&str]) -> (i32, Vec<String>) {
    let Output { status, stdout, .. } = Command::new(ECHO).args(args).output().unwrap();
    let stdout = String::from_utf8(stdout).unwrap();
    (
        status.code().unwrap(),
        stdout.lines().map(str::to_owned).collect(),
    )
}

/// Sends raw HTTP/1.1 bytes and returns the whole response as text.
fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// A loopback port nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// === Tests ===

#[test]
fn get_prints_status_and_name_per_request() {
    let server = Server::start(&["--name", "web-1"]);
    let (code, lines) = client(&["get", &server.url("/any/path?q=1"), "--count", "3"]);
    assert_eq!(code, 0);
    assert_eq!(lines, vec!["200 web-1"; 3]);

    let (code, lines) = client(&["get", &server.url("/status/503")]);
    assert_eq!(code, 0, "a 503 is still an HTTP response");
    assert_eq!(lines, vec!["503 web-1"]);

    let (code, lines) = client(&["get", "--http2", &server.url("/")]);
    assert_eq!((code, lines), (0, vec!["200 web-1".to_owned()]));

    let (code, lines) = client(&["get", &server.url("/status/99")]);
    assert_eq!((code, lines), (0, vec!["400 web-1".to_owned()]));

    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("http GET /any/path?q=1 200 127.0.0.1:")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("http GET /status/503 503 ")),
        "{log:?}"
    );
}

#[test]
fn get_json_counts_statuses_and_bodies() {
    let server = Server::start(&["--name", "web-2"]);
    let (code, lines) = client(&[
        "get",
        &server.url("/status/418"),
        "--count",
        "2",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0);
    let summary: GetSummary = serde_json::from_str(&lines.concat()).unwrap();
    assert_eq!(
        summary,
        GetSummary {
            total: 2,
            errors: 0,
            by_status: [(418, 2)].into(),
            by_body: [("web-2".to_owned(), 2)].into(),
        }
    );
}

#[test]
fn get_fails_without_a_response() {
    let port = closed_port();
    let (code, lines) = client(&["get", &format!("http://{port}/"), "--count", "2"]);
    assert_eq!(code, 1);
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("ERR ") && l.contains("Connection refused")),
        "{lines:?}"
    );

    let (code, lines) = client(&["get", &format!("http://{port}/"), "-o", "json"]);
    assert_eq!(code, 1);
    let summary: GetSummary = serde_json::from_str(&lines.concat()).unwrap();
    assert_eq!((summary.total, summary.errors), (1, 1));
}

#[test]
fn headers_echo_the_request_and_delay_waits() {
    let server = Server::start(&["--name", "web-3"]);
    let url = format!("http://localhost:{}/headers?x=1", server.http.port());
    let (code, lines) = client(&["get", &url, "--header", "x-test: a", "--header", "x-test:b"]);
    assert_eq!(code, 0);
    let body = lines[0].strip_prefix("200 ").unwrap();
    let echo: HeadersEcho = serde_json::from_str(body).unwrap();
    assert_eq!(echo.name, "web-3");
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.path, "/headers?x=1");
    assert_eq!(echo.headers["x-test"], vec!["a", "b"]);
    assert_eq!(
        echo.headers["host"],
        vec![format!("localhost:{}", server.http.port())]
    );
    assert_eq!(echo.local, server.http);
    assert!(echo.remote.ip().is_loopback());
    assert_eq!(echo.body_length, 0);

    let started = Instant::now();
    let (code, lines) = client(&["get", &server.url("/delay/300")]);
    assert_eq!((code, lines), (0, vec!["200 web-3".to_owned()]));
    assert!(started.elapsed() >= Duration::from_millis(300));

    let (code, lines) = client(&["get", &server.url("/delay/2000"), "--timeout", "200ms"]);
    assert_eq!(code, 1);
    assert_eq!(lines, vec!["ERR timed out after 200ms"]);
}

#[test]
fn responses_name_the_server_and_bodies_are_bounded() {
    let server = Server::start(&["--name", "web-4"]);
    let response = raw_http(
        server.http,
        b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    );
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.contains("\r\nx-served-by: web-4\r\n"),
        "{response}"
    );
    assert!(response.ends_with("\r\n\r\nweb-4"), "{response}");

    let response = raw_http(
        server.http,
        b"POST /headers HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
    );
    assert!(response.contains("\"body_length\":3"), "{response}");

    let big = 1024 * 1024 + 1;
    let mut request =
        format!("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: {big}\r\nconnection: close\r\n\r\n")
            .into_bytes();
    request.resize(request.len() + big, b'x');
    let response = raw_http(server.http, &request);
    assert!(
        response.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{response}"
    );
}

#[test]
fn new_connection_opens_one_connection_per_request() {
    let server = Server::start(&["--name", "web-5"]);
    let peers = |server: &Server| -> std::collections::BTreeSet<String> {
        server
            .log()
            .iter()
            .filter_map(|l| l.strip_prefix("http GET / 200 ").map(str::to_owned))
            .collect()
    };
    let (code, _) = client(&["get", &server.url("/"), "--count", "4"]);
    assert_eq!(code, 0);
    assert_eq!(peers(&server).len(), 1, "pooled: one connection");

    let (code, _) = client(&["get", &server.url("/"), "--count", "4", "--new-connection"]);
    assert_eq!(code, 0);
    // Log lines arrive through a pipe; give the reader thread a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while peers(&server).len() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(peers(&server).len(), 5, "four more connections");
}

#[test]
fn load_sends_at_a_constant_rate_and_summarizes() {
    let server = Server::start(&["--name", "web-6"]);
    let started = Instant::now();
    let (code, lines) = client(&[
        "load",
        &server.url("/"),
        "--rate",
        "100",
        "--duration",
        "1s",
        "-o",
        "json",
    ]);
    let elapsed = started.elapsed();
    assert_eq!(code, 0, "{lines:?}");
    let summary: LoadSummary = serde_json::from_str(&lines.concat()).unwrap();
    assert_eq!((summary.sent, summary.ok, summary.failed), (100, 100, 0));
    assert_eq!(summary.by_status, [(200, 100)].into());
    assert_eq!(summary.by_body, [("web-6".to_owned(), 100)].into());
    assert!(summary.errors.is_empty());
    assert!(
        summary.p50_ms > 0.0 && summary.p50_ms <= summary.p99_ms,
        "{summary:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(990),
        "100 requests at 100/s take a second"
    );

    let (code, lines) = client(&[
        "load",
        &server.url("/status/500"),
        "--rate",
        "20",
        "--duration",
        "500ms",
        "-o",
        "json",
    ]);
    assert_eq!(code, 1);
    let summary: LoadSummary = serde_json::from_str(&lines.concat()).unwrap();
    assert_eq!((summary.sent, summary.ok, summary.failed), (10, 0, 10));
    assert_eq!(summary.errors, vec!["status 500"]);

    let (code, _) = client(&[
        "load",
        &server.url("/"),
        "--rate",
        "1001",
        "--duration",
        "1s",
    ]);
    assert_eq!(code, 2, "rates above 1000/s are refused");
    let (code, _) = client(&[
        "load",
        &server.url("/"),
        "--rate",
        "1",
        "--duration",
        "301s",
    ]);
    assert_eq!(code, 1, "durations above 300 s are refused");
}

#[test]
fn grpc_health_check_and_watch() {
    let server = Server::start(&["--name", "web-7"]);
    let addr = server.grpc.to_string();
    let (code, lines) = client(&["grpc", &addr]);
    assert_eq!((code, lines), (0, vec!["SERVING web-7".to_owned()]));

    let (code, lines) = client(&["grpc", &addr, "--service", "web-7"]);
    assert_eq!((code, lines), (0, vec!["SERVING web-7".to_owned()]));

    let (code, lines) = client(&["grpc", &addr, "--service", "web-7", "--watch", "1"]);
    assert_eq!((code, lines), (0, vec!["SERVING web-7".to_owned()]));

    let (code, lines) = client(&["grpc", &addr, "--service", "other"]);
    assert_eq!(code, 1);
    assert_eq!(lines, vec!["ERR NotFound: service not registered"]);

    // Watch waits for changes that never come: the timeout ends it.
    let (code, lines) = client(&["grpc", &addr, "--watch", "2", "--timeout", "300ms"]);
    assert_eq!(code, 1);
    assert_eq!(lines, vec!["SERVING web-7", "ERR timed out after 300ms"]);

    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("grpc /grpc.health.v1.Health/Check 127.0.0.1:")),
        "{log:?}"
    );
}

#[test]
fn tcp_echo_and_banner() {
    let server = Server::start(&["--name", "web-8"]);
    let (code, lines) = client(&["tcp", &server.tcp.to_string(), "--send", "hello there"]);
    assert_eq!((code, lines), (0, vec!["web-8: hello there".to_owned()]));

    let (code, lines) = client(&["banner", &server.banner.to_string()]);
    assert_eq!((code, lines), (0, vec!["+OK web-8".to_owned()]));

    let (code, lines) = client(&["banner", &server.banner.to_string(), "--ping"]);
    assert_eq!(
        (code, lines),
        (0, vec!["+OK web-8".to_owned(), "+PONG web-8".to_owned()])
    );

    // The raw protocol: CRLF lines, several per connection, unknown commands refused.
    let mut stream = TcpStream::connect(server.banner).unwrap();
    stream.write_all(b"PING\r\nGET x\r\nPING\r\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert_eq!(
        reply,
        "+OK web-8\r\n+PONG web-8\r\n-ERR unknown\r\n+PONG web-8\r\n"
    );

    let (code, lines) = client(&["tcp", &closed_port().to_string(), "--send", "x"]);
    assert_eq!(code, 1);
    assert!(lines[0].starts_with("ERR Connection refused"), "{lines:?}");
}

#[test]
fn name_defaults_to_pod_name() {
    let server = Server::start_with(&[], &[("POD_NAME", "web-9-abcde")]);
    let (code, lines) = client(&["get", &server.url("/")]);
    assert_eq!((code, lines), (0, vec!["200 web-9-abcde".to_owned()]));
}

/// SIGTERM: new connections are served during the delay, a request in flight when draining
/// starts finishes, then the server exits 0.
#[test]
fn sigterm_keeps_serving_for_the_delay_then_drains() {
    let mut server = Server::start(&["--name", "web-10", "--shutdown-delay", "1500ms"]);
    let url = server.url("/delay/2000");
    let terminated = Instant::now();
    server.terminate();

    std::thread::sleep(Duration::from_millis(300));
    let (code, lines) = client(&["get", &server.url("/"), "--new-connection"]);
    assert_eq!(
        (code, lines),
        (0, vec!["200 web-10".to_owned()]),
        "served during the delay"
    );

    // In flight from about 0.3 s to 2.3 s: across the start of draining at 1.5 s.
    let in_flight = std::thread::spawn(move || client(&["get", &url, "--timeout", "10s"]));
    let status = server.wait(Duration::from_secs(15));
    let exited = terminated.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        exited >= Duration::from_millis(2200),
        "exited after {exited:?}, before the request in flight finished"
    );
    assert_eq!(
        in_flight.join().unwrap(),
        (0, vec!["200 web-10".to_owned()])
    );
    let log = server.log();
    assert!(
        log.contains(&"SIGTERM: serving for 1s 500ms more, then draining".to_owned()),
        "{log:?}"
    );

    let (code, _) = client(&["get", &server.url("/")]);
    assert_eq!(code, 1, "nothing listens after exit");
}

#[test]
fn sleep_waits_for_sigterm() {
    let mut child = Command::new(ECHO).arg("sleep").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "still sleeping");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "sleep ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
