//! Tests of the front-proxy check and of the API served over TLS on the webhook server.

use std::{collections::BTreeMap, fs, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::{
    api::core::v1::{Pod, PodCondition, PodStatus},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use tokio::net::TcpListener;

use super::*;
use crate::{
    controller::replica::tests::FixedPeers,
    webhook::{self, CertReloader},
};
use switchyard_adapters::model::ProxyId;

pub(crate) struct Ca {
    pub(crate) pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A client certificate with common name `cn` and its key (PEM).
    pub(crate) fn client(&self, cn: &str) -> (String, String) {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A serving certificate for 127.0.0.1 written as tls.crt / tls.key into `dir`.
    pub(crate) fn write_serving(&self, dir: &std::path::Path) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        fs::write(dir.join(webhook::CERT_FILE), cert.pem()).unwrap();
        fs::write(dir.join(webhook::KEY_FILE), key.serialize_pem()).unwrap();
    }
}

/// The ConfigMap's data as kube-apiserver writes it (kubeadm's names).
pub(crate) fn config_map(ca_pem: &str) -> BTreeMap<String, String> {
    BTreeMap::from(
        [
            ("requestheader-client-ca-file", ca_pem),
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            (
                "requestheader-extra-headers-prefix",
                r#"["X-Remote-Extra-"]"#,
            ),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

pub(crate) fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

pub(crate) fn user_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-remote-user", HeaderValue::from_static("alice"));
    headers.append("x-remote-group", HeaderValue::from_static("devs"));
    headers.append(
        "x-remote-group",
        HeaderValue::from_static("system:authenticated"),
    );
    headers
}

#[test]
fn the_front_proxy_certificate_with_a_user_is_accepted() {
    let ca = Ca::new("front-proxy-ca");
    let front = FrontProxy::from_config_map(&config_map(&ca.pem)).unwrap();
    let (cert, _) = ca.client("front-proxy-client");
    let user = front
        .authenticate(Some(&chain(&cert)), &user_headers(), UnixTime::now())
        .unwrap();
    assert_eq!(
        user,
        ProxiedUser {
            name: "alice".into(),
            uid: None,
            groups: vec!["devs".into(), "system:authenticated".into()],
            extra: BTreeMap::new(),
        }
    );
    // Extras: the key after the prefix, percent-decoded and lower-cased, every value kept.
    let mut headers = user_headers();
    headers.append("x-remote-extra-scopes", HeaderValue::from_static("a"));
    headers.append("x-remote-extra-scopes", HeaderValue::from_static("b"));
    headers.append(
        "x-remote-extra-example.com%2fteam",
        HeaderValue::from_static("mesh"),
    );
    let user = front
        .authenticate(Some(&chain(&cert)), &headers, UnixTime::now())
        .unwrap();
    assert_eq!(
        user.extra,
        BTreeMap::from([
            ("example.com/team".to_owned(), vec!["mesh".to_owned()]),
            ("scopes".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
        ])
    );
}

#[test]
fn the_uid_is_read_only_from_the_headers_the_api_server_names() {
    let ca = Ca::new("front-proxy-ca");
    let (cert, _) = ca.client("front-proxy-client");
    let mut headers = user_headers();
    headers.insert("x-remote-uid", HeaderValue::from_static("4d0ab7e2"));
    // An API server before RemoteRequestHeaderUID names no UID header and may pass a client's
    // own `X-Remote-Uid` through: not read, as kube-apiserver would not read it.
    let before = FrontProxy::from_config_map(&config_map(&ca.pem)).unwrap();
    let user = before
        .authenticate(Some(&chain(&cert)), &headers, UnixTime::now())
        .unwrap();
    assert_eq!(user.uid, None);
    let mut data = config_map(&ca.pem);
    data.insert(
        "requestheader-uid-headers".into(),
        r#"["X-Remote-Uid"]"#.into(),
    );
    let with_uid = FrontProxy::from_config_map(&data).unwrap();
    let user = with_uid
        .authenticate(Some(&chain(&cert)), &headers, UnixTime::now())
        .unwrap();
    assert_eq!(user.uid.as_deref(), Some("4d0ab7e2"));
    assert_eq!(user.name, "alice");
    // A user without a UID (a client certificate's) has none.
    let user = with_uid
        .authenticate(Some(&chain(&cert)), &user_headers(), UnixTime::now())
        .unwrap();
    assert_eq!(user.uid, None);
    // The key is checked like the others.
    data.insert("requestheader-uid-headers".into(), "X-Remote-Uid".into());
    let err = FrontProxy::from_config_map(&data).unwrap_err();
    assert!(
        err.to_string().contains("requestheader-uid-headers"),
        "{err}"
    );
}

#[test]
fn no_client_certificate_is_refused_with_401() {
    let ca = Ca::new("front-proxy-ca");
    let front = FrontProxy::from_config_map(&config_map(&ca.pem)).unwrap();
    for peer in [None, Some(&[][..])] {
        let err = front
            .authenticate(peer, &user_headers(), UnixTime::now())
            .unwrap_err();
        assert_eq!(err, AuthError::NoClientCertificate);
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(err.to_status()["code"], 401);
    }
}

#[test]
fn a_certificate_from_another_ca_is_refused_with_401() {
    let ca = Ca::new("front-proxy-ca");
    // The same name, from the cluster CA (which signs users' certificates): not the aggregator.
    let other = Ca::new("kubernetes");
    let front = FrontProxy::from_config_map(&config_map(&ca.pem)).unwrap();
    let (cert, _) = other.client("front-proxy-client");
    let err = front
        .authenticate(Some(&chain(&cert)), &user_headers(), UnixTime::now())
        .unwrap_err();
    assert!(matches!(err, AuthError::Untrusted { .. }), "{err}");
    assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn a_name_not_allowed_is_refused_with_403_and_an_empty_list_allows_any_name() {
    let ca = Ca::new("front-proxy-ca");
    let (cert, _) = ca.client("someone-else");
    let front = FrontProxy::from_config_map(&config_map(&ca.pem)).unwrap();
    let err = front
        .authenticate(Some(&chain(&cert)), &user_headers(), UnixTime::now())
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::NameNotAllowed {
            name: "someone-else".into()
        }
    );
    assert_eq!(err.status(), StatusCode::FORBIDDEN);
    assert_eq!(err.to_status()["reason"], "Forbidden");

    // kube-apiserver reads an empty --requestheader-allowed-names as "any name the CA signed".
    let mut data = config_map(&ca.pem);
    data.insert("requestheader-allowed-names".into(), "[]".into());
    let any = FrontProxy::from_config_map(&data).unwrap();
    assert!(
        any.authenticate(Some(&chain(&cert)), &user_headers(), UnixTime::now())
            .is_ok()
    );
}

#[test]
fn a_request_without_the_user_header_is_refused() {
    let ca = Ca::new("front-proxy-ca");
    let front = FrontProxy::from_config_map(&config_map(&ca.pem)).unwrap();
    let (cert, _) = ca.client("front-proxy-client");
    let err = front
        .authenticate(Some(&chain(&cert)), &HeaderMap::new(), UnixTime::now())
        .unwrap_err();
    assert!(matches!(err, AuthError::NoUser { .. }), "{err}");
    assert!(err.to_string().contains("x-remote-user"), "{err}");
}

#[test]
fn an_expired_front_proxy_certificate_is_refused() {
    let ca = Ca::new("front-proxy-ca");
    let front = FrontProxy::from_config_map(&config_map(&ca.pem)).unwrap();
    let (cert, _) = ca.client("front-proxy-client");
    // rcgen's default validity ends in 4096.
    let later = UnixTime::since_unix_epoch(Duration::from_secs(4_200_000_000 * 20));
    let err = front
        .authenticate(Some(&chain(&cert)), &user_headers(), later)
        .unwrap_err();
    assert!(matches!(err, AuthError::Untrusted { .. }), "{err}");
}

#[test]
fn the_config_map_is_read_naming_the_key_at_fault() {
    assert_eq!(
        FrontProxy::from_config_map(&BTreeMap::new()).unwrap_err(),
        FrontProxyError::NoCa
    );
    let ca = Ca::new("front-proxy-ca");
    let mut data = config_map(&ca.pem);
    data.insert(
        "requestheader-allowed-names".into(),
        "front-proxy-client".into(),
    );
    let err = FrontProxy::from_config_map(&data).unwrap_err().to_string();
    assert!(err.contains("requestheader-allowed-names"), "{err}");
    let mut data = config_map("not pem");
    data.insert("requestheader-client-ca-file".into(), "not pem".into());
    let err = FrontProxy::from_config_map(&data).unwrap_err().to_string();
    assert!(err.contains("requestheader-client-ca-file"), "{err}");
}

#[test]
fn metrics_paths_are_the_group_only() {
    assert!(is_metrics_path("/apis/metrics.smi-spec.io/v1alpha1"));
    assert!(is_metrics_path(
        "/apis/metrics.smi-spec.io/v1alpha1/namespaces/a/pods/b"
    ));
    assert!(is_metrics_path("/apis/metrics.smi-spec.io"));
    assert!(!is_metrics_path("/apis/metrics.smi-spec.iox/v1alpha1"));
    assert!(!is_metrics_path("/convert"));
    assert!(!is_metrics_path("/inject"));
}

pub(crate) fn pod(name: &str, ready: bool, deleting: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            deletion_timestamp: deleting.then(|| Time(k8s_openapi::jiff::Timestamp::now())),
            ..ObjectMeta::default()
        },
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    }
}

#[test]
fn the_last_serving_replica_is_the_one_no_other_ready_pod_outlives() {
    assert!(last_serving(&[pod("a", true, true)], "a"));
    // Scale to zero: every Pod is being deleted when its container gets SIGTERM.
    assert!(last_serving(
        &[pod("a", true, true), pod("b", true, true)],
        "a"
    ));
    // A rolling update or one replica stopping: another serves.
    assert!(!last_serving(
        &[pod("a", true, true), pod("b", true, false)],
        "a"
    ));
    // A replica not Ready yet registers the APIService itself once it serves.
    assert!(last_serving(
        &[pod("a", true, true), pod("b", false, false)],
        "a"
    ));
}

// === over TLS, on the webhook server ===

async fn get(
    addr: std::net::SocketAddr,
    roots: &str,
    client_cert: Option<(String, String)>,
    path: &str,
    headers: &HeaderMap,
) -> (StatusCode, serde_json::Value) {
    let (status, body) = open(addr, roots, client_cert, path, headers).await;
    let body = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, value)
}

/// Opens `GET path` with `client_cert` (PEM cert, key) and the headers; the status and the
/// body, unread.
pub(crate) async fn open(
    addr: std::net::SocketAddr,
    roots: &str,
    client_cert: Option<(String, String)>,
    path: &str,
    headers: &HeaderMap,
) -> (StatusCode, hyper::body::Incoming) {
    let mut store = rustls::RootCertStore::empty();
    for cert in chain(roots) {
        store.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                chain(&cert),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = Request::get(path).header("host", "127.0.0.1");
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    (status, response.into_body())
}

#[tokio::test]
async fn the_webhook_port_serves_the_api_to_the_front_proxy_only() {
    let serving = Ca::new("webhook CA");
    let front_ca = Ca::new("front-proxy-ca");
    let dir = tempfile::tempdir().unwrap();
    serving.write_serving(dir.path());
    let api = Arc::new(MetricsApi::new(
        front_proxy_of(&front_ca),
        Arc::default(),
        tokio::sync::watch::channel(Arc::default()).1,
        SharedPeers::default(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(webhook::serve(
        listener,
        Arc::new(CertReloader::load(dir.path()).unwrap()),
        None,
        webhook::Apis {
            metrics: Some(api),
            tap: None,
        },
        async {
            let _ = stopped.await;
        },
    ));
    let discovery = "/apis/metrics.smi-spec.io/v1alpha1";

    // The aggregator (and its availability check) reads discovery.
    let (status, body) = get(
        addr,
        &serving.pem,
        Some(front_ca.client("front-proxy-client")),
        discovery,
        &user_headers(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "APIResourceList");
    let (status, body) = get(
        addr,
        &serving.pem,
        Some(front_ca.client("front-proxy-client")),
        "/apis/metrics.smi-spec.io/v1alpha1/namespaces/demo/pods/web-0",
        &user_headers(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["kind"], "Status");

    // Anyone else who reaches the Pod, even with the user headers set.
    let (status, body) = get(addr, &serving.pem, None, discovery, &user_headers()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], 401);
    let other = Ca::new("kubernetes");
    let (status, _) = get(
        addr,
        &serving.pem,
        Some(other.client("front-proxy-client")),
        discovery,
        &user_headers(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(
        addr,
        &serving.pem,
        Some(front_ca.client("admin")),
        discovery,
        &user_headers(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The webhooks next to it still take clients without a certificate.
    let (status, _) = get(
        addr,
        &serving.pem,
        None,
        webhook::HEALTH_PATH,
        &HeaderMap::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn without_front_proxy_settings_every_request_is_refused() {
    let api = MetricsApi::new(
        Arc::default(),
        Arc::default(),
        tokio::sync::watch::channel(Arc::default()).1,
        SharedPeers::default(),
    );
    let response = api
        .respond(
            true,
            "/apis/metrics.smi-spec.io/v1alpha1",
            None,
            &user_headers(),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

// === replicas ===

/// One replica: a webhook server with the Traffic Metrics API over its own windows, asking the
/// peers a test sets.
struct Replica {
    addr: std::net::SocketAddr,
    telemetry: Arc<Telemetry>,
    peers: Arc<FixedPeers>,
    _served: Served,
}

/// A webhook server on a loopback port with the serving certificate `tls` and `apis`,
/// stopped when dropped: one operator replica's webhook port, for the aggregated APIs' tests.
pub(crate) struct Served {
    pub(crate) addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Served {
    pub(crate) async fn start(tls: Arc<CertReloader>, apis: webhook::Apis) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(webhook::serve(listener, tls, None, apis, async {
            let _ = stopped.await;
        }));
        Served {
            addr,
            stop: Some(stop),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Front-proxy settings trusting `front_ca`, as read from the API server's ConfigMap.
pub(crate) fn front_proxy_of(front_ca: &Ca) -> Arc<FrontProxySettings> {
    let front_proxy = Arc::new(FrontProxySettings::default());
    front_proxy.set(FrontProxy::from_config_map(&config_map(&front_ca.pem)).unwrap());
    front_proxy
}

impl Replica {
    async fn start(dir: &std::path::Path, front_ca: &Ca) -> Self {
        let telemetry = Arc::new(Telemetry::default());
        let peers = Arc::new(FixedPeers::default());
        let tls = Arc::new(CertReloader::load(dir).unwrap());
        let api = MetricsApi::new(
            front_proxy_of(front_ca),
            telemetry.clone(),
            tokio::sync::watch::channel(Arc::default()).1,
            SharedPeers::default(),
        )
        .with_replicas(peers.clone(), tls.clone());
        let served = Served::start(
            tls,
            webhook::Apis {
                metrics: Some(Arc::new(api)),
                tap: None,
            },
        )
        .await;
        Replica {
            addr: served.addr,
            telemetry,
            peers,
            _served: served,
        }
    }
}

fn served_by(pod: &str, ok: u64, failed: u64) -> (ProxyId, Vec<crate::telemetry::Sample>) {
    use crate::telemetry::{Sample, StatPrefix, StatusClass, Subject, Value};
    let listener = Subject::Listener(StatPrefix::new("inbound_8080"));
    (
        ProxyId {
            namespace: "demo".into(),
            pod: pod.into(),
        },
        vec![
            Sample {
                subject: listener.clone(),
                value: Value::Requests(StatusClass::Success, ok),
            },
            Sample {
                subject: listener,
                value: Value::Requests(StatusClass::ServerError, failed),
            },
        ],
    )
}

fn counts(item: &serde_json::Value) -> (u64, u64) {
    let c = |name: &str| {
        item["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == name)
            .and_then(|m| m["value"].as_str()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}: {item}"))
    };
    (c("success_count"), c("failure_count"))
}

fn peer(name: &str, addr: std::net::SocketAddr) -> Peer {
    Peer {
        name: name.into(),
        addr,
    }
}

const PODS: &str = "/apis/metrics.smi-spec.io/v1alpha1/namespaces/demo/pods";

/// web-0 pushed to replica b, web-1 to replica a: whichever replica the API server asks
/// answers for both, with b's counts exactly, and a Pod that pushed to b only is found
/// through a (no 404 "ask again").
#[tokio::test]
async fn a_replica_answers_with_every_replicas_windows() {
    let serving = Ca::new("webhook CA");
    let front_ca = Ca::new("front-proxy-ca");
    let dir = tempfile::tempdir().unwrap();
    serving.write_serving(dir.path());
    // Both replicas mount the same certificate, as the Deployment's Pods do.
    let a = Replica::start(dir.path(), &front_ca).await;
    let b = Replica::start(dir.path(), &front_ca).await;
    *a.peers.0.lock().unwrap() = vec![peer("b", b.addr)];
    *b.peers.0.lock().unwrap() = vec![peer("a", a.addr)];
    let (web0, samples) = served_by("web-0", 180, 20);
    b.telemetry.record(&web0, &samples);
    let (web1, samples) = served_by("web-1", 7, 0);
    a.telemetry.record(&web1, &samples);
    // Another namespace's proxy is not asked for.
    let (mut other, samples) = served_by("x-0", 1, 0);
    other.namespace = "other".into();
    b.telemetry.record(&other, &samples);

    for replica in [&a, &b] {
        let (status, item) = get(
            replica.addr,
            &serving.pem,
            Some(front_ca.client("front-proxy-client")),
            &format!("{PODS}/web-0?t=1m"),
            &user_headers(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{item}");
        assert_eq!(counts(&item), (180, 20), "{item}");
        assert!(
            item["metadata"]["annotations"][crate::traffic_metrics::PARTIAL_ANNOTATION].is_null(),
            "{item}"
        );
        let (status, list) = get(
            replica.addr,
            &serving.pem,
            Some(front_ca.client("front-proxy-client")),
            &format!("{PODS}?t=1m"),
            &user_headers(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let rows: Vec<(String, (u64, u64))> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["resource"]["name"].as_str().unwrap().to_owned(),
                    counts(i),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("web-0".to_owned(), (180, 20)),
                ("web-1".to_owned(), (7, 0))
            ],
            "{list}"
        );
    }
}

/// A replica that does not answer is left out, and the answer says which and why.
#[tokio::test]
async fn a_replica_that_fails_is_named_in_the_answer() {
    let serving = Ca::new("webhook CA");
    let front_ca = Ca::new("front-proxy-ca");
    let dir = tempfile::tempdir().unwrap();
    serving.write_serving(dir.path());
    let a = Replica::start(dir.path(), &front_ca).await;
    // Nothing listens there.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    // A replica with another certificate: not one of ours.
    let other = tempfile::tempdir().unwrap();
    serving.write_serving(other.path());
    let stranger = Replica::start(other.path(), &front_ca).await;
    *a.peers.0.lock().unwrap() = vec![peer("gone", gone_addr), peer("stranger", stranger.addr)];
    let (web1, samples) = served_by("web-1", 7, 0);
    a.telemetry.record(&web1, &samples);
    let (status, list) = get(
        a.addr,
        &serving.pem,
        Some(front_ca.client("front-proxy-client")),
        &format!("{PODS}?t=1m"),
        &user_headers(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(counts(&list["items"][0]), (7, 0), "{list}");
    let partial = list["metadata"]["annotations"][crate::traffic_metrics::PARTIAL_ANNOTATION]
        .as_str()
        .unwrap_or_else(|| panic!("not marked partial: {list}"));
    assert!(
        partial.starts_with("replica gone did not answer: connecting: ")
            && partial.contains("; replica stranger did not answer: tls: "),
        "{partial}"
    );
}

#[tokio::test]
async fn the_replica_path_serves_only_the_replicas_own_certificate() {
    let serving = Ca::new("webhook CA");
    let front_ca = Ca::new("front-proxy-ca");
    let dir = tempfile::tempdir().unwrap();
    serving.write_serving(dir.path());
    let a = Replica::start(dir.path(), &front_ca).await;
    let (web0, samples) = served_by("web-0", 3, 0);
    a.telemetry.record(&web0, &samples);
    let path = format!("{REPLICA_METRICS_PATH}?t=60000ms&namespace=demo");
    let pair = |dir: &std::path::Path| {
        (
            std::fs::read_to_string(dir.join(webhook::CERT_FILE)).unwrap(),
            std::fs::read_to_string(dir.join(webhook::KEY_FILE)).unwrap(),
        )
    };
    // Another certificate of the same CA, the front proxy's, and none: 401.
    let other = tempfile::tempdir().unwrap();
    serving.write_serving(other.path());
    for client in [
        None,
        Some(pair(other.path())),
        Some(front_ca.client("front-proxy-client")),
    ] {
        let (status, body) = get(a.addr, &serving.pem, client, &path, &user_headers()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    // The replicas' own: this replica's series, as another replica reads them.
    let (status, body) = open(
        a.addr,
        &serving.pem,
        Some(pair(dir.path())),
        &path,
        &HeaderMap::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let bytes = body.collect().await.unwrap().to_bytes();
    let data = Snapshot::from_json(&bytes).unwrap();
    assert_eq!(data.window(), Duration::from_secs(60));
    assert_eq!(data.proxies().collect::<Vec<_>>(), [&web0]);
    // A window it cannot answer, and none at all: 400.
    for bad in ["t=1h", "namespace=demo"] {
        let (status, body) = get(
            a.addr,
            &serving.pem,
            Some(pair(dir.path())),
            &format!("{REPLICA_METRICS_PATH}?{bad}"),
            &HeaderMap::new(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

#[test]
fn the_replica_query_names_the_window_and_the_namespace() {
    let minute = Duration::from_secs(60);
    let path = replica_query(minute, Proxies::Namespace("demo"));
    assert_eq!(path, "/replica/metrics?t=60000ms&namespace=demo");
    let query = path.split_once('?').unwrap().1;
    assert_eq!(
        ReplicaQuery::parse(Some(query)),
        Ok(ReplicaQuery {
            window: minute,
            namespace: Some("demo".into())
        })
    );
    assert_eq!(
        replica_query(Duration::from_millis(1500), Proxies::All),
        "/replica/metrics?t=1500ms"
    );
    assert!(
        ReplicaQuery::parse(None)
            .unwrap_err()
            .contains("t: required")
    );
}
