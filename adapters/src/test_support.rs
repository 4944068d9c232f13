//! Builders of mesh-model values for tests, here and (with the `test-support` feature) in other
//! crates, so that a new model field is filled in one place instead of in every fixture.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, string::Ia5String,
};

use crate::{
    envoy::{self, EnvoyOptions, Resource},
    model::{
        AccessMode, Authorization, Cluster, ClusterName, ClusterPolicy, DataPlane, Endpoint,
        HttpMatch, Identity, InboundPort, InboundRule, MeshSettings, OutboundPort, OutboundService,
        Protocol, ProxyConfig, ProxyId, Route, RoutePolicy, ServiceName, WeightedCluster,
    },
};

/// An endpoint at `address` (`ip:port`), meshed when it has an `identity`. Panics on a
/// malformed address: a fixture's mistake.
pub fn endpoint(address: &str, identity: Option<Identity>) -> Endpoint {
    Endpoint {
        address: address
            .parse()
            .unwrap_or_else(|e| panic!("fixture address {address:?}: {e}")),
        identity,
    }
}

/// Endpoints of namespace `ns`, as `(address, service account)`: meshed when the account is
/// given.
pub fn endpoints(ns: &str, endpoints: &[(&str, Option<&str>)]) -> Vec<Endpoint> {
    endpoints
        .iter()
        .map(|(address, sa)| endpoint(address, sa.map(|sa| Identity::new(ns, sa))))
        .collect()
}

/// A share of a route: `ns/svc|port` with `weight`.
pub fn backend(ns: &str, svc: &str, port: u16, weight: u32) -> WeightedCluster {
    WeightedCluster {
        cluster: ClusterName::new(&ServiceName::new(ns, svc), port),
        weight,
    }
}

/// A request match: an optional path regex, methods, and `(name, value regex)` headers.
pub fn http_match(path: Option<&str>, methods: &[&str], headers: &[(&str, &str)]) -> HttpMatch {
    HttpMatch {
        path_regex: path.map(Into::into),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// A route with the default policy.
pub fn route(name: &str, matches: Vec<HttpMatch>, backends: Vec<WeightedCluster>) -> Route {
    Route {
        name: name.into(),
        matches,
        backends,
        policy: RoutePolicy::default(),
    }
}

pub fn port(port: u16, protocol: Protocol, routes: Vec<Route>) -> OutboundPort {
    OutboundPort {
        port,
        protocol,
        routes,
    }
}

/// The routes of the fixtures' `web` port 80 in `ns`: `ns/canary` sends the requests of
/// `canary` to web-v2, `ns/web-split` the rest 90/10 to web-v1 and web-v2.
pub fn canary_and_split(ns: &str, canary: Vec<HttpMatch>) -> Vec<Route> {
    vec![
        route(
            &format!("{ns}/canary"),
            canary,
            vec![backend(ns, "web-v2", 80, 1)],
        ),
        route(
            &format!("{ns}/web-split"),
            vec![],
            vec![backend(ns, "web-v1", 80, 90), backend(ns, "web-v2", 80, 10)],
        ),
    ]
}

/// A port whose one route, `default`, sends every request to `ns/svc|port`: a Service no
/// TrafficSplit applies to.
pub fn plain_port(ns: &str, svc: &str, port: u16, protocol: Protocol) -> OutboundPort {
    weighted_port(ns, port, protocol, &[(svc, 1)])
}

/// A port whose one route, `default`, splits every request between the `(service, weight)`
/// backends of `ns`, on the same port.
pub fn weighted_port(
    ns: &str,
    port: u16,
    protocol: Protocol,
    backends: &[(&str, u32)],
) -> OutboundPort {
    let backends = backends
        .iter()
        .map(|(svc, weight)| backend(ns, svc, port, *weight))
        .collect();
    self::port(port, protocol, vec![route("default", vec![], backends)])
}

/// A Service with the host names of the `cluster.local` domain.
pub fn service(
    ns: &str,
    name: &str,
    cluster_ip: Option<IpAddr>,
    ports: Vec<OutboundPort>,
) -> Arc<OutboundService> {
    let svc = ServiceName::new(ns, name);
    Arc::new(OutboundService {
        hostnames: svc.hostnames("cluster.local"),
        name: svc,
        cluster_ip,
        ports,
    })
}

/// A Service of one [`plain_port`]: every request to `port` goes to its own cluster.
pub fn plain_service(
    ns: &str,
    name: &str,
    cluster_ip: Option<IpAddr>,
    port: u16,
    protocol: Protocol,
) -> Arc<OutboundService> {
    service(
        ns,
        name,
        cluster_ip,
        vec![plain_port(ns, name, port, protocol)],
    )
}

/// The cluster of `ns/svc|port`, with the default policy.
pub fn cluster(
    ns: &str,
    svc: &str,
    port: u16,
    protocol: Protocol,
    endpoints: Vec<Endpoint>,
) -> Arc<Cluster> {
    Arc::new(Cluster {
        name: ClusterName::new(&ServiceName::new(ns, svc), port),
        service: ServiceName::new(ns, svc),
        port,
        protocol,
        endpoints,
        policy: ClusterPolicy::default(),
    })
}

/// The proxy of Pod `ns/pod`, running as `ns/service_account`: it reaches `services` over
/// `clusters` and its workload serves `inbound`. An Envoy, addressed by its application, at no
/// known address.
pub fn proxy(
    ns: &str,
    pod: &str,
    service_account: &str,
    services: impl IntoIterator<Item = Arc<OutboundService>>,
    clusters: impl IntoIterator<Item = Arc<Cluster>>,
    inbound: Vec<InboundPort>,
) -> ProxyConfig {
    ProxyConfig {
        proxy: ProxyId {
            namespace: ns.into(),
            pod: pod.into(),
        },
        identity: Identity::new(ns, service_account),
        data_plane: DataPlane::Envoy,
        unknown_data_plane: None,
        address: None,
        intercepted: false,
        outbound: Arc::new(services.into_iter().map(|s| (s.name.clone(), s)).collect()),
        clusters: Arc::new(clusters.into_iter().map(|c| (c.name.clone(), c)).collect()),
        inbound,
    }
}

/// The typed configs nested in what the Envoy adapter emits (the full names of their
/// messages): each must be known to whatever decodes its output, the bundled proxy's
/// translation and `switchyard compile`'s descriptor set.
pub const NESTED_TYPES: [&str; 13] = [
    "envoy.extensions.filters.http.rbac.v3.RBAC",
    "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
    "envoy.extensions.filters.http.router.v3.Router",
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
    "envoy.extensions.filters.network.direct_response.v3.Config",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "envoy.extensions.filters.network.rbac.v3.RBAC",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
];

/// An inbound port of the workload, under `authorization`.
pub fn inbound(port: u16, protocol: Protocol, authorization: Authorization) -> InboundPort {
    InboundPort {
        port,
        protocol,
        authorization,
        routes: Vec::new(),
    }
}

/// A TrafficTarget rule: `sources` may make the requests of `matches` (every request when
/// there are none).
pub fn rule(name: &str, sources: Vec<Identity>, matches: Vec<HttpMatch>) -> InboundRule {
    InboundRule {
        name: name.into(),
        sources,
        matches,
    }
}

/// `proxy` as the index makes it in a permissive mesh: every inbound port open to everyone.
pub fn open_to_all(mut proxy: ProxyConfig) -> ProxyConfig {
    for port in &mut proxy.inbound {
        port.authorization = Authorization::AllowAll;
    }
    proxy
}

/// Mesh settings in `access_mode`, the rest by default.
pub fn mesh(access_mode: AccessMode) -> MeshSettings {
    MeshSettings {
        access_mode,
        ..MeshSettings::default()
    }
}

/// Options of a local-mode proxy, listening on `127.0.1.5`; mTLS when `mtls`.
pub fn local_options(mtls: bool) -> EnvoyOptions {
    EnvoyOptions {
        bind_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5)),
        mtls,
        ..EnvoyOptions::default()
    }
}

// The secrets' PEM is carried, never parsed, by the adapter and the proxy's translation.
pub const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n";
pub const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIBkey\n-----END PRIVATE KEY-----\n";
pub const BUNDLE_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n";

/// Everything the control plane serves `proxy`: the Envoy adapter's resources and, with
/// `opts.mtls`, the proxy's secrets (of [`CERT_PEM`], [`KEY_PEM`] and [`BUNDLE_PEM`]).
pub fn served(proxy: &ProxyConfig, mesh: &MeshSettings, opts: &EnvoyOptions) -> Vec<Resource> {
    let mut resources = envoy::compile(proxy, mesh, opts).resources;
    if opts.mtls {
        resources.extend(envoy::secrets(
            &proxy.identity,
            mesh,
            CERT_PEM,
            KEY_PEM,
            BUNDLE_PEM,
        ));
    }
    resources
}

// === the `demo` mesh: a client and a server that use every kind of port and rule ===

/// The canary match: `/api/...` with GET or HEAD and an `x-canary` header (named in capitals,
/// which the adapter lowercases).
pub fn demo_canary() -> HttpMatch {
    http_match(
        Some("/api/.*"),
        &["HEAD", "GET"],
        &[("X-Canary", "true|yes")],
    )
}

/// `demo/client-0`: reaches web (a 90/10 split to web-v1 and web-v2, plus a canary route to
/// web-v2), a gRPC service, and db over TCP (50/50 to db-a and db-b). web-v1's endpoints run
/// as `web`, one of web-v2's is not meshed; db-a is not meshed.
pub fn demo_client() -> ProxyConfig {
    let web = service(
        "demo",
        "web",
        Some(IpAddr::from([10, 96, 0, 10])),
        vec![port(
            80,
            Protocol::Http,
            canary_and_split("demo", vec![demo_canary()]),
        )],
    );
    let grpc = plain_service("demo", "grpc", None, 9000, Protocol::Http2);
    let db = service(
        "demo",
        "db",
        None,
        vec![weighted_port(
            "demo",
            5432,
            Protocol::Tcp,
            &[("db-b", 50), ("db-a", 50)],
        )],
    );
    let cluster = |svc, port, protocol, endpoints: &[(&str, Option<&str>)]| {
        cluster(
            "demo",
            svc,
            port,
            protocol,
            self::endpoints("demo", endpoints),
        )
    };
    let clusters = [
        cluster(
            "web-v1",
            80,
            Protocol::Http,
            &[
                ("10.0.0.1:8080", Some("web")),
                ("10.0.0.2:8080", Some("web")),
            ],
        ),
        cluster(
            "web-v2",
            80,
            Protocol::Http,
            &[("10.0.0.3:8080", Some("web")), ("10.0.0.4:8080", None)],
        ),
        cluster(
            "grpc",
            9000,
            Protocol::Http2,
            &[("10.0.0.5:9000", Some("grpc"))],
        ),
        cluster("db-a", 5432, Protocol::Tcp, &[("10.0.0.6:5432", None)]),
        cluster(
            "db-b",
            5432,
            Protocol::Tcp,
            &[("10.0.0.7:5432", Some("db"))],
        ),
    ];
    proxy(
        "demo",
        "client-0",
        "client",
        [web, grpc, db],
        clusters,
        vec![],
    )
}

/// `demo/web-v1-0`, running as `web`: HTTP 8080 admits the client for the canary match and
/// `GET /healthz`, and ops/admin for everything; HTTP/2 9090 admits everyone; TCP 7000 admits
/// the client; TCP 5433 admits no one.
pub fn demo_server() -> ProxyConfig {
    let client = Identity::new("demo", "client");
    let admin = Identity::new("ops", "admin");
    let readers = vec![demo_canary(), http_match(Some("/healthz"), &["GET"], &[])];
    proxy(
        "demo",
        "web-v1-0",
        "web",
        [],
        [],
        vec![
            inbound(
                8080,
                Protocol::Http,
                Authorization::Allow(vec![
                    rule("demo/web-readers", vec![client.clone()], readers),
                    rule("demo/web-admins", vec![admin], vec![]),
                ]),
            ),
            inbound(9090, Protocol::Http2, Authorization::AllowAll),
            inbound(
                7000,
                Protocol::Tcp,
                Authorization::Allow(vec![rule("demo/db-clients", vec![client], vec![])]),
            ),
            inbound(5433, Protocol::Tcp, Authorization::Allow(vec![])),
        ],
    )
}

// === certificates ===

/// A test CA: ECDSA P-256, issuing SPIFFE workload certificates of the mesh CA's profile.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, PEM: the trust bundle of its workloads.
    pub pem: String,
}

impl TestCa {
    /// A self-signed CA named `name` (its common name) with `constraints` on the path below
    /// it. Panics when rcgen fails: a fixture's mistake.
    pub fn new(name: &str, constraints: BasicConstraints) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(constraints);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap_or_else(|e| panic!("CA key: {e}"));
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("CA certificate: {e}"));
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A workload certificate whose URI SAN is `spiffe_id`, with the mesh CA's profile (an
    /// empty subject, server and client auth): `(chain, key)`, PEM.
    pub fn leaf(&self, spiffe_id: &str) -> (String, String) {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let san = Ia5String::try_from(spiffe_id).unwrap_or_else(|e| panic!("{spiffe_id}: {e}"));
        params.subject_alt_names = vec![SanType::URI(san)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap_or_else(|e| panic!("key: {e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("certificate of {spiffe_id}: {e}"));
        (cert.pem(), key.serialize_pem())
    }
}
