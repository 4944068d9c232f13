//! `switchyard check`: is the install healthy? CRDs established, an operator alive (it holds
//! and renews the status writer's Lease), the conversion webhook answering. Each failure comes
//! with what to do about it.

use std::{io::Write, path::PathBuf};

use anyhow::Context as _;
use k8s_openapi::{
    api::coordination::v1::Lease,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DynamicObject, PostParams},
};
use switchyard_crds::Kind;

use super::controller::client;
use crate::controller::{LEASE_NAME, watch::smi_resource};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The operator's namespace.
    #[arg(long, default_value = "switchyard-system")]
    pub namespace: String,
    /// A kubeconfig file [default: in-cluster config, else $KUBECONFIG or ~/.kube/config].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub what: String,
    pub detail: String,
    /// What to do, for a failure.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Finding {
            ok: true,
            what: what.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    fn failed(what: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            ok: false,
            what: what.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check, prints one line per finding; `Ok(false)` when any failed.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let findings = runtime.block_on(async {
        let client = client(args.kubeconfig.as_deref()).await?;
        anyhow::Ok(check(&client, &args.namespace).await)
    })?;
    for f in &findings {
        let mark = if f.ok { "ok  " } else { "FAIL" };
        writeln!(out, "{mark} {}: {}", f.what, f.detail)?;
        if let Some(fix) = &f.fix {
            writeln!(out, "     fix: {fix}")?;
        }
    }
    let failed = findings.iter().filter(|f| !f.ok).count();
    if failed == 0 {
        writeln!(out, "switchyard is healthy")?;
    } else {
        writeln!(out, "{failed} check(s) failed")?;
    }
    Ok(failed == 0)
}

/// The findings for a cluster.
pub async fn check(client: &Client, namespace: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let reinstall = format!("switchyard install --namespace {namespace} | kubectl apply -f -");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut webhook_kinds = Vec::new();
    for kind in Kind::ALL {
        let name = format!("{}.{}", kind.plural(), kind.group());
        let what = format!("crd {name}");
        match crds.get_opt(&name).await {
            Ok(Some(crd)) => {
                let established = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                let webhook = crd
                    .spec
                    .conversion
                    .as_ref()
                    .is_some_and(|c| c.strategy == "Webhook");
                if !established {
                    findings.push(Finding::failed(
                        what,
                        "not established",
                        format!("kubectl describe crd {name} (names or schema rejected?), then {reinstall}"),
                    ));
                } else if kind.versions().len() > 1 && !webhook {
                    findings.push(Finding::failed(
                        what,
                        "established, but without the conversion webhook: objects written in one version read wrongly in another",
                        reinstall.clone(),
                    ));
                } else {
                    findings.push(Finding::ok(
                        what,
                        if webhook {
                            "established, conversion webhook"
                        } else {
                            "established"
                        },
                    ));
                    if webhook {
                        webhook_kinds.push(kind);
                    }
                }
            }
            Ok(None) => findings.push(Finding::failed(what, "not installed", reinstall.clone())),
            Err(e) => findings.push(Finding::failed(
                what,
                format!("cannot read: {e}"),
                "check your kubeconfig and that you may read customresourcedefinitions",
            )),
        }
    }
    findings.push(check_lease(client, namespace).await);
    if let Some(kind) = webhook_kinds.first() {
        findings.push(check_webhook(client, namespace, *kind).await);
    }
    findings
}

/// An operator is alive when the Lease is held and was renewed within its duration.
async fn check_lease(client: &Client, namespace: &str) -> Finding {
    let what = format!("operator (lease {namespace}/{LEASE_NAME})");
    let fix = format!(
        "kubectl -n {namespace} get pods -l app.kubernetes.io/name=switchyard; kubectl -n {namespace} logs deploy/switchyard"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    match leases.get_opt(LEASE_NAME).await {
        Ok(Some(lease)) => {
            let spec = lease.spec.unwrap_or_default();
            let holder = spec.holder_identity.unwrap_or_default();
            let age = spec
                .renew_time
                .map(|t| Timestamp::now().as_second() - t.0.as_second());
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            match age {
                Some(age) if !holder.is_empty() && age <= duration => {
                    Finding::ok(what, format!("{holder} leads, renewed {age}s ago"))
                }
                Some(age) if !holder.is_empty() => Finding::failed(
                    what,
                    format!(
                        "{holder} last renewed {age}s ago (lease lasts {duration}s): no operator is running"
                    ),
                    fix,
                ),
                _ => Finding::failed(what, "nobody holds the lease", fix),
            }
        }
        Ok(None) => Finding::failed(what, "no operator has started yet", fix),
        Err(e) => Finding::failed(what, format!("cannot read: {e}"), fix),
    }
}

/// Makes the API server call the webhook: a server-side dry-run create of an object written in
/// a version other than the storage version must be converted.
async fn check_webhook(client: &Client, namespace: &str, kind: Kind) -> Finding {
    let what = "conversion webhook".to_string();
    let version = kind
        .versions()
        .iter()
        .find(|v| **v != kind.storage_version())
        .copied()
        .unwrap_or(kind.storage_version());
    let resource = smi_resource(kind, version);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let probe: DynamicObject = match serde_json::from_value(probe_object(kind, version, namespace))
    {
        Ok(o) => o,
        Err(e) => return Finding::failed(what, format!("internal: {e}"), "report a bug"),
    };
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&params, &probe).await {
        Ok(_) => Finding::ok(
            what,
            format!("converted a {kind} {version} (server-side dry run)"),
        ),
        Err(e) => Finding::failed(
            what,
            format!("a dry-run create of a {kind} {version} failed: {e}"),
            format!(
                "kubectl -n {namespace} get endpointslices -l kubernetes.io/service-name=switchyard (no ready operator?); if the CA changed, re-run switchyard install"
            ),
        ),
    }
}

/// A minimal valid object of `kind` at `version` for the dry run.
fn probe_object(kind: Kind, version: &str, namespace: &str) -> serde_json::Value {
    let spec = match kind {
        Kind::TrafficSplit => serde_json::json!({
            "service": "switchyard-check",
            "backends": [{"service": "switchyard-check", "weight": if version == "v1alpha1" { serde_json::json!("1") } else { serde_json::json!(1) }}],
        }),
        Kind::TrafficTarget => serde_json::json!({
            "destination": {"kind": "ServiceAccount", "name": "switchyard-check"},
            "sources": [{"kind": "ServiceAccount", "name": "switchyard-check"}],
        }),
        _ => serde_json::json!({}),
    };
    serde_json::json!({
        "apiVersion": format!("{}/{version}", kind.group()),
        "kind": kind.as_str(),
        "metadata": {"name": "switchyard-check", "namespace": namespace},
        "spec": spec,
    })
}
