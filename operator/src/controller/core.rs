//! The controller's synchronous core: watch events in, index and snapshots updated, and the
//! status writes and Events the cluster should see out. No IO; the async edge drives it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;
use switchyard_adapters::model::ProxyId;
use switchyard_crds::{
    Kind, ObjectRef,
    object::VersionedObject,
    status::{Condition, ConditionStatus, SmiStatus, conditions},
};

use crate::{
    annotations, identity,
    index::{ConditionState, Index, Object, ObjectKind, ObjectStatus, Owner},
    publish::{Published, Publisher},
};

#[cfg(test)]
mod tests;

/// The kinds the controller watches besides the SMI kinds.
pub const CORE_KINDS: [ObjectKind; 4] = [
    ObjectKind::Service,
    ObjectKind::EndpointSlice,
    ObjectKind::Pod,
    ObjectKind::ServiceAccount,
];

/// One thing a watch saw, as raw JSON (decoding happens here, object by object, so that one
/// bad object never stops a watch).
#[derive(Clone, Debug)]
pub enum WatchEvent {
    /// Added or modified.
    Applied(ObjectKind, Value),
    Deleted(ObjectKind, Value),
    /// A complete list after a (re)start of the watch: replaces every object of the kind.
    Listed(ObjectKind, Vec<Value>),
}

/// A status the cluster should get, with the Events its changed conditions deserve.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusWrite {
    pub object: ObjectRef,
    pub status: SmiStatus,
    pub events: Vec<EventNote>,
}

/// An Event about an SMI object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub warning: bool,
    /// CamelCase, the condition's reason.
    pub reason: String,
    /// `<Type>=<True|False>: <message>`, at most 1 KiB.
    pub note: String,
}

/// An object that did not decode; reported, and its last good version (if any) stays served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeFailure {
    pub kind: ObjectKind,
    /// `namespace/name`, or `<unnamed>` when even the metadata is unreadable.
    pub object: String,
    pub message: String,
}

/// What applying a batch of watch events did.
#[derive(Debug, Default)]
pub struct Applied {
    pub decode_failures: Vec<DecodeFailure>,
}

/// The controller's state: the same index and publisher as local mode, plus what the cluster
/// last showed of each SMI object's status.
pub struct Core {
    index: Index,
    publisher: Publisher,
    /// The status each SMI object carries in the cluster, from the watch.
    observed: BTreeMap<ObjectRef, SmiStatus>,
    /// `metadata.generation` of each SMI object, from the watch.
    generations: BTreeMap<ObjectRef, Option<i64>>,
    /// Statuses written and not yet seen back through the watch; not written again meanwhile.
    written: BTreeMap<ObjectRef, SmiStatus>,
    /// SMI objects whose newest version does not decode, with the reason.
    undecodable: BTreeMap<ObjectRef, String>,
    /// Pods and their ServiceAccount, for the xDS authenticator.
    pod_accounts: BTreeMap<ProxyId, String>,
    /// Bumped whenever `pod_accounts` changes, so the edge copies it only then.
    pod_accounts_version: u64,
}

// === impl Core ===

impl Core {
    pub fn new(index: Index, publisher: Publisher) -> Self {
        Core {
            index,
            publisher,
            observed: BTreeMap::new(),
            generations: BTreeMap::new(),
            written: BTreeMap::new(),
            undecodable: BTreeMap::new(),
            pod_accounts: BTreeMap::new(),
            pod_accounts_version: 0,
        }
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Pods and their ServiceAccount name.
    pub fn pod_accounts(&self) -> &BTreeMap<ProxyId, String> {
        &self.pod_accounts
    }

    /// Changes whenever [`Core::pod_accounts`] does.
    pub fn pod_accounts_version(&self) -> u64 {
        self.pod_accounts_version
    }

    /// Applies watch events to the index. Undecodable objects are returned, never applied: the
    /// last good version of each stays in the index.
    pub fn apply(&mut self, events: Vec<WatchEvent>) -> Applied {
        let mut out = Applied::default();
        for event in events {
            match event {
                // A Pod without a proxy is not in the mesh: the index never sees it, and a Pod
                // whose proxy goes away leaves it.
                // It still counts in its workload's MESHED column, as not meshed.
                WatchEvent::Applied(ObjectKind::Pod, value) if !annotations::is_meshed(&value) => {
                    self.forget_pod(&value);
                    let (ns, name) = meta_key(&value);
                    self.index
                        .set_unmeshed_pod(&ns, &name, Some(owner_of(&value)));
                }
                WatchEvent::Applied(kind, value) => {
                    if kind == ObjectKind::Pod {
                        let (ns, name) = meta_key(&value);
                        self.index.set_unmeshed_pod(&ns, &name, None);
                    }
                    if let Some(obj) = self.decode(kind, &value, &mut out.decode_failures) {
                        self.index.apply(obj);
                    }
                }
                WatchEvent::Deleted(ObjectKind::Pod, value) => {
                    self.forget_pod(&value);
                    let (ns, name) = meta_key(&value);
                    self.index.set_unmeshed_pod(&ns, &name, None);
                }
                WatchEvent::Deleted(kind, value) => {
                    let (ns, name) = meta_key(&value);
                    if let ObjectKind::Smi(k) = kind {
                        let r = object_ref(k, &ns, &name);
                        self.observed.remove(&r);
                        self.generations.remove(&r);
                        self.written.remove(&r);
                        self.undecodable.remove(&r);
                    }
                    self.index.delete(kind, &ns, &name);
                }
                WatchEvent::Listed(kind, values) => {
                    if let ObjectKind::Smi(k) = kind {
                        self.observed.retain(|r, _| r.kind != k);
                        self.generations.retain(|r, _| r.kind != k);
                        self.undecodable.retain(|r, _| r.kind != k);
                    }
                    if kind == ObjectKind::Pod {
                        self.pod_accounts.clear();
                        self.pod_accounts_version += 1;
                        self.index.reset_unmeshed_pods(
                            values
                                .iter()
                                .filter(|v| !annotations::is_meshed(v))
                                .map(|v| (meta_key(v), owner_of(v))),
                        );
                    }
                    let mut objects = Vec::with_capacity(values.len());
                    let mut kept = Vec::new();
                    let meshed = |v: &&Value| kind != ObjectKind::Pod || annotations::is_meshed(v);
                    for value in values.iter().filter(meshed) {
                        match self.decode(kind, value, &mut out.decode_failures) {
                            Some(obj) => objects.push(obj),
                            // A relist must not drop an object whose newest version is broken.
                            None => kept.push(meta_key(value)),
                        }
                    }
                    self.reset_keeping(kind, objects, &kept);
                }
            }
        }
        out
    }

    /// Publishes snapshots for what changed since the last call (see [`Publisher::publish`]).
    pub fn publish(&mut self, now: SystemTime) -> Result<Published, identity::Error> {
        self.publisher.publish(&mut self.index, now)
    }

    /// The status writes that would bring the cluster in line with the index, each with Events
    /// for the conditions whose status or reason changed. Writes returned here are remembered
    /// as pending until the watch shows them (or [`Core::write_failed`] is called).
    pub fn status_writes(&mut self, now: SystemTime) -> Vec<StatusWrite> {
        let now = Time(k8s_openapi::jiff::Timestamp::try_from(now).unwrap_or_default());
        let mut desired: BTreeMap<ObjectRef, ObjectStatus> = self
            .index
            .statuses()
            .iter()
            .filter(|(r, _)| self.generations.contains_key(*r))
            .map(|(r, s)| (r.clone(), s.clone()))
            .collect();
        for (r, message) in &self.undecodable {
            let generation = self.generations.get(r).copied().flatten();
            desired.insert(r.clone(), undecodable_status(generation, message));
        }
        let mut out = Vec::new();
        for (object, wanted) in desired {
            let observed = self.observed.get(&object);
            let status = to_smi_status(&wanted, observed, &now);
            if observed.is_some_and(|o| same_status(o, &status)) {
                self.written.remove(&object);
                continue;
            }
            if self
                .written
                .get(&object)
                .is_some_and(|w| same_status(w, &status))
            {
                continue;
            }
            let events = changed_conditions(observed, &status);
            self.written.insert(object.clone(), status.clone());
            out.push(StatusWrite {
                object,
                status,
                events,
            });
        }
        out
    }

    /// A write failed: the next [`Core::status_writes`] returns it again.
    pub fn write_failed(&mut self, object: &ObjectRef) {
        self.written.remove(object);
    }

    /// Forgets pending writes, so a new leader writes everything that differs.
    pub fn forget_writes(&mut self) {
        self.written.clear();
    }

    /// Removes a Pod from the index and from the authenticator's table.
    fn forget_pod(&mut self, value: &Value) {
        let (ns, name) = meta_key(value);
        if self.pod_accounts.remove(&proxy_id(&ns, &name)).is_some() {
            self.pod_accounts_version += 1;
        }
        self.index.delete(ObjectKind::Pod, &ns, &name);
    }

    fn reset_keeping(&mut self, kind: ObjectKind, objects: Vec<Object>, kept: &[(String, String)]) {
        if kept.is_empty() {
            self.index.reset(kind, objects);
            return;
        }
        // Objects that failed to decode keep their current version: deleting every other object
        // of the kind that is gone, then applying the listed ones, is what `reset` does minus them.
        let listed: BTreeSet<(String, String)> = objects
            .iter()
            .filter_map(crate::index::object_key)
            .chain(kept.iter().cloned())
            .collect();
        for (ns, name) in self.index.keys_of(kind) {
            if !listed.contains(&(ns.clone(), name.clone())) {
                self.index.delete(kind, &ns, &name);
            }
        }
        self.index.apply_all(objects);
    }

    fn decode(
        &mut self,
        kind: ObjectKind,
        value: &Value,
        failures: &mut Vec<DecodeFailure>,
    ) -> Option<Object> {
        let (ns, name) = meta_key(value);
        let result = match kind {
            ObjectKind::Smi(k) => {
                let r = object_ref(k, &ns, &name);
                self.generations
                    .insert(r.clone(), value["metadata"]["generation"].as_i64());
                match serde_json::from_value::<SmiStatus>(value["status"].clone()) {
                    Ok(st) => {
                        if self.written.get(&r).is_some_and(|w| !same_status(w, &st)) {
                            // Someone else's write, or an older event: write ours again.
                            self.written.remove(&r);
                        }
                        self.observed.insert(r.clone(), st);
                    }
                    Err(_) => {
                        self.observed.remove(&r);
                    }
                }
                let result = decode_smi(k, value);
                match &result {
                    Ok(_) => {
                        self.undecodable.remove(&r);
                    }
                    Err(e) => {
                        self.undecodable.insert(r, e.clone());
                    }
                }
                result
            }
            ObjectKind::Service => from_json(value).map(|o| Object::Service(Box::new(o))),
            ObjectKind::EndpointSlice => {
                from_json(value).map(|o| Object::EndpointSlice(Box::new(o)))
            }
            ObjectKind::Pod => {
                let obj = from_json::<k8s_openapi::api::core::v1::Pod>(value);
                if let Ok(pod) = &obj {
                    let sa = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone())
                        .unwrap_or_else(|| "default".into());
                    let id = proxy_id(&ns, &name);
                    if self.pod_accounts.get(&id) != Some(&sa) {
                        self.pod_accounts.insert(id, sa);
                        self.pod_accounts_version += 1;
                    }
                }
                obj.map(|o| Object::Pod(Box::new(o)))
            }
            ObjectKind::ServiceAccount => {
                from_json(value).map(|o| Object::ServiceAccount(Box::new(o)))
            }
        };
        match result {
            Ok(obj) => Some(obj),
            Err(message) => {
                failures.push(DecodeFailure {
                    kind,
                    object: if name.is_empty() {
                        "<unnamed>".into()
                    } else {
                        format!("{ns}/{name}")
                    },
                    message,
                });
                None
            }
        }
    }
}

/// Decodes an SMI object of any served version into its canonical form.
pub fn decode_smi(kind: Kind, value: &Value) -> Result<Object, String> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let version = api_version
        .strip_prefix(kind.group())
        .and_then(|v| v.strip_prefix('/'))
        .ok_or_else(|| {
            format!(
                "apiVersion: {api_version:?} is not in group {}",
                kind.group()
            )
        })?;
    VersionedObject::from_json(kind, version, value.clone())
        .map(|o| Object::Smi(Box::new(o.into_canonical())))
        .map_err(|e| e.to_string())
}

/// Decodes a core object, naming the field that failed.
fn from_json<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

fn meta_key(value: &Value) -> (String, String) {
    let meta = &value["metadata"];
    (
        meta["namespace"]
            .as_str()
            .unwrap_or(switchyard_crds::DEFAULT_NAMESPACE)
            .to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    )
}

/// The workload of a Pod as the watch delivers it (only its metadata is read); `None` when
/// its metadata does not decode, or names none.
fn owner_of(pod: &Value) -> Option<Owner> {
    let meta = serde_json::from_value(pod["metadata"].clone()).ok()?;
    Owner::of(&meta)
}

fn proxy_id(namespace: &str, pod: &str) -> ProxyId {
    ProxyId {
        namespace: namespace.into(),
        pod: pod.into(),
    }
}

fn object_ref(kind: Kind, namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// The status of an object whose newest version does not decode.
fn undecodable_status(generation: Option<i64>, message: &str) -> ObjectStatus {
    ObjectStatus {
        conditions: vec![ConditionState {
            type_: conditions::ACCEPTED,
            status: false,
            reason: crate::index::reasons::INVALID,
            message: format!("{message}; the last valid version stays in force"),
            observed_generation: generation,
        }],
    }
}

/// The wire status: `lastTransitionTime` kept from the cluster's copy while a condition's status
/// stays the same, `now` when it changes.
fn to_smi_status(wanted: &ObjectStatus, observed: Option<&SmiStatus>, now: &Time) -> SmiStatus {
    let conditions: Vec<Condition> = wanted
        .conditions
        .iter()
        .map(|c| {
            let status = if c.status {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            };
            let since = observed
                .and_then(|o| o.conditions.iter().find(|oc| oc.type_ == c.type_))
                .filter(|oc| oc.status == status)
                .map(|oc| oc.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: c.type_.to_string(),
                status,
                observed_generation: c.observed_generation,
                last_transition_time: since,
                reason: c.reason.to_string(),
                message: c.message.clone(),
            }
        })
        .collect();
    SmiStatus {
        observed_generation: conditions
            .iter()
            .filter_map(|c| c.observed_generation)
            .max(),
        conditions,
    }
}

/// Equal but for timestamps (the cluster may round them).
fn same_status(a: &SmiStatus, b: &SmiStatus) -> bool {
    a.observed_generation == b.observed_generation
        && a.conditions.len() == b.conditions.len()
        && a.conditions.iter().zip(&b.conditions).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

/// Events for conditions whose status or reason differ from the cluster's copy.
fn changed_conditions(observed: Option<&SmiStatus>, status: &SmiStatus) -> Vec<EventNote> {
    status
        .conditions
        .iter()
        .filter(|c| {
            !observed
                .and_then(|o| o.conditions.iter().find(|oc| oc.type_ == c.type_))
                .is_some_and(|oc| oc.status == c.status && oc.reason == c.reason)
        })
        .map(|c| {
            let bad = match c.type_.as_str() {
                conditions::CONFLICTED => c.status == ConditionStatus::True,
                _ => c.status == ConditionStatus::False,
            };
            let mut note = format!("{}={:?}: {}", c.type_, c.status, c.message);
            truncate(&mut note, 1024);
            EventNote {
                warning: bad,
                reason: c.reason.clone(),
                note,
            }
        })
        .collect()
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max - 3;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push_str("...");
    }
}
