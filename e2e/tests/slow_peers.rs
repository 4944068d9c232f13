//! Slow and idle peers (issue 14, finding 5), on both data planes with the same assertions: a
//! client that sends its headers one byte a second, an idle keep-alive connection, connections
//! beyond a listener's cap and an idle TCP-proxied connection are all closed, while a
//! legitimate client keeps being answered. The mesh-wide timeouts are made short through
//! `switchyard local`'s flags so each test stays within seconds; everything on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use switchyard_e2e::{
    DataPlane,
    mesh::{Backend, Mesh, Sidecar, http_service, tcp_service, wait_for},
};

/// The short timeouts the tests run with.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(2);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_CONNECTIONS: usize = 3;

/// How long past a timeout a proxy may take to close. Envoy closes an idle HTTP/1.1
/// connection only after its drain timeout (5 s) and delayed close (1 s) on top.
const SLACK: Duration = Duration::from_secs(8);

/// How long a test waits for a close that should have happened: well past every timeout,
/// so that a proxy that never closes fails within it.
const GIVE_UP: Duration = Duration::from_secs(15);

/// The outbound TCP port of the `db` service.
const DB_PORT: u16 = 15433;

/// A mesh on `plane` whose client-0 reaches `web` (HTTP), `stuck` (HTTP, never answers) and
/// `db` (TCP, an echo server), with the short timeouts and connection cap above.
fn mesh(plane: DataPlane, subnet: u8) -> (Mesh, Backend, Backend, Backend) {
    let web = Backend::http("web");
    let db = Backend::tcp_echo("db");
    let stuck = Backend::silent("stuck");
    let mesh = Mesh::builder(Ipv4Addr::new(127, 0, subnet, 1))
        .data_plane(plane)
        .args(&[
            "--request-headers-timeout",
            &format!("{}s", HEADERS_TIMEOUT.as_secs()),
            "--http-idle-timeout",
            &format!("{}s", IDLE_TIMEOUT.as_secs()),
            "--tcp-idle-timeout",
            &format!("{}s", TCP_IDLE_TIMEOUT.as_secs()),
            "--stream-idle-timeout",
            &format!("{}s", STREAM_IDLE_TIMEOUT.as_secs()),
            "--max-connections",
            &MAX_CONNECTIONS.to_string(),
        ])
        .file("web.yaml", http_service("web", Some(&web)))
        .file("db.yaml", tcp_service("db", DB_PORT, &db))
        .file("stuck.yaml", http_service("stuck", Some(&stuck)))
        .start();
    mesh.wait_for_only("web.demo", "web", Duration::from_secs(20));
    (mesh, web, db, stuck)
}

/// Opens a keep-alive connection to client-0's outbound HTTP listener.
fn connect(sidecar: &Sidecar) -> TcpStream {
    let conn = TcpStream::connect_timeout(&sidecar.outbound(), Duration::from_secs(2)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn
}

/// One keep-alive `GET /` to `web` on `conn`: the status line and body of its answer, or
/// what went wrong (`closed` when the proxy closed the connection without answering).
fn get_on(conn: &mut TcpStream) -> Result<(String, String), String> {
    conn.write_all(b"GET / HTTP/1.1\r\nhost: web.demo\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).to_string();
                let status = head.lines().next().unwrap_or_default().to_owned();
                return Ok((status, body));
            }
        }
        match conn.read(&mut buf) {
            Ok(0) => return Err("closed".to_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Err("closed".to_owned()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Waits for the peer to close `conn`, reading what it sends meanwhile; `None` if it is still
/// open after `within`. Returns when it closed, counted from `since`, and what it sent.
fn closed_within(
    conn: &mut TcpStream,
    since: Instant,
    within: Duration,
) -> Option<(Duration, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while since.elapsed() < within {
        match conn.read(&mut buf) {
            Ok(0) => return Some((since.elapsed(), String::from_utf8_lossy(&got).into())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some((since.elapsed(), String::from_utf8_lossy(&got).into())),
        }
    }
    None
}

/// A client answered by `web` through client-0, every 200 ms on new connections, in the
/// background until `stop` returns its answers.
struct Legitimate {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: thread::JoinHandle<Vec<Result<(u16, String), String>>>,
}

impl Legitimate {
    fn start(mesh: &Mesh) -> Legitimate {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let addr = mesh.client().outbound();
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut answers = Vec::new();
                let started = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < GIVE_UP + SLACK
                {
                    let answer = switchyard_e2e::mesh::http_get(addr, "web.demo", "/", &[])
                        .map(|r| (r.status, r.body))
                        .map_err(|e| e.to_string());
                    answers.push(answer);
                    thread::sleep(Duration::from_millis(200));
                }
                answers
            })
        };
        Legitimate { stop, thread }
    }

    /// Stops, and asserts that every request was answered by `web`.
    fn all_answered(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let answers = self.thread.join().unwrap();
        let failed: Vec<_> = answers
            .iter()
            .filter(|a| {
                a.as_ref()
                    .map_or(true, |(s, b)| (*s, b.as_str()) != (200, "web"))
            })
            .collect();
        assert!(
            failed.is_empty(),
            "{} of {} legitimate requests failed: {failed:?}",
            failed.len(),
            answers.len()
        );
        assert!(answers.len() >= 3, "{} legitimate requests", answers.len());
        answers.len()
    }
}

/// Envoy's stat `name` under `prefix` (the bundled proxy's equivalent metric), waiting until
/// it is above zero.
fn stat(sidecar: &Sidecar, prefix: &str, name: &str) -> u64 {
    sidecar.wait_for_stat(prefix, name, Duration::from_secs(5))
}

// === the tests, once per data plane ===

/// (a) Headers sent one byte a second are cut off after the request headers timeout (408 or
/// a close), while a legitimate client is answered throughout.
fn a_client_sending_one_header_byte_a_second_is_closed(plane: DataPlane, subnet: u8) {
    let (mesh, _web, _db, _stuck) = mesh(plane, subnet);
    let client = mesh.client();
    let legitimate = Legitimate::start(&mesh);
    let mut slow = connect(&client);
    let head = b"GET / HTTP/1.1\r\nhost: web.demo\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut closed = None;
    for byte in head.iter().take(GIVE_UP.as_secs() as usize) {
        if slow.write_all(&[*byte]).is_err() {
            // Closed: whatever it said before is still there to read.
            let after = started.elapsed();
            let sent = closed_within(&mut slow, Instant::now(), Duration::from_secs(1));
            closed = Some((after, sent.map(|(_, s)| s).unwrap_or_default()));
            break;
        }
        // Reads for a second: the pause between two bytes.
        let second = Instant::now();
        if let Some((_, sent)) = closed_within(&mut slow, second, Duration::from_secs(1)) {
            closed = Some((started.elapsed(), sent));
            break;
        }
    }
    let Some((after, sent)) = closed else {
        panic!(
            "{plane:?}: a client sending a header byte a second was still connected after {:?}",
            started.elapsed()
        );
    };
    eprintln!("{plane:?}: the slow client was closed after {after:?}: {sent:?}");
    assert!(
        sent.is_empty() || sent.starts_with("HTTP/1.1 408"),
        "{plane:?}: {sent:?}"
    );
    assert!(
        after >= HEADERS_TIMEOUT - Duration::from_millis(100) && after <= HEADERS_TIMEOUT + SLACK,
        "{plane:?}: closed after {after:?}"
    );
    legitimate.all_answered();
    assert!(
        stat(
            &client,
            "http.outbound_http.",
            "downstream_rq_header_timeout"
        ) >= 1
    );
}

/// (b) A keep-alive connection left idle after its response is closed after the idle timeout.
fn an_idle_keep_alive_connection_is_closed(plane: DataPlane, subnet: u8) {
    let (mesh, _web, _db, _stuck) = mesh(plane, subnet);
    let client = mesh.client();
    let mut idle = connect(&client);
    assert_eq!(
        get_on(&mut idle),
        Ok(("HTTP/1.1 200 OK".to_owned(), "web".to_owned()))
    );
    let answered = Instant::now();
    let legitimate = Legitimate::start(&mesh);
    let Some((after, sent)) = closed_within(&mut idle, answered, GIVE_UP) else {
        panic!("{plane:?}: an idle keep-alive connection was still open after {GIVE_UP:?}");
    };
    eprintln!("{plane:?}: the idle connection was closed after {after:?}");
    assert_eq!(sent, "", "{plane:?}: nothing is sent on an idle connection");
    assert!(
        after >= IDLE_TIMEOUT - Duration::from_millis(100) && after <= IDLE_TIMEOUT + SLACK,
        "{plane:?}: closed after {after:?}"
    );
    legitimate.all_answered();
    assert!(stat(&client, "http.outbound_http.", "downstream_cx_idle_timeout") >= 1);
}

/// (b, HTTP/2) An HTTP/2 connection left idle gets a GOAWAY and is closed after the idle
/// timeout.
fn an_idle_http2_connection_is_closed(plane: DataPlane, subnet: u8) {
    use http_body_util::{BodyExt, Empty};
    let (mesh, _web, _db, _stuck) = mesh(plane, subnet);
    let client = mesh.client();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (after, body) = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(client.outbound())
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let request = http::Request::get("http://web.demo/")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = send.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let answered = Instant::now();
        // The connection ends when the proxy closes it (after its GOAWAY, which hyper reads).
        let ended = tokio::time::timeout(GIVE_UP, conn).await;
        assert!(
            ended.is_ok(),
            "{plane:?}: an idle HTTP/2 connection was still open after {GIVE_UP:?}"
        );
        (answered.elapsed(), body)
    });
    assert_eq!(&body[..], b"web");
    eprintln!("{plane:?}: the idle HTTP/2 connection was closed after {after:?}");
    assert!(
        after >= IDLE_TIMEOUT - Duration::from_millis(100) && after <= IDLE_TIMEOUT + SLACK,
        "{plane:?}: closed after {after:?}"
    );
    assert!(stat(&client, "http.outbound_http.", "downstream_cx_idle_timeout") >= 1);
}

/// (c) Connections beyond the listener's cap are closed without an answer, while those under
/// it keep being served; a slot freed by a close is taken by the next connection.
fn connections_beyond_the_cap_are_refused(plane: DataPlane, subnet: u8) {
    let (mesh, _web, _db, _stuck) = mesh(plane, subnet);
    let client = mesh.client();
    // The connections the harness opened to see the listener up count until the proxy has
    // processed their close (Envoy does so asynchronously, and later on a loaded machine): the
    // cap is taken once they are all gone.
    let mut held: Vec<TcpStream> = Vec::new();
    wait_for(
        Duration::from_secs(5),
        || {
            held = (0..MAX_CONNECTIONS).map(|_| connect(&client)).collect();
            held.iter_mut()
                .all(|conn| get_on(conn) == Ok(("HTTP/1.1 200 OK".to_owned(), "web".to_owned())))
        },
        "every slot under the cap to be served",
    );
    for _ in 0..3 {
        let mut over = connect(&client);
        assert_eq!(
            get_on(&mut over),
            Err("closed".to_owned()),
            "{plane:?}: connection {} of a cap of {MAX_CONNECTIONS}",
            MAX_CONNECTIONS + 1
        );
    }
    // Those under the cap are still served, on the same connections.
    for conn in &mut held {
        assert_eq!(
            get_on(conn),
            Ok(("HTTP/1.1 200 OK".to_owned(), "web".to_owned()))
        );
    }
    assert!(
        stat(
            &client,
            "connection_limit.outbound_http.",
            "limited_connections"
        ) >= 3
    );
    // One closes; a new connection takes its place once the proxy has seen the close.
    drop(held.pop());
    wait_for(
        Duration::from_secs(5),
        || {
            let mut conn = connect(&client);
            get_on(&mut conn)
                .is_ok_and(|(s, b)| (s.as_str(), b.as_str()) == ("HTTP/1.1 200 OK", "web"))
        },
        "a connection in the freed slot to be served",
    );
}

/// (d) A TCP-proxied connection with no bytes either way is closed after the TCP idle
/// timeout, on both sides.
fn an_idle_tcp_connection_is_closed(plane: DataPlane, subnet: u8) {
    let (mesh, _web, db, _stuck) = mesh(plane, subnet);
    let addr = SocketAddr::new(mesh.pod_ip, DB_PORT);
    let mut conn = None;
    wait_for(
        Duration::from_secs(10),
        || {
            let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
                return false;
            };
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut answer = [0u8; 7];
            let echoed = c.write_all(b"hi\n").is_ok()
                && c.read_exact(&mut answer).is_ok()
                && &answer == b"db: hi\n";
            if echoed {
                conn = Some(c);
            }
            echoed
        },
        "the TCP echo through client-0",
    );
    let mut conn = conn.unwrap();
    assert_eq!(db.open_connections(), 1);
    let quiet = Instant::now();
    let Some((after, sent)) = closed_within(&mut conn, quiet, GIVE_UP) else {
        panic!("{plane:?}: an idle TCP connection was still open after {GIVE_UP:?}");
    };
    eprintln!("{plane:?}: the idle TCP connection was closed after {after:?}");
    assert_eq!(sent, "");
    assert!(
        after >= TCP_IDLE_TIMEOUT - Duration::from_millis(100) && after <= TCP_IDLE_TIMEOUT + SLACK,
        "{plane:?}: closed after {after:?}"
    );
    // The upstream side too.
    wait_for(
        Duration::from_secs(5),
        || db.open_connections() == 0,
        "the backend's connection to close",
    );
    let client = mesh.client();
    assert!(
        stat(
            &client,
            &format!("tcp.outbound_tcp_{DB_PORT}."),
            "idle_timeout"
        ) >= 1
    );
}

/// (e) A request on which nothing moves (the application never answers) ends with 504 after
/// the stream idle timeout, well before the route's own timeout (15 s).
fn a_request_with_nothing_moving_times_out(plane: DataPlane, subnet: u8) {
    let (mesh, _web, _db, stuck) = mesh(plane, subnet);
    let client = mesh.client();
    let mut conn = connect(&client);
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let asked = Instant::now();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: stuck.demo\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nstream timeout") {
        let read = conn.read(&mut buf);
        match read {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                    && asked.elapsed() < GIVE_UP => {}
            other => panic!(
                "{plane:?}: no stream timeout after {:?} ({other:?}): {:?}",
                asked.elapsed(),
                String::from_utf8_lossy(&got)
            ),
        }
    }
    let after = asked.elapsed();
    let answer = String::from_utf8_lossy(&got).to_string();
    eprintln!("{plane:?}: the stuck request was answered after {after:?}");
    assert!(answer.starts_with("HTTP/1.1 504"), "{plane:?}: {answer}");
    assert!(
        after >= STREAM_IDLE_TIMEOUT - Duration::from_millis(100)
            && after <= STREAM_IDLE_TIMEOUT + Duration::from_secs(2),
        "{plane:?}: answered after {after:?}"
    );
    assert!(stuck.open_connections() <= 1);
    assert!(stat(&client, "http.outbound_http.", "downstream_rq_idle_timeout") >= 1);
}

macro_rules! on_both_planes {
    ($($test:ident: $envoy_subnet:literal, $bundled_subnet:literal;)*) => {
        mod envoy {
            $(#[test]
            fn $test() {
                super::$test(switchyard_e2e::DataPlane::Envoy, $envoy_subnet);
            })*
        }
        mod bundled {
            $(#[test]
            fn $test() {
                super::$test(switchyard_e2e::DataPlane::Bundled, $bundled_subnet);
            })*
        }
    };
}

on_both_planes! {
    a_client_sending_one_header_byte_a_second_is_closed: 110, 111;
    an_idle_keep_alive_connection_is_closed: 112, 113;
    an_idle_http2_connection_is_closed: 118, 119;
    connections_beyond_the_cap_are_refused: 114, 115;
    an_idle_tcp_connection_is_closed: 116, 117;
    a_request_with_nothing_moving_times_out: 120, 121;
}
