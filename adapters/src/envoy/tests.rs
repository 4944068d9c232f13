use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{
            Cluster,
            cluster::{ClusterDiscoveryType, DiscoveryType},
        },
        core::v3::{
            ApiVersion, ConfigSource, DataSource, TransportSocket, address, config_source,
            data_source, transport_socket,
        },
        endpoint::v3::{ClusterLoadAssignment, lb_endpoint},
        listener::v3::{
            Filter, FilterChain, Listener, filter, listener_filter,
            listener_filter_chain_match_predicate,
        },
        rbac::v3::{Policy, permission, principal, rbac::Action},
        route::v3::{
            HeaderMatcher, Route, RouteConfiguration, VirtualHost, header_matcher, route,
            route_action, route_match,
        },
    },
    extensions::{
        filters::{
            http::rbac::v3::{Rbac as HttpRbac, RbacPerRoute},
            network::{
                http_connection_manager::v3::{
                    HttpConnectionManager,
                    http_connection_manager::{
                        ForwardClientCertDetails, RouteSpecifier, SetCurrentClientCertDetails,
                    },
                    http_filter,
                },
                rbac::v3::Rbac as NetworkRbac,
                tcp_proxy::v3::{TcpProxy, UpstreamConnectMode, tcp_proxy},
            },
        },
        transport_sockets::tls::v3::{
            CommonTlsContext, DownstreamTlsContext, Secret, UpstreamTlsContext,
            common_tls_context::ValidationContextType, secret, subject_alt_name_matcher::SanType,
            tls_parameters::TlsProtocol,
        },
        upstreams::http::v3::HttpProtocolOptions,
    },
    r#type::matcher::v3::{StringMatcher, path_matcher, string_matcher},
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use prost::{Message, Name};

use super::*;
use crate::{
    model::{
        AccessMode, Authorization, Cluster as ModelCluster, ClusterName, Endpoint, HttpMatch,
        Identity, InboundRoute, OutboundPort, OutboundService, Protocol, RouteStatName,
        ServiceName,
    },
    test_support::{
        self, backend, canary_and_split, http_match, inbound, plain_port, plain_service, port,
        rule, weighted_port,
    },
};

// === fixtures ===

fn cluster_name(ns: &str, svc: &str, port: u16) -> ClusterName {
    ClusterName::new(&ServiceName::new(ns, svc), port)
}

fn service(
    ns: &str,
    name: &str,
    cluster_ip: Option<[u8; 4]>,
    ports: Vec<OutboundPort>,
) -> (ServiceName, Arc<OutboundService>) {
    named(test_support::service(
        ns,
        name,
        cluster_ip.map(IpAddr::from),
        ports,
    ))
}

/// A service with its name, as the proxy's `outbound` map holds it.
fn named(svc: Arc<OutboundService>) -> (ServiceName, Arc<OutboundService>) {
    (svc.name.clone(), svc)
}

fn model_cluster(
    ns: &str,
    svc: &str,
    port: u16,
    protocol: Protocol,
    endpoints: &[&str],
) -> Arc<ModelCluster> {
    let endpoints = endpoints
        .iter()
        .map(|a| test_support::endpoint(a, None))
        .collect();
    test_support::cluster(ns, svc, port, protocol, endpoints)
}

fn canary_match() -> HttpMatch {
    http_match(
        Some("/api/.*"),
        &["HEAD", "GET"],
        &[("X-Canary", "true|yes"), ("host", "web.*")],
    )
}

/// A proxy in `shop` that reaches web (split 90/10 on port 80, with a canary match), web:8080,
/// a gRPC service, `other/web`, two TCP services that share port 5432, and one more TCP
/// service with a single backend; it serves two HTTP and two TCP ports.
fn sample() -> ProxyConfig {
    let web = service(
        "shop",
        "web",
        Some([10, 96, 0, 10]),
        vec![
            port(
                80,
                Protocol::Http,
                canary_and_split(
                    "shop",
                    vec![canary_match(), http_match(None, &["POST"], &[])],
                ),
            ),
            plain_port("shop", "web", 8080, Protocol::Http),
        ],
    );
    let grpc = named(plain_service("shop", "grpc", None, 9000, Protocol::Http2));
    let other_web = named(plain_service(
        "other",
        "web",
        Some(IpAddr::from([10, 96, 0, 20])),
        80,
        Protocol::Http,
    ));
    let db = service(
        "shop",
        "db",
        None,
        vec![weighted_port(
            "shop",
            5432,
            Protocol::Tcp,
            &[("db-b", 50), ("db-a", 50)],
        )],
    );
    let zdb = named(plain_service("shop", "zdb", None, 5432, Protocol::Tcp));
    let cache = named(plain_service("shop", "cache", None, 6379, Protocol::Tcp));
    let clusters = [
        model_cluster(
            "shop",
            "web-v1",
            80,
            Protocol::Http,
            &["10.0.0.2:8080", "10.0.0.1:8080"],
        ),
        model_cluster("shop", "web-v2", 80, Protocol::Http, &["10.0.0.3:8080"]),
        model_cluster("shop", "web", 8080, Protocol::Http, &["10.0.0.1:8081"]),
        model_cluster("shop", "grpc", 9000, Protocol::Http2, &["10.0.0.4:9000"]),
        model_cluster("other", "web", 80, Protocol::Http, &["10.0.1.1:80"]),
        model_cluster("shop", "db-a", 5432, Protocol::Tcp, &["10.0.0.5:5432"]),
        model_cluster("shop", "db-b", 5432, Protocol::Tcp, &["10.0.0.6:5432"]),
        model_cluster("shop", "zdb", 5432, Protocol::Tcp, &[]),
        model_cluster("shop", "cache", 6379, Protocol::Tcp, &[]),
    ];
    let sources = vec![
        Identity::new("shop", "frontend"),
        Identity::new("ops", "admin"),
    ];
    test_support::proxy(
        "shop",
        "web-v1-0",
        "web",
        [web, grpc, other_web, db, zdb, cache].map(|(_, svc)| svc),
        clusters,
        vec![
            inbound(
                8080,
                Protocol::Http,
                Authorization::Allow(vec![
                    rule(
                        "shop/web-readers",
                        sources.clone(),
                        vec![canary_match(), http_match(Some("/healthz"), &["GET"], &[])],
                    ),
                    rule(
                        "shop/web-admins",
                        vec![Identity::new("ops", "admin")],
                        vec![],
                    ),
                    rule(
                        "shop/web-readers",
                        vec![Identity::new("shop", "batch")],
                        vec![http_match(None, &["PUT", "DELETE"], &[])],
                    ),
                ]),
            ),
            inbound(9090, Protocol::Http2, Authorization::AllowAll),
            inbound(5433, Protocol::Tcp, Authorization::Allow(vec![])),
            inbound(
                7000,
                Protocol::Tcp,
                Authorization::Allow(vec![rule("shop/cache-users", sources, vec![])]),
            ),
        ],
    )
}

/// `sample()` with every order that carries no meaning reversed.
fn shuffled() -> ProxyConfig {
    let mut proxy = sample();
    proxy.inbound.reverse();
    for port in &mut proxy.inbound {
        if let Authorization::Allow(rules) = &mut port.authorization {
            rules.reverse();
            for rule in rules {
                rule.sources.reverse();
                rule.matches.reverse();
            }
        }
    }
    for svc in Arc::make_mut(&mut proxy.outbound).values_mut() {
        let svc = Arc::make_mut(svc);
        svc.ports.reverse();
        for port in &mut svc.ports {
            for route in &mut port.routes {
                route.backends.reverse();
                for m in &mut route.matches {
                    m.methods.reverse();
                    m.headers.reverse();
                }
            }
        }
    }
    for cluster in Arc::make_mut(&mut proxy.clusters).values_mut() {
        Arc::make_mut(cluster).endpoints.reverse();
    }
    proxy
}

fn opts() -> EnvoyOptions {
    EnvoyOptions {
        bind_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5)),
        ..EnvoyOptions::default()
    }
}

fn compile_sample() -> Output {
    compile(&sample(), &MeshSettings::default(), &opts())
}

fn find<'a>(out: &'a Output, type_url: &str, name: &str) -> &'a Resource {
    out.resources
        .iter()
        .find(|r| r.type_url == type_url && r.name == name)
        .unwrap_or_else(|| panic!("no {type_url} named {name}"))
}

fn decode<M: Message + Default>(out: &Output, type_url: &str, name: &str) -> M {
    let r = find(out, type_url, name);
    assert_eq!(r.resource.type_url, type_url);
    M::decode(r.resource.value.as_slice()).unwrap()
}

fn typed<M: Message + Default>(config: &Option<filter::ConfigType>) -> M {
    match config {
        Some(filter::ConfigType::TypedConfig(any)) => M::decode(any.value.as_slice()).unwrap(),
        other => panic!("not a typed config: {other:?}"),
    }
}

/// The last filter of a chain: what it ends in (after the connection limit, and RBAC).
fn terminal(chain: &FilterChain) -> &Filter {
    chain.filters.last().expect("a terminal filter")
}

/// `filters` with their connection manager's or TCP proxy's `stat_prefix` taken out, and the
/// prefixes taken: an inbound port's chains differ only there (`InboundStatPrefix`).
fn without_stat_prefixes(filters: &[Filter]) -> (Vec<Filter>, Vec<String>) {
    let mut prefixes = Vec::new();
    let mut take = |prefix: &mut String| prefixes.push(std::mem::take(prefix));
    let filters = filters
        .iter()
        .map(|f| {
            let mut f = f.clone();
            let value = if f.name == "envoy.filters.network.http_connection_manager" {
                let mut m: HttpConnectionManager = typed(&f.config_type);
                take(&mut m.stat_prefix);
                m.encode_to_vec()
            } else if f.name == "envoy.filters.network.tcp_proxy" {
                let mut m: TcpProxy = typed(&f.config_type);
                take(&mut m.stat_prefix);
                m.encode_to_vec()
            } else {
                return f;
            };
            if let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type {
                any.value = value;
            }
            f
        })
        .collect();
    (filters, prefixes)
}

fn hcm(listener: &Listener) -> HttpConnectionManager {
    let filter = terminal(&listener.filter_chains[0]);
    assert_eq!(filter.name, "envoy.filters.network.http_connection_manager");
    typed(&filter.config_type)
}

fn vhost<'a>(config: &'a RouteConfiguration, name: &str) -> &'a VirtualHost {
    config
        .virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vhost {name}"))
}

fn action(route: &Route) -> &route_action::ClusterSpecifier {
    match &route.action {
        Some(route::Action::Route(a)) => a.cluster_specifier.as_ref().unwrap(),
        other => panic!("not a route action: {other:?}"),
    }
}

fn regex_of(m: &StringMatcher) -> &str {
    match &m.match_pattern {
        Some(string_matcher::MatchPattern::SafeRegex(r)) => &r.regex,
        other => panic!("not a regex: {other:?}"),
    }
}

fn header_regex<'a>(headers: &'a [HeaderMatcher], name: &str) -> &'a StringMatcher {
    let h = headers
        .iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no header {name}"));
    match &h.header_match_specifier {
        Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)) => m,
        other => panic!("not a string match: {other:?}"),
    }
}

fn bytes(out: &Output) -> Vec<(&'static str, String, Vec<u8>)> {
    out.resources
        .iter()
        .map(|r| (r.type_url, r.name.clone(), r.resource.value.clone()))
        .collect()
}

// === output shape ===

#[test]
fn names_follow_the_design() {
    let out = compile_sample();
    let names = |type_url: &str| -> Vec<&str> {
        out.resources
            .iter()
            .filter(|r| r.type_url == type_url)
            .map(|r| r.name.as_str())
            .collect()
    };
    assert_eq!(
        names(CLUSTER_TYPE_URL),
        [
            "inbound|5433",
            "inbound|7000",
            "inbound|8080",
            "inbound|9090",
            "other/web|80",
            "shop/cache|6379",
            "shop/db-a|5432",
            "shop/db-b|5432",
            "shop/grpc|9000",
            "shop/web-v1|80",
            "shop/web-v2|80",
            "shop/web|8080",
            "shop/zdb|5432",
        ]
    );
    assert_eq!(
        names(ENDPOINT_TYPE_URL),
        [
            "other/web|80",
            "shop/cache|6379",
            "shop/db-a|5432",
            "shop/db-b|5432",
            "shop/grpc|9000",
            "shop/web-v1|80",
            "shop/web-v2|80",
            "shop/web|8080",
            "shop/zdb|5432",
        ]
    );
    assert_eq!(
        names(LISTENER_TYPE_URL),
        [
            "inbound|5433",
            "inbound|7000",
            "inbound|8080",
            "inbound|9090",
            "outbound_http",
            "outbound_tcp|5432",
            "outbound_tcp|6379",
        ]
    );
    assert_eq!(
        names(ROUTE_TYPE_URL),
        ["inbound|8080", "inbound|9090", "outbound_http"]
    );
    // Sorted by type URL, then name, and every payload is of its declared type.
    let keys: Vec<_> = out
        .resources
        .iter()
        .map(|r| (r.type_url, r.name.as_str()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted);
    assert!(
        out.resources
            .iter()
            .all(|r| r.resource.type_url == r.type_url)
    );

    let config: RouteConfiguration = decode(&out, ROUTE_TYPE_URL, OUTBOUND_HTTP);
    let vhosts: Vec<&str> = config
        .virtual_hosts
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        vhosts,
        [
            "other/web|80",
            "shop/grpc|9000",
            "shop/web|80",
            "shop/web|8080"
        ]
    );
}

#[test]
fn same_input_gives_identical_bytes() {
    let first = compile_sample();
    let second = compile_sample();
    assert_eq!(bytes(&first), bytes(&second));

    // A warm cache gives the same bytes as a cold one.
    let mut adapter = EnvoyAdapter::new();
    let cold = adapter.compile(&sample(), &MeshSettings::default(), &opts());
    let warm = adapter.compile(&sample(), &MeshSettings::default(), &opts());
    assert_eq!(bytes(&cold), bytes(&first));
    assert_eq!(bytes(&warm), bytes(&first));
}

#[test]
fn input_order_without_meaning_does_not_change_the_output() {
    let out = compile_sample();
    let shuffled = compile(&shuffled(), &MeshSettings::default(), &opts());
    let differ: Vec<String> = bytes(&out)
        .iter()
        .zip(&bytes(&shuffled))
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.1.clone())
        .collect();
    assert!(differ.is_empty(), "differ: {differ:?}");
    assert_eq!(bytes(&out), bytes(&shuffled));
    assert_eq!(out.warnings, shuffled.warnings);
}

#[test]
fn named_inbound_matches_get_counted_routes_before_the_catch_all() {
    let mut proxy = sample();
    let port = proxy
        .inbound
        .iter_mut()
        .find(|p| p.port == 8080)
        .expect("port 8080");
    let books = RouteStatName::new("web.routes", "books");
    port.routes = vec![InboundRoute {
        name: books.clone(),
        http_match: http_match(Some("/books/.*"), &["GET"], &[]),
    }];
    let out = compile(&proxy, &MeshSettings::default(), &opts());
    let config: RouteConfiguration = decode(&out, ROUTE_TYPE_URL, "inbound|8080");
    let routes = &vhost(&config, "inbound|8080").routes;
    let summary: Vec<(&str, &str)> = routes
        .iter()
        .map(|r| (r.name.as_str(), r.stat_prefix.as_str()))
        .collect();
    let stat_name = books.to_string();
    assert_eq!(
        summary,
        [(stat_name.as_str(), stat_name.as_str()), ("local", "")],
        "{routes:#?}"
    );
    // The same action: counting a route changes nothing of where its requests go.
    assert_eq!(routes[0].action, routes[1].action);
    let m = routes[0].r#match.as_ref().unwrap();
    assert_eq!(
        m.path_specifier,
        Some(route_match::PathSpecifier::SafeRegex(
            envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                regex: "/books/.*".to_owned(),
                ..Default::default()
            }
        ))
    );
    // The match's method, as an outbound route or an RBAC permission matches it.
    let methods: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(methods, [":method"], "{m:#?}");
}

#[test]
fn rbac_policies_encode_in_key_order() {
    // Several policies live in a protobuf map, which prost would write in `HashMap` order;
    // many fresh compiles (fresh maps, fresh hash seeds) must agree byte for byte.
    let first = bytes(&compile_sample());
    for _ in 0..20 {
        assert_eq!(bytes(&compile_sample()), first);
    }
}

// === outbound HTTP ===

#[test]
fn outbound_http_listener_uses_rds() {
    let out = compile_sample();
    let listener: Listener = decode(&out, LISTENER_TYPE_URL, OUTBOUND_HTTP);
    assert_eq!(
        listener.address,
        Some(socket_address("127.0.1.5:15001".parse().unwrap()))
    );
    let hcm = hcm(&listener);
    assert_eq!(hcm.stat_prefix, "outbound_http");
    let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!("no rds")
    };
    assert_eq!(rds.route_config_name, "outbound_http");
    let source = rds.config_source.as_ref().unwrap();
    assert!(matches!(
        source.config_source_specifier,
        Some(config_source::ConfigSourceSpecifier::Ads(_))
    ));
    assert_eq!(source.resource_api_version, ApiVersion::V3 as i32);
    let filters: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(filters, ["envoy.filters.http.router"]);
    let Some(http_filter::ConfigType::TypedConfig(router)) = &hcm.http_filters[0].config_type
    else {
        panic!()
    };
    assert_eq!(
        router.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    );
    // What the application sent as `x-forwarded-client-cert` does not leave the Pod.
    assert_eq!(
        hcm.forward_client_cert_details,
        ForwardClientCertDetails::Sanitize as i32
    );
    assert_eq!(hcm.set_current_client_cert_details, None);
}

#[test]
fn domains_are_complete_and_unique() {
    let out = compile_sample();
    let config: RouteConfiguration = decode(&out, ROUTE_TYPE_URL, OUTBOUND_HTTP);
    assert_eq!(
        config.validate_clusters,
        Some(envoy_types::pb::google::protobuf::BoolValue { value: false })
    );

    let web80 = vhost(&config, "shop/web|80");
    assert_eq!(
        web80.domains,
        [
            "web",
            "web:80",
            "web.shop",
            "web.shop:80",
            "web.shop.svc",
            "web.shop.svc:80",
            "web.shop.svc.cluster.local",
            "web.shop.svc.cluster.local:80",
            "10.96.0.10",
            "10.96.0.10:80",
        ]
    );
    // 8080 is not the default port: host:port only.
    let web8080 = vhost(&config, "shop/web|8080");
    assert_eq!(
        web8080.domains,
        [
            "web:8080",
            "web.shop:8080",
            "web.shop.svc:8080",
            "web.shop.svc.cluster.local:8080",
            "10.96.0.10:8080",
        ]
    );
    // Without port 80 the lowest HTTP port takes the bare names.
    let grpc = vhost(&config, "shop/grpc|9000");
    assert!(grpc.domains.contains(&"grpc".to_owned()));
    assert!(
        grpc.domains
            .contains(&"grpc.shop.svc.cluster.local:9000".to_owned())
    );
    // Another namespace's service: no short name (it means `shop/web` here).
    let other = vhost(&config, "other/web|80");
    assert!(other.domains.contains(&"web.other".to_owned()));
    assert!(other.domains.contains(&"web.other:80".to_owned()));
    assert!(!other.domains.iter().any(|d| d == "web" || d == "web:80"));

    let all: Vec<&String> = config
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.domains)
        .collect();
    let unique: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "duplicate domains: {all:?}");
}

#[test]
fn clashing_domains_are_dropped_with_a_warning() {
    let mut proxy = sample();
    // A second service claiming web's cluster IP (a broken local-mode manifest, say).
    let (name, svc) = service(
        "shop",
        "zz-clone",
        Some([10, 96, 0, 10]),
        vec![plain_port("shop", "web-v1", 80, Protocol::Http)],
    );
    Arc::make_mut(&mut proxy.outbound).insert(name, svc);
    let out = compile(&proxy, &MeshSettings::default(), &opts());
    let config: RouteConfiguration = decode(&out, ROUTE_TYPE_URL, OUTBOUND_HTTP);
    let clone = vhost(&config, "shop/zz-clone|80");
    assert!(clone.domains.contains(&"zz-clone:80".to_owned()));
    assert!(!clone.domains.iter().any(|d| d.starts_with("10.96.0.10")));
    assert!(
        vhost(&config, "shop/web|80")
            .domains
            .contains(&"10.96.0.10:80".to_owned())
    );
    let warnings: Vec<&String> = out
        .warnings
        .iter()
        .filter(|w| w.contains("10.96.0.10"))
        .collect();
    assert_eq!(warnings.len(), 2, "{:?}", out.warnings);
    assert!(warnings[0].contains("shop/zz-clone|80") && warnings[0].contains("shop/web|80"));

    let all: Vec<&String> = config
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.domains)
        .collect();
    assert_eq!(all.len(), all.iter().collect::<BTreeSet<_>>().len());
}

#[test]
fn hostnames_of_another_service_are_not_taken_twice() {
    let mut proxy = sample();
    // An alias claiming one of web's names: allowed by the model type, and a clash for Envoy.
    let (name, mut svc) = service(
        "shop",
        "alias",
        None,
        vec![plain_port("shop", "web-v1", 80, Protocol::Http)],
    );
    Arc::make_mut(&mut svc)
        .hostnames
        .push("Web.Shop.svc.cluster.local".into());
    Arc::make_mut(&mut proxy.outbound).insert(name, svc);
    let out = compile(&proxy, &MeshSettings::default(), &opts());
    let config: RouteConfiguration = decode(&out, ROUTE_TYPE_URL, OUTBOUND_HTTP);
    // `shop/alias` sorts first and keeps the name; web loses it, with a warning.
    assert!(
        vhost(&config, "shop/alias|80")
            .domains
            .contains(&"web.shop.svc.cluster.local".to_owned())
    );
    let web = vhost(&config, "shop/web|80");
    assert!(
        !web.domains
            .iter()
            .any(|d| d.starts_with("web.shop.svc.cluster.local"))
    );
    assert!(web.domains.contains(&"web.shop.svc:80".to_owned()));
    assert_eq!(
        out.warnings
            .iter()
            .filter(|w| w.contains("web.shop.svc.cluster.local"))
            .count(),
        2
    );
    let all: Vec<&String> = config
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.domains)
        .collect();
    assert_eq!(all.len(), all.iter().collect::<BTreeSet<_>>().len());
}

#[test]
fn canonical_hostnames_are_recognised() {
    let (_, web) = service("shop", "web", None, vec![]);
    assert!(super::route::canonical_hostnames(&web, true));
    assert!(super::route::canonical_hostnames(&web, false));
    let mut odd = (*web).clone();
    odd.hostnames.push("web.shopping".into());
    assert!(!super::route::canonical_hostnames(&odd, true));
    let mut odd = (*web).clone();
    odd.hostnames.push("api".into());
    assert!(!super::route::canonical_hostnames(&odd, true));
    // A short name that is left out does not count.
    assert!(super::route::canonical_hostnames(&odd, false));
    let (_, digit) = service("shop", "9web", None, vec![]);
    assert!(!super::route::canonical_hostnames(&digit, true));
}

#[test]
fn a_split_becomes_weighted_clusters() {
    let out = compile_sample();
    let config: RouteConfiguration = decode(&out, ROUTE_TYPE_URL, OUTBOUND_HTTP);
    let web = vhost(&config, "shop/web|80");
    let last = web.routes.last().unwrap();
    assert_eq!(last.name, "shop/web-split");
    assert!(matches!(
        last.r#match.as_ref().unwrap().path_specifier,
        Some(route_match::PathSpecifier::Prefix(ref p)) if p == "/"
    ));
    let route_action::ClusterSpecifier::WeightedClusters(split) = action(last) else {
        panic!("not weighted: {:?}", action(last))
    };
    let weights: Vec<(&str, u32)> = split
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.unwrap().value))
        .collect();
    assert_eq!(weights, [("shop/web-v1|80", 90), ("shop/web-v2|80", 10)]);
    #[allow(deprecated)]
    let total = split.total_weight;
    assert_eq!(total, None);

    let Some(route::Action::Route(a)) = &last.action else {
        panic!()
    };
    assert_eq!(
        a.timeout,
        Some(duration(std::time::Duration::from_secs(15)))
    );
    let retry = a.retry_policy.as_ref().unwrap();
    assert_eq!(
        retry.retry_on,
        "connect-failure,refused-stream,reset-before-request"
    );
    assert_eq!(retry.num_retries.unwrap().value, 2);
}

#[test]
fn a_single_backend_uses_cluster() {
    let out = compile_sample();
    let config: RouteConfiguration = decode(&out, ROUTE_TYPE_URL, OUTBOUND_HTTP);
    let web = vhost(&config, "shop/web|8080");
    assert_eq!(web.routes.len(), 1);
    assert_eq!(
        action(&web.routes[0]),
        &route_action::ClusterSpecifier::Cluster("shop/web|8080".into())
    );
    // The canary route: one backend too.
    let canary = &vhost(&config, "shop/web|80").routes[0];
    assert_eq!(
        action(canary),
        &route_action::ClusterSpecifier::Cluster("shop/web-v2|80".into())
    );
}

#[test]
fn matches_become_one_route_each() {
    let out = compile_sample();
    let config: RouteConfiguration = decode(&out, ROUTE_TYPE_URL, OUTBOUND_HTTP);
    let routes = &vhost(&config, "shop/web|80").routes;
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["shop/canary", "shop/canary", "shop/web-split"]);
    assert_eq!(action(&routes[0]), action(&routes[1]));

    let first = routes[0].r#match.as_ref().unwrap();
    let Some(route_match::PathSpecifier::SafeRegex(path)) = &first.path_specifier else {
        panic!("{first:?}")
    };
    assert_eq!(path.regex, "/api/.*");
    assert_eq!(
        regex_of(header_regex(&first.headers, ":method")),
        "GET|HEAD"
    );
    assert_eq!(
        regex_of(header_regex(&first.headers, "x-canary")),
        "true|yes"
    );
    // `host` is `:authority` to Envoy.
    assert_eq!(
        regex_of(header_regex(&first.headers, ":authority")),
        "web.*"
    );
    assert_eq!(first.headers.len(), 3);

    let second = routes[1].r#match.as_ref().unwrap();
    assert!(
        matches!(&second.path_specifier, Some(route_match::PathSpecifier::Prefix(p)) if p == "/")
    );
    assert_eq!(
        header_regex(&second.headers, ":method").match_pattern,
        Some(string_matcher::MatchPattern::Exact("POST".into()))
    );
}

// === outbound TCP ===

#[test]
fn tcp_services_get_a_listener_per_port() {
    let out = compile_sample();
    let listener: Listener = decode(&out, LISTENER_TYPE_URL, "outbound_tcp|5432");
    assert_eq!(
        listener.address,
        Some(socket_address("127.0.1.5:5432".parse().unwrap()))
    );
    let filter = terminal(&listener.filter_chains[0]);
    assert_eq!(filter.name, "envoy.filters.network.tcp_proxy");
    let tcp: TcpProxy = typed(&filter.config_type);
    let Some(tcp_proxy::ClusterSpecifier::WeightedClusters(split)) = &tcp.cluster_specifier else {
        panic!("{tcp:?}")
    };
    let weights: Vec<(&str, u32)> = split
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(weights, [("shop/db-a|5432", 50), ("shop/db-b|5432", 50)]);

    let single: Listener = decode(&out, LISTENER_TYPE_URL, "outbound_tcp|6379");
    let tcp: TcpProxy = typed(&terminal(&single.filter_chains[0]).config_type);
    assert_eq!(
        tcp.cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster(
            "shop/cache|6379".into()
        ))
    );

    // shop/zdb also wants 5432: db wins by name, zdb is reported.
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("shop/zdb") && w.contains("5432") && w.contains("shop/db")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn ports_taken_by_inbound_or_the_proxy_are_not_reused() {
    let mut proxy = sample();
    proxy
        .inbound
        .push(inbound(15001, Protocol::Http, Authorization::AllowAll));
    proxy
        .inbound
        .push(inbound(6379, Protocol::Tcp, Authorization::AllowAll));
    let out = compile(&proxy, &MeshSettings::default(), &opts());
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("inbound port 15001")),
        "{:?}",
        out.warnings
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("shop/cache port 6379")),
        "{:?}",
        out.warnings
    );
    assert!(
        !out.resources
            .iter()
            .any(|r| r.name == "inbound|15001" || r.name == "outbound_tcp|6379")
    );
    // Listener addresses are unique.
    let addresses: Vec<_> = out
        .resources
        .iter()
        .filter(|r| r.type_url == LISTENER_TYPE_URL)
        .map(|r| {
            Listener::decode(r.resource.value.as_slice())
                .unwrap()
                .address
        })
        .collect();
    assert_eq!(
        addresses.len(),
        addresses
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<BTreeSet<_>>()
            .len()
    );
}

// === clusters ===

#[test]
fn clusters_use_eds_over_ads() {
    let out = compile_sample();
    let cluster: Cluster = decode(&out, CLUSTER_TYPE_URL, "shop/web-v1|80");
    assert_eq!(
        cluster.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    );
    let eds = cluster
        .eds_cluster_config
        .as_ref()
        .unwrap()
        .eds_config
        .as_ref()
        .unwrap();
    assert!(matches!(
        eds.config_source_specifier,
        Some(config_source::ConfigSourceSpecifier::Ads(_))
    ));
    assert_eq!(eds.resource_api_version, ApiVersion::V3 as i32);
    assert_eq!(
        cluster.connect_timeout,
        Some(duration(std::time::Duration::from_secs(1)))
    );
    let outlier = cluster.outlier_detection.as_ref().unwrap();
    assert_eq!(outlier.consecutive_5xx.unwrap().value, 5);
    assert_eq!(
        outlier.enforcing_consecutive_gateway_failure.unwrap().value,
        100
    );
    assert!(cluster.typed_extension_protocol_options.is_empty());
    assert!(cluster.load_assignment.is_none());

    let cla: ClusterLoadAssignment = decode(&out, ENDPOINT_TYPE_URL, "shop/web-v1|80");
    assert_eq!(cla.cluster_name, "shop/web-v1|80");
    let addresses: Vec<Option<_>> = cla.endpoints[0]
        .lb_endpoints
        .iter()
        .map(|e| match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(e)) => e.address.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(
        addresses,
        [
            Some(socket_address("10.0.0.1:8080".parse().unwrap())),
            Some(socket_address("10.0.0.2:8080".parse().unwrap()))
        ]
    );

    let empty: ClusterLoadAssignment = decode(&out, ENDPOINT_TYPE_URL, "shop/zdb|5432");
    assert_eq!(empty.cluster_name, "shop/zdb|5432");
    assert!(empty.endpoints.is_empty());
}

#[test]
fn least_request_is_selectable() {
    let opts = EnvoyOptions {
        load_balancing: LoadBalancing::LeastRequest,
        ..opts()
    };
    let out = compile(&sample(), &MeshSettings::default(), &opts);
    let cluster: Cluster = decode(&out, CLUSTER_TYPE_URL, "shop/web-v1|80");
    assert_eq!(
        cluster.lb_policy,
        envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy::LeastRequest as i32
    );
}

#[test]
fn http2_clusters_speak_http2() {
    let out = compile_sample();
    for name in ["shop/grpc|9000", "inbound|9090"] {
        let cluster: Cluster = decode(&out, CLUSTER_TYPE_URL, name);
        let any = &cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        );
        assert_eq!(
            HttpProtocolOptions::decode(any.value.as_slice()).unwrap(),
            cluster::http2_options()
        );
    }
}

#[test]
fn inbound_clusters_are_static_to_the_app() {
    let out = compile_sample();
    let cluster: Cluster = decode(&out, CLUSTER_TYPE_URL, "inbound|8080");
    assert_eq!(
        cluster.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
    );
    let cla = cluster.load_assignment.unwrap();
    assert_eq!(cla.cluster_name, "inbound|8080");
    let Some(lb_endpoint::HostIdentifier::Endpoint(e)) =
        &cla.endpoints[0].lb_endpoints[0].host_identifier
    else {
        panic!()
    };
    assert_eq!(
        e.address,
        Some(socket_address("127.0.0.1:8080".parse().unwrap()))
    );
}

// === inbound and RBAC ===

fn inbound_rbac(out: &Output, port: u16) -> RbacPerRoute {
    let config: RouteConfiguration = decode(out, ROUTE_TYPE_URL, &inbound_name(port));
    assert_eq!(config.virtual_hosts.len(), 1);
    let vhost = &config.virtual_hosts[0];
    assert_eq!(vhost.domains, ["*"]);
    assert_eq!(
        action(&vhost.routes[0]),
        &route_action::ClusterSpecifier::Cluster(inbound_name(port))
    );
    let any = &vhost.typed_per_filter_config["envoy.filters.http.rbac"];
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
    );
    RbacPerRoute::decode(any.value.as_slice()).unwrap()
}

fn principals(policy: &Policy) -> Vec<&str> {
    policy
        .principals
        .iter()
        .map(|p| match &p.identifier {
            Some(principal::Identifier::Authenticated(a)) => {
                match &a.principal_name.as_ref().unwrap().match_pattern {
                    Some(string_matcher::MatchPattern::Exact(id)) => id.as_str(),
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn inbound_http_denies_by_default_with_a_mesh_body() {
    let out = compile_sample();
    let listener: Listener = decode(&out, LISTENER_TYPE_URL, "inbound|8080");
    assert_eq!(
        listener.address,
        Some(socket_address("127.0.1.5:8080".parse().unwrap()))
    );
    let hcm = hcm(&listener);
    let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!()
    };
    assert_eq!(rds.route_config_name, "inbound|8080");
    let filters: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        filters,
        ["envoy.filters.http.rbac", "envoy.filters.http.router"]
    );
    let Some(http_filter::ConfigType::TypedConfig(any)) = &hcm.http_filters[0].config_type else {
        panic!()
    };
    let deny = HttpRbac::decode(any.value.as_slice()).unwrap();
    let rules = deny.rules.unwrap();
    assert_eq!(rules.action, Action::Allow as i32);
    assert!(rules.policies.is_empty());

    // The application sees the caller's verified identity, never what the caller claimed.
    assert_eq!(
        hcm.forward_client_cert_details,
        ForwardClientCertDetails::SanitizeSet as i32
    );
    assert_eq!(
        hcm.set_current_client_cert_details,
        Some(SetCurrentClientCertDetails {
            uri: true,
            ..Default::default()
        })
    );

    let reply = hcm.local_reply_config.unwrap();
    let body = reply.mappers[0].body.as_ref().unwrap();
    assert_eq!(
        body.specifier,
        Some(
            envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(
                DENIED_BODY.into()
            )
        )
    );
}

#[test]
fn empty_rules_deny_everything() {
    let mut proxy = sample();
    proxy.inbound[0].authorization = Authorization::Allow(vec![]);
    let out = compile(&proxy, &MeshSettings::default(), &opts());
    let rules = inbound_rbac(&out, 8080).rbac.unwrap().rules.unwrap();
    assert_eq!(rules.action, Action::Allow as i32);
    assert!(rules.policies.is_empty());

    // TCP: no tcp_proxy at all, so no upstream connection is ever made (network RBAC would
    // only decide on the client's first byte); every connection is closed at once.
    let listener: Listener = decode(&out, LISTENER_TYPE_URL, "inbound|5433");
    let filters = &listener.filter_chains[0].filters;
    let names: Vec<&str> = filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["envoy.filters.network.direct_response"]);
    let close: envoy_types::pb::envoy::extensions::filters::network::direct_response::v3::Config =
        typed(&filters[0].config_type);
    assert_eq!(close.response, None, "nothing is written before closing");
}

#[test]
fn rules_become_principals_and_permissions() {
    let out = compile_sample();
    let rules = inbound_rbac(&out, 8080).rbac.unwrap().rules.unwrap();
    let keys: BTreeSet<&str> = rules.policies.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["shop/web-admins", "shop/web-readers", "shop/web-readers#2"])
    );

    let admins = &rules.policies["shop/web-admins"];
    assert_eq!(
        principals(admins),
        ["spiffe://cluster.local/ns/ops/sa/admin"]
    );
    assert_eq!(admins.permissions.len(), 1);
    assert_eq!(
        admins.permissions[0].rule,
        Some(permission::Rule::Any(true))
    );

    // Rules sharing a name are numbered in content order (sources by SPIFFE ID first:
    // `…/ns/ops/…` sorts before `…/ns/shop/…`), so the two-source rule keeps the plain name.
    let readers = &rules.policies["shop/web-readers"];
    assert_eq!(
        principals(readers),
        [
            "spiffe://cluster.local/ns/ops/sa/admin",
            "spiffe://cluster.local/ns/shop/sa/frontend"
        ]
    );
    assert_eq!(readers.permissions.len(), 2);
    let conditions = |p: &envoy_types::pb::envoy::config::rbac::v3::Permission| match &p.rule {
        Some(permission::Rule::AndRules(set)) => set.rules.clone(),
        other => vec![envoy_types::pb::envoy::config::rbac::v3::Permission {
            rule: other.clone(),
        }],
    };
    // Matches are sorted: `/api/.*` before `/healthz`.
    let api = conditions(&readers.permissions[0]);
    let Some(permission::Rule::UrlPath(path)) = &api[0].rule else {
        panic!("{api:?}")
    };
    let Some(path_matcher::Rule::Path(path)) = &path.rule else {
        panic!()
    };
    assert_eq!(regex_of(path), "/api/.*");
    let headers: Vec<HeaderMatcher> = api[1..]
        .iter()
        .map(|p| match &p.rule {
            Some(permission::Rule::Header(h)) => h.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(regex_of(header_regex(&headers, ":method")), "GET|HEAD");
    assert_eq!(regex_of(header_regex(&headers, "x-canary")), "true|yes");
    assert_eq!(regex_of(header_regex(&headers, ":authority")), "web.*");

    let batch = &rules.policies["shop/web-readers#2"];
    assert_eq!(
        principals(batch),
        ["spiffe://cluster.local/ns/shop/sa/batch"]
    );
    let conditions = conditions(&batch.permissions[0]);
    let Some(permission::Rule::Header(method)) = &conditions[0].rule else {
        panic!()
    };
    assert_eq!(
        regex_of(header_regex(std::slice::from_ref(method), ":method")),
        "DELETE|PUT"
    );

    // The trust domain comes from the mesh settings.
    let mesh = MeshSettings {
        trust_domain: "example.org".into(),
        ..MeshSettings::default()
    };
    let out = compile(&sample(), &mesh, &opts());
    let rules = inbound_rbac(&out, 8080).rbac.unwrap().rules.unwrap();
    assert_eq!(
        principals(&rules.policies["shop/web-admins"]),
        ["spiffe://example.org/ns/ops/sa/admin"]
    );
}

#[test]
fn tcp_rules_allow_their_sources() {
    const SOURCES: [&str; 2] = [
        "spiffe://cluster.local/ns/ops/sa/admin",
        "spiffe://cluster.local/ns/shop/sa/frontend",
    ];
    let out = compile(&sample(), &MeshSettings::default(), &mtls_opts());
    let listener: Listener = decode(&out, LISTENER_TYPE_URL, "inbound|7000");
    let [chain] = listener.filter_chains.as_slice() else {
        panic!("{:?}", listener.filter_chains)
    };
    // Only the sources pass the handshake, so a server that speaks first greets nobody else.
    downstream_tls(chain, &SOURCES);
    let filters = &chain.filters;
    assert_eq!(filters[0].name, "envoy.filters.network.connection_limit");
    let rbac: NetworkRbac = typed(&filters[1].config_type);
    let rules = rbac.rules.unwrap();
    let policy = &rules.policies["shop/cache-users"];
    assert_eq!(principals(policy), SOURCES);
    assert_eq!(
        policy.permissions[0].rule,
        Some(permission::Rule::Any(true))
    );
    let tcp: TcpProxy = typed(&filters[2].config_type);
    assert_eq!(
        tcp.cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster("inbound|7000".into()))
    );
    // No upstream connection before the handshake has checked the client's identity.
    assert_eq!(
        (tcp.upstream_connect_mode, tcp.max_early_data_bytes),
        (
            UpstreamConnectMode::OnDownstreamTlsHandshake as i32,
            Some(UInt32Value { value: 0 })
        )
    );

    // In plaintext no one has an identity the rules could admit: closed at once.
    let out = compile_sample();
    let listener: Listener = decode(&out, LISTENER_TYPE_URL, "inbound|7000");
    assert_eq!(
        filter_names(&listener.filter_chains[0]),
        ["envoy.filters.network.direct_response"]
    );

    // HTTP matches on a TCP port cannot be checked: the rule grants nothing, so the port is
    // closed as one without rules.
    let mut proxy = sample();
    proxy.inbound[3].authorization = Authorization::Allow(vec![rule(
        "shop/odd",
        vec![Identity::new("shop", "frontend")],
        vec![http_match(Some("/x"), &[], &[])],
    )]);
    let out = compile(&proxy, &MeshSettings::default(), &mtls_opts());
    let listener: Listener = decode(&out, LISTENER_TYPE_URL, "inbound|7000");
    assert_eq!(
        filter_names(&listener.filter_chains[0]),
        ["envoy.filters.network.direct_response"]
    );
    assert!(
        out.warnings.iter().any(|w| w.contains("shop/odd")),
        "{:?}",
        out.warnings
    );
}

fn filter_names(chain: &FilterChain) -> Vec<&str> {
    chain.filters.iter().map(|f| f.name.as_str()).collect()
}

#[test]
fn allow_all_turns_rbac_off() {
    let out = compile_sample();
    assert_eq!(inbound_rbac(&out, 9090), RbacPerRoute { rbac: None });

    let mut proxy = sample();
    proxy.inbound[3].authorization = Authorization::AllowAll;
    let out = compile(
        &proxy,
        &MeshSettings {
            access_mode: AccessMode::Permissive,
            ..Default::default()
        },
        &opts(),
    );
    let listener: Listener = decode(&out, LISTENER_TYPE_URL, "inbound|7000");
    let names: Vec<&str> = listener.filter_chains[0]
        .filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "envoy.filters.network.connection_limit",
            "envoy.filters.network.tcp_proxy"
        ]
    );
}

#[test]
fn hand_encoded_maps_match_prost() {
    // One policy: exactly prost's bytes. Several: the same message once decoded.
    let mut proxy = sample();
    let Authorization::Allow(rules) = &mut proxy.inbound[0].authorization else {
        panic!()
    };
    rules.truncate(1);
    let out = compile(&proxy, &MeshSettings::default(), &opts());
    let config: RouteConfiguration = decode(&out, ROUTE_TYPE_URL, "inbound|8080");
    let any = &config.virtual_hosts[0].typed_per_filter_config["envoy.filters.http.rbac"];
    let decoded = RbacPerRoute::decode(any.value.as_slice()).unwrap();
    assert_eq!(decoded.encode_to_vec(), any.value);

    let out = compile_sample();
    let raw = &find(&out, ROUTE_TYPE_URL, "inbound|8080").resource.value;
    let config = RouteConfiguration::decode(raw.as_slice()).unwrap();
    assert_eq!(
        RouteConfiguration::decode(config.encode_to_vec().as_slice()).unwrap(),
        config
    );

    // The outbound route configuration, assembled from cached pieces, is prost's encoding.
    let raw = &find(&out, ROUTE_TYPE_URL, OUTBOUND_HTTP).resource.value;
    assert_eq!(
        &RouteConfiguration::decode(raw.as_slice())
            .unwrap()
            .encode_to_vec(),
        raw
    );
}

// === cache ===

#[test]
fn a_weight_change_only_changes_the_routes() {
    let mesh = MeshSettings::default();
    let mut adapter = EnvoyAdapter::new();
    let before = adapter.compile(&sample(), &mesh, &opts());
    assert_eq!(adapter.cache_len(), (9, 6));

    let mut proxy = sample();
    let web = Arc::make_mut(&mut proxy.outbound)
        .get_mut(&ServiceName::new("shop", "web"))
        .unwrap();
    Arc::make_mut(web).ports[0].routes[1].backends[0].weight = 50;
    let after = adapter.compile(&proxy, &mesh, &opts());
    assert_eq!(
        after,
        compile(&proxy, &mesh, &opts()),
        "cached and uncached compiles differ"
    );

    let changed: Vec<&str> = before
        .resources
        .iter()
        .zip(&after.resources)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.name.as_str())
        .collect();
    assert_eq!(changed, [OUTBOUND_HTTP]);
}

#[test]
fn a_weight_change_reuses_every_other_resource_by_pointer() {
    let mesh = MeshSettings::default();
    let mut adapter = EnvoyAdapter::new();
    let mut proxy = sample();
    let before = adapter.compile_shared(&proxy, &mesh, &opts());
    let web = Arc::make_mut(&mut proxy.outbound)
        .get_mut(&ServiceName::new("shop", "web"))
        .unwrap();
    Arc::make_mut(web).ports[0].routes[1].backends[0].weight = 7;
    let after = adapter.compile_shared(&proxy, &mesh, &opts());
    let rebuilt: Vec<&str> = before
        .resources
        .iter()
        .zip(&after.resources)
        .filter(|(a, b)| !Arc::ptr_eq(a, b))
        .map(|(a, _)| a.name.as_str())
        .collect();
    // The route configuration changes; the proxy's own (inbound) pieces are rebuilt each
    // time, being few; no mesh cluster or load assignment is.
    assert!(rebuilt.contains(&OUTBOUND_HTTP), "{rebuilt:?}");
    assert!(
        after
            .resources
            .iter()
            .filter(|r| r.type_url == CLUSTER_TYPE_URL || r.type_url == ENDPOINT_TYPE_URL)
            .filter(|r| !r.name.starts_with("inbound|"))
            .all(|r| before.resources.iter().any(|b| Arc::ptr_eq(b, r))),
        "clusters are reused"
    );
    let uncached = compile(&proxy, &mesh, &opts());
    let after: Vec<Resource> = after
        .resources
        .into_iter()
        .map(Arc::unwrap_or_clone)
        .collect();
    assert_eq!(
        after, uncached.resources,
        "cached and uncached compiles differ"
    );
}

#[test]
fn settings_changes_invalidate_the_cache() {
    let mesh = MeshSettings::default();
    let mut adapter = EnvoyAdapter::new();
    adapter.compile(&sample(), &mesh, &opts());
    let opts = EnvoyOptions {
        connect_timeout: std::time::Duration::from_millis(250),
        ..opts()
    };
    let cached = adapter.compile(&sample(), &mesh, &opts);
    assert_eq!(cached, compile(&sample(), &mesh, &opts));
    let cluster: Cluster = decode(&cached, CLUSTER_TYPE_URL, "shop/web-v1|80");
    assert_eq!(
        cluster.connect_timeout,
        Some(duration(std::time::Duration::from_millis(250)))
    );
}

/// A policy is part of its route or cluster: a change to it recompiles what it is on, even in
/// an adapter that has compiled the model before.
#[test]
fn policy_changes_in_the_model_invalidate_the_cache() {
    let mesh = MeshSettings::default();
    let mut adapter = EnvoyAdapter::new();
    adapter.compile(&sample(), &mesh, &opts());
    let mut proxy = sample();
    for svc in Arc::make_mut(&mut proxy.outbound).values_mut() {
        for port in &mut Arc::make_mut(svc).ports {
            for route in &mut port.routes {
                route.policy.timeout = std::time::Duration::ZERO;
            }
        }
    }
    for cluster in Arc::make_mut(&mut proxy.clusters).values_mut() {
        Arc::make_mut(cluster)
            .policy
            .outlier_detection
            .consecutive_5xx = 7;
    }
    let cached = adapter.compile(&proxy, &mesh, &opts());
    assert_eq!(cached, compile(&proxy, &mesh, &opts()));
    let config: RouteConfiguration = decode(&cached, ROUTE_TYPE_URL, OUTBOUND_HTTP);
    for route in config.virtual_hosts.iter().flat_map(|v| &v.routes) {
        let Some(route::Action::Route(action)) = &route.action else {
            panic!("{route:?}");
        };
        assert_eq!(action.timeout, Some(duration(std::time::Duration::ZERO)));
    }
    let cluster: Cluster = decode(&cached, CLUSTER_TYPE_URL, "shop/web-v1|80");
    assert_eq!(
        cluster.outlier_detection.unwrap().consecutive_5xx,
        Some(envoy_types::pb::google::protobuf::UInt32Value { value: 7 })
    );
}

#[test]
fn connection_limits_become_circuit_breakers() {
    let limits = crate::model::ConnectionLimits {
        max_connections: 100,
        max_pending_requests: 10,
        max_requests: 1000,
    };
    let mut proxy = sample();
    let web_v1 = cluster_name("shop", "web-v1", 80);
    let cluster = Arc::make_mut(&mut proxy.clusters).get_mut(&web_v1).unwrap();
    Arc::make_mut(cluster).policy.connection_limits = Some(limits);
    let out = compile(&proxy, &MeshSettings::default(), &opts());
    let cluster: Cluster = decode(&out, CLUSTER_TYPE_URL, "shop/web-v1|80");
    let thresholds = &cluster
        .circuit_breakers
        .expect("circuit breakers")
        .thresholds;
    assert_eq!(thresholds.len(), 1);
    assert_eq!(
        thresholds[0].max_connections,
        Some(envoy_types::pb::google::protobuf::UInt32Value { value: 100 })
    );
    assert_eq!(
        thresholds[0].max_pending_requests,
        Some(envoy_types::pb::google::protobuf::UInt32Value { value: 10 })
    );
    assert_eq!(
        thresholds[0].max_requests,
        Some(envoy_types::pb::google::protobuf::UInt32Value { value: 1000 })
    );
    let default = compile(&sample(), &MeshSettings::default(), &opts());
    let cluster: Cluster = decode(&default, CLUSTER_TYPE_URL, "shop/web-v1|80");
    assert_eq!(
        cluster.circuit_breakers, None,
        "the data plane's own limits by default"
    );
}

/// Every listener the mesh generates, for each way of compiling one: addressed and
/// intercepted, plaintext and mTLS, strict and permissive.
fn every_listener(mesh: &MeshSettings) -> Vec<Listener> {
    let permissive = MeshSettings {
        access_mode: AccessMode::Permissive,
        ..mesh.clone()
    };
    let intercepted_mtls = EnvoyOptions {
        mtls: true,
        ..intercepted_opts()
    };
    let mut listeners = Vec::new();
    for mesh in [mesh, &permissive] {
        for (proxy, opts) in [
            (sample(), opts()),
            (meshed_sample(), mtls_opts()),
            (intercepted_sample(), intercepted_opts()),
            (intercepted_sample(), intercepted_mtls.clone()),
        ] {
            let out = compile(&proxy, mesh, &opts);
            listeners.extend(
                out.resources
                    .iter()
                    .filter(|r| r.type_url == LISTENER_TYPE_URL)
                    .map(|r| Listener::decode(r.resource.value.as_slice()).unwrap()),
            );
        }
    }
    listeners
}

#[test]
fn every_listener_bounds_slow_and_idle_peers_and_its_connections() {
    use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit;
    let mesh = MeshSettings::default();
    let policy = &mesh.listener_policy;
    let (mut hcms, mut tcp_proxies, mut limited, mut closing) = (0, 0, 0, 0);
    for listener in every_listener(&mesh) {
        let chains = listener
            .filter_chains
            .iter()
            .chain(listener.default_filter_chain.as_ref());
        for chain in chains {
            let at = format!("{} {:?}", listener.name, chain.name);
            let end = terminal(chain);
            if end.name == "envoy.filters.network.direct_response" {
                // Closing at once needs no limit.
                assert_eq!(chain.filters.len(), 1, "{at}");
                closing += 1;
                continue;
            }
            let first = &chain.filters[0];
            assert_eq!(first.name, "envoy.filters.network.connection_limit", "{at}");
            let limit: ConnectionLimit = typed(&first.config_type);
            assert_eq!(limit.stat_prefix, listener.name, "{at}");
            assert_eq!(
                limit.max_connections.map(|m| m.value),
                policy.max_connections.map(|m| u64::from(m.get())),
                "{at}"
            );
            assert_eq!((limit.delay, limit.runtime_enabled), (None, None), "{at}");
            limited += 1;
            match end.name.as_str() {
                "envoy.filters.network.http_connection_manager" => {
                    let hcm: HttpConnectionManager = typed(&end.config_type);
                    assert_eq!(
                        hcm.request_headers_timeout,
                        Some(duration(policy.request_headers_timeout)),
                        "{at}"
                    );
                    assert_eq!(
                        hcm.stream_idle_timeout,
                        Some(duration(policy.stream_idle_timeout)),
                        "{at}"
                    );
                    let options = hcm.common_http_protocol_options.expect("idle timeout");
                    assert_eq!(
                        options.idle_timeout,
                        Some(duration(policy.http_idle_timeout)),
                        "{at}"
                    );
                    hcms += 1;
                }
                "envoy.filters.network.tcp_proxy" => {
                    let tcp: TcpProxy = typed(&end.config_type);
                    assert_eq!(
                        tcp.idle_timeout,
                        Some(duration(policy.tcp_idle_timeout)),
                        "{at}"
                    );
                    tcp_proxies += 1;
                }
                other => panic!("{at}: ends in {other}"),
            }
        }
    }
    assert!(
        hcms > 5 && tcp_proxies > 5 && closing > 2,
        "{hcms} HCMs, {tcp_proxies} TCP proxies, {closing} closing chains"
    );
    assert_eq!(limited, hcms + tcp_proxies);
}

#[test]
fn the_listener_policy_is_configurable() {
    use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit;
    let policy = crate::model::ListenerPolicy {
        request_headers_timeout: std::time::Duration::from_millis(1500),
        http_idle_timeout: std::time::Duration::ZERO,
        stream_idle_timeout: std::time::Duration::from_secs(7),
        tcp_idle_timeout: std::time::Duration::from_secs(3),
        max_connections: std::num::NonZeroU32::new(3),
    };
    let mesh = MeshSettings {
        listener_policy: policy.clone(),
        ..MeshSettings::default()
    };
    let out = compile(&sample(), &mesh, &opts());
    let outbound: Listener = decode(&out, LISTENER_TYPE_URL, OUTBOUND_HTTP);
    let hcm = hcm(&outbound);
    assert_eq!(
        hcm.request_headers_timeout,
        Some(duration(std::time::Duration::from_millis(1500)))
    );
    // Zero turns a timeout off in Envoy: it is sent as zero, not left out (which would be
    // Envoy's own default).
    assert_eq!(
        hcm.common_http_protocol_options.unwrap().idle_timeout,
        Some(duration(std::time::Duration::ZERO))
    );
    let limit: ConnectionLimit = typed(&outbound.filter_chains[0].filters[0].config_type);
    assert_eq!(limit.max_connections.map(|m| m.value), Some(3));
    let tcp: Listener = decode(&out, LISTENER_TYPE_URL, "outbound_tcp|5432");
    let tcp: TcpProxy = typed(&terminal(&tcp.filter_chains[0]).config_type);
    assert_eq!(
        tcp.idle_timeout,
        Some(duration(std::time::Duration::from_secs(3)))
    );

    // No limit: no filter.
    let unlimited = MeshSettings {
        listener_policy: crate::model::ListenerPolicy {
            max_connections: None,
            ..policy
        },
        ..MeshSettings::default()
    };
    for listener in every_listener(&unlimited) {
        for chain in listener
            .filter_chains
            .iter()
            .chain(listener.default_filter_chain.as_ref())
        {
            assert!(
                filter_names(chain)
                    .iter()
                    .all(|n| *n != "envoy.filters.network.connection_limit"),
                "{} {:?}",
                listener.name,
                chain.name
            );
        }
    }
}

#[test]
fn unused_entries_are_evicted() {
    let mesh = MeshSettings::default();
    let mut adapter = EnvoyAdapter::new();
    let proxy = sample();
    adapter.compile(&proxy, &mesh, &opts());
    adapter.evict_unused();
    assert_eq!(adapter.cache_len(), (9, 6), "still referenced by `proxy`");
    drop(proxy);
    adapter.evict_unused();
    assert_eq!(adapter.cache_len(), (0, 0));
}

#[test]
fn equal_values_in_new_arcs_hit_the_cache() {
    let mesh = MeshSettings::default();
    let mut adapter = EnvoyAdapter::new();
    let first = sample();
    adapter.compile(&first, &mesh, &opts());
    // A fresh model with equal pieces: the cache adopts the new `Arc`s, so dropping the first
    // model leaves nothing behind that the second one needs.
    let second = sample();
    adapter.compile(&second, &mesh, &opts());
    drop(first);
    adapter.evict_unused();
    assert_eq!(adapter.cache_len(), (9, 6));
}

// === mTLS ===

fn mtls_opts() -> EnvoyOptions {
    EnvoyOptions {
        mtls: true,
        ..opts()
    }
}

fn endpoint(address: &str, identity: Option<(&str, &str)>) -> Endpoint {
    test_support::endpoint(address, identity.map(|(ns, sa)| Identity::new(ns, sa)))
}

/// `sample()` with workload identities: web-v1 runs as two service accounts, one address of
/// web-v2 is listed twice (with and without an identity), grpc and db-b are meshed, db-a and
/// other/web are not.
fn meshed_sample() -> ProxyConfig {
    let mut proxy = sample();
    let clusters = Arc::make_mut(&mut proxy.clusters);
    let mut set = |name: ClusterName, endpoints: Vec<Endpoint>| {
        Arc::make_mut(clusters.get_mut(&name).unwrap()).endpoints = endpoints;
    };
    set(
        cluster_name("shop", "web-v1", 80),
        vec![
            endpoint("10.0.0.2:8080", Some(("shop", "web-v1"))),
            endpoint("10.0.0.1:8080", Some(("shop", "web"))),
        ],
    );
    set(
        cluster_name("shop", "web-v2", 80),
        vec![
            endpoint("10.0.0.3:8080", None),
            endpoint("10.0.0.3:8080", Some(("shop", "web-v2"))),
            endpoint("10.0.0.7:8080", None),
        ],
    );
    set(
        cluster_name("shop", "grpc", 9000),
        vec![endpoint("10.0.0.4:9000", Some(("shop", "grpc")))],
    );
    set(
        cluster_name("shop", "db-b", 5432),
        vec![endpoint("10.0.0.6:5432", Some(("shop", "db")))],
    );
    proxy
}

fn permissive() -> MeshSettings {
    MeshSettings {
        access_mode: AccessMode::Permissive,
        ..MeshSettings::default()
    }
}

fn transport_socket<M: Message + Name + Default>(socket: &TransportSocket) -> M {
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    match &socket.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => {
            assert_eq!(any.type_url, M::type_url());
            M::decode(any.value.as_slice()).unwrap()
        }
        other => panic!("not a typed config: {other:?}"),
    }
}

fn upstream_tls(cluster: &Cluster) -> UpstreamTlsContext {
    let [m] = cluster.transport_socket_matches.as_slice() else {
        panic!("{:?}", cluster.transport_socket_matches)
    };
    assert_eq!(m.name, "mtls");
    assert_eq!(m.r#match, Some(tls::match_labels()));
    transport_socket(m.transport_socket.as_ref().unwrap())
}

fn assert_ads(source: &Option<ConfigSource>) {
    let source = source.as_ref().unwrap();
    assert!(matches!(
        source.config_source_specifier,
        Some(config_source::ConfigSourceSpecifier::Ads(_))
    ));
    assert_eq!(source.resource_api_version, ApiVersion::V3 as i32);
}

/// The certificate secret a context presents, checked to come over ADS.
fn certificate_sds(common: &CommonTlsContext) -> &str {
    let [sds] = common.tls_certificate_sds_secret_configs.as_slice() else {
        panic!("{:?}", common.tls_certificate_sds_secret_configs)
    };
    assert_ads(&sds.sds_config);
    assert!(common.tls_certificates.is_empty());
    // TLS 1.3 only, on both sides.
    let params = common.tls_params.as_ref().unwrap();
    assert_eq!(
        (
            params.tls_minimum_protocol_version,
            params.tls_maximum_protocol_version
        ),
        (TlsProtocol::TlSv13 as i32, TlsProtocol::TlSv13 as i32)
    );
    &sds.name
}

/// The trust bundle secret and the exact URI SANs a context accepts.
fn validation(common: &CommonTlsContext) -> (&str, Vec<&str>) {
    let (sds, sans) = match common.validation_context_type.as_ref().unwrap() {
        ValidationContextType::CombinedValidationContext(c) => (
            c.validation_context_sds_secret_config.as_ref().unwrap(),
            c.default_validation_context
                .as_ref()
                .unwrap()
                .match_typed_subject_alt_names
                .iter()
                .map(|m| {
                    assert_eq!(m.san_type, SanType::Uri as i32);
                    match &m.matcher.as_ref().unwrap().match_pattern {
                        Some(string_matcher::MatchPattern::Exact(id)) => id.as_str(),
                        other => panic!("{other:?}"),
                    }
                })
                .collect(),
        ),
        ValidationContextType::ValidationContextSdsSecretConfig(sds) => (sds, Vec::new()),
        other => panic!("{other:?}"),
    };
    assert_ads(&sds.sds_config);
    (&sds.name, sans)
}

const OWN_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";
const BUNDLE: &str = "spiffe://cluster.local";

#[test]
fn secret_names_are_spiffe_ids() {
    let mesh = MeshSettings {
        trust_domain: "example.org".into(),
        ..MeshSettings::default()
    };
    let id = Identity::new("shop", "web");
    assert_eq!(
        certificate_secret_name(&id, &mesh),
        "spiffe://example.org/ns/shop/sa/web"
    );
    assert_eq!(trust_bundle_secret_name(&mesh), "spiffe://example.org");
}

#[test]
fn secrets_carry_the_certificate_key_and_bundle() {
    let id = Identity::new("shop", "web");
    let mesh = MeshSettings::default();
    let key = "-----BEGIN PRIVATE KEY-----\nS3CR3TK3Y\n-----END PRIVATE KEY-----\n";
    let out = secrets(&id, &mesh, "CHAIN", key, "BUNDLE");
    let names: Vec<&str> = out.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [BUNDLE, OWN_ID]);
    assert!(
        out.iter()
            .all(|r| r.type_url == SECRET_TYPE_URL && r.resource.type_url == SECRET_TYPE_URL)
    );
    let inline = |d: &Option<DataSource>| match &d.as_ref().unwrap().specifier {
        Some(data_source::Specifier::InlineString(s)) => s.clone(),
        other => panic!("{other:?}"),
    };

    let bundle = Secret::decode(out[0].resource.value.as_slice()).unwrap();
    assert_eq!(bundle.name, BUNDLE);
    let Some(secret::Type::ValidationContext(v)) = &bundle.r#type else {
        panic!("{bundle:?}")
    };
    assert_eq!(inline(&v.trusted_ca), "BUNDLE");

    let cert = Secret::decode(out[1].resource.value.as_slice()).unwrap();
    assert_eq!(cert.name, OWN_ID);
    let Some(secret::Type::TlsCertificate(c)) = &cert.r#type else {
        panic!("{cert:?}")
    };
    assert_eq!(inline(&c.certificate_chain), "CHAIN");
    assert_eq!(inline(&c.private_key), key);

    // Neither the key nor its bytes (prost prints bytes as numbers) reach a log.
    let debug = format!("{out:?}");
    assert!(!debug.contains("S3CR3TK3Y"), "{debug}");
    assert!(!debug.contains("PRIVATE"), "{debug}");
    assert!(!debug.contains(&format!("{:?}", &out[1].resource.value[..8])));
    assert!(debug.contains(OWN_ID), "{debug}");
    // Other resources still print in full.
    let listener = &compile_sample().resources[0];
    assert!(format!("{listener:?}").contains("value: ["));
}

#[test]
fn mtls_clusters_present_the_proxy_and_check_endpoint_identities() {
    let out = compile(&meshed_sample(), &MeshSettings::default(), &mtls_opts());

    let cluster: Cluster = decode(&out, CLUSTER_TYPE_URL, "shop/web-v1|80");
    let tls = upstream_tls(&cluster);
    let common = tls.common_tls_context.as_ref().unwrap();
    assert_eq!(certificate_sds(common), OWN_ID);
    // Every identity among the endpoints, sorted.
    assert_eq!(
        validation(common),
        (
            BUNDLE,
            vec![
                "spiffe://cluster.local/ns/shop/sa/web",
                "spiffe://cluster.local/ns/shop/sa/web-v1"
            ]
        )
    );
    assert_eq!(common.alpn_protocols, ["http/1.1"]);
    // Nothing else of the cluster changes.
    let plain: Cluster = decode(&compile_sample(), CLUSTER_TYPE_URL, "shop/web-v1|80");
    assert_eq!(
        Cluster {
            transport_socket_matches: vec![],
            ..cluster
        },
        plain
    );

    let grpc = upstream_tls(&decode(&out, CLUSTER_TYPE_URL, "shop/grpc|9000"));
    let common = grpc.common_tls_context.unwrap();
    assert_eq!(common.alpn_protocols, ["h2"]);
    assert_eq!(
        validation(&common).1,
        ["spiffe://cluster.local/ns/shop/sa/grpc"]
    );
    let db = upstream_tls(&decode(&out, CLUSTER_TYPE_URL, "shop/db-b|5432"));
    assert!(db.common_tls_context.unwrap().alpn_protocols.is_empty());

    // No meshed endpoint: no TLS context that nothing would use.
    for name in ["shop/db-a|5432", "other/web|80", "shop/zdb|5432"] {
        let c: Cluster = decode(&out, CLUSTER_TYPE_URL, name);
        assert!(c.transport_socket_matches.is_empty(), "{name}");
    }
    // The proxy's own (inbound) clusters talk to its application in plaintext.
    let inbound: Cluster = decode(&out, CLUSTER_TYPE_URL, "inbound|8080");
    assert!(inbound.transport_socket_matches.is_empty());
    assert!(inbound.transport_socket.is_none());
}

fn endpoint_labels(cla: &ClusterLoadAssignment) -> Vec<(String, bool)> {
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                panic!()
            };
            let Some(address::Address::SocketAddress(s)) = &ep.address.as_ref().unwrap().address
            else {
                panic!()
            };
            let meshed = match &e.metadata {
                None => false,
                Some(m) => {
                    assert_eq!(m.filter_metadata.len(), 1);
                    assert_eq!(
                        m.filter_metadata["envoy.transport_socket_match"],
                        tls::match_labels()
                    );
                    true
                }
            };
            (s.address.clone(), meshed)
        })
        .collect()
}

#[test]
fn meshed_endpoints_select_the_mtls_socket() {
    let out = compile(&meshed_sample(), &MeshSettings::default(), &mtls_opts());
    let labels = |name| endpoint_labels(&decode(&out, ENDPOINT_TYPE_URL, name));
    assert_eq!(
        labels("shop/web-v1|80"),
        [("10.0.0.1".into(), true), ("10.0.0.2".into(), true)]
    );
    // One endpoint per address; meshed if any of its entries has an identity.
    assert_eq!(
        labels("shop/web-v2|80"),
        [("10.0.0.3".into(), true), ("10.0.0.7".into(), false)]
    );
    assert_eq!(labels("shop/db-a|5432"), [("10.0.0.5".into(), false)]);
    let m = tls::match_labels();
    assert_eq!(
        m.fields["switchyard.dev/tls"].kind,
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
            "mtls".into()
        ))
    );
}

#[test]
fn without_mtls_identities_change_nothing() {
    // Byte for byte what a model without identities gives: no transport socket, no
    // metadata, plaintext listeners.
    let out = compile(&meshed_sample(), &MeshSettings::default(), &opts());
    let mut plain = meshed_sample();
    for cluster in Arc::make_mut(&mut plain.clusters).values_mut() {
        for e in &mut Arc::make_mut(cluster).endpoints {
            e.identity = None;
        }
    }
    assert_eq!(
        bytes(&out),
        bytes(&compile(&plain, &MeshSettings::default(), &opts()))
    );
    for r in &out.resources {
        match r.type_url {
            CLUSTER_TYPE_URL => {
                let c = Cluster::decode(r.resource.value.as_slice()).unwrap();
                assert!(c.transport_socket_matches.is_empty() && c.transport_socket.is_none());
            }
            ENDPOINT_TYPE_URL => {
                let cla = ClusterLoadAssignment::decode(r.resource.value.as_slice()).unwrap();
                assert!(endpoint_labels(&cla).iter().all(|(_, meshed)| !meshed));
            }
            LISTENER_TYPE_URL => {
                let l = Listener::decode(r.resource.value.as_slice()).unwrap();
                assert!(l.listener_filters.is_empty());
                assert_eq!(l.filter_chains.len(), 1);
                assert!(l.filter_chains[0].transport_socket.is_none());
            }
            _ => {}
        }
    }
    assert!(!EnvoyOptions::default().mtls);
}

/// The chain's server TLS, which must admit the mesh certificates of `sans` (any, when empty).
fn downstream_tls(chain: &FilterChain, sans: &[&str]) -> DownstreamTlsContext {
    let tls: DownstreamTlsContext = transport_socket(chain.transport_socket.as_ref().unwrap());
    assert_eq!(
        tls.require_client_certificate,
        Some(BoolValue { value: true })
    );
    let common = tls.common_tls_context.as_ref().unwrap();
    assert_eq!(certificate_sds(common), OWN_ID);
    assert_eq!(validation(common), (BUNDLE, sans.to_vec()));
    tls
}

/// The identities `meshed_sample`'s TCP port 7000 admits; its other ports check no SAN.
fn meshed_sans(port: u16) -> &'static [&'static str] {
    match port {
        7000 => &[
            "spiffe://cluster.local/ns/ops/sa/admin",
            "spiffe://cluster.local/ns/shop/sa/frontend",
        ],
        _ => &[],
    }
}

#[test]
fn strict_inbound_only_accepts_mesh_certificates() {
    let mesh = MeshSettings::default();
    let out = compile(&meshed_sample(), &mesh, &mtls_opts());
    let plain = compile(&meshed_sample(), &mesh, &opts());
    for (port, alpn) in [
        (8080, vec!["h2", "http/1.1"]),
        (9090, vec!["h2", "http/1.1"]),
        (7000, vec![]),
        (5433, vec![]),
    ] {
        let name = inbound_name(port);
        let listener: Listener = decode(&out, LISTENER_TYPE_URL, &name);
        assert!(listener.listener_filters.is_empty(), "{name}");
        let [chain] = listener.filter_chains.as_slice() else {
            panic!("{name}: {:?}", listener.filter_chains)
        };
        assert_eq!(chain.name, "mtls");
        assert!(chain.filter_chain_match.is_none());
        let tls = downstream_tls(chain, meshed_sans(port));
        assert_eq!(
            tls.common_tls_context.unwrap().alpn_protocols,
            alpn,
            "{name}"
        );
        // The same filters as without mTLS, but for a TCP port with rules, which admits no
        // one in plaintext and RBAC and the application over mTLS.
        let before: Listener = decode(&plain, LISTENER_TYPE_URL, &name);
        if port == 7000 {
            assert_eq!(
                filter_names(chain),
                [
                    "envoy.filters.network.connection_limit",
                    "envoy.filters.network.rbac",
                    "envoy.filters.network.tcp_proxy"
                ]
            );
            assert_eq!(
                filter_names(&before.filter_chains[0]),
                ["envoy.filters.network.direct_response"]
            );
        } else {
            let (tls, tls_prefixes) = without_stat_prefixes(&chain.filters);
            let (plain, plain_prefixes) = without_stat_prefixes(&before.filter_chains[0].filters);
            assert_eq!(tls, plain, "{name}");
            // 5433 admits no one: both chains close, with no prefix.
            let mtls = |p: &String| format!("{p}_mtls");
            assert_eq!(plain_prefixes.len(), usize::from(port != 5433), "{name}");
            assert!(
                plain_prefixes
                    .iter()
                    .all(|p| *p == format!("inbound_{port}"))
            );
            assert_eq!(
                tls_prefixes,
                plain_prefixes.iter().map(mtls).collect::<Vec<_>>()
            );
        }
        assert_eq!(listener.address, before.address);
    }
    // Outbound listeners are untouched: TLS starts at the cluster.
    for name in [OUTBOUND_HTTP, "outbound_tcp|5432"] {
        assert_eq!(
            find(&out, LISTENER_TYPE_URL, name),
            find(&plain, LISTENER_TYPE_URL, name)
        );
    }
}

#[test]
fn permissive_inbound_accepts_tls_and_plaintext() {
    let mesh = permissive();
    let out = compile(&meshed_sample(), &mesh, &mtls_opts());
    let plain = compile(&meshed_sample(), &mesh, &opts());
    for port in [8080, 7000] {
        let name = inbound_name(port);
        let listener: Listener = decode(&out, LISTENER_TYPE_URL, &name);
        let [inspector] = listener.listener_filters.as_slice() else {
            panic!("{:?}", listener.listener_filters)
        };
        assert_eq!(inspector.name, "envoy.filters.listener.tls_inspector");
        let Some(listener_filter::ConfigType::TypedConfig(any)) = &inspector.config_type else {
            panic!()
        };
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
        );
        assert!(listener.continue_on_listener_filters_timeout);

        let [tls, plaintext] = listener.filter_chains.as_slice() else {
            panic!("{:?}", listener.filter_chains)
        };
        assert_eq!(
            (tls.name.as_str(), plaintext.name.as_str()),
            ("mtls", "plaintext")
        );
        assert_eq!(
            tls.filter_chain_match.as_ref().unwrap().transport_protocol,
            "tls"
        );
        downstream_tls(tls, meshed_sans(port));
        assert!(plaintext.filter_chain_match.is_none());
        assert!(plaintext.transport_socket.is_none());
        // The plaintext chain is the port without mTLS (closed, for a TCP port with rules).
        let before: Listener = decode(&plain, LISTENER_TYPE_URL, &name);
        assert_eq!(plaintext.filters, before.filter_chains[0].filters);
        if port != 7000 {
            // The same filters but for their stat prefix, which tells mTLS callers apart.
            let (tls, tls_prefixes) = without_stat_prefixes(&tls.filters);
            let (plain, plain_prefixes) = without_stat_prefixes(&plaintext.filters);
            assert_eq!(tls, plain);
            assert_eq!(plain_prefixes, [format!("inbound_{port}")]);
            assert_eq!(tls_prefixes, [format!("inbound_{port}_mtls")]);
        }
    }
}

#[test]
fn mtls_compiles_are_deterministic() {
    let first = compile(&meshed_sample(), &permissive(), &mtls_opts());
    for _ in 0..10 {
        assert_eq!(
            bytes(&compile(&meshed_sample(), &permissive(), &mtls_opts())),
            bytes(&first)
        );
    }
}

#[test]
fn mtls_cache_equals_uncached_and_keys_on_identity() {
    let mesh = MeshSettings::default();
    let mut adapter = EnvoyAdapter::new();
    let web = meshed_sample();
    let mut api = meshed_sample();
    api.identity = Identity::new("shop", "api");
    // `api` shares the cluster map of `web`, as proxies of one mesh do.
    api.clusters = web.clusters.clone();

    let plain = adapter.compile_shared(&web, &mesh, &opts());
    let web_1 = adapter.compile_shared(&web, &mesh, &mtls_opts());
    let api_1 = adapter.compile_shared(&api, &mesh, &mtls_opts());
    let web_2 = adapter.compile_shared(&web, &mesh, &mtls_opts());
    let api_2 = adapter.compile_shared(&api, &mesh, &mtls_opts());
    let unshared = |out: &Output<Arc<Resource>>| -> Vec<Resource> {
        out.resources.iter().map(|r| (**r).clone()).collect()
    };
    for (cached, proxy) in [
        (&web_1, &web),
        (&api_1, &api),
        (&web_2, &web),
        (&api_2, &api),
    ] {
        assert_eq!(
            unshared(cached),
            compile(proxy, &mesh, &mtls_opts()).resources,
            "cached and uncached compiles differ"
        );
    }
    let of = |out: &Output<Arc<Resource>>, type_url: &str, name: &str| {
        out.resources
            .iter()
            .find(|r| r.type_url == type_url && r.name == name)
            .unwrap()
            .clone()
    };
    let name = "shop/web-v1|80";
    // Each identity gets its own Cluster (it names the proxy's certificate), kept across the
    // other identity's compiles; the endpoints are shared by all.
    assert!(Arc::ptr_eq(
        &of(&web_1, CLUSTER_TYPE_URL, name),
        &of(&web_2, CLUSTER_TYPE_URL, name)
    ));
    assert!(Arc::ptr_eq(
        &of(&api_1, CLUSTER_TYPE_URL, name),
        &of(&api_2, CLUSTER_TYPE_URL, name)
    ));
    assert_ne!(
        of(&web_1, CLUSTER_TYPE_URL, name),
        of(&api_1, CLUSTER_TYPE_URL, name)
    );
    let api_cluster = upstream_tls(
        &Cluster::decode(of(&api_1, CLUSTER_TYPE_URL, name).resource.value.as_slice()).unwrap(),
    );
    assert_eq!(
        certificate_sds(api_cluster.common_tls_context.as_ref().unwrap()),
        "spiffe://cluster.local/ns/shop/sa/api"
    );
    assert!(Arc::ptr_eq(
        &of(&web_1, ENDPOINT_TYPE_URL, name),
        &of(&api_2, ENDPOINT_TYPE_URL, name)
    ));
    // Turning mTLS on or off, or changing the trust domain, is never served from the cache.
    assert_ne!(
        of(&plain, ENDPOINT_TYPE_URL, name),
        of(&web_1, ENDPOINT_TYPE_URL, name)
    );
    let off = adapter.compile(&web, &mesh, &opts());
    assert_eq!(off, compile(&web, &mesh, &opts()));
    let other = MeshSettings {
        trust_domain: "example.org".into(),
        ..MeshSettings::default()
    };
    let cached = adapter.compile(&web, &other, &mtls_opts());
    assert_eq!(cached, compile(&web, &other, &mtls_opts()));
    let cluster: Cluster = decode(&cached, CLUSTER_TYPE_URL, name);
    assert_eq!(
        certificate_sds(upstream_tls(&cluster).common_tls_context.as_ref().unwrap()),
        "spiffe://example.org/ns/shop/sa/web"
    );
    // An endpoint identity change reaches both the SANs and the metadata.
    let mut moved = web.clone();
    let clusters = Arc::make_mut(&mut moved.clusters);
    Arc::make_mut(
        clusters
            .get_mut(&cluster_name("shop", "db-a", 5432))
            .unwrap(),
    )
    .endpoints = vec![endpoint("10.0.0.5:5432", Some(("shop", "db")))];
    let cached = adapter.compile(&moved, &mesh, &mtls_opts());
    assert_eq!(cached, compile(&moved, &mesh, &mtls_opts()));
    let db_a: Cluster = decode(&cached, CLUSTER_TYPE_URL, "shop/db-a|5432");
    let common = upstream_tls(&db_a).common_tls_context.unwrap();
    assert_eq!(
        validation(&common).1,
        ["spiffe://cluster.local/ns/shop/sa/db"]
    );
    assert_eq!(
        endpoint_labels(&decode(&cached, ENDPOINT_TYPE_URL, "shop/db-a|5432")),
        [("10.0.0.5".into(), true)]
    );
}

// === bootstrap ===

#[test]
fn bootstrap_configures_ads_on_tls_with_the_token_by_file() {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5));
    let opts = BootstrapOptions::new(
        "shop/web-v1-0",
        ip,
        "127.0.0.1",
        15010,
        "/var/run/secrets/switchyard/token",
        XdsCa::File("/run/switchyard/xds-ca.crt".into()),
    );
    let b = bootstrap(&opts);
    assert_eq!(b["node"]["id"], "shop/web-v1-0");
    assert_eq!(
        b["admin"]["address"]["socket_address"]["address"],
        "127.0.1.5"
    );
    assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 15000);
    let ads = &b["dynamic_resources"]["ads_config"];
    assert_eq!(ads["api_type"], "GRPC");
    assert_eq!(ads["transport_api_version"], "V3");
    assert_eq!(ads["set_node_on_first_message_only"], true);
    let grpc = &ads["grpc_services"][0]["google_grpc"];
    assert_eq!(grpc["target_uri"], "127.0.0.1:15010");
    assert_eq!(
        grpc["channel_credentials"]["ssl_credentials"]["root_certs"]["filename"],
        "/run/switchyard/xds-ca.crt"
    );
    let plugin = &grpc["call_credentials"][0]["from_plugin"];
    assert_eq!(plugin["name"], FILE_CREDENTIALS);
    assert_eq!(
        plugin["typed_config"]["secret_data"]["filename"],
        "/var/run/secrets/switchyard/token"
    );
    assert_eq!(plugin["typed_config"]["header_key"], "authorization");
    assert_eq!(plugin["typed_config"]["header_prefix"], "Bearer ");
    assert_eq!(grpc["credentials_factory_name"], FILE_CREDENTIALS);
    assert!(grpc["channel_args"]["args"]["grpc.ssl_target_name_override"].is_null());
    assert!(ads["grpc_services"][0]["initial_metadata"].is_null());
    // No health port asked for, no static resources.
    assert!(b["static_resources"].is_null());
    // Golden metrics pushed over the same channel and credentials as ADS, every 5 s, with
    // the shared latency buckets on the request-time histograms.
    let sink = &b["stats_sinks"][0];
    assert_eq!(sink["name"], "envoy.stat_sinks.metrics_service");
    let config = &sink["typed_config"];
    assert_eq!(config["report_counters_as_deltas"], true);
    assert_eq!(config["emit_tags_as_labels"], true);
    assert_eq!(config["histogram_emit_mode"], "HISTOGRAM");
    let metrics_grpc = &config["grpc_service"]["google_grpc"];
    assert_eq!(metrics_grpc["stat_prefix"], METRICS_STAT_PREFIX);
    assert_eq!(metrics_grpc["target_uri"], grpc["target_uri"]);
    assert_eq!(metrics_grpc["call_credentials"], grpc["call_credentials"]);
    assert_eq!(b["stats_flush_interval"], "5s");
    let buckets = &b["stats_config"]["histogram_bucket_settings"][0];
    assert_eq!(buckets["match"]["suffix"], "_rq_time");
    assert_eq!(
        buckets["buckets"].as_array().unwrap().len(),
        switchyard_proxy_config::metrics::LATENCY_BUCKETS_MICROS.len()
    );
    let quiet = bootstrap(&BootstrapOptions {
        metrics_interval: None,
        ..opts.clone()
    });
    assert!(quiet["stats_sinks"].is_null() && quiet["stats_config"].is_null());

    let with_health = BootstrapOptions {
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        health: Some("10.244.0.7:15020".parse().unwrap()),
        ..opts.clone()
    };
    let b = bootstrap(&with_health);
    assert_eq!(
        b["admin"]["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
    let listener = &b["static_resources"]["listeners"][0];
    assert_eq!(listener["name"], HEALTH_LISTENER);
    assert_eq!(
        listener["address"]["socket_address"]["address"],
        "10.244.0.7"
    );
    assert_eq!(listener["address"]["socket_address"]["port_value"], 15020);
    let routes = &listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
        [0]["routes"];
    let paths: Vec<(&str, &str)> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let path = r["match"]["path"]
                .as_str()
                .or(r["match"]["prefix"].as_str())
                .unwrap();
            let to = r["route"]["prefix_rewrite"].as_str().unwrap_or("(direct)");
            (path, to)
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("/ready", "/ready"),
            ("/metrics", "/stats/prometheus"),
            ("/live", "(direct)"),
            ("/", "(direct)"),
        ]
    );
    assert_eq!(routes[3]["direct_response"]["status"], 404);
    let admin = &b["static_resources"]["clusters"][0];
    assert_eq!(admin["name"], ADMIN_CLUSTER);
    assert_eq!(
        admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"],
        serde_json::json!({ "address": "127.0.0.1", "port_value": 15000 })
    );
    for config in ["cds_config", "lds_config"] {
        assert_eq!(
            b["dynamic_resources"][config],
            serde_json::json!({ "ads": {}, "resource_api_version": "V3" })
        );
    }
    assert_eq!(
        b["overload_manager"]["resource_monitors"][0]["typed_config"]["@type"],
        "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.\
         DownstreamConnectionsConfig"
    );

    let delta = BootstrapOptions {
        api: XdsApi::Delta,
        xds_host: "fd00::1".into(),
        xds_server_name: Some("switchyard.switchyard-system.svc".into()),
        ..opts.clone()
    };
    let b = bootstrap(&delta);
    let ads = &b["dynamic_resources"]["ads_config"];
    assert_eq!(ads["api_type"], "DELTA_GRPC");
    let grpc = &ads["grpc_services"][0]["google_grpc"];
    assert_eq!(grpc["target_uri"], "[fd00::1]:15010");
    assert_eq!(
        grpc["channel_args"]["args"]["grpc.ssl_target_name_override"]["string_value"],
        "switchyard.switchyard-system.svc"
    );
}

// === helpers ===

#[test]
fn backends_merge_and_sort() {
    let backends = [
        backend("a", "y", 80, 1),
        backend("a", "x", 80, 2),
        backend("a", "y", 80, 3),
    ];
    let merged = super::route::merged_backends(&backends);
    assert_eq!(merged, [("a/x|80", 2), ("a/y|80", 4)]);
}

#[test]
fn sorted_maps_are_in_key_order() {
    let map: BTreeMap<String, Policy> = ["b", "a", "c"]
        .iter()
        .map(|k| ((*k).to_owned(), Policy::default()))
        .collect();
    let mut buf = Vec::new();
    wire::put_sorted_map(&mut buf, 2, &map);
    // Each entry: field 2 (0x12), length 5, then key `0a 01 <key>` and an empty value `12 00`.
    assert_eq!(
        buf,
        [
            0x12, 5, 0x0a, 1, b'a', 0x12, 0, 0x12, 5, 0x0a, 1, b'b', 0x12, 0, 0x12, 5, 0x0a, 1,
            b'c', 0x12, 0
        ]
    );
    let decoded = envoy_types::pb::envoy::config::rbac::v3::Rbac::decode(buf.as_slice()).unwrap();
    assert_eq!(decoded.policies.len(), 3);
}

#[test]
fn socket_addresses_keep_ipv6_bare() {
    let addr: SocketAddr = "[fd00::1]:80".parse().unwrap();
    let a = socket_address(addr);
    let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(s)) =
        a.address
    else {
        panic!()
    };
    assert_eq!(s.address, "fd00::1");
}

// === scale ===

// === intercepted proxies ===

fn intercepted_opts() -> EnvoyOptions {
    let pod_ip = IpAddr::V4(Ipv4Addr::new(10, 244, 0, 7));
    EnvoyOptions {
        bind_ip: pod_ip,
        app_ip: pod_ip,
        capture: Capture::Intercepted {
            outbound: 15001,
            inbound: 15006,
        },
        ..EnvoyOptions::default()
    }
}

/// `sample()` with ClusterIPs on `db` and on `cache`, whose port is undeclared; `grpc` stays
/// headless.
fn intercepted_sample() -> ProxyConfig {
    let mut proxy = sample();
    let outbound = Arc::make_mut(&mut proxy.outbound);
    for (name, ip, protocol) in [
        ("db", [10, 96, 0, 30], Protocol::Tcp),
        ("cache", [10, 96, 0, 31], Protocol::Unknown),
    ] {
        let svc = outbound
            .get_mut(&ServiceName::new("shop", name))
            .expect("service");
        let svc = Arc::make_mut(svc);
        svc.cluster_ip = Some(IpAddr::from(ip));
        svc.ports[0].protocol = protocol;
    }
    proxy
}

fn chain<'a>(listener: &'a Listener, name: &str) -> &'a FilterChain {
    listener
        .filter_chains
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no chain {name} in {}", listener.name))
}

fn chain_match(chain: &FilterChain) -> (Vec<String>, Option<u32>, String, Vec<String>) {
    let m = chain.filter_chain_match.clone().unwrap_or_default();
    (
        m.prefix_ranges
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r.address_prefix,
                    r.prefix_len.unwrap_or_default().value
                )
            })
            .collect(),
        m.destination_port.map(|p| p.value),
        m.transport_protocol,
        m.application_protocols,
    )
}

fn tcp_cluster(chain: &FilterChain) -> tcp_proxy::ClusterSpecifier {
    let f = terminal(chain);
    assert_eq!(f.name, "envoy.filters.network.tcp_proxy", "{}", chain.name);
    typed::<TcpProxy>(&f.config_type)
        .cluster_specifier
        .expect("cluster specifier")
}

#[test]
fn intercepted_proxies_get_one_listener_each_way_and_route_by_original_destination() {
    let out = compile(
        &intercepted_sample(),
        &MeshSettings::default(),
        &intercepted_opts(),
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let listeners: Vec<&str> = out
        .resources
        .iter()
        .filter(|r| r.type_url == LISTENER_TYPE_URL)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(listeners, [INBOUND, OUTBOUND]);
    assert!(
        !out.resources.iter().any(|r| r.name == OUTBOUND_HTTP),
        "an intercepted proxy routes by destination, not by Host"
    );

    let outbound: Listener = decode(&out, LISTENER_TYPE_URL, OUTBOUND);
    let address = outbound.address.clone().and_then(|a| a.address);
    let Some(address::Address::SocketAddress(sa)) = address else {
        panic!("no socket address")
    };
    assert_eq!(sa.address, "0.0.0.0");
    let names: Vec<&str> = outbound
        .filter_chains
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    // Headless `grpc` and `zdb` have no chain: their destinations are Pod IPs.
    assert_eq!(
        names,
        [
            "other/web|80",
            "shop/cache|6379|http",
            "shop/cache|6379",
            "shop/db|5432",
            "shop/web|80",
            "shop/web|8080",
            "loop|15001",
        ]
    );

    // An HTTP port: its own route configuration, whatever Host says.
    let web = chain(&outbound, "shop/web|80");
    assert_eq!(
        chain_match(web),
        (
            vec!["10.96.0.10/32".to_owned()],
            Some(80),
            String::new(),
            vec![]
        )
    );
    let hcm: HttpConnectionManager = typed(&terminal(web).config_type);
    let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!("no rds")
    };
    assert_eq!(rds.route_config_name, "shop/web|80");
    let routes: RouteConfiguration = decode(&out, ROUTE_TYPE_URL, "shop/web|80");
    assert_eq!(routes.virtual_hosts.len(), 1);
    assert_eq!(routes.virtual_hosts[0].domains, ["*"]);
    let split = &routes.virtual_hosts[0].routes;
    assert_eq!(split.len(), 3, "two canary matches and the split");
    let route_action::ClusterSpecifier::WeightedClusters(w) = action(&split[2]) else {
        panic!("not weighted")
    };
    let weights: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.unwrap_or_default().value))
        .collect();
    assert_eq!(weights, [("shop/web-v1|80", 90), ("shop/web-v2|80", 10)]);

    // A declared TCP port: a tcp_proxy split, no detection.
    let db = chain(&outbound, "shop/db|5432");
    assert_eq!(
        chain_match(db),
        (
            vec!["10.96.0.30/32".to_owned()],
            Some(5432),
            String::new(),
            vec![]
        )
    );
    assert!(matches!(
        tcp_cluster(db),
        tcp_proxy::ClusterSpecifier::WeightedClusters(_)
    ));

    // An undeclared port: HTTP when the inspector finds it, TCP otherwise.
    let detected = chain(&outbound, "shop/cache|6379|http");
    assert_eq!(chain_match(detected).3, ["http/1.0", "http/1.1", "h2c"]);
    let hcm: HttpConnectionManager = typed(&terminal(detected).config_type);
    let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!("no rds")
    };
    assert_eq!(rds.route_config_name, "shop/cache|6379");
    find(&out, ROUTE_TYPE_URL, "shop/cache|6379");
    assert_eq!(
        tcp_cluster(chain(&outbound, "shop/cache|6379")),
        tcp_proxy::ClusterSpecifier::Cluster("shop/cache|6379".into())
    );
    // ...and only there does the inspector run.
    let filters: Vec<&str> = outbound
        .listener_filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.listener.original_dst",
            "envoy.filters.listener.http_inspector"
        ]
    );
    let disabled = outbound.listener_filters[1].filter_disabled.clone();
    let Some(listener_filter_chain_match_predicate::Rule::NotMatch(on)) =
        disabled.and_then(|d| d.rule)
    else {
        panic!("the inspector is not limited")
    };
    assert_eq!(
        on.rule,
        Some(
            listener_filter_chain_match_predicate::Rule::DestinationPortRange(
                envoy_types::pb::envoy::r#type::v3::Int32Range {
                    start: 6379,
                    end: 6380
                }
            )
        )
    );

    // A connection straight to the outbound port is closed, not looped.
    let guard = chain(&outbound, "loop|15001");
    assert_eq!(
        chain_match(guard),
        (vec![], Some(15001), String::new(), vec![])
    );
    assert_eq!(
        guard.filters[0].name,
        "envoy.filters.network.direct_response"
    );

    // Everything else passes through to where it was going.
    let default = outbound
        .default_filter_chain
        .clone()
        .expect("default chain");
    assert_eq!(
        tcp_cluster(&default),
        tcp_proxy::ClusterSpecifier::Cluster(PASSTHROUGH.into())
    );
    let passthrough: Cluster = decode(&out, CLUSTER_TYPE_URL, PASSTHROUGH);
    assert_eq!(
        passthrough.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32
        ))
    );
    assert!(passthrough.transport_socket.is_none());
    assert!(passthrough.transport_socket_matches.is_empty());
}

/// A headless Service's clients dial its Pods: each meshed endpoint gets a chain on its own
/// address, to a cluster of that one endpoint over mTLS to its identity; unmeshed endpoints and
/// the proxy's own Pod pass through.
#[test]
fn intercepted_proxies_reach_the_meshed_pods_of_a_headless_service_over_mtls() {
    let mut proxy = intercepted_sample();
    let own = intercepted_opts().app_ip;
    let clusters = Arc::make_mut(&mut proxy.clusters);
    Arc::make_mut(
        clusters
            .get_mut(&cluster_name("shop", "grpc", 9000))
            .expect("grpc"),
    )
    .endpoints = vec![
        endpoint("10.0.0.4:9000", Some(("shop", "grpc"))),
        endpoint("10.0.0.8:9000", None),
        endpoint(&format!("{own}:9000"), Some(("shop", "grpc"))),
    ];
    let mtls = EnvoyOptions {
        mtls: true,
        ..intercepted_opts()
    };
    let out = compile(&proxy, &MeshSettings::default(), &mtls);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let outbound: Listener = decode(&out, LISTENER_TYPE_URL, OUTBOUND);
    let pods: Vec<&str> = outbound
        .filter_chains
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| n.starts_with("shop/grpc"))
        .collect();
    assert_eq!(pods, ["shop/grpc|9000|10.0.0.4"]);
    let pod = chain(&outbound, "shop/grpc|9000|10.0.0.4");
    assert_eq!(
        chain_match(pod),
        (
            vec!["10.0.0.4/32".to_owned()],
            Some(9000),
            String::new(),
            vec![]
        )
    );
    assert_eq!(
        tcp_cluster(pod),
        tcp_proxy::ClusterSpecifier::Cluster("shop/grpc|9000|10.0.0.4".into())
    );
    let cluster: Cluster = decode(&out, CLUSTER_TYPE_URL, "shop/grpc|9000|10.0.0.4");
    assert_eq!(
        cluster.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
    );
    let assignment = cluster.load_assignment.clone().expect("inline endpoints");
    let endpoints = &assignment.endpoints[0].lb_endpoints;
    assert_eq!(endpoints.len(), 1);
    assert!(endpoints[0].metadata.is_some(), "the endpoint selects mTLS");
    let context = upstream_tls(&cluster);
    let common = context.common_tls_context.expect("common");
    assert!(common.alpn_protocols.is_empty(), "a TCP tunnel: no ALPN");
    let sans = format!("{:?}", common.validation_context_type);
    assert!(
        sans.contains("spiffe://cluster.local/ns/shop/sa/grpc"),
        "{sans}"
    );

    // Without mTLS there is nothing to add: the Pods are reached by passing through.
    let out = compile(&proxy, &MeshSettings::default(), &intercepted_opts());
    assert!(!out.resources.iter().any(|r| r.name.contains("|10.0.0.4")));
}

#[test]
fn intercepted_inbound_picks_the_port_and_reaches_the_app_on_the_pod_ip() {
    for access_mode in [AccessMode::Strict, AccessMode::Permissive] {
        let mesh = MeshSettings {
            access_mode,
            ..MeshSettings::default()
        };
        let opts = EnvoyOptions {
            mtls: true,
            ..intercepted_opts()
        };
        let out = compile(&intercepted_sample(), &mesh, &opts);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let inbound: Listener = decode(&out, LISTENER_TYPE_URL, INBOUND);
        let chains: Vec<(String, Option<u32>, String)> = inbound
            .filter_chains
            .iter()
            .map(|c| {
                let (_, port, transport, _) = chain_match(c);
                (c.name.clone(), port, transport)
            })
            .collect();
        let expected: Vec<(String, Option<u32>, String)> = match access_mode {
            AccessMode::Strict => [5433, 7000, 8080, 9090]
                .into_iter()
                .map(|p| (format!("inbound|{p}"), Some(p), String::new()))
                .chain([("loop|15006".to_owned(), Some(15006), String::new())])
                .collect(),
            AccessMode::Permissive => [5433, 7000, 8080, 9090]
                .into_iter()
                .flat_map(|p| {
                    [
                        (format!("inbound|{p}"), Some(p), "tls".to_owned()),
                        (format!("inbound|{p}|plaintext"), Some(p), String::new()),
                    ]
                })
                .chain([("loop|15006".to_owned(), Some(15006), String::new())])
                .collect(),
        };
        assert_eq!(chains, expected, "{access_mode:?}");
        // Every port's chain terminates mTLS, as its own listener would.
        let tls_chain = chain(&inbound, "inbound|8080");
        assert!(tls_chain.transport_socket.is_some());
        let default = inbound.default_filter_chain.clone().expect("default chain");
        match access_mode {
            AccessMode::Strict => {
                assert_eq!(default.name, "deny");
                assert_eq!(
                    default.filters[0].name,
                    "envoy.filters.network.direct_response"
                );
            }
            AccessMode::Permissive => {
                assert_eq!(
                    tcp_cluster(&default),
                    tcp_proxy::ClusterSpecifier::Cluster(INBOUND_PASSTHROUGH.into())
                );
                let passthrough: Cluster = decode(&out, CLUSTER_TYPE_URL, INBOUND_PASSTHROUGH);
                assert_eq!(
                    passthrough.cluster_discovery_type,
                    Some(ClusterDiscoveryType::Type(
                        DiscoveryType::OriginalDst as i32
                    ))
                );
                let bind = passthrough.upstream_bind_config.expect("bind config");
                assert_eq!(bind.source_address.expect("source").address, "127.0.0.6");
            }
        }
        let listener_filters: Vec<&str> = inbound
            .listener_filters
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            listener_filters.len(),
            match access_mode {
                AccessMode::Strict => 1,
                AccessMode::Permissive => 2,
            }
        );

        // The app on the Pod IP, from the source address the redirect rules let through.
        let app: Cluster = decode(&out, CLUSTER_TYPE_URL, "inbound|8080");
        let endpoint = &app.load_assignment.as_ref().unwrap().endpoints[0].lb_endpoints[0];
        let Some(lb_endpoint::HostIdentifier::Endpoint(e)) = &endpoint.host_identifier else {
            panic!("no endpoint")
        };
        let Some(address::Address::SocketAddress(sa)) = e.address.clone().and_then(|a| a.address)
        else {
            panic!("no address")
        };
        assert_eq!(
            (sa.address.as_str(), sa.port_specifier.is_some()),
            ("10.244.0.7", true)
        );
        let bind = app.upstream_bind_config.expect("bind config");
        assert_eq!(bind.source_address.expect("source").address, "127.0.0.6");
    }
}

/// An IPv6 Pod: both capture listeners on `[::]` taking IPv4 too (`ipv4_compat`), and the
/// app reached from `::6`, the IPv6 inbound source the redirect rules let through.
#[test]
fn an_ipv6_pods_capture_listeners_take_both_families() {
    let pod_ip: IpAddr = "fd00:10:244::7".parse().unwrap();
    let opts = EnvoyOptions {
        bind_ip: pod_ip,
        app_ip: pod_ip,
        ..intercepted_opts()
    };
    let out = compile(&intercepted_sample(), &MeshSettings::default(), &opts);
    for name in [OUTBOUND, INBOUND] {
        let listener: Listener = decode(&out, LISTENER_TYPE_URL, name);
        let Some(address::Address::SocketAddress(sa)) =
            listener.address.clone().and_then(|a| a.address)
        else {
            panic!("no socket address")
        };
        assert_eq!(
            (sa.address.as_str(), sa.ipv4_compat),
            ("::", true),
            "{name}"
        );
    }
    let app: Cluster = decode(&out, CLUSTER_TYPE_URL, "inbound|8080");
    let bind = app.upstream_bind_config.expect("bind config");
    assert_eq!(bind.source_address.expect("source").address, "::6");

    // An IPv4 Pod's stay IPv4 only: `::` would fail where the Pod has no IPv6 at all.
    let out = compile(
        &intercepted_sample(),
        &MeshSettings::default(),
        &intercepted_opts(),
    );
    let listener: Listener = decode(&out, LISTENER_TYPE_URL, OUTBOUND);
    let Some(address::Address::SocketAddress(sa)) = listener.address.and_then(|a| a.address) else {
        panic!("no socket address")
    };
    assert_eq!((sa.address.as_str(), sa.ipv4_compat), ("0.0.0.0", false));
}

#[test]
fn undeclared_clusters_keep_the_downstream_http_version() {
    let out = compile(
        &intercepted_sample(),
        &MeshSettings::default(),
        &intercepted_opts(),
    );
    let cache: Cluster = decode(&out, CLUSTER_TYPE_URL, "shop/cache|6379");
    let _ = cache;
    let proxy = intercepted_sample();
    let mut clusters = (*proxy.clusters).clone();
    let name = cluster_name("shop", "cache", 6379);
    clusters.insert(
        name.clone(),
        model_cluster("shop", "cache", 6379, Protocol::Unknown, &["10.0.0.9:6379"]),
    );
    let proxy = ProxyConfig {
        clusters: Arc::new(clusters),
        ..proxy
    };
    let out = compile(&proxy, &MeshSettings::default(), &intercepted_opts());
    let cache: Cluster = decode(&out, CLUSTER_TYPE_URL, name.as_str());
    let options = &cache.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    let options = HttpProtocolOptions::decode(options.value.as_slice()).unwrap();
    assert!(matches!(
        options.upstream_protocol_options,
        Some(envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(_))
    ));
}

#[test]
fn two_services_on_one_cluster_ip_and_port_keep_the_first() {
    let mut proxy = intercepted_sample();
    let outbound = Arc::make_mut(&mut proxy.outbound);
    let db = outbound
        .get_mut(&ServiceName::new("shop", "db"))
        .expect("db");
    Arc::make_mut(db).cluster_ip = Some(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)));
    Arc::make_mut(db).ports[0].port = 80;
    let out = compile(&proxy, &MeshSettings::default(), &intercepted_opts());
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains("10.96.0.10:80 is already routed as shop/db|80"),
        "{}",
        out.warnings[0]
    );
}

// === references ===

/// The SDS names of a TLS context, decoded.
fn tls_secrets(common: &CommonTlsContext) -> Vec<String> {
    let mut names: Vec<String> = common
        .tls_certificate_sds_secret_configs
        .iter()
        .map(|s| s.name.clone())
        .collect();
    match &common.validation_context_type {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            names.push(s.name.clone());
        }
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            names.extend(
                c.validation_context_sds_secret_config
                    .iter()
                    .map(|s| s.name.clone()),
            );
        }
        _ => {}
    }
    names
}

/// What a resource names, found by decoding it (and the configs inside it), as a proxy would.
fn decoded_references(resource: &Resource) -> Vec<Reference> {
    let mut out = Vec::new();
    let tls_config = |socket: &TransportSocket| match &socket.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => any.clone(),
        None => panic!("untyped transport socket"),
    };
    if resource.type_url == CLUSTER_TYPE_URL {
        let cluster = Cluster::decode(resource.resource.value.as_slice()).unwrap();
        if cluster.cluster_discovery_type
            == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        {
            let service_name = cluster.eds_cluster_config.unwrap().service_name;
            let name = if service_name.is_empty() {
                cluster.name.clone()
            } else {
                service_name
            };
            out.push(Reference::new(TypeUrl::ClusterLoadAssignment, name));
        }
        for m in &cluster.transport_socket_matches {
            let any = tls_config(m.transport_socket.as_ref().unwrap());
            let context = UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
            for name in tls_secrets(&context.common_tls_context.unwrap()) {
                out.push(Reference::new(TypeUrl::Secret, name));
            }
        }
    } else if resource.type_url == LISTENER_TYPE_URL {
        let listener = Listener::decode(resource.resource.value.as_slice()).unwrap();
        for chain in listener
            .filter_chains
            .iter()
            .chain(&listener.default_filter_chain)
        {
            if let Some(socket) = &chain.transport_socket {
                let any = tls_config(socket);
                let context = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
                for name in tls_secrets(&context.common_tls_context.unwrap()) {
                    out.push(Reference::new(TypeUrl::Secret, name));
                }
            }
            for f in &chain.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                if any.type_url != HttpConnectionManager::type_url() {
                    continue;
                }
                let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
                if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                    out.push(Reference::new(
                        TypeUrl::RouteConfiguration,
                        rds.route_config_name,
                    ));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn resources_carry_what_they_reference() {
    let permissive = permissive();
    let strict = MeshSettings::default();
    let cases = [
        (sample(), opts()),
        (meshed_sample(), mtls_opts()),
        (intercepted_sample(), intercepted_opts()),
        (
            meshed_sample(),
            EnvoyOptions {
                mtls: true,
                ..intercepted_opts()
            },
        ),
    ];
    let mut seen = BTreeSet::new();
    for (proxy, opts) in cases {
        for mesh in [&strict, &permissive] {
            let out = compile(&proxy, mesh, &opts);
            for r in &out.resources {
                assert_eq!(
                    r.references,
                    decoded_references(r),
                    "{} {}",
                    r.type_url,
                    r.name
                );
                seen.extend(r.references.iter().map(|r| r.type_url));
            }
        }
    }
    // Every kind of reference occurred.
    assert_eq!(
        seen,
        BTreeSet::from([
            TypeUrl::ClusterLoadAssignment,
            TypeUrl::RouteConfiguration,
            TypeUrl::Secret
        ])
    );
}

// === tap ===

use envoy_types::pb::envoy::{
    config::accesslog::v3::access_log,
    extensions::access_loggers::grpc::v3::HttpGrpcAccessLogConfig,
};
use serde_json::{Value, json};

/// The fields of a `GrpcService` message as the bootstrap's JSON writes them.
fn grpc_service_json(service: &envoy_types::pb::envoy::config::core::v3::GrpcService) -> Value {
    use envoy_types::pb::envoy::config::{
        core::v3::{
            data_source::Specifier,
            grpc_service::{
                TargetSpecifier,
                google_grpc::{
                    call_credentials,
                    call_credentials::metadata_credentials_from_plugin::ConfigType,
                    channel_args::value::ValueSpecifier, channel_credentials,
                },
            },
        },
        grpc_credential::v3::FileBasedMetadataConfig,
    };
    let Some(TargetSpecifier::GoogleGrpc(g)) = &service.target_specifier else {
        panic!("not google_grpc: {service:?}")
    };
    let source = |s: &Option<Specifier>| match s {
        Some(Specifier::Filename(f)) => json!({ "filename": f }),
        Some(Specifier::InlineString(p)) => json!({ "inline_string": p }),
        other => panic!("{other:?}"),
    };
    let Some(channel_credentials::CredentialSpecifier::SslCredentials(ssl)) =
        &g.channel_credentials.as_ref().unwrap().credential_specifier
    else {
        panic!("{g:?}")
    };
    let [call] = g.call_credentials.as_slice() else {
        panic!("{g:?}")
    };
    let Some(call_credentials::CredentialSpecifier::FromPlugin(plugin)) =
        &call.credential_specifier
    else {
        panic!("{call:?}")
    };
    let Some(ConfigType::TypedConfig(any)) = &plugin.config_type else {
        panic!("{plugin:?}")
    };
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig"
    );
    let file = FileBasedMetadataConfig::decode(any.value.as_slice()).unwrap();
    let args: serde_json::Map<String, Value> = g
        .channel_args
        .as_ref()
        .unwrap()
        .args
        .iter()
        .map(|(k, v)| {
            let v = match &v.value_specifier {
                Some(ValueSpecifier::IntValue(i)) => json!({ "int_value": i }),
                Some(ValueSpecifier::StringValue(s)) => json!({ "string_value": s }),
                None => Value::Null,
            };
            (k.clone(), v)
        })
        .collect();
    json!({
        "google_grpc": {
            "target_uri": g.target_uri,
            "stat_prefix": g.stat_prefix,
            "channel_credentials": {
                "ssl_credentials": { "root_certs": source(&ssl.root_certs.as_ref().unwrap().specifier) },
            },
            "call_credentials": [{
                "from_plugin": {
                    "name": plugin.name,
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig",
                        "secret_data": source(&file.secret_data.as_ref().unwrap().specifier),
                        "header_key": file.header_key,
                        "header_prefix": file.header_prefix,
                    },
                },
            }],
            "credentials_factory_name": g.credentials_factory_name,
            "channel_args": { "args": args },
        },
    })
}

#[test]
fn the_grpc_service_message_is_the_bootstraps() {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5));
    for (ca, server_name) in [
        (XdsCa::File("/run/switchyard/xds-ca.crt".into()), None),
        (
            XdsCa::Pem("-----BEGIN CERTIFICATE-----\n".into()),
            Some("switchyard.switchyard-system.svc".to_owned()),
        ),
    ] {
        let opts = BootstrapOptions {
            xds_server_name: server_name,
            ..BootstrapOptions::new("shop/web-v1-0", ip, "10.96.0.9", 15010, "/token", ca)
        };
        let ads = bootstrap(&opts)["dynamic_resources"]["ads_config"]["grpc_services"][0].clone();
        let message = super::bootstrap::control_plane_grpc(&opts, "xds");
        assert_eq!(grpc_service_json(&message), ads);
    }
}

/// A tap's access-log filter, written out: `or[…]`, `and[…]`, `bucket(NAME)`, `:path prefix /a`.
fn describe_log_filter(
    filter: &envoy_types::pb::envoy::config::accesslog::v3::AccessLogFilter,
) -> String {
    use envoy_types::pb::envoy::{
        config::accesslog::v3::{access_log_filter::FilterSpecifier, extension_filter},
        config::route::v3::header_matcher::HeaderMatchSpecifier,
        extensions::access_loggers::filters::process_ratelimit::v3::ProcessRateLimitFilter,
        r#type::matcher::v3::string_matcher::MatchPattern,
    };
    let all = |filters: &[_]| filters.iter().map(describe_log_filter).collect::<Vec<_>>();
    match filter.filter_specifier.as_ref().unwrap() {
        FilterSpecifier::OrFilter(or) => format!("or[{}]", all(&or.filters).join(", ")),
        FilterSpecifier::AndFilter(and) => format!("and[{}]", all(&and.filters).join(", ")),
        FilterSpecifier::ExtensionFilter(ext) => {
            assert_eq!(ext.name, super::RATE_LIMIT_FILTER);
            let Some(extension_filter::ConfigType::TypedConfig(any)) = &ext.config_type else {
                panic!("{ext:?}")
            };
            let dynamic = ProcessRateLimitFilter::decode(any.value.as_slice())
                .unwrap()
                .dynamic_config
                .unwrap();
            assert_eq!(dynamic.config_source, Some(super::ads()));
            format!("bucket({})", dynamic.resource_name)
        }
        FilterSpecifier::HeaderFilter(h) => {
            let h = h.header.as_ref().unwrap();
            let Some(HeaderMatchSpecifier::StringMatch(m)) = &h.header_match_specifier else {
                panic!("{h:?}")
            };
            assert!(!m.ignore_case && !h.invert_match, "{h:?}");
            match m.match_pattern.as_ref().unwrap() {
                MatchPattern::Exact(v) => format!("{} = {v}", h.name),
                MatchPattern::Prefix(v) => format!("{} prefix {v}", h.name),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
}

/// The bootstrap of the tapped proxy in `tapped_sample`.
fn tap_opts() -> BootstrapOptions {
    BootstrapOptions::new(
        "shop/web-v1-0",
        IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5)),
        "127.0.0.1",
        15010,
        "/token",
        XdsCa::File("/ca.crt".into()),
    )
}

/// `meshed_sample()` compiled (permissive, mTLS), and the same tapped as `how` asks.
fn tapped_sample(how: &super::ProxyTap) -> (Output<Resource>, Output<Arc<Resource>>) {
    let plain = compile(&meshed_sample(), &permissive(), &mtls_opts());
    let mut tapped = Output {
        resources: plain.resources.iter().cloned().map(Arc::new).collect(),
        warnings: Vec::new(),
    };
    super::tap(&mut tapped, &super::TapSink::new(&tap_opts()), how);
    (plain, tapped)
}

#[test]
fn a_tap_that_shows_only_some_requests_draws_on_its_own_bucket_after_its_match() {
    let rate = |n| super::TapRate::new(std::num::NonZeroU32::new(n).unwrap());
    let posts = super::TapMatch {
        id: 12,
        method: Some("POST".to_owned()),
        authority: None,
        path_prefix: Some("/orders".to_owned()),
        rate: rate(2),
    };
    let api = super::TapMatch {
        id: 3,
        method: None,
        authority: Some("api:80".to_owned()),
        path_prefix: None,
        rate: rate(7),
    };
    // (the tap, the filter of every connection manager's log, the buckets: name and rate)
    let cases = [
        (
            super::ProxyTap {
                every: Some(rate(10)),
                matching: vec![posts.clone(), api.clone()],
            },
            "or[bucket(switchyard-tap), \
             and[:method = POST, :path prefix /orders, bucket(switchyard-tap-12)], \
             and[:authority = api:80, bucket(switchyard-tap-3)]]",
            vec![
                ("switchyard-tap", 10),
                ("switchyard-tap-12", 2),
                ("switchyard-tap-3", 7),
            ],
        ),
        (
            super::ProxyTap {
                every: None,
                matching: vec![api],
            },
            "and[:authority = api:80, bucket(switchyard-tap-3)]",
            vec![("switchyard-tap-3", 7)],
        ),
        (
            super::ProxyTap {
                every: Some(rate(5)),
                matching: Vec::new(),
            },
            "bucket(switchyard-tap)",
            vec![("switchyard-tap", 5)],
        ),
    ];
    for (how, filter, buckets) in cases {
        let (plain, out) = tapped_sample(&how);
        let names: Vec<_> = out
            .resources
            .iter()
            .map(|r| (r.type_url, &r.name))
            .collect();
        assert!(names.is_sorted(), "{names:?}");
        let tail = &out.resources[plain.resources.len()..];
        let got: Vec<(&str, u32)> = tail
            .iter()
            .map(|r| {
                assert_eq!(r.type_url, super::TOKEN_BUCKET_TYPE_URL);
                let b = envoy_types::pb::envoy::r#type::v3::TokenBucket::decode(
                    r.resource.value.as_slice(),
                )
                .unwrap();
                (r.name.as_str(), b.max_tokens)
            })
            .collect();
        assert_eq!(got, buckets);
        let mut managers = 0;
        for r in out
            .resources
            .iter()
            .filter(|r| r.type_url == LISTENER_TYPE_URL)
        {
            let listener = Listener::decode(r.resource.value.as_slice()).unwrap();
            let mut here = 0;
            for f in listener.filter_chains.iter().flat_map(|c| &c.filters) {
                if f.name != "envoy.filters.network.http_connection_manager" {
                    continue;
                }
                here += 1;
                let hcm: HttpConnectionManager = typed(&f.config_type);
                let [log] = hcm.access_log.as_slice() else {
                    panic!("{}: {:?}", r.name, hcm.access_log)
                };
                assert_eq!(describe_log_filter(log.filter.as_ref().unwrap()), filter);
            }
            // A listener that logs names every bucket its log draws on, so the proxy gets
            // them before it (and the xDS server sends them again when they change).
            for (bucket, _) in &buckets {
                let reference = Reference::new(TypeUrl::TokenBucket, *bucket);
                assert_eq!(r.references.contains(&reference), here > 0, "{}", r.name);
            }
            managers += here;
        }
        assert!(managers >= 3, "{managers} connection managers");
    }
}

#[test]
fn a_rate_limited_tap_draws_every_log_on_one_bucket_of_exactly_its_rate() {
    use envoy_types::pb::envoy::{
        config::accesslog::v3::{access_log_filter::FilterSpecifier, extension_filter},
        extensions::access_loggers::filters::process_ratelimit::v3::ProcessRateLimitFilter,
        r#type::v3::TokenBucket,
    };
    let tapped = |per_second: u32| {
        let rate = super::TapRate::new(std::num::NonZeroU32::new(per_second).unwrap());
        tapped_sample(&super::ProxyTap {
            every: Some(rate),
            matching: Vec::new(),
        })
    };
    let plain = tapped(1).0;
    // (requests a second, max tokens, tokens per fill, fill interval in ms): the shortest
    // multiple of 50 ms that holds a whole number of tokens, so the rate is exact.
    for (rate, max, per_fill, every_ms) in [
        (1_000, 1_000, 50, 50),
        (100, 100, 5, 50),
        (30, 30, 3, 100),
        (7, 7, 7, 1_000),
        (1, 1, 1, 1_000),
        (64_000, 64_000, 3_200, 50),
    ] {
        let out = tapped(rate).1;
        let last = out.resources.last().unwrap();
        assert_eq!(
            (last.type_url, last.name.as_str()),
            (super::TOKEN_BUCKET_TYPE_URL, super::TAP_BUCKET)
        );
        let bucket = TokenBucket::decode(last.resource.value.as_slice()).unwrap();
        let fill = bucket.fill_interval.unwrap();
        assert_eq!(
            (
                bucket.max_tokens,
                bucket.tokens_per_fill.unwrap().value,
                fill.seconds * 1000 + i64::from(fill.nanos) / 1_000_000
            ),
            (max, per_fill, every_ms),
            "{rate}/s"
        );
    }
    let out = tapped(250).1;
    let sorted: Vec<_> = out
        .resources
        .iter()
        .map(|r| (r.type_url, &r.name))
        .collect();
    assert!(sorted.is_sorted(), "{sorted:?}");
    assert_eq!(out.resources.len(), plain.resources.len() + 1);
    let mut managers = 0;
    for (before, after) in plain.resources.iter().zip(&out.resources) {
        if before.type_url != LISTENER_TYPE_URL {
            assert_eq!(before.references, after.references, "{}", before.name);
            continue;
        }
        let listener = Listener::decode(after.resource.value.as_slice()).unwrap();
        let has_manager = listener
            .filter_chains
            .iter()
            .flat_map(|c| &c.filters)
            .any(|f| f.name == "envoy.filters.network.http_connection_manager");
        let bucket = Reference::new(TypeUrl::TokenBucket, super::TAP_BUCKET);
        assert_eq!(
            after.references.contains(&bucket),
            has_manager,
            "{}: {:?}",
            before.name,
            after.references
        );
        for f in listener.filter_chains.iter().flat_map(|c| &c.filters) {
            if f.name != "envoy.filters.network.http_connection_manager" {
                continue;
            }
            managers += 1;
            let hcm: HttpConnectionManager = typed(&f.config_type);
            let [log] = hcm.access_log.as_slice() else {
                panic!("{}: {:?}", before.name, hcm.access_log)
            };
            let Some(FilterSpecifier::ExtensionFilter(ext)) = log
                .filter
                .as_ref()
                .and_then(|f| f.filter_specifier.as_ref())
            else {
                panic!("{}: no extension filter: {:?}", before.name, log.filter)
            };
            assert_eq!(ext.name, super::RATE_LIMIT_FILTER);
            let Some(extension_filter::ConfigType::TypedConfig(any)) = &ext.config_type else {
                panic!()
            };
            let config = ProcessRateLimitFilter::decode(any.value.as_slice()).unwrap();
            let dynamic = config.dynamic_config.unwrap();
            assert_eq!(dynamic.resource_name, super::TAP_BUCKET);
            assert_eq!(dynamic.config_source, Some(super::ads()));
        }
    }
    assert!(managers >= 3, "{managers} connection managers");
}

#[test]
fn a_tap_logs_every_http_connection_manager_to_the_control_plane() {
    let (plain, shared) = tapped_sample(&super::ProxyTap::default());
    assert_eq!(shared.resources.len(), plain.resources.len(), "no bucket");
    let mut managers = 0;
    for (before, after) in plain.resources.iter().zip(&shared.resources) {
        assert_eq!(
            (before.type_url, &before.name),
            (after.type_url, &after.name)
        );
        assert_eq!(before.references, after.references, "{}", before.name);
        if before.type_url != LISTENER_TYPE_URL {
            assert_eq!(before.resource, after.resource, "{}", before.name);
            continue;
        }
        let listener = Listener::decode(after.resource.value.as_slice()).unwrap();
        for chain in &listener.filter_chains {
            for f in &chain.filters {
                if f.name != "envoy.filters.network.http_connection_manager" {
                    continue;
                }
                managers += 1;
                let hcm: HttpConnectionManager = typed(&f.config_type);
                let [log] = hcm.access_log.as_slice() else {
                    panic!("{}: {:?}", before.name, hcm.access_log)
                };
                assert_eq!(log.name, "envoy.access_loggers.http_grpc");
                assert_eq!(log.filter, None, "without a rate, every request is logged");
                let Some(access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
                    panic!()
                };
                let config = HttpGrpcAccessLogConfig::decode(any.value.as_slice()).unwrap();
                let common = config.common_config.unwrap();
                assert_eq!(common.log_name, "switchyard-tap");
                assert_eq!(common.transport_api_version, ApiVersion::V3 as i32);
                let ads =
                    bootstrap(&tap_opts())["dynamic_resources"]["ads_config"]["grpc_services"][0]
                        .clone();
                let mut sent = grpc_service_json(&common.grpc_service.unwrap());
                sent["google_grpc"]["stat_prefix"] = json!("xds");
                assert_eq!(sent, ads, "the tap reaches the control plane as ADS does");
                // No request header is logged; of the response, the gRPC status only.
                assert!(config.additional_request_headers_to_log.is_empty());
                assert_eq!(config.additional_response_headers_to_log, ["grpc-status"]);
                assert_eq!(config.additional_response_trailers_to_log, ["grpc-status"]);
            }
        }
    }
    // The outbound HTTP listener and the inbound HTTP port's two chains.
    assert!(managers >= 3, "{managers} connection managers");
}
