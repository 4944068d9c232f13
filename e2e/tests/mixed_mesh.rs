//! A mesh of both data planes at once: each Pod picks Envoy or the bundled proxy with the
//! `switchyard.dev/data-plane` annotation, and strict mTLS and TrafficTargets hold across the
//! mix. The data planes are pinned per Pod, so the outcome does not depend on
//! `SWITCHYARD_DATA_PLANE`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use switchyard_e2e::{
    DataPlane,
    mesh::{AccessMode, Backend, Mesh, Sidecar, meshed_http_service, pod_on, wait_for},
};

/// The body of a request RBAC denies (the adapter's `DENIED_BODY`).
const DENIED: &str = "denied by mesh policy\n";
/// A TCP service api-0 also serves: its port, and whether the server speaks first.
#[derive(Clone, Copy, Debug)]
struct TcpService {
    port: u16,
    server_first: bool,
}

/// Service `kv`: the client sends a line, the server answers (like Redis).
const KV: TcpService = TcpService {
    port: 6379,
    server_first: false,
};
/// Service `db`: the server greets first (like PostgreSQL or SMTP).
const DB: TcpService = TcpService {
    port: 5432,
    server_first: true,
};

/// Server Pod api-0 (ServiceAccount `api`) on one data plane, serving HTTP (Service `api`)
/// and two TCP protocols (Services `kv` and `db`); two clients allowed by TrafficTargets
/// (ServiceAccount `client`) and two not (ServiceAccount `intruder`), one of each on each
/// data plane.
struct World {
    _mesh: Mesh,
    _backends: [Backend; 3],
    server: Sidecar,
    inbound: SocketAddr,
    /// (sidecar, whether its ServiceAccount is allowed).
    clients: Vec<(Sidecar, bool)>,
}

fn other(plane: DataPlane) -> DataPlane {
    match plane {
        DataPlane::Envoy => DataPlane::Bundled,
        DataPlane::Bundled => DataPlane::Envoy,
    }
}

/// Pod IPs `127.0.<subnet>.x`: client-0 `.1` (the mesh-wide data plane, the server's
/// other), api-0 `.2`, client-1 `.3` (the server's), intruder-0 `.4` (Envoy), intruder-1 `.5`
/// (bundled).
fn world(subnet: u8, server_plane: DataPlane) -> World {
    let ip = |host| Ipv4Addr::new(127, 0, subnet, host);
    let api = Backend::http("api");
    let kv = Backend::tcp_reply("kv");
    let db = Backend::tcp("db");
    let tcp_service = |name: &str, port: u16, backend: &Backend| {
        let target = backend.addr.port();
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  selector: {{app: api}}\n  ports: [{{name: tcp, port: {port}, targetPort: {target}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: demo, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: tcp, port: {target}}}]\nendpoints:\n- addresses: ['{}']\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, name: api-0, namespace: demo}}\n",
            ip(2)
        )
    };
    let server = format!(
        "{}---\n{}{}{}",
        pod_on("api-0", "api", &[("app", "api")], ip(2), server_plane),
        meshed_http_service("api", "api-0", ip(2), api.addr.port()),
        tcp_service("kv", KV.port, &kv),
        tcp_service("db", DB.port, &db),
    );
    let clients = [
        pod_on("client-1", "client", &[], ip(3), server_plane),
        pod_on("intruder-0", "intruder", &[], ip(4), DataPlane::Envoy),
        pod_on("intruder-1", "intruder", &[], ip(5), DataPlane::Bundled),
    ]
    .join("---\n");
    let access = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: all, namespace: demo}\nspec:\n  matches: [{name: all, pathRegex: '.*', methods: ['*']}]\n---\napiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {name: any-port, namespace: demo}\nspec:\n  matches: {ports: []}\n---\napiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: api-http, namespace: demo}\nspec:\n  destination: {kind: ServiceAccount, name: api, namespace: demo}\n  rules: [{kind: HTTPRouteGroup, name: all, matches: [all]}]\n  sources: [{kind: ServiceAccount, name: client, namespace: demo}]\n---\napiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: api-tcp, namespace: demo}\nspec:\n  destination: {kind: ServiceAccount, name: api, namespace: demo}\n  rules: [{kind: TCPRoute, name: any-port}]\n  sources: [{kind: ServiceAccount, name: client, namespace: demo}]\n";
    let mut mesh = Mesh::builder(ip(1))
        .access_mode(AccessMode::Strict)
        .data_plane(other(server_plane))
        .file("server.yaml", server)
        .file("clients.yaml", clients)
        .file("access.yaml", access)
        .start();
    let server = mesh.sidecar_on("api-0", server_plane);
    let inbound = SocketAddr::new(IpAddr::V4(ip(2)), api.addr.port());
    wait_for(
        Duration::from_secs(10),
        || TcpStream::connect(inbound).is_ok(),
        "api-0's inbound listener",
    );
    let clients = vec![
        (mesh.client(), true),
        (mesh.sidecar_on("client-1", server_plane), true),
        (mesh.sidecar_on("intruder-0", DataPlane::Envoy), false),
        (mesh.sidecar_on("intruder-1", DataPlane::Bundled), false),
    ];
    World {
        _mesh: mesh,
        _backends: [api, kv, db],
        server,
        inbound,
        clients,
    }
}

/// `GET /` to `api` through `sidecar`: `(status, body)`, or `(0, error)`.
fn get(sidecar: &Sidecar) -> (u16, String) {
    match sidecar.request("GET", "api", "/") {
        Ok(r) => (r.status, r.body),
        Err(e) => (0, e.to_string()),
    }
}

fn expected_http(allowed: bool) -> (u16, String) {
    if allowed {
        (200, "api".to_owned())
    } else {
        (403, DENIED.to_owned())
    }
}

/// What `service` answers on a fresh connection through `sidecar`'s outbound TCP listener
/// (after a line from the client, unless the server speaks first); empty when the connection
/// is closed first.
fn tcp_read(sidecar: &Sidecar, service: TcpService) -> String {
    let Ok(mut conn) = TcpStream::connect_timeout(
        &SocketAddr::new(sidecar.ip, service.port),
        Duration::from_secs(2),
    ) else {
        return String::new();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
    if !service.server_first {
        let _ = conn.write_all(b"GET key\n");
    }
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}

fn expected_tcp(service: TcpService, allowed: bool) -> &'static str {
    match (allowed, service.server_first) {
        (false, _) => "",
        (true, false) => "kv\n",
        (true, true) => "db\n",
    }
}

/// xDS responses the sidecar rejected (NACKed): each must take everything the control plane
/// compiled for the data plane its Pod names.
fn rejected_updates(sidecar: &Sidecar) -> u64 {
    let Ok(r) = sidecar.admin_get(match sidecar.data_plane {
        DataPlane::Envoy => "/stats",
        DataPlane::Bundled => "/metrics",
    }) else {
        return u64::MAX;
    };
    r.body
        .lines()
        .filter(|l| match sidecar.data_plane {
            DataPlane::Envoy => l.contains(".update_rejected: "),
            DataPlane::Bundled => {
                l.starts_with("switchyard_proxy_xds_responses_total{result=\"rejected\"}")
            }
        })
        .filter_map(|l| l.rsplit([' ', ':']).next()?.parse::<u64>().ok())
        .sum()
}

/// Every client gets what its ServiceAccount is allowed, over HTTP and the `tcp` services,
/// whatever data plane it and the server run; allowed requests arrive over mTLS, and no
/// sidecar rejected its configuration.
fn check(w: &World, tcp: &[TcpService]) {
    for (client, allowed) in &w.clients {
        let want = expected_http(*allowed);
        wait_for(
            Duration::from_secs(15),
            || get(client) == want,
            &format!("{} ({:?}) to get {want:?}", client.pod, client.data_plane),
        );
    }
    let mut http: BTreeMap<String, BTreeMap<u16, usize>> = BTreeMap::new();
    for _ in 0..10 {
        for (client, allowed) in &w.clients {
            let got = get(client);
            assert_eq!(
                got,
                expected_http(*allowed),
                "{} ({:?}) to a {:?} server",
                client.pod,
                client.data_plane,
                w.server.data_plane
            );
            *http
                .entry(format!("{} ({:?})", client.pod, client.data_plane))
                .or_default()
                .entry(got.0)
                .or_default() += 1;
        }
    }
    for service in tcp {
        check_tcp(w, *service);
    }
    // The allowed clients originated TLS to api-0, and api-0's inbound listener terminated it.
    for (client, allowed) in &w.clients {
        if *allowed {
            client.wait_for_stat(
                "cluster.demo/api|80.",
                "ssl.handshake",
                Duration::from_secs(5),
            );
        }
    }
    let handshakes = w.server.wait_for_stat(
        &Sidecar::listener_stats(w.inbound),
        "ssl.handshake",
        Duration::from_secs(5),
    );
    eprintln!(
        "{:?} server: {http:?}; {handshakes} handshakes on its inbound listener",
        w.server.data_plane
    );
    for sidecar in w.clients.iter().map(|(s, _)| s).chain([&w.server]) {
        assert_eq!(
            rejected_updates(sidecar),
            0,
            "{} ({:?}) rejected configuration",
            sidecar.pod,
            sidecar.data_plane
        );
    }
}

/// Allowed clients read what the service says; the others see the connection closed without
/// a byte from it.
fn check_tcp(w: &World, service: TcpService) {
    for (client, allowed) in &w.clients {
        let want = expected_tcp(service, *allowed);
        let what = format!(
            "{} ({:?}) to read {want:?} from {service:?} on a {:?} server",
            client.pod, client.data_plane, w.server.data_plane
        );
        wait_for(
            Duration::from_secs(10),
            || tcp_read(client, service) == want,
            &what,
        );
        for _ in 0..5 {
            assert_eq!(tcp_read(client, service), want, "{what}");
        }
    }
}

#[test]
fn a_bundled_server_admits_only_allowed_clients_of_either_data_plane() {
    check(&world(70, DataPlane::Bundled), &[KV, DB]);
}

#[test]
fn an_envoy_server_admits_only_allowed_clients_of_either_data_plane() {
    check(&world(71, DataPlane::Envoy), &[KV]);
}

/// Envoy's network RBAC filter decides on the client's first byte, and its TCP proxy would
/// connect upstream before that: a server that speaks first would greet a caller the
/// TrafficTarget does not allow. The port's TLS handshake admits only allowed identities and
/// the TCP proxy waits for it, so the allowed client still reads the greeting unprompted.
#[test]
fn an_envoy_server_closes_a_server_first_tcp_port_to_other_service_accounts() {
    check_tcp(&world(72, DataPlane::Envoy), DB);
}
