use proptest::prelude::*;

use super::*;
use crate::{
    Kind, SmiObject, VersionedObject,
    test_util::{decimal, read, split_with, whole, yaml_round_trip},
};

fn canonical(v: VersionedObject) -> TrafficSplit {
    match v.into_canonical() {
        SmiObject::TrafficSplit(ts) => ts,
        other => panic!("not a split: {other:?}"),
    }
}

fn weights(ts: &TrafficSplit) -> Vec<String> {
    ts.backends
        .iter()
        .map(|b| b.weight.map(|w| w.0.to_string()).unwrap_or_default())
        .collect()
}

const V1ALPHA1: &str = r#"
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: foobar-rollout}
spec:
  service: foobar
  backends:
  - service: foobar-v1
    weight: 1
  - service: foobar-v2
    weight: 500m
"#;

#[test]
fn v1alpha1_quantities_convert_to_v1alpha4_with_the_same_ratio() {
    let ts = canonical(read(Kind::TrafficSplit, "v1alpha1", V1ALPHA1));
    assert_eq!(weights(&ts), ["1", "500m"]);
    let v4 = v1alpha4::TrafficSplit::try_from(ts.clone()).unwrap();
    let ints: Vec<_> = v4
        .spec
        .backends
        .iter()
        .map(|b| b.weight.0.to_i64().unwrap())
        .collect();
    assert_eq!(ints, [1000, 500]);
    // And back: v1alpha1 reads the scaled integers, which keep the 2:1 ratio.
    let back = v1alpha1::TrafficSplit::try_from(TrafficSplit::from(v4)).unwrap();
    let qs: Vec<_> = back
        .spec
        .backends
        .iter()
        .map(|b| b.weight.unwrap().0.to_string())
        .collect();
    assert_eq!(qs, ["1000", "500"]);
}

#[test]
fn flagger_style_string_weights_read_back_as_integers() {
    let yaml = r#"
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: podinfo, namespace: test}
spec:
  service: podinfo
  backends:
  - {service: podinfo-canary, weight: "5"}
  - {service: podinfo-primary, weight: "95"}
"#;
    let ts = canonical(read(Kind::TrafficSplit, "v1alpha1", yaml));
    let v4 = v1alpha4::TrafficSplit::try_from(ts).unwrap();
    let json = serde_json::to_value(&v4.spec.backends).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"service": "podinfo-canary", "weight": 5},
            {"service": "podinfo-primary", "weight": 95},
        ])
    );
    let v1 = v1alpha1::TrafficSplit::try_from(TrafficSplit::from(v4)).unwrap();
    let json = serde_json::to_value(&v1.spec.backends).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"service": "podinfo-canary", "weight": "5"},
            {"service": "podinfo-primary", "weight": "95"},
        ])
    );
}

#[test]
fn matches_cannot_go_below_v1alpha3() {
    let yaml = r#"
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: ab-test, namespace: shop}
spec:
  service: website
  matches: [{kind: HTTPRouteGroup, name: ab-test}]
  backends: [{service: website-v2, weight: 100}]
"#;
    let ts = canonical(read(Kind::TrafficSplit, "v1alpha4", yaml));
    assert_eq!(ts.matches[0].name, "ab-test");
    let err = v1alpha2::TrafficSplit::try_from(ts.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "trafficsplit shop/ab-test: spec.matches: cannot be represented in v1alpha2: matches need v1alpha3 or later"
    );
    assert!(v1alpha1::TrafficSplit::try_from(ts.clone()).is_err());
    assert!(v1alpha3::TrafficSplit::try_from(ts).is_ok());
}

#[test]
fn a_missing_v1alpha1_weight_cannot_become_an_integer_weight() {
    let yaml = "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {name: x}\nspec: {service: a, backends: [{service: b}]}\n";
    let ts = canonical(read(Kind::TrafficSplit, "v1alpha1", yaml));
    assert_eq!(ts.backends[0].weight, None);
    let err = v1alpha4::TrafficSplit::try_from(ts).unwrap_err();
    assert_eq!(err.field, "spec.backends[0].weight");
}

#[test]
fn root_service_accepts_names_and_same_namespace_fqdns() {
    for ok in [
        "web",
        "web.shop",
        "web.shop.svc",
        "web.shop.svc.cluster.local",
        "web.shop.svc.corp.example.",
    ] {
        assert_eq!(root_service_name(ok, "shop"), Ok("web"), "{ok}");
    }
    let err = root_service_name("web.other.svc.cluster.local", "shop").unwrap_err();
    assert!(err.contains("names namespace \"other\""), "{err}");
    assert!(root_service_name("web.shop.example.com", "shop").is_err());
}

/// Checks `a` and `b` give every backend the same share: a_i · b_j == a_j · b_i.
fn same_ratio(a: &TrafficSplit, b: &TrafficSplit) -> bool {
    // Each side as exact integers first, so the cross products stay well inside i128.
    let ws = |ts: &TrafficSplit| -> Vec<i128> {
        let ds: Vec<_> = ts.backends.iter().map(|x| x.weight.unwrap().0).collect();
        crate::weight::integer_weights(&ds)
            .unwrap()
            .into_iter()
            .map(i128::from)
            .collect()
    };
    let (wa, wb) = (ws(a), ws(b));
    wa.len() == wb.len()
        && (0..wa.len()).all(|i| (0..wa.len()).all(|j| wa[i] * wb[j] == wa[j] * wb[i]))
}

proptest! {
    #[test]
    fn every_version_round_trips_through_canonical(ts in split_with(whole().boxed(), false)) {
        for version in Kind::TrafficSplit.versions() {
            let v = SmiObject::TrafficSplit(ts.clone()).to_version(version).unwrap();
            let back = canonical(yaml_round_trip(&v));
            prop_assert_eq!(&back, &ts, "through {}", version);
        }
    }

    #[test]
    fn matches_round_trip_through_v1alpha3_and_v1alpha4(ts in split_with(whole().boxed(), true)) {
        for version in ["v1alpha3", "v1alpha4"] {
            let v = SmiObject::TrafficSplit(ts.clone()).to_version(version).unwrap();
            prop_assert_eq!(canonical(yaml_round_trip(&v)), ts.clone());
        }
    }

    #[test]
    fn v1alpha1_quantities_round_trip_exactly(ts in split_with(decimal().boxed(), false)) {
        let v = SmiObject::TrafficSplit(ts.clone()).to_version("v1alpha1").unwrap();
        prop_assert_eq!(canonical(yaml_round_trip(&v)), ts);
    }

    #[test]
    fn quantities_keep_their_ratio_in_every_integer_version(ts in split_with(decimal().boxed(), false)) {
        for version in ["v1alpha2", "v1alpha3", "v1alpha4"] {
            let v = SmiObject::TrafficSplit(ts.clone()).to_version(version).unwrap();
            let back = canonical(yaml_round_trip(&v));
            prop_assert!(same_ratio(&ts, &back), "{} changed the ratio: {:?} → {:?}", version, weights(&ts), weights(&back));
            // And once whole, they stay exactly as they are when read back as v1alpha1.
            let v1 = SmiObject::TrafficSplit(back.clone()).to_version("v1alpha1").unwrap();
            prop_assert_eq!(canonical(yaml_round_trip(&v1)), back);
        }
    }
}
