//! Proptest strategies and builders shared by the crate's tests.

use std::collections::BTreeMap;

use kube::core::ObjectMeta;
use proptest::{collection::vec, option, prelude::*};

use crate::{
    Decimal, VersionedObject, Weight,
    access::{Destination, Rule, Subject, TrafficTarget},
    headers::HttpHeaders,
    specs::{HttpMatch, HttpRouteGroup, PortMatch, TcpRoute, UdpRoute},
    split::{Backend, RouteGroupRef, TrafficSplit},
};

pub(crate) fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,12}[a-z0-9]"
}

pub(crate) fn meta() -> impl Strategy<Value = ObjectMeta> {
    (
        name(),
        option::of(name()),
        option::of(vec((name(), name()), 0..3)),
    )
        .prop_map(|(n, ns, labels)| ObjectMeta {
            name: Some(n),
            namespace: ns,
            labels: labels.map(|l| l.into_iter().collect::<BTreeMap<_, _>>()),
            ..ObjectMeta::default()
        })
}

/// Exact decimals of the kind people write as quantities: `95`, `500m`, `1.5`, `2k`.
pub(crate) fn decimal() -> impl Strategy<Value = Decimal> {
    // Bounded so that cross-multiplying two scaled weights in the tests stays within i128.
    (0i128..1_000_000, -6i32..=3).prop_map(|(m, e)| Decimal::new(m, e).unwrap_or(Decimal::ZERO))
}

pub(crate) fn whole() -> impl Strategy<Value = Decimal> {
    (0i64..1_000_000).prop_map(Decimal::from_i64)
}

pub(crate) fn split_with(
    weights: BoxedStrategy<Decimal>,
    with_matches: bool,
) -> impl Strategy<Value = TrafficSplit> {
    let matches = if with_matches {
        vec(
            (name(), option::of(Just("specs.smi-spec.io".to_string()))),
            0..3,
        )
        .boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (meta(), name(), vec((name(), weights), 1..6), matches).prop_map(
        |(metadata, service, backends, matches)| TrafficSplit {
            metadata,
            service,
            backends: backends
                .into_iter()
                .map(|(service, w)| Backend {
                    service,
                    weight: Some(Weight(w)),
                })
                .collect(),
            matches: matches
                .into_iter()
                .map(|(name, api_group)| RouteGroupRef {
                    kind: "HTTPRouteGroup".into(),
                    name,
                    api_group,
                })
                .collect(),
            status: None,
        },
    )
}

pub(crate) fn subject() -> impl Strategy<Value = Subject> {
    (name(), option::of(name())).prop_map(|(name, namespace)| Subject {
        kind: "ServiceAccount".into(),
        name,
        namespace,
    })
}

pub(crate) fn target(with_port: bool) -> impl Strategy<Value = TrafficTarget> {
    let port = if with_port {
        option::of(1u16..).boxed()
    } else {
        Just(None).boxed()
    };
    let rule = (
        prop_oneof![Just("HTTPRouteGroup"), Just("TCPRoute")],
        name(),
        vec(name(), 0..3),
    )
        .prop_map(|(kind, name, matches)| Rule {
            kind: kind.into(),
            name,
            matches,
        });
    (
        meta(),
        subject(),
        port,
        vec(rule, 0..4),
        vec(subject(), 0..4),
    )
        .prop_map(|(metadata, subject, port, rules, sources)| TrafficTarget {
            metadata,
            destination: Destination { subject, port },
            rules,
            sources,
            status: None,
        })
}

pub(crate) fn http_match() -> impl Strategy<Value = HttpMatch> {
    (
        name(),
        option::of(prop_oneof![
            Just("/api/.*".to_string()),
            Just("/metrics".to_string()),
            "/[a-z]{1,5}"
        ]),
        vec(prop_oneof![Just("GET"), Just("POST"), Just("*")], 0..3),
        vec(
            (
                "[a-z][a-z-]{0,8}",
                prop_oneof![Just(".*Firefox.*".to_string()), "[a-z]{1,4}"],
            ),
            0..3,
        ),
    )
        .prop_map(|(name, path_regex, methods, headers)| HttpMatch {
            name,
            path_regex,
            methods: methods.into_iter().map(String::from).collect(),
            headers: HttpHeaders(headers),
        })
}

pub(crate) fn route_group() -> impl Strategy<Value = HttpRouteGroup> {
    (meta(), vec(http_match(), 0..4)).prop_map(|(metadata, matches)| HttpRouteGroup {
        metadata,
        matches,
        status: None,
    })
}

pub(crate) fn port_match(any_ports: bool) -> impl Strategy<Value = PortMatch> {
    if any_ports {
        (option::of(name()), vec(1u16.., 0..4))
            .prop_map(|(name, ports)| PortMatch { name, ports })
            .boxed()
    } else {
        Just(PortMatch::default()).boxed()
    }
}

pub(crate) fn tcp_route(any_ports: bool) -> impl Strategy<Value = TcpRoute> {
    (meta(), port_match(any_ports)).prop_map(|(metadata, ports)| TcpRoute {
        metadata,
        ports,
        status: None,
    })
}

pub(crate) fn udp_route() -> impl Strategy<Value = UdpRoute> {
    (meta(), port_match(true)).prop_map(|(metadata, ports)| UdpRoute {
        metadata,
        ports,
        status: None,
    })
}

/// Writes an object as YAML in its own version and reads it back, as a user's file would be.
pub(crate) fn yaml_round_trip(obj: &VersionedObject) -> VersionedObject {
    let yaml = serde_yaml::to_string(&obj.to_json()).expect("serialise");
    let de = serde_yaml::Deserializer::from_str(&yaml);
    VersionedObject::from_deserializer(obj.kind(), obj.version(), de).expect("read back")
}

/// Reads one YAML document as the given kind and version.
pub(crate) fn read(kind: crate::Kind, version: &str, yaml: &str) -> VersionedObject {
    VersionedObject::from_deserializer(kind, version, serde_yaml::Deserializer::from_str(yaml))
        .unwrap_or_else(|e| panic!("{kind} {version}: {e}"))
}
