//! The operator's webhook server: the CRD conversion webhook, which converts SMI objects between
//! served versions for the API server, and the sidecar injector's mutating admission webhook.
//!
//! ```text
//!  API server ─POST /convert (ConversionReview)─▶ serve ─▶ convert_review ─▶ ConversionReview
//!            ─POST /inject (AdmissionReview)────▶   │   ─▶ inject::server::Injector ─▶ AdmissionReview
//!  front proxy ─GET /apis/metrics.smi-spec.io/…─▶   │   ─▶ MetricsApi (whole answers)
//!  front proxy ─GET /apis/tap.switchyard.dev/…──▶   │   ─▶ TapApi (an NDJSON stream)
//!  other replica ─GET /replica/tap?…────────────▶   │   ─▶ TapApi (this replica's Hub only)
//!                                                  │
//!  tls.crt + tls.key (Secret mount) ─▶ CertReloader (re-read when the files change)
//! ```
//!
//! [`convert_review`] is synchronous and never fails: a review it cannot handle gets a `Failure`
//! result that names the object and the field. Each object is read in its own version, taken to
//! the canonical form and written in the desired version; its `metadata` is copied through
//! untouched, because the API server rejects a conversion that changes anything in it but labels
//! and annotations.

use std::{
    convert::Infallible,
    fmt, fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier, danger::ClientCertVerifier},
    sign::CertifiedKey,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};
use switchyard_crds::{Kind, object::VersionedObject};
use tokio::{
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;

use crate::{
    controller::{
        metrics_api::{self, MetricsApi, RequestClientCert},
        tap_api::{self, TapApi},
    },
    inject::{admission::INJECT_PATH, server::Injector},
    tap::stream::Body,
};

#[cfg(test)]
mod tests;

/// The path the CRDs' `clientConfig` names.
pub const CONVERT_PATH: &str = "/convert";
/// Liveness of the webhook server itself: `GET` answers `200 ok`.
pub const HEALTH_PATH: &str = "/healthz";
/// Largest request body accepted: 16 MiB. The API server sends whole lists of objects (a
/// `kubectl get` of many objects stored in another version), so this is generous; an
/// admission review holds one Pod, far below it.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The `ConversionReview` API version this webhook speaks (the only one the CRDs list).
pub const REVIEW_API_VERSION: &str = "apiextensions.k8s.io/v1";
/// The serving certificate file in the certificate directory (PEM, leaf first).
pub const CERT_FILE: &str = "tls.crt";
/// The private key file in the certificate directory (PEM, PKCS#8, SEC1 or PKCS#1).
pub const KEY_FILE: &str = "tls.key";
/// How often the certificate files are checked for a change: at most every 10 s, on a handshake.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// A client gets this long to finish the TLS handshake: 10 s.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown, open connections get this long to finish their requests: 5 s.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// A request's headers must arrive within this of the connection's start or of the previous
/// response (HTTP/1.1): 10 s.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request waits at most this for its share of [`BODY_BUDGET_BYTES`] and then for its whole
/// body: 10 s (the API server's default webhook timeout). A slower body gets 408.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Request body bytes held at once by all requests together, while read, parsed and answered:
/// 32 MiB. Each request reserves its `Content-Length` (or [`MAX_BODY_BYTES`] without one)
/// before it reads, so the webhook's memory stays near twice this whatever is sent to it, and
/// reviews beyond it wait their turn instead of all being parsed at once.
pub const BODY_BUDGET_BYTES: usize = 32 * 1024 * 1024;
/// The budget's unit: permits are KiB.
const BUDGET_UNIT: usize = 1024;
/// Open connections at once; beyond it new ones are closed at once: 256. The API server holds a
/// few (HTTP/2), so only a flood reaches this.
pub const MAX_CONNECTIONS: usize = 256;

/// Why one conversion review failed. The message is what the API server reports to the client
/// (`kubectl get` prints it), so it names the object and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The review itself is malformed.
    #[error("conversion review: {field}: {reason}")]
    Review { field: &'static str, reason: String },
    /// One object could not be read or converted. `object` is `kind namespace/name`.
    #[error("{object}: {field}: {reason}")]
    Object {
        object: String,
        field: String,
        reason: String,
    },
}

/// Why the certificate could not be loaded, or the server not run.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    /// rustls rejected the pair, e.g. the key does not belong to the certificate.
    #[error("{} and {}: {source}", cert.display(), key.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("tls configuration: {0}")]
    Tls(#[source] rustls::Error),
    #[error("webhook listener: {0}")]
    Listener(#[source] io::Error),
}

// === convert_review ===

/// Answers a serialized `ConversionReview` (`apiextensions.k8s.io/v1`) with the serialized
/// answer: `response.uid` echoes the request, and `result.status` is `Success` with every object
/// in `desiredAPIVersion`, or `Failure` with a message naming each object that could not be
/// converted (then `convertedObjects` is empty). Fails only when `body` is not JSON.
///
/// The objects stay raw JSON until each is converted, one at a time, and are written back raw:
/// a review costs about twice its own size, where a parsed `Value` tree of the whole review cost
/// 20–50× (a 14 MB review once took the operator from 30 MB to a 741 MB peak).
pub fn convert_review(body: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    // JSON of another shape (`null`, a `request` that is not an object) is a review without a
    // request; only a body that is not JSON at all is an error.
    let request = match serde_json::from_slice::<ReviewIn<'_>>(body) {
        Ok(review) => review.request,
        Err(e) if e.is_data() => None,
        Err(e) => return Err(e),
    };
    let uid = request
        .as_ref()
        .and_then(|r| r.uid.as_ref())
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (converted_objects, result) = match convert_request(request.as_ref()) {
        Ok(objects) => (objects, json!({ "status": "Success" })),
        Err(errors) => {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(%uid, %message, "conversion failed");
            (
                Vec::new(),
                json!({ "status": "Failure", "message": message }),
            )
        }
    };
    serde_json::to_vec(&ReviewOut {
        api_version: REVIEW_API_VERSION,
        kind: "ConversionReview",
        response: ResponseOut {
            uid,
            converted_objects,
            result,
        },
    })
}

/// The part of a review that is read before its objects: the objects stay unparsed.
#[derive(Deserialize)]
struct ReviewIn<'a> {
    #[serde(borrow, default)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
struct RequestIn<'a> {
    #[serde(default)]
    uid: Option<Value>,
    #[serde(rename = "desiredAPIVersion", default)]
    desired_api_version: Option<Value>,
    #[serde(borrow, default)]
    objects: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct ReviewOut<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    uid: &'a str,
    #[serde(rename = "convertedObjects")]
    converted_objects: Vec<Box<RawValue>>,
    result: Value,
}

/// Every object of the review converted, or every reason why not.
fn convert_request(
    request: Option<&RequestIn<'_>>,
) -> Result<Vec<Box<RawValue>>, Vec<ConvertError>> {
    let review_err = |field, reason: &str| {
        vec![ConvertError::Review {
            field,
            reason: reason.to_string(),
        }]
    };
    let Some(request) = request else {
        return Err(review_err("request", "missing"));
    };
    match request.uid.as_ref().and_then(Value::as_str) {
        Some(uid) if !uid.is_empty() => {}
        _ => return Err(review_err("request.uid", "missing")),
    }
    let Some(desired) = request.desired_api_version.as_ref().and_then(Value::as_str) else {
        return Err(review_err("request.desiredAPIVersion", "missing"));
    };
    let Some((desired_group, desired_version)) = desired.split_once('/') else {
        return Err(review_err(
            "request.desiredAPIVersion",
            &format!("{desired:?} is not group/version"),
        ));
    };
    let Some(objects) = request
        .objects
        .and_then(|raw| serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok())
    else {
        return Err(review_err("request.objects", "missing"));
    };

    let mut converted = Vec::with_capacity(objects.len());
    let mut errors = Vec::new();
    for raw in objects {
        // One object's tree at a time; it is dropped as soon as its answer is written.
        let done = serde_json::from_str::<Value>(raw.get())
            .map_err(|e| ConvertError::Review {
                field: "request.objects",
                reason: e.to_string(),
            })
            .and_then(|object| convert_object(&object, desired_group, desired_version));
        match done {
            // Once one has failed the others are only checked, to name every failure.
            Ok(out) if errors.is_empty() => match serde_json::value::to_raw_value(&out) {
                Ok(raw) => converted.push(raw),
                Err(e) => errors.push(ConvertError::Review {
                    field: "request.objects",
                    reason: e.to_string(),
                }),
            },
            Ok(_) => {}
            Err(e) => {
                converted = Vec::new();
                errors.push(e);
            }
        }
    }
    if errors.is_empty() {
        Ok(converted)
    } else {
        Err(errors)
    }
}

/// Converts one object into `group/version`, keeping its `metadata` byte for byte.
fn convert_object(object: &Value, group: &str, version: &str) -> Result<Value, ConvertError> {
    let name = RawName::of(object);
    let fail = |field: &str, reason: String| ConvertError::Object {
        object: name.to_string(),
        field: field.to_string(),
        reason,
    };
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("apiVersion", "missing".into()))?;
    let kind_str = object
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("kind", "missing".into()))?;
    let (from_group, from_version) = api_version.split_once('/').ok_or_else(|| {
        fail(
            "apiVersion",
            format!("{api_version:?} is not group/version"),
        )
    })?;
    let kind = Kind::from_group_kind(from_group, kind_str).ok_or_else(|| {
        fail(
            "kind",
            format!("{kind_str} in {from_group} is not an SMI kind this webhook converts"),
        )
    })?;
    // From here on, name the object as every other Switchyard message does.
    let name = RawName {
        kind: kind.to_string(),
        ..name
    };
    let fail = |field: &str, reason: String| ConvertError::Object {
        object: name.to_string(),
        field: field.to_string(),
        reason,
    };
    if group != from_group {
        return Err(fail(
            "apiVersion",
            format!("cannot convert from group {from_group} to group {group}"),
        ));
    }

    let versioned =
        VersionedObject::from_json(kind, from_version, object.clone()).map_err(|e| match e {
            switchyard_crds::object::ReadError::Field { path, message, .. } => fail(&path, message),
            other => fail("apiVersion", other.to_string()),
        })?;
    let target = versioned
        .into_canonical()
        .to_version(version)
        .map_err(|e| {
            fail(
                &e.field,
                format!("cannot be represented in {version}: {}", e.reason),
            )
        })?;

    let mut out = target.to_json();
    if let Some(map) = out.as_object_mut() {
        map.insert("apiVersion".into(), format!("{group}/{version}").into());
        match object.get("metadata") {
            Some(meta) => {
                map.insert("metadata".into(), meta.clone());
            }
            None => {
                map.remove("metadata");
            }
        }
    }
    Ok(out)
}

/// How a raw object is named in messages, before (or without) knowing its SMI kind.
struct RawName {
    kind: String,
    namespace: String,
    name: String,
}

impl RawName {
    fn of(object: &Value) -> Self {
        let str_at = |ptr: &str| object.pointer(ptr).and_then(Value::as_str);
        RawName {
            kind: str_at("/kind").unwrap_or("object").to_ascii_lowercase(),
            namespace: str_at("/metadata/namespace")
                .unwrap_or(switchyard_crds::DEFAULT_NAMESPACE)
                .to_string(),
            name: str_at("/metadata/name").unwrap_or_default().to_string(),
        }
    }
}

impl fmt::Display for RawName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

// === impl CertReloader ===

/// The webhook's serving certificate, read from `tls.crt` and `tls.key` in a directory and read
/// again when either file changes, so a rotated Secret mount applies without a restart.
///
/// The files are checked on a TLS handshake, at most once per reload interval (default
/// [`DEFAULT_RELOAD_INTERVAL`]), by comparing their modification times and sizes. A new pair that
/// does not load (a half-written rotation, a key that does not match) is logged and the previous
/// pair stays in use.
pub struct CertReloader {
    dir: PathBuf,
    interval: Duration,
    state: Mutex<ReloadState>,
}

struct ReloadState {
    current: Arc<CertifiedKey>,
    stamp: Option<Stamp>,
    checked_at: Instant,
}

/// What identifies one version of the two files: modification time and length of each.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp([(SystemTime, u64); 2]);

impl CertReloader {
    /// Loads `dir/tls.crt` and `dir/tls.key`, checking for changes every
    /// [`DEFAULT_RELOAD_INTERVAL`].
    pub fn load(dir: impl Into<PathBuf>) -> Result<Self, WebhookError> {
        Self::with_interval(dir, DEFAULT_RELOAD_INTERVAL)
    }

    /// Like [`CertReloader::load`], checking for changes at most every `interval` (zero: on every
    /// handshake).
    pub fn with_interval(
        dir: impl Into<PathBuf>,
        interval: Duration,
    ) -> Result<Self, WebhookError> {
        let dir = dir.into();
        let stamp = stamp(&dir);
        let current = Arc::new(load_pair(&dir)?);
        Ok(CertReloader {
            dir,
            interval,
            state: Mutex::new(ReloadState {
                current,
                stamp,
                checked_at: Instant::now(),
            }),
        })
    }

    /// The directory the files are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pair in use, first re-reading the files if the interval has passed and they changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked_at.elapsed() < self.interval {
            return Arc::clone(&state.current);
        }
        state.checked_at = Instant::now();
        let stamp = stamp(&self.dir);
        if stamp.is_some() && stamp != state.stamp {
            // Remember the stamp even when loading fails, so a broken pair is reported once
            // rather than on every handshake; the next change to either file tries again.
            state.stamp = stamp;
            match load_pair(&self.dir) {
                Ok(pair) => {
                    tracing::info!(dir = %self.dir.display(), "webhook certificate reloaded");
                    state.current = Arc::new(pair);
                }
                Err(error) => {
                    tracing::warn!(%error, "new webhook certificate not loaded; keeping the previous one");
                }
            }
        }
        Arc::clone(&state.current)
    }

    /// A rustls server configuration (ring, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`) whose
    /// certificate comes from this reloader.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, WebhookError> {
        self.server_config_with(WebPkiClientVerifier::no_client_auth())
    }

    /// [`CertReloader::server_config`] with `clients` deciding what clients present.
    pub fn server_config_with(
        self: &Arc<Self>,
        clients: Arc<dyn ClientCertVerifier>,
    ) -> Result<Arc<ServerConfig>, WebhookError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(WebhookError::Tls)?
            .with_client_cert_verifier(clients)
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertReloader")
            .field("dir", &self.dir)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// The stamp of both files, or `None` when either cannot be read (e.g. mid-rotation).
fn stamp(dir: &Path) -> Option<Stamp> {
    let one = |name| {
        // `metadata` follows symlinks, so a Secret mount's `..data` swap shows as a change.
        let meta = fs::metadata(dir.join(name)).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    Some(Stamp([one(CERT_FILE)?, one(KEY_FILE)?]))
}

fn load_pair(dir: &Path) -> Result<CertifiedKey, WebhookError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let read = |path: &Path| {
        fs::read(path).map_err(|source| WebhookError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = zeroize::Zeroizing::new(read(&key_path)?);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WebhookError::Pem {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(WebhookError::Pem {
            path: cert_path,
            reason: "no PEM certificate found (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| WebhookError::Pem {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider()).map_err(
        |source| WebhookError::Pair {
            cert: cert_path,
            key: key_path,
            source,
        },
    )
}

// === serve ===

/// The aggregated APIs served on the webhook port (see [`metrics_api`] and [`tap_api`]).
#[derive(Clone, Debug, Default)]
pub struct Apis {
    /// The Traffic Metrics API, under `/apis/metrics.smi-spec.io/`, and
    /// [`metrics_api::REPLICA_METRICS_PATH`].
    pub metrics: Option<Arc<MetricsApi>>,
    /// The tap API, under `/apis/tap.switchyard.dev/`, and [`tap_api::REPLICA_TAP_PATH`].
    pub tap: Option<Arc<TapApi>>,
}

/// Serves the webhooks over HTTPS (HTTP/1.1 and HTTP/2) on `listener` until `shutdown`
/// completes; then stops accepting, lets open connections finish for up to 5 s, and returns.
/// Without an `injector`, `/inject` answers 404. With an API of `apis`, it is served under its
/// group's path to the API server's front proxy, and clients are asked for a certificate (not
/// required: see [`metrics_api`]); without it those paths answer 404. A tap's answer streams
/// for as long as the client reads it.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<CertReloader>,
    injector: Option<Arc<Injector>>,
    apis: Apis,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    let config = match apis.metrics.is_some() || apis.tap.is_some() {
        true => tls.server_config_with(Arc::new(RequestClientCert::new(
            &rustls::crypto::ring::default_provider(),
        )))?,
        false => tls.server_config()?,
    };
    let acceptor = TlsAcceptor::from(config);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, injector = injector.is_some(), "webhook listening");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let budget = Arc::new(Semaphore::new(BODY_BUDGET_BYTES / BUDGET_UNIT));
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = open.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, limit = MAX_CONNECTIONS, "webhook connection refused: too many open");
                        continue;
                    };
                    conns.spawn(connection(
                        acceptor.clone(),
                        stream,
                        peer,
                        Shared { injector: injector.clone(), apis: apis.clone(), budget: budget.clone(), peer: None },
                        stop_rx.clone(),
                        slot,
                    ));
                }
                Err(error) => {
                    // Usually out of file descriptors; pausing keeps this from spinning.
                    tracing::warn!(%error, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(open = conns.len(), "webhook connections cut at shutdown");
        conns.shutdown().await;
    }
    Ok(())
}

/// What every request of the server shares.
#[derive(Clone)]
struct Shared {
    injector: Option<Arc<Injector>>,
    apis: Apis,
    /// The client's certificate chain (leaf first), once its handshake proved it holds the key.
    peer: Option<Arc<[CertificateDer<'static>]>>,
    /// [`BODY_BUDGET_BYTES`], in [`BUDGET_UNIT`]s.
    budget: Arc<Semaphore>,
}

async fn connection(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
    // Held while the connection is open.
    _slot: OwnedSemaphorePermit,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "webhook tls handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "webhook tls handshake timed out");
            return;
        }
    };
    let shared = Shared {
        peer: tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect()),
        ..shared
    };
    let service = hyper::service::service_fn(move |request| handle(request, shared.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "webhook connection ended with an error");
    }
}

async fn handle(request: Request<Incoming>, shared: Shared) -> Result<Response<Body>, Infallible> {
    let Shared {
        injector,
        apis,
        budget,
        peer,
    } = shared;
    // GETs without a body: nothing to read, so no share of the budget.
    if let Some(metrics) = apis.metrics.as_deref()
        && metrics_api::is_metrics_path(request.uri().path())
    {
        return Ok(metrics
            .respond(
                request.method() == Method::GET,
                request.uri().path(),
                request.uri().query(),
                request.headers(),
                peer.as_deref(),
            )
            .await
            .map(BodyExt::boxed_unsync));
    }
    if let Some(tap) = apis.tap.as_deref()
        && tap_api::is_tap_path(request.uri().path())
    {
        return Ok(tap
            .respond(
                request.method(),
                request.uri().path(),
                request.uri().query(),
                request.headers(),
                peer.as_deref(),
            )
            .await);
    }
    handle_webhook(request, injector, budget)
        .await
        .map(|r| r.map(BodyExt::boxed_unsync))
}

/// The conversion and injection webhooks and the health check: whole answers.
async fn handle_webhook(
    request: Request<Incoming>,
    injector: Option<Arc<Injector>>,
    budget: Arc<Semaphore>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = match Route::of(request.method(), request.uri().path()) {
        Route::Inject if injector.is_none() => Route::NotFound,
        route => route,
    };
    if !matches!(route, Route::Convert | Route::Inject) {
        return Ok(route.respond(None));
    }
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {MAX_BODY_BYTES} bytes\n"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Ok(too_large());
    }
    // Held until the answer is written: the body, its parse and the answer all count.
    let units = declared
        .unwrap_or(MAX_BODY_BYTES)
        .div_ceil(BUDGET_UNIT)
        .max(1);
    let read = async {
        let permit = budget
            .acquire_many_owned(u32::try_from(units).unwrap_or(u32::MAX))
            .await;
        let body = Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await;
        (permit, body)
    };
    let (_permit, body) = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok((Ok(permit), Ok(collected))) => (permit, collected.to_bytes()),
        Ok((_, Err(error))) if error.is::<http_body_util::LengthLimitError>() => {
            return Ok(too_large());
        }
        Ok((_, Err(error))) => {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                format!("reading request body: {error}\n"),
            ));
        }
        // The semaphore is never closed.
        Ok((Err(_), _)) => {
            return Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down\n".into(),
            ));
        }
        Err(_) => {
            return Ok(text(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not read within {BODY_TIMEOUT:?}\n"),
            ));
        }
    };
    match (route, injector) {
        (Route::Inject, Some(injector)) => Ok(match injector.review(&body).await {
            Ok(answer) => json_response(answer),
            // The API server then applies the webhook's failurePolicy.
            Err(error) => {
                tracing::warn!(%error, "injection review failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n"))
            }
        }),
        _ => Ok(route.respond(Some(&body))),
    }
}

/// What a request asks for, by method and path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Convert,
    Inject,
    Health,
    MethodNotAllowed(&'static str),
    NotFound,
}

impl Route {
    fn of(method: &Method, path: &str) -> Self {
        match (path, method) {
            (CONVERT_PATH, &Method::POST) => Route::Convert,
            (INJECT_PATH, &Method::POST) => Route::Inject,
            (HEALTH_PATH, &Method::GET | &Method::HEAD) => Route::Health,
            (CONVERT_PATH | INJECT_PATH, _) => Route::MethodNotAllowed("POST"),
            (HEALTH_PATH, _) => Route::MethodNotAllowed("GET, HEAD"),
            _ => Route::NotFound,
        }
    }

    /// The response; `body` is the request body, read only for [`Route::Convert`].
    /// [`Route::Inject`] is answered by the injector, in `handle`.
    fn respond(self, body: Option<&[u8]>) -> Response<Full<Bytes>> {
        match self {
            Route::Convert => match convert_review(body.unwrap_or_default()) {
                Ok(answer) => json_response(answer),
                Err(error) => text(
                    StatusCode::BAD_REQUEST,
                    format!("request body is not JSON: {error}\n"),
                ),
            },
            Route::Inject => text(StatusCode::NOT_FOUND, "not found\n".into()),
            Route::Health => text(StatusCode::OK, "ok".into()),
            Route::MethodNotAllowed(allow) => {
                let mut response = text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed\n".into(),
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static(allow));
                response
            }
            Route::NotFound => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }
}

fn json_response(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
