//! Watches: which version of each SMI kind the cluster serves, and one kube-runtime watcher per
//! kind sending raw objects to the event loop.

use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::{
    api::{
        core::v1::{Pod, Service, ServiceAccount},
        discovery::v1::EndpointSlice,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::Value;
use switchyard_crds::Kind;
use tokio::sync::mpsc;

use super::core::WatchEvent;
use crate::index::ObjectKind;

/// What a watch tells the event loop.
#[derive(Debug)]
pub enum WatchMsg {
    Event(WatchEvent),
    /// The kind's first complete list was sent (or its CRD is not installed).
    Synced(ObjectKind),
    /// A later complete list: the watch restarted (after an expired resourceVersion, say).
    Restarted(ObjectKind),
}

/// The API resource watched for one kind.
#[derive(Clone, Debug)]
pub struct Watched {
    pub kind: ObjectKind,
    pub resource: ApiResource,
}

/// How often a missing CRD is looked for again.
const CRD_POLL: Duration = Duration::from_secs(10);

/// The core kinds, at the versions the index reads.
pub fn core_resources() -> Vec<Watched> {
    vec![
        Watched {
            kind: ObjectKind::Service,
            resource: ApiResource::erase::<Service>(&()),
        },
        Watched {
            kind: ObjectKind::EndpointSlice,
            resource: ApiResource::erase::<EndpointSlice>(&()),
        },
        Watched {
            kind: ObjectKind::Pod,
            resource: ApiResource::erase::<Pod>(&()),
        },
        Watched {
            kind: ObjectKind::ServiceAccount,
            resource: ApiResource::erase::<ServiceAccount>(&()),
        },
    ]
}

/// The version to watch of an SMI kind, from its CRD's served versions: the storage version when
/// it is served and known here, else the newest served version known here. `None` when the CRD
/// serves no version this build reads.
pub fn choose_version(kind: Kind, crd: &CustomResourceDefinition) -> Option<String> {
    let known = kind.versions();
    let served: Vec<&k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion> = crd
        .spec
        .versions
        .iter()
        .filter(|v| v.served && known.contains(&v.name.as_str()))
        .collect();
    if let Some(storage) = served.iter().find(|v| v.storage) {
        return Some(storage.name.clone());
    }
    known
        .iter()
        .rev()
        .find(|k| served.iter().any(|v| v.name == **k))
        .map(|k| (*k).to_string())
}

/// The resource of an SMI kind at `version`.
pub fn smi_resource(kind: Kind, version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(kind.group(), version, kind.as_str()),
        kind.plural(),
    )
}

/// Finds the version to watch of `kind`, waiting (and saying so) while its CRD is missing.
pub async fn discover(client: &Client, kind: Kind, tx: &mpsc::Sender<WatchMsg>) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = format!("{}.{}", kind.plural(), kind.group());
    let mut said = false;
    loop {
        match crds.get_opt(&name).await {
            Ok(Some(crd)) => match choose_version(kind, &crd) {
                Some(v) => return smi_resource(kind, &v),
                None => {
                    tracing::warn!(crd = %name, "the CRD serves no version this switchyard reads")
                }
            },
            Ok(None) => {
                tracing::warn!(crd = %name, "CRD not installed; {kind} objects are ignored until it is")
            }
            Err(e) => tracing::warn!(crd = %name, error = %e, "cannot read the CRD"),
        }
        if !said {
            // Nothing to wait for: readiness must not hang on an optional kind.
            said = true;
            let _ = tx
                .send(WatchMsg::Event(WatchEvent::Listed(
                    ObjectKind::Smi(kind),
                    Vec::new(),
                )))
                .await;
            let _ = tx.send(WatchMsg::Synced(ObjectKind::Smi(kind))).await;
        }
        tokio::time::sleep(CRD_POLL).await;
    }
}

/// Watches one resource forever, with kube-runtime's backoff on errors. Objects go out as raw
/// JSON with `apiVersion` and `kind` set (list items of built-in kinds come without them).
pub async fn run(
    client: Client,
    watched: Watched,
    tx: mpsc::Sender<WatchMsg>,
    already_synced: bool,
) {
    let Watched { kind, resource } = watched;
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer: Vec<Value> = Vec::new();
    let mut synced = already_synced;
    while let Some(item) = stream.next().await {
        let msg = match item {
            Ok(watcher::Event::Init) => {
                buffer.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(obj)) => {
                buffer.push(raw(obj, &resource));
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let list = std::mem::take(&mut buffer);
                if tx
                    .send(WatchMsg::Event(WatchEvent::Listed(kind, list)))
                    .await
                    .is_err()
                {
                    return;
                }
                if synced {
                    WatchMsg::Restarted(kind)
                } else {
                    synced = true;
                    WatchMsg::Synced(kind)
                }
            }
            Ok(watcher::Event::Apply(obj)) => {
                WatchMsg::Event(WatchEvent::Applied(kind, raw(obj, &resource)))
            }
            Ok(watcher::Event::Delete(obj)) => {
                WatchMsg::Event(WatchEvent::Deleted(kind, raw(obj, &resource)))
            }
            Err(e) => {
                // The watcher retries with backoff; the stream goes on.
                tracing::warn!(%kind, error = %e, "watch error");
                continue;
            }
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

fn raw(obj: DynamicObject, resource: &ApiResource) -> Value {
    let mut value = serde_json::to_value(&obj).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| Value::String(resource.api_version.clone()));
        map.entry("kind")
            .or_insert_with(|| Value::String(resource.kind.clone()));
    }
    value
}
