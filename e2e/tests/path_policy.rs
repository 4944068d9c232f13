//! The bundled proxy's path handling is at least as strict as Envoy's: a generated corpus of
//! request targets (separators, dot segments, path parameters, escapes, double slashes, control
//! and non-ASCII bytes, fragments, asterisk and absolute forms, long paths, `Host` against the
//! target's authority; HTTP/1.1 byte for byte, and HTTP/2) goes to two servers under the same
//! TrafficTarget (only `GET /api/.*`, from ServiceAccount `client`), one behind Envoy and one
//! behind the bundled proxy, over mTLS as `client` with no client-side proxy in between. No
//! request may reach the application behind the bundled proxy that Envoy keeps from its own,
//! none may reach it with a path that a lenient server reads outside `/api/`, and where both
//! let a request through, both applications read the same path and `Host`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use switchyard_e2e::{
    DataPlane,
    mesh::{AccessMode, Backend, Mesh, meshed_http_service, pod_on, wait_for},
    mtls::{WorkloadIdentity, workload_identity},
};
use switchyard_proxy::fuzzing::lenient_path;

/// Pod IPs `127.0.117.x`.
const SUBNET: u8 = 117;
/// The only paths the TrafficTarget allows (with `GET`): its `pathRegex` is `/api/.*`.
const ALLOWED_PREFIX: &str = "/api/";
/// The payloads of the issue: `\` read as `/`, `..;` read as `..`.
const KNOWN_PAYLOADS: [&str; 2] = ["/api/x\\..\\..\\admin", "/api/..;/admin"];

/// The class of the issue's payloads in the corpus.
const ISSUE: &str = "the issue's payloads";

/// One server Pod (ServiceAccount `api`) on one data plane, in front of an application that
/// records every request it gets.
struct Server {
    plane: DataPlane,
    app: Backend,
    inbound: SocketAddr,
}

struct World {
    _mesh: Mesh,
    client: WorkloadIdentity,
    envoy: Server,
    bundled: Server,
}

/// client-0 (ServiceAccount `client`, no sidecar: the test speaks as it) `.1`; `api-envoy-0`
/// `.2` and `api-bundled-0` `.3`, both ServiceAccount `api`, each behind its own Service.
fn world() -> World {
    let ip = |host| Ipv4Addr::new(127, 0, SUBNET, host);
    let envoy_app = Backend::recording("envoy-app");
    let bundled_app = Backend::recording("bundled-app");
    let servers = [
        pod_on(
            "api-envoy-0",
            "api",
            &[("app", "api-envoy")],
            ip(2),
            DataPlane::Envoy,
        ),
        meshed_http_service("api-envoy", "api-envoy-0", ip(2), envoy_app.addr.port()),
        pod_on(
            "api-bundled-0",
            "api",
            &[("app", "api-bundled")],
            ip(3),
            DataPlane::Bundled,
        ),
        meshed_http_service(
            "api-bundled",
            "api-bundled-0",
            ip(3),
            bundled_app.addr.port(),
        ),
    ]
    .join("---\n");
    let access = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: api-routes, namespace: demo}\nspec:\n  matches:\n  - {name: api, pathRegex: '/api/.*', methods: [GET]}\n---\napiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: api-access, namespace: demo}\nspec:\n  destination: {kind: ServiceAccount, name: api, namespace: demo}\n  rules: [{kind: HTTPRouteGroup, name: api-routes, matches: [api]}]\n  sources: [{kind: ServiceAccount, name: client, namespace: demo}]\n";
    let mut mesh = Mesh::builder(ip(1))
        .access_mode(AccessMode::Strict)
        .client_sidecar(false)
        .file("servers.yaml", servers)
        .file("access.yaml", access)
        .start();
    mesh.sidecar_on("api-envoy-0", DataPlane::Envoy);
    mesh.sidecar_on("api-bundled-0", DataPlane::Bundled);
    let client = workload_identity(&mesh, "client-0");
    assert_eq!(client.spiffe_id, "spiffe://cluster.local/ns/demo/sa/client");
    let server = |plane, app: Backend, host| {
        let inbound = SocketAddr::new(IpAddr::V4(ip(host)), app.addr.port());
        wait_for(
            Duration::from_secs(10),
            || TcpStream::connect(inbound).is_ok(),
            &format!("the {plane:?} server's inbound listener"),
        );
        Server {
            plane,
            app,
            inbound,
        }
    };
    World {
        envoy: server(DataPlane::Envoy, envoy_app, 2),
        bundled: server(DataPlane::Bundled, bundled_app, 3),
        client,
        _mesh: mesh,
    }
}

/// A request of the corpus.
#[derive(Clone)]
enum Request {
    /// HTTP/1.1, exactly these bytes.
    H1(Vec<u8>),
    /// HTTP/2: `:scheme https`, `:authority`, `:path`, and a `host` header if any.
    H2 {
        authority: String,
        path: String,
        host: Option<String>,
    },
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::H1(bytes) => {
                let shown = String::from_utf8_lossy(bytes);
                // The request line and headers; long paths cut.
                let shown: String = if shown.len() > 200 {
                    let cut: String = shown.chars().take(160).collect();
                    format!("{cut}…({} bytes)", bytes.len())
                } else {
                    shown.into_owned()
                };
                write!(f, "HTTP/1.1 {shown:?}")
            }
            Request::H2 {
                authority,
                path,
                host,
            } => write!(
                f,
                "HTTP/2 :authority {authority:?} :path {path:?} host {host:?}"
            ),
        }
    }
}

/// One request of the corpus and the class it stands for.
#[derive(Clone, Debug)]
struct Case {
    class: &'static str,
    request: Request,
}

impl Case {
    /// The path of the request as sent (no query, no fragment, no scheme or authority of an
    /// absolute-form target), as a lenient server reads it.
    fn lenient(&self) -> String {
        let target = match &self.request {
            Request::H1(bytes) => {
                let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
                let line = String::from_utf8_lossy(line);
                let target = line
                    .split_once(' ')
                    .and_then(|(_, rest)| rest.rsplit_once(' '))
                    .map_or_else(String::new, |(target, _)| target.to_owned());
                match target.split_once("://") {
                    Some((_, rest)) => rest
                        .find('/')
                        .map_or("/".to_owned(), |i| rest[i..].to_owned()),
                    None => target,
                }
            }
            Request::H2 { path, .. } => path.clone(),
        };
        let path = target.split(['?', '#']).next().unwrap_or_default();
        lenient_path(path)
    }
}

/// `GET <target>` with `Host: api`.
fn get(class: &'static str, target: &[u8]) -> Case {
    with_hosts(class, target, &["api"])
}

/// `GET <target>` with these `Host` header lines.
fn with_hosts(class: &'static str, target: &[u8], hosts: &[&str]) -> Case {
    let mut raw = b"GET ".to_vec();
    raw.extend_from_slice(target);
    raw.extend_from_slice(b" HTTP/1.1\r\n");
    for host in hosts {
        raw.extend_from_slice(format!("host: {host}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"connection: close\r\n\r\n");
    Case {
        class,
        request: Request::H1(raw),
    }
}

fn h2(class: &'static str, authority: &str, path: &str, host: Option<&str>) -> Case {
    Case {
        class,
        request: Request::H2 {
            authority: authority.to_owned(),
            path: path.to_owned(),
            host: host.map(str::to_owned),
        },
    }
}

/// A small deterministic generator (xorshift64), so that a failure reproduces.
struct Picks(u64);

impl Picks {
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        &from[(self.0 % from.len() as u64) as usize]
    }
}

const SEPARATORS: [&str; 7] = ["/", "\\", "%2f", "%2F", "%5c", "%5C", "//"];
const DOTS: [&str; 12] = [
    "..", ".", "%2e%2e", "%2E%2e", ".%2e", "%2e", "..;", "..;x=1", "%2e%2e;", ".%2E;a", ".;",
    "..%3b",
];

/// The corpus: a grid of separators × dot segments × what follows, and every other class by
/// its own cases; about 350 requests.
fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for payload in KNOWN_PAYLOADS {
        cases.push(get(ISSUE, payload.as_bytes()));
        cases.push(h2(ISSUE, "api", payload, None));
    }
    let mut picks = Picks(0x5eed_1e55_d0e5_0001);
    for base in ["/api/x", "/api"] {
        for first in SEPARATORS {
            for dots in DOTS {
                for tail in ["admin", "api/x"] {
                    let (second, third) = (*picks.pick(&SEPARATORS), *picks.pick(&SEPARATORS));
                    let more = *picks.pick(&DOTS);
                    let target = format!("{base}{first}{dots}{second}{more}{third}{tail}");
                    cases.push(get("separators and dot segments", target.as_bytes()));
                }
            }
        }
    }
    for target in [
        "/api/x;a=b",
        "/api/;/x",
        "/api/..;/..;/admin",
        "/api/x/..;jsessionid=1/../admin",
        "/api/.;/x",
        "/api/x/%2e;/..;/admin",
        "/api;/x",
        "/api/x%3B/../admin",
        "/api/..%3B/admin",
    ] {
        cases.push(get("path parameters", target.as_bytes()));
    }
    for target in [
        "/api/%41",
        "/%61pi/x",
        "/api/%2e",
        "/api/x%2fy",
        "/api/x%5cy",
        "/api/%25",
        "/api/100%",
        "/api/%zz",
        "/api/%2",
        "/api/%%32%65%%32%65/admin",
        "/api/%252e%252e/admin",
        "/api/%c3%a9",
        "/api/%2e%2e%2fadmin",
    ] {
        cases.push(get("escapes", target.as_bytes()));
    }
    for target in [
        "/api//x",
        "//api/x",
        "/api///..//admin",
        "//admin",
        "/api//..",
        "///api/x",
    ] {
        cases.push(get("double slashes", target.as_bytes()));
    }
    for byte in [0x00, 0x01, 0x09, 0x0b, 0x1f, 0x7f] {
        cases.push(get(
            "control bytes",
            &[b"/api/x".as_slice(), &[byte], b"y"].concat(),
        ));
    }
    for escape in ["%00", "%01", "%09", "%0a", "%0D", "%1f", "%7f", "%7F"] {
        cases.push(get("control bytes", format!("/api/x{escape}y").as_bytes()));
    }
    cases.push(get("control bytes", b"/api/x?q=%00"));
    for target in [
        b"/api/caf\xc3\xa9".as_slice(),
        b"/api/\xff",
        b"/api/\x80x",
        b"/api/x?q=\xc3\xa9",
    ] {
        cases.push(get("non-ASCII bytes", target));
    }
    for target in [
        "/api/x#f",
        "/api/x#/../../admin",
        "/admin#/api/x",
        "/api/x?q=1#f",
        "/api/x#",
    ] {
        cases.push(get("fragments", target.as_bytes()));
    }
    for target in ["*", "", "api/x", "?q=1", "#f", "/"] {
        cases.push(get("request forms", target.as_bytes()));
    }
    cases.push(Case {
        class: "request forms",
        request: Request::H1(
            b"OPTIONS * HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n".to_vec(),
        ),
    });
    for target in [
        "/api/x?q=/../admin",
        "/admin?/api/x",
        "/api/x?..",
        "/api/x??a",
    ] {
        cases.push(get("queries", target.as_bytes()));
    }
    for n in [8_000, 60_000, 61_500, 63_000, 70_000] {
        cases.push(get(
            "long paths",
            format!("/api/{}", "a".repeat(n)).as_bytes(),
        ));
    }
    let deep = format!("/api/{}{}admin", "a/".repeat(3_000), "../".repeat(3_001));
    cases.push(get("long paths", deep.as_bytes()));
    for target in [
        "http://api/api/x",
        "http://api/admin",
        "http://api/api/../admin",
        "https://api/api/x",
        "ftp://api/api/x",
        "http://user@api/api/x",
        "http://api",
        "HTTP://API/api/x",
        "http://api/api/x\\..\\..\\admin",
        "http://other:1234/api/x",
    ] {
        cases.push(get("absolute form", target.as_bytes()));
    }
    cases.push(with_hosts("absolute form", b"http://api/api/x", &["other"]));
    cases.push(with_hosts("absolute form", b"http://other/api/x", &[]));
    for hosts in [
        &[][..],
        &["api", "other"],
        &["a b"],
        &["a/b"],
        &[""],
        &["user@api"],
        &["API:8080"],
    ] {
        cases.push(with_hosts("Host", b"/api/x", hosts));
    }
    for path in [
        "/api/x",
        "/admin",
        KNOWN_PAYLOADS[0],
        KNOWN_PAYLOADS[1],
        "/api/x/../../admin",
        "/api/%2e%2e/admin",
        "/api/%2e%2e;/admin",
        "/api/x%2f..%2f..%2fadmin",
        "/api/x%5C..%5C..%5Cadmin",
        "/api/..%3b/admin",
        "/api/caf\u{e9}",
        "/api//x",
        "*",
    ] {
        cases.push(h2("HTTP/2 paths", "api", path, None));
    }
    for (authority, host) in [("api", "other"), ("other", "api"), ("api", "api")] {
        cases.push(h2(":authority and host", authority, "/api/x", Some(host)));
    }
    cases
}

/// What became of a request on one server.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    /// The response's status, `closed` without one, or an HTTP/2 error.
    answer: String,
    /// The application's view, if the request reached it: its path and `Host`.
    reached: Option<Seen>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    /// The request target as the application read it.
    target: String,
    host: Option<String>,
}

impl Seen {
    fn from_head(head: &str) -> Seen {
        let mut lines = head.split("\r\n");
        let target = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or_default()
            .to_owned();
        let host = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.trim().to_owned());
        Seen { target, host }
    }

    /// The path as a lenient server reads it.
    fn lenient(&self) -> String {
        let path = self.target.split('?').next().unwrap_or_default();
        lenient_path(path)
    }

    /// Whether the TrafficTarget's `/api/.*` holds for the path a lenient server reads.
    fn inside_policy(&self) -> bool {
        let read = self.lenient();
        read.starts_with(ALLOWED_PREFIX) && !read.contains('\n')
    }
}

fn send(
    runtime: &tokio::runtime::Runtime,
    client: &WorkloadIdentity,
    server: &Server,
    request: &Request,
) -> Outcome {
    let before = server.app.requests().len();
    let answer = match request {
        Request::H1(bytes) => match client.exchange(server.inbound, bytes) {
            Ok(received) => {
                let head = String::from_utf8_lossy(&received);
                head.strip_prefix("HTTP/1.1 ")
                    .and_then(|rest| rest.get(..3))
                    .map_or_else(|| "closed".to_owned(), str::to_owned)
            }
            Err(e) => format!("error: {e}"),
        },
        Request::H2 {
            authority,
            path,
            host,
        } => {
            let uri = http::Uri::builder()
                .scheme("https")
                .authority(authority.as_str())
                .path_and_query(path.as_str())
                .build()
                .expect("an HTTP/2 test URI");
            let mut builder = http::Request::get(uri);
            if let Some(host) = host {
                builder = builder.header("host", host);
            }
            let request = builder.body(()).expect("an HTTP/2 request");
            match runtime.block_on(client.h2_request(server.inbound, request)) {
                Ok(status) => status.to_string(),
                Err(e) => format!("h2 error: {e}"),
            }
        }
    };
    // The application answers before its proxy does: its record is complete by now.
    let heads = server.app.requests();
    let reached = heads.get(before..).and_then(|new| {
        assert!(
            new.len() <= 1,
            "{:?} got {} requests for one: {new:?}",
            server.plane,
            new.len()
        );
        new.first().map(|h| Seen::from_head(h))
    });
    Outcome { answer, reached }
}

/// Counts of outcomes per class, for the log.
#[derive(Default)]
struct Tally {
    cases: usize,
    both_denied: usize,
    both_allowed: usize,
    only_envoy_allowed: usize,
    only_bundled_allowed: usize,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>4} requests: {:>4} kept from both applications, {:>4} reached both, {:>3} only Envoy's, {:>3} only the bundled proxy's",
            self.cases,
            self.both_denied,
            self.both_allowed,
            self.only_envoy_allowed,
            self.only_bundled_allowed
        )
    }
}

#[test]
fn the_bundled_proxy_lets_no_request_through_that_envoy_refuses() {
    let started = Instant::now();
    let w = world();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = |case: &Case| -> (Outcome, Outcome) {
        (
            send(&runtime, &w.client, &w.envoy, &case.request),
            send(&runtime, &w.client, &w.bundled, &case.request),
        )
    };

    // The policy holds on both before anything else: `/api/x` passes, `/admin` does not.
    for plane in [&w.envoy, &w.bundled] {
        wait_for(
            Duration::from_secs(15),
            || send(&runtime, &w.client, plane, &get("", b"/api/x").request).answer == "200",
            &format!("the {:?} server to let client-0 GET /api/x", plane.plane),
        );
        let denied = send(&runtime, &w.client, plane, &get("", b"/admin").request);
        assert_eq!(denied.answer, "403", "{:?}: GET /admin", plane.plane);
        assert_eq!(denied.reached, None, "{:?}: GET /admin", plane.plane);
    }

    let corpus = corpus();
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut fragments_dropped = Vec::new();
    let mut envoy_differs = Vec::new();
    let mut issue = Vec::new();
    for case in &corpus {
        let (envoy, bundled) = run(case);
        if case.class == ISSUE {
            issue.push((case.request.clone(), envoy.clone(), bundled.clone()));
        }
        let tally = tallies.entry(case.class).or_default();
        tally.cases += 1;
        match (&envoy.reached, &bundled.reached) {
            (None, None) => tally.both_denied += 1,
            (Some(_), None) => tally.only_envoy_allowed += 1,
            (Some(e), Some(b)) => {
                tally.both_allowed += 1;
                if e.host != b.host {
                    violations.push(format!(
                        "{:?} [{}]: the applications read another Host: Envoy's {e:?}, the bundled proxy's {b:?}",
                        case.request, case.class
                    ));
                }
                if e.lenient() != b.lenient() {
                    envoy_differs.push(format!(
                        "{:?}: Envoy's application read {:?}, the bundled proxy's {:?}",
                        case.request,
                        e.lenient(),
                        b.lenient()
                    ));
                }
            }
            (None, Some(b)) => {
                tally.only_bundled_allowed += 1;
                // HTTP's URI parser drops a fragment before the proxy sees the request: the
                // application gets the target without it, the one the policy judged.
                let fragment = match &case.request {
                    Request::H1(bytes) => bytes.contains(&b'#'),
                    Request::H2 { path, .. } => path.contains('#'),
                };
                if fragment && b.inside_policy() {
                    fragments_dropped
                        .push(format!("{:?}: the application read {b:?}", case.request));
                } else {
                    violations.push(format!(
                        "{:?} [{}]: Envoy {envoy:?}, but the bundled proxy let it through: {bundled:?}",
                        case.request, case.class
                    ));
                }
            }
        }
        if let Some(b) = &bundled.reached {
            if !b.inside_policy() {
                violations.push(format!(
                    "{:?} [{}]: the bundled proxy's application read {:?}, outside {ALLOWED_PREFIX}: {b:?}",
                    case.request,
                    case.class,
                    b.lenient()
                ));
            }
            // Normalizing changes the spelling, never what a lenient server reads.
            if b.lenient() != case.lenient() {
                violations.push(format!(
                    "{:?} [{}]: a lenient server reads it as {:?}, but the bundled proxy's application read {:?}: {b:?}",
                    case.request,
                    case.class,
                    case.lenient(),
                    b.lenient()
                ));
            }
        }
    }
    eprintln!(
        "{} requests to each data plane in {:?}:",
        corpus.len(),
        started.elapsed()
    );
    for (class, tally) in &tallies {
        eprintln!("  {class:<28} {tally}");
    }
    for dropped in &fragments_dropped {
        eprintln!("  fragment dropped, not refused: {dropped}");
    }
    // Where Envoy's normalization changes what a lenient server reads (`%2e;` is no dot
    // segment to it, `..;` after it is).
    for differs in &envoy_differs {
        eprintln!("  read differently: {differs}");
    }
    assert!(
        violations.is_empty(),
        "{} of {} requests:\n{}",
        violations.len(),
        corpus.len(),
        violations.join("\n")
    );
    // The issue's payloads reach neither application: both refuse them.
    for (request, envoy, bundled) in &issue {
        assert!(
            envoy.reached.is_none() && bundled.reached.is_none(),
            "{request:?}: Envoy {envoy:?}, bundled {bundled:?}"
        );
    }
    // The corpus exercised both outcomes on both data planes.
    let total = |f: fn(&Tally) -> usize| tallies.values().map(f).sum::<usize>();
    assert!(
        total(|t| t.both_allowed) > 20,
        "too few requests passed both"
    );
    assert!(
        total(|t| t.both_denied) > 100,
        "too few requests were refused by both"
    );
}
