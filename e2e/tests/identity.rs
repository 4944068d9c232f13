//! Identity and access between real Envoy sidecars configured by `switchyard local`: strict
//! mode follows TrafficTargets (live, per method and path, per ServiceAccount, and TCPRoutes for
//! a server-first TCP protocol), inbound ports
//! refuse callers without a mesh certificate, the control plane hands each proxy only its own
//! secret, certificates rotate under load without failed requests, and permissive mode allows
//! everyone while still speaking mTLS between sidecars.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    extensions::transport_sockets::tls::v3::{Secret, secret},
    service::discovery::v3::{
        DeltaDiscoveryRequest, DiscoveryRequest,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use prost::Message as _;
use switchyard_e2e::mesh::{
    AccessMode, Backend, Mesh, Response, Sidecar, meshed_http_service, pod, wait_for,
};
use tokio_stream::wrappers::ReceiverStream;

/// The body of a request RBAC denies (the adapter's `DENIED_BODY`).
const DENIED: &str = "denied by mesh policy\n";
const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const API_ID: &str = "spiffe://cluster.local/ns/demo/sa/api";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/demo/sa/client";
const TRUST_BUNDLE: &str = "spiffe://cluster.local";
/// How long a TrafficTarget edit may take to reach the server's sidecar.
const PROPAGATION: Duration = Duration::from_secs(1);

/// An HTTPRouteGroup `api-routes` whose only match, `m`, is `methods` on `path_regex`.
fn route_group(methods: &str, path_regex: &str) -> String {
    format!(
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {{name: api-routes, namespace: demo}}\nspec:\n  matches:\n  - name: m\n    pathRegex: '{path_regex}'\n    methods: {methods}\n"
    )
}

/// A TrafficTarget letting ServiceAccount `client` reach `api` by the `api-routes` match `m`.
fn traffic_target() -> String {
    "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: api-access, namespace: demo}\nspec:\n  destination: {kind: ServiceAccount, name: api, namespace: demo}\n  rules:\n  - kind: HTTPRouteGroup\n    name: api-routes\n    matches: [m]\n  sources:\n  - {kind: ServiceAccount, name: client, namespace: demo}\n".to_owned()
}

/// Everything allowed from `client` to `api`: a route group matching all, and the target.
fn allow_client() -> Vec<(&'static str, String)> {
    vec![
        ("routes.yaml", route_group("['*']", ".*")),
        ("target.yaml", traffic_target()),
    ]
}

/// A server Pod `demo/api-0` (ServiceAccount `api`) behind Service `api`, with clients
/// `client-0` (ServiceAccount `client`) and `intruder-0` (ServiceAccount `intruder`), every
/// one with its own Envoy sidecar.
struct World {
    mesh: Mesh,
    /// The application behind api-0's sidecar, on 127.0.0.1:<port>; runs while this lives.
    _backend: Backend,
    api: Sidecar,
    /// api-0's inbound listener: `podIP:<port>`.
    inbound: SocketAddr,
    client: Sidecar,
    intruder: Option<Sidecar>,
}

/// Pod IPs `127.0.<subnet>.1` (client-0), `.2` (api-0) and `.3` (intruder-0).
fn world(
    subnet: u8,
    mode: AccessMode,
    args: &[&str],
    files: Vec<(&str, String)>,
    with_intruder: bool,
) -> World {
    let ip = |host| Ipv4Addr::new(127, 0, subnet, host);
    let backend = Backend::http("api");
    let port = backend.addr.port();
    let mut builder = Mesh::builder(ip(1))
        .access_mode(mode)
        .args(args)
        .file(
            "api.yaml",
            format!(
                "{}---\n{}",
                pod("api-0", "api", &[("app", "api")], ip(2)),
                meshed_http_service("api", "api-0", ip(2), port)
            ),
        )
        .file("intruder.yaml", pod("intruder-0", "intruder", &[], ip(3)));
    for (name, yaml) in files {
        builder = builder.file(name, yaml);
    }
    let mut mesh = builder.start();
    let api = mesh.sidecar("api-0");
    let inbound = SocketAddr::new(IpAddr::V4(ip(2)), port);
    wait_for(
        Duration::from_secs(10),
        || TcpStream::connect(inbound).is_ok(),
        "api-0's inbound listener",
    );
    let intruder = with_intruder.then(|| mesh.sidecar("intruder-0"));
    World {
        client: mesh.client(),
        mesh,
        _backend: backend,
        api,
        inbound,
        intruder,
    }
}

fn is_ok(r: &std::io::Result<Response>) -> bool {
    matches!(r, Ok(r) if r.status == 200 && r.body == "api")
}

fn is_denied(r: &std::io::Result<Response>) -> bool {
    matches!(r, Ok(r) if r.status == 403 && r.body == DENIED)
}

/// Polls `f` every 10 ms and returns the time from `since` until it held; panics when it has
/// not within `within` of `since`.
fn elapsed_until(
    since: Instant,
    within: Duration,
    mut f: impl FnMut() -> bool,
    what: &str,
) -> Duration {
    while !f() {
        assert!(
            since.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    since.elapsed()
}

/// Waits (up to 15 s: sidecars are still fetching clusters and secrets) until `sidecar`'s
/// `GET /` to `api` gets an answer `expect` accepts.
fn settle(sidecar: &Sidecar, expect: fn(&std::io::Result<Response>) -> bool, what: &str) {
    wait_for(
        Duration::from_secs(15),
        || expect(&sidecar.request("GET", "api", "/")),
        what,
    );
}

#[test]
fn strict_mode_follows_traffic_targets_live() {
    let w = world(
        30,
        AccessMode::Strict,
        &[],
        vec![("routes.yaml", route_group("['*']", ".*"))],
        false,
    );
    settle(&w.client, is_denied, "a 403 without any TrafficTarget");
    for _ in 0..10 {
        let r = w.client.request("GET", "api", "/");
        assert!(is_denied(&r), "no TrafficTarget yet: {r:?}");
    }

    let written = Instant::now();
    w.mesh.write("target.yaml", &traffic_target());
    let allowed_after = elapsed_until(
        written,
        Duration::from_secs(10),
        || is_ok(&w.client.request("GET", "api", "/")),
        "a 200 once the TrafficTarget is written",
    );
    for _ in 0..10 {
        let r = w.client.request("GET", "api", "/");
        assert!(is_ok(&r), "allowed: {r:?}");
    }

    let deleted = Instant::now();
    std::fs::remove_file(w.mesh.path("target.yaml")).unwrap();
    let denied_after = elapsed_until(
        deleted,
        Duration::from_secs(10),
        || is_denied(&w.client.request("GET", "api", "/")),
        "a 403 once the TrafficTarget is deleted",
    );
    for _ in 0..10 {
        let r = w.client.request("GET", "api", "/");
        assert!(is_denied(&r), "denied again: {r:?}");
    }
    eprintln!(
        "allowed {allowed_after:?} after the write, denied {denied_after:?} after the delete"
    );
    assert!(
        allowed_after < PROPAGATION,
        "allowed only {allowed_after:?} after the write"
    );
    assert!(
        denied_after < PROPAGATION,
        "denied only {denied_after:?} after the delete"
    );
}

#[test]
fn http_route_rules_restrict_method_and_path() {
    let w = world(
        31,
        AccessMode::Strict,
        &[],
        vec![
            ("routes.yaml", route_group("[GET]", "/api/.*")),
            ("target.yaml", traffic_target()),
        ],
        false,
    );
    wait_for(
        Duration::from_secs(15),
        || is_ok(&w.client.request("GET", "api", "/api/x")),
        "GET /api/x to be allowed",
    );
    let cases = [
        ("GET", "/api/x", true),
        ("GET", "/api/x/y?q=1", true),
        ("POST", "/api/x", false),
        ("PUT", "/api/x", false),
        ("GET", "/admin", false),
        ("GET", "/api", false),
        // Normalised to /admin before RBAC sees it.
        ("GET", "/api/x/../../admin", false),
    ];
    for (method, path, allowed) in cases {
        let r = w.client.request(method, "api", path);
        if allowed {
            assert!(is_ok(&r), "{method} {path} must be allowed: {r:?}");
        } else {
            assert!(is_denied(&r), "{method} {path} must be denied: {r:?}");
        }
    }
}

#[test]
fn only_the_allowed_service_account_gets_through() {
    let w = world(32, AccessMode::Strict, &[], allow_client(), true);
    let intruder = w.intruder.as_ref().unwrap();
    settle(&w.client, is_ok, "client-0 to be allowed");
    settle(intruder, is_denied, "intruder-0 to be denied");
    let mut answers: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for _ in 0..25 {
        for (who, sidecar) in [("client-0", &w.client), ("intruder-0", intruder)] {
            let r = sidecar.request("GET", "api", "/").unwrap();
            *answers.entry((who, r.status)).or_default() += 1;
            if who == "client-0" {
                assert_eq!(r.body, "api");
            } else {
                assert_eq!(r.body, DENIED);
            }
        }
    }
    assert_eq!(
        answers,
        BTreeMap::from([(("client-0", 200), 25), (("intruder-0", 403), 25)])
    );
}

/// Accepts any server certificate, recording it. The test is about what the *server* accepts
/// from a client without a mesh certificate, so the client must get past its own check of the
/// server, which it cannot do honestly: the mesh CA exists only inside the control plane.
/// Handshake signatures are still verified, so the peer does hold the certificate's key.
#[derive(Debug)]
struct AcceptAnyServer {
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<Vec<Vec<u8>>>,
}

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.seen.lock().unwrap().push(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a raw TLS client got from a server.
#[derive(Debug)]
struct TlsAttempt {
    /// The handshake or the exchange failed with this error.
    error: Option<String>,
    /// Bytes received after the handshake (an HTTP response, if any).
    received: Vec<u8>,
    /// End-entity certificates (DER) the server presented.
    server_certs: Vec<Vec<u8>>,
}

/// A TLS 1.3 client offering `client_cert` (self-signed, key `key`), if any, that sends one
/// HTTP/1.1 request to `addr` and reads until the server closes.
fn tls_get(
    addr: SocketAddr,
    client_cert: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
) -> TlsAttempt {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AcceptAnyServer {
        provider: provider.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let mut config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "api.demo".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut received = Vec::new();
    let error = tls
        .write_all(b"GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n")
        .and_then(|()| tls.flush())
        .and_then(|()| tls.read_to_end(&mut received))
        .err()
        .map(|e| e.to_string());
    let server_certs = verifier.seen.lock().unwrap().clone();
    TlsAttempt {
        error,
        received,
        server_certs,
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn inbound_refuses_callers_without_a_mesh_certificate() {
    let w = world(33, AccessMode::Strict, &[], allow_client(), false);
    // The port is open and the mesh client gets through it: refusals below are about the
    // caller, not a missing listener.
    settle(&w.client, is_ok, "client-0 to be allowed");
    let listener = Sidecar::listener_stats(w.inbound);

    // Plain HTTP: the TLS-only listener never answers in HTTP.
    let mut conn = TcpStream::connect(w.inbound).expect("the inbound port accepts TCP");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let read = conn.read_to_end(&mut raw);
    assert!(
        !contains(&raw, "HTTP/"),
        "plaintext got an HTTP response: {read:?} {:?}",
        String::from_utf8_lossy(&raw)
    );
    w.api
        .wait_for_stat(&listener, "ssl.connection_error", Duration::from_secs(5));

    // TLS with a self-signed certificate claiming an identity the TrafficTarget allows.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::URI(CLIENT_ID.try_into().unwrap()));
    let key = rcgen::KeyPair::generate().unwrap();
    let forged = params.self_signed(&key).unwrap();
    let attempt = tls_get(w.inbound, Some((&forged, &key)));
    assert!(
        !contains(&attempt.received, "HTTP/"),
        "a self-signed client certificate got an HTTP response: {attempt:?}"
    );
    assert!(
        attempt.error.is_some() || attempt.received.is_empty(),
        "{attempt:?}"
    );
    // It did reach the mesh's TLS listener: the server presented api-0's certificate.
    assert!(
        attempt.server_certs.iter().any(|c| contains(c, API_ID)),
        "the server did not present {API_ID}: {attempt:?}"
    );
    w.api
        .wait_for_stat(&listener, "ssl.fail_verify_error", Duration::from_secs(5));

    // TLS without any client certificate.
    let attempt = tls_get(w.inbound, None);
    assert!(
        !contains(&attempt.received, "HTTP/"),
        "a client without a certificate got an HTTP response: {attempt:?}"
    );
    assert!(
        attempt.error.is_some() || attempt.received.is_empty(),
        "{attempt:?}"
    );
    w.api
        .wait_for_stat(&listener, "ssl.fail_verify_no_cert", Duration::from_secs(5));

    // The mesh client still gets through.
    let r = w.client.request("GET", "api", "/");
    assert!(is_ok(&r), "{r:?}");
}

/// A secret's name and whether it carries a certificate with a private key.
fn decode_secret(any: &envoy_types::pb::google::protobuf::Any) -> (String, bool) {
    assert_eq!(any.type_url, SECRET_TYPE);
    let s = Secret::decode(any.value.as_slice()).unwrap();
    let has_key =
        matches!(&s.r#type, Some(secret::Type::TlsCertificate(c)) if c.private_key.is_some());
    (s.name, has_key)
}

#[test]
fn a_proxy_gets_only_its_own_secret() {
    let mesh = Mesh::builder(Ipv4Addr::new(127, 0, 34, 1))
        .access_mode(AccessMode::Strict)
        .client_sidecar(false)
        .file(
            "api.yaml",
            format!(
                "{}---\n{}",
                pod(
                    "api-0",
                    "api",
                    &[("app", "api")],
                    Ipv4Addr::new(127, 0, 34, 2)
                ),
                meshed_http_service("api", "api-0", Ipv4Addr::new(127, 0, 34, 2), 8080)
            ),
        )
        .start();
    // Both proxies' snapshots (and so both certificates) exist once the first push is out.
    wait_for(
        Duration::from_secs(10),
        || {
            mesh.log()
                .contains("published new configuration to 2 proxies")
        },
        "the first push",
    );
    // Everything client-0's Envoy would use, from its bootstrap.
    let bootstrap = mesh.bootstrap("client-0");
    let node = Node {
        id: bootstrap["node"]["id"].as_str().unwrap().to_owned(),
        cluster: bootstrap["node"]["cluster"].as_str().unwrap().to_owned(),
        ..Default::default()
    };
    // The bootstrap names the token's file; its content is what Envoy sends.
    let plugin = &bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"]["call_credentials"]
        [0]["from_plugin"]["typed_config"];
    assert_eq!(plugin["header_key"], "authorization");
    let authorization = format!(
        "{}{}",
        plugin["header_prefix"].as_str().unwrap(),
        mesh.token("client-0")
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let channel = runtime.block_on(mesh.xds_channel());
    let received = runtime.block_on(async move {
        let mut received: Vec<(String, bool)> = Vec::new();
        let quiet = Duration::from_millis(700);
        let wait = Duration::from_secs(5);
        let mut client = AggregatedDiscoveryServiceClient::new(channel);

        // State of the world.
        let sotw = |names: &[&str], version: &str, nonce: &str| DiscoveryRequest {
            node: Some(node.clone()),
            type_url: SECRET_TYPE.to_owned(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            version_info: version.to_owned(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(sotw(&[API_ID], "", "")).await.unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", authorization.parse().unwrap());
        let mut stream = client
            .stream_aggregated_resources(request)
            .await
            .unwrap()
            .into_inner();
        // Asking for api's secret alone is not answered at all.
        let answer = tokio::time::timeout(quiet, stream.message()).await;
        assert!(
            answer.is_err(),
            "sotw: answered a request for {API_ID}: {answer:?}"
        );
        // With its own name too: only its own.
        tx.send(sotw(&[API_ID, CLIENT_ID], "", "")).await.unwrap();
        let r = tokio::time::timeout(wait, stream.message())
            .await
            .expect("sotw: an answer for its own secret")
            .unwrap()
            .unwrap();
        let secrets: Vec<(String, bool)> = r.resources.iter().map(decode_secret).collect();
        assert_eq!(secrets, [(CLIENT_ID.to_owned(), true)], "sotw");
        received.extend(secrets);
        // A wildcard yields its own secrets (the trust bundle too), still never api's.
        tx.send(sotw(&["*"], &r.version_info, &r.nonce))
            .await
            .unwrap();
        let r = tokio::time::timeout(wait, stream.message())
            .await
            .expect("sotw: an answer to a wildcard")
            .unwrap()
            .unwrap();
        let names: BTreeSet<String> = r.resources.iter().map(|a| decode_secret(a).0).collect();
        assert_eq!(
            names,
            BTreeSet::from([TRUST_BUNDLE.to_owned(), CLIENT_ID.to_owned()]),
            "sotw wildcard"
        );
        received.extend(r.resources.iter().map(decode_secret));
        // ACK with api's name alone: nothing more.
        tx.send(sotw(&[API_ID], &r.version_info, &r.nonce))
            .await
            .unwrap();
        let answer = tokio::time::timeout(quiet, stream.message()).await;
        assert!(
            answer.is_err(),
            "sotw: answered {API_ID} after an ACK: {answer:?}"
        );

        // Incremental.
        let delta = |subscribe: &[&str], nonce: &str| DeltaDiscoveryRequest {
            node: Some(node.clone()),
            type_url: SECRET_TYPE.to_owned(),
            resource_names_subscribe: subscribe.iter().map(|n| (*n).to_owned()).collect(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(delta(&[API_ID], "")).await.unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", authorization.parse().unwrap());
        let mut stream = client
            .delta_aggregated_resources(request)
            .await
            .unwrap()
            .into_inner();
        // A missing name may be answered as removed (so Envoy stops waiting), never with data.
        let mut nonce = String::new();
        if let Ok(answer) = tokio::time::timeout(quiet, stream.message()).await {
            let r = answer.unwrap().unwrap();
            assert!(r.resources.is_empty(), "delta: sent {:?}", r.resources);
            nonce = r.nonce;
        }
        tx.send(delta(&[CLIENT_ID], &nonce)).await.unwrap();
        let r = tokio::time::timeout(wait, stream.message())
            .await
            .expect("delta: an answer for its own secret")
            .unwrap()
            .unwrap();
        let secrets: Vec<(String, bool)> = r
            .resources
            .iter()
            .map(|res| {
                assert_eq!(res.name, CLIENT_ID);
                decode_secret(res.resource.as_ref().unwrap())
            })
            .collect();
        assert_eq!(secrets, [(CLIENT_ID.to_owned(), true)], "delta");
        received.extend(secrets);
        received
    });
    assert!(
        received.iter().all(|(name, _)| name != API_ID),
        "{received:?}"
    );
    // Each stream that asks for api's secret is logged, once (sotw and delta: two).
    wait_for(
        Duration::from_secs(5),
        || {
            mesh.log()
                .lines()
                .filter(|l| l.contains("refused a secret request") && l.contains(API_ID))
                .count()
                == 2
        },
        "two refusals in the control plane's log",
    );
}

/// Serial numbers of the certificates for `spiffe_id` that `sidecar` holds now (admin
/// `/certs`). Empty when the admin interface does not answer.
fn serials(sidecar: &Sidecar, spiffe_id: &str) -> BTreeSet<String> {
    let Ok(r) = sidecar.admin_get("/certs") else {
        return BTreeSet::new();
    };
    let certs: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    let mut out = BTreeSet::new();
    for context in certs["certificates"].as_array().into_iter().flatten() {
        for cert in context["cert_chain"].as_array().into_iter().flatten() {
            let ours = cert["subject_alt_names"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|san| san["uri"] == spiffe_id);
            if let (true, Some(serial)) = (ours, cert["serial_number"].as_str()) {
                out.insert(serial.to_owned());
            }
        }
    }
    out
}

#[test]
fn certificates_rotate_under_load_without_failures() {
    let w = world(
        35,
        AccessMode::Strict,
        &["--cert-lifetime", "6s"],
        allow_client(),
        false,
    );
    settle(&w.client, is_ok, "client-0 to be allowed");
    // Envoy keeps upstream connections open, so one pooled connection could carry the whole
    // run and never handshake with a rotated certificate. With its health check failed, api-0
    // drain-closes: every response says `connection: close`, and every request of client-0
    // opens a new mTLS connection with whatever certificates both sides hold at that moment.
    let r = switchyard_e2e::mesh::http_request(
        w.api.admin,
        "POST",
        "admin",
        "/healthcheck/fail",
        &[],
        "",
    );
    assert_eq!(r.unwrap().status, 200);
    let listener = Sidecar::listener_stats(w.inbound);
    let handshakes_before = w
        .api
        .stats(&listener)
        .get("ssl.handshake")
        .copied()
        .unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, stop) = (w.client.clone(), stop.clone());
        thread::spawn(move || {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let r = client.request("GET", "api", "/");
                if is_ok(&r) {
                    ok += 1;
                } else {
                    failed.push(format!("{r:?}"));
                }
                thread::sleep(Duration::from_millis(5));
            }
            (ok, failed)
        })
    };
    let start = Instant::now();
    let mut server_seen: Vec<String> = Vec::new();
    let mut client_seen: Vec<String> = Vec::new();
    while start.elapsed() < Duration::from_secs(14) {
        for (sidecar, id, seen) in [
            (&w.api, API_ID, &mut server_seen),
            (&w.client, CLIENT_ID, &mut client_seen),
        ] {
            for serial in serials(sidecar, id) {
                if !seen.contains(&serial) {
                    seen.push(serial);
                }
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    let handshakes = w
        .api
        .stats(&listener)
        .get("ssl.handshake")
        .copied()
        .unwrap_or(0)
        .saturating_sub(handshakes_before);
    eprintln!(
        "{ok} requests; api-0 certificates {server_seen:?}; client-0 certificates {client_seen:?}; {handshakes} new handshakes on api-0's inbound listener"
    );
    assert!(
        failed.is_empty(),
        "{} failed of {}: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 100, "only {ok} requests in 14 s");
    assert!(
        handshakes * 2 > ok as u64,
        "only {handshakes} handshakes for {ok} requests: connections were reused"
    );
    // A change is a new serial: at least three serials means at least two rotations.
    assert!(
        server_seen.len() >= 3,
        "api-0's certificate changed {} times: {server_seen:?}",
        server_seen.len().saturating_sub(1)
    );
    assert!(
        client_seen.len() >= 3,
        "client-0's certificate changed {} times: {client_seen:?}",
        client_seen.len().saturating_sub(1)
    );
}

#[test]
fn permissive_mode_allows_everyone_over_mtls() {
    let w = world(36, AccessMode::Permissive, &[], Vec::new(), true);
    let intruder = w.intruder.as_ref().unwrap();
    settle(&w.client, is_ok, "client-0 to be allowed");
    settle(intruder, is_ok, "intruder-0 to be allowed");
    for _ in 0..10 {
        for sidecar in [&w.client, intruder] {
            let r = sidecar.request("GET", "api", "/");
            assert!(is_ok(&r), "{}: {r:?}", sidecar.pod);
        }
    }
    // Both clients originated TLS to api-0, and api-0's inbound listener terminated it.
    for sidecar in [&w.client, intruder] {
        sidecar.wait_for_stat(
            "cluster.demo/api|80.",
            "ssl.handshake",
            Duration::from_secs(5),
        );
    }
    let handshakes = w.api.wait_for_stat(
        &Sidecar::listener_stats(w.inbound),
        "ssl.handshake",
        Duration::from_secs(5),
    );
    assert!(handshakes >= 2, "{handshakes} handshakes for two clients");
    // Plaintext still reaches the application (clients outside the mesh keep working).
    let r = switchyard_e2e::mesh::http_get(w.inbound, "api", "/", &[]);
    assert!(is_ok(&r), "plaintext in permissive mode: {r:?}");
}

/// Reads what a TCP service behind the mesh says on a fresh connection through `sidecar`'s
/// outbound TCP listener (`podIP:<service port>`); empty when the connection is closed first.
fn tcp_read(sidecar: &Sidecar, port: u16) -> String {
    let Ok(mut conn) =
        TcpStream::connect_timeout(&SocketAddr::new(sidecar.ip, port), Duration::from_secs(2))
    else {
        return String::new();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}

#[test]
fn tcp_routes_open_and_close_a_tcp_port_live() {
    let ip = |host| Ipv4Addr::new(127, 0, 48, host);
    let db = Backend::tcp("db");
    let port = db.addr.port();
    let service = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: demo}}\nspec:\n  selector: {{app: db}}\n  ports: [{{name: tcp, port: 5432, targetPort: {port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: db-1, namespace: demo, labels: {{kubernetes.io/service-name: db}}}}\naddressType: IPv4\nports: [{{name: tcp, port: {port}}}]\nendpoints:\n- addresses: ['{}']\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: db-0, namespace: demo}}\n",
        pod("db-0", "db", &[("app", "db")], ip(2)),
        ip(2)
    );
    let mut mesh = Mesh::builder(ip(1))
        .access_mode(AccessMode::Strict)
        .file("db.yaml", service)
        .start();
    let _server = mesh.sidecar("db-0");
    let client = mesh.client();
    wait_for(
        Duration::from_secs(10),
        || TcpStream::connect(SocketAddr::new(ip(2).into(), port)).is_ok(),
        "db-0's inbound listener",
    );
    // Strict, no TrafficTarget: the connection is closed without a byte from the database.
    for _ in 0..5 {
        assert_eq!(tcp_read(&client, 5432), "");
    }

    let target = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {name: db-port, namespace: demo}\nspec:\n  matches: {ports: []}\n---\napiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: db-access, namespace: demo}\nspec:\n  destination: {kind: ServiceAccount, name: db, namespace: demo}\n  rules: [{kind: TCPRoute, name: db-port}]\n  sources: [{kind: ServiceAccount, name: client, namespace: demo}]\n";
    let written = Instant::now();
    mesh.write("db-target.yaml", target);
    let took = elapsed_until(
        written,
        PROPAGATION,
        || tcp_read(&client, 5432) == "db\n",
        "the TCPRoute to open the port",
    );
    println!("tcp allow took {took:?}");

    std::fs::remove_file(mesh.path("db-target.yaml")).unwrap();
    let removed = Instant::now();
    let took = elapsed_until(
        removed,
        PROPAGATION,
        || tcp_read(&client, 5432).is_empty(),
        "the port to close again",
    );
    println!("tcp deny took {took:?}");
    drop(db);
}
