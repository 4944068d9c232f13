//! Property: the incremental index, after any sequence of applies and deletes, equals an index
//! built from scratch from the surviving objects, in a different order.

use proptest::prelude::*;
use switchyard_crds::validate::{self, Severity};

use super::*;

/// One step of a random history, over a small universe of names so that objects collide.
#[derive(Clone, Debug)]
enum Op {
    Apply(Object),
    Delete(ObjectKind, String),
}

const SERVICES: [&str; 4] = ["web", "web-v1", "web-v2", "api"];
const PODS: [&str; 4] = ["p0", "p1", "p2", "client-0"];
const ACCOUNTS: [&str; 3] = ["web", "api", "client"];
const APPS: [&str; 4] = ["web", "web-v1", "api", "client"];
const GROUPS: [&str; 2] = ["g0", "g1"];

fn any_service() -> impl Strategy<Value = Object> {
    (
        prop::sample::select(&SERVICES[..]),
        prop::sample::select(&APPS[..]),
        prop::sample::subsequence(vec![80u16, 81], 0..=2),
    )
        .prop_map(|(name, app, ports)| service_of(name, app, &ports))
}

fn any_slice() -> impl Strategy<Value = Object> {
    (
        prop::sample::select(&SERVICES[..]),
        0..2usize,
        prop::sample::subsequence(vec![80u16, 81], 0..=2),
        prop::collection::vec((prop::sample::select(&PODS[..]), any::<bool>()), 0..3),
    )
        .prop_map(|(svc, n, ports, endpoints)| {
            let endpoints: Vec<_> = endpoints
                .iter()
                .enumerate()
                .map(|(i, (pod, ready))| json!({"addresses": [format!("10.0.{n}.{i}")], "conditions": {"ready": ready}, "targetRef": {"kind": "Pod", "name": pod}}))
                .collect();
            // Slice names do not follow their service, so a slice can move between services.
            slice_named(&format!("slice-{n}"), svc, &ports, endpoints)
        })
}

fn any_pod() -> impl Strategy<Value = Object> {
    (
        prop::sample::select(&PODS[..]),
        prop::sample::select(&ACCOUNTS[..]),
        prop::sample::select(&APPS[..]),
        prop::sample::select(vec![None, Some("envoy"), Some("bundled"), Some("nope")]),
    )
        .prop_map(|(name, sa, app, data_plane)| annotated_pod(name, sa, app, data_plane))
}

fn any_split() -> impl Strategy<Value = Object> {
    (
        0..3usize,
        prop::sample::select(vec!["web", "api"]),
        prop::collection::vec(
            (
                prop::sample::select(&SERVICES[..]),
                prop::sample::select(vec!["0", "1", "50", "-1"]),
            ),
            1..3,
        ),
        prop::option::of(prop::sample::select(&GROUPS[..])),
        any::<bool>(),
    )
        .prop_map(|(n, root, backends, group, older)| {
            let created = if older {
                "2024-01-01T00:00:00Z"
            } else {
                "2024-02-01T00:00:00Z"
            };
            split_of(&format!("s{n}"), created, root, group, &backends)
        })
}

fn any_group() -> impl Strategy<Value = Object> {
    (
        prop::sample::select(&GROUPS[..]),
        prop::sample::subsequence(vec!["api", "admin"], 0..=2),
    )
        .prop_map(|(name, matches)| {
            let m: Vec<String> = matches
                .iter()
                .map(|m| format!("  - {{name: {m}, pathRegex: '/{m}/.*'}}\n"))
                .collect();
            smi(&format!(
                "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  matches:{}",
                if m.is_empty() { " []\n".to_string() } else { format!("\n{}", m.concat()) }
            ))
        })
}

fn any_target() -> impl Strategy<Value = Object> {
    (
        0..2usize,
        prop::sample::select(&ACCOUNTS[..]),
        prop::sample::select(&ACCOUNTS[..]),
        prop::sample::select(vec![
            "[{kind: HTTPRouteGroup, name: g0}]",
            "[{kind: HTTPRouteGroup, name: g1, matches: [api]}]",
            "[{kind: TCPRoute, name: tcp}]",
            "[]",
        ]),
    )
        .prop_map(|(n, dest, source, rules)| {
            smi(&format!(
                "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {{name: t{n}, namespace: {NS}}}\nspec:\n  destination: {{kind: ServiceAccount, name: {dest}, namespace: {NS}}}\n  rules: {rules}\n  sources: [{{kind: ServiceAccount, name: {source}}}]\n"
            ))
        })
}

fn any_tcp_route() -> impl Strategy<Value = Object> {
    prop::sample::subsequence(vec![8080u16, 8081], 0..=2).prop_map(|ports| {
        smi(&format!(
            "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {{name: tcp, namespace: {NS}}}\nspec:\n  matches: {{ports: {ports:?}}}\n"
        ))
    })
}

fn any_delete() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop::sample::select(&SERVICES[..]).prop_map(|n| Op::Delete(ObjectKind::Service, n.into())),
        prop::sample::select(vec!["slice-0", "slice-1"])
            .prop_map(|n| Op::Delete(ObjectKind::EndpointSlice, n.into())),
        prop::sample::select(&PODS[..]).prop_map(|n| Op::Delete(ObjectKind::Pod, n.into())),
        prop::sample::select(vec!["s0", "s1", "s2"])
            .prop_map(|n| Op::Delete(ObjectKind::Smi(Kind::TrafficSplit), n.into())),
        prop::sample::select(&GROUPS[..])
            .prop_map(|n| Op::Delete(ObjectKind::Smi(Kind::HttpRouteGroup), n.into())),
        prop::sample::select(vec!["t0", "t1"])
            .prop_map(|n| Op::Delete(ObjectKind::Smi(Kind::TrafficTarget), n.into())),
        Just(Op::Delete(ObjectKind::Smi(Kind::TcpRoute), "tcp".into())),
    ]
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any_service().prop_map(Op::Apply),
        3 => any_slice().prop_map(Op::Apply),
        2 => any_pod().prop_map(Op::Apply),
        4 => any_split().prop_map(Op::Apply),
        2 => any_group().prop_map(Op::Apply),
        2 => any_target().prop_map(Op::Apply),
        1 => any_tcp_route().prop_map(Op::Apply),
        3 => any_delete(),
    ]
}

fn is_valid(obj: &Object) -> bool {
    match obj {
        Object::Smi(o) => !validate::validate_canonical(o)
            .iter()
            .any(|p| p.severity == Severity::Error),
        _ => true,
    }
}

/// What a from-scratch index must be given: per object, its last good version (SMI objects
/// keep serving it) and then its latest version when that one is invalid.
#[derive(Default)]
struct Survivors(BTreeMap<(ObjectKind, Key), (Option<Object>, Object)>);

impl Survivors {
    fn record(&mut self, op: &Op) {
        match op {
            Op::Apply(obj) => {
                let key = (obj.kind(), object_key(obj).unwrap());
                let entry = self.0.entry(key);
                let good = if is_valid(obj) {
                    Some(obj.clone())
                } else {
                    match &entry {
                        std::collections::btree_map::Entry::Occupied(e) => e.get().0.clone(),
                        std::collections::btree_map::Entry::Vacant(_) => None,
                    }
                };
                entry.insert_entry((good, obj.clone()));
            }
            Op::Delete(kind, name) => {
                self.0.remove(&(*kind, (NS.to_string(), name.clone())));
            }
        }
    }

    /// Every object to apply, SMI kinds first and the rest in reverse: the opposite of the
    /// order the bulk of histories use.
    fn objects(&self) -> Vec<Object> {
        let mut out = Vec::new();
        for (good, last) in self.0.values().rev() {
            if let Some(good) = good {
                out.push(good.clone());
            }
            if !is_valid(last) || good.is_none() {
                out.push(last.clone());
            }
        }
        out
    }
}

fn assert_same(incremental: &Index, scratch: &Index) {
    assert_eq!(incremental.statuses(), scratch.statuses(), "statuses");
    // Each proxy's whole configuration: identity, data plane (and an invalid choice),
    // address, capture, inbound ports, and the shared outbound model.
    assert_eq!(
        incremental.proxy_configs().collect::<Vec<_>>(),
        scratch.proxy_configs().collect::<Vec<_>>(),
        "proxies"
    );
    assert_eq!(incremental.outbound, scratch.outbound, "outbound");
    assert_eq!(incremental.clusters, scratch.clusters, "clusters");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn incremental_equals_from_scratch(
        ops in prop::collection::vec(any_op(), 1..40),
        strict in any::<bool>(),
        batched in any::<bool>(),
    ) {
        let settings = MeshSettings {
            access_mode: if strict { AccessMode::Strict } else { AccessMode::Permissive },
            data_plane: if strict { DataPlane::Envoy } else { DataPlane::Bundled },
            ..MeshSettings::default()
        };
        let mut incremental = Index::new(settings.clone());
        let mut survivors = Survivors::default();
        // Batched: runs of applies go in as one `apply_all`, as an initial list does.
        let mut batch = Vec::new();
        for op in &ops {
            survivors.record(op);
            match op.clone() {
                Op::Apply(obj) if batched => batch.push(obj),
                Op::Apply(obj) => incremental.apply(obj),
                Op::Delete(kind, name) => {
                    incremental.apply_all(std::mem::take(&mut batch));
                    incremental.delete(kind, NS, &name);
                }
            }
        }
        incremental.apply_all(batch);
        let mut scratch = Index::new(settings);
        scratch.apply_all(survivors.objects());
        assert_same(&incremental, &scratch);

        // And one object at a time, in that other order.
        let mut one_by_one = Index::new(scratch.settings().clone());
        for obj in survivors.objects() {
            one_by_one.apply(obj);
        }
        assert_same(&one_by_one, &scratch);
    }
}
