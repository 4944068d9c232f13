use proptest::prelude::*;

use super::*;
use crate::{
    Kind, SmiObject, VersionedObject,
    test_util::{read, target, yaml_round_trip},
};

fn canonical(v: VersionedObject) -> TrafficTarget {
    match v.into_canonical() {
        SmiObject::TrafficTarget(tt) => tt,
        other => panic!("not a target: {other:?}"),
    }
}

const LEGACY: &str = r#"
apiVersion: access.smi-spec.io/v1alpha1
kind: TrafficTarget
metadata: {name: path-specific, namespace: default}
destination: {kind: ServiceAccount, name: service-a, namespace: default, port: 8080}
specs:
- kind: HTTPRouteGroup
  name: the-routes
  matches: [metrics]
sources:
- {kind: ServiceAccount, name: prometheus, namespace: default}
"#;

#[test]
fn v1alpha1_legacy_shape_reads_into_rules() {
    let tt = canonical(read(Kind::TrafficTarget, "v1alpha1", LEGACY));
    assert_eq!(tt.destination.subject.name, "service-a");
    assert_eq!(tt.destination.port, Some(8080));
    assert_eq!(
        tt.rules,
        [Rule {
            kind: "HTTPRouteGroup".into(),
            name: "the-routes".into(),
            matches: vec!["metrics".into()]
        }]
    );
    assert_eq!(tt.sources[0].name, "prometheus");
    // v1alpha2 keeps the port under spec.destination.
    let v2 = v1alpha2::TrafficTarget::try_from(tt).unwrap();
    assert_eq!(v2.spec.destination.port, Some(8080));
    assert_eq!(v2.spec.rules[0].name, "the-routes");
}

#[test]
fn a_destination_port_fails_closed_instead_of_widening_access() {
    let tt = canonical(read(Kind::TrafficTarget, "v1alpha1", LEGACY));
    let err = v1alpha3::TrafficTarget::try_from(tt).unwrap_err();
    assert_eq!(err.field, "spec.destination.port");
    assert!(err.to_string().starts_with("traffictarget default/path-specific: spec.destination.port: cannot be represented in v1alpha3"), "{err}");
}

#[test]
fn v1alpha3_writes_back_in_the_legacy_shape() {
    let yaml = r#"
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: t, namespace: default}
spec:
  destination: {kind: ServiceAccount, name: api, namespace: default}
  rules: [{kind: TCPRoute, name: port-8080}]
  sources: [{kind: ServiceAccount, name: web}]
"#;
    let tt = canonical(read(Kind::TrafficTarget, "v1alpha3", yaml));
    let v1 = SmiObject::TrafficTarget(tt)
        .to_version("v1alpha1")
        .unwrap()
        .to_json();
    assert_eq!(v1["apiVersion"], "access.smi-spec.io/v1alpha1");
    assert_eq!(v1["destination"]["name"], "api");
    assert_eq!(v1["specs"][0]["name"], "port-8080");
    assert!(v1.get("spec").is_none(), "legacy shape has no spec: {v1}");
}

proptest! {
    #[test]
    fn every_version_round_trips_through_canonical(tt in target(false)) {
        for version in Kind::TrafficTarget.versions() {
            let v = SmiObject::TrafficTarget(tt.clone()).to_version(version).unwrap();
            prop_assert_eq!(canonical(yaml_round_trip(&v)), tt.clone(), "through {}", version);
        }
    }

    #[test]
    fn ports_round_trip_where_they_exist(tt in target(true)) {
        for version in ["v1alpha1", "v1alpha2"] {
            let v = SmiObject::TrafficTarget(tt.clone()).to_version(version).unwrap();
            prop_assert_eq!(canonical(yaml_round_trip(&v)), tt.clone());
        }
        let v3 = SmiObject::TrafficTarget(tt.clone()).to_version("v1alpha3");
        prop_assert_eq!(v3.is_ok(), tt.destination.port.is_none());
    }
}
