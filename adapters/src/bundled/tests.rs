use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType},
            },
            listener::v3::{Filter, Listener, filter},
            rbac::v3::rbac::Action,
            route::v3::{RouteConfiguration, route},
        },
        extensions::filters::{
            http::rbac::v3::RbacPerRoute,
            network::{
                http_connection_manager::v3::{HttpConnectionManager, HttpFilter, http_filter},
                rbac::v3::Rbac as NetworkRbac,
                tcp_proxy::v3::{TcpProxy, UpstreamConnectMode},
            },
        },
    },
    google::protobuf::Any,
};
use prost::{Message, Name};

use super::*;
use crate::{
    envoy::{self, CLUSTER_TYPE_URL, Capture, LISTENER_TYPE_URL, ROUTE_TYPE_URL},
    model::{
        AccessMode, Authorization, Cluster as ModelCluster, DataPlane, Endpoint, Identity,
        InboundRoute, OutboundPort, OutboundService, Protocol, ProxyId, RouteStatName,
        UnknownDataPlane, WeightedCluster,
    },
    test_support::{
        self, canary_and_split, http_match, inbound, local_options, mesh, open_to_all, plain_port,
        plain_service, port, route, rule,
    },
};

// === Utils ===

const NS: &str = "shop";

fn backend(svc: &str, port: u16, weight: u32) -> WeightedCluster {
    test_support::backend(NS, svc, port, weight)
}

fn service(name: &str, ip: [u8; 4], ports: Vec<OutboundPort>) -> Arc<OutboundService> {
    test_support::service(NS, name, Some(IpAddr::from(ip)), ports)
}

/// A cluster with a meshed endpoint and a plain one, so that mTLS and plaintext both occur.
fn cluster(svc: &str, port: u16, protocol: Protocol, last_octet: u8) -> Arc<ModelCluster> {
    let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(10, 0, last_octet, n));
    let endpoints = vec![
        Endpoint {
            address: (ip(1), 8000 + port % 1000).into(),
            identity: Some(Identity::new(NS, svc)),
        },
        Endpoint {
            address: (ip(2), 8000 + port % 1000).into(),
            identity: None,
        },
    ];
    test_support::cluster(NS, svc, port, protocol, endpoints)
}

/// A client that reaches web (split 90/10 on port 80 behind a canary match, plus 8080), a
/// gRPC service, a TCP database split over two backends and a TCP cache with one.
fn client() -> ProxyConfig {
    let web = service(
        "web",
        [10, 96, 0, 10],
        vec![
            port(
                80,
                Protocol::Http,
                canary_and_split(
                    NS,
                    vec![
                        http_match(Some("/api/.*"), &["GET", "HEAD"], &[("x-canary", "yes")]),
                        http_match(None, &["POST"], &[]),
                    ],
                ),
            ),
            plain_port(NS, "web", 8080, Protocol::Http),
        ],
    );
    let grpc = plain_service(
        NS,
        "grpc",
        Some(IpAddr::from([10, 96, 0, 11])),
        9000,
        Protocol::Http2,
    );
    let db = service(
        "db",
        [10, 96, 0, 12],
        vec![port(
            5432,
            Protocol::Tcp,
            vec![route(
                "shop/db-split",
                vec![],
                vec![backend("db-a", 5432, 3), backend("db-b", 5432, 1)],
            )],
        )],
    );
    let cache = plain_service(
        NS,
        "cache",
        Some(IpAddr::from([10, 96, 0, 13])),
        6379,
        Protocol::Unknown,
    );
    // Headless: an intercepted proxy reaches its meshed Pod by the Pod's own address.
    let pods = test_support::service(
        NS,
        "pods",
        None,
        vec![plain_port(NS, "pods", 7071, Protocol::Tcp)],
    );
    let clusters = [
        cluster("web-v1", 80, Protocol::Http, 1),
        cluster("web-v2", 80, Protocol::Http, 2),
        cluster("web", 8080, Protocol::Http, 3),
        cluster("grpc", 9000, Protocol::Http2, 4),
        cluster("db-a", 5432, Protocol::Tcp, 5),
        cluster("db-b", 5432, Protocol::Tcp, 6),
        cluster("cache", 6379, Protocol::Unknown, 7),
        cluster("pods", 7071, Protocol::Tcp, 8),
    ];
    test_support::proxy(
        NS,
        "client-0",
        "client",
        [web, grpc, db, cache, pods],
        clusters,
        Vec::new(),
    )
}

/// A server: HTTP ports with TrafficTarget rules carrying matches (path, methods, headers,
/// host), an HTTP/2 port open to one source, a denied HTTP port, a TCP port allowed to two
/// sources and a TCP port that nobody may use.
fn server() -> ProxyConfig {
    let caller = Identity::new(NS, "client");
    let admin = Identity::new("ops", "admin");
    let inbound = vec![
        inbound(
            8080,
            Protocol::Http,
            Authorization::Allow(vec![
                rule(
                    "shop/client-to-web",
                    vec![caller.clone()],
                    vec![
                        http_match(Some("/api/.*"), &["GET"], &[]),
                        http_match(
                            None,
                            &["POST", "PUT"],
                            &[("x-tenant", "a|b"), ("host", "web.*")],
                        ),
                    ],
                ),
                rule("ops/admin", vec![admin.clone()], vec![]),
            ]),
        ),
        inbound(
            9090,
            Protocol::Http2,
            Authorization::Allow(vec![rule("shop/grpc", vec![caller.clone()], vec![])]),
        ),
        inbound(7000, Protocol::Http, Authorization::Allow(vec![])),
        inbound(
            3306,
            Protocol::Tcp,
            Authorization::Allow(vec![rule("shop/db", vec![caller, admin], vec![])]),
        ),
        inbound(11211, Protocol::Tcp, Authorization::Allow(vec![])),
    ];
    // Port 8080's named matches, counted per route (a `stat_prefix` the proxy honours).
    let mut inbound = inbound;
    inbound[0].routes = vec![
        InboundRoute {
            name: RouteStatName::new("web.routes", "books"),
            http_match: http_match(Some("/api/books/.*"), &["GET"], &[]),
        },
        InboundRoute {
            name: RouteStatName::new("web.routes", "tenant a"),
            http_match: http_match(None, &[], &[("x-tenant", "a")]),
        },
    ];
    ProxyConfig {
        proxy: ProxyId {
            namespace: NS.into(),
            pod: "web-0".into(),
        },
        identity: Identity::new(NS, "web"),
        inbound,
        ..client()
    }
}

/// [`local_options`] for a Pod whose traffic is redirected through the proxy.
fn intercepted(mtls: bool) -> EnvoyOptions {
    let opts = local_options(mtls);
    EnvoyOptions {
        app_ip: opts.bind_ip,
        capture: Capture::Intercepted {
            outbound: 15001,
            inbound: 15006,
        },
        ..opts
    }
}

/// Every rich configuration: client, strict server and permissive server, with and without
/// mTLS, addressed (local mode) and intercepted.
fn rich() -> Vec<(&'static str, ProxyConfig, MeshSettings, EnvoyOptions)> {
    let mut out = Vec::new();
    for mtls in [true, false] {
        out.push((
            "client",
            client(),
            MeshSettings::default(),
            local_options(mtls),
        ));
        out.push((
            "strict server",
            server(),
            MeshSettings::default(),
            local_options(mtls),
        ));
        out.push((
            "permissive server",
            open_to_all(server()),
            mesh(AccessMode::Permissive),
            local_options(mtls),
        ));
        out.push((
            "intercepted client",
            client(),
            MeshSettings::default(),
            intercepted(mtls),
        ));
        out.push((
            "intercepted IPv6 client",
            client(),
            MeshSettings::default(),
            EnvoyOptions {
                bind_ip: "fd00::5".parse().unwrap(),
                app_ip: "fd00::5".parse().unwrap(),
                ..intercepted(mtls)
            },
        ));
        out.push((
            "intercepted strict server",
            server(),
            MeshSettings::default(),
            intercepted(mtls),
        ));
        out.push((
            "intercepted permissive server",
            open_to_all(server()),
            mesh(AccessMode::Permissive),
            intercepted(mtls),
        ));
    }
    out
}

fn shared(out: &Output) -> Output<Arc<Resource>> {
    Output {
        resources: out.resources.iter().cloned().map(Arc::new).collect(),
        warnings: out.warnings.clone(),
    }
}

fn find<'a>(out: &'a Output, type_url: &str, name: &str) -> &'a Resource {
    out.resources
        .iter()
        .find(|r| r.type_url == type_url && r.name == name)
        .unwrap_or_else(|| panic!("no {type_url} {name}"))
}

/// The Envoy output of `proxy` with one resource decoded as `M`, changed by `change`, and
/// re-encoded; then filtered by a fresh bundled adapter. Returns the filtered output and the
/// names of the resources it left out.
fn with_changed<M: Message + Default + Name>(
    proxy: &ProxyConfig,
    type_url: &str,
    name: &str,
    change: impl FnOnce(&mut M),
) -> (Output<Arc<Resource>>, Vec<String>) {
    let mut out = envoy::compile(proxy, &MeshSettings::default(), &local_options(true));
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let target = out
        .resources
        .iter_mut()
        .find(|r| r.type_url == type_url && r.name == name)
        .unwrap_or_else(|| panic!("no {type_url} {name}"));
    let mut message = M::decode(target.resource.value.as_slice()).unwrap();
    change(&mut message);
    target.resource.value = message.encode_to_vec();
    let before: Vec<String> = out.resources.iter().map(|r| r.name.clone()).collect();
    let filtered = BundledAdapter::new().filter(shared(&out));
    let after: Vec<&str> = filtered.resources.iter().map(|r| r.name.as_str()).collect();
    let mut dropped = before;
    for name in after {
        let i = dropped.iter().position(|n| n == name).unwrap();
        dropped.remove(i);
    }
    (filtered, dropped)
}

fn typed<M: Message + Default>(config: &Option<filter::ConfigType>) -> M {
    match config {
        Some(filter::ConfigType::TypedConfig(any)) => M::decode(any.value.as_slice()).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

// === Tests ===

#[test]
fn rich_configurations_pass_unchanged() {
    let mut nested = String::new();
    for (what, proxy, mesh, opts) in rich() {
        let envoy = envoy::compile(&proxy, &mesh, &opts);
        let bundled = compile(&proxy, &mesh, &opts);
        assert!(
            bundled.warnings.is_empty(),
            "{what}: {:?}",
            bundled.warnings
        );
        assert_eq!(bundled, envoy, "{what}");
        for r in &envoy.resources {
            assert_eq!(check(r), Ok(()), "{what}");
            // Nested typed configs carry their type URL verbatim.
            nested.push_str(&String::from_utf8_lossy(&r.resource.value));
        }
    }
    // The configurations exercise every typed config the Envoy adapter emits.
    for t in test_support::NESTED_TYPES {
        assert!(nested.contains(t), "no {t} in the rich configurations");
    }
}

#[test]
fn secrets_pass() {
    let mesh = MeshSettings::default();
    let secrets = envoy::secrets(
        &Identity::new(NS, "web"),
        &mesh,
        "-----BEGIN CERTIFICATE-----\n",
        "-----BEGIN PRIVATE KEY-----\n",
        "-----BEGIN CERTIFICATE-----\n",
    );
    assert_eq!(secrets.len(), 2);
    for s in &secrets {
        assert_eq!(check(s), Ok(()), "{}", s.name);
    }
}

#[test]
fn an_unknown_network_filter_drops_its_listener() {
    let (out, dropped) =
        with_changed::<Listener>(&server(), LISTENER_TYPE_URL, "inbound|3306", |l| {
            l.filter_chains[0].filters.insert(
                2,
                Filter {
                    name: "envoy.filters.network.foo".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(Any {
                        type_url: "type.googleapis.com/envoy.extensions.filters.network.foo.v3.Foo"
                            .into(),
                        value: Vec::new(),
                    })),
                },
            );
        });
    assert_eq!(dropped, ["inbound|3306"]);
    assert_eq!(
        out.warnings,
        [
            "listener inbound|3306: filter_chains[0].filters[2].typed_config: only \
          http_connection_manager, tcp_proxy, rbac, connection_limit and direct_response \
          network filters are supported"
        ]
    );
}

#[test]
fn an_unknown_http_filter_drops_its_listener() {
    let (out, dropped) =
        with_changed::<Listener>(&client(), LISTENER_TYPE_URL, "outbound_http", |l| {
            let f = &mut l.filter_chains[0].filters[1];
            let mut hcm: HttpConnectionManager = typed(&f.config_type);
            hcm.http_filters.insert(
                0,
                HttpFilter {
                    name: "envoy.filters.http.fault".into(),
                    config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                        type_url:
                            "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
                                .into(),
                        value: Vec::new(),
                    })),
                    ..Default::default()
                },
            );
            f.config_type = Some(filter::ConfigType::TypedConfig(any(&hcm)));
        });
    assert_eq!(
        dropped,
        ["outbound_http"],
        "the listener, not the route configuration"
    );
    assert_eq!(
        out.warnings,
        [
            "listener outbound_http: filter_chains[0].filters[1].typed_config.http_filters[0].\
          typed_config: only the rbac and router HTTP filters are supported"
        ]
    );
}

#[test]
fn an_unsupported_cluster_type_drops_the_cluster() {
    let (out, dropped) =
        with_changed::<Cluster>(&client(), CLUSTER_TYPE_URL, "shop/web-v1|80", |c| {
            c.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
        });
    assert_eq!(dropped, ["shop/web-v1|80"], "its endpoints stay");
    assert_eq!(
        out.warnings,
        ["cluster shop/web-v1|80: type: only STATIC, EDS and ORIGINAL_DST clusters are supported"]
    );
}

#[test]
fn deny_rbac_drops_the_listener_or_route_configuration() {
    let (out, dropped) =
        with_changed::<Listener>(&server(), LISTENER_TYPE_URL, "inbound|3306", |l| {
            let f = &mut l.filter_chains[0].filters[1];
            let mut rbac: NetworkRbac = typed(&f.config_type);
            rbac.rules.as_mut().unwrap().action = Action::Deny as i32;
            f.config_type = Some(filter::ConfigType::TypedConfig(any(&rbac)));
        });
    assert_eq!(dropped, ["inbound|3306"]);
    assert_eq!(
        out.warnings,
        [
            "listener inbound|3306: filter_chains[0].filters[1].typed_config.rules.action: only \
          ALLOW is supported"
        ]
    );

    let (out, dropped) =
        with_changed::<RouteConfiguration>(&server(), ROUTE_TYPE_URL, "inbound|8080", |r| {
            let config = r.virtual_hosts[0]
                .typed_per_filter_config
                .get_mut("envoy.filters.http.rbac")
                .unwrap();
            let mut per_route = RbacPerRoute::decode(config.value.as_slice()).unwrap();
            let rules = per_route.rbac.as_mut().unwrap().rules.as_mut().unwrap();
            assert!(!rules.policies.is_empty(), "the port has grants");
            rules.action = Action::Deny as i32;
            *config = any(&per_route);
        });
    assert_eq!(dropped, ["inbound|8080"]);
    assert_eq!(
        out.warnings,
        [
            "route configuration inbound|8080: virtual_hosts[0].typed_per_filter_config\
          [\"envoy.filters.http.rbac\"].rbac.rules.action: only ALLOW is supported"
        ]
    );
}

#[test]
fn an_unsupported_retry_condition_drops_the_routes() {
    let (out, dropped) =
        with_changed::<RouteConfiguration>(&client(), ROUTE_TYPE_URL, "outbound_http", |r| {
            let Some(route::Action::Route(action)) = &mut r.virtual_hosts[1].routes[0].action
            else {
                panic!("a route action");
            };
            action.retry_policy.as_mut().unwrap().retry_on =
                "connect-failure, retriable-4xx".into();
        });
    assert_eq!(dropped, ["outbound_http"]);
    assert_eq!(
        out.warnings,
        [
            "route configuration outbound_http: virtual_hosts[1].routes[0].route.retry_policy.\
          retry_on: only connect-failure, refused-stream, reset-before-request, 5xx and \
          gateway-error are supported"
        ]
    );
}

#[test]
fn every_supported_retry_condition_passes() {
    let (out, dropped) =
        with_changed::<RouteConfiguration>(&client(), ROUTE_TYPE_URL, "outbound_http", |r| {
            let Some(route::Action::Route(action)) = &mut r.virtual_hosts[0].routes[0].action
            else {
                panic!("a route action");
            };
            action.retry_policy.as_mut().unwrap().retry_on = RETRY_ON.join(",");
        });
    assert!(
        dropped.is_empty() && out.warnings.is_empty(),
        "{:?}",
        out.warnings
    );
}

#[test]
fn a_field_the_proxy_ignores_drops_its_resource() {
    // An access log the proxy does not write (a file) would silently never be written.
    let (out, dropped) = with_changed::<Listener>(
        &client(),
        LISTENER_TYPE_URL,
        "outbound_http",
        |l| {
            let f = &mut l.filter_chains[0].filters[1];
            let mut hcm: HttpConnectionManager = typed(&f.config_type);
            hcm.access_log.push(
                envoy_types::pb::envoy::config::accesslog::v3::AccessLog {
                    name: "envoy.access_loggers.file".to_owned(),
                    config_type: Some(
                        envoy_types::pb::envoy::config::accesslog::v3::access_log::ConfigType::TypedConfig(
                            envoy_types::pb::google::protobuf::Any {
                                type_url: "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog".to_owned(),
                                value: Vec::new(),
                            },
                        ),
                    ),
                    ..Default::default()
                },
            );
            f.config_type = Some(filter::ConfigType::TypedConfig(any(&hcm)));
        },
    );
    assert_eq!(dropped, ["outbound_http"]);
    assert_eq!(
        out.warnings,
        [
            "listener outbound_http: filter_chains[0].filters[1].typed_config.access_log[0].\
          typed_config: only envoy.access_loggers.http_grpc (HttpGrpcAccessLogConfig) is \
          supported"
        ]
    );

    let (out, _) = with_changed::<Cluster>(&client(), CLUSTER_TYPE_URL, "shop/grpc|9000", |c| {
        c.dns_lookup_family = 1;
    });
    assert_eq!(
        out.warnings,
        ["cluster shop/grpc|9000: dns_lookup_family: not supported by the bundled proxy"]
    );
}

#[test]
fn network_rbac_only_goes_right_before_tcp_proxy() {
    let (out, dropped) =
        with_changed::<Listener>(&server(), LISTENER_TYPE_URL, "inbound|3306", |l| {
            l.filter_chains[0].filters.swap(1, 2);
        });
    assert_eq!(dropped, ["inbound|3306"]);
    assert_eq!(
        out.warnings,
        [
            "listener inbound|3306: filter_chains[0].filters[2]: nothing may follow a terminal \
             filter"
        ]
    );
}

#[test]
fn the_upstream_connect_may_wait_for_the_handshake_but_not_for_data() {
    // As compiled: the proxy authorizes after the handshake and connects only then, too.
    let (out, dropped) =
        with_changed::<Listener>(&server(), LISTENER_TYPE_URL, "inbound|3306", |_| {});
    assert!(dropped.is_empty(), "{:?}", out.warnings);
    // It does not wait for the client's first byte.
    let w = warning_of::<Listener>(&server(), LISTENER_TYPE_URL, "inbound|3306", |l| {
        let f = &mut l.filter_chains[0].filters[2];
        let mut tcp: TcpProxy = typed(&f.config_type);
        assert_eq!(
            tcp.upstream_connect_mode,
            UpstreamConnectMode::OnDownstreamTlsHandshake as i32
        );
        tcp.upstream_connect_mode = UpstreamConnectMode::OnDownstreamData as i32;
        f.config_type = Some(filter::ConfigType::TypedConfig(any(&tcp)));
    });
    assert!(
        w.ends_with(
            "filters[2].typed_config.upstream_connect_mode: only IMMEDIATE and \
             ON_DOWNSTREAM_TLS_HANDSHAKE are supported"
        ),
        "{w}"
    );
}

#[test]
fn unknown_types_and_mismatched_names_are_rejected() {
    let unknown = Resource {
        type_url: "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        name: "x".into(),
        resource: Any {
            type_url: "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig".into(),
            value: Vec::new(),
        },
        references: Vec::new(),
    };
    assert_eq!(
        check(&unknown).unwrap_err().to_string(),
        "resource x: type_url: type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig is \
         not a type the bundled proxy subscribes to"
    );
    let out = envoy::compile(&client(), &MeshSettings::default(), &local_options(false));
    let mut renamed = find(&out, CLUSTER_TYPE_URL, "shop/db-a|5432").clone();
    renamed.name = "shop/other|5432".into();
    assert_eq!(
        check(&renamed).unwrap_err().field,
        "name",
        "a resource must be named as its body"
    );
}

#[test]
fn shared_resources_stay_shared_and_are_checked_once() {
    let mut adapter = BundledAdapter::new();
    let proxy = client();
    let mesh = MeshSettings::default();
    let first = adapter.compile_shared(&proxy, &mesh, &local_options(true));
    let (_, _, verdicts) = adapter.cache_len();
    assert_eq!(verdicts, first.resources.len());
    let second = adapter.compile_shared(&proxy, &mesh, &local_options(true));
    let envoy = adapter
        .envoy()
        .compile_shared(&proxy, &mesh, &local_options(true));
    for ((a, b), e) in first
        .resources
        .iter()
        .zip(&second.resources)
        .zip(&envoy.resources)
    {
        if a.type_url == CLUSTER_TYPE_URL
            || a.name == envoy::OUTBOUND_HTTP && a.type_url == ROUTE_TYPE_URL
        {
            assert!(Arc::ptr_eq(a, b), "{} is shared between compiles", a.name);
            assert!(Arc::ptr_eq(a, e), "{} is shared with Envoy proxies", a.name);
        }
    }
    // Only the listeners, built anew per compile, were checked again.
    let listeners = first
        .resources
        .iter()
        .filter(|r| r.type_url == LISTENER_TYPE_URL)
        .count();
    assert!(listeners > 0);
    assert_eq!(adapter.cache_len().2, verdicts + listeners);

    drop((first, second, envoy, proxy));
    // The Envoy cache lets go of whole cluster maps and route configurations first, and of
    // the pieces they held on the next round.
    adapter.evict_unused();
    adapter.evict_unused();
    assert_eq!(
        adapter.cache_len(),
        (0, 0, 0),
        "nothing is held by the caches alone"
    );
}

#[test]
fn a_dropped_shared_resource_is_reported_on_every_compile() {
    let out = envoy::compile(&client(), &MeshSettings::default(), &local_options(true));
    let mut bad = find(&out, CLUSTER_TYPE_URL, "shop/cache|6379").clone();
    let mut cluster = Cluster::decode(bad.resource.value.as_slice()).unwrap();
    cluster.alt_stat_name = "cache".into();
    bad.resource.value = cluster.encode_to_vec();
    let bad = Arc::new(bad);
    let mut adapter = BundledAdapter::new();
    let expected = ["cluster shop/cache|6379: alt_stat_name: not supported by the bundled proxy"];
    for _ in 0..2 {
        let filtered = adapter.filter(Output {
            resources: vec![bad.clone()],
            warnings: vec!["earlier".into()],
        });
        assert!(filtered.resources.is_empty());
        assert_eq!(filtered.warnings, ["earlier", expected[0]]);
    }
    assert_eq!(adapter.cache_len().2, 1);
}

#[test]
fn data_planes_have_lower_case_names() {
    for d in DataPlane::ALL {
        assert_eq!(d.as_str().parse::<DataPlane>(), Ok(d));
        assert_eq!(d.to_string(), d.as_str());
    }
    assert_eq!("bundled".parse(), Ok(DataPlane::Bundled));
    assert_eq!(
        "Bundled".parse::<DataPlane>(),
        Err(UnknownDataPlane("Bundled".into()))
    );
    assert_eq!(
        UnknownDataPlane("x".into()).to_string(),
        "\"x\" is not a data plane (envoy or bundled)"
    );
    assert_eq!(MeshSettings::default().data_plane, DataPlane::Envoy);
}

/// The one warning of [`with_changed`], which must have dropped exactly `name`.
fn warning_of<M: Message + Default + Name>(
    proxy: &ProxyConfig,
    type_url: &str,
    name: &str,
    change: impl FnOnce(&mut M),
) -> String {
    let (out, dropped) = with_changed(proxy, type_url, name, change);
    assert_eq!(dropped, [name], "{:?}", out.warnings);
    assert_eq!(out.warnings.len(), 1);
    out.warnings[0].clone()
}

#[test]
fn network_rbac_is_one_filter_followed_by_tcp_proxy() {
    let rbac = |l: &Listener| l.filter_chains[0].filters[1].clone();
    let w = warning_of::<Listener>(&server(), LISTENER_TYPE_URL, "inbound|3306", |l| {
        let f = rbac(l);
        l.filter_chains[0].filters.insert(1, f);
    });
    assert!(
        w.ends_with("filters[2]: one network RBAC filter per chain is supported"),
        "{w}"
    );
    let w = warning_of::<Listener>(&server(), LISTENER_TYPE_URL, "inbound|3306", |l| {
        l.filter_chains[0].filters.pop();
    });
    assert!(
        w.ends_with(
            "filters[1]: the last filter must be http_connection_manager, tcp_proxy or \
             direct_response"
        ),
        "{w}"
    );
}

#[test]
fn warnings_name_the_field_at_fault() {
    use envoy_types::pb::envoy::{
        config::{
            cluster::v3::cluster::LbPolicy,
            core::v3::{address, config_source},
            endpoint::v3::{ClusterLoadAssignment, lb_endpoint},
            route::v3::{RedirectAction, header_matcher},
        },
        extensions::{
            filters::network::http_connection_manager::v3::http_connection_manager::CodecType,
            transport_sockets::tls::v3::{
                CertificateValidationContext, DownstreamTlsContext, UpstreamTlsContext,
                common_tls_context::ValidationContextType,
            },
        },
    };
    let proxy = server();
    let field = |w: String| {
        let rest = w.split_once(": ").unwrap().1;
        rest.split_once(": ").unwrap().0.to_owned()
    };

    let w = warning_of::<Cluster>(&proxy, CLUSTER_TYPE_URL, "shop/web|8080", |c| {
        c.lb_policy = LbPolicy::RingHash as i32;
    });
    assert_eq!(
        w,
        "cluster shop/web|8080: lb_policy: only ROUND_ROBIN and LEAST_REQUEST are supported"
    );
    let w = warning_of::<Cluster>(&proxy, CLUSTER_TYPE_URL, "shop/web|8080", |c| {
        let eds = c.eds_cluster_config.as_mut().unwrap();
        eds.eds_config.as_mut().unwrap().config_source_specifier = Some(
            config_source::ConfigSourceSpecifier::PathConfigSource(Default::default()),
        );
    });
    assert_eq!(
        w,
        "cluster shop/web|8080: eds_cluster_config.eds_config: only ADS is supported"
    );
    let w = warning_of::<Cluster>(&proxy, CLUSTER_TYPE_URL, "shop/web|8080", |c| {
        let socket = c.transport_socket_matches[0]
            .transport_socket
            .as_mut()
            .unwrap();
        let Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any,
            ),
        ) = &mut socket.config_type
        else {
            panic!("a typed config");
        };
        let mut tls = UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
        tls.sni = "web".into();
        any.value = tls.encode_to_vec();
    });
    assert_eq!(
        field(w),
        "transport_socket_matches[0].transport_socket.typed_config.sni"
    );
    let w = warning_of::<Cluster>(&proxy, CLUSTER_TYPE_URL, "shop/web|8080", |c| {
        c.outlier_detection.as_mut().unwrap().enforcing_success_rate =
            Some(envoy_types::pb::google::protobuf::UInt32Value { value: 100 });
    });
    assert_eq!(field(w), "outlier_detection.enforcing_success_rate");

    let endpoint_type = envoy::ENDPOINT_TYPE_URL;
    let w = warning_of::<ClusterLoadAssignment>(&proxy, endpoint_type, "shop/web|8080", |c| {
        // The proxy leaves unhealthy endpoints out, as Envoy does; a weight of zero it refuses.
        c.endpoints[0].lb_endpoints[0].load_balancing_weight =
            Some(envoy_types::pb::google::protobuf::UInt32Value { value: 0 });
    });
    assert_eq!(
        field(w),
        "endpoints[0].lb_endpoints[0].load_balancing_weight"
    );
    let w = warning_of::<ClusterLoadAssignment>(&proxy, endpoint_type, "shop/web|8080", |c| {
        let Some(lb_endpoint::HostIdentifier::Endpoint(e)) =
            &mut c.endpoints[0].lb_endpoints[1].host_identifier
        else {
            panic!("an endpoint");
        };
        let Some(address::Address::SocketAddress(s)) = &mut e.address.as_mut().unwrap().address
        else {
            panic!("a socket address");
        };
        s.address = "web.example".into();
    });
    assert_eq!(
        w,
        "cluster load assignment shop/web|8080: endpoints[0].lb_endpoints[1].endpoint.address.\
         socket_address.address: must be an IP address"
    );

    let w = warning_of::<Listener>(&proxy, LISTENER_TYPE_URL, "inbound|8080", |l| {
        let socket = l.filter_chains[0].transport_socket.as_mut().unwrap();
        let Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any,
            ),
        ) = &mut socket.config_type
        else {
            panic!("a typed config");
        };
        let mut tls = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
        tls.common_tls_context
            .as_mut()
            .unwrap()
            .validation_context_type = Some(ValidationContextType::ValidationContext(
            CertificateValidationContext::default(),
        ));
        any.value = tls.encode_to_vec();
    });
    assert_eq!(
        w,
        "listener inbound|8080: filter_chains[0].transport_socket.typed_config.\
         common_tls_context.validation_context: the trust bundle must come from SDS"
    );
    let w = warning_of::<Listener>(&proxy, LISTENER_TYPE_URL, "inbound|8080", |l| {
        let f = &mut l.filter_chains[0].filters[1];
        let mut hcm: HttpConnectionManager = typed(&f.config_type);
        hcm.codec_type = CodecType::Http2 as i32;
        f.config_type = Some(filter::ConfigType::TypedConfig(any(&hcm)));
    });
    assert_eq!(
        field(w),
        "filter_chains[0].filters[1].typed_config.codec_type"
    );

    let client = client();
    let w = warning_of::<RouteConfiguration>(&client, ROUTE_TYPE_URL, "outbound_http", |r| {
        r.virtual_hosts[0].routes[0].action =
            Some(route::Action::Redirect(RedirectAction::default()));
    });
    assert_eq!(field(w), "virtual_hosts[0].routes[0].redirect");
    let w = warning_of::<RouteConfiguration>(&client, ROUTE_TYPE_URL, "outbound_http", |r| {
        let headers = &mut r.virtual_hosts[1].routes[0]
            .r#match
            .as_mut()
            .unwrap()
            .headers;
        // The proxy implements `ignore_case`; it refuses `treat_missing_header_as_empty`.
        assert!(matches!(
            headers[0].header_match_specifier,
            Some(header_matcher::HeaderMatchSpecifier::StringMatch(_))
        ));
        headers[0].treat_missing_header_as_empty = true;
    });
    assert_eq!(
        field(w),
        "virtual_hosts[1].routes[0].match.headers[0].treat_missing_header_as_empty"
    );
    let w = warning_of::<RouteConfiguration>(&client, ROUTE_TYPE_URL, "outbound_http", |r| {
        let Some(route::Action::Route(action)) = &mut r.virtual_hosts[0].routes[0].action else {
            panic!("a route action");
        };
        action.prefix_rewrite = "/v2/".into();
    });
    assert_eq!(field(w), "virtual_hosts[0].routes[0].route.prefix_rewrite");
}

#[test]
fn the_bounds_on_peers_pass_and_what_the_proxy_does_not_bound_drops() {
    use envoy_types::pb::{
        envoy::{
            config::core::v3::HttpProtocolOptions,
            extensions::filters::network::connection_limit::v3::ConnectionLimit,
        },
        google::protobuf::Duration as PbDuration,
    };
    // As compiled: the connection limit, the HCM's three timeouts and the TCP idle timeout.
    for (proxy, name) in [(client(), "outbound_http"), (server(), "inbound|3306")] {
        let (out, dropped) = with_changed::<Listener>(&proxy, LISTENER_TYPE_URL, name, |l| {
            assert_eq!(
                l.filter_chains[0].filters[0].name,
                "envoy.filters.network.connection_limit"
            );
        });
        assert!(dropped.is_empty(), "{:?}", out.warnings);
    }
    let second = PbDuration {
        seconds: 1,
        nanos: 0,
    };

    let limit = |l: &mut Listener, change: &dyn Fn(&mut ConnectionLimit)| {
        let f = &mut l.filter_chains[0].filters[0];
        let mut limit: ConnectionLimit = typed(&f.config_type);
        change(&mut limit);
        f.config_type = Some(filter::ConfigType::TypedConfig(any(&limit)));
    };
    let w = warning_of::<Listener>(&client(), LISTENER_TYPE_URL, "outbound_http", |l| {
        limit(l, &|c| c.delay = Some(second));
    });
    assert_eq!(
        w,
        "listener outbound_http: filter_chains[0].filters[0].typed_config.delay: not supported \
         by the bundled proxy"
    );
    let w = warning_of::<Listener>(&client(), LISTENER_TYPE_URL, "outbound_http", |l| {
        limit(l, &|c| c.max_connections = None);
    });
    assert_eq!(
        w,
        "listener outbound_http: filter_chains[0].filters[0].typed_config.max_connections: is \
         required, and at least 1"
    );
    let w = warning_of::<Listener>(&client(), LISTENER_TYPE_URL, "outbound_http", |l| {
        let f = l.filter_chains[0].filters[0].clone();
        l.filter_chains[0].filters.insert(1, f);
    });
    assert!(
        w.ends_with("filters[1]: one connection limit per chain is supported"),
        "{w}"
    );

    let w = warning_of::<Listener>(&client(), LISTENER_TYPE_URL, "outbound_http", |l| {
        let f = &mut l.filter_chains[0].filters[1];
        let mut hcm: HttpConnectionManager = typed(&f.config_type);
        hcm.common_http_protocol_options = Some(HttpProtocolOptions {
            max_connection_duration: Some(second),
            ..hcm.common_http_protocol_options.unwrap()
        });
        f.config_type = Some(filter::ConfigType::TypedConfig(any(&hcm)));
    });
    assert_eq!(
        w,
        "listener outbound_http: filter_chains[0].filters[1].typed_config.\
         common_http_protocol_options.max_connection_duration: not supported by the bundled proxy"
    );
    let w = warning_of::<Listener>(&server(), LISTENER_TYPE_URL, "inbound|3306", |l| {
        let f = &mut l.filter_chains[0].filters[2];
        let mut tcp: TcpProxy = typed(&f.config_type);
        tcp.downstream_idle_timeout = Some(second);
        f.config_type = Some(filter::ConfigType::TypedConfig(any(&tcp)));
    });
    assert_eq!(
        w,
        "listener inbound|3306: filter_chains[0].filters[2].typed_config.\
         downstream_idle_timeout: not supported by the bundled proxy"
    );
}
