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
use crate::webhook::{self, CertReloader};

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
    let front_proxy = Arc::new(FrontProxySettings::default());
    front_proxy.set(FrontProxy::from_config_map(&config_map(&front_ca.pem)).unwrap());
    let api = Arc::new(MetricsApi::new(
        front_proxy,
        Arc::default(),
        tokio::sync::watch::channel(Arc::default()).1,
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
    );
    let response = api.respond(
        true,
        "/apis/metrics.smi-spec.io/v1alpha1",
        None,
        &user_headers(),
        None,
    );
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
