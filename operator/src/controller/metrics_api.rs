//! The SMI Traffic Metrics API served to the Kubernetes aggregation layer: the
//! `v1alpha1.metrics.smi-spec.io` APIService, answered on the webhook port, for the front proxy
//! (the API server) only, and kept registered only while some replica serves it.
//!
//! ```text
//!  kubectl get --raw /apis/metrics.smi-spec.io/v1alpha1/...
//!     │ kube-apiserver: authenticates the user, authorizes (RBAC on metrics.smi-spec.io)
//!     ▼ proxies with its front-proxy client certificate and X-Remote-User / X-Remote-Group
//!  webhook port :9443 (TLS, client certificate requested, not required)
//!     │ FrontProxy::authenticate: a certificate chaining to requestheader-client-ca-file,
//!     │ its CN in requestheader-allowed-names, a user header  (else 401 / 403 Status)
//!     ▼
//!  this replica's windows ─┐                       every other serving operator Pod, at once:
//!                          ├─ merge ─▶ traffic_metrics::answer (+ partial annotation)
//!  GET podIP:9443/replica/metrics?t=…&namespace=…  ─┘  (HTTPS, the webhook's certificate both ways)
//! ```
//!
//! The CA and names come from ConfigMap `kube-system/extension-apiserver-authentication`, which
//! the API server publishes; it is read at start and again every [`FRONT_PROXY_REFRESH`], so a
//! rotated front-proxy CA applies without a restart. The TLS layer only checks that the client
//! holds the key of the certificate it presents ([`RequestClientCert`]); the chain and the name
//! are checked per request against the current ConfigMap, as kube-apiserver's own request-header
//! authenticator does (it too asks for, but does not require, a client certificate). The
//! conversion and injection webhooks on the same port are unaffected: the API server presents
//! no certificate to them.
//!
//! # Why the APIService is registered at run time, not installed
//!
//! An APIService whose server does not answer is `Available=False`, and then discovery of its
//! group fails. The namespace controller (`pkg/controller/namespace/deletion/
//! namespaced_resources_deleter.go`, `deleteAllContent`) keeps the discovery error and returns
//! it, so the namespace is never finalized: every namespace deleted while the operator is down
//! stays `Terminating` (kubernetes #75788). A static APIService in the install would do that
//! whenever the operator is scaled to zero, uninstalled without the APIService, or failing.
//!
//! So each serving replica applies the APIService (server-side apply, idempotent) when it
//! starts serving and every [`APPLY_INTERVAL`] after, and on a graceful shutdown deletes it when
//! no other operator Pod is Ready and not being deleted ([`last_serving`]). [`register`] does
//! this for every aggregated API the operator serves (`crate::install::API_SERVICES`: this one
//! and the tap API, [`super::tap_api`]), which share the [`FrontProxySettings`] as well. Pods being deleted
//! carry their `deletionTimestamp` before their containers get SIGTERM, so when every replica
//! stops at once (scale to 0, uninstall) each sees the others going and the last one removes
//! it. A replica that starts while another deletes re-applies within [`APPLY_INTERVAL`].
//! What remains: if every replica dies without a graceful shutdown (node loss, OOM), the
//! APIService stays until a replica serves again.
//!
//! # Replicas
//!
//! The API server sends each request to one replica (through the Service's endpoints), and
//! each replica holds only the metrics of the proxies whose metrics streams landed on it. So
//! the replica that receives a request answers over every replica's windows: it takes its own
//! series of the window ([`Telemetry::snapshot`]: per proxy and subject, the counts by status
//! class, latency histogram buckets, connections opened, bytes, and the latest open-connections
//! gauge), asks every other serving operator Pod for theirs at [`REPLICA_METRICS_PATH`] (found
//! and trusted as [`super::replica`] describes, all at once, each within
//! [`PEER_METRICS_TIMEOUT`], each answer at most [`MAX_REPLICA_METRICS_BYTES`]), merges them
//! ([`Snapshot::merge`]) and answers from the merge as one control plane holding every proxy
//! would: an object whose Pods pushed nothing anywhere answers zeros, not 404, whichever
//! replica answers. Only the series the request needs are asked for: one namespace's proxies
//! for what lives in a namespace, every proxy's for the rest ([`Request::proxies`]).
//!
//! A replica that fails to answer (unreachable, too slow, over the cap, another version) is
//! logged and left out, and the answer says so: its `metadata.annotations` (the list's, or the
//! single item's) carry [`PARTIAL_ANNOTATION`](crate::traffic_metrics::PARTIAL_ANNOTATION),
//! `replica <pod> did not answer: <why>` per missing replica, and its counts lack what that
//! replica held. A replica that is not Ready (starting, or being deleted) is not asked: the
//! proxies whose streams it held reconnect to a serving one.

#[cfg(test)]
pub(crate) mod tests;

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, RwLock},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::Full;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    },
};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, UnixTime, pem::PemObject},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use serde_json::Value;
use tokio::sync::watch;

use super::replica::{Peer, PeerSource, replica_client_config, same_key};
use crate::{
    api_status,
    edges::SharedPeers,
    telemetry::{Snapshot, Telemetry},
    traffic_metrics::{Proxies, Request, mark_partial},
    webhook::CertReloader,
};

/// The namespace and name of the ConfigMap the API server publishes its front-proxy settings in.
pub const AUTH_CONFIG_MAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");
/// How often the ConfigMap is read again: 60 s.
pub const FRONT_PROXY_REFRESH: Duration = Duration::from_secs(60);
/// How often each serving replica applies the APIService again: 60 s.
pub const APPLY_INTERVAL: Duration = Duration::from_secs(60);
/// The field manager of the APIService's server-side apply.
const FIELD_MANAGER: &str = super::FIELD_MANAGER;

const CA_KEY: &str = "requestheader-client-ca-file";
const ALLOWED_NAMES_KEY: &str = "requestheader-allowed-names";
const USERNAME_HEADERS_KEY: &str = "requestheader-username-headers";
/// Written by kube-apiserver 1.32+ with `--requestheader-uid-headers` (feature
/// `RemoteRequestHeaderUID`, on by default from 1.33); absent before.
const UID_HEADERS_KEY: &str = "requestheader-uid-headers";
const GROUP_HEADERS_KEY: &str = "requestheader-group-headers";
const EXTRA_PREFIXES_KEY: &str = "requestheader-extra-headers-prefix";

/// Why the front-proxy settings could not be read from the ConfigMap; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontProxyError {
    #[error(
        "configmap {}/{}: no {CA_KEY}: the API server runs without --requestheader-client-ca-file, so it cannot reach aggregated APIs",
        AUTH_CONFIG_MAP.0, AUTH_CONFIG_MAP.1
    )]
    NoCa,
    #[error("configmap {}/{}: {key}: {reason}", AUTH_CONFIG_MAP.0, AUTH_CONFIG_MAP.1)]
    Invalid { key: &'static str, reason: String },
}

/// The front proxy's credentials as the API server publishes them: whom to trust as the
/// aggregator, and which headers carry the user it authenticated.
pub struct FrontProxy {
    roots: Arc<RootCertStore>,
    /// CNs a front-proxy certificate may have; empty: any certificate the CA signed (as
    /// kube-apiserver reads an empty `--requestheader-allowed-names`).
    allowed_names: Vec<String>,
    username_headers: Vec<HeaderName>,
    /// Empty when the API server names none: then no UID is read, as kube-apiserver reads none.
    uid_headers: Vec<HeaderName>,
    group_headers: Vec<HeaderName>,
    /// Lower-case prefixes of the headers that carry the user's extra attributes
    /// (`x-remote-extra-`), the rest of the name being the key, percent-encoded.
    extra_prefixes: Vec<String>,
}

impl fmt::Debug for FrontProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontProxy")
            .field("roots", &self.roots.len())
            .field("allowed_names", &self.allowed_names)
            .field("username_headers", &self.username_headers)
            .field("uid_headers", &self.uid_headers)
            .field("group_headers", &self.group_headers)
            .field("extra_prefixes", &self.extra_prefixes)
            .finish()
    }
}

/// The user the front proxy vouches for: what the API server authenticated, which the tap API
/// authorizes again with a SubjectAccessReview.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxiedUser {
    pub name: String,
    /// The user's UID, when the API server sends one in a header the ConfigMap names
    /// (`requestheader-uid-headers`); an authorizer may decide by it, so the review carries it.
    pub uid: Option<String>,
    pub groups: Vec<String>,
    /// Extra attributes by key (lower case, as kube-apiserver reads them).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why a request was refused; 401 when the caller is not the front proxy, 403 when its
/// certificate is valid but not one of the allowed names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no front-proxy settings loaded from configmap kube-system/extension-apiserver-authentication"
    )]
    NotConfigured,
    #[error("no client certificate: only the API server's front proxy may call this API")]
    NoClientCertificate,
    #[error("client certificate not signed by {CA_KEY}: {reason}")]
    Untrusted { reason: String },
    #[error("client certificate common name {name:?} is not in {ALLOWED_NAMES_KEY}")]
    NameNotAllowed { name: String },
    #[error("no user in the front proxy's headers ({headers})")]
    NoUser { headers: String },
}

impl AuthError {
    /// The HTTP status: 403 for a trusted certificate of a name not allowed, else 401.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::NameNotAllowed { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The Kubernetes `Status` the answer carries.
    pub fn to_status(&self) -> Value {
        api_status::failure(self.status(), &self.to_string())
    }
}

impl FrontProxy {
    /// Reads the ConfigMap's data. The lists are JSON arrays, as the API server writes them.
    ///
    /// # Errors
    ///
    /// No CA, a CA that holds no certificate, or a list that is not a JSON array of strings.
    pub fn from_config_map(data: &BTreeMap<String, String>) -> Result<Self, FrontProxyError> {
        let pem = data
            .get(CA_KEY)
            .filter(|v| !v.trim().is_empty())
            .ok_or(FrontProxyError::NoCa)?;
        let invalid = |key, reason: String| FrontProxyError::Invalid { key, reason };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| invalid(CA_KEY, e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| invalid(CA_KEY, e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(invalid(CA_KEY, "no PEM certificate".into()));
        }
        let list = |key: &'static str| -> Result<Vec<String>, FrontProxyError> {
            match data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                None => Ok(Vec::new()),
                Some(v) => serde_json::from_str::<Vec<String>>(v)
                    .map_err(|e| invalid(key, format!("not a JSON array of strings: {e}"))),
            }
        };
        let headers = |key: &'static str| -> Result<Vec<HeaderName>, FrontProxyError> {
            list(key)?
                .iter()
                .map(|h| {
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|e| invalid(key, format!("{h:?}: {e}")))
                })
                .collect()
        };
        Ok(FrontProxy {
            roots: Arc::new(roots),
            allowed_names: list(ALLOWED_NAMES_KEY)?,
            username_headers: headers(USERNAME_HEADERS_KEY)?,
            uid_headers: headers(UID_HEADERS_KEY)?,
            group_headers: headers(GROUP_HEADERS_KEY)?,
            extra_prefixes: list(EXTRA_PREFIXES_KEY)?
                .into_iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
        })
    }

    /// Checks that a request comes from the front proxy: `peer` (the client's chain, leaf
    /// first, whose key the TLS handshake proved) chains to the CA for client authentication at
    /// `now`, its CN is allowed, and a user header is set.
    ///
    /// # Errors
    ///
    /// See [`AuthError`].
    pub fn authenticate(
        &self,
        peer: Option<&[CertificateDer<'_>]>,
        headers: &HeaderMap,
        now: UnixTime,
    ) -> Result<ProxiedUser, AuthError> {
        let Some((leaf, intermediates)) = peer.and_then(<[_]>::split_first) else {
            return Err(AuthError::NoClientCertificate);
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| AuthError::Untrusted {
            reason: e.to_string(),
        })?;
        verifier
            .verify_client_cert(leaf, intermediates, now)
            .map_err(|e| AuthError::Untrusted {
                reason: e.to_string(),
            })?;
        let name = common_name(leaf).unwrap_or_default();
        if !self.allowed_names.is_empty() && !self.allowed_names.contains(&name) {
            return Err(AuthError::NameNotAllowed { name });
        }
        let values = |names: &[HeaderName]| -> Vec<String> {
            names
                .iter()
                .flat_map(|n| headers.get_all(n))
                .filter_map(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let user = values(&self.username_headers)
            .into_iter()
            .next()
            .ok_or_else(|| AuthError::NoUser {
                headers: self
                    .username_headers
                    .iter()
                    .map(HeaderName::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            // `HeaderName`s are lower case already.
            let Some(key) = self
                .extra_prefixes
                .iter()
                .find_map(|p| name.as_str().strip_prefix(p.as_str()))
            else {
                continue;
            };
            let (Ok(value), Ok(key)) = (
                value.to_str(),
                percent_encoding::percent_decode_str(key).decode_utf8(),
            ) else {
                continue;
            };
            extra
                .entry(key.to_lowercase())
                .or_default()
                .push(value.to_owned());
        }
        Ok(ProxiedUser {
            name: user,
            uid: values(&self.uid_headers).into_iter().next(),
            groups: values(&self.group_headers),
            extra,
        })
    }
}

/// The subject's first common name, if any.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

// === the server side ===

/// Whether the webhook server hands a path to the Traffic Metrics API: the group's (what the
/// aggregator forwards) or [`REPLICA_METRICS_PATH`].
pub fn is_metrics_path(path: &str) -> bool {
    let group = format!("/apis/{}", crate::traffic_metrics::GROUP);
    path == REPLICA_METRICS_PATH
        || path
            .strip_prefix(&group)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The replica-to-replica path ([`super::replica`]): `GET /replica/metrics?t=<ms>ms[&namespace=<ns>]`,
/// this replica's series over the window (of that namespace's proxies), as
/// [`Snapshot::to_json`] writes them.
pub const REPLICA_METRICS_PATH: &str = "/replica/metrics";
/// The largest answer a replica sends another: 16 MiB (some 80,000 series). A replica whose
/// share is larger answers 500 naming the cap, and the answering replica reports it as partial
/// (never a truncated share).
pub const MAX_REPLICA_METRICS_BYTES: usize = 16 * 1024 * 1024;
/// Each other replica must answer within this, its whole answer read: 2 s. The replicas are
/// asked at once, so an API request waits this long at most for them.
pub const PEER_METRICS_TIMEOUT: Duration = Duration::from_secs(2);

/// The front-proxy settings in use, shared by every aggregated API the operator serves (the
/// Traffic Metrics API and the tap API); none until the ConfigMap has been read.
#[derive(Debug, Default)]
pub struct FrontProxySettings {
    current: RwLock<Option<Arc<FrontProxy>>>,
}

impl FrontProxySettings {
    /// Replaces the settings.
    pub fn set(&self, front_proxy: FrontProxy) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::new(front_proxy));
        }
    }

    /// Whether settings are loaded (the APIs can answer).
    pub fn ready(&self) -> bool {
        self.current.read().is_ok_and(|f| f.is_some())
    }

    /// [`FrontProxy::authenticate`] with the settings in use, now.
    ///
    /// # Errors
    ///
    /// [`AuthError::NotConfigured`] before the settings are loaded, else see [`AuthError`].
    pub fn authenticate(
        &self,
        peer: Option<&[CertificateDer<'_>]>,
        headers: &HeaderMap,
    ) -> Result<ProxiedUser, AuthError> {
        let front_proxy = self.current.read().ok().and_then(|f| f.clone());
        match front_proxy {
            None => Err(AuthError::NotConfigured),
            Some(front_proxy) => front_proxy.authenticate(peer, headers, UnixTime::now()),
        }
    }
}

/// The other replicas, and the certificate this one presents to them and expects of them.
#[derive(Debug)]
struct Replicas {
    source: Arc<dyn PeerSource>,
    tls: Arc<CertReloader>,
}

/// The API as served on the webhook port: the current front-proxy settings, this replica's
/// windows, and the other replicas to ask for theirs.
#[derive(Debug)]
pub struct MetricsApi {
    front_proxy: Arc<FrontProxySettings>,
    telemetry: Arc<Telemetry>,
    /// The index's view that resolves workloads, Services and splits into Pods.
    workloads: tokio::sync::watch::Receiver<Arc<crate::index::Workloads>>,
    /// What the control plane compiled for each proxy, which `edges` names identities with.
    identities: SharedPeers,
    /// `None`: this replica's windows are the whole mesh's (one replica, tests).
    replicas: Option<Replicas>,
}

impl MetricsApi {
    /// Serves `telemetry`, resolving objects through `workloads` and naming identities with
    /// `identities`, to the front proxy of `front_proxy`; refuses every request until those
    /// settings are loaded. Answers from this replica's windows alone until
    /// [`MetricsApi::with_replicas`].
    pub fn new(
        front_proxy: Arc<FrontProxySettings>,
        telemetry: Arc<Telemetry>,
        workloads: tokio::sync::watch::Receiver<Arc<crate::index::Workloads>>,
        identities: SharedPeers,
    ) -> Self {
        MetricsApi {
            front_proxy,
            telemetry,
            workloads,
            identities,
            replicas: None,
        }
    }

    /// Merges the windows of the replicas `source` finds into every answer, reaching them with
    /// `tls`, the webhook's certificate (see [`super::replica`]); and serves
    /// [`REPLICA_METRICS_PATH`] to them.
    pub fn with_replicas(mut self, source: Arc<dyn PeerSource>, tls: Arc<CertReloader>) -> Self {
        self.replicas = Some(Replicas { source, tls });
        self
    }

    /// Answers one request to [`is_metrics_path`]: the replica path to another replica only,
    /// the API to the front proxy only (a `Status` of 401 or 403 otherwise), GET only (405),
    /// over every replica's windows merged.
    pub async fn respond(
        &self,
        get: bool,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        peer: Option<&[CertificateDer<'_>]>,
    ) -> Response<Full<Bytes>> {
        if path == REPLICA_METRICS_PATH {
            return self.respond_replica(get, query, peer);
        }
        if let Err(error) = self.front_proxy.authenticate(peer, headers) {
            tracing::debug!(%error, path, "traffic metrics request refused");
            return status_response(error.status(), &error.to_status());
        }
        if !get {
            let status = api_status::failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "the Traffic Metrics API is read-only: get and list",
            );
            return status_response(StatusCode::METHOD_NOT_ALLOWED, &status);
        }
        let request = match Request::parse(path, query) {
            Ok(request) => request,
            Err(error) => return super::admin::traffic_metrics_response(Err(error)),
        };
        let (data, notes) = match request.window() {
            Some(window) => self.gather(window, request.proxies()).await,
            None => (Snapshot::empty(Duration::ZERO), Vec::new()),
        };
        let workloads = self.workloads.borrow().clone();
        let identities = self.identities.get();
        let answered = crate::traffic_metrics::answer(
            &data,
            &workloads,
            &identities,
            &request,
            &super::admin::timestamp(),
        )
        .map(|mut answer| {
            mark_partial(&mut answer, &notes);
            answer
        });
        super::admin::traffic_metrics_response(answered)
    }

    /// This replica's series over `window` of `proxies`, merged with every other serving
    /// replica's (asked at once, each within [`PEER_METRICS_TIMEOUT`]); and a note per replica
    /// that did not answer (logged too), for [`PARTIAL_ANNOTATION`](crate::traffic_metrics::PARTIAL_ANNOTATION).
    async fn gather(&self, window: Duration, proxies: Proxies<'_>) -> (Snapshot, Vec<String>) {
        let mut data = self.telemetry.snapshot(window, |p| proxies.contains(p));
        let mut notes = Vec::new();
        let Some(replicas) = &self.replicas else {
            return (data, notes);
        };
        let peers = match replicas.source.peers().await {
            Ok(peers) => peers,
            Err(error) => {
                tracing::warn!(%error, "traffic metrics: finding the other replicas");
                notes.push(format!("the other replicas could not be listed: {error}"));
                return (data, notes);
            }
        };
        if peers.is_empty() {
            return (data, notes);
        }
        let config = match replica_client_config(&replicas.tls) {
            Ok(config) => config,
            Err(error) => {
                tracing::warn!(%error, "traffic metrics: no tls configuration to reach other replicas");
                notes.push(format!("the other replicas could not be asked: {error}"));
                return (data, notes);
            }
        };
        let path = replica_query(data.window(), proxies);
        let asks = peers.into_iter().map(|peer| {
            let (config, path) = (Arc::clone(&config), path.clone());
            async move {
                let answer =
                    tokio::time::timeout(PEER_METRICS_TIMEOUT, peer_snapshot(&peer, config, &path))
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!("no answer within {PEER_METRICS_TIMEOUT:?}"))
                        });
                (peer, answer)
            }
        });
        for (peer, answer) in futures_util::future::join_all(asks).await {
            let merged = answer.and_then(|theirs| data.merge(theirs).map_err(|e| e.to_string()));
            if let Err(why) = merged {
                tracing::warn!(peer = %peer.name, addr = %peer.addr, %why, "traffic metrics: answering without a replica");
                notes.push(format!("replica {} did not answer: {why}", peer.name));
            }
        }
        (data, notes)
    }

    /// [`REPLICA_METRICS_PATH`]: this replica's own series, to another replica only.
    fn respond_replica(
        &self,
        get: bool,
        query: Option<&str>,
        peer: Option<&[CertificateDer<'_>]>,
    ) -> Response<Full<Bytes>> {
        let failure = |code: StatusCode, message: &str| {
            status_response(code, &api_status::failure(code, message))
        };
        let Some(replicas) = &self.replicas else {
            return failure(StatusCode::NOT_FOUND, "not served");
        };
        if let Err(error) = same_key(peer, &replicas.tls.current()) {
            tracing::debug!(%error, "replica metrics request refused");
            return failure(StatusCode::UNAUTHORIZED, &error.to_string());
        }
        if !get {
            return failure(StatusCode::METHOD_NOT_ALLOWED, "GET only");
        }
        let (window, namespace) = match ReplicaQuery::parse(query) {
            Ok(q) => (q.window, q.namespace),
            Err(message) => return failure(StatusCode::BAD_REQUEST, &message),
        };
        let proxies = match &namespace {
            Some(ns) => Proxies::Namespace(ns),
            None => Proxies::All,
        };
        let data = self.telemetry.snapshot(window, |p| proxies.contains(p));
        match data.to_json(MAX_REPLICA_METRICS_BYTES) {
            Ok(body) => {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(error) => {
                tracing::warn!(%error, "replica metrics request");
                failure(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string())
            }
        }
    }
}

/// What [`REPLICA_METRICS_PATH`] is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaQuery {
    pub window: Duration,
    pub namespace: Option<String>,
}

impl ReplicaQuery {
    /// Reads `t=<duration>` (required, up to [`MAX_WINDOW`](crate::traffic_metrics::MAX_WINDOW))
    /// and `namespace=<ns>` (percent-encoded).
    ///
    /// # Errors
    ///
    /// No `t`, or one that is not a duration in (0, 10m]; naming the parameter.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut window = None;
        let mut namespace = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("t", t)) => {
                    window = Some(
                        crate::traffic_metrics::go_duration(t)
                            .filter(|d| !d.is_zero() && *d <= crate::traffic_metrics::MAX_WINDOW)
                            .ok_or_else(|| format!("t={t}: a duration up to 10m"))?,
                    );
                }
                Some(("namespace", ns)) => {
                    let ns = percent_encoding::percent_decode_str(ns)
                        .decode_utf8()
                        .map_err(|e| format!("namespace={ns}: {e}"))?;
                    namespace = Some(ns.into_owned());
                }
                _ => {}
            }
        }
        Ok(ReplicaQuery {
            window: window.ok_or("t: required")?,
            namespace,
        })
    }
}

/// The path and query that asks another replica for its series over `window` of `proxies`.
pub fn replica_query(window: Duration, proxies: Proxies<'_>) -> String {
    let t = format!("t={}ms", window.as_millis());
    match proxies {
        Proxies::All => format!("{REPLICA_METRICS_PATH}?{t}"),
        Proxies::Namespace(ns) => format!(
            "{REPLICA_METRICS_PATH}?{t}&namespace={}",
            percent_encoding::utf8_percent_encode(ns, percent_encoding::NON_ALPHANUMERIC)
        ),
    }
}

/// One peer's series: its answer to `path`, read up to [`MAX_REPLICA_METRICS_BYTES`].
async fn peer_snapshot(
    peer: &Peer,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<Snapshot, String> {
    let (response, _connection) = super::replica::get(peer, config, path).await?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_REPLICA_METRICS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(format!("answered {status}: {message}"));
    }
    Snapshot::from_json(&body).map_err(|e| e.to_string())
}

/// A JSON answer (a Kubernetes `Status` or an object) with `status`.
pub fn status_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(body).unwrap_or_default(),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Asks every client for a certificate and checks only that it holds the certificate's key:
/// [`FrontProxy::authenticate`] checks the chain against the CA current at each request. A
/// client without one (the API server calling the conversion and injection webhooks) is
/// accepted; the metrics API then answers it 401.
#[derive(Debug)]
pub struct RequestClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl RequestClientCert {
    pub fn new(provider: &CryptoProvider) -> Self {
        RequestClientCert {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Checked per request, against the CA of that moment (see the type's docs).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// === the cluster side ===

/// Reads the front-proxy ConfigMap now and every [`FRONT_PROXY_REFRESH`] until `stop` changes;
/// a read that fails keeps the settings in use.
pub async fn refresh_front_proxy(
    client: Client,
    api: Arc<FrontProxySettings>,
    mut stop: watch::Receiver<bool>,
) {
    let maps: Api<ConfigMap> = Api::namespaced(client, AUTH_CONFIG_MAP.0);
    loop {
        match maps.get(AUTH_CONFIG_MAP.1).await {
            Ok(map) => match FrontProxy::from_config_map(&map.data.unwrap_or_default()) {
                Ok(front_proxy) => {
                    if !api.ready() {
                        tracing::info!("aggregated apis: front-proxy settings loaded");
                    }
                    api.set(front_proxy);
                }
                Err(error) => tracing::warn!(%error, "aggregated apis: front-proxy settings"),
            },
            Err(error) => tracing::warn!(
                %error,
                "aggregated apis: reading configmap {}/{}",
                AUTH_CONFIG_MAP.0,
                AUTH_CONFIG_MAP.1
            ),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(FRONT_PROXY_REFRESH) => {}
        }
    }
}

/// The APIService's type, which k8s-openapi does not carry.
fn api_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
        "apiservices",
    )
}

/// Whether an operator Pod serves: it is Ready and not being deleted.
pub fn serving(pod: &Pod) -> bool {
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready && pod.metadata.deletion_timestamp.is_none()
}

/// Whether `me` is the last operator Pod serving: no other Pod of `pods` is [`serving`].
pub fn last_serving(pods: &[Pod], me: &str) -> bool {
    !pods
        .iter()
        .any(|pod| pod.metadata.name.as_deref().unwrap_or_default() != me && serving(pod))
}

/// Keeps the APIServices registered while this replica serves: waits until the front-proxy
/// settings are loaded, applies every one of `objects` then and every [`APPLY_INTERVAL`]; when
/// `stop` changes, deletes them if this is the [`last_serving`] replica (see the module docs).
pub async fn register(
    client: Client,
    namespace: String,
    me: String,
    objects: Vec<Value>,
    front_proxy: Arc<FrontProxySettings>,
    mut stop: watch::Receiver<bool>,
) {
    let services: Api<DynamicObject> = Api::all_with(client.clone(), &api_service_resource());
    let named: Vec<(String, Value)> = objects
        .into_iter()
        .map(|o| {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (name, o)
        })
        .collect();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    // Each APIService applied once at least.
    let mut applied = vec![false; named.len()];
    loop {
        if front_proxy.ready() {
            for ((name, object), applied) in named.iter().zip(applied.iter_mut()) {
                match services.patch(name, &params, &Patch::Apply(object)).await {
                    Ok(_) if !*applied => {
                        tracing::info!(apiservice = %name, "aggregated api registered");
                        *applied = true;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, apiservice = %name, "applying the apiservice");
                    }
                }
            }
        }
        // Quicker until the first apply of each, so the APIs are available soon after the start.
        let wait = if applied.iter().all(|a| *a) {
            APPLY_INTERVAL
        } else {
            Duration::from_secs(2)
        };
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    if !applied.iter().any(|a| *a) {
        return;
    }
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let listed = pods
        .list(&ListParams::default().labels(&crate::install::selector()))
        .await;
    match listed {
        Ok(list) if last_serving(&list.items, &me) => {
            for (name, _) in &named {
                match services.delete(name, &DeleteParams::default()).await {
                    Ok(_) => tracing::info!(
                        apiservice = %name,
                        "last serving replica: aggregated api unregistered, so namespace deletion does not wait for it"
                    ),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(error) => {
                        tracing::warn!(%error, apiservice = %name, "deleting the apiservice");
                    }
                }
            }
        }
        Ok(_) => tracing::info!("another replica serves: aggregated apis left registered"),
        Err(error) => {
            tracing::warn!(%error, "listing the operator's pods; apiservices left registered");
        }
    }
}
