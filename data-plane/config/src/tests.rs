use envoy_types::pb::{envoy::config::cluster::v3::Cluster, google::protobuf::Any};
use prost::{Message, Name};

use super::*;

fn any(c: &Cluster) -> Any {
    Any {
        type_url: Cluster::type_url(),
        value: c.encode_to_vec(),
    }
}

#[test]
fn type_urls_round_trip_in_push_order() {
    for (i, t) in TypeUrl::ALL.into_iter().enumerate() {
        assert_eq!(TypeUrl::from_type_url(t.type_url()), Some(t));
        assert_eq!(t.index(), i);
    }
    assert_eq!(TypeUrl::Cluster.type_url(), Cluster::type_url());
    assert_eq!(TypeUrl::ClusterLoadAssignment.to_string(), "EDS");
    assert_eq!(
        TypeUrl::ClusterLoadAssignment.noun(),
        "cluster load assignment"
    );
    assert!(TypeUrl::Listener.is_wildcard() && !TypeUrl::Secret.is_wildcard());
}

#[test]
fn a_field_outside_the_subset_is_refused_where_it_is() {
    let plain = Cluster {
        name: "c".to_owned(),
        ..Default::default()
    };
    assert!(matches!(
        translate(TypeUrl::Cluster, "c", &any(&plain)),
        Ok(Translation::Cluster(_))
    ));

    let dns = Cluster {
        dns_lookup_family: 1,
        ..plain.clone()
    };
    let refused = translate(TypeUrl::Cluster, "c", &any(&dns)).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "dns_lookup_family: not supported by the bundled proxy"
    );

    let refused = translate(TypeUrl::Cluster, "other", &any(&plain)).unwrap_err();
    assert_eq!(refused.field(), "name");
    let refused = translate(TypeUrl::Listener, "c", &any(&plain)).unwrap_err();
    assert_eq!(refused.field(), "type_url");
}

// === intercepted listeners: the xDS shape of /notes/intercept-xds-shape.md ===

mod intercept {
    use std::{net::SocketAddr, time::Duration};

    use envoy_types::pb::{
        envoy::{
            config::{
                cluster::v3::{
                    Cluster, OutlierDetection,
                    cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
                },
                core::v3::{
                    BindConfig, CidrRange as PbCidrRange, SocketAddress, TrafficDirection,
                    TransportSocket, socket_address,
                },
                endpoint::v3::ClusterLoadAssignment,
                listener::v3::{
                    FilterChainMatch, Listener, ListenerFilter, ListenerFilterChainMatchPredicate,
                    listener_filter,
                    listener_filter_chain_match_predicate::{MatchSet, Rule},
                },
            },
            extensions::filters::listener::tls_inspector::v3::TlsInspector,
            r#type::v3::Int32Range,
        },
        google::protobuf::{BoolValue, Duration as PbDuration, UInt32Value},
    };

    use crate::{
        test_support::{
            any, capture_listener, chain, cidr, close, destination, hcm, http_inspector,
            listener_filter, original_dst, passthrough, port_match, port_predicate, routes_to,
            service_chain, tcp_proxy, tls_inspector,
        },
        *,
    };

    fn not(p: ListenerFilterChainMatchPredicate) -> ListenerFilterChainMatchPredicate {
        ListenerFilterChainMatchPredicate {
            rule: Some(Rule::NotMatch(Box::new(p))),
        }
    }

    fn or(rules: Vec<ListenerFilterChainMatchPredicate>) -> ListenerFilterChainMatchPredicate {
        ListenerFilterChainMatchPredicate {
            rule: Some(Rule::OrMatch(MatchSet { rules })),
        }
    }

    /// The `outbound` listener: web:80 (HTTP) at 10.96.0.10, db:5432 (TCP) at 10.96.0.11, kv
    /// (undeclared) at 10.96.0.12 and fd00:10:96::12 on 8080 and 9000, the loop guard, and
    /// the passthrough.
    fn outbound() -> Listener {
        capture_listener(
            "outbound",
            15001,
            TrafficDirection::Outbound,
            vec![original_dst(), http_inspector(&[8080, 9000])],
            vec![
                service_chain("demo/web|80", "10.96.0.10", 80, false, hcm("demo/web|80")),
                service_chain(
                    "demo/db|5432",
                    "10.96.0.11",
                    5432,
                    false,
                    tcp_proxy("demo/db|5432", "demo/db|5432"),
                ),
                service_chain(
                    "demo/kv|8080|http",
                    "10.96.0.12",
                    8080,
                    true,
                    hcm("demo/kv|8080"),
                ),
                service_chain(
                    "demo/kv|8080",
                    "10.96.0.12",
                    8080,
                    false,
                    tcp_proxy("demo/kv|8080", "demo/kv|8080"),
                ),
                service_chain(
                    "demo/kv|9000|http",
                    "fd00:10:96::12",
                    9000,
                    true,
                    hcm("demo/kv|9000"),
                ),
                service_chain(
                    "demo/kv|9000",
                    "fd00:10:96::12",
                    9000,
                    false,
                    tcp_proxy("demo/kv|9000", "demo/kv|9000"),
                ),
                chain("loop", Some(port_match(15001, "")), close()),
            ],
            chain("passthrough", None, tcp_proxy("passthrough", "passthrough")),
        )
    }

    /// The `inbound` listener of a permissive Pod serving 8080.
    fn inbound() -> Listener {
        let to_app = tcp_proxy("inbound|8080", "inbound|8080");
        capture_listener(
            "inbound",
            15006,
            TrafficDirection::Inbound,
            vec![original_dst(), tls_inspector()],
            vec![
                chain(
                    "inbound|8080",
                    Some(port_match(8080, "tls")),
                    to_app.clone(),
                ),
                chain("inbound|8080|plaintext", Some(port_match(8080, "")), to_app),
            ],
            chain("passthrough", None, tcp_proxy("passthrough", "passthrough")),
        )
    }

    fn listener(l: &Listener) -> Result<ListenerConfig, Invalid> {
        match translate(TypeUrl::Listener, &l.name, &any(l))? {
            Translation::Listener(l) => Ok(l),
            other => panic!("{other:?}"),
        }
    }

    /// The listener refused, as `field: problem`.
    fn refused(l: &Listener) -> String {
        listener(l).unwrap_err().to_string()
    }

    fn cluster(c: &Cluster) -> Result<ClusterConfig, Invalid> {
        match translate(TypeUrl::Cluster, &c.name, &any(c))? {
            Translation::Cluster(c) => Ok(c),
            other => panic!("{other:?}"),
        }
    }

    fn to(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The name of the chain a connection takes.
    fn pick(
        l: &ListenerConfig,
        to: SocketAddr,
        transport: TransportProtocol,
        app: Option<AppProtocol>,
    ) -> Option<&str> {
        l.selector
            .select(to, transport, app)
            .map(|i| l.chains[i].name.as_str())
    }

    #[test]
    fn the_outbound_listener_routes_by_original_destination() {
        let l = listener(&outbound()).unwrap();
        assert_eq!(
            l.filters,
            ListenerFilters {
                original_dst: true,
                tls_inspector: false,
                http_inspector: Some(PortSet::range(8080, 8081).union(&PortSet::range(9000, 9001))),
                timeout: Some(Duration::from_secs(1)),
                continue_on_timeout: true,
            }
        );
        assert_eq!(l.chains.len(), 8);
        assert_eq!(l.selector.default_chain(), Some(7));
        assert_eq!(
            l.chains[2].matches,
            ChainMatch {
                destination_port: Some(8080),
                prefix_ranges: vec![CidrRange::new("10.96.0.12".parse().unwrap(), 32).unwrap()],
                transport_protocol: None,
                application_protocols: AppProtocol::ALL.to_vec(),
            }
        );
        let raw = TransportProtocol::RawBuffer;
        let http = Some(AppProtocol::Http11);
        // A ClusterIP and port: that service's chain, whatever the request says.
        assert_eq!(
            pick(&l, to("10.96.0.10:80"), raw, http),
            Some("demo/web|80")
        );
        assert_eq!(
            pick(&l, to("10.96.0.10:80"), raw, None),
            Some("demo/web|80")
        );
        assert_eq!(
            pick(&l, to("10.96.0.11:5432"), raw, None),
            Some("demo/db|5432")
        );
        // An undeclared port: HTTP if it looks like HTTP, else TCP.
        assert_eq!(
            pick(&l, to("10.96.0.12:8080"), raw, http),
            Some("demo/kv|8080|http")
        );
        assert_eq!(
            pick(&l, to("10.96.0.12:8080"), raw, Some(AppProtocol::H2c)),
            Some("demo/kv|8080|http")
        );
        assert_eq!(
            pick(&l, to("10.96.0.12:8080"), raw, None),
            Some("demo/kv|8080")
        );
        assert_eq!(
            pick(&l, to("[fd00:10:96::12]:9000"), raw, http),
            Some("demo/kv|9000|http")
        );
        // Anything else passes through; the port decides before the address does.
        assert_eq!(
            pick(&l, to("10.96.0.10:8080"), raw, http),
            Some("passthrough")
        );
        assert_eq!(
            pick(&l, to("10.96.0.13:80"), raw, None),
            Some("passthrough")
        );
        assert_eq!(
            pick(&l, to("192.0.2.1:443"), raw, None),
            Some("passthrough")
        );
        assert_eq!(pick(&l, to("127.0.0.1:15001"), raw, None), Some("loop"));
        assert_eq!(pick(&l, to("10.96.0.10:15001"), raw, None), Some("loop"));
        // Only the ports with HTTP chains are inspected.
        let inspected = l.filters.http_inspector.as_ref().unwrap();
        assert!(inspected.contains(8080) && inspected.contains(9000));
        assert!(!inspected.contains(80) && !inspected.contains(5432));
        assert!(matches!(l.chains[6].filter, NetworkFilter::Close));
        assert_eq!(l.rds_names().count(), 3);
    }

    #[test]
    fn the_inbound_listener_detects_tls_per_port() {
        let l = listener(&inbound()).unwrap();
        assert!(l.filters.original_dst && l.filters.tls_inspector);
        assert_eq!(l.filters.http_inspector, None);
        let tls = TransportProtocol::Tls;
        let raw = TransportProtocol::RawBuffer;
        let app = to("10.200.0.2:8080");
        assert!(l.selector.by_destination(app).unwrap().detects());
        assert_eq!(pick(&l, app, tls, None), Some("inbound|8080"));
        assert_eq!(pick(&l, app, raw, None), Some("inbound|8080|plaintext"));
        assert_eq!(
            pick(&l, to("10.200.0.2:9999"), raw, None),
            Some("passthrough")
        );
        // No chain for the port: nothing to detect.
        assert!(l.selector.by_destination(to("10.200.0.2:9999")).is_none());
    }

    #[test]
    fn listener_filter_settings_and_names() {
        // By name only, as older control planes write them; the timeout set to 0 disables it.
        let named = |name: &str| ListenerFilter {
            name: name.to_owned(),
            ..Default::default()
        };
        let l = Listener {
            listener_filters: vec![
                named("envoy.filters.listener.original_dst"),
                named("envoy.filters.listener.tls_inspector"),
                named("envoy.filters.listener.http_inspector"),
            ],
            listener_filters_timeout: Some(PbDuration::default()),
            filter_chains: vec![chain("any", None, tcp_proxy("c", "c"))],
            ..inbound()
        };
        let built = listener(&l).unwrap();
        assert!(built.filters.original_dst && built.filters.tls_inspector);
        assert_eq!(built.filters.http_inspector, Some(PortSet::all()));
        assert_eq!(built.filters.timeout, None);
        // A single port, and predicates that nest.
        let l = Listener {
            listener_filters: vec![
                original_dst(),
                ListenerFilter {
                    filter_disabled: Some(or(vec![
                        port_predicate(80),
                        not(or(vec![port_predicate(1), port_predicate(2)])),
                    ])),
                    ..http_inspector(&[1])
                },
            ],
            ..l
        };
        let built = listener(&l).unwrap();
        assert_eq!(
            built.filters.http_inspector.unwrap().to_string(),
            "1-2",
            "disabled on 80 and on every port but 1 and 2"
        );
        assert!(listener(&inbound()).unwrap().filters.continue_on_timeout);
    }

    #[test]
    fn listener_filters_outside_the_subset_are_refused() {
        let with_filters = |filters: Vec<ListenerFilter>| Listener {
            listener_filters: filters,
            ..outbound()
        };
        let unknown = ListenerFilter {
            name: "envoy.filters.listener.proxy_protocol".to_owned(),
            ..Default::default()
        };
        assert_eq!(
            refused(&with_filters(vec![original_dst(), unknown])),
            "listener_filters[1]: only the original_dst, tls_inspector and http_inspector \
             listener filters are supported"
        );
        assert_eq!(
            refused(&with_filters(vec![original_dst(), original_dst()])),
            "listener_filters[1]: the same listener filter is listed twice"
        );
        assert_eq!(
            refused(&with_filters(vec![http_inspector(&[8080]), original_dst()])),
            "listener_filters[1]: original_dst must come before the http_inspector, whose \
             filter_disabled reads the original destination port"
        );
        let discovery = ListenerFilter {
            config_type: Some(listener_filter::ConfigType::ConfigDiscovery(
                Default::default(),
            )),
            ..original_dst()
        };
        assert_eq!(
            refused(&with_filters(vec![discovery])),
            "listener_filters[0].config_discovery: filter config discovery is not supported"
        );
        let ja3 = listener_filter(
            "envoy.filters.listener.tls_inspector",
            &TlsInspector {
                enable_ja3_fingerprinting: Some(BoolValue { value: true }),
                ..Default::default()
            },
        );
        assert_eq!(
            refused(&Listener {
                listener_filters: vec![ja3],
                ..inbound()
            }),
            "listener_filters[0].typed_config: only the defaults are supported"
        );
        let disabled_dst = ListenerFilter {
            filter_disabled: Some(port_predicate(80)),
            ..original_dst()
        };
        assert_eq!(
            refused(&with_filters(vec![disabled_dst])),
            "listener_filters[0].filter_disabled: only the http_inspector may be disabled (by \
             destination port)"
        );
        let disabled_by = |p: ListenerFilterChainMatchPredicate| {
            let mut f = http_inspector(&[8080]);
            f.filter_disabled = Some(p);
            refused(&with_filters(vec![original_dst(), f]))
        };
        assert_eq!(
            disabled_by(ListenerFilterChainMatchPredicate {
                rule: Some(Rule::AnyMatch(true)),
            }),
            "listener_filters[1].filter_disabled.any_match: only not_match, or_match and \
             destination_port_range are supported"
        );
        assert_eq!(
            disabled_by(not(ListenerFilterChainMatchPredicate {
                rule: Some(Rule::AndMatch(MatchSet::default())),
            })),
            "listener_filters[1].filter_disabled.not_match.and_match: only not_match, \
             or_match and destination_port_range are supported"
        );
        assert_eq!(
            disabled_by(ListenerFilterChainMatchPredicate::default()),
            "listener_filters[1].filter_disabled.rule: a rule is required"
        );
        assert_eq!(
            disabled_by(not(or(vec![port_predicate(80)]))),
            "listener_filters[1].filter_disabled.not_match.or_match.rules: must hold at least \
             two rules"
        );
        let range = |start, end| ListenerFilterChainMatchPredicate {
            rule: Some(Rule::DestinationPortRange(Int32Range { start, end })),
        };
        for (start, end) in [(80, 80), (-1, 80), (81, 80), (0, 65_537)] {
            assert_eq!(
                disabled_by(not(or(vec![port_predicate(1), range(start, end)]))),
                "listener_filters[1].filter_disabled.not_match.or_match.rules[1].\
                 destination_port_range: must be ports start (inclusive) to end (exclusive), \
                 0 <= start < end <= 65536",
                "{start}..{end}"
            );
        }
        assert_eq!(
            refused(&Listener {
                listener_filters_timeout: Some(PbDuration {
                    seconds: -1,
                    nanos: 0
                }),
                ..outbound()
            }),
            "listener_filters_timeout: must not be negative"
        );
        assert_eq!(
            refused(&Listener {
                use_original_dst: Some(BoolValue { value: true }),
                ..outbound()
            }),
            "use_original_dst: handing connections over to the listener of their original \
             destination is not supported; use the envoy.filters.listener.original_dst \
             listener filter"
        );
    }

    #[test]
    fn chain_matches_outside_the_subset_are_refused() {
        let with_match = |m: FilterChainMatch| Listener {
            filter_chains: vec![chain("c", Some(m), tcp_proxy("c", "c"))],
            ..outbound()
        };
        let field = |m: FilterChainMatch| refused(&with_match(m));
        for (port, ok) in [(0, false), (1, true), (65_535, true), (65_536, false)] {
            let m = FilterChainMatch {
                destination_port: Some(UInt32Value { value: port }),
                ..Default::default()
            };
            match ok {
                true => assert!(listener(&with_match(m)).is_ok(), "{port}"),
                false => assert_eq!(
                    field(m),
                    "filter_chains[0].filter_chain_match.destination_port: must be a port, 1 \
                     to 65535"
                ),
            }
        }
        let ranges = |r: PbCidrRange| FilterChainMatch {
            prefix_ranges: vec![cidr("10.0.0.0", 8), r],
            ..Default::default()
        };
        assert_eq!(
            field(ranges(cidr("web.demo", 32))),
            "filter_chains[0].filter_chain_match.prefix_ranges[1].address_prefix: must be an IP \
             address"
        );
        assert_eq!(
            field(ranges(cidr("10.0.0.1", 33))),
            "filter_chains[0].filter_chain_match.prefix_ranges[1].prefix_len: must not be longer \
             than the address"
        );
        assert!(listener(&with_match(ranges(cidr("fd00::1", 128)))).is_ok());
        // No prefix length is a /0 (Envoy's default), an address masked to its prefix.
        let built = listener(&with_match(ranges(PbCidrRange {
            address_prefix: "10.1.2.3".into(),
            prefix_len: None,
        })))
        .unwrap();
        assert_eq!(
            built.chains[0].matches.prefix_ranges[1].to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            field(FilterChainMatch {
                transport_protocol: "quic".into(),
                ..Default::default()
            }),
            "filter_chains[0].filter_chain_match.transport_protocol: only tls and raw_buffer are \
             supported"
        );
        assert_eq!(
            field(FilterChainMatch {
                application_protocols: vec!["http/1.1".into(), "h2".into()],
                ..Default::default()
            }),
            "filter_chains[0].filter_chain_match.application_protocols[1]: only http/1.0, \
             http/1.1 and h2c (what the HTTP inspector detects) are supported"
        );
        for (m, name) in [
            (
                FilterChainMatch {
                    server_names: vec!["web".into()],
                    ..Default::default()
                },
                "server_names",
            ),
            (
                FilterChainMatch {
                    source_ports: vec![80],
                    ..Default::default()
                },
                "source_ports",
            ),
            (
                FilterChainMatch {
                    source_prefix_ranges: vec![cidr("10.0.0.1", 32)],
                    ..Default::default()
                },
                "source_prefix_ranges",
            ),
        ] {
            assert_eq!(
                field(m),
                format!(
                    "filter_chains[0].filter_chain_match.{name}: only destination_port, \
                     prefix_ranges, transport_protocol and application_protocols matches are \
                     supported"
                )
            );
        }
    }

    #[test]
    fn identical_and_alpn_matches_are_refused() {
        // Two chains for one service port, as Envoy refuses them.
        let mut l = outbound();
        l.filter_chains[1].filter_chain_match = Some(destination("10.96.0.10", 80, false));
        assert_eq!(
            refused(&l),
            "filter_chains[1].filter_chain_match: another filter chain has the same match"
        );
        // One shared application protocol is enough.
        let mut l = outbound();
        l.filter_chains[3].filter_chain_match = Some(FilterChainMatch {
            application_protocols: vec!["h2c".into()],
            ..destination("10.96.0.12", 8080, false)
        });
        assert_eq!(
            refused(&l),
            "filter_chains[3].filter_chain_match: another filter chain has the same match"
        );
        let mut l = outbound();
        l.filter_chains[0].filter_chain_match = Some(FilterChainMatch {
            prefix_ranges: vec![cidr("10.96.0.10", 32), cidr("10.96.0.10", 32)],
            ..destination("10.96.0.10", 80, false)
        });
        assert_eq!(
            refused(&l),
            "filter_chains[0].filter_chain_match: lists the same match twice"
        );
        // A TLS connection's application protocols would be its ALPN offer.
        let mut l = outbound();
        l.listener_filters.push(tls_inspector());
        assert_eq!(
            refused(&l),
            "filter_chains[2].filter_chain_match.application_protocols: matching the \
             application protocols of TLS connections (ALPN) is not supported; match \
             transport_protocol raw_buffer too"
        );
        for c in &mut l.filter_chains {
            if let Some(m) = &mut c.filter_chain_match
                && !m.application_protocols.is_empty()
            {
                m.transport_protocol = "raw_buffer".into();
            }
        }
        assert!(listener(&l).is_ok());
    }

    #[test]
    fn original_dst_clusters_connect_to_the_original_destination() {
        let c = cluster(&passthrough("passthrough")).unwrap();
        assert!(c.original_dst);
        assert!(c.endpoints.is_empty() && c.eds.is_none());
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert!(c.tls_default.is_none() && c.tls_matches.is_empty());

        let refused = |c: Cluster| cluster(&c).unwrap_err().to_string();
        assert_eq!(
            refused(Cluster {
                lb_policy: LbPolicy::RoundRobin as i32,
                ..passthrough("passthrough")
            }),
            "lb_policy: an ORIGINAL_DST cluster takes CLUSTER_PROVIDED"
        );
        assert_eq!(
            refused(Cluster {
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                    DiscoveryType::Static as i32
                )),
                ..passthrough("passthrough")
            }),
            "lb_policy: only ROUND_ROBIN and LEAST_REQUEST are supported"
        );
        assert_eq!(
            refused(Cluster {
                load_assignment: Some(ClusterLoadAssignment {
                    cluster_name: "passthrough".into(),
                    ..Default::default()
                }),
                ..passthrough("passthrough")
            }),
            "load_assignment: an ORIGINAL_DST cluster has no endpoints"
        );
        assert_eq!(
            refused(Cluster {
                transport_socket: Some(TransportSocket::default()),
                ..passthrough("passthrough")
            }),
            "transport_socket: an ORIGINAL_DST cluster connects in plaintext"
        );
        assert_eq!(
            refused(Cluster {
                outlier_detection: Some(OutlierDetection::default()),
                ..passthrough("passthrough")
            }),
            "outlier_detection: an ORIGINAL_DST cluster has no endpoints to eject"
        );
        assert_eq!(
            refused(Cluster {
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                    DiscoveryType::StrictDns as i32
                )),
                ..passthrough("passthrough")
            }),
            "type: only STATIC, EDS and ORIGINAL_DST clusters are supported"
        );
    }

    #[test]
    fn clusters_may_bind_a_source_address() {
        let bind = |address: &str, port: u32| BindConfig {
            source_address: Some(SocketAddress {
                address: address.to_owned(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            }),
            ..Default::default()
        };
        // The inbound passthrough: from 127.0.0.6, which the redirect rules let through.
        let inbound = Cluster {
            upstream_bind_config: Some(bind("127.0.0.6", 0)),
            ..passthrough("passthrough")
        };
        let c = cluster(&inbound).unwrap();
        assert_eq!(c.source_address, Some("127.0.0.6".parse().unwrap()));
        assert!(c.original_dst);
        assert_eq!(
            cluster(&passthrough("passthrough")).unwrap().source_address,
            None
        );
        let refused = |b: BindConfig| {
            cluster(&Cluster {
                upstream_bind_config: Some(b),
                ..passthrough("passthrough")
            })
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            refused(bind("127.0.0.6", 15006)),
            "upstream_bind_config.source_address.port_value: only 0 (any port) is supported"
        );
        assert_eq!(
            refused(bind("localhost", 0)),
            "upstream_bind_config.source_address.address: must be an IP address"
        );
        assert_eq!(
            refused(BindConfig::default()),
            "upstream_bind_config.source_address: is required"
        );
        assert_eq!(
            refused(BindConfig {
                freebind: Some(BoolValue { value: true }),
                ..bind("127.0.0.6", 0)
            }),
            "upstream_bind_config.freebind: not supported by the bundled proxy"
        );
    }

    #[test]
    fn only_tcp_proxies_reach_an_original_dst_cluster() {
        let mut translated = Translated::default();
        let Translation::Listener(l) =
            translate(TypeUrl::Listener, "outbound", &any(&outbound())).unwrap()
        else {
            panic!()
        };
        translated.listeners.insert("outbound".into(), l.into());
        let c = cluster(&passthrough("passthrough")).unwrap();
        translated.clusters.insert("passthrough".into(), c.into());
        let route = routes_to("demo/web|80", "passthrough");
        let Translation::Route(table) =
            translate(TypeUrl::RouteConfiguration, "demo/web|80", &any(&route)).unwrap()
        else {
            panic!()
        };
        translated.routes.insert("demo/web|80".into(), table.into());
        let rt = Runtime::link(&translated);
        let about_passthrough: Vec<&String> = rt
            .warnings
            .iter()
            .filter(|w| w.contains("passthrough"))
            .collect();
        assert_eq!(
            about_passthrough,
            [
                "route configuration demo/web|80: virtual host demo/web|80: route \"default\": \
                 cluster passthrough is ORIGINAL_DST, which only a tcp_proxy reaches; its \
                 requests get 503"
            ],
            "{:?}",
            rt.warnings
        );
    }
}

#[test]
fn envoy_counts_whole_milliseconds_under_the_first_bound_above_them() {
    use crate::metrics::{LATENCY_BUCKET_COUNT, envoy::time_bucket};
    // Bounds: 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, ... 10000 ms, then +Inf.
    assert_eq!(time_bucket(0), 0);
    assert_eq!(time_bucket(1), 2);
    assert_eq!(time_bucket(2), 2);
    assert_eq!(time_bucket(5), 4);
    assert_eq!(time_bucket(99), 7);
    assert_eq!(time_bucket(100), 8);
    assert_eq!(time_bucket(120), 8);
    assert_eq!(time_bucket(9_999), LATENCY_BUCKET_COUNT - 2);
    assert_eq!(time_bucket(10_000), LATENCY_BUCKET_COUNT - 1);
    assert_eq!(time_bucket(u64::MAX), LATENCY_BUCKET_COUNT - 1);
}

// === rate-limited access logs: process_ratelimit and token buckets ===

mod rate_limited {
    use std::time::Duration;

    use envoy_types::pb::{
        envoy::config::{
            accesslog::v3::{
                AccessLogFilter, ExtensionFilter, StatusCodeFilter, access_log_filter,
                extension_filter,
            },
            core::v3::{ApiConfigSource, ConfigSource, config_source::ConfigSourceSpecifier},
        },
        envoy::extensions::access_loggers::filters::process_ratelimit::v3::ProcessRateLimitFilter,
        envoy::r#type::v3::TokenBucket,
        google::protobuf::{Any, Duration as PbDuration},
    };

    use crate::{
        BucketName, LogFilter, NetworkFilter, TokenBucketConfig, Translation, TypeUrl,
        test_support::{any, grpc_access_log, logged_listener, rate_limit_filter, token_bucket},
        translate,
    };

    /// The translation of a listener whose one access log has `filter`: its filter with the
    /// listener's bucket names, or the error.
    pub(super) fn translated(
        filter: Option<AccessLogFilter>,
    ) -> Result<(Option<LogFilter>, Vec<String>), String> {
        let log = envoy_types::pb::envoy::config::accesslog::v3::AccessLog {
            filter,
            ..grpc_access_log("tap")
        };
        let listener = logged_listener("l", 8080, vec![log]);
        match translate(TypeUrl::Listener, "l", &any(&listener)) {
            Ok(Translation::Listener(l)) => {
                let NetworkFilter::Http(h) = &l.chains[0].filter else {
                    panic!("not HTTP")
                };
                let names = l.bucket_names().map(|b| b.to_string()).collect();
                Ok((h.access_logs[0].filter.clone(), names))
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    /// [`translated`]'s filter, or the error.
    fn filter_of(filter: Option<AccessLogFilter>) -> Result<Option<LogFilter>, String> {
        translated(filter).map(|(filter, _)| filter)
    }

    pub(super) const AT: &str = "filter_chains[0].filters[0].typed_config.access_log[0].filter";

    /// `rate_limit_filter("switchyard-tap")` with its `ProcessRateLimitFilter` changed.
    fn changed(f: impl Fn(&mut ProcessRateLimitFilter)) -> AccessLogFilter {
        let mut filter = rate_limit_filter("switchyard-tap");
        let Some(access_log_filter::FilterSpecifier::ExtensionFilter(ext)) =
            &mut filter.filter_specifier
        else {
            panic!()
        };
        let Some(extension_filter::ConfigType::TypedConfig(config)) = &mut ext.config_type else {
            panic!()
        };
        let mut decoded: ProcessRateLimitFilter =
            prost::Message::decode(&config.value[..]).expect("the filter's config decodes");
        f(&mut decoded);
        *config = any(&decoded);
        filter
    }

    #[test]
    fn the_process_ratelimit_filter_names_the_bucket() {
        assert_eq!(translated(None), Ok((None, Vec::new())));
        assert_eq!(
            translated(Some(rate_limit_filter("switchyard-tap"))),
            Ok((
                Some(LogFilter::Bucket(BucketName("switchyard-tap".to_owned()))),
                vec!["switchyard-tap".to_owned()]
            ))
        );
        // `self` is the ADS stream too, as everywhere else.
        let via_self = changed(|c| {
            c.dynamic_config.as_mut().unwrap().config_source = Some(ConfigSource {
                config_source_specifier: Some(ConfigSourceSpecifier::Self_(Default::default())),
                ..Default::default()
            });
        });
        assert!(filter_of(Some(via_self)).is_ok());
    }

    #[test]
    fn other_filters_and_sources_are_refused_at_their_field() {
        let status = AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::StatusCodeFilter(
                StatusCodeFilter::default(),
            )),
        };
        let other_extension = AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::ExtensionFilter(
                ExtensionFilter {
                    name: "envoy.access_loggers.extension_filters.cel".to_owned(),
                    config_type: Some(extension_filter::ConfigType::TypedConfig(Any {
                        type_url: "type.googleapis.com/xds.type.v3.CelExpression".to_owned(),
                        value: Vec::new(),
                    })),
                },
            )),
        };
        let no_config = AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::ExtensionFilter(
                ExtensionFilter {
                    name: "envoy.access_loggers.extension_filters.process_ratelimit".to_owned(),
                    config_type: None,
                },
            )),
        };
        let cases = [
            (
                AccessLogFilter::default(),
                format!("{AT}.filter_specifier: a filter is required"),
            ),
            (
                status,
                format!(
                    "{AT}.status_code_filter: only extension_filter (process_ratelimit), \
                     header_filter, and_filter and or_filter are supported"
                ),
            ),
            (
                other_extension,
                format!(
                    "{AT}.extension_filter: only \
                     envoy.access_loggers.extension_filters.process_ratelimit \
                     (ProcessRateLimitFilter) is supported"
                ),
            ),
            (
                no_config,
                format!("{AT}.extension_filter.typed_config: a typed config is required"),
            ),
            (
                changed(|c| c.dynamic_config = None),
                format!("{AT}.extension_filter.typed_config.dynamic_config: is required"),
            ),
            (
                changed(|c| c.dynamic_config.as_mut().unwrap().resource_name.clear()),
                format!(
                    "{AT}.extension_filter.typed_config.dynamic_config.resource_name: must not \
                     be empty"
                ),
            ),
            (
                changed(|c| c.dynamic_config.as_mut().unwrap().config_source = None),
                format!(
                    "{AT}.extension_filter.typed_config.dynamic_config.config_source: only ADS \
                     is supported"
                ),
            ),
            (
                changed(|c| {
                    c.dynamic_config.as_mut().unwrap().config_source = Some(ConfigSource {
                        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                            ApiConfigSource::default(),
                        )),
                        ..Default::default()
                    });
                }),
                format!(
                    "{AT}.extension_filter.typed_config.dynamic_config.config_source: only ADS \
                     is supported"
                ),
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(filter_of(Some(filter)), Err(expected));
        }
    }

    fn bucket(b: &TokenBucket) -> Result<TokenBucketConfig, String> {
        match translate(TypeUrl::TokenBucket, "switchyard-tap", &any(b)) {
            Ok(Translation::TokenBucket(config)) => Ok(config),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn token_buckets_are_validated_as_envoy_validates_them() {
        assert_eq!(
            bucket(&token_bucket(20, 1, Duration::from_millis(50))),
            Ok(TokenBucketConfig {
                max_tokens: 20,
                tokens_per_fill: 1,
                fill_interval: Duration::from_millis(50),
            })
        );
        // `tokens_per_fill` defaults to 1.
        let unset = TokenBucket {
            tokens_per_fill: None,
            ..token_bucket(3, 7, Duration::from_secs(3600))
        };
        assert_eq!(bucket(&unset).map(|b| b.tokens_per_fill), Ok(1));

        let cases = [
            (
                token_bucket(0, 1, Duration::from_secs(1)),
                "max_tokens: must be more than zero",
            ),
            (
                token_bucket(3, 0, Duration::from_secs(1)),
                "tokens_per_fill: must be more than zero",
            ),
            (
                TokenBucket {
                    fill_interval: None,
                    ..token_bucket(3, 1, Duration::from_secs(1))
                },
                "fill_interval: is required",
            ),
            (
                token_bucket(3, 1, Duration::from_millis(49)),
                "fill_interval: must be at least 50ms",
            ),
            (
                TokenBucket {
                    fill_interval: Some(PbDuration {
                        seconds: -1,
                        nanos: 0,
                    }),
                    ..token_bucket(3, 1, Duration::from_secs(1))
                },
                "fill_interval: must not be negative",
            ),
        ];
        for (b, expected) in cases {
            assert_eq!(bucket(&b), Err(expected.to_owned()), "{b:?}");
        }
    }
}

// === access log filters: header conditions and buckets under and/or ===

mod log_filters {
    use envoy_types::pb::envoy::{
        config::{
            accesslog::v3::{
                AccessLogFilter, DurationFilter, GrpcStatusFilter, HeaderFilter, LogTypeFilter,
                MetadataFilter, NotHealthCheckFilter, ResponseFlagFilter, RuntimeFilter,
                StatusCodeFilter, TraceableFilter, access_log_filter::FilterSpecifier,
            },
            route::v3::{HeaderMatcher, header_matcher::HeaderMatchSpecifier},
        },
        r#type::{matcher::v3::string_matcher::MatchPattern, v3::Int64Range},
    };

    use super::rate_limited::{AT, translated};
    use crate::{
        BucketName, HeaderMatch, LogFilter, MAX_LOG_FILTER_DEPTH, MAX_LOG_FILTER_NODES,
        StringMatch,
        test_support::{and_filter, header_filter, or_filter, rate_limit_filter},
    };

    const OTHER: &str = "only extension_filter (process_ratelimit), header_filter, and_filter and \
                         or_filter are supported";

    fn exact(name: &str, value: &str) -> AccessLogFilter {
        header_filter(name, MatchPattern::Exact(value.to_owned()))
    }

    fn prefix(name: &str, value: &str) -> AccessLogFilter {
        header_filter(name, MatchPattern::Prefix(value.to_owned()))
    }

    fn bucket(name: &str) -> LogFilter {
        LogFilter::Bucket(BucketName(name.to_owned()))
    }

    fn header(name: &str, matcher: StringMatch) -> LogFilter {
        LogFilter::Header(HeaderMatch {
            name: name.to_owned(),
            matcher,
            invert: false,
        })
    }

    /// The filter the control plane writes for a tap with `sessions` filtered sessions: the
    /// tap's own bucket, then per session its three conditions and its own bucket.
    fn tap_filter(sessions: usize) -> AccessLogFilter {
        let session = |i: usize| {
            and_filter(vec![
                exact(":method", "GET"),
                exact(":authority", "web.demo:80"),
                prefix(":path", "/a"),
                rate_limit_filter(&format!("switchyard-tap-{i}")),
            ])
        };
        let terms = std::iter::once(rate_limit_filter("switchyard-tap"))
            .chain((1..=sessions).map(session))
            .collect();
        or_filter(terms)
    }

    /// Every filter of the tree, `and`s and `or`s included.
    fn nodes(f: &LogFilter) -> usize {
        match f {
            LogFilter::Bucket(_) | LogFilter::Header(_) => 1,
            LogFilter::And(all) | LogFilter::Or(all) => 1 + all.iter().map(nodes).sum::<usize>(),
        }
    }

    #[test]
    fn a_taps_filters_translate_to_their_tree_and_name_every_bucket() {
        // One session: just its `and`, its bucket after its conditions.
        let one = and_filter(vec![
            exact(":method", "POST"),
            prefix(":path", "/a"),
            rate_limit_filter("switchyard-tap-7"),
        ]);
        assert_eq!(
            translated(Some(one)),
            Ok((
                Some(LogFilter::And(vec![
                    header(":method", StringMatch::Exact("POST".to_owned())),
                    header(":path", StringMatch::Prefix("/a".to_owned())),
                    bucket("switchyard-tap-7"),
                ])),
                vec!["switchyard-tap-7".to_owned()]
            ))
        );

        // The tap's own bucket and two sessions: every bucket, in the order a request would
        // reach them, so the listener waits for all three.
        let (filter, names) = translated(Some(tap_filter(2))).unwrap();
        let session = |i: usize| {
            LogFilter::And(vec![
                header(":method", StringMatch::Exact("GET".to_owned())),
                header(":authority", StringMatch::Exact("web.demo:80".to_owned())),
                header(":path", StringMatch::Prefix("/a".to_owned())),
                bucket(&format!("switchyard-tap-{i}")),
            ])
        };
        assert_eq!(
            filter,
            Some(LogFilter::Or(vec![
                bucket("switchyard-tap"),
                session(1),
                session(2)
            ]))
        );
        assert_eq!(
            names,
            ["switchyard-tap", "switchyard-tap-1", "switchyard-tap-2"]
        );

        // A header filter alone (a filtered tap without a rate), its name lower-cased as a
        // route's header matcher's is; no bucket to wait for.
        assert_eq!(
            translated(Some(exact("X-Tenant", "a"))),
            Ok((
                Some(header("x-tenant", StringMatch::Exact("a".to_owned()))),
                Vec::new()
            ))
        );
    }

    #[test]
    fn bucket_names_are_in_evaluation_order_with_repeats() {
        let filter = LogFilter::And(vec![
            bucket("a"),
            LogFilter::Or(vec![
                header(":method", StringMatch::Present),
                bucket("b"),
                LogFilter::And(vec![bucket("c"), header(":path", StringMatch::Present)]),
            ]),
            bucket("a"),
        ]);
        let names: Vec<&str> = filter.bucket_names().map(BucketName::as_str).collect();
        assert_eq!(names, ["a", "b", "c", "a"]);
        assert_eq!(
            header(":path", StringMatch::Present).bucket_names().count(),
            0
        );
    }

    /// The proxy drains the connections of an access log that changed, so two translations of
    /// one filter must be equal, and a changed condition (regexes included) unequal.
    #[test]
    fn filters_are_equal_when_their_conditions_are() {
        let regex = |pattern: &str| {
            header_filter(
                ":path",
                MatchPattern::SafeRegex(
                    envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                        regex: pattern.to_owned(),
                        ..Default::default()
                    },
                ),
            )
        };
        let of = |f: AccessLogFilter| translated(Some(f)).unwrap().0;
        assert_eq!(of(tap_filter(3)), of(tap_filter(3)));
        assert_ne!(of(tap_filter(3)), of(tap_filter(2)));
        assert_eq!(of(regex("/a/.*")), of(regex("/a/.*")));
        assert_ne!(of(regex("/a/.*")), of(regex("/b/.*")));
        assert_ne!(of(prefix(":path", "/a")), of(exact(":path", "/a")));
    }

    #[test]
    fn refusals_name_the_filter_at_fault() {
        // Anything wrong inside a session's `and`, behind the tap's own bucket.
        let session = |inner: AccessLogFilter| {
            or_filter(vec![
                rate_limit_filter("switchyard-tap"),
                and_filter(vec![inner, rate_limit_filter("switchyard-tap-7")]),
            ])
        };
        let at = format!("{AT}.or_filter.filters[1].and_filter.filters[0]");
        let header_filter_of = |header: Option<HeaderMatcher>| AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::HeaderFilter(HeaderFilter { header })),
        };
        let ranged = HeaderMatcher {
            name: "content-length".to_owned(),
            header_match_specifier: Some(HeaderMatchSpecifier::RangeMatch(Int64Range::default())),
            ..Default::default()
        };
        let cases = [
            (
                session(header_filter_of(None)),
                format!("{at}.header_filter.header: is required"),
            ),
            (
                session(exact("", "GET")),
                format!("{at}.header_filter.header.name: must not be empty"),
            ),
            (
                session(header_filter_of(Some(ranged))),
                format!("{at}.header_filter.header.range_match: range matches are not supported"),
            ),
            (
                session(and_filter(vec![exact(":method", "GET")])),
                format!("{at}.and_filter.filters: must hold at least 2 filters"),
            ),
            (
                or_filter(Vec::new()),
                format!("{AT}.or_filter.filters: must hold at least 2 filters"),
            ),
            (
                or_filter(vec![rate_limit_filter("switchyard-tap")]),
                format!("{AT}.or_filter.filters: must hold at least 2 filters"),
            ),
            (
                and_filter(vec![exact(":method", "GET"), rate_limit_filter("")]),
                format!(
                    "{AT}.and_filter.filters[1].extension_filter.typed_config.dynamic_config.\
                     resource_name: must not be empty"
                ),
            ),
            (
                session(AccessLogFilter::default()),
                format!("{at}.filter_specifier: a filter is required"),
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(translated(Some(filter)), Err(expected));
        }

        // Every other kind, where it stands.
        let kinds = [
            (
                FilterSpecifier::StatusCodeFilter(StatusCodeFilter::default()),
                "status_code_filter",
            ),
            (
                FilterSpecifier::DurationFilter(DurationFilter::default()),
                "duration_filter",
            ),
            (
                FilterSpecifier::NotHealthCheckFilter(NotHealthCheckFilter::default()),
                "not_health_check_filter",
            ),
            (
                FilterSpecifier::TraceableFilter(TraceableFilter::default()),
                "traceable_filter",
            ),
            (
                FilterSpecifier::RuntimeFilter(RuntimeFilter::default()),
                "runtime_filter",
            ),
            (
                FilterSpecifier::ResponseFlagFilter(ResponseFlagFilter::default()),
                "response_flag_filter",
            ),
            (
                FilterSpecifier::GrpcStatusFilter(GrpcStatusFilter::default()),
                "grpc_status_filter",
            ),
            (
                FilterSpecifier::MetadataFilter(MetadataFilter::default()),
                "metadata_filter",
            ),
            (
                FilterSpecifier::LogTypeFilter(LogTypeFilter::default()),
                "log_type_filter",
            ),
        ];
        for (kind, field) in kinds {
            let filter = AccessLogFilter {
                filter_specifier: Some(kind),
            };
            assert_eq!(
                translated(Some(session(filter))),
                Err(format!("{at}.{field}: {OTHER}"))
            );
        }
    }

    /// `and[and[... and[c, c] ..., c], c]`, `depth` deep, of one header condition `c`.
    fn nested(depth: usize) -> AccessLogFilter {
        let leaf = || exact(":method", "GET");
        (1..depth).fold(leaf(), |inner, _| and_filter(vec![inner, leaf()]))
    }

    /// An `or` of `n` header conditions: `n + 1` filters.
    fn wide(n: usize) -> AccessLogFilter {
        or_filter(vec![prefix(":path", "/a"); n])
    }

    #[test]
    fn the_tree_is_bounded_in_depth_and_in_filters() {
        assert!(translated(Some(nested(MAX_LOG_FILTER_DEPTH))).is_ok());
        let too_deep = translated(Some(nested(MAX_LOG_FILTER_DEPTH + 1))).unwrap_err();
        let at = format!(
            "{AT}{}",
            ".and_filter.filters[0]".repeat(MAX_LOG_FILTER_DEPTH)
        );
        assert_eq!(
            too_deep,
            format!("{at}: nested deeper than MAX_LOG_FILTER_DEPTH (8) filters")
        );
        // The message's figure is the bound's.
        assert!(too_deep.contains(&format!("({MAX_LOG_FILTER_DEPTH})")));

        assert!(translated(Some(wide(MAX_LOG_FILTER_NODES - 1))).is_ok());
        let too_many = translated(Some(wide(MAX_LOG_FILTER_NODES))).unwrap_err();
        assert_eq!(
            too_many,
            format!(
                "{AT}.or_filter.filters[{}]: the access log's filter has more than \
                 MAX_LOG_FILTER_NODES (1024) filters",
                MAX_LOG_FILTER_NODES - 1
            )
        );
        assert!(too_many.contains(&format!("({MAX_LOG_FILTER_NODES})")));

        // The control plane's largest tap, 64 sessions, fits with room to spare.
        let (filter, names) = translated(Some(tap_filter(64))).unwrap();
        assert_eq!(filter.as_ref().map(nodes), Some(322));
        assert_eq!(names.len(), 65);
    }
}
