use std::sync::Arc;

use http::{HeaderMap, Method};

use super::routing::{self, Peer, RequestView};
use crate::config::{
    DeniedReply, ForwardClientCert, HeaderMatch, HttpManager, PathMatch, Permission, Policy,
    Principal, Rbac, Route, RouteAction, RouteMatch, RouteSource, RouteTable, StringMatch,
    VirtualHost,
};

fn regex(re: &str) -> regex::Regex {
    regex::Regex::new(&format!("^(?:{re})$")).unwrap()
}

fn route(name: &str, path: PathMatch, headers: Vec<HeaderMatch>) -> Route {
    Route {
        name: name.to_owned(),
        stat_prefix: None,
        matcher: RouteMatch { path, headers },
        action: RouteAction {
            clusters: vec![(name.to_owned(), 1)],
            timeout: None,
            retry: None,
        },
        rbac: None,
    }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.to_owned(),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        routes,
        rbac: None,
    }
}

fn view<'a>(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
    RequestView {
        method,
        path,
        authority: "web",
        scheme: "http",
        headers,
    }
}

#[test]
fn virtual_hosts_are_chosen_as_envoy_chooses_them() {
    let table = RouteTable {
        name: "t".into(),
        virtual_hosts: vec![
            vhost("any", &["*"], vec![]),
            vhost("suffix", &["*.demo.svc"], vec![]),
            vhost("longer-suffix", &["*.web.demo.svc"], vec![]),
            vhost("prefix", &["web*"], vec![]),
            vhost("exact", &["web.demo.svc:80"], vec![]),
        ],
    };
    let pick = |a: &str| routing::virtual_host(&table, a).map(|v| v.name.as_str());
    assert_eq!(pick("web.demo.svc:80"), Some("exact"));
    assert_eq!(pick("a.web.demo.svc"), Some("longer-suffix"));
    assert_eq!(pick("api.demo.svc"), Some("suffix"));
    assert_eq!(pick("webby"), Some("prefix"));
    assert_eq!(pick("other"), Some("any"));
    let no_default = RouteTable {
        name: "t".into(),
        virtual_hosts: vec![vhost("exact", &["web:80"], vec![])],
    };
    assert!(routing::virtual_host(&no_default, "web:8080").is_none());
}

#[test]
fn the_first_matching_route_wins_and_every_condition_must_hold() {
    let get = HeaderMatch {
        name: ":method".into(),
        matcher: StringMatch::Exact("GET".into()),
        invert: false,
    };
    let canary = HeaderMatch {
        name: "x-canary".into(),
        matcher: StringMatch::Regex(regex("yes|true")),
        invert: false,
    };
    let vh = vhost(
        "web",
        &["web"],
        vec![
            route(
                "api-get",
                PathMatch::Regex(regex("/api/.*")),
                vec![get, canary],
            ),
            route("exact", PathMatch::Exact("/health".into()), vec![]),
            route("rest", PathMatch::Prefix("/".into()), vec![]),
        ],
    );
    let mut headers = HeaderMap::new();
    let name = |m: &Method, p: &str, h: &HeaderMap| {
        routing::route(&vh, &view(m, p, h)).map(|r| r.name.clone())
    };
    assert_eq!(
        name(&Method::GET, "/api/x", &headers).as_deref(),
        Some("rest")
    );
    headers.insert("x-canary", "true".parse().unwrap());
    assert_eq!(
        name(&Method::GET, "/api/x", &headers).as_deref(),
        Some("api-get")
    );
    assert_eq!(
        name(&Method::POST, "/api/x", &headers).as_deref(),
        Some("rest")
    );
    // Anchored: a regex must match the whole path.
    assert_eq!(
        name(&Method::GET, "/v1/api/x", &headers).as_deref(),
        Some("rest")
    );
    headers.insert("x-canary", "truely".parse().unwrap());
    assert_eq!(
        name(&Method::GET, "/api/x", &headers).as_deref(),
        Some("rest")
    );
    assert_eq!(
        name(&Method::GET, "/health", &headers).as_deref(),
        Some("exact")
    );
    assert_eq!(
        name(&Method::GET, "/health/x", &headers).as_deref(),
        Some("rest")
    );
}

#[test]
fn inverted_and_present_header_matches() {
    let h = HeaderMatch {
        name: "x-debug".into(),
        matcher: StringMatch::Present,
        invert: true,
    };
    let mut headers = HeaderMap::new();
    let m = Method::GET;
    assert!(routing::header_matches(&h, &view(&m, "/", &headers)));
    headers.insert("x-debug", "1".parse().unwrap());
    assert!(!routing::header_matches(&h, &view(&m, "/", &headers)));
}

fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/demo/sa/{sa}")
}

fn allow(sources: &[&str], permissions: Vec<Permission>) -> Rbac {
    Rbac {
        policies: vec![(
            "demo/t".into(),
            Policy {
                permissions,
                principals: sources
                    .iter()
                    .map(|s| Principal::Authenticated(StringMatch::Exact(spiffe(s))))
                    .collect(),
            },
        )],
    }
}

fn peer(identity: Option<&str>) -> Peer<'_> {
    Peer {
        identity,
        local: "127.0.1.2:8080".parse().unwrap(),
    }
}

#[test]
fn rbac_allows_only_the_named_identities_and_requests() {
    let rbac = allow(
        &["client"],
        vec![Permission::And(vec![
            Permission::UrlPath(StringMatch::Regex(regex("/api/.*"))),
            Permission::Header(HeaderMatch {
                name: ":method".into(),
                matcher: StringMatch::Exact("GET".into()),
                invert: false,
            }),
        ])],
    );
    let headers = HeaderMap::new();
    let client = spiffe("client");
    let other = spiffe("other");
    let get = Method::GET;
    let post = Method::POST;
    let ok = view(&get, "/api/users", &headers);
    assert!(routing::allows(&rbac, &peer(Some(&client)), Some(&ok)));
    assert!(!routing::allows(&rbac, &peer(Some(&other)), Some(&ok)));
    // Plaintext peers have no identity: never authenticated.
    assert!(!routing::allows(&rbac, &peer(None), Some(&ok)));
    assert!(!routing::allows(
        &rbac,
        &peer(Some(&client)),
        Some(&view(&post, "/api/users", &headers))
    ));
    assert!(!routing::allows(
        &rbac,
        &peer(Some(&client)),
        Some(&view(&get, "/admin", &headers))
    ));
    // A connection (no request) never matches request permissions: fail closed.
    assert!(!routing::allows(&rbac, &peer(Some(&client)), None));
    // No policies: deny everything.
    assert!(!routing::allows(
        &Rbac::default(),
        &peer(Some(&client)),
        Some(&ok)
    ));
    let port = allow(&["client"], vec![Permission::DestinationPort(8080)]);
    assert!(routing::allows(&port, &peer(Some(&client)), None));
}

#[test]
fn the_most_specific_rbac_override_applies() {
    let deny_all = Arc::new(Rbac::default());
    let manager = HttpManager {
        stat_prefix: "inbound_8080".into(),
        routes: RouteSource::Rds("inbound|8080".into()),
        rbac: Some(deny_all.clone()),
        denied: DeniedReply {
            status: 403,
            body: "denied\n".into(),
        },
        forward_client_cert: ForwardClientCert::Sanitize,
        timeouts: Default::default(),
        access_logs: Vec::new(),
    };
    let mut vh = vhost(
        "v",
        &["*"],
        vec![route("r", PathMatch::Prefix("/".into()), vec![])],
    );
    let with = |vh: &VirtualHost, r: Option<&Route>| {
        routing::effective_rbac(&manager, vh, r).map(|r| r.policies.len())
    };
    assert_eq!(with(&vh, vh.routes.first()), Some(0));
    vh.rbac = Some(Some(Arc::new(allow(&["client"], vec![Permission::Any]))));
    assert_eq!(with(&vh, vh.routes.first()), Some(1));
    vh.rbac = Some(None);
    assert_eq!(with(&vh, vh.routes.first()), None);
    let mut r = vh.routes[0].clone();
    r.rbac = Some(Some(deny_all));
    assert_eq!(with(&vh, Some(&r)), Some(0));
    let no_filter = HttpManager {
        rbac: None,
        ..manager.clone()
    };
    assert!(routing::effective_rbac(&no_filter, &vh, Some(&r)).is_none());
}
