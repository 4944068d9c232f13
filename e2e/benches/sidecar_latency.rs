//! Added latency of an Envoy sidecar pair configured over xDS by `switchyard local`, with and
//! without mTLS between the sidecars, against the direct path, in one run
//! (`../shared/reference/BENCH-NOTES.md` §5: D, E2 and E2t, configured by our control plane).
//!
//! One client Envoy (client-0) and one server Envoy (api-0) in front of a keep-alive HTTP/1.1
//! app. Service `api` has the server Pod behind it, so the client originates mTLS and the
//! server checks the certificate (E2t); Service `api-plain` names the same address without a
//! Pod, so the client sends plaintext, which the server's permissive inbound accepts (E2).
//! D goes straight to the app. Each round runs the three in shuffled order over one keep-alive
//! connection each: closed loop, one request at a time, so the figures are unloaded latency,
//! not capacity. Added latency is paired with the same round's D; medians over rounds.
//!
//! `cargo bench -p switchyard-e2e --bench sidecar_latency` (or `make bench`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use switchyard_e2e::mesh::{
    AccessMode, Backend, Mesh, endpoint_slice, http_service, meshed_http_service, pod, wait_for,
};

const ROUNDS: usize = 7;
const WARMUP: usize = 300;
const REQUESTS: usize = 3_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// client → app.
    Direct,
    /// client → client sidecar → server sidecar (plaintext) → app.
    Plain,
    /// client → client sidecar → server sidecar (mTLS) → app.
    Mtls,
}

const PATHS: [Path; 3] = [Path::Direct, Path::Plain, Path::Mtls];

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    out: TcpStream,
    reader: BufReader<TcpStream>,
    host: &'static str,
}

impl Conn {
    fn open(addr: SocketAddr, host: &'static str) -> Conn {
        let out = TcpStream::connect(addr).unwrap();
        out.set_nodelay(true).unwrap();
        out.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Conn {
            reader: BufReader::new(out.try_clone().unwrap()),
            out,
            host,
        }
    }

    /// One `GET /`; the time to the last byte of the response, and its status.
    fn get(&mut self) -> (Duration, u16) {
        let start = Instant::now();
        write!(self.out, "GET / HTTP/1.1\r\nhost: {}\r\n\r\n", self.host).unwrap();
        let mut status = 0;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if status == 0 {
                status = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if line == "\r\n" {
                break;
            } else if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (start.elapsed(), status)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// p50 and p99 of one path in one round, in microseconds.
fn measure(conn: &mut Conn) -> (f64, f64) {
    for _ in 0..WARMUP {
        assert_eq!(conn.get().1, 200);
    }
    let mut samples: Vec<f64> = (0..REQUESTS)
        .map(|_| {
            let (t, status) = conn.get();
            assert_eq!(status, 200, "every request must succeed");
            t.as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.50), percentile(&samples, 0.99))
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let app = Backend::http("api");
    let target = app.addr.port();
    let (client_ip, server_ip) = (Ipv4Addr::new(127, 0, 60, 1), Ipv4Addr::new(127, 0, 60, 2));
    let plain = format!(
        "{}{}",
        http_service("api-plain", None),
        endpoint_slice(
            "api-plain",
            "http",
            SocketAddr::new(server_ip.into(), target)
        )
    );
    let mut mesh = Mesh::builder(client_ip)
        .access_mode(AccessMode::Permissive)
        .file(
            "server.yaml",
            pod("api-0", "api", &[("app", "api")], server_ip),
        )
        .file(
            "api.yaml",
            meshed_http_service("api", "api-0", server_ip, target),
        )
        .file("plain.yaml", plain)
        .start();
    let server = mesh.sidecar("api-0");
    let client = mesh.client();
    for host in ["api", "api-plain"] {
        wait_for(
            Duration::from_secs(30),
            || {
                client
                    .request("GET", host, "/")
                    .is_ok_and(|r| r.status == 200)
            },
            &format!("{host} through the sidecars"),
        );
    }

    let handshakes = |s: &switchyard_e2e::mesh::Sidecar| -> u64 {
        s.stats("listener.")
            .iter()
            .filter(|(k, _)| k.ends_with(".ssl.handshake"))
            .map(|(_, v)| *v)
            .sum()
    };

    // (p50, p99) per path, per round.
    let mut results: Vec<[(f64, f64); 3]> = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..ROUNDS {
        let mut order = PATHS;
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let mut round = [(0.0, 0.0); 3];
        for path in order {
            let mut conn = match path {
                Path::Direct => Conn::open(app.addr, "api"),
                Path::Plain => Conn::open(client.outbound(), "api-plain"),
                Path::Mtls => Conn::open(client.outbound(), "api"),
            };
            round[PATHS.iter().position(|p| *p == path).unwrap()] = measure(&mut conn);
        }
        results.push(round);
    }
    // The paths are what they claim: the server saw TLS handshakes, and the client never
    // originated TLS towards `api-plain`.
    assert!(handshakes(&server) > 0, "the mTLS path must use TLS");
    let plain_tls: u64 = client
        .stats("cluster.demo/api-plain|80.ssl.")
        .values()
        .sum();
    assert_eq!(plain_tls, 0, "the plaintext path must not use TLS");

    let col = |i: usize, f: fn(&(f64, f64)) -> f64| -> Vec<f64> {
        results.iter().map(|r| f(&r[i])).collect()
    };
    let added = |i: usize, f: fn(&(f64, f64)) -> f64| -> Vec<f64> {
        results.iter().map(|r| f(&r[i]) - f(&r[0])).collect()
    };
    let p50 = |x: &(f64, f64)| x.0;
    let p99 = |x: &(f64, f64)| x.1;
    println!(
        "\n=== sidecar latency: Envoy pair configured by switchyard local; {ROUNDS} rounds x {REQUESTS} sequential GETs on one keep-alive connection per path (closed loop, unloaded) ==="
    );
    println!(
        "{:<34} {:>9} {:>9} {:>11} {:>11} {:>8} {:>8}",
        "path", "p50 µs", "p99 µs", "+p50 µs", "+p99 µs", "p50/D", "p99/D"
    );
    let d50 = median(col(0, p50));
    let d99 = median(col(0, p99));
    for (i, name) in [
        "D   direct",
        "E2  sidecar pair, plaintext",
        "E2t sidecar pair, mTLS (TLS 1.3)",
    ]
    .iter()
    .enumerate()
    {
        let (m50, m99) = (median(col(i, p50)), median(col(i, p99)));
        println!(
            "{:<34} {:>9.1} {:>9.1} {:>11.1} {:>11.1} {:>8.2} {:>8.2}",
            name,
            m50,
            m99,
            median(added(i, p50)),
            median(added(i, p99)),
            m50 / d50,
            m99 / d99
        );
    }
    let mtls_cost = |f: fn(&(f64, f64)) -> f64| -> f64 {
        median(results.iter().map(|r| f(&r[2]) - f(&r[1])).collect())
    };
    println!(
        "mTLS cost (E2t − E2, paired per round): p50 {:+.1} µs, p99 {:+.1} µs",
        mtls_cost(p50),
        mtls_cost(p99)
    );
}
