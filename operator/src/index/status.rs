//! Status conditions the index computes for SMI objects: `Accepted`, `ResolvedRefs`,
//! `Conflicted`, each with a CamelCase reason and a message naming the field at fault; those of
//! splits and targets are functions over the store.

use switchyard_adapters::model::{ClusterName, ServiceName};
use switchyard_crds::{
    access::TrafficTarget,
    status::conditions,
    validate::{Problem, Severity},
};

use super::{
    Clusters, Key,
    store::{Store, Stored, ns_of, root_of},
};

/// Condition reasons.
pub mod reasons {
    pub const VALID: &str = "Valid";
    pub const INVALID: &str = "Invalid";
    pub const ACCEPTED_WITH_WARNINGS: &str = "AcceptedWithWarnings";
    pub const RESOLVED: &str = "Resolved";
    pub const ROOT_NOT_FOUND: &str = "RootServiceNotFound";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const BACKEND_PORT_MISSING: &str = "BackendPortMissing";
    pub const BACKEND_NOT_READY: &str = "BackendNotReady";
    pub const ROUTE_GROUP_NOT_FOUND: &str = "RouteGroupNotFound";
    pub const ROUTE_NOT_FOUND: &str = "RouteNotFound";
    pub const MATCH_NOT_FOUND: &str = "MatchNotFound";
    pub const OLDER_SPLIT_WINS: &str = "OlderSplitWins";
    pub const NO_CONFLICT: &str = "NoConflict";
}

/// One condition, without timestamps: the status writer adds `lastTransitionTime` when the
/// status (`True`/`False`) of a type changes, so the index stays deterministic and time-free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionState {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
    pub observed_generation: Option<i64>,
}

/// The conditions of one SMI object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectStatus {
    pub conditions: Vec<ConditionState>,
}

// === impl ObjectStatus ===

impl ObjectStatus {
    /// `Accepted` from validation: `False` with every error when the newest version is invalid
    /// (the last good version stays served), `True` otherwise, listing warnings if any.
    pub fn accepted(generation: Option<i64>, problems: &[Problem]) -> Self {
        let errors: Vec<String> = problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| format!("{}: {}", p.field, p.reason))
            .collect();
        let warnings: Vec<String> = problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
            .map(|p| format!("{}: {}", p.field, p.reason))
            .collect();
        let cond = if !errors.is_empty() {
            ConditionState {
                type_: conditions::ACCEPTED,
                status: false,
                reason: reasons::INVALID,
                message: format!(
                    "{}; the last valid version stays in force",
                    errors.join("; ")
                ),
                observed_generation: generation,
            }
        } else if !warnings.is_empty() {
            ConditionState {
                type_: conditions::ACCEPTED,
                status: true,
                reason: reasons::ACCEPTED_WITH_WARNINGS,
                message: warnings.join("; "),
                observed_generation: generation,
            }
        } else {
            ConditionState {
                type_: conditions::ACCEPTED,
                status: true,
                reason: reasons::VALID,
                message: "valid".into(),
                observed_generation: generation,
            }
        };
        ObjectStatus {
            conditions: vec![cond],
        }
    }

    /// `ResolvedRefs`: `False` with the first reason and every message when anything is missing.
    pub fn set_resolved(
        &mut self,
        generation: Option<i64>,
        unresolved: Vec<(&'static str, String)>,
    ) {
        let cond = match unresolved.first() {
            None => ConditionState {
                type_: conditions::RESOLVED_REFS,
                status: true,
                reason: reasons::RESOLVED,
                message: "all references resolved".into(),
                observed_generation: generation,
            },
            Some((reason, _)) => ConditionState {
                type_: conditions::RESOLVED_REFS,
                status: false,
                reason,
                message: unresolved
                    .iter()
                    .map(|(_, m)| m.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                observed_generation: generation,
            },
        };
        self.set(cond);
    }

    pub fn set_conflicted(&mut self, generation: Option<i64>, message: String) {
        self.set(ConditionState {
            type_: conditions::CONFLICTED,
            status: true,
            reason: reasons::OLDER_SPLIT_WINS,
            message,
            observed_generation: generation,
        });
    }

    pub fn set_not_conflicted(&mut self, generation: Option<i64>) {
        self.set(ConditionState {
            type_: conditions::CONFLICTED,
            status: false,
            reason: reasons::NO_CONFLICT,
            message: "no other split for this root service".into(),
            observed_generation: generation,
        });
    }

    pub fn get(&self, type_: &str) -> Option<&ConditionState> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    fn set(&mut self, cond: ConditionState) {
        self.conditions.retain(|c| c.type_ != cond.type_);
        self.conditions.push(cond);
    }
}

// === resolution ===

/// The conditions of a stored TrafficSplit: its references, and whether an older split for the
/// same root wins.
pub(super) fn split(store: &Store, clusters: &Clusters, key: &Key) -> ObjectStatus {
    let Some(stored) = store.splits.get(key) else {
        return ObjectStatus::default();
    };
    let mut st = ObjectStatus::accepted(stored.generation, &stored.problems);
    let Some(ts) = stored.good.as_ref() else {
        return st;
    };
    let ns = &key.0;
    let Some(root) = root_of(ns, ts) else {
        return st;
    };

    let mut unresolved = Vec::new();
    let root_info = store.services.get(&root);
    if root_info.is_none() {
        unresolved.push((
            reasons::ROOT_NOT_FOUND,
            format!("spec.service: Service {root} not found"),
        ));
    }
    for (i, b) in ts.backends.iter().enumerate() {
        let svc = ServiceName::new(ns.clone(), b.service.clone());
        let Some(info) = store.services.get(&svc) else {
            unresolved.push((
                reasons::BACKEND_NOT_FOUND,
                format!("spec.backends[{i}].service: Service {svc} not found; excluded"),
            ));
            continue;
        };
        if let Some(root_info) = root_info {
            let missing: Vec<String> = root_info
                .ports
                .iter()
                .filter(|rp| !info.ports.iter().any(|p| p.port == rp.port))
                .map(|rp| rp.port.to_string())
                .collect();
            if !missing.is_empty() {
                unresolved.push((
                    reasons::BACKEND_PORT_MISSING,
                    format!("spec.backends[{i}].service: Service {svc} lacks port {}; excluded for that port", missing.join(", ")),
                ));
            }
        }
        let ready = info.ports.iter().any(|p| {
            clusters
                .get(&ClusterName::new(&svc, p.port))
                .map(|c| !c.endpoints.is_empty())
                .unwrap_or(false)
        });
        if !ready && b.weight.map(|w| !w.0.is_zero()).unwrap_or(false) {
            unresolved.push((
                reasons::BACKEND_NOT_READY,
                format!("spec.backends[{i}].service: Service {svc} has no ready endpoints; excluded while empty"),
            ));
        }
    }
    let ns = ns.clone();
    for (i, m) in ts.matches.iter().enumerate() {
        match store.groups.get(&(ns.clone(), m.name.clone())) {
            Some(g) if g.good.is_some() => {}
            _ => unresolved.push((
                reasons::ROUTE_GROUP_NOT_FOUND,
                format!("spec.matches[{i}].name: HTTPRouteGroup {ns}/{} not found; this split matches nothing", m.name),
            )),
        }
    }
    st.set_resolved(stored.generation, unresolved);

    if ts.matches.is_empty() {
        let (_, winner) = store.splits_for(&root);
        match winner {
            Some(w) if !std::ptr::eq(w, ts) => st.set_conflicted(
                stored.generation,
                format!("root Service {root} already has TrafficSplit {}/{} (older); this one is ignored", ns_of(&w.metadata), w.metadata.name.clone().unwrap_or_default()),
            ),
            _ => st.set_not_conflicted(stored.generation),
        }
    }
    st
}

/// The conditions of a stored TrafficTarget: whether the routes its rules name exist.
pub(super) fn target(store: &Store, key: &Key, stored: &Stored<TrafficTarget>) -> ObjectStatus {
    let mut st = ObjectStatus::accepted(stored.generation, &stored.problems);
    let Some(tt) = stored.good.as_ref() else {
        return st;
    };
    let mut unresolved = Vec::new();
    for (i, rule) in tt.rules.iter().enumerate() {
        let k = (key.0.clone(), rule.name.clone());
        let found = match rule.kind.as_str() {
            "HTTPRouteGroup" => match store.groups.get(&k).and_then(|g| g.good.as_ref()) {
                Some(g) => {
                    for (j, m) in rule.matches.iter().enumerate() {
                        if !g.matches.iter().any(|x| &x.name == m) {
                            unresolved.push((
                                reasons::MATCH_NOT_FOUND,
                                format!("spec.rules[{i}].matches[{j}]: HTTPRouteGroup {}/{} has no match {m:?}; it allows nothing", key.0, rule.name),
                            ));
                        }
                    }
                    true
                }
                None => false,
            },
            "TCPRoute" => store
                .tcp_routes
                .get(&k)
                .and_then(|r| r.good.as_ref())
                .is_some(),
            "UDPRoute" => store
                .udp_routes
                .get(&k)
                .and_then(|r| r.good.as_ref())
                .is_some(),
            _ => true,
        };
        if !found {
            unresolved.push((
                reasons::ROUTE_NOT_FOUND,
                format!(
                    "spec.rules[{i}]: {} {}/{} not found; this rule allows nothing",
                    rule.kind, key.0, rule.name
                ),
            ));
        }
    }
    st.set_resolved(stored.generation, unresolved);
    st
}
