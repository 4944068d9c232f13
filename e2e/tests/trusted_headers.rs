//! Headers the application may trust (issue 14, finding 4; issue 13, "B sees A's SPIFFE
//! identity"): what a server's application receives through the mesh when a client claims an
//! identity of its own, or sends a request head that proxies could read differently. Both data
//! planes at once: a client sidecar and a server sidecar of each (Pods pin theirs by
//! annotation), so every assertion runs on Envoy and on the bundled proxy, whatever
//! `SWITCHYARD_DATA_PLANE` says. Requests go as raw bytes to a client sidecar's outbound
//! listener (HTTP/1.1 on a plain socket, or HTTP/2 with prior knowledge), and, in permissive
//! mode, straight to a server sidecar's inbound port in plaintext; the applications are
//! recording backends that keep each request exactly as it arrived.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    convert::Infallible,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, pem::PemObject as _};
use sha2::{Digest as _, Sha256};
use switchyard_e2e::{
    DataPlane,
    mesh::{
        AccessMode, Backend, Mesh, Received, Sidecar, meshed_http_service, parse_response, pod_on,
        wait_for,
    },
};

const API_ID: &str = "spiffe://cluster.local/ns/demo/sa/api";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/demo/sa/client";
/// What a client claims to be in a header it writes itself.
const FORGED_XFCC: &str =
    "By=spiffe://cluster.local/ns/demo/sa/api;URI=spiffe://cluster.local/ns/demo/sa/admin";

/// A server Pod on one data plane: its Service and the application behind its sidecar.
struct Server {
    plane: DataPlane,
    /// The Service (in `demo`) whose only endpoint is this Pod.
    service: &'static str,
    app: Backend,
    /// The sidecar's inbound port, `podIP:<app port>`.
    inbound: SocketAddr,
}

/// Pods in `demo`, IPs `127.0.<subnet>.x`: clients `client-0` (Envoy, `.1`) and `client-1`
/// (bundled, `.2`), both ServiceAccount `client`; servers `api-0` (Envoy, `.3`, Service
/// `api-envoy`) and `api-1` (bundled, `.4`, Service `api-bundled`), both ServiceAccount `api`.
/// Permissive mode: sidecars speak mTLS to each other, and a server's inbound port also takes
/// plaintext from outside the mesh.
struct World {
    _mesh: Mesh,
    clients: Vec<Sidecar>,
    servers: Vec<Server>,
}

fn world(subnet: u8) -> World {
    let ip = |host| Ipv4Addr::new(127, 0, subnet, host);
    let servers = [
        (DataPlane::Envoy, "api-envoy", "api-0", ip(3)),
        (DataPlane::Bundled, "api-bundled", "api-1", ip(4)),
    ];
    let apps: Vec<Backend> = servers
        .iter()
        .map(|(_, service, ..)| Backend::recording(service))
        .collect();
    let mut manifests = vec![pod_on("client-1", "client", &[], ip(2), DataPlane::Bundled)];
    for ((plane, service, pod, pod_ip), app) in servers.iter().zip(&apps) {
        manifests.push(format!(
            "{}---\n{}",
            pod_on(pod, "api", &[("app", service)], *pod_ip, *plane),
            meshed_http_service(service, pod, *pod_ip, app.addr.port())
        ));
    }
    let mut mesh = Mesh::builder(ip(1))
        .access_mode(AccessMode::Permissive)
        .data_plane(DataPlane::Envoy)
        .file("pods.yaml", manifests.join("---\n"))
        .start();
    let mut clients = vec![mesh.client()];
    clients.push(mesh.sidecar_on("client-1", DataPlane::Bundled));
    let servers: Vec<Server> = servers
        .into_iter()
        .zip(apps)
        .map(|((plane, service, pod, pod_ip), app)| {
            mesh.sidecar_on(pod, plane);
            Server {
                plane,
                service,
                inbound: SocketAddr::new(IpAddr::V4(pod_ip), app.addr.port()),
                app,
            }
        })
        .collect();
    // Every client reaches every server before anything is asserted.
    for client in &clients {
        for server in &servers {
            wait_for(
                Duration::from_secs(30),
                || {
                    client
                        .request("GET", server.service, "/")
                        .is_ok_and(|r| r.status == 200 && r.body == server.service)
                },
                &format!("{} to reach {}", client.pod, server.service),
            );
        }
    }
    for server in &servers {
        server.app.clear_received();
    }
    World {
        _mesh: mesh,
        clients,
        servers,
    }
}

/// Sends `request` (raw HTTP/1.1, ending the connection) to `addr`: status and body of the
/// answer, status 0 when the connection closed without one.
fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let r = parse_response(&String::from_utf8_lossy(&answer));
    (r.status, r.body)
}

/// The one request `app` received since the last call, which clears it; `None` when it
/// received nothing.
fn take_one(app: &Backend, what: &str) -> Option<Received> {
    let mut received = app.received();
    app.clear_received();
    assert!(received.len() <= 1, "{what}: {received:#?}");
    received.pop()
}

/// What the application saw of a request that should have reached it with a 200.
fn delivered(server: &Server, (status, body): (u16, String), what: &str) -> Received {
    assert_eq!(
        (status, body.as_str()),
        (200, server.service),
        "{what}: {:?}",
        server.app.received()
    );
    take_one(&server.app, what).unwrap_or_else(|| panic!("{what}: the application got nothing"))
}

/// Asserts a request was answered with `status` by a proxy and never reached the application.
fn refused(server: &Server, (status, body): (u16, String), expected: u16, what: &str) {
    assert_eq!(status, expected, "{what}: answered {status} {body:?}");
    assert_eq!(
        take_one(&server.app, what),
        None,
        "{what}: reached the application"
    );
}

fn label(client: &Sidecar, server: &Server) -> String {
    format!(
        "{} ({:?}) -> {} ({:?})",
        client.pod, client.data_plane, server.service, server.plane
    )
}

/// The lower-case hex SHA-256 of the leaf of the certificate the bundled proxy `sidecar`
/// holds for `identity`, read from its `/config_dump` (which shows chains, never keys).
fn certificate_hash(sidecar: &Sidecar, identity: &str) -> String {
    let dump: serde_json::Value =
        serde_json::from_str(&sidecar.admin_get("/config_dump").unwrap().body).unwrap();
    let chain = dump["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == identity)
        .and_then(|s| s["chain_pem"].as_str())
        .unwrap_or_else(|| panic!("{}: no certificate for {identity}", sidecar.pod));
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    Sha256::digest(leaf.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Item 1 (issue 13's "B sees A's SPIFFE identity"): the application behind a server sidecar
/// gets `x-forwarded-client-cert` from the certificate its caller's sidecar presented, in
/// Envoy's format (`By=<server's ID>;Hash=<SHA-256 of the caller's certificate>;URI=<caller's
/// ID>`), the same value from either server data plane; what the caller wrote there, and the
/// `x-envoy-*` headers Envoy takes from untrusted clients, never arrive, and a plaintext caller
/// (no certificate) gets no such header at all.
#[test]
fn the_application_sees_its_callers_verified_identity_and_no_claimed_one() {
    let w = world(150);
    let forged = |host: &str| {
        format!(
            "GET /whoami HTTP/1.1\r\nhost: {host}\r\nx-forwarded-client-cert: {FORGED_XFCC}\r\nx-envoy-internal: true\r\nx-envoy-retry-on: 5xx\r\nx-kept: yes\r\nconnection: close\r\n\r\n"
        )
    };
    let bundled_client_hash = certificate_hash(&w.clients[1], CLIENT_ID);
    for client in &w.clients {
        let mut seen = Vec::new();
        for server in &w.servers {
            let what = label(client, server);
            let got = delivered(
                server,
                raw(client.outbound(), &forged(server.service)),
                &what,
            );
            let xfcc = got.header("x-forwarded-client-cert");
            let [xfcc] = xfcc.as_slice() else {
                panic!("{what}: x-forwarded-client-cert {xfcc:?}")
            };
            let hash = xfcc
                .strip_prefix(&format!("By={API_ID};Hash="))
                .and_then(|rest| rest.strip_suffix(&format!(";URI={CLIENT_ID}")))
                .unwrap_or_else(|| panic!("{what}: x-forwarded-client-cert {xfcc:?}"));
            assert!(
                hash.len() == 64
                    && hash
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{what}: Hash={hash}"
            );
            if client.data_plane == DataPlane::Bundled {
                assert_eq!(
                    hash, bundled_client_hash,
                    "{what}: the caller's certificate"
                );
            }
            for internal in ["x-envoy-internal", "x-envoy-retry-on"] {
                assert_eq!(
                    got.header(internal),
                    Vec::<&str>::new(),
                    "{what}: {internal}"
                );
            }
            assert_eq!(got.header("x-kept"), ["yes"], "{what}");
            seen.push((*xfcc).to_owned());
        }
        // One caller, one certificate: the same header from either server data plane.
        assert_eq!(
            seen[0], seen[1],
            "{}: Envoy's and the bundled proxy's",
            client.pod
        );
    }
    // A caller outside the mesh has no certificate, and so no identity to pass on.
    for server in &w.servers {
        let what = format!("plaintext -> {} ({:?})", server.service, server.plane);
        let got = delivered(server, raw(server.inbound, &forged("api")), &what);
        for header in [
            "x-forwarded-client-cert",
            "x-envoy-internal",
            "x-envoy-retry-on",
        ] {
            assert_eq!(got.header(header), Vec::<&str>::new(), "{what}: {header}");
        }
    }
}

/// Item 2: `Connection` may name hop-by-hop headers, which go, but naming `Host` leaves no
/// authority (400, as Envoy answers), and naming an `x-forwarded-*` header is refused; an
/// end-to-end header it does not name stays. Through a client sidecar and straight to a
/// server's inbound port.
#[test]
fn connection_cannot_take_the_host_away() {
    let w = world(151);
    let request = |host: &str, connection: &str| {
        format!(
            "GET /x HTTP/1.1\r\nhost: {host}\r\nx-hop: 1\r\nx-kept: yes\r\nconnection: {connection}\r\n\r\n"
        )
    };
    for server in &w.servers {
        let mut entries: Vec<(String, SocketAddr)> = w
            .clients
            .iter()
            .map(|c| (label(c, server), c.outbound()))
            .collect();
        entries.push((
            format!("plaintext -> {} ({:?})", server.service, server.plane),
            server.inbound,
        ));
        for (what, addr) in entries {
            for connection in ["host, close", "close, Host", "x-forwarded-for, close"] {
                refused(
                    server,
                    raw(addr, &request(server.service, connection)),
                    400,
                    &format!("{what}, connection: {connection}"),
                );
            }
            let got = delivered(
                server,
                raw(addr, &request(server.service, "x-hop, close")),
                &what,
            );
            assert_eq!(got.header("host"), [server.service], "{what}");
            assert_eq!(got.header("x-hop"), Vec::<&str>::new(), "{what}");
            assert_eq!(got.header("x-kept"), ["yes"], "{what}");
        }
    }
}

/// One HTTP/2 request (prior knowledge) to `addr`: `method`, `:authority` from `uri`, the
/// extra `headers`, and `body` as DATA frames of no declared length. Status and body of the
/// answer.
fn h2(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&'static str>,
) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, BoxBody<Bytes, Infallible>>(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut request = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let body = match body {
            // A stream has no size hint, so no `content-length` goes with it.
            Some(b) => BodyExt::boxed(StreamBody::new(tokio_stream::iter([Ok::<_, Infallible>(
                Frame::data(Bytes::from_static(b.as_bytes())),
            )]))),
            None => BodyExt::boxed(Empty::new()),
        };
        let request = request.body(body).unwrap();
        let send = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request));
        match send.await {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
            Ok(Err(e)) => (0, e.to_string()),
            Err(_) => (0, "timed out".to_owned()),
        }
    })
}

/// Item 3: the application sees the authority that routing and RBAC used. HTTP/2 with a `host`
/// header that disagrees with `:authority`: routed by `:authority`, and the application's
/// `Host` is `:authority` (as Envoy does), both through a client sidecar and straight to a
/// server's inbound port; an HTTP/1.1 request with two `Host` lines never reaches the
/// application.
#[test]
fn the_application_sees_the_authority_that_routing_used() {
    let w = world(152);
    for client in &w.clients {
        for server in &w.servers {
            let what = label(client, server);
            let uri = format!("http://{}/x", server.service);
            let got = delivered(
                server,
                h2(
                    client.outbound(),
                    "GET",
                    &uri,
                    &[("host", "admin.demo")],
                    None,
                ),
                &format!("{what}: :authority {}, host admin.demo", server.service),
            );
            assert_eq!(got.header("host"), [server.service], "{what}");
            // Routed by `:authority`, which names no service: nothing reaches any application.
            let (status, body) = h2(
                client.outbound(),
                "GET",
                "http://admin.demo/x",
                &[("host", server.service)],
                None,
            );
            assert_eq!(
                status, 404,
                "{what}: :authority admin.demo, host {}: {body:?}",
                server.service
            );
            for s in &w.servers {
                assert_eq!(
                    take_one(&s.app, &what),
                    None,
                    "{what}: reached {}",
                    s.service
                );
            }
            let two_hosts = format!(
                "GET /x HTTP/1.1\r\nhost: {}\r\nhost: admin.demo\r\nconnection: close\r\n\r\n",
                server.service
            );
            let (status, body) = raw(client.outbound(), &two_hosts);
            assert!(
                (400..500).contains(&status),
                "{what}: two hosts: {status} {body:?}"
            );
            for s in &w.servers {
                assert_eq!(
                    take_one(&s.app, &what),
                    None,
                    "{what}: two hosts reached {}",
                    s.service
                );
            }
        }
    }
    for server in &w.servers {
        let what = format!("plaintext -> {} ({:?})", server.service, server.plane);
        let got = delivered(
            server,
            h2(
                server.inbound,
                "GET",
                "http://api/x",
                &[("host", "admin.demo")],
                None,
            ),
            &what,
        );
        assert_eq!(got.header("host"), ["api"], "{what}");
    }
}

/// Item 4: a path with an encoded NUL is refused with 400, as Envoy's path normalization
/// refuses it; `%00` in the query goes on as sent, and another encoded control character is
/// forwarded as sent (Envoy) or refused, never changed.
#[test]
fn an_encoded_nul_in_the_path_is_refused() {
    let w = world(153);
    let get = |host: &str, target: &str| {
        format!("GET {target} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n")
    };
    for server in &w.servers {
        let mut entries: Vec<(String, SocketAddr)> = w
            .clients
            .iter()
            .map(|c| (label(c, server), c.outbound()))
            .collect();
        entries.push((
            format!("plaintext -> {} ({:?})", server.service, server.plane),
            server.inbound,
        ));
        for (what, addr) in entries {
            for target in ["/a%00b", "/%00/../x", "/a/%00"] {
                refused(
                    server,
                    raw(addr, &get(server.service, target)),
                    400,
                    &format!("{what}: {target}"),
                );
            }
            let got = delivered(
                server,
                raw(addr, &get(server.service, "/a?q=%00")),
                &format!("{what}: %00 in the query"),
            );
            assert_eq!(got.target, "/a?q=%00", "{what}");
            // Another encoded control character: Envoy forwards it as sent; a proxy may also
            // refuse it, but never hand the application something else.
            let target = "/a%01b";
            let what = format!("{what}: {target}");
            match raw(addr, &get(server.service, target)) {
                (400, _) => assert_eq!(take_one(&server.app, &what), None, "{what}"),
                answer => assert_eq!(delivered(server, answer, &what).target, target, "{what}"),
            }
        }
    }
}

/// Item 5: a GET's body of no declared length (HTTP/1.1 chunked, or HTTP/2 DATA without
/// `content-length`) reaches the application whole, as Envoy forwards it, never dropped; so
/// does any HTTP/2 request's (the bundled proxy once sent those to an HTTP/1.1 application
/// as empty, whatever the method).
#[test]
fn a_get_body_of_unknown_length_reaches_the_application() {
    let w = world(154);
    let chunked = |host: &str| {
        format!(
            "GET /x HTTP/1.1\r\nhost: {host}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
    };
    for server in &w.servers {
        let mut entries: Vec<(String, SocketAddr)> = w
            .clients
            .iter()
            .map(|c| (label(c, server), c.outbound()))
            .collect();
        entries.push((
            format!("plaintext -> {} ({:?})", server.service, server.plane),
            server.inbound,
        ));
        for (what, addr) in entries {
            let got = delivered(
                server,
                raw(addr, &chunked(server.service)),
                &format!("{what}: chunked"),
            );
            assert_eq!(got.method, "GET", "{what}");
            assert_eq!(
                String::from_utf8_lossy(&got.body),
                "hello world",
                "{what}: chunked"
            );
            // Over HTTP/2 (to an HTTP/1.1 application), whatever the method.
            let uri = format!("http://{}/x", server.service);
            for method in ["GET", "POST"] {
                let what = format!("{what}: HTTP/2 {method}");
                let got = delivered(
                    server,
                    h2(addr, method, &uri, &[], Some("hello world")),
                    &what,
                );
                assert_eq!(got.method, method, "{what}");
                assert_eq!(String::from_utf8_lossy(&got.body), "hello world", "{what}");
            }
        }
    }
}
