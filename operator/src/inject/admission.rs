//! The injection webhook's answer to one `AdmissionReview` (`admission.k8s.io/v1`), without IO:
//! the caller reads the Namespace's annotations when [`namespace_to_read`] asks for them, and
//! publishes the [`Note`] the answer carries.
//!
//! A Pod created by a controller has no name yet (only `generateName`) and its `metadata` has
//! no namespace: the namespace comes from the request. Events go to the Pod's controlling owner
//! (its ReplicaSet, Job, …), where `kubectl describe` shows them, or to the Pod when it has a name.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::core::{
    DynamicObject, Status,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};

use super::{Decision, InjectConfig, PodTemplate, Target, decide};

#[cfg(test)]
mod tests;

/// The path the `MutatingWebhookConfiguration` names.
pub const INJECT_PATH: &str = "/inject";
/// Event reasons, as `kubectl get events` shows them.
pub const INJECTED: &str = "Injected";
pub const INJECTION_SKIPPED: &str = "InjectionSkipped";
pub const INJECTION_REJECTED: &str = "InjectionRejected";

/// An Event to publish about an admitted (or refused) Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// The Pod's controlling owner, or the Pod itself.
    pub regarding: ObjectReference,
    pub warning: bool,
    /// [`INJECTED`], [`INJECTION_SKIPPED`] or [`INJECTION_REJECTED`].
    pub reason: &'static str,
    pub note: String,
}

/// The answer to one review.
#[derive(Clone, Debug)]
pub struct Answer {
    pub review: AdmissionReview<DynamicObject>,
    /// What to report, if anything; never for a dry run.
    pub note: Option<Note>,
}

/// Reads a review. A body that is not an `AdmissionReview` with a request gets the answer to
/// send back instead (refused, with the reason).
pub fn parse(body: &[u8]) -> Result<AdmissionRequest<Pod>, Box<AdmissionReview<DynamicObject>>> {
    let invalid = |reason: String| Box::new(AdmissionResponse::invalid(reason).into_review());
    let review: AdmissionReview<Pod> =
        serde_json::from_slice(body).map_err(|e| invalid(format!("admission review: {e}")))?;
    review
        .try_into()
        .map_err(|_| invalid("admission review: request: missing".to_owned()))
}

/// The namespace whose annotations [`answer`] needs: `None` for a request it answers without
/// them (not a Pod being created, or a namespace never injected, which must not wait on the API
/// server: the operator's own Pods are created there).
pub fn namespace_to_read<'a>(
    request: &'a AdmissionRequest<Pod>,
    config: &InjectConfig,
) -> Option<&'a str> {
    if !is_pod_create(request) {
        return None;
    }
    let namespace = namespace_of(request)?;
    config.exempt(namespace).is_none().then_some(namespace)
}

/// Answers a review: the JSON patch that injects the Pod, an empty admission for a Pod left
/// alone, or a refusal naming the annotation that is wrong. `namespace_annotations` are those of
/// [`namespace_to_read`] (empty when it named none).
pub fn answer(
    request: &AdmissionRequest<Pod>,
    namespace_annotations: &BTreeMap<String, String>,
    config: &InjectConfig,
) -> Answer {
    let allow = AdmissionResponse::from(request);
    let (Some(pod), true) = (&request.object, is_pod_create(request)) else {
        // The webhook's rules send only Pod creations; anything else passes unchanged.
        return done(allow, None);
    };
    let Some(spec) = &pod.spec else {
        return done(allow, None);
    };
    let name = pod_name(pod);
    let target = Target {
        kind: "pod",
        namespace: namespace_of(request),
        name: &name,
        metadata_path: "metadata",
    };
    let template = PodTemplate {
        metadata: Some(&pod.metadata),
        spec,
    };
    let regarding = regarding(pod, target.namespace);
    let note = |warning, reason, note: String| {
        let regarding = regarding.clone()?;
        (!request.dry_run).then_some(Note {
            regarding,
            warning,
            reason,
            note,
        })
    };
    match decide(&target, template, namespace_annotations, config) {
        Ok(Decision::Inject(injection)) => {
            let patch = injection.json_patch(template, &PointerBuf::new());
            let text = format!(
                "{target}: injected the {} proxy ({})",
                injection.data_plane,
                injection.proxy_image()
            );
            tracing::debug!(uid = %request.uid, "{text}");
            match allow.with_patch(patch) {
                Ok(response) => done(response, note(false, INJECTED, text)),
                // Serialising a patch of plain JSON values does not fail; should it, the Pod
                // is refused rather than admitted without its proxy.
                Err(e) => done(
                    AdmissionResponse::from(request).deny(format!("{target}: {e}")),
                    None,
                ),
            }
        }
        Ok(Decision::Skip(reason)) => {
            let reported = reason.is_reported();
            let text = format!("{target}: not injected: {reason}");
            tracing::debug!(uid = %request.uid, "{text}");
            done(
                allow,
                note(false, INJECTION_SKIPPED, text).filter(|_| reported),
            )
        }
        Err(e) => {
            let text = e.to_string();
            tracing::info!(uid = %request.uid, "refused: {text}");
            let mut refused = AdmissionResponse::from(request).deny(&text);
            refused.result = Status::failure(&text, "BadRequest").with_code(400);
            done(refused, note(true, INJECTION_REJECTED, text))
        }
    }
}

fn done(response: AdmissionResponse, note: Option<Note>) -> Answer {
    Answer {
        review: response.into_review(),
        note,
    }
}

fn is_pod_create(request: &AdmissionRequest<Pod>) -> bool {
    request.operation == Operation::Create
        && request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request
            .sub_resource
            .as_deref()
            .unwrap_or_default()
            .is_empty()
}

/// The request's namespace: a Pod's own `metadata.namespace` is empty at admission.
fn namespace_of(request: &AdmissionRequest<Pod>) -> Option<&str> {
    request
        .namespace
        .as_deref()
        .or_else(|| request.object.as_ref()?.metadata.namespace.as_deref())
        .filter(|ns| !ns.is_empty())
}

/// The Pod's name, or its `generateName` prefix followed by `*` before the API server picks one.
fn pod_name(pod: &Pod) -> String {
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(name), _) if !name.is_empty() => name.clone(),
        (_, Some(prefix)) => format!("{prefix}*"),
        _ => String::new(),
    }
}

/// What an Event about this Pod is about: its controlling owner, else the Pod when named.
fn regarding(pod: &Pod, namespace: Option<&str>) -> Option<ObjectReference> {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match owner {
        Some(o) => Some(ObjectReference {
            api_version: Some(o.api_version.clone()),
            kind: Some(o.kind.clone()),
            name: Some(o.name.clone()),
            namespace: namespace.map(str::to_owned),
            uid: Some(o.uid.clone()),
            ..ObjectReference::default()
        }),
        None => Some(ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(pod.metadata.name.clone().filter(|n| !n.is_empty())?),
            namespace: namespace.map(str::to_owned),
            ..ObjectReference::default()
        }),
    }
}
