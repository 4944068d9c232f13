//! Tests of the translation: real Envoy adapter output through the xDS client into the runtime
//! model, the NACKs of what the proxy does not implement, and the translation's own rules.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{Cluster, OutlierDetection as PbOutlierDetection, cluster},
            core::v3::{DataSource, Node, data_source},
            endpoint::v3::{ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
            listener::v3::{Filter, FilterChain as PbFilterChain, FilterChainMatch, Listener},
            rbac::v3::{
                Permission as PbPermission, Policy as PbPolicy, Principal as PbPrincipal,
                Rbac as Rules, permission, principal, rbac::Action,
            },
            route::v3::{
                HeaderMatcher, RetryPolicy as PbRetryPolicy, Route as PbRoute,
                RouteAction as PbRouteAction, RouteConfiguration, RouteMatch as PbRouteMatch,
                VirtualHost as PbVirtualHost, header_matcher, route, route_action, route_match,
            },
        },
        extensions::{
            filters::{
                http::{
                    rbac::v3::{Rbac as HttpRbac, RbacPerRoute},
                    router::v3::Router,
                },
                network::{
                    http_connection_manager::v3::{
                        HttpConnectionManager, HttpFilter,
                        http_connection_manager::{
                            ForwardClientCertDetails, RouteSpecifier, SetCurrentClientCertDetails,
                        },
                        http_filter,
                    },
                    rbac::v3::Rbac as NetworkRbac,
                    tcp_proxy::v3::{TcpProxy as PbTcpProxy, tcp_proxy},
                },
            },
            transport_sockets::tls::v3::{Secret, TlsCertificate, secret},
        },
        service::discovery::v3::{DeltaDiscoveryResponse, Resource as WireResource},
        r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher},
    },
    google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value},
};
use switchyard_adapters::{
    envoy::{self as adapter, EnvoyOptions, LoadBalancing},
    model::{AccessMode, Authorization, MeshSettings, ProxyConfig},
    test_support::{
        BUNDLE_PEM, CERT_PEM, KEY_PEM, demo_client, demo_server, local_options, mesh, open_to_all,
        served,
    },
};
use switchyard_proxy_config::test_support::{
    ads, any, eds_cluster, router, socket, static_cluster, tcp_proxy, typed,
};

use super::*;
use crate::xds::{Config, DeltaClient, TypeUrl};

// === fixtures: the mesh model ===

const BUNDLE: &str = "spiffe://cluster.local";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/demo/sa/client";
const WEB_ID: &str = "spiffe://cluster.local/ns/demo/sa/web";
const ADMIN_ID: &str = "spiffe://cluster.local/ns/ops/sa/admin";

// === fixtures: the xDS client ===

fn node() -> Node {
    Node {
        id: "sidecar".to_owned(),
        ..Default::default()
    }
}

fn wire(name: &str, resource: Any) -> WireResource {
    WireResource {
        name: name.to_owned(),
        version: "1".to_owned(),
        resource: Some(resource),
        ..Default::default()
    }
}

fn response(ty: TypeUrl, resources: Vec<WireResource>) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: ty.type_url().to_owned(),
        nonce: "n".to_owned(),
        resources,
        ..Default::default()
    }
}

/// Compiles a proxy with the Envoy adapter, adds its secrets when `opts.mtls`, and feeds
/// everything to a fresh xDS client, type by type in the order Envoy subscribes; every
/// response must be ACKed and every resource held.
fn accept(proxy: &ProxyConfig, mesh: &MeshSettings, opts: &EnvoyOptions) -> Config {
    let resources = served(proxy, mesh, opts);
    let mut client = DeltaClient::new(node());
    let order = [
        TypeUrl::Cluster,
        TypeUrl::Listener,
        TypeUrl::ClusterLoadAssignment,
        TypeUrl::RouteConfiguration,
        TypeUrl::Secret,
    ];
    for ty in order {
        let of_type: Vec<WireResource> = resources
            .iter()
            .filter(|r| r.type_url == ty.type_url())
            .map(|r| wire(&r.name, r.resource.clone()))
            .collect();
        let outcome = client.handle_response(response(ty, of_type));
        assert!(outcome.rejected.is_none(), "{ty}: {:?}", outcome.rejected);
    }
    for r in &resources {
        let ty = TypeUrl::from_type_url(r.type_url).unwrap();
        assert!(
            client.config().contains(ty, &r.name),
            "{ty} {} not held",
            r.name
        );
    }
    assert!(client.is_synced());
    client.config().clone()
}

/// `accept`, then the translation, which must have nothing to warn about.
fn runtime(proxy: &ProxyConfig, mesh: &MeshSettings, opts: &EnvoyOptions) -> Runtime {
    let rt = accept(proxy, mesh, opts).runtime();
    assert!(rt.warnings.is_empty(), "{:?}", rt.warnings);
    rt
}

/// The message of the NACK of a response of one resource (which must be rejected).
fn nack(ty: TypeUrl, name: &str, resource: Any) -> String {
    let mut client = DeltaClient::new(node());
    let outcome = client.handle_response(response(ty, vec![wire(name, resource)]));
    let Some(error) = outcome.rejected else {
        panic!("{ty} {name} was accepted");
    };
    assert!(!client.config().contains(ty, name));
    error.to_string()
}

// === fixtures: hand-made resources ===

fn tcp_listener(name: &str, filters: Vec<Filter>) -> Listener {
    Listener {
        name: name.to_owned(),
        address: Some(socket("127.0.0.1", 7000)),
        filter_chains: vec![PbFilterChain {
            filters,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn tcp_proxy_filter(cluster: &str) -> Filter {
    tcp_proxy("tcp", cluster)
}

/// A TCP listener `l` whose network RBAC filter `rbac` guards a TCP proxy to `c`.
fn rbac_listener(rbac: &NetworkRbac) -> Listener {
    tcp_listener(
        "l",
        vec![
            typed("envoy.filters.network.rbac", rbac),
            tcp_proxy_filter("c"),
        ],
    )
}

fn hcm_listener(name: &str, hcm: HttpConnectionManager) -> Listener {
    tcp_listener(
        name,
        vec![typed("envoy.filters.network.http_connection_manager", &hcm)],
    )
}

/// An HTTP connection manager on RDS `name`.
fn rds_hcm(name: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: name.to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds {
                config_source: Some(ads()),
                route_config_name: name.to_owned(),
            },
        )),
        http_filters: vec![router()],
        ..Default::default()
    }
}

fn regex_matcher(pattern: &str) -> RegexMatcher {
    RegexMatcher {
        regex: pattern.to_owned(),
        ..Default::default()
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(s.to_owned())),
        ..Default::default()
    }
}

fn to_cluster(cluster: &str) -> Option<route::Action> {
    Some(route::Action::Route(PbRouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
        ..Default::default()
    }))
}

fn prefix(p: &str) -> PbRouteMatch {
    PbRouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.to_owned())),
        ..Default::default()
    }
}

fn pb_route(r#match: PbRouteMatch, cluster: &str) -> PbRoute {
    PbRoute {
        name: "r".to_owned(),
        r#match: Some(r#match),
        action: to_cluster(cluster),
        ..Default::default()
    }
}

/// A route configuration `rc` with one virtual host for `*` holding `routes`.
fn route_config(routes: Vec<PbRoute>) -> RouteConfiguration {
    RouteConfiguration {
        name: "rc".to_owned(),
        virtual_hosts: vec![PbVirtualHost {
            name: "vh".to_owned(),
            domains: vec!["*".to_owned()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn assignment(name: &str, addresses: &[(&str, u16)]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: addresses
                .iter()
                .map(|(ip, port)| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
                        envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                            address: Some(socket(ip, *port)),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn inline(s: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.to_owned())),
        ..Default::default()
    }
}

fn allow_rules(policies: Vec<(&str, PbPolicy)>) -> Rules {
    Rules {
        action: Action::Allow as i32,
        policies: policies
            .into_iter()
            .map(|(n, p)| (n.to_owned(), p))
            .collect(),
        ..Default::default()
    }
}

fn any_policy() -> PbPolicy {
    PbPolicy {
        permissions: vec![PbPermission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![PbPrincipal {
            identifier: Some(principal::Identifier::Any(true)),
        }],
        ..Default::default()
    }
}

// === a minimal evaluator, to assert behaviour rather than structure ===

fn string_matches(m: &StringMatch, value: Option<&str>) -> bool {
    let Some(v) = value else {
        return false;
    };
    match m {
        StringMatch::Exact(s) => v == s,
        StringMatch::Prefix(s) => v.starts_with(s.as_str()),
        StringMatch::Suffix(s) => v.ends_with(s.as_str()),
        StringMatch::Contains(s) => v.contains(s.as_str()),
        StringMatch::Regex(r) => r.is_match(v),
        StringMatch::Present => true,
    }
}

/// A request: path, and headers (pseudo-headers included) by lower-case name.
struct Request<'a> {
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

fn header_matches(h: &HeaderMatch, req: &Request<'_>) -> bool {
    string_matches(&h.matcher, req.header(&h.name)) != h.invert
}

fn permits(p: &Permission, req: &Request<'_>) -> bool {
    match p {
        Permission::Any => true,
        Permission::And(all) => all.iter().all(|p| permits(p, req)),
        Permission::Or(some) => some.iter().any(|p| permits(p, req)),
        Permission::Not(p) => !permits(p, req),
        Permission::UrlPath(m) => string_matches(m, Some(req.path)),
        Permission::Header(h) => header_matches(h, req),
        Permission::DestinationPort(_) => false,
    }
}

fn principal_matches(p: &Principal, peer: Option<&str>) -> bool {
    match p {
        Principal::Any => true,
        Principal::And(all) => all.iter().all(|p| principal_matches(p, peer)),
        Principal::Or(some) => some.iter().any(|p| principal_matches(p, peer)),
        Principal::Not(p) => !principal_matches(p, peer),
        Principal::Authenticated(m) => string_matches(m, peer),
    }
}

/// Whether an ALLOW RBAC lets `peer` make `req`.
fn allows(rbac: &Rbac, peer: Option<&str>, req: &Request<'_>) -> bool {
    rbac.policies.iter().any(|(_, p)| {
        p.permissions.iter().any(|perm| permits(perm, req))
            && p.principals.iter().any(|pr| principal_matches(pr, peer))
    })
}

fn route_matches(m: &RouteMatch, req: &Request<'_>) -> bool {
    let path = match &m.path {
        PathMatch::Prefix(p) => req.path.starts_with(p.as_str()),
        PathMatch::Exact(p) => req.path == p,
        PathMatch::Regex(r) => r.is_match(req.path),
    };
    path && m.headers.iter().all(|h| header_matches(h, req))
}

// === helpers on the runtime model ===

fn http(chain: &FilterChain) -> &HttpManager {
    match &chain.filter {
        NetworkFilter::Http(hcm) => hcm,
        other => panic!("not HTTP: {other:?}"),
    }
}

fn tcp(chain: &FilterChain) -> &TcpProxy {
    match &chain.filter {
        NetworkFilter::Tcp(tcp) => tcp,
        other => panic!("not TCP: {other:?}"),
    }
}

fn vhost<'a>(table: &'a RouteTable, name: &str) -> &'a VirtualHost {
    table
        .virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no virtual host {name}"))
}

fn policy_names(rbac: &Rbac) -> Vec<&str> {
    rbac.policies.iter().map(|(n, _)| n.as_str()).collect()
}

fn clusters(list: &[(String, u32)]) -> Vec<(&str, u32)> {
    list.iter().map(|(n, w)| (n.as_str(), *w)).collect()
}

// === real adapter output ===

#[test]
fn client_proxy_routes_split_and_retries() {
    for mtls in [false, true] {
        let rt = runtime(
            &demo_client(),
            &mesh(AccessMode::Strict),
            &local_options(mtls),
        );

        let outbound = &rt.listeners["outbound_http"];
        assert_eq!(
            outbound.address,
            "127.0.1.5:15001".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(outbound.direction, Direction::Outbound);
        let [chain] = outbound.chains.as_slice() else {
            panic!("{:?}", outbound.chains)
        };
        assert_eq!(chain.matches, ChainMatch::ANY);
        assert!(
            chain.tls.is_none(),
            "the application talks plaintext to its proxy"
        );
        let hcm = http(chain);
        assert!(matches!(&hcm.routes, RouteSource::Rds(name) if name == "outbound_http"));
        assert!(hcm.rbac.is_none());
        // What the application claims as its certificate does not leave the Pod.
        assert_eq!(hcm.forward_client_cert, ForwardClientCert::Sanitize);
        assert_eq!(
            hcm.denied,
            DeniedReply {
                status: 403,
                body: "RBAC: access denied".to_owned()
            }
        );

        let table = &rt.routes["outbound_http"];
        let web = vhost(table, "demo/web|80");
        for domain in [
            "web",
            "web:80",
            "web.demo",
            "web.demo.svc.cluster.local:80",
            "10.96.0.10",
            "10.96.0.10:80",
        ] {
            assert!(
                web.domains.iter().any(|d| d == domain),
                "{domain}: {:?}",
                web.domains
            );
        }
        assert!(web.rbac.is_none());
        let [canary, split] = web.routes.as_slice() else {
            panic!("{:?}", web.routes)
        };
        assert_eq!(canary.name, "demo/canary");
        assert_eq!(clusters(&canary.action.clusters), [("demo/web-v2|80", 1)]);
        assert_eq!(split.name, "demo/web-split");
        assert_eq!(
            clusters(&split.action.clusters),
            [("demo/web-v1|80", 90), ("demo/web-v2|80", 10)]
        );
        for r in [canary, split] {
            assert_eq!(r.action.timeout, Some(Duration::from_secs(15)));
            assert_eq!(
                r.action.retry,
                Some(RetryPolicy {
                    num_retries: 2,
                    retry_on: RetryOn {
                        connect_failure: true,
                        refused_stream: true,
                        reset_before_request: true,
                        server_error: false,
                        gateway_error: false,
                    },
                    other_hosts: true,
                    per_try_timeout: None,
                })
            );
        }

        // The canary route: the path regex in full, a method alternative and a header regex.
        let get = |path, canary| Request {
            path,
            headers: if canary {
                &[(":method", "GET"), ("x-canary", "yes")]
            } else {
                &[(":method", "GET")]
            },
        };
        assert!(route_matches(&canary.matcher, &get("/api/users", true)));
        assert!(route_matches(&canary.matcher, &get("/api/", true)));
        assert!(
            !route_matches(&canary.matcher, &get("/api", true)),
            "anchored at the end"
        );
        assert!(
            !route_matches(&canary.matcher, &get("/v1/api/users", true)),
            "anchored"
        );
        assert!(!route_matches(&canary.matcher, &get("/api/users", false)));
        let post = Request {
            path: "/api/users",
            headers: &[(":method", "POST"), ("x-canary", "true")],
        };
        assert!(!route_matches(&canary.matcher, &post));
        let getx = Request {
            path: "/api/users",
            headers: &[(":method", "GETX"), ("x-canary", "true")],
        };
        assert!(
            !route_matches(&canary.matcher, &getx),
            "method alternatives are anchored"
        );
        let not_canary = Request {
            path: "/api/users",
            headers: &[(":method", "HEAD"), ("x-canary", "truely")],
        };
        assert!(!route_matches(&canary.matcher, &not_canary));
        assert!(
            route_matches(&split.matcher, &post),
            "the split takes the rest"
        );

        // TCP: the 50/50 split, sorted by cluster.
        let db = &rt.listeners["outbound_tcp|5432"];
        assert_eq!(db.address, "127.0.1.5:5432".parse::<SocketAddr>().unwrap());
        let tcp = tcp(&db.chains[0]);
        assert_eq!(
            clusters(&tcp.clusters),
            [("demo/db-a|5432", 50), ("demo/db-b|5432", 50)]
        );
        assert!(tcp.rbac.is_none());

        // Clusters: EDS endpoints, timeouts, outlier detection, protocol.
        let v1 = &rt.clusters["demo/web-v1|80"];
        assert_eq!(v1.connect_timeout, Duration::from_secs(1));
        assert!(!v1.http2);
        assert_eq!(
            v1.outlier,
            Some(OutlierDetection {
                consecutive_5xx: 5,
                consecutive_gateway_failure: Some(3),
                base_ejection_time: Duration::from_secs(30),
                max_ejection_percent: 50,
            })
        );
        let addresses: Vec<String> = v1.endpoints.iter().map(|e| e.address.to_string()).collect();
        assert_eq!(addresses, ["10.0.0.1:8080", "10.0.0.2:8080"]);
        assert!(v1.endpoints.iter().all(|e| e.weight == 1));
        assert!(rt.clusters["demo/grpc|9000"].http2);
        assert!(v1.tls_default.is_none());

        let mtls_label: BTreeMap<String, String> =
            [("switchyard.dev/tls".to_owned(), "mtls".to_owned())].into();
        let v2 = &rt.clusters["demo/web-v2|80"];
        let labels: Vec<(String, bool)> = v2
            .endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.socket_labels == mtls_label))
            .collect();
        assert_eq!(
            labels,
            [
                ("10.0.0.3:8080".to_owned(), mtls),
                ("10.0.0.4:8080".to_owned(), false)
            ]
        );
        if mtls {
            let [m] = v2.tls_matches.as_slice() else {
                panic!("{:?}", v2.tls_matches)
            };
            assert_eq!(m.name, "mtls");
            assert_eq!(m.labels, mtls_label);
            assert_eq!(
                m.tls,
                Some(UpstreamTls {
                    certificate: CLIENT_ID.to_owned(),
                    trust_bundle: BUNDLE.to_owned(),
                    peer_sans: vec![WEB_ID.to_owned()],
                    alpn: vec!["http/1.1".to_owned()],
                    tls13_only: true,
                })
            );
            let grpc = &rt.clusters["demo/grpc|9000"].tls_matches[0];
            let grpc = grpc.tls.as_ref().unwrap();
            assert_eq!(grpc.alpn, ["h2"]);
            assert_eq!(grpc.peer_sans, ["spiffe://cluster.local/ns/demo/sa/grpc"]);
            // db-a has no meshed endpoint, so no match at all.
            assert!(rt.clusters["demo/db-a|5432"].tls_matches.is_empty());
            assert!(
                rt.clusters["demo/db-b|5432"].tls_matches[0]
                    .tls
                    .as_ref()
                    .unwrap()
                    .alpn
                    .is_empty()
            );

            assert_eq!(
                *rt.secrets[CLIENT_ID],
                SecretMaterial::Certificate {
                    chain_pem: CERT_PEM.to_owned(),
                    private_key_pem: KEY_PEM.to_owned(),
                }
            );
            assert_eq!(
                *rt.secrets[BUNDLE],
                SecretMaterial::TrustBundle {
                    ca_pem: BUNDLE_PEM.to_owned()
                }
            );
            let debug = format!("{:?}", rt.secrets[CLIENT_ID]);
            assert!(!debug.contains("MIIBkey"), "{debug}");
        } else {
            assert!(rt.clusters.values().all(|c| c.tls_matches.is_empty()));
            assert!(rt.secrets.is_empty());
        }
    }
}

#[test]
fn least_request_clusters_are_accepted() {
    let opts = EnvoyOptions {
        load_balancing: LoadBalancing::LeastRequest,
        ..local_options(true)
    };
    let rt = runtime(&demo_client(), &mesh(AccessMode::Strict), &opts);
    assert_eq!(rt.clusters.len(), 5);
}

#[test]
fn strict_server_with_mtls_enforces_traffic_targets() {
    let rt = runtime(
        &demo_server(),
        &mesh(AccessMode::Strict),
        &local_options(true),
    );

    let expected_tls = |alpn: &[&str]| DownstreamTls {
        certificate: WEB_ID.to_owned(),
        trust_bundle: Some(BUNDLE.to_owned()),
        require_client_certificate: true,
        peer_sans: Vec::new(),
        alpn: alpn.iter().map(|s| (*s).to_owned()).collect(),
        tls13_only: true,
    };

    // HTTP 8080: one TLS chain only (plaintext fails the handshake), RBAC denying by default,
    // the port's policy in the route configuration.
    let l = &rt.listeners["inbound|8080"];
    assert_eq!(l.address, "127.0.1.5:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(l.direction, Direction::Inbound);
    let [chain] = l.chains.as_slice() else {
        panic!("{:?}", l.chains)
    };
    assert_eq!(chain.matches, ChainMatch::ANY);
    assert_eq!(chain.tls, Some(expected_tls(&["h2", "http/1.1"])));
    let hcm = http(chain);
    assert!(matches!(&hcm.routes, RouteSource::Rds(name) if name == "inbound|8080"));
    // The application learns the caller from the certificate the handshake verified.
    assert_eq!(
        hcm.forward_client_cert,
        ForwardClientCert::SanitizeSet { uri: true }
    );
    let default = hcm.rbac.as_ref().expect("the HTTP RBAC filter");
    assert!(default.policies.is_empty(), "denies everything by default");
    assert_eq!(
        hcm.denied,
        DeniedReply {
            status: 403,
            body: "denied by mesh policy\n".to_owned()
        }
    );

    let table = &rt.routes["inbound|8080"];
    let vh = vhost(table, "inbound|8080");
    assert_eq!(vh.domains, ["*"]);
    let [local] = vh.routes.as_slice() else {
        panic!("{:?}", vh.routes)
    };
    assert_eq!(clusters(&local.action.clusters), [("inbound|8080", 1)]);
    assert_eq!(local.action.timeout, None, "0s is no timeout");
    assert!(local.action.retry.is_none());
    assert!(local.rbac.is_none());
    let Some(Some(rbac)) = &vh.rbac else {
        panic!("{:?}", vh.rbac)
    };
    assert_eq!(policy_names(rbac), ["demo/web-admins", "demo/web-readers"]);
    let (_, readers) = &rbac.policies[1];
    assert!(matches!(
        readers.principals.as_slice(),
        [Principal::Authenticated(StringMatch::Exact(id))] if id == CLIENT_ID
    ));

    let req = |method, path, canary: Option<&'static str>| {
        let mut headers = vec![(":method", method)];
        headers.extend(canary.map(|v| ("x-canary", v)));
        (path, headers)
    };
    let check = |peer: Option<&str>, (path, headers): (&str, Vec<(&str, &str)>)| {
        allows(
            rbac,
            peer,
            &Request {
                path,
                headers: &headers,
            },
        )
    };
    let client = Some(CLIENT_ID);
    assert!(check(client, req("GET", "/api/orders", Some("true"))));
    assert!(check(client, req("HEAD", "/api/orders", Some("yes"))));
    assert!(
        !check(client, req("GET", "/api/orders", Some("no"))),
        "header regex"
    );
    assert!(
        !check(client, req("GET", "/api/orders", None)),
        "header required"
    );
    assert!(
        !check(client, req("POST", "/api/orders", Some("true"))),
        "method"
    );
    assert!(
        !check(client, req("GET", "/apix", Some("true"))),
        "path regex"
    );
    assert!(check(client, req("GET", "/healthz", None)));
    assert!(!check(client, req("GET", "/healthz/x", None)), "anchored");
    assert!(!check(client, req("PUT", "/healthz", None)));
    assert!(check(Some(ADMIN_ID), req("DELETE", "/anything", None)));
    assert!(
        !check(Some(WEB_ID), req("GET", "/healthz", None)),
        "not a source"
    );
    assert!(
        !check(None, req("GET", "/healthz", None)),
        "plaintext has no identity"
    );

    // HTTP/2 9090 admits everyone: the override turns RBAC off.
    let vh = vhost(&rt.routes["inbound|9090"], "inbound|9090");
    assert!(matches!(vh.rbac, Some(None)), "{:?}", vh.rbac);
    assert!(rt.clusters["inbound|9090"].http2);
    assert_eq!(
        rt.listeners["inbound|9090"].chains[0].tls,
        Some(expected_tls(&["h2", "http/1.1"]))
    );

    // TCP 7000: only the rule's sources pass the handshake; network RBAC in front of the
    // application.
    let chain = &rt.listeners["inbound|7000"].chains[0];
    assert_eq!(
        chain.tls,
        Some(DownstreamTls {
            peer_sans: vec![CLIENT_ID.to_owned()],
            ..expected_tls(&[])
        })
    );
    let tcp = tcp(chain);
    assert_eq!(clusters(&tcp.clusters), [("inbound|7000", 1)]);
    let rbac = tcp.rbac.as_ref().expect("network RBAC");
    assert_eq!(policy_names(rbac), ["demo/db-clients"]);
    let any = Request {
        path: "",
        headers: &[],
    };
    assert!(allows(rbac, client, &any));
    assert!(!allows(rbac, Some(ADMIN_ID), &any));

    // TCP 5433 admits no one: the connection is closed without connecting anywhere.
    let l = &rt.listeners["inbound|5433"];
    assert_eq!(l.chains.len(), 1);
    assert!(matches!(l.chains[0].filter, NetworkFilter::Close));

    // The application's own clusters: STATIC, plaintext.
    let app = &rt.clusters["inbound|8080"];
    assert_eq!(
        *app.endpoints,
        [Endpoint {
            address: "127.0.0.1:8080".parse().unwrap(),
            weight: 1,
            socket_labels: BTreeMap::new(),
        }]
    );
    assert!(app.tls_default.is_none() && app.tls_matches.is_empty() && app.outlier.is_none());
    assert_eq!(app.connect_timeout, Duration::from_secs(1));

    assert_eq!(
        rt.listeners["inbound|8080"]
            .secret_names()
            .collect::<Vec<_>>(),
        [WEB_ID, BUNDLE]
    );
    assert!(matches!(
        *rt.secrets[WEB_ID],
        SecretMaterial::Certificate { .. }
    ));
}

#[test]
fn strict_server_without_mtls_is_plaintext_and_still_denies() {
    let rt = runtime(
        &demo_server(),
        &mesh(AccessMode::Strict),
        &local_options(false),
    );
    for l in rt.listeners.values() {
        assert_eq!(l.chains.len(), 1, "{}", l.name);
        assert!(l.chains[0].tls.is_none(), "{}", l.name);
    }
    assert!(matches!(
        rt.listeners["inbound|5433"].chains[0].filter,
        NetworkFilter::Close
    ));
    let vh = vhost(&rt.routes["inbound|8080"], "inbound|8080");
    let Some(Some(rbac)) = &vh.rbac else {
        panic!("{:?}", vh.rbac)
    };
    // Principals need a certificate: without mTLS nobody is admitted.
    let req = Request {
        path: "/healthz",
        headers: &[(":method", "GET")],
    };
    assert!(!allows(rbac, None, &req));
    assert!(rt.secrets.is_empty());
}

#[test]
fn permissive_server_accepts_tls_and_plaintext() {
    let rt = runtime(
        &open_to_all(demo_server()),
        &mesh(AccessMode::Permissive),
        &local_options(true),
    );
    let l = &rt.listeners["inbound|8080"];
    let [tls, plain] = l.chains.as_slice() else {
        panic!("{:?}", l.chains)
    };
    assert_eq!(tls.name, "mtls");
    assert_eq!(
        tls.matches,
        ChainMatch {
            transport_protocol: Some(TransportProtocol::Tls),
            ..ChainMatch::ANY
        }
    );
    assert!(
        tls.tls
            .as_ref()
            .is_some_and(|t| t.require_client_certificate)
    );
    assert_eq!(plain.name, "plaintext");
    assert_eq!(plain.matches, ChainMatch::ANY);
    assert!(plain.tls.is_none());
    for chain in [tls, plain] {
        assert!(matches!(&http(chain).routes, RouteSource::Rds(n) if n == "inbound|8080"));
        // Set from a client certificate, which only the TLS chain can have; removed otherwise.
        assert_eq!(
            http(chain).forward_client_cert,
            ForwardClientCert::SanitizeSet { uri: true }
        );
    }
    for port in [8080, 9090] {
        let name = format!("inbound|{port}");
        let vh = vhost(&rt.routes[&name], &name);
        assert!(matches!(vh.rbac, Some(None)), "{name}: RBAC is off");
    }
    // TCP ports allow everyone: no RBAC, and the deny-all port is open too.
    for port in [7000, 5433] {
        let l = &rt.listeners[&format!("inbound|{port}")];
        assert_eq!(l.chains.len(), 2);
        for chain in &l.chains {
            assert!(tcp(chain).rbac.is_none(), "{port}");
        }
    }

    let rt = runtime(
        &open_to_all(demo_server()),
        &mesh(AccessMode::Permissive),
        &local_options(false),
    );
    let l = &rt.listeners["inbound|8080"];
    assert_eq!(l.chains.len(), 1);
    assert_eq!(l.chains[0].matches, ChainMatch::ANY);
    assert!(l.chains[0].tls.is_none());
}

/// A proxy that is client and server at once, with every kind of port and rule.
fn rich_proxy() -> ProxyConfig {
    let mut proxy = demo_client();
    proxy.inbound = demo_server().inbound;
    proxy
}

#[test]
fn everything_the_envoy_adapter_emits_is_accepted() {
    for access_mode in [AccessMode::Strict, AccessMode::Permissive] {
        for mtls in [false, true] {
            for load_balancing in [LoadBalancing::RoundRobin, LoadBalancing::LeastRequest] {
                let mesh = mesh(access_mode);
                let opts = EnvoyOptions {
                    load_balancing,
                    ..local_options(mtls)
                };
                let out = adapter::compile(&rich_proxy(), &mesh, &opts);
                let config = accept(&rich_proxy(), &mesh, &opts);
                let rt = config.runtime();
                assert!(rt.warnings.is_empty(), "{:?}", rt.warnings);
                let count = |ty: TypeUrl| {
                    out.resources
                        .iter()
                        .filter(|r| r.type_url == ty.type_url())
                        .count()
                };
                assert_eq!(rt.listeners.len(), count(TypeUrl::Listener));
                assert_eq!(rt.clusters.len(), count(TypeUrl::Cluster));
                assert_eq!(rt.routes.len(), count(TypeUrl::RouteConfiguration));
                assert_eq!(rt.secrets.len(), if mtls { 2 } else { 0 });
                // Every cluster a route or TCP proxy names exists.
                for table in rt.routes.values() {
                    for c in table.cluster_names() {
                        assert!(rt.clusters.contains_key(c), "{c}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_policy_change_arrives_as_a_new_route_table() {
    let mesh = mesh(AccessMode::Strict);
    let mut client = DeltaClient::new(node());
    let feed = |client: &mut DeltaClient, proxy: &ProxyConfig| {
        let out = adapter::compile(proxy, &mesh, &local_options(false));
        for ty in [
            TypeUrl::Cluster,
            TypeUrl::Listener,
            TypeUrl::RouteConfiguration,
        ] {
            let of_type = out
                .resources
                .iter()
                .filter(|r| r.type_url == ty.type_url())
                .map(|r| wire(&r.name, r.resource.clone()))
                .collect();
            assert!(
                client
                    .handle_response(response(ty, of_type))
                    .rejected
                    .is_none()
            );
        }
    };
    feed(&mut client, &demo_server());
    let before = client.config().runtime();
    let mut opened = demo_server();
    opened.inbound[0].authorization = Authorization::AllowAll;
    feed(&mut client, &opened);
    let after = client.config().runtime();
    let rbac = |rt: &Runtime| {
        vhost(&rt.routes["inbound|8080"], "inbound|8080")
            .rbac
            .clone()
    };
    assert!(matches!(rbac(&before), Some(Some(_))));
    assert!(matches!(rbac(&after), Some(None)));
    // The listener itself did not change.
    assert!(matches!(
        &http(&after.listeners["inbound|8080"].chains[0]).routes,
        RouteSource::Rds(n) if n == "inbound|8080"
    ));
}

// === NACKs: what the proxy does not implement is refused, naming resource and field ===

#[test]
fn bad_regexes_are_nacked_with_the_field() {
    let regex_route = |pattern: &str| {
        let m = PbRouteMatch {
            path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex_matcher(
                pattern,
            ))),
            ..Default::default()
        };
        any(&route_config(vec![
            pb_route(prefix("/"), "a"),
            pb_route(m, "b"),
        ]))
    };
    assert_eq!(
        nack(TypeUrl::RouteConfiguration, "rc", regex_route("/a[")),
        "route configuration rc: virtual_hosts[0].routes[1].match.safe_regex.regex: \
         not a valid regular expression"
    );
    // Wrapped in `^(?:…)$` this would parse as an unanchored alternation.
    assert_eq!(
        nack(TypeUrl::RouteConfiguration, "rc", regex_route("a)|(b")),
        "route configuration rc: virtual_hosts[0].routes[1].match.safe_regex.regex: \
         not a valid regular expression"
    );
    assert_eq!(
        nack(
            TypeUrl::RouteConfiguration,
            "rc",
            regex_route("(?:[a-z]{100}){100}{100}")
        ),
        "route configuration rc: virtual_hosts[0].routes[1].match.safe_regex.regex: \
         regular expression is too large"
    );
    // Backreferences and lookaround are not RE2 either.
    for pattern in [r"(a)\1", "a(?=b)"] {
        assert!(
            nack(TypeUrl::RouteConfiguration, "rc", regex_route(pattern)).contains("not a valid")
        );
    }

    let header = HeaderMatcher {
        name: "x-user".to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex_matcher("("))),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let m = PbRouteMatch {
        headers: vec![header],
        ..prefix("/")
    };
    assert_eq!(
        nack(
            TypeUrl::RouteConfiguration,
            "rc",
            any(&route_config(vec![pb_route(m, "a")]))
        ),
        "route configuration rc: virtual_hosts[0].routes[0].match.headers[0].string_match.\
         safe_regex.regex: not a valid regular expression"
    );
}

#[test]
fn unsupported_route_features_are_nacked() {
    let with_path = |spec: route_match::PathSpecifier| {
        let m = PbRouteMatch {
            path_specifier: Some(spec),
            ..Default::default()
        };
        any(&route_config(vec![pb_route(m, "a")]))
    };
    assert_eq!(
        nack(
            TypeUrl::RouteConfiguration,
            "rc",
            with_path(route_match::PathSpecifier::ConnectMatcher(
                Default::default()
            ))
        ),
        "route configuration rc: virtual_hosts[0].routes[0].match.connect_matcher: \
         CONNECT requests are not supported"
    );
    assert_eq!(
        nack(
            TypeUrl::RouteConfiguration,
            "rc",
            with_path(route_match::PathSpecifier::PathSeparatedPrefix(
                "/a".to_owned()
            ))
        ),
        "route configuration rc: virtual_hosts[0].routes[0].match.path_separated_prefix: \
         path-separated prefixes are not supported"
    );

    let with_retry = |retry_on: &str| {
        let mut r = pb_route(prefix("/"), "a");
        if let Some(route::Action::Route(a)) = &mut r.action {
            a.retry_policy = Some(PbRetryPolicy {
                retry_on: retry_on.to_owned(),
                ..Default::default()
            });
        }
        any(&route_config(vec![r]))
    };
    assert_eq!(
        nack(
            TypeUrl::RouteConfiguration,
            "rc",
            with_retry("connect-failure,retriable-4xx")
        ),
        "route configuration rc: virtual_hosts[0].routes[0].route.retry_policy.retry_on: \
         only connect-failure, refused-stream, reset-before-request, 5xx and gateway-error \
         are supported"
    );

    // Ignoring a query parameter match would route more than asked.
    let m = PbRouteMatch {
        query_parameters: vec![Default::default()],
        ..prefix("/")
    };
    assert_eq!(
        nack(
            TypeUrl::RouteConfiguration,
            "rc",
            any(&route_config(vec![pb_route(m, "a")]))
        ),
        "route configuration rc: virtual_hosts[0].routes[0].match.query_parameters: \
         query parameter matches are not supported"
    );

    let mut redirect = pb_route(prefix("/"), "a");
    redirect.action = Some(route::Action::Redirect(Default::default()));
    assert_eq!(
        nack(
            TypeUrl::RouteConfiguration,
            "rc",
            any(&route_config(vec![redirect]))
        ),
        "route configuration rc: virtual_hosts[0].routes[0].redirect: only route actions \
         (to clusters) are supported"
    );

    let mut rc = route_config(vec![pb_route(prefix("/"), "a")]);
    rc.virtual_hosts.push(PbVirtualHost {
        name: "dup".to_owned(),
        domains: vec!["web".to_owned(), "*".to_owned()],
        ..Default::default()
    });
    assert_eq!(
        nack(TypeUrl::RouteConfiguration, "rc", any(&rc)),
        "route configuration rc: virtual_hosts[1].domains[1]: another virtual host has this \
         domain"
    );
}

#[test]
fn rbac_other_than_allow_is_nacked() {
    // Per route (the adapter's inbound policy), with DENY.
    let deny = HttpRbac {
        rules: Some(Rules {
            action: Action::Deny as i32,
            ..allow_rules(vec![("p", any_policy())])
        }),
        ..Default::default()
    };
    let mut rc = route_config(vec![pb_route(prefix("/"), "a")]);
    rc.virtual_hosts[0].typed_per_filter_config = [(
        "envoy.filters.http.rbac".to_owned(),
        any(&RbacPerRoute { rbac: Some(deny) }),
    )]
    .into();
    assert_eq!(
        nack(TypeUrl::RouteConfiguration, "rc", any(&rc)),
        "route configuration rc: virtual_hosts[0].typed_per_filter_config[\
         \"envoy.filters.http.rbac\"].rbac.rules.action: only ALLOW is supported"
    );

    // In a network RBAC filter, with LOG.
    let log = NetworkRbac {
        rules: Some(Rules {
            action: Action::Log as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let l = rbac_listener(&log);
    assert_eq!(
        nack(TypeUrl::Listener, "l", any(&l)),
        "listener l: filter_chains[0].filters[0].typed_config.rules.action: only ALLOW is \
         supported"
    );

    // An unsupported principal, deep inside a policy.
    let mut policy = any_policy();
    policy.principals = vec![PbPrincipal {
        identifier: Some(principal::Identifier::OrIds(principal::Set {
            ids: vec![
                PbPrincipal {
                    identifier: Some(principal::Identifier::Any(true)),
                },
                PbPrincipal {
                    identifier: Some(principal::Identifier::RemoteIp(Default::default())),
                },
            ],
        })),
    }];
    let network = NetworkRbac {
        rules: Some(allow_rules(vec![("p", policy)])),
        ..Default::default()
    };
    let l = rbac_listener(&network);
    assert_eq!(
        nack(TypeUrl::Listener, "l", any(&l)),
        "listener l: filter_chains[0].filters[0].typed_config.rules.policies[\"p\"].\
         principals[0].or_ids.ids[1].remote_ip: only any, and_ids, or_ids, not_id and \
         authenticated principals are supported"
    );

    // A header permission in a network filter would never match: refused.
    let mut policy = any_policy();
    policy.permissions = vec![PbPermission {
        rule: Some(permission::Rule::Header(HeaderMatcher {
            name: ":method".to_owned(),
            ..Default::default()
        })),
    }];
    let network = NetworkRbac {
        rules: Some(allow_rules(vec![("p", policy)])),
        ..Default::default()
    };
    let l = rbac_listener(&network);
    assert!(nack(TypeUrl::Listener, "l", any(&l)).ends_with(
        "policies[\"p\"].permissions[0].header: HTTP permissions never match in a \
             network RBAC filter"
    ));
}

#[test]
fn unsupported_listener_features_are_nacked() {
    // A network filter the proxy does not have.
    let l = tcp_listener(
        "l",
        vec![typed("envoy.filters.http.router", &Router::default())],
    );
    assert_eq!(
        nack(TypeUrl::Listener, "l", any(&l)),
        "listener l: filter_chains[0].filters[0].typed_config: only http_connection_manager, \
         tcp_proxy, rbac, connection_limit and direct_response network filters are supported"
    );
    // A chain that does not end in a terminal filter.
    let l = tcp_listener(
        "l",
        vec![typed("envoy.filters.network.rbac", &NetworkRbac::default())],
    );
    assert_eq!(
        nack(TypeUrl::Listener, "l", any(&l)),
        "listener l: filter_chains[0].filters[0]: the last filter must be \
         http_connection_manager, tcp_proxy or direct_response"
    );
    // An HTTP filter the proxy does not have (a gRPC-Web filter, by type URL only).
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(route_config(vec![]))),
        http_filters: vec![
            HttpFilter {
                name: "envoy.filters.http.grpc_web".to_owned(),
                config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                    type_url:
                        "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"
                            .to_owned(),
                    value: vec![],
                })),
                ..Default::default()
            },
            router(),
        ],
        ..Default::default()
    };
    assert_eq!(
        nack(TypeUrl::Listener, "l", any(&hcm_listener("l", hcm.clone()))),
        "listener l: filter_chains[0].filters[0].typed_config.http_filters[0].typed_config: \
         only the rbac and router HTTP filters are supported"
    );
    // …unless it is optional, which Envoy lets a proxy skip.
    let mut optional = hcm;
    optional.http_filters[0].is_optional = true;
    let mut client = DeltaClient::new(node());
    let outcome = client.handle_response(response(
        TypeUrl::Listener,
        vec![wire("l", any(&hcm_listener("l", optional)))],
    ));
    assert!(outcome.rejected.is_none(), "{:?}", outcome.rejected);

    // x-forwarded-client-cert modes that forward what the client sent, and details the
    // proxy does not produce.
    let client_cert = |mode: ForwardClientCertDetails, details: SetCurrentClientCertDetails| {
        let hcm = HttpConnectionManager {
            route_specifier: Some(RouteSpecifier::RouteConfig(route_config(vec![]))),
            http_filters: vec![router()],
            forward_client_cert_details: mode as i32,
            set_current_client_cert_details: Some(details),
            ..Default::default()
        };
        nack(TypeUrl::Listener, "l", any(&hcm_listener("l", hcm)))
    };
    let uri = SetCurrentClientCertDetails {
        uri: true,
        ..Default::default()
    };
    for mode in [
        ForwardClientCertDetails::ForwardOnly,
        ForwardClientCertDetails::AppendForward,
        ForwardClientCertDetails::AlwaysForwardOnly,
    ] {
        assert_eq!(
            client_cert(mode, uri),
            "listener l: filter_chains[0].filters[0].typed_config.forward_client_cert_details: \
             only SANITIZE and SANITIZE_SET are supported: the application must never see a \
             client's own x-forwarded-client-cert"
        );
    }
    for details in [
        SetCurrentClientCertDetails {
            subject: Some(BoolValue { value: true }),
            ..uri
        },
        SetCurrentClientCertDetails { cert: true, ..uri },
        SetCurrentClientCertDetails { chain: true, ..uri },
        SetCurrentClientCertDetails { dns: true, ..uri },
        SetCurrentClientCertDetails {
            issuer: true,
            ..uri
        },
    ] {
        assert_eq!(
            client_cert(ForwardClientCertDetails::SanitizeSet, details),
            "listener l: filter_chains[0].filters[0].typed_config.\
             set_current_client_cert_details: only uri is supported"
        );
    }

    // A direct response that answers instead of closing.
    let answer =
        envoy_types::pb::envoy::extensions::filters::network::direct_response::v3::Config {
            response: Some(inline("hello")),
        };
    let l = tcp_listener(
        "l",
        vec![typed("envoy.filters.network.direct_response", &answer)],
    );
    assert_eq!(
        nack(TypeUrl::Listener, "l", any(&l)),
        "listener l: filter_chains[0].filters[0].typed_config.response: only an empty direct \
         response (closing the connection) is supported"
    );

    // An address that is not an IP.
    let mut l = tcp_listener("l", vec![tcp_proxy_filter("c")]);
    l.address = Some(socket("web.demo", 80));
    assert_eq!(
        nack(TypeUrl::Listener, "l", any(&l)),
        "listener l: address.socket_address.address: must be an IP address"
    );

    // A filter chain match on something other than the transport protocol.
    let mut l = tcp_listener("l", vec![tcp_proxy_filter("c")]);
    l.filter_chains[0].filter_chain_match = Some(FilterChainMatch {
        server_names: vec!["web".to_owned()],
        ..Default::default()
    });
    assert_eq!(
        nack(TypeUrl::Listener, "l", any(&l)),
        "listener l: filter_chains[0].filter_chain_match.server_names: only destination_port, \
         prefix_ranges, transport_protocol and application_protocols matches are supported"
    );
}

#[test]
fn unsupported_cluster_endpoint_and_secret_features_are_nacked() {
    let ring_hash = Cluster {
        lb_policy: cluster::LbPolicy::RingHash as i32,
        ..eds_cluster("c", "")
    };
    assert_eq!(
        nack(TypeUrl::Cluster, "c", any(&ring_hash)),
        "cluster c: lb_policy: only ROUND_ROBIN and LEAST_REQUEST are supported"
    );
    let random_outlier = Cluster {
        outlier_detection: Some(PbOutlierDetection {
            enforcing_consecutive_5xx: Some(UInt32Value { value: 50 }),
            ..Default::default()
        }),
        ..eds_cluster("c", "")
    };
    assert_eq!(
        nack(TypeUrl::Cluster, "c", any(&random_outlier)),
        "cluster c: outlier_detection.enforcing_consecutive_5xx: only 0 or 100 is supported"
    );
    let static_by_name = Cluster {
        load_assignment: Some(assignment("c", &[("db.demo", 5432)])),
        ..static_cluster("c")
    };
    assert_eq!(
        nack(TypeUrl::Cluster, "c", any(&static_by_name)),
        "cluster c: load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.\
         socket_address.address: must be an IP address"
    );

    // EDS: the client subscribes to `c` once the cluster is accepted.
    let mut client = DeltaClient::new(node());
    let ok = client.handle_response(response(
        TypeUrl::Cluster,
        vec![wire("c", any(&eds_cluster("c", "")))],
    ));
    assert!(ok.rejected.is_none());
    let good = assignment("c", &[("10.0.0.1", 80)]);
    assert!(
        client
            .handle_response(response(
                TypeUrl::ClusterLoadAssignment,
                vec![wire("c", any(&good))]
            ))
            .rejected
            .is_none()
    );
    let mut failover = assignment("c", &[("10.0.0.2", 80)]);
    failover.endpoints[0].priority = 1;
    let outcome = client.handle_response(response(
        TypeUrl::ClusterLoadAssignment,
        vec![wire("c", any(&failover))],
    ));
    assert_eq!(
        outcome.rejected.map(|e| e.to_string()).as_deref(),
        Some(
            "cluster load assignment c: endpoints[0].priority: priorities (failover) are not supported"
        )
    );
    // The previous endpoints stay.
    let rt = client.config().runtime();
    let addresses: Vec<String> = rt.clusters["c"]
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(addresses, ["10.0.0.1:80"]);

    let from_file = Secret {
        name: "s".to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(DataSource {
                specifier: Some(data_source::Specifier::Filename("/etc/cert.pem".to_owned())),
                ..Default::default()
            }),
            private_key: Some(inline(KEY_PEM)),
            ..Default::default()
        })),
    };
    let mut client = DeltaClient::new(node());
    // Subscribe to `s` through a TLS cluster first, so the secret is wanted.
    let tls_cluster = {
        use envoy_types::pb::envoy::{
            config::core::v3::{TransportSocket, transport_socket},
            extensions::transport_sockets::tls::v3::{
                CommonTlsContext, SdsSecretConfig, UpstreamTlsContext,
                common_tls_context::ValidationContextType,
            },
        };
        let sds = |name: &str| SdsSecretConfig {
            name: name.to_owned(),
            sds_config: Some(ads()),
        };
        let context = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![sds("s")],
                validation_context_type: Some(
                    ValidationContextType::ValidationContextSdsSecretConfig(sds("b")),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        Cluster {
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.tls".to_owned(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(any(&context))),
            }),
            ..static_cluster("tls")
        }
    };
    assert!(
        client
            .handle_response(response(
                TypeUrl::Cluster,
                vec![wire("tls", any(&tls_cluster))]
            ))
            .rejected
            .is_none()
    );
    assert_eq!(client.subscriptions(TypeUrl::Secret), ["b", "s"]);
    let outcome =
        client.handle_response(response(TypeUrl::Secret, vec![wire("s", any(&from_file))]));
    assert_eq!(
        outcome.rejected.map(|e| e.to_string()).as_deref(),
        Some(
            "secret s: tls_certificate.certificate_chain.filename: only inline data sources are supported"
        )
    );
    assert!(client.config().secrets.is_empty());
}

// === the translation's own rules ===

/// A configuration holding exactly these resources, as the client would after ACKing them.
fn config_of(
    clusters: Vec<Cluster>,
    endpoints: Vec<ClusterLoadAssignment>,
    listeners: Vec<Listener>,
    routes: Vec<RouteConfiguration>,
) -> Config {
    let mut client = DeltaClient::new(node());
    let mut feed = |ty: TypeUrl, resources: Vec<WireResource>| {
        let outcome = client.handle_response(response(ty, resources));
        assert!(outcome.rejected.is_none(), "{:?}", outcome.rejected);
    };
    feed(
        TypeUrl::Cluster,
        clusters.iter().map(|c| wire(&c.name, any(c))).collect(),
    );
    feed(
        TypeUrl::Listener,
        listeners.iter().map(|l| wire(&l.name, any(l))).collect(),
    );
    feed(
        TypeUrl::ClusterLoadAssignment,
        endpoints
            .iter()
            .map(|e| wire(&e.cluster_name, any(e)))
            .collect(),
    );
    feed(
        TypeUrl::RouteConfiguration,
        routes.iter().map(|r| wire(&r.name, any(r))).collect(),
    );
    client.config().clone()
}

#[test]
fn missing_references_are_warnings_not_errors() {
    let hcm = HttpConnectionManager {
        stat_prefix: "in".to_owned(),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: "inline".to_owned(),
            ..route_config(vec![pb_route(prefix("/"), "gone")])
        })),
        http_filters: vec![router()],
        ..Default::default()
    };
    let config = config_of(
        vec![eds_cluster("waiting", ""), eds_cluster("served", "")],
        vec![assignment("served", &[("10.0.0.1", 80), ("10.0.0.2", 80)])],
        vec![
            hcm_listener("http", hcm),
            hcm_listener("rds", rds_hcm("rc")),
            hcm_listener("unserved", rds_hcm("never")),
            tcp_listener("tcp", vec![tcp_proxy_filter("nowhere")]),
        ],
        vec![route_config(vec![pb_route(prefix("/"), "missing")])],
    );
    let rt = config.runtime();
    // An EDS cluster whose endpoints have not come yet is there, empty.
    assert!(rt.clusters["waiting"].endpoints.is_empty());
    assert_eq!(rt.clusters["served"].endpoints.len(), 2);
    assert_eq!(
        rt.clusters["served"].connect_timeout,
        Duration::from_secs(5)
    );
    // The inline route table is listed under its own name too.
    assert!(rt.routes.contains_key("inline"));
    assert!(matches!(
        &http(&rt.listeners["http"].chains[0]).routes,
        RouteSource::Inline(t) if t.name == "inline"
    ));
    let expect = [
        "cluster waiting: no endpoints from EDS waiting yet",
        "route configuration rc: virtual host vh: route \"r\": cluster missing does not exist",
        "route configuration inline: virtual host vh: route \"r\": cluster gone does not exist",
        "listener tcp: filter chain \"\": tcp_proxy: cluster nowhere does not exist",
        "listener unserved: filter chain \"\": route configuration never does not exist",
    ];
    assert_eq!(rt.warnings.len(), expect.len(), "{:?}", rt.warnings);
    for (warning, prefix) in rt.warnings.iter().zip(expect) {
        assert!(warning.starts_with(prefix), "{warning}");
    }
}

#[test]
fn routes_take_envoys_defaults_and_overrides() {
    let timed = |timeout: Option<PbDuration>, retry: Option<PbRetryPolicy>| {
        let mut r = pb_route(prefix("/"), "a");
        if let Some(route::Action::Route(a)) = &mut r.action {
            a.timeout = timeout;
            a.retry_policy = retry;
        }
        r
    };
    let mut rc = route_config(vec![
        timed(None, None),
        timed(
            Some(PbDuration {
                seconds: 0,
                nanos: 0,
            }),
            None,
        ),
        timed(
            Some(PbDuration {
                seconds: 2,
                nanos: 500_000_000,
            }),
            Some(PbRetryPolicy {
                retry_on: "5xx, gateway-error".to_owned(),
                per_try_timeout: Some(PbDuration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            }),
        ),
    ]);
    rc.virtual_hosts[0].domains = vec!["Web.Demo:80".to_owned()];
    rc.virtual_hosts[0].retry_policy = Some(PbRetryPolicy {
        retry_on: "connect-failure".to_owned(),
        num_retries: Some(UInt32Value { value: 3 }),
        ..Default::default()
    });
    rc.virtual_hosts[0].routes[0].typed_per_filter_config = [(
        "envoy.filters.http.rbac".to_owned(),
        any(&RbacPerRoute {
            rbac: Some(HttpRbac {
                rules: Some(allow_rules(vec![("all", any_policy())])),
                ..Default::default()
            }),
        }),
    )]
    .into();
    rc.virtual_hosts[0].routes[1].typed_per_filter_config = [(
        "envoy.filters.http.rbac".to_owned(),
        any(&RbacPerRoute { rbac: None }),
    )]
    .into();
    let table = RouteTable::from_xds(&rc).unwrap();
    let vh = &table.virtual_hosts[0];
    assert_eq!(vh.domains, ["web.demo:80"], "domains are lower-cased");
    assert!(vh.rbac.is_none(), "no override");
    let [a, b, c] = vh.routes.as_slice() else {
        panic!()
    };
    assert_eq!(
        a.action.timeout,
        Some(Duration::from_secs(15)),
        "Envoy's default"
    );
    assert_eq!(b.action.timeout, None, "0s disables it");
    assert_eq!(c.action.timeout, Some(Duration::from_millis(2500)));
    // The virtual host's policy is the default; a route's own replaces it.
    let vh_retry = RetryPolicy {
        num_retries: 3,
        retry_on: RetryOn {
            connect_failure: true,
            ..RetryOn::default()
        },
        other_hosts: false,
        per_try_timeout: None,
    };
    assert_eq!(a.action.retry.as_ref(), Some(&vh_retry));
    assert_eq!(
        c.action.retry,
        Some(RetryPolicy {
            num_retries: 1,
            retry_on: RetryOn {
                server_error: true,
                gateway_error: true,
                ..RetryOn::default()
            },
            other_hosts: false,
            per_try_timeout: Some(Duration::from_secs(1)),
        })
    );
    assert!(matches!(&a.rbac, Some(Some(r)) if policy_names(r) == ["all"]));
    assert!(
        matches!(b.rbac, Some(None)),
        "an override without rbac turns RBAC off"
    );
    assert!(c.rbac.is_none());
}

#[test]
fn matchers_keep_envoys_semantics() {
    let header = |name: &str, spec, invert| HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: spec,
        invert_match: invert,
        ..Default::default()
    };
    let m = PbRouteMatch {
        case_sensitive: Some(BoolValue { value: false }),
        headers: vec![
            header(
                "X-Absent",
                Some(header_matcher::HeaderMatchSpecifier::PresentMatch(false)),
                false,
            ),
            header(
                "x-mode",
                Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    StringMatcher {
                        ignore_case: true,
                        match_pattern: Some(string_matcher::MatchPattern::Prefix(
                            "Fast.".to_owned(),
                        )),
                    },
                )),
                false,
            ),
            header("x-present", None, false),
            header(
                "x-not",
                Some(header_matcher::HeaderMatchSpecifier::StringMatch(exact(
                    "no",
                ))),
                true,
            ),
        ],
        ..prefix("/API/")
    };
    let table = RouteTable::from_xds(&route_config(vec![pb_route(m, "a")])).unwrap();
    let matcher = &table.virtual_hosts[0].routes[0].matcher;
    assert_eq!(matcher.headers[0].name, "x-absent");
    let ok: &[(&str, &str)] = &[
        ("x-mode", "FAST.lane\nx"),
        ("x-present", ""),
        ("x-not", "yes"),
    ];
    let req = |path, headers| Request { path, headers };
    assert!(route_matches(matcher, &req("/api/v1", ok)));
    assert!(
        route_matches(matcher, &req("/Api/", ok)),
        "case-insensitive path"
    );
    assert!(!route_matches(matcher, &req("/apiv1", ok)));
    assert!(!route_matches(
        matcher,
        &req(
            "/api/",
            &[
                ("x-mode", "fast."),
                ("x-present", "1"),
                ("x-not", "yes"),
                ("x-absent", "1")
            ]
        )
    ));
    assert!(!route_matches(
        matcher,
        &req("/api/", &[("x-mode", "slow"), ("x-present", "1")])
    ));
    assert!(!route_matches(
        matcher,
        &req("/api/", &[("x-mode", "fast."), ("x-not", "yes")])
    ));
    assert!(!route_matches(
        matcher,
        &req(
            "/api/",
            &[("x-mode", "fast."), ("x-present", "1"), ("x-not", "no")]
        )
    ));
}

#[test]
fn chains_keep_their_order_and_are_picked_as_envoy_picks_them() {
    let chain = |name: &str, protocol: Option<&str>| PbFilterChain {
        name: name.to_owned(),
        filter_chain_match: protocol.map(|p| FilterChainMatch {
            transport_protocol: p.to_owned(),
            ..Default::default()
        }),
        filters: vec![tcp_proxy_filter("c")],
        ..Default::default()
    };
    let l = Listener {
        name: "l".to_owned(),
        address: Some(socket("::1", 9000)),
        traffic_direction: 1,
        filter_chains: vec![
            chain("any", None),
            chain("tls", Some("tls")),
            chain("raw", Some("raw_buffer")),
        ],
        default_filter_chain: Some(chain("default", Some("tls"))),
        ..Default::default()
    };
    let built = ListenerConfig::from_xds(&l).unwrap();
    assert_eq!(built.address, "[::1]:9000".parse::<SocketAddr>().unwrap());
    assert_eq!(built.direction, Direction::Inbound);
    let names: Vec<&str> = built.chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["any", "tls", "raw", "default"]);
    // The default chain's own match is never consulted.
    assert_eq!(built.chains[3].matches, ChainMatch::ANY);
    assert_eq!(built.selector.default_chain(), Some(3));
    let to = "[::1]:9000".parse().unwrap();
    let pick = |t| {
        built
            .selector
            .select(to, t, None)
            .map(|i| built.chains[i].name.as_str())
    };
    assert_eq!(pick(TransportProtocol::Tls), Some("tls"));
    assert_eq!(pick(TransportProtocol::RawBuffer), Some("raw"));
    // Without the listener filter settings, Envoy's: 15 s, then the connection is closed.
    assert_eq!(built.filters.timeout, Some(Duration::from_secs(15)));
    assert!(!built.filters.continue_on_timeout);

    let twice = Listener {
        filter_chains: vec![chain("a", Some("tls")), chain("b", Some("tls"))],
        default_filter_chain: None,
        ..l
    };
    assert_eq!(
        nack(TypeUrl::Listener, "l", any(&twice)),
        "listener l: filter_chains[1].filter_chain_match: another filter chain has the same match"
    );
}

#[test]
fn cluster_defaults_and_static_endpoints() {
    let mut c = static_cluster("app");
    let mut cla = assignment(
        "app",
        &[
            ("127.0.0.1", 8080),
            ("127.0.0.2", 8080),
            ("127.0.0.3", 8080),
        ],
    );
    cla.endpoints[0].lb_endpoints[0].load_balancing_weight = Some(UInt32Value { value: 3 });
    // Draining endpoints get no new requests.
    cla.endpoints[0].lb_endpoints[2].health_status =
        envoy_types::pb::envoy::config::core::v3::HealthStatus::Draining as i32;
    c.load_assignment = Some(cla);
    c.outlier_detection = Some(PbOutlierDetection::default());
    let built = ClusterConfig::from_xds(&c).unwrap();
    assert_eq!(built.connect_timeout, Duration::from_secs(5));
    assert!(!built.http2);
    let weights: Vec<(String, u32)> = built
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("127.0.0.1:8080".to_owned(), 3),
            ("127.0.0.2:8080".to_owned(), 1)
        ]
    );
    assert_eq!(
        built.outlier,
        Some(OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_failure: None,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
        })
    );
}

#[test]
fn secrets_accept_inline_bytes() {
    let s = Secret {
        name: "bundle".to_owned(),
        r#type: Some(secret::Type::ValidationContext(
            envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineBytes(BUNDLE_PEM.as_bytes().to_vec())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
    };
    assert_eq!(
        SecretMaterial::from_xds(&s).unwrap(),
        SecretMaterial::TrustBundle {
            ca_pem: BUNDLE_PEM.to_owned()
        }
    );
    let empty_key = Secret {
        name: "cert".to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(CERT_PEM)),
            ..Default::default()
        })),
    };
    let error = SecretMaterial::from_xds(&empty_key).unwrap_err();
    assert_eq!(
        format!("secret cert: {error}"),
        "secret cert: tls_certificate.private_key: is required"
    );
}

#[test]
fn an_http_rbac_filter_without_rules_allows_everything() {
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(route_config(vec![]))),
        http_filters: vec![
            HttpFilter {
                name: "envoy.filters.http.rbac".to_owned(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any(
                    &HttpRbac::default(),
                ))),
                ..Default::default()
            },
            router(),
        ],
        ..Default::default()
    };
    let built = ListenerConfig::from_xds(&hcm_listener("l", hcm)).unwrap();
    let rbac = http(&built.chains[0])
        .rbac
        .clone()
        .expect("the filter is there");
    let req = Request {
        path: "/",
        headers: &[],
    };
    assert!(allows(&rbac, None, &req));

    // A router before the RBAC filter would never let it run.
    let misordered = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::RouteConfig(route_config(vec![]))),
        http_filters: vec![router(), router()],
        ..Default::default()
    };
    assert_eq!(
        nack(TypeUrl::Listener, "l", any(&hcm_listener("l", misordered))),
        "listener l: filter_chains[0].filters[0].typed_config.http_filters[0]: the router \
         must be the last HTTP filter"
    );
}

#[test]
fn a_large_configuration_translates() {
    // Many virtual hosts with regex routes, and many EDS clusters sharing nothing.
    let n = 400;
    let routes = (0..n)
        .map(|i| PbVirtualHost {
            name: format!("vh{i}"),
            domains: vec![format!("svc{i}.demo"), format!("svc{i}.demo:80")],
            routes: vec![pb_route(
                PbRouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex_matcher(
                        "/api/v[0-9]+/.*",
                    ))),
                    ..Default::default()
                },
                &format!("c{i}"),
            )],
            ..Default::default()
        })
        .collect();
    let rc = RouteConfiguration {
        name: "rc".to_owned(),
        virtual_hosts: routes,
        ..Default::default()
    };
    let eds: Vec<Cluster> = (0..n).map(|i| eds_cluster(&format!("c{i}"), "")).collect();
    let endpoints: Vec<ClusterLoadAssignment> = (0..n)
        .map(|i| assignment(&format!("c{i}"), &[("10.0.0.1", 80)]))
        .collect();
    let config = config_of(
        eds,
        endpoints,
        vec![hcm_listener("l", rds_hcm("rc"))],
        vec![rc],
    );
    let rt = config.runtime();
    let table = &rt.routes["rc"];
    assert_eq!(table.virtual_hosts.len(), n);
    let last = &table.virtual_hosts[n - 1].routes[0];
    assert!(route_matches(
        &last.matcher,
        &Request {
            path: "/api/v2/x",
            headers: &[]
        }
    ));
    assert_eq!(
        clusters(&last.action.clusters),
        [(format!("c{}", n - 1).as_str(), 1)]
    );
    assert_eq!(rt.clusters.len(), n);
    assert!(rt.warnings.is_empty(), "{:?}", rt.warnings);
}

#[test]
fn clusters_may_follow_the_downstream_http_version_with_default_settings_only() {
    use envoy_types::pb::envoy::{
        config::core::v3::{Http1ProtocolOptions, Http2ProtocolOptions},
        extensions::upstreams::http::v3::{
            HttpProtocolOptions,
            http_protocol_options::{UpstreamProtocolOptions, UseDownstreamHttpConfig},
        },
    };
    let with = |config: UseDownstreamHttpConfig| {
        let mut c = static_cluster("opaque");
        c.typed_extension_protocol_options = [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            any(&HttpProtocolOptions {
                upstream_protocol_options: Some(
                    UpstreamProtocolOptions::UseDownstreamProtocolConfig(config),
                ),
                ..Default::default()
            }),
        )]
        .into();
        ClusterConfig::from_xds(&c)
    };
    let built = with(UseDownstreamHttpConfig {
        http_protocol_options: Some(Http1ProtocolOptions::default()),
        http2_protocol_options: Some(Http2ProtocolOptions::default()),
        ..Default::default()
    })
    .unwrap();
    assert!(built.http_follows_downstream);
    assert!(!built.http2);
    let tuned = with(UseDownstreamHttpConfig {
        http2_protocol_options: Some(Http2ProtocolOptions {
            allow_connect: true,
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        tuned.to_string(),
        "typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"].use_downstream_protocol_config.http2_protocol_options: only the defaults are supported"
    );
}

#[test]
fn peer_timeouts_and_connection_limits_take_envoys_defaults_and_overrides() {
    use envoy_types::pb::{
        envoy::{
            config::core::v3::HttpProtocolOptions,
            extensions::filters::network::connection_limit::v3::ConnectionLimit as PbLimit,
        },
        google::protobuf::UInt64Value,
    };
    let secs = |seconds| PbDuration { seconds, nanos: 0 };
    let chain = |l: &Listener| ListenerConfig::from_xds(l).unwrap().chains[0].clone();

    // Unset: Envoy's defaults, no limit.
    let plain = chain(&hcm_listener("l", rds_hcm("h")));
    assert_eq!(http(&plain).timeouts, HttpTimeouts::default());
    assert_eq!(
        http(&plain).timeouts,
        HttpTimeouts {
            request_headers: None,
            idle: Some(Duration::from_secs(3600)),
            stream_idle: Some(Duration::from_secs(300)),
        }
    );
    assert!(plain.connection_limit.is_none());
    let tcp_chain = chain(&tcp_listener("l", vec![tcp_proxy_filter("c")]));
    assert_eq!(
        tcp(&tcp_chain).idle_timeout,
        Some(Duration::from_secs(3600))
    );

    // Set; zero turns a timeout off.
    let hcm = HttpConnectionManager {
        request_headers_timeout: Some(secs(2)),
        stream_idle_timeout: Some(secs(0)),
        common_http_protocol_options: Some(HttpProtocolOptions {
            idle_timeout: Some(secs(7)),
            ..Default::default()
        }),
        ..rds_hcm("h")
    };
    assert_eq!(
        http(&chain(&hcm_listener("l", hcm))).timeouts,
        HttpTimeouts {
            request_headers: Some(Duration::from_secs(2)),
            idle: Some(Duration::from_secs(7)),
            stream_idle: None,
        }
    );
    let limit = |max: Option<u64>| {
        typed(
            "envoy.filters.network.connection_limit",
            &PbLimit {
                stat_prefix: "lim".to_owned(),
                max_connections: max.map(|value| UInt64Value { value }),
                ..Default::default()
            },
        )
    };
    let idle_tcp = typed(
        "envoy.filters.network.tcp_proxy",
        &PbTcpProxy {
            stat_prefix: "tcp".to_owned(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("c".to_owned())),
            idle_timeout: Some(secs(0)),
            ..Default::default()
        },
    );
    let limited = chain(&tcp_listener("l", vec![limit(Some(3)), idle_tcp]));
    assert_eq!(tcp(&limited).idle_timeout, None);
    assert_eq!(
        limited.connection_limit,
        Some(ConnectionLimit {
            stat_prefix: "lim".to_owned(),
            max_connections: 3,
        })
    );
    // Envoy's own validation: a limit of at least one.
    for max in [None, Some(0)] {
        let l = tcp_listener("l", vec![limit(max), tcp_proxy_filter("c")]);
        assert_eq!(
            nack(TypeUrl::Listener, "l", any(&l)),
            "listener l: filter_chains[0].filters[0].typed_config.max_connections: is \
             required, and at least 1"
        );
    }
    // Nothing after the terminal filter, this one included.
    let l = tcp_listener("l", vec![tcp_proxy_filter("c"), limit(Some(3))]);
    assert_eq!(
        nack(TypeUrl::Listener, "l", any(&l)),
        "listener l: filter_chains[0].filters[1]: nothing may follow a terminal filter"
    );

    // What the adapter sends: the mesh's policy, on every chain that proxies.
    let mesh = mesh(AccessMode::Permissive);
    let policy = &mesh.listener_policy;
    let rt = runtime(&demo_server(), &mesh, &local_options(true));
    let mut checked = 0;
    for listener in rt.listeners.values() {
        for chain in &listener.chains {
            let (timeouts, tcp_idle) = match &chain.filter {
                NetworkFilter::Close => continue,
                NetworkFilter::Http(h) => (Some(h.timeouts), None),
                NetworkFilter::Tcp(t) => (None, Some(t.idle_timeout)),
            };
            let limit = chain.connection_limit.as_ref().expect("a connection limit");
            assert_eq!(limit.stat_prefix, listener.name);
            assert_eq!(
                Some(limit.max_connections),
                policy.max_connections.map(|m| u64::from(m.get()))
            );
            if let Some(t) = timeouts {
                assert_eq!(
                    t,
                    HttpTimeouts {
                        request_headers: Some(policy.request_headers_timeout),
                        idle: Some(policy.http_idle_timeout),
                        stream_idle: Some(policy.stream_idle_timeout),
                    }
                );
            }
            if let Some(idle) = tcp_idle {
                assert_eq!(idle, Some(policy.tcp_idle_timeout));
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked} chains");
}

// === access logs ===

/// The tap's configuration, as the Envoy adapter writes it (`adapter::tap`), translates on
/// every HTTP connection manager, and nothing else changes.
#[test]
fn a_tapped_proxy_translates_with_the_taps_access_log() {
    use std::{
        net::{IpAddr, Ipv4Addr},
        sync::Arc,
    };

    let mesh = mesh(AccessMode::Permissive);
    let opts = local_options(true);
    let plain = served(&demo_server(), &mesh, &opts);
    let mut output = adapter::Output {
        resources: plain.iter().cloned().map(Arc::new).collect(),
        warnings: Vec::new(),
    };
    let bootstrap = adapter::BootstrapOptions::new(
        "demo/web-0",
        IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5)),
        "127.0.0.1",
        15010,
        "/token",
        adapter::XdsCa::File("/ca.crt".into()),
    );
    let rate = adapter::TapRate::new(std::num::NonZeroU32::new(100).unwrap());
    // Every request at 100 a second, and a tap of POSTs under /orders at 3 on its own bucket.
    let tap = adapter::ProxyTap {
        every: Some(rate),
        matching: vec![adapter::TapMatch {
            id: 9,
            method: Some("POST".to_owned()),
            authority: None,
            path_prefix: Some("/orders".to_owned()),
            rate: adapter::TapRate::new(std::num::NonZeroU32::new(3).unwrap()),
        }],
    };
    adapter::tap(&mut output, &adapter::TapSink::new(&bootstrap), &tap);
    let mut client = DeltaClient::new(node());
    for ty in [
        TypeUrl::Cluster,
        TypeUrl::Listener,
        TypeUrl::ClusterLoadAssignment,
        TypeUrl::RouteConfiguration,
        TypeUrl::Secret,
        TypeUrl::TokenBucket,
    ] {
        let of_type = output
            .resources
            .iter()
            .filter(|r| r.type_url == ty.type_url())
            .map(|r| wire(&r.name, r.resource.clone()))
            .collect();
        let outcome = client.handle_response(response(ty, of_type));
        assert!(outcome.rejected.is_none(), "{ty}: {:?}", outcome.rejected);
    }
    let rt = client.config().runtime();
    let expected = AccessLog {
        log_name: adapter::TAP_LOG_NAME.to_owned(),
        flush_interval: adapter::TAP_FLUSH_INTERVAL,
        buffer_bytes: adapter::TAP_BUFFER_BYTES,
        request_headers: Vec::new(),
        response_headers: vec!["grpc-status".to_owned()],
        response_trailers: vec!["grpc-status".to_owned()],
        filter: Some(LogFilter::Or(vec![
            LogFilter::Bucket(BucketName(adapter::TAP_BUCKET.to_owned())),
            LogFilter::And(vec![
                LogFilter::Header(HeaderMatch {
                    name: ":method".to_owned(),
                    matcher: StringMatch::Exact("POST".to_owned()),
                    invert: false,
                }),
                LogFilter::Header(HeaderMatch {
                    name: ":path".to_owned(),
                    matcher: StringMatch::Prefix("/orders".to_owned()),
                    invert: false,
                }),
                LogFilter::Bucket(BucketName(format!("{}-9", adapter::TAP_BUCKET))),
            ]),
        ])),
    };
    assert!(client.is_synced(), "the listeners' buckets arrived");
    assert_eq!(
        rt.buckets
            .get(&format!("{}-9", adapter::TAP_BUCKET))
            .map(|b| (b.max_tokens, b.tokens_per_fill, b.fill_interval)),
        Some((3, 3, Duration::from_secs(1))),
        "3 a second: 3 every second"
    );
    assert_eq!(
        rt.buckets.get(adapter::TAP_BUCKET).map(|b| (
            b.max_tokens,
            b.tokens_per_fill,
            b.fill_interval
        )),
        Some((100, 5, Duration::from_millis(50))),
        "100 a second: 5 every 50 ms, a second's worth held"
    );
    let mut managers = 0;
    for chain in rt.listeners.values().flat_map(|l| &l.chains) {
        if let NetworkFilter::Http(h) = &chain.filter {
            assert_eq!(
                h.access_logs,
                std::slice::from_ref(&expected),
                "{}",
                chain.name
            );
            managers += 1;
        }
    }
    assert!(managers >= 2, "{managers} connection managers");

    // Untapped, none.
    let untapped = runtime(&demo_server(), &mesh, &opts);
    for chain in untapped.listeners.values().flat_map(|l| &l.chains) {
        if let NetworkFilter::Http(h) = &chain.filter {
            assert!(h.access_logs.is_empty());
        }
    }

    // Open connections wake when a tap starts or ends, and not on another change.
    let state = crate::state::State::default();
    state.publish(untapped.clone());
    let mut woken = state.subscribe_access_logs();
    state.publish(untapped.clone());
    assert!(!woken.has_changed().unwrap(), "the same access logs");
    state.publish(rt.clone());
    assert!(woken.has_changed().unwrap(), "a tap started");
    woken.mark_unchanged();
    state.publish(rt);
    assert!(!woken.has_changed().unwrap(), "still tapped");
    state.publish(untapped);
    assert!(woken.has_changed().unwrap(), "the tap ended");
}

/// Envoy's defaults for what a logger leaves unset; anything beyond the subset is refused at
/// its field.
#[test]
fn an_access_log_outside_the_subset_is_refused_where_it_is() {
    use envoy_types::pb::envoy::{
        config::{
            accesslog::v3::{AccessLog as PbAccessLog, AccessLogFilter, access_log},
            core::v3::{ApiVersion, GrpcService, HeaderValue, grpc_service},
        },
        extensions::access_loggers::grpc::v3::{
            CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig,
        },
    };
    use prost::Message as _;

    let common = CommonGrpcAccessLogConfig {
        log_name: "tap".to_owned(),
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: "xds".to_owned(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        transport_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    };
    let config = HttpGrpcAccessLogConfig {
        common_config: Some(common.clone()),
        additional_request_headers_to_log: vec!["x-request-id".to_owned()],
        ..Default::default()
    };
    let log = |config: &HttpGrpcAccessLogConfig| {
        PbAccessLog {
        name: "envoy.access_loggers.http_grpc".to_owned(),
        config_type: Some(access_log::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig".to_owned(),
            value: config.encode_to_vec(),
        })),
        ..Default::default()
    }
    };
    let listener = |logs: Vec<PbAccessLog>| {
        let mut hcm = rds_hcm("r");
        hcm.access_log = logs;
        hcm_listener("l", hcm)
    };
    let translated = ListenerConfig::from_xds(&listener(vec![log(&config)])).unwrap();
    let NetworkFilter::Http(h) = &translated.chains[0].filter else {
        panic!()
    };
    assert_eq!(
        h.access_logs,
        [AccessLog {
            log_name: "tap".to_owned(),
            flush_interval: Duration::from_secs(1),
            buffer_bytes: 16_384,
            request_headers: vec!["x-request-id".to_owned()],
            response_headers: Vec::new(),
            response_trailers: Vec::new(),
            filter: None,
        }]
    );

    let refused = |logs: Vec<PbAccessLog>| nack(TypeUrl::Listener, "l", any(&listener(logs)));
    let at = "listener l: filter_chains[0].filters[0].typed_config.access_log";
    let with = |f: &dyn Fn(&mut HttpGrpcAccessLogConfig)| {
        let mut c = config.clone();
        f(&mut c);
        vec![log(&c)]
    };
    let cases: Vec<(Vec<PbAccessLog>, String)> = vec![
        (
            vec![log(&config), {
                let mut l = log(&config);
                l.filter = Some(AccessLogFilter::default());
                l
            }],
            format!("{at}[1].filter.filter_specifier: a filter is required"),
        ),
        (
            vec![PbAccessLog {
                name: "envoy.access_loggers.file".to_owned(),
                config_type: Some(access_log::ConfigType::TypedConfig(Any {
                    type_url:
                        "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
                            .to_owned(),
                    value: Vec::new(),
                })),
                ..Default::default()
            }],
            format!(
                "{at}[0].typed_config: only envoy.access_loggers.http_grpc \
                 (HttpGrpcAccessLogConfig) is supported"
            ),
        ),
        (
            with(&|c| c.common_config = None),
            format!("{at}[0].typed_config.common_config: is required"),
        ),
        (
            with(&|c| c.common_config.as_mut().unwrap().transport_api_version = 0),
            format!(
                "{at}[0].typed_config.common_config.transport_api_version: only V3 is supported"
            ),
        ),
        (
            with(&|c| c.common_config.as_mut().unwrap().grpc_service = None),
            format!("{at}[0].typed_config.common_config.grpc_service: is required"),
        ),
        (
            with(&|c| {
                c.common_config
                    .as_mut()
                    .unwrap()
                    .grpc_service
                    .as_mut()
                    .unwrap()
                    .initial_metadata = vec![HeaderValue::default()];
            }),
            format!(
                "{at}[0].typed_config.common_config.grpc_service.initial_metadata: not \
                 supported by the bundled proxy"
            ),
        ),
        (
            with(&|c| c.common_config.as_mut().unwrap().log_name.clear()),
            format!("{at}[0].typed_config.common_config.log_name: must not be empty"),
        ),
        (
            with(&|c| {
                c.common_config.as_mut().unwrap().buffer_flush_interval =
                    Some(PbDuration::default());
            }),
            format!(
                "{at}[0].typed_config.common_config.buffer_flush_interval: must be more than zero"
            ),
        ),
        (
            with(&|c| {
                c.common_config.as_mut().unwrap().custom_tags = vec![Default::default()];
            }),
            format!(
                "{at}[0].typed_config.common_config.custom_tags: not supported by the bundled proxy"
            ),
        ),
        (
            with(&|c| c.additional_response_headers_to_log = vec!["Grpc-Status".to_owned()]),
            format!(
                "{at}[0].typed_config.additional_response_headers_to_log[0]: must be a \
                 lower-case header name (no pseudo-headers)"
            ),
        ),
        (
            with(&|c| c.additional_request_headers_to_log = vec![":path".to_owned()]),
            format!(
                "{at}[0].typed_config.additional_request_headers_to_log[0]: must be a \
                 lower-case header name (no pseudo-headers)"
            ),
        ),
    ];
    for (logs, expected) in cases {
        assert_eq!(refused(logs), expected);
    }

    // Set values are read.
    let mut tuned = common;
    tuned.buffer_flush_interval = Some(PbDuration {
        seconds: 0,
        nanos: 200_000_000,
    });
    tuned.buffer_size_bytes = Some(UInt32Value { value: 0 });
    let tuned = HttpGrpcAccessLogConfig {
        common_config: Some(tuned),
        ..Default::default()
    };
    let translated = ListenerConfig::from_xds(&listener(vec![log(&tuned)])).unwrap();
    let NetworkFilter::Http(h) = &translated.chains[0].filter else {
        panic!()
    };
    assert_eq!(h.access_logs[0].flush_interval, Duration::from_millis(200));
    assert_eq!(h.access_logs[0].buffer_bytes, 0);

    // A TCP proxy's or a listener's access log stays refused.
    let mut l = listener(Vec::new());
    l.access_log = vec![log(&config)];
    assert_eq!(
        nack(TypeUrl::Listener, "l", any(&l)),
        "listener l: access_log: not supported by the bundled proxy"
    );
}
