//! The proxy's listeners with a configuration in the intercepted shape (an `original_dst`
//! listener filter, chains per destination address and port, HTTP detected on some ports, a
//! default chain): real connections to `127.0.0.x:<port>` land on the chain of that address
//! and port. Without an iptables redirect a connection's destination is its local address, as
//! with Envoy; `e2e/tests/intercept_proxy.rs` covers `SO_ORIGINAL_DST` itself.

// Helpers outside `#[test]` functions are test code too: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
            },
            core::v3::{Address, BindConfig, CidrRange, SocketAddress, address, socket_address},
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
            },
            listener::v3::{
                Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
                ListenerFilterChainMatchPredicate, filter, listener_filter,
                listener_filter_chain_match_predicate::Rule,
            },
            route::v3::{
                Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
                route_action, route_match,
            },
        },
        extensions::filters::{
            http::router::v3::Router,
            listener::{http_inspector::v3::HttpInspector, original_dst::v3::OriginalDst},
            network::{
                http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier,
                    http_filter,
                },
                tcp_proxy::v3::{TcpProxy, tcp_proxy},
            },
        },
        r#type::v3::Int32Range,
    },
    google::protobuf::{Any, Duration as PbDuration, UInt32Value},
};
use prost::{Message, Name};
use switchyard_proxy::{
    config::{Runtime, Translated, Translation, TypeUrl, translate},
    metrics::Registry,
    proxy,
    state::State,
};

const LISTENER: &str = "outbound";
/// The listener filters' timeout: short, so a server-first protocol waits little.
const DETECT: Duration = Duration::from_millis(300);

// === Utils ===

fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn socket(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

fn typed<M: Message + Name>(config: &M) -> Filter {
    Filter {
        name: M::full_name(),
        config_type: Some(filter::ConfigType::TypedConfig(any(config))),
    }
}

fn tcp_proxy(cluster: &str) -> Filter {
    typed(&TcpProxy {
        stat_prefix: cluster.to_owned(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_owned())),
        ..Default::default()
    })
}

/// An HTTP connection manager whose one route goes to `cluster`, whatever the host.
fn http_to(cluster: &str) -> Filter {
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
            ..Default::default()
        })),
        ..Default::default()
    };
    typed(&HttpConnectionManager {
        stat_prefix: cluster.to_owned(),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: cluster.to_owned(),
            virtual_hosts: vec![VirtualHost {
                name: cluster.to_owned(),
                domains: vec!["*".to_owned()],
                routes: vec![route],
                ..Default::default()
            }],
            ..Default::default()
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// A chain for `ip:port`, for HTTP only when `http`.
fn chain(name: &str, ip: &str, port: u16, http: bool, filter: Filter) -> FilterChain {
    FilterChain {
        name: name.to_owned(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(UInt32Value {
                value: u32::from(port),
            }),
            prefix_ranges: vec![CidrRange {
                address_prefix: ip.to_owned(),
                prefix_len: Some(UInt32Value {
                    value: if ip.contains(':') { 128 } else { 32 },
                }),
            }],
            application_protocols: if http {
                vec!["http/1.0".into(), "http/1.1".into(), "h2c".into()]
            } else {
                vec![]
            },
            ..Default::default()
        }),
        filters: vec![filter],
        ..Default::default()
    }
}

fn static_cluster(name: &str, endpoint: SocketAddr) -> Cluster {
    let lb = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(endpoint)),
            ..Default::default()
        })),
        ..Default::default()
    };
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_owned(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![lb],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
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
        let mut address = socket(SocketAddr::from(([0u16; 8], port)));
        if let Some(address::Address::SocketAddress(sa)) = &mut address.address {
            sa.ipv4_compat = ipv4_compat;
        }
        let listener = Listener {
            name: LISTENER.to_owned(),
            address: Some(address),
            listener_filters: vec![ListenerFilter {
                name: "envoy.filters.listener.original_dst".to_owned(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                    &OriginalDst {},
                ))),
                filter_disabled: None,
            }],
            filter_chains: vec![
                chain("v4", "127.0.0.2", port, false, tcp_proxy("v4")),
                chain("v6", "::1", port, false, tcp_proxy("v6")),
            ],
            default_filter_chain: Some(FilterChain {
                name: "default".to_owned(),
                filters: vec![tcp_proxy("fallback")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let rt = runtime(
            &listener,
            &[
                static_cluster("v4", v4),
                static_cluster("v6", v6),
                static_cluster("fallback", fallback),
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
    // Inspect HTTP on `port` only: `not(destination_port_range(port))`.
    let mut inspector = ListenerFilter {
        name: "envoy.filters.listener.http_inspector".to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &HttpInspector {},
        ))),
        filter_disabled: None,
    };
    inspector.filter_disabled = Some(ListenerFilterChainMatchPredicate {
        rule: Some(Rule::NotMatch(Box::new(
            ListenerFilterChainMatchPredicate {
                rule: Some(Rule::DestinationPortRange(Int32Range {
                    start: i32::from(port),
                    end: i32::from(port) + 1,
                })),
            },
        ))),
    });
    let listener = Listener {
        name: LISTENER.to_owned(),
        address: Some(socket(SocketAddr::from(([0, 0, 0, 0], port)))),
        traffic_direction: 2,
        listener_filters: vec![
            ListenerFilter {
                name: "envoy.filters.listener.original_dst".to_owned(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                    &OriginalDst {},
                ))),
                filter_disabled: None,
            },
            inspector,
        ],
        listener_filters_timeout: Some(PbDuration {
            seconds: 0,
            nanos: i32::try_from(DETECT.as_nanos()).unwrap(),
        }),
        continue_on_listener_filters_timeout: true,
        filter_chains: vec![
            chain("web", "127.0.0.2", port, false, http_to("web")),
            chain("db", "127.0.0.3", port, false, tcp_proxy("db")),
            chain("kv|http", "127.0.0.4", port, true, http_to("kv-http")),
            chain("kv", "127.0.0.4", port, false, tcp_proxy("kv")),
            chain(
                "passthrough",
                "127.0.0.5",
                port,
                false,
                tcp_proxy("passthrough"),
            ),
            chain("bound", "127.0.0.7", port, false, tcp_proxy("bound")),
        ],
        default_filter_chain: Some(FilterChain {
            name: "default".to_owned(),
            filters: vec![tcp_proxy("fallback")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let passthrough = Cluster {
        name: "passthrough".to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        ..Default::default()
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
        ..static_cluster("bound", peer_backend())
    };
    let rt = runtime(
        &listener,
        &[
            bound,
            static_cluster("web", web),
            static_cluster("db", db),
            static_cluster("kv-http", kv_http),
            static_cluster("kv", kv),
            static_cluster("fallback", fallback),
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
