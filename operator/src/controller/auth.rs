//! Proxy authentication in a cluster: the bearer token is a ServiceAccount token, checked with a
//! TokenReview, and must belong to the account of the Pod the proxy says it is.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::config::core::v3::Node;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, Client, api::PostParams};
use switchyard_adapters::model::ProxyId;
use tonic::{Status, metadata::MetadataMap};

use crate::xds::{
    auth::{AuthFuture, Authenticate, VerifyFuture, bearer_token},
    store::ProxyKey,
};

#[cfg(test)]
mod tests;

/// The audience proxy tokens must be issued for (`kubectl create token SA --audience switchyard`).
pub const DEFAULT_AUDIENCE: &str = "switchyard";

/// How long a successful review is trusted; a revoked token is refused within this time.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Bounds the cache; beyond it, expired entries are dropped, then everything.
const CACHE_MAX: usize = 10_000;

/// Pods and their ServiceAccount, as the controller last saw them.
pub type PodAccounts = Arc<RwLock<BTreeMap<ProxyId, String>>>;

/// Who a reviewed token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOwner {
    pub namespace: String,
    pub service_account: String,
    /// Set for a token bound to a Pod (`--bound-object-kind Pod`).
    pub pod: Option<String>,
}

/// Authenticates proxies with TokenReview.
pub struct TokenReviewAuth {
    client: Client,
    audience: String,
    pods: PodAccounts,
    cache: Mutex<HashMap<String, (Instant, TokenOwner)>>,
}

// === impl TokenReviewAuth ===

impl TokenReviewAuth {
    pub fn new(client: Client, audience: impl Into<String>, pods: PodAccounts) -> Self {
        TokenReviewAuth {
            client,
            audience: audience.into(),
            pods,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn review(&self, token: &str) -> Result<TokenOwner, Status> {
        if let Some(owner) = self.cached(token) {
            return Ok(owner);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Status::unavailable(format!("token review failed: {e}")))?;
        let owner = owner_of(&answer, &self.audience).map_err(Status::unauthenticated)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(token.to_string(), (Instant::now(), owner.clone()));
        }
        Ok(owner)
    }

    fn cached(&self, token: &str) -> Option<TokenOwner> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(token)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, owner)| owner.clone())
    }
}

impl Authenticate for TokenReviewAuth {
    /// The TokenReview alone (cached, so the check after the first request costs nothing more).
    fn verify<'a>(&'a self, metadata: &'a MetadataMap) -> VerifyFuture<'a> {
        Box::pin(async move {
            let token = bearer_token(metadata)?;
            self.review(token).await.map(drop)
        })
    }

    fn authenticate<'a>(&'a self, metadata: &'a MetadataMap, node: &'a Node) -> AuthFuture<'a> {
        Box::pin(async move {
            let token = bearer_token(metadata)?;
            let proxy = parse_node_id(&node.id).map_err(Status::unauthenticated)?;
            let owner = self.review(token).await?;
            let account = self
                .pods
                .read()
                .map_err(|_| Status::internal("pod table poisoned"))?
                .get(&proxy)
                .cloned();
            authorize(&owner, &proxy, account.as_deref())?;
            Ok(ProxyKey::new(proxy.to_string()))
        })
    }
}

/// `namespace/pod`, as bootstraps write `node.id`.
pub fn parse_node_id(id: &str) -> Result<ProxyId, String> {
    match id.split_once('/') {
        Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() && !pod.contains('/') => Ok(ProxyId {
            namespace: ns.into(),
            pod: pod.into(),
        }),
        _ => Err(format!("node.id {id:?} is not namespace/pod")),
    }
}

/// The ServiceAccount (and Pod, when bound) of an answered TokenReview.
pub fn owner_of(review: &TokenReview, audience: &str) -> Result<TokenOwner, String> {
    let status = review.status.as_ref().ok_or("token review has no status")?;
    if status.authenticated != Some(true) {
        return Err(match &status.error {
            Some(e) if !e.is_empty() => format!("token not authenticated: {e}"),
            _ => "token not authenticated".into(),
        });
    }
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|x| x == audience))
    {
        return Err(format!("token is not for audience {audience:?}"));
    }
    let user = status.user.as_ref().ok_or("token review names no user")?;
    let username = user.username.as_deref().unwrap_or_default();
    let (namespace, service_account) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| format!("{username:?} is not a ServiceAccount"))?;
    let pod = user
        .extra
        .as_ref()
        .and_then(|extra| extra.get("authentication.kubernetes.io/pod-name"))
        .and_then(|v| v.first())
        .cloned();
    Ok(TokenOwner {
        namespace: namespace.into(),
        service_account: service_account.into(),
        pod,
    })
}

/// Whether `owner` may read `proxy`'s configuration (and so its certificate): same namespace,
/// the Pod's own ServiceAccount, and the same Pod when the token is bound to one. `account` is
/// the Pod's ServiceAccount, `None` when the controller has not seen the Pod (yet).
pub fn authorize(owner: &TokenOwner, proxy: &ProxyId, account: Option<&str>) -> Result<(), Status> {
    if owner.namespace != proxy.namespace {
        return Err(Status::permission_denied(format!(
            "token of {}/{} cannot serve pod {proxy}",
            owner.namespace, owner.service_account
        )));
    }
    if let Some(pod) = &owner.pod
        && pod != &proxy.pod
    {
        return Err(Status::permission_denied(format!(
            "token is bound to pod {}/{pod}, not {proxy}",
            owner.namespace
        )));
    }
    match account {
        None => Err(Status::unavailable(format!(
            "pod {proxy} is not known (yet); retry"
        ))),
        Some(sa) if sa != owner.service_account => Err(Status::permission_denied(format!(
            "pod {proxy} runs as {sa}, the token is {}'s",
            owner.service_account
        ))),
        Some(_) => Ok(()),
    }
}
