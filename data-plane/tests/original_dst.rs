//! The proxy's listeners with a configuration in the intercepted shape (an `original_dst`
//! listener filter, chains per destination address and port, HTTP detected on some ports, a
//! default chain): real connections to `127.0.0.x:<port>` land on the chain of that address
//! and port. Without an iptables redirect a connection's destination is its local address, as
//! with Envoy; `e2e/tests/intercept_proxy.rs` covers `SO_ORIGINAL_DST` itself.

// Helpers outside `#[test]` functions are test code too: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{Read as _, Write as _},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::Cluster,
        core::v3::{BindConfig, SocketAddress, TrafficDirection, address},
        listener::v3::{Filter, FilterChain, Listener},
    },
    extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    },
};
use switchyard_proxy::{
    config::{Runtime, Translated, Translation, TypeUrl, translate},
    metrics::Registry,
    proxy,
    state::State,
};
use switchyard_proxy_config::test_support::{
    self as xds, any, capture_listener, duration, http_inspector, original_dst, passthrough,
    router, routes_to, service_chain, socket, static_cluster_at, typed,
};

const LISTENER: &str = "outbound";
/// The listener filters' timeout: short, so a server-first protocol waits little.
const DETECT: Duration = Duration::from_millis(300);

// === Utils ===

fn tcp_proxy(cluster: &str) -> Filter {
    xds::tcp_proxy(cluster, cluster)
}

/// An HTTP connection manager whose one route goes to `cluster`, whatever the host.
fn http_to(cluster: &str) -> Filter {
    typed(
        "envoy.filters.network.http_connection_manager",
        &HttpConnectionManager {
            stat_prefix: cluster.to_owned(),
            route_specifier: Some(RouteSpecifier::RouteConfig(routes_to(cluster, cluster))),
            http_filters: vec![router()],
            ..Default::default()
        },
    )
}

/// The chain of a connection no other chain matches: to cluster `fallback`.
fn fallback_chain() -> FilterChain {
    xds::chain("default", None, tcp_proxy("fallback"))
}

/// A TCP backend that says `name` and closes, whatever the client sends (server-first); or,
/// with `http`, answers one HTTP request with `name`.
fn backend(name: &'static str, http: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                if http {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                        name.len()
                    );
                } else {
                    let _ = conn.write_all(name.as_bytes());
                }
            });
        }
    });
    addr
}

/// A TCP backend that says which address the connection came from, and closes.
fn peer_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let peer = conn.peer_addr().unwrap();
            let _ = conn.write_all(peer.ip().to_string().as_bytes());
        }
    });
    addr
}

/// Everything the connection got back until it closed.
fn exchange(to: SocketAddr, send: &[u8]) -> String {
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(send).unwrap();
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}

fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Translates resources as the xDS client does and links them.
fn runtime(listener: &Listener, clusters: &[Cluster]) -> Runtime {
    let mut t = Translated::default();
    for c in clusters {
        let Translation::Cluster(c) = translate(TypeUrl::Cluster, &c.name, &any(c)).unwrap() else {
            unreachable!()
        };
        t.clusters.insert(c.name.clone(), Arc::new(c));
    }
    let Translation::Listener(l) =
        translate(TypeUrl::Listener, &listener.name, &any(listener)).unwrap()
    else {
        unreachable!()
    };
    t.listeners.insert(l.name.clone(), Arc::new(l));
    let rt = Runtime::link(&t);
    assert!(rt.warnings.is_empty(), "{:?}", rt.warnings);
    rt
}

/// Runs the proxy's listeners on `rt` until the returned runtime is dropped, once `probe`
/// accepts connections.
fn serve(rt: Runtime, probe: SocketAddr) -> (tokio::runtime::Runtime, Arc<Registry>) {
    let state = Arc::new(State::default());
    state.publish(rt);
    let metrics = Arc::new(Registry::default());
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio.spawn(proxy::run_listeners(proxy::Context::new(
        state,
        metrics.clone(),
    )));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(probe).is_err() {
        assert!(Instant::now() < deadline, "the listener never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
    (tokio, metrics)
}

// === the tests ===

/// An IPv6 Pod's capture listener, `[::]:<port>` with `ipv4_compat`, takes both families, and
/// an IPv4 connection (IPv4-mapped on that socket) matches its chain by its IPv4 address;
/// without `ipv4_compat` the socket is IPv6 only, as Envoy binds it.
#[test]
fn an_ipv6_listener_takes_ipv4_only_with_ipv4_compat() {
    let v4 = backend("v4", false);
    let v6 = backend("v6", false);
    let fallback = backend("fallback", false);
    for ipv4_compat in [true, false] {
        let port = free_port();
        let mut address = socket(Ipv6Addr::UNSPECIFIED, port);
        if let Some(address::Address::SocketAddress(sa)) = &mut address.address {
            sa.ipv4_compat = ipv4_compat;
        }
        let listener = Listener {
            name: LISTENER.to_owned(),
            address: Some(address),
            listener_filters: vec![original_dst()],
            filter_chains: vec![
                service_chain("v4", "127.0.0.2", port, false, tcp_proxy("v4")),
                service_chain("v6", "::1", port, false, tcp_proxy("v6")),
            ],
            default_filter_chain: Some(fallback_chain()),
            ..Default::default()
        };
        let rt = runtime(
            &listener,
            &[
                static_cluster_at("v4", v4),
                static_cluster_at("v6", v6),
                static_cluster_at("fallback", fallback),
            ],
        );
        let loopback6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        let _proxy = serve(rt, loopback6);
        assert_eq!(exchange(loopback6, b""), "v6");
        let ipv4 = SocketAddr::from(([127, 0, 0, 2], port));
        if ipv4_compat {
            assert_eq!(exchange(ipv4, b""), "v4");
            assert_eq!(
                exchange(SocketAddr::from(([127, 0, 0, 3], port)), b""),
                "fallback"
            );
        } else {
            let refused = TcpStream::connect_timeout(&ipv4, Duration::from_secs(3));
            assert!(refused.is_err(), "an IPv6-only listener took IPv4");
        }
    }
}

#[test]
fn connections_land_on_the_chain_of_their_destination() {
    let port = free_port();
    let web = backend("web", true);
    let db = backend("db", false);
    let kv_http = backend("kv-http", true);
    let kv = backend("kv", false);
    let fallback = backend("fallback", false);
    let listener = Listener {
        // Short, so that a server-first protocol waits little.
        listener_filters_timeout: Some(duration(DETECT)),
        ..capture_listener(
            LISTENER,
            port,
            TrafficDirection::Outbound,
            // Inspect HTTP on `port` only: `not(destination_port_range(port))`.
            vec![original_dst(), http_inspector(&[port])],
            vec![
                service_chain("web", "127.0.0.2", port, false, http_to("web")),
                service_chain("db", "127.0.0.3", port, false, tcp_proxy("db")),
                service_chain("kv|http", "127.0.0.4", port, true, http_to("kv-http")),
                service_chain("kv", "127.0.0.4", port, false, tcp_proxy("kv")),
                service_chain(
                    "passthrough",
                    "127.0.0.5",
                    port,
                    false,
                    tcp_proxy("passthrough"),
                ),
                service_chain("bound", "127.0.0.7", port, false, tcp_proxy("bound")),
            ],
            fallback_chain(),
        )
    };
    let passthrough = Cluster {
        connect_timeout: None,
        ..passthrough("passthrough")
    };
    // Connections to this one come from 127.0.0.9 (`upstream_bind_config`).
    let bound = Cluster {
        upstream_bind_config: Some(BindConfig {
            source_address: Some(SocketAddress {
                address: "127.0.0.9".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..static_cluster_at("bound", peer_backend())
    };
    let rt = runtime(
        &listener,
        &[
            bound,
            static_cluster_at("web", web),
            static_cluster_at("db", db),
            static_cluster_at("kv-http", kv_http),
            static_cluster_at("kv", kv),
            static_cluster_at("fallback", fallback),
            passthrough,
        ],
    );

    let to = |ip: [u8; 4]| SocketAddr::from((ip, port));
    let (_tokio, metrics) = serve(rt, to([127, 0, 0, 1]));
    let get = b"GET / HTTP/1.1\r\nhost: somewhere.else\r\nconnection: close\r\n\r\n";

    // The chain of the address and port, whatever the request says.
    let web_answer = exchange(to([127, 0, 0, 2]), get);
    assert!(
        web_answer.starts_with("HTTP/1.1 200") && web_answer.ends_with("\r\n\r\nweb"),
        "{web_answer}"
    );
    assert_eq!(exchange(to([127, 0, 0, 3]), get), "db");
    // HTTP detected where chains want to know.
    let kv_answer = exchange(to([127, 0, 0, 4]), get);
    assert!(kv_answer.ends_with("\r\n\r\nkv-http"), "{kv_answer}");
    assert_eq!(exchange(to([127, 0, 0, 4]), b"PING\r\n"), "kv");
    // A server-first protocol says nothing: after the detection timeout it takes the TCP
    // chain, and the backend speaks.
    let started = Instant::now();
    assert_eq!(exchange(to([127, 0, 0, 4]), b""), "kv");
    let waited = started.elapsed();
    assert!(
        waited >= DETECT - Duration::from_millis(20) && waited < DETECT * 10,
        "{waited:?}"
    );
    // Another address: the default chain.
    assert_eq!(exchange(to([127, 0, 0, 6]), b"PING\r\n"), "fallback");
    // A passthrough to the listener itself (no redirect) would loop: closed at once.
    let started = Instant::now();
    assert_eq!(exchange(to([127, 0, 0, 5]), b"PING\r\n"), "");
    assert!(started.elapsed() < Duration::from_secs(2));

    assert_eq!(exchange(to([127, 0, 0, 7]), b""), "127.0.0.9");

    let rendered = metrics.render();
    for backend in ["db", "kv", "fallback"] {
        let line = format!(
            "tcp_connections_opened_total{{direction=\"outbound\",listener=\"{LISTENER}\",\
             backend=\"{backend}\",peer=\"\"}}"
        );
        assert!(rendered.contains(&line), "{line} in\n{rendered}");
    }
}
