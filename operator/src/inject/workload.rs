//! Injection into a workload object as written in a manifest (`switchyard inject`): where each
//! kind keeps its Pod template, and the same patch the webhook returns, applied in place.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use k8s_openapi::{api::core::v1::PodSpec, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde::de::DeserializeOwned;
use serde_json::Value;
use switchyard_adapters::model::DataPlane;

use super::{Decision, InjectConfig, InjectError, PodTemplate, SkipReason, Target, decide};

/// What happened to one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its Pod template now runs a proxy of this data plane.
    Injected(DataPlane),
    Skipped(SkipReason),
    /// Not a kind with a Pod template: left as it is.
    NotAWorkload,
}

/// Where a kind keeps its Pod template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateAt {
    /// JSON pointer of the template (`""` for a Pod: the object is its own template).
    pub pointer: &'static str,
    /// Field path of the template's metadata, for messages.
    pub metadata_path: &'static str,
}

/// The Pod template of `kind` in API group `group` (`""` for the core group), if it has one:
/// Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob.
pub fn template_at(group: &str, kind: &str) -> Option<TemplateAt> {
    const TEMPLATE: TemplateAt = TemplateAt {
        pointer: "/spec/template",
        metadata_path: "spec.template.metadata",
    };
    match (group, kind) {
        ("", "Pod") => Some(TemplateAt {
            pointer: "",
            metadata_path: "metadata",
        }),
        ("", "ReplicationController")
        | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => Some(TEMPLATE),
        ("batch", "CronJob") => Some(TemplateAt {
            pointer: "/spec/jobTemplate/spec/template",
            metadata_path: "spec.jobTemplate.spec.template.metadata",
        }),
        _ => None,
    }
}

/// Injects `object`'s Pod template in place, as the webhook would inject the Pods it makes in
/// a namespace annotated `namespace_annotations`. Leaves it untouched unless it is injected.
///
/// # Errors
///
/// The template does not read as a Pod template, or [`decide`] refuses it.
pub fn inject(
    object: &mut Value,
    namespace_annotations: &BTreeMap<String, String>,
    config: &InjectConfig,
) -> Result<Outcome, InjectError> {
    let str_at = |ptr: &str| object.pointer(ptr).and_then(Value::as_str);
    let api_version = str_at("/apiVersion").unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let kind = str_at("/kind").unwrap_or_default();
    let Some(at) = template_at(group, kind) else {
        return Ok(Outcome::NotAWorkload);
    };
    let kind = kind.to_ascii_lowercase();
    let name = str_at("/metadata/name").unwrap_or_default().to_owned();
    let namespace = str_at("/metadata/namespace").map(str::to_owned);
    let target = Target {
        kind: &kind,
        namespace: namespace.as_deref(),
        name: &name,
        metadata_path: at.metadata_path,
    };
    let spec_path = target.spec_path();
    let template = object.pointer(at.pointer).cloned().unwrap_or(Value::Null);
    let metadata: Option<ObjectMeta> = match template.get("metadata") {
        None | Some(Value::Null) => None,
        Some(m) => Some(read(&target, at.metadata_path, m)?),
    };
    let spec: PodSpec = match template.get("spec") {
        None | Some(Value::Null) => {
            return Err(InjectError {
                object: target.to_string(),
                field: spec_path,
                reason: "missing".into(),
            });
        }
        Some(s) => read(&target, &spec_path, s)?,
    };
    let pod = PodTemplate {
        metadata: metadata.as_ref(),
        spec: &spec,
    };
    match decide(&target, pod, namespace_annotations, config)? {
        Decision::Skip(reason) => Ok(Outcome::Skipped(reason)),
        Decision::Inject(injection) => {
            let pointer = PointerBuf::parse(at.pointer).unwrap_or_default();
            let patch = injection.json_patch(pod, &pointer);
            json_patch::patch(object, &patch).map_err(|e| InjectError {
                object: target.to_string(),
                field: spec_path,
                reason: format!("cannot apply the injection: {e}"),
            })?;
            Ok(Outcome::Injected(injection.data_plane))
        }
    }
}

/// Reads one part of the template, naming the field that does not read.
fn read<T: DeserializeOwned>(
    target: &Target<'_>,
    path: &str,
    value: &Value,
) -> Result<T, InjectError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        InjectError {
            object: target.to_string(),
            field: if inner == "." {
                path.to_owned()
            } else {
                format!("{path}.{inner}")
            },
            reason: e.into_inner().to_string(),
        }
    })
}
