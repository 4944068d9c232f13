//! `switchyard check`: is the install healthy? CRDs established, the operator Deployment's
//! replicas ready, the webhook Service with ready endpoints, an operator alive (it holds and
//! renews the status writer's Lease), the conversion webhook answering. Each failure comes with
//! what to do about it. The checks fetch objects; pure `*_finding` functions judge them.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::PathBuf,
};

use anyhow::Context as _;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{ContainerStatus, Pod, PodCondition, Service},
        discovery::v1::EndpointSlice,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinition, WebhookClientConfig,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, PostParams},
};
use switchyard_crds::Kind;

use super::controller::client;
use crate::{
    controller::{LEASE_NAME, watch::smi_resource},
    install::NAME,
};

#[cfg(test)]
mod tests;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The operator's namespace.
    #[arg(long, default_value = "switchyard-system")]
    pub namespace: String,
    /// A kubeconfig file [default: $KUBECONFIG or ~/.kube/config, else the in-cluster config].
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
    Ok(print(&findings, out)?)
}

/// One line per finding, `ok   what: detail` or `FAIL what: detail` with a `fix:` line, then a
/// summary; `Ok(false)` when any failed.
pub fn print(findings: &[Finding], out: &mut dyn Write) -> std::io::Result<bool> {
    for f in findings {
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

/// The findings for a cluster, in order: CRDs, the operator Deployment, the webhook Service's
/// endpoints, the Lease, a conversion through the webhook. The edges here only fetch; what the
/// objects mean is decided by the `*_finding` functions.
pub async fn check(client: &Client, namespace: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let reinstall = reinstall(namespace);
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crds = Vec::new();
    let mut webhook_kinds = Vec::new();
    for kind in Kind::ALL {
        let name = crd_name(kind);
        match crd_api.get_opt(&name).await {
            Ok(crd) => {
                let finding = crd_finding(kind, crd.as_ref(), &reinstall);
                if finding.ok && crd.as_ref().and_then(conversion_webhook).is_some() {
                    webhook_kinds.push(kind);
                }
                findings.push(finding);
                crds.extend(crd);
            }
            Err(e) => findings.push(Finding::failed(
                format!("crd {name}"),
                format!("cannot read: {}", api_error(&e)),
                "check your kubeconfig and that you may read customresourcedefinitions",
            )),
        }
    }
    findings.push(check_deployment(client, namespace, &reinstall).await);
    if let Some(f) = check_webhook_service(client, &crds, &reinstall).await {
        findings.push(f);
    }
    findings.push(check_lease(client, namespace).await);
    if let Some(kind) = webhook_kinds.first() {
        findings.push(check_webhook(client, namespace, *kind).await);
    }
    findings
}

/// What the API server said, once: kube's own text prints the whole `Status` twice.
fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        e => super::error_text(e),
    }
}

fn reinstall(namespace: &str) -> String {
    format!("switchyard install --namespace {namespace} | kubectl apply -f -")
}

fn crd_name(kind: Kind) -> String {
    format!("{}.{}", kind.plural(), kind.group())
}

/// Where a CRD sends conversions, when it converts through a webhook.
fn conversion_webhook(crd: &CustomResourceDefinition) -> Option<&WebhookClientConfig> {
    let conversion = crd.spec.conversion.as_ref()?;
    if conversion.strategy != "Webhook" {
        return None;
    }
    conversion.webhook.as_ref()?.client_config.as_ref()
}

/// One CRD: installed, established, and converting through the webhook when it has several
/// versions.
pub fn crd_finding(kind: Kind, crd: Option<&CustomResourceDefinition>, reinstall: &str) -> Finding {
    let name = crd_name(kind);
    let what = format!("crd {name}");
    let Some(crd) = crd else {
        return Finding::failed(what, "not installed", reinstall);
    };
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
    let webhook = conversion_webhook(crd).is_some();
    if !established {
        Finding::failed(
            what,
            "not established",
            format!("kubectl describe crd {name} (names or schema rejected?), then {reinstall}"),
        )
    } else if kind.versions().len() > 1 && !webhook {
        Finding::failed(
            what,
            "established, but without the conversion webhook: objects written in one version read wrongly in another",
            reinstall,
        )
    } else {
        Finding::ok(
            what,
            if webhook {
                "established, conversion webhook"
            } else {
                "established"
            },
        )
    }
}

async fn check_deployment(client: &Client, namespace: &str, reinstall: &str) -> Finding {
    let what = format!("operator deployment {namespace}/{NAME}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = match deployments.get_opt(NAME).await {
        Ok(d) => d,
        Err(e) => {
            return Finding::failed(
                what,
                format!("cannot read: {}", api_error(&e)),
                "check your kubeconfig and that you may read deployments and pods",
            );
        }
    };
    let pods = match deployment.as_ref().and_then(pod_selector) {
        Some(selector) => {
            let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
            match api.list(&ListParams::default().labels(&selector)).await {
                Ok(list) => list.items,
                Err(e) => {
                    return Finding::failed(
                        what,
                        format!("cannot list its pods: {}", api_error(&e)),
                        "check your kubeconfig and that you may read pods",
                    );
                }
            }
        }
        None => Vec::new(),
    };
    deployment_finding(namespace, deployment.as_ref(), &pods, reinstall)
}

/// The label selector of a Deployment's Pods, `k=v,k2=v2`, from its `matchLabels`.
fn pod_selector(deployment: &Deployment) -> Option<String> {
    let labels = deployment
        .spec
        .as_ref()?
        .selector
        .match_labels
        .as_ref()
        .filter(|l| !l.is_empty())?;
    Some(label_selector(labels))
}

/// `k=v,k2=v2`, for `kubectl -l` and list calls.
fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The operator Deployment is healthy when every desired replica is ready and available. A
/// failure names each operator Pod that is not ready, with the most useful reason its status
/// gives. `pods` are those the Deployment's selector matches.
pub fn deployment_finding(
    namespace: &str,
    deployment: Option<&Deployment>,
    pods: &[Pod],
    reinstall: &str,
) -> Finding {
    let what = format!("operator deployment {namespace}/{NAME}");
    let Some(deployment) = deployment else {
        return Finding::failed(what, "not installed", reinstall);
    };
    // Kubernetes defaults `replicas` to 1.
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if desired == 0 {
        return Finding::ok(
            what,
            "scaled to 0 replicas: the operator must run outside the cluster (see the lease)",
        );
    }
    if ready >= desired && available >= desired {
        return Finding::ok(what, format!("{ready}/{desired} replicas ready"));
    }
    let mut detail = format!("{ready}/{desired} replicas ready");
    if available < ready.min(desired) {
        detail.push_str(&format!(", {available} available"));
    }
    let problems: Vec<(&str, PodProblem)> = pods
        .iter()
        .filter(|p| !is_terminal(p) && !is_ready(p))
        .map(|p| (p.metadata.name.as_deref().unwrap_or("?"), pod_problem(p)))
        .collect();
    let selector = pod_selector(deployment).unwrap_or_default();
    if problems.is_empty() {
        detail.push_str(&format!(" ({})", deployment_problem(deployment)));
        return Finding::failed(
            what,
            detail,
            format!("kubectl -n {namespace} describe deployment {NAME}"),
        );
    }
    let named: Vec<String> = problems
        .iter()
        .map(|(name, p)| format!("{name}: {}", p.text))
        .collect();
    detail.push_str(&format!(" ({})", named.join("; ")));
    let mut fix = format!("kubectl -n {namespace} describe pods -l {selector}");
    // Logs help only where a container has run; a Pod that was never scheduled or whose image
    // never pulled has none.
    if let Some((name, p)) = problems.iter().find(|(_, p)| p.logs != Logs::None) {
        let previous = if p.logs == Logs::Previous {
            " --previous"
        } else {
            ""
        };
        fix.push_str(&format!("; kubectl -n {namespace} logs {name}{previous}"));
    }
    Finding::failed(what, detail, fix)
}

/// Why a Deployment has too few replicas when it has no Pod to blame: its conditions.
fn deployment_problem(deployment: &Deployment) -> String {
    let conditions = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let failing = |type_: &str, status: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| {
                c.message
                    .clone()
                    .or_else(|| c.reason.clone())
                    .unwrap_or_else(|| type_.to_owned())
            })
    };
    failing("ReplicaFailure", "True")
        .or_else(|| failing("Progressing", "False"))
        .or_else(|| failing("Available", "False"))
        .unwrap_or_else(|| "no operator Pods".to_owned())
}

/// Whether a Pod's logs can say more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logs {
    None,
    /// A container is running.
    Current,
    /// A container has restarted: the previous run says why it ended.
    Previous,
}

/// What is wrong with a Pod that is not ready: `Phase: reason`.
#[derive(Debug)]
struct PodProblem {
    text: String,
    logs: Logs,
}

fn is_ready(pod: &Pod) -> bool {
    pod_condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

/// A finished Pod (evicted, say) is history: its replacement is the one to look at.
fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn pod_condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The most useful reason a Pod is not ready, in the order a person would look: being deleted,
/// a container stuck or crashing, not scheduled, a container running but not ready, the Pod's
/// own reason.
fn pod_problem(pod: &Pod) -> PodProblem {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Unknown");
    let problem = |reason: String, logs: Logs| PodProblem {
        text: format!("{phase}: {reason}"),
        logs,
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return problem("terminating".to_owned(), Logs::None);
    }
    let containers: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    for c in &containers {
        let state = c.state.as_ref();
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let logs = if c.restart_count > 0 || last.is_some() {
            Logs::Previous
        } else {
            Logs::None
        };
        if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.as_deref().unwrap_or("waiting");
            let detail = match (reason, last) {
                // Its message repeats the container and Pod names; how it ended says more.
                ("CrashLoopBackOff", Some(t)) => format!(
                    " (restarted {} times, last exit code {}{})",
                    c.restart_count,
                    t.exit_code,
                    t.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                _ => waiting
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default(),
            };
            return problem(format!("container {}: {reason}{detail}", c.name), logs);
        }
        if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            return problem(
                format!(
                    "container {}: terminated: {} (exit code {})",
                    c.name,
                    t.reason.as_deref().unwrap_or("exited"),
                    t.exit_code
                ),
                Logs::Previous,
            );
        }
    }
    if let Some(c) = pod_condition(pod, "PodScheduled").filter(|c| c.status == "False") {
        let reason = c
            .message
            .clone()
            .or_else(|| c.reason.clone())
            .unwrap_or_else(|| "not scheduled".to_owned());
        return problem(reason, Logs::None);
    }
    if let Some(c) = containers.iter().find(|c| !c.ready) {
        return problem(
            format!("container {}: running but not ready", c.name),
            Logs::Current,
        );
    }
    match (status.reason, status.message) {
        (Some(r), Some(m)) => problem(format!("{r}: {m}"), Logs::None),
        (Some(r), None) | (None, Some(r)) => problem(r, Logs::None),
        (None, None) => PodProblem {
            text: phase.to_owned(),
            logs: Logs::None,
        },
    }
}

/// Where the CRDs send conversions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookTarget {
    /// A Service in the cluster (the operator runs as its Deployment).
    Service { namespace: String, name: String },
    /// A URL (`switchyard install --webhook-url`: the operator runs elsewhere).
    Url(String),
}

/// The target of the first CRD that converts through a webhook; `None` when none does (the CRD
/// checks fail then).
pub fn webhook_target(crds: &[CustomResourceDefinition]) -> Option<WebhookTarget> {
    crds.iter()
        .filter_map(conversion_webhook)
        .find_map(|config| match (&config.service, &config.url) {
            (Some(s), _) => Some(WebhookTarget::Service {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
            }),
            (None, Some(url)) => Some(WebhookTarget::Url(url.clone())),
            (None, None) => None,
        })
}

async fn check_webhook_service(
    client: &Client,
    crds: &[CustomResourceDefinition],
    reinstall: &str,
) -> Option<Finding> {
    let target = webhook_target(crds)?;
    let WebhookTarget::Service { namespace, name } = &target else {
        return Some(webhook_service_finding(&target, None, &[], reinstall));
    };
    let what = format!("webhook service {namespace}/{name}");
    let cannot_read = |e: kube::Error| {
        Finding::failed(
            what.clone(),
            format!("cannot read: {}", api_error(&e)),
            "check your kubeconfig and that you may read services and endpointslices",
        )
    };
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service = match services.get_opt(name).await {
        Ok(s) => s,
        Err(e) => return Some(cannot_read(e)),
    };
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={name}"));
    let slices = match slices.list(&params).await {
        Ok(list) => list.items,
        Err(e) => return Some(cannot_read(e)),
    };
    Some(webhook_service_finding(
        &target,
        service.as_ref(),
        &slices,
        reinstall,
    ))
}

/// The label the EndpointSlice controller puts on a Service's slices.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The API server reaches a webhook Service through its ready endpoints; without one, every
/// read of an object stored in another version fails. `slices` may hold other Services' slices.
pub fn webhook_service_finding(
    target: &WebhookTarget,
    service: Option<&Service>,
    slices: &[EndpointSlice],
    reinstall: &str,
) -> Finding {
    let (namespace, name) = match target {
        WebhookTarget::Url(url) => {
            return Finding::ok(
                "webhook service",
                format!("none to check: the CRDs use a URL ({url})"),
            );
        }
        WebhookTarget::Service { namespace, name } => (namespace, name),
    };
    let what = format!("webhook service {namespace}/{name}");
    let Some(service) = service else {
        return Finding::failed(what, "not installed", reinstall);
    };
    // A Pod is in an IPv4 and an IPv6 slice on a dual-stack cluster: count it once.
    let ready: BTreeSet<String> = slices
        .iter()
        .filter(|s| {
            s.metadata
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == namespace)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    == Some(name)
        })
        .flat_map(|s| &s.endpoints)
        // An unknown readiness counts as ready, as the EndpointSlice API says.
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter_map(|e| {
            e.target_ref
                .as_ref()
                .and_then(|t| t.name.clone())
                .or_else(|| e.addresses.first().cloned())
        })
        .collect();
    match ready.len() {
        0 => {
            let pods = service
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .map(label_selector)
                .unwrap_or_default();
            Finding::failed(
                what,
                "no ready endpoints: the API server cannot reach the conversion webhook",
                format!(
                    "kubectl -n {namespace} get pods -l {pods} (an operator Pod must be ready; see the deployment above); kubectl -n {namespace} describe service {name}"
                ),
            )
        }
        1 => Finding::ok(what, "1 ready endpoint"),
        n => Finding::ok(what, format!("{n} ready endpoints")),
    }
}

async fn check_lease(client: &Client, namespace: &str) -> Finding {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    match leases.get_opt(LEASE_NAME).await {
        Ok(lease) => lease_finding(namespace, lease.as_ref(), Timestamp::now()),
        Err(e) => Finding::failed(
            lease_what(namespace),
            format!("cannot read: {}", api_error(&e)),
            lease_fix(namespace),
        ),
    }
}

fn lease_what(namespace: &str) -> String {
    format!("operator (lease {namespace}/{LEASE_NAME})")
}

fn lease_fix(namespace: &str) -> String {
    format!(
        "kubectl -n {namespace} get pods -l app.kubernetes.io/name={NAME}; kubectl -n {namespace} logs deploy/{NAME}"
    )
}

/// An operator is alive when the Lease is held and was renewed within its duration at `now`.
pub fn lease_finding(namespace: &str, lease: Option<&Lease>, now: Timestamp) -> Finding {
    let what = lease_what(namespace);
    let fix = lease_fix(namespace);
    let Some(lease) = lease else {
        return Finding::failed(what, "no operator has started yet", fix);
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    let age = spec.renew_time.map(|t| now.as_second() - t.0.as_second());
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
            format!(
                "a dry-run create of a {kind} {version} failed: {}",
                api_error(&e)
            ),
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
