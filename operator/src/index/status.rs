//! Status conditions the index computes for SMI objects: `Accepted`, `ResolvedRefs`,
//! `Conflicted`, each with a CamelCase reason and a message naming the field at fault.

use switchyard_crds::{
    status::conditions,
    validate::{Problem, Severity},
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
