//! The tap API served to the Kubernetes aggregation layer: the `v1alpha1.tap.switchyard.dev`
//! APIService, answered on the webhook port beside the Traffic Metrics API, registered and
//! authenticated exactly as that one is (see [`metrics_api`](super::metrics_api)), and
//! authorized twice: by the API server's RBAC, and again here with a SubjectAccessReview.
//!
//! ```text
//!  switchyard tap ──GET /apis/tap.switchyard.dev/v1alpha1/watch/namespaces/NS/pods/POD/tap?…
//!     │ kube-apiserver: authenticates the user; RBAC: verb watch on pods/tap (or tap) in NS
//!     ▼ proxies (long-running: `watch`) with its front-proxy certificate and X-Remote-* headers
//!  replica A, webhook port ─▶ FrontProxy::authenticate ─▶ SubjectAccessReview (same attributes)
//!     │  denied ─▶ 403 Status naming the user and the resource
//!     ▼
//!  Hub::open (A's proxies) ──────────────────────────────┐
//!  every other serving operator Pod, podIP:9443 (HTTPS, ├─▶ merged NDJSON of TapEvents
//!   the webhook's own certificate as client certificate) │
//!     GET /replica/tap?namespace=…  ─▶ B's Hub only ─────┘
//! ```
//!
//! # Paths and what kube-apiserver makes of them
//!
//! `…/v1alpha1/watch/namespaces/{ns}/pods/{pod}/tap` is resource `pods`, subresource `tap`,
//! name `{pod}`; `…/v1alpha1/watch/namespaces/{ns}/tap` is resource `tap` (RequestInfoFactory:
//! after the `watch/` prefix and the namespace, what follows is resource, name, subresource).
//! The `watch/` prefix makes the verb `watch`, which the API server counts as long-running, so
//! its request timeout does not cut a tap. ClusterRole `switchyard-tap` grants exactly that verb
//! on those resources; the operator asks the API server the same question
//! ([`Target::attributes`]) for the user the front proxy names, with its groups and extras.
//!
//! # Replicas
//!
//! A proxy streams its requests to the replica its access-log stream landed on, so the replica
//! that receives a tap also asks every other serving operator Pod ([`PeerSource`]: Ready, not
//! being deleted, read when the tap starts and every [`PEER_REFRESH`] while it runs) for its
//! own events, on its webhook port at its Pod IP, and merges them into the stream. Replicas
//! trust each other as [`replica`] describes: a request to [`REPLICA_TAP_PATH`] is served only
//! to another replica ([`same_key`]), and only from the local Hub. A peer that fails or goes
//! away is logged and skipped. Each replica applies the session's `max_rps` to its own
//! proxies' events, and the merged stream applies it again ([`crate::tap::stream::merged`]), so
//! a session gets at most `max_rps` events a second from all replicas together.

#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::{Api, Client, api::PostParams};
use rustls::{ClientConfig, pki_types::CertificateDer};
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinSet};

use super::{
    metrics_api::{FrontProxySettings, ProxiedUser, status_response},
    replica::{self, AbortOnDrop, BoxFuture, Peer, PeerSource, replica_client_config, same_key},
};
use crate::{
    api_status,
    tap::{Hub, SESSION_QUEUE, TapEvent, TapFilter, stream::Body},
    webhook::CertReloader,
};

/// The API group.
pub const GROUP: &str = "tap.switchyard.dev";
/// The served version.
pub const VERSION: &str = "v1alpha1";
/// The one verb: a tap is a watch.
pub const VERB: &str = "watch";
/// The resources, as RBAC names them: one Pod's tap, and a whole namespace's.
pub const RESOURCES: [&str; 2] = ["pods/tap", "tap"];
/// The replica-to-replica path ([`replica`]): `GET /replica/tap?<TapFilter query>`, this
/// replica's proxies only.
pub const REPLICA_TAP_PATH: &str = "/replica/tap";
/// The SubjectAccessReview must answer within this: 5 s (else 500, the tap refused).
pub const SAR_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a running tap reads the operator's Pods again for new peers: 10 s.
pub const PEER_REFRESH: Duration = Duration::from_secs(10);

/// Whether the webhook server hands a path to the tap API.
pub fn is_tap_path(path: &str) -> bool {
    let group = format!("/apis/{GROUP}");
    path == REPLICA_TAP_PATH
        || path
            .strip_prefix(&group)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

// === the request, sans IO ===

/// What a tap names: a namespace's proxies, or one Pod's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub pod: Option<String>,
}

/// What a path under `/apis/tap.switchyard.dev` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiRequest {
    /// `/apis/tap.switchyard.dev/v1alpha1`: the `APIResourceList`.
    Discovery,
    /// A tap of the target.
    Tap(Target),
    NotFound,
}

impl ApiRequest {
    /// Reads a request path, segments percent-decoded.
    pub fn parse(path: &str) -> Self {
        let prefix = format!("/apis/{GROUP}/{VERSION}");
        let Some(rest) = path.strip_prefix(&prefix) else {
            return ApiRequest::NotFound;
        };
        let segments: Option<Vec<String>> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned())
            })
            .collect();
        let Some(segments) = segments else {
            return ApiRequest::NotFound;
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match segments.as_slice() {
            [] => ApiRequest::Discovery,
            ["watch", "namespaces", ns, "tap"] => ApiRequest::Tap(Target {
                namespace: (*ns).to_owned(),
                pod: None,
            }),
            ["watch", "namespaces", ns, "pods", pod, "tap"] => ApiRequest::Tap(Target {
                namespace: (*ns).to_owned(),
                pod: Some((*pod).to_owned()),
            }),
            _ => ApiRequest::NotFound,
        }
    }
}

impl Target {
    /// The attributes kube-apiserver's RequestInfoFactory reads from the path, which the
    /// SubjectAccessReview asks about.
    pub fn attributes(&self) -> ResourceAttributes {
        let (resource, subresource) = match self.pod {
            Some(_) => ("pods", Some("tap".to_owned())),
            None => ("tap", None),
        };
        ResourceAttributes {
            group: Some(GROUP.into()),
            version: Some(VERSION.into()),
            verb: Some(VERB.into()),
            namespace: Some(self.namespace.clone()),
            resource: Some(resource.into()),
            subresource,
            name: self.pod.clone(),
            ..ResourceAttributes::default()
        }
    }

    /// The resource as RBAC names it: `pods/tap` or `tap`.
    pub fn rbac_resource(&self) -> &'static str {
        match self.pod {
            Some(_) => RESOURCES[0],
            None => RESOURCES[1],
        }
    }

    /// The session's filter: this target with the query's `method`, `authority`, `path` and
    /// `max_rps` (see [`TapFilter::parse`]).
    ///
    /// # Errors
    ///
    /// A bad query, or one naming `namespace` or `pod` (the path names them).
    pub fn filter(&self, query: Option<&str>) -> Result<TapFilter, String> {
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            if matches!(key, "namespace" | "pod") {
                return Err(format!("{key}: named by the path, not the query"));
            }
        }
        let mut filter = TapFilter::parse(Some(&format!(
            "namespace=x{}",
            query.map(|q| format!("&{q}")).unwrap_or_default()
        )))?;
        filter.namespace = self.namespace.clone();
        filter.pod = self.pod.clone();
        Ok(filter)
    }
}

/// The SubjectAccessReview of `user` tapping `target`.
pub fn access_review(user: &ProxiedUser, target: &Target) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: user.uid.clone(),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes: Some(target.attributes()),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// What the operator's own authorization decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// With the authorizer's reason, if it gave one.
    Denied(Option<String>),
    /// The review could not be made; the tap is refused.
    Failed(String),
}

impl Decision {
    /// Reads a review's outcome: allowed only when `allowed` and not `denied`.
    pub fn of(outcome: Result<SubjectAccessReviewStatus, String>) -> Self {
        match outcome {
            Ok(status) if status.allowed && status.denied != Some(true) => Decision::Allowed,
            Ok(status) => Decision::Denied(
                status
                    .reason
                    .filter(|r| !r.is_empty())
                    .or(status.evaluation_error.filter(|e| !e.is_empty())),
            ),
            Err(error) => Decision::Failed(error),
        }
    }

    /// The answer to a refused tap (`None` when allowed): a 403 `Status` naming the user and
    /// the resource, as the API server words its own, or a 500 `Status`.
    pub fn refusal(&self, user: &ProxiedUser, target: &Target) -> Option<(StatusCode, Value)> {
        let (code, message) = match self {
            Decision::Allowed => return None,
            Decision::Denied(why) => {
                let object = match &target.pod {
                    Some(pod) => format!("pods.{GROUP} {pod:?}"),
                    None => format!("tap.{GROUP}"),
                };
                let why = why.as_ref().map(|w| format!(": {w}")).unwrap_or_default();
                (
                    StatusCode::FORBIDDEN,
                    format!(
                        "{object} is forbidden: User {:?} cannot {VERB} resource {:?} in API group {GROUP:?} in the namespace {:?}{why}",
                        user.name,
                        target.rbac_resource(),
                        target.namespace,
                    ),
                )
            }
            Decision::Failed(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "checking whether user {:?} may {VERB} {} in namespace {:?}: {error}",
                    user.name,
                    target.rbac_resource(),
                    target.namespace
                ),
            ),
        };
        Some((code, api_status::failure(code, &message)))
    }
}

/// The `APIResourceList` served at the group version's root.
pub fn discovery() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "singularName": "",
                "namespaced": true,
                "kind": "TapEvent",
                "verbs": [VERB],
            })
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": resources,
    })
}

// === what the API asks of the cluster ===

/// Asks the API server whether a user may do something.
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// The review's status, or why there is none.
    fn review(
        &self,
        review: SubjectAccessReview,
    ) -> BoxFuture<'_, Result<SubjectAccessReviewStatus, String>>;
}

/// [`Authorizer`] through the API server, each review bounded by [`SAR_TIMEOUT`].
#[derive(Clone)]
pub struct KubeAuthorizer(pub Client);

impl fmt::Debug for KubeAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KubeAuthorizer")
    }
}

impl Authorizer for KubeAuthorizer {
    fn review(
        &self,
        review: SubjectAccessReview,
    ) -> BoxFuture<'_, Result<SubjectAccessReviewStatus, String>> {
        Box::pin(async move {
            let api: Api<SubjectAccessReview> = Api::all(self.0.clone());
            let created =
                tokio::time::timeout(SAR_TIMEOUT, api.create(&PostParams::default(), &review))
                    .await
                    .map_err(|_| format!("no SubjectAccessReview answer within {SAR_TIMEOUT:?}"))?
                    .map_err(|e| format!("SubjectAccessReview: {e}"))?;
            created
                .status
                .ok_or_else(|| "SubjectAccessReview answered without a status".to_owned())
        })
    }
}

// === serving ===

/// The tap API as served on the webhook port.
#[derive(Debug)]
pub struct TapApi {
    front_proxy: Arc<FrontProxySettings>,
    hub: Arc<Hub>,
    authorizer: Arc<dyn Authorizer>,
    peers: Arc<dyn PeerSource>,
    /// The webhook's certificate: what a replica presents to its peers and expects of them.
    tls: Arc<CertReloader>,
}

impl TapApi {
    pub fn new(
        front_proxy: Arc<FrontProxySettings>,
        hub: Arc<Hub>,
        authorizer: Arc<dyn Authorizer>,
        peers: Arc<dyn PeerSource>,
        tls: Arc<CertReloader>,
    ) -> Self {
        TapApi {
            front_proxy,
            hub,
            authorizer,
            peers,
            tls,
        }
    }

    /// Answers one request to [`is_tap_path`]: the replica path to another replica only, the
    /// API to the front proxy only (401/403 `Status` otherwise), GET only (405), and a tap only
    /// when the SubjectAccessReview allows it.
    pub async fn respond(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        peer: Option<&[CertificateDer<'_>]>,
    ) -> Response<Body> {
        if path == REPLICA_TAP_PATH {
            return self.respond_replica(method, query, peer);
        }
        let user = match self.front_proxy.authenticate(peer, headers) {
            Ok(user) => user,
            Err(error) => {
                tracing::debug!(%error, path, "tap api request refused");
                return json(error.status(), &error.to_status());
            }
        };
        if method != Method::GET {
            let status =
                api_status::failure(StatusCode::METHOD_NOT_ALLOWED, "the tap API only watches");
            return json(StatusCode::METHOD_NOT_ALLOWED, &status);
        }
        let target = match ApiRequest::parse(path) {
            ApiRequest::Discovery => return json(StatusCode::OK, &discovery()),
            ApiRequest::NotFound => {
                let status = api_status::failure(
                    StatusCode::NOT_FOUND,
                    &format!("{path}: not a path of the tap API"),
                );
                return json(StatusCode::NOT_FOUND, &status);
            }
            ApiRequest::Tap(target) => target,
        };
        let filter = match target.filter(query) {
            Ok(filter) => filter,
            Err(message) => {
                let status = api_status::failure(StatusCode::BAD_REQUEST, &message);
                return json(StatusCode::BAD_REQUEST, &status);
            }
        };
        let decision = Decision::of(self.authorizer.review(access_review(&user, &target)).await);
        if let Some((code, status)) = decision.refusal(&user, &target) {
            tracing::info!(user = %user.name, ?target, ?decision, "tap refused");
            return json(code, &status);
        }
        let session = match self.hub.open(filter.clone()) {
            Ok(session) => session,
            Err(message) => {
                let status = api_status::failure(StatusCode::SERVICE_UNAVAILABLE, &message);
                return json(StatusCode::SERVICE_UNAVAILABLE, &status);
            }
        };
        tracing::info!(user = %user.name, ?target, "tap started");
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let fan_out = tokio::spawn(fan_out(
            Arc::clone(&self.peers),
            Arc::clone(&self.tls),
            filter.query(),
            tx,
        ));
        let mut response = Response::new(crate::tap::stream::merged(
            session,
            Some(rx),
            AbortOnDrop(fan_out),
        ));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-ndjson"),
        );
        response
    }

    fn respond_replica(
        &self,
        method: &Method,
        query: Option<&str>,
        peer: Option<&[CertificateDer<'_>]>,
    ) -> Response<Body> {
        if let Err(error) = same_key(peer, &self.tls.current()) {
            tracing::debug!(%error, "replica tap request refused");
            let status = api_status::failure(StatusCode::UNAUTHORIZED, &error.to_string());
            return json(StatusCode::UNAUTHORIZED, &status);
        }
        if method != Method::GET {
            let status = api_status::failure(StatusCode::METHOD_NOT_ALLOWED, "GET only");
            return json(StatusCode::METHOD_NOT_ALLOWED, &status);
        }
        crate::tap::stream::respond(&self.hub, query)
    }
}

fn json(status: StatusCode, body: &Value) -> Response<Body> {
    status_response(status, body).map(BodyExt::boxed_unsync)
}

/// Streams every peer's events for `query` into `tx`, reading the peers now and every
/// [`PEER_REFRESH`]; a peer is asked again at a refresh after its stream ended. Runs until
/// aborted or `tx` closes.
async fn fan_out(
    source: Arc<dyn PeerSource>,
    tls: Arc<CertReloader>,
    query: String,
    tx: mpsc::Sender<TapEvent>,
) {
    let config = match replica_client_config(&tls) {
        Ok(config) => config,
        Err(error) => {
            tracing::warn!(%error, "tap: no tls configuration to reach other replicas");
            return;
        }
    };
    let mut running: BTreeMap<Peer, tokio::task::AbortHandle> = BTreeMap::new();
    let mut tasks = JoinSet::new();
    loop {
        running.retain(|_, task| !task.is_finished());
        match source.peers().await {
            Ok(peers) => {
                for peer in peers {
                    if running.contains_key(&peer) {
                        continue;
                    }
                    let task = tasks.spawn(peer_events(
                        peer.clone(),
                        Arc::clone(&config),
                        query.clone(),
                        tx.clone(),
                    ));
                    running.insert(peer, task);
                }
            }
            Err(error) => tracing::warn!(%error, "tap: finding the other replicas"),
        }
        let refresh = tokio::time::sleep(PEER_REFRESH);
        tokio::pin!(refresh);
        loop {
            tokio::select! {
                () = &mut refresh => break,
                () = tx.closed() => return,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    }
}

/// One peer's events into `tx`, until its stream ends, it fails (logged) or `tx` closes.
async fn peer_events(
    peer: Peer,
    config: Arc<ClientConfig>,
    query: String,
    tx: mpsc::Sender<TapEvent>,
) {
    match peer_stream(&peer, config, &query, &tx).await {
        Ok(()) => tracing::debug!(peer = %peer.name, "tap: replica stream ended"),
        Err(error) => {
            tracing::warn!(peer = %peer.name, addr = %peer.addr, %error, "tap: skipping a replica")
        }
    }
}

async fn peer_stream(
    peer: &Peer,
    config: Arc<ClientConfig>,
    query: &str,
    tx: &mpsc::Sender<TapEvent>,
) -> Result<(), String> {
    let (response, _connection) =
        replica::get(peer, config, &format!("{REPLICA_TAP_PATH}?{query}")).await?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let message = crate::tap::stream::refusal(body).await;
        return Err(format!("answered {status}: {message}"));
    }
    let mut lines = crate::tap::stream::Lines::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for line in lines.push(&data)? {
            let event: TapEvent =
                serde_json::from_slice(&line).map_err(|e| format!("not a tap event: {e}"))?;
            if tx.send(event).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}
