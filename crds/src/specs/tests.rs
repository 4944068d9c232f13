use proptest::prelude::*;

use super::*;
use crate::{
    Kind, SmiObject, VersionedObject,
    test_util::{read, route_group, tcp_route, udp_route, yaml_round_trip},
};

fn group(v: VersionedObject) -> HttpRouteGroup {
    match v.into_canonical() {
        SmiObject::HttpRouteGroup(g) => g,
        other => panic!("not a route group: {other:?}"),
    }
}

#[test]
fn headers_read_as_a_list_of_maps_or_one_map() {
    let list = r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: g}
spec:
  matches:
  - name: insiders
    headers:
    - user-agent: ".*Android.*"
    - cookie: "^(.*?;)?(type=insider)(;.*)?$"
"#;
    let map = r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: g}
spec:
  matches:
  - name: insiders
    headers:
      user-agent: ".*Android.*"
      cookie: "^(.*?;)?(type=insider)(;.*)?$"
"#;
    let a = group(read(Kind::HttpRouteGroup, "v1alpha4", list));
    let b = group(read(Kind::HttpRouteGroup, "v1alpha4", map));
    assert_eq!(a, b);
    assert_eq!(
        a.matches[0].headers.iter().collect::<Vec<_>>(),
        [
            ("user-agent", ".*Android.*"),
            ("cookie", "^(.*?;)?(type=insider)(;.*)?$")
        ]
    );
    // Written back in the list form every upstream CRD accepts.
    let json = serde_json::to_value(&a.matches[0].headers).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{"user-agent": ".*Android.*"}, {"cookie": "^(.*?;)?(type=insider)(;.*)?$"}])
    );
}

#[test]
fn legacy_route_groups_keep_matches_at_the_top_level() {
    let yaml = r#"
apiVersion: specs.smi-spec.io/v1alpha1
kind: HTTPRouteGroup
metadata: {name: the-routes}
matches:
- {name: metrics, pathRegex: /metrics, methods: [GET]}
"#;
    let g = group(read(Kind::HttpRouteGroup, "v1alpha1", yaml));
    assert_eq!(g.matches[0].path_regex.as_deref(), Some("/metrics"));
    let v4 = SmiObject::HttpRouteGroup(g.clone())
        .to_version("v1alpha4")
        .unwrap()
        .to_json();
    assert_eq!(v4["spec"]["matches"][0]["name"], "metrics");
    let v2 = SmiObject::HttpRouteGroup(g)
        .to_version("v1alpha2")
        .unwrap()
        .to_json();
    assert_eq!(v2["matches"][0]["methods"][0], "GET");
    assert!(v2.get("spec").is_none());
}

#[test]
fn tcp_route_ports_need_v1alpha4() {
    let yaml = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {name: db}\nspec: {matches: {ports: [3306]}}\n";
    let obj = read(Kind::TcpRoute, "v1alpha4", yaml).into_canonical();
    let err = obj.to_version("v1alpha3").unwrap_err();
    assert_eq!(err.field, "spec.matches");
    // `ports: []` is "every port", which the older, field-less versions mean too.
    let all = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {name: any}\nspec: {matches: {ports: []}}\n";
    let obj = read(Kind::TcpRoute, "v1alpha4", all).into_canonical();
    for v in ["v1alpha1", "v1alpha2", "v1alpha3"] {
        assert!(obj.to_version(v).is_ok(), "{v}");
    }
}

#[test]
fn udp_route_is_only_served_as_v1alpha4() {
    let yaml = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: UDPRoute\nmetadata: {name: dns}\nspec: {matches: {ports: [53]}}\n";
    let obj = read(Kind::UdpRoute, "v1alpha4", yaml);
    assert!(obj.clone().into_canonical().to_version("v1alpha3").is_err());
    let de = serde_yaml::Deserializer::from_str(yaml);
    assert!(VersionedObject::from_deserializer(Kind::UdpRoute, "v1alpha3", de).is_err());
}

proptest! {
    #[test]
    fn route_groups_round_trip_through_every_version(g in route_group()) {
        for version in Kind::HttpRouteGroup.versions() {
            let v = SmiObject::HttpRouteGroup(g.clone()).to_version(version).unwrap();
            prop_assert_eq!(group(yaml_round_trip(&v)), g.clone(), "through {}", version);
        }
    }

    #[test]
    fn tcp_routes_round_trip(r in tcp_route(true), all in tcp_route(false)) {
        let v = SmiObject::TcpRoute(r.clone()).to_version("v1alpha4").unwrap();
        prop_assert_eq!(yaml_round_trip(&v).into_canonical(), SmiObject::TcpRoute(r));
        for version in Kind::TcpRoute.versions() {
            let v = SmiObject::TcpRoute(all.clone()).to_version(version).unwrap();
            prop_assert_eq!(yaml_round_trip(&v).into_canonical(), SmiObject::TcpRoute(all.clone()));
        }
    }

    #[test]
    fn udp_routes_round_trip(r in udp_route()) {
        let v = SmiObject::UdpRoute(r.clone()).to_version("v1alpha4").unwrap();
        prop_assert_eq!(yaml_round_trip(&v).into_canonical(), SmiObject::UdpRoute(r));
    }
}
