//! Tests of the conversion core, the HTTP routes, the certificate reloader, and one real HTTPS
//! round trip.

use std::{fs, path::Path, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::inject::{
    InjectConfig,
    fixtures::pod_review,
    server::{Annotations, NamespaceSource, event_channel},
};

// === Utils ===

fn review(desired: &str, objects: Vec<Value>) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "desiredAPIVersion": desired,
            "objects": objects,
        },
    })
}

/// The answer to `review`, through the serialized form the server reads and writes.
fn convert_review(review: &Value) -> Value {
    let answer = super::convert_review(&serde_json::to_vec(review).unwrap()).unwrap();
    serde_json::from_slice(&answer).unwrap()
}

/// The converted objects of a successful review; panics with the message of a failed one.
fn converted(desired: &str, objects: Vec<Value>) -> Vec<Value> {
    let answer = convert_review(&review(desired, objects));
    let response = &answer["response"];
    assert_eq!(
        response["result"]["status"], "Success",
        "conversion to {desired} failed: {answer:#}"
    );
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    response["convertedObjects"].as_array().unwrap().clone()
}

fn convert_one(desired: &str, object: Value) -> Value {
    let mut out = converted(desired, vec![object]);
    assert_eq!(out.len(), 1);
    out.remove(0)
}

/// The failure message of a review that must fail.
fn failure(review: &Value) -> String {
    let answer = convert_review(review);
    assert_eq!(answer["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(answer["kind"], "ConversionReview");
    let result = &answer["response"]["result"];
    assert_eq!(result["status"], "Failure", "{answer:#}");
    assert_eq!(answer["response"]["convertedObjects"], json!([]));
    result["message"].as_str().unwrap().to_string()
}

/// Metadata as the API server sends it: server-set fields the webhook must not touch.
fn server_metadata(name: &str) -> Value {
    json!({
        "name": name,
        "namespace": "shop",
        "uid": "0d7a3b1e-1c0e-4b8f-9a55-3f2f1b6c9e01",
        "resourceVersion": "48213",
        "generation": 3,
        "creationTimestamp": "2025-01-02T03:04:05Z",
        "labels": {"app": "web", "app.kubernetes.io/part-of": "shop"},
        "annotations": {"note": "keep \"quoted\" and unicode é"},
        "managedFields": [{
            "apiVersion": "split.smi-spec.io/v1alpha1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {".": {}, "f:backends": {}, "f:service": {}}},
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "time": "2025-01-02T03:04:05Z",
        }],
        "finalizers": ["example.com/keep"],
    })
}

/// The v1alpha1 canary of `smi-examples/01`, with the weights 95 and 5 as quantity strings.
fn split_v1alpha1() -> Value {
    json!({
        "apiVersion": "split.smi-spec.io/v1alpha1",
        "kind": "TrafficSplit",
        "metadata": server_metadata("web"),
        "spec": {
            "service": "web",
            "backends": [
                {"service": "web-v1", "weight": "95"},
                {"service": "web-v2", "weight": "5"},
            ],
        },
    })
}

/// The legacy TrafficTarget of `smi-examples/09` (no `spec`, `specs` instead of `rules`).
fn target_v1alpha1() -> Value {
    json!({
        "apiVersion": "access.smi-spec.io/v1alpha1",
        "kind": "TrafficTarget",
        "metadata": {"name": "path-specific", "namespace": "default"},
        "destination": {
            "kind": "ServiceAccount",
            "name": "service-a",
            "namespace": "default",
            "port": 8080,
        },
        "specs": [{"kind": "HTTPRouteGroup", "name": "the-routes", "matches": ["metrics"]}],
        "sources": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "default"}],
    })
}

fn routes_v1alpha1() -> Value {
    json!({
        "apiVersion": "specs.smi-spec.io/v1alpha1",
        "kind": "HTTPRouteGroup",
        "metadata": {"name": "the-routes", "namespace": "default"},
        "matches": [
            {"name": "metrics", "pathRegex": "/metrics", "methods": ["GET"]},
            {"name": "everything", "pathRegex": ".*", "methods": ["*"]},
        ],
    })
}

fn weight(backend: &Value) -> f64 {
    match &backend["weight"] {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("weight {other}"),
    }
}

// === convert_review ===

#[test]
fn trafficsplit_quantity_weights_keep_their_ratio_to_v1alpha4_and_back() {
    let v4 = convert_one("split.smi-spec.io/v1alpha4", split_v1alpha1());
    assert_eq!(v4["apiVersion"], "split.smi-spec.io/v1alpha4");
    assert_eq!(v4["kind"], "TrafficSplit");
    assert_eq!(v4["spec"]["service"], "web");
    let backends = v4["spec"]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    assert_eq!(backends[0]["service"], "web-v1");
    assert!(
        backends[0]["weight"].is_u64(),
        "v1alpha4 weights are integers: {v4}"
    );
    assert!(
        backends[1]["weight"].is_u64(),
        "v1alpha4 weights are integers: {v4}"
    );
    assert_eq!(weight(&backends[0]) * 5.0, weight(&backends[1]) * 95.0);

    let v1 = convert_one("split.smi-spec.io/v1alpha1", v4);
    assert_eq!(v1["apiVersion"], "split.smi-spec.io/v1alpha1");
    let backends = v1["spec"]["backends"].as_array().unwrap();
    assert_eq!(backends[1]["service"], "web-v2");
    assert_eq!(weight(&backends[0]) * 5.0, weight(&backends[1]) * 95.0);
    assert_eq!(v1["metadata"], split_v1alpha1()["metadata"]);
}

#[test]
fn milli_quantities_scale_exactly() {
    let mut split = split_v1alpha1();
    split["spec"]["backends"][0]["weight"] = json!(1);
    split["spec"]["backends"][1]["weight"] = json!("500m");
    let v2 = convert_one("split.smi-spec.io/v1alpha2", split);
    let backends = v2["spec"]["backends"].as_array().unwrap();
    assert_eq!(weight(&backends[0]), 2.0 * weight(&backends[1]), "{v2}");
}

#[test]
fn traffictarget_legacy_shape_to_v1alpha3_and_back() {
    // v1alpha3 has no destination port; without one, the legacy shape converts both ways.
    let mut original = target_v1alpha1();
    original["destination"]
        .as_object_mut()
        .unwrap()
        .remove("port");
    let v3 = convert_one("access.smi-spec.io/v1alpha3", original.clone());
    assert_eq!(v3["apiVersion"], "access.smi-spec.io/v1alpha3");
    assert_eq!(v3["spec"]["destination"]["name"], "service-a");
    assert_eq!(v3["spec"]["rules"][0]["kind"], "HTTPRouteGroup");
    assert_eq!(v3["spec"]["rules"][0]["name"], "the-routes");
    assert_eq!(v3["spec"]["rules"][0]["matches"], json!(["metrics"]));
    assert_eq!(v3["spec"]["sources"][0]["name"], "prometheus");
    assert!(
        v3.get("destination").is_none(),
        "top-level fields moved under spec: {v3}"
    );

    let v1 = convert_one("access.smi-spec.io/v1alpha1", v3);
    for field in ["destination", "specs", "sources", "metadata"] {
        assert_eq!(
            v1[field], original[field],
            "{field} after the round trip: {v1:#}"
        );
    }
}

#[test]
fn traffictarget_with_a_port_round_trips_through_v1alpha2_but_not_v1alpha3() {
    // smi-examples/09 exactly: `destination.port` exists in v1alpha1 and v1alpha2 only.
    let v2 = convert_one("access.smi-spec.io/v1alpha2", target_v1alpha1());
    assert_eq!(v2["spec"]["destination"]["port"], 8080, "{v2:#}");
    let v1 = convert_one("access.smi-spec.io/v1alpha1", v2);
    assert_eq!(v1["destination"], target_v1alpha1()["destination"]);

    let message = failure(&review(
        "access.smi-spec.io/v1alpha3",
        vec![target_v1alpha1()],
    ));
    assert!(
        message.starts_with("traffictarget default/path-specific: spec.destination.port: "),
        "{message}"
    );
    assert!(message.contains("v1alpha3"), "{message}");
}

#[test]
fn httproutegroup_v1alpha1_to_v1alpha4_and_back() {
    let v4 = convert_one("specs.smi-spec.io/v1alpha4", routes_v1alpha1());
    assert_eq!(v4["apiVersion"], "specs.smi-spec.io/v1alpha4");
    let matches = v4["spec"]["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 2);
    assert_eq!(matches[0]["name"], "metrics");
    assert_eq!(matches[0]["pathRegex"], "/metrics");
    assert_eq!(matches[0]["methods"], json!(["GET"]));

    let v1 = convert_one("specs.smi-spec.io/v1alpha1", v4);
    assert_eq!(v1["matches"], routes_v1alpha1()["matches"], "{v1:#}");
}

#[test]
fn metadata_is_copied_byte_for_byte() {
    let input = split_v1alpha1();
    for desired in ["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"] {
        let out = convert_one(&format!("split.smi-spec.io/{desired}"), input.clone());
        assert_eq!(
            serde_json::to_string(&out["metadata"]).unwrap(),
            serde_json::to_string(&input["metadata"]).unwrap(),
            "metadata changed converting to {desired}"
        );
    }
}

#[test]
fn status_is_converted_along() {
    let mut split = split_v1alpha1();
    split["status"] = json!({
        "observedGeneration": 3,
        "conditions": [{
            "type": "Accepted",
            "status": "True",
            "reason": "Accepted",
            "message": "ok",
            "lastTransitionTime": "2025-01-02T03:04:05Z",
            "observedGeneration": 3,
        }],
    });
    let out = convert_one("split.smi-spec.io/v1alpha4", split.clone());
    assert_eq!(
        out["status"]["conditions"][0]["type"], "Accepted",
        "{out:#}"
    );
    assert_eq!(out["status"]["conditions"][0]["reason"], "Accepted");
}

#[test]
fn an_object_already_in_the_desired_version_is_passed_through_normalised() {
    let out = convert_one("split.smi-spec.io/v1alpha1", split_v1alpha1());
    assert_eq!(out["apiVersion"], "split.smi-spec.io/v1alpha1");
    assert_eq!(out["metadata"], split_v1alpha1()["metadata"]);
    let backends = out["spec"]["backends"].as_array().unwrap();
    assert_eq!(weight(&backends[0]), 95.0);
    assert_eq!(weight(&backends[1]), 5.0);
}

#[test]
fn a_mixed_batch_comes_back_in_order_in_the_desired_version() {
    let mut v2 = split_v1alpha1();
    v2["apiVersion"] = json!("split.smi-spec.io/v1alpha2");
    v2["metadata"]["name"] = json!("int-weights");
    v2["spec"]["backends"] = json!([{"service": "a", "weight": 3}, {"service": "b", "weight": 1}]);
    let v4 = json!({
        "apiVersion": "split.smi-spec.io/v1alpha4",
        "kind": "TrafficSplit",
        "metadata": {"name": "already", "namespace": "shop"},
        "spec": {"service": "web", "backends": [{"service": "c", "weight": 10}]},
    });
    let out = converted("split.smi-spec.io/v1alpha3", vec![split_v1alpha1(), v2, v4]);
    let names: Vec<_> = out.iter().map(|o| o["metadata"]["name"].clone()).collect();
    assert_eq!(
        names,
        [json!("web"), json!("int-weights"), json!("already")]
    );
    for o in &out {
        assert_eq!(o["apiVersion"], "split.smi-spec.io/v1alpha3");
    }
    assert_eq!(out[1]["spec"]["backends"][0]["weight"], 3);
    assert_eq!(out[2]["spec"]["backends"][0]["service"], "c");
}

#[test]
fn an_object_the_target_version_cannot_hold_fails_the_review_naming_it() {
    let with_matches = json!({
        "apiVersion": "split.smi-spec.io/v1alpha4",
        "kind": "TrafficSplit",
        "metadata": {"name": "ab-test", "namespace": "shop"},
        "spec": {
            "service": "web",
            "matches": [{"kind": "HTTPRouteGroup", "name": "firefox"}],
            "backends": [{"service": "web-v2", "weight": 1}],
        },
    });
    let message = failure(&review(
        "split.smi-spec.io/v1alpha2",
        vec![split_v1alpha1(), with_matches],
    ));
    assert!(message.contains("trafficsplit shop/ab-test"), "{message}");
    assert!(message.contains("spec.matches"), "{message}");
    assert!(message.contains("v1alpha2"), "{message}");
    // Only the object that failed is named.
    assert!(!message.contains("shop/web"), "{message}");
}

#[test]
fn an_unknown_kind_or_group_fails_naming_the_object() {
    let foreign = json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "ns"},
    });
    let message = failure(&review("example.com/v2", vec![foreign]));
    assert!(message.starts_with("widget ns/w: kind: "), "{message}");

    let message = failure(&review(
        "specs.smi-spec.io/v1alpha4",
        vec![split_v1alpha1()],
    ));
    assert!(message.contains("trafficsplit shop/web"), "{message}");
    assert!(message.contains("group"), "{message}");

    let message = failure(&review("split.smi-spec.io/v9", vec![split_v1alpha1()]));
    assert!(message.contains("trafficsplit shop/web"), "{message}");
    assert!(message.contains("v9"), "{message}");
}

#[test]
fn a_field_that_does_not_parse_is_named_with_its_path() {
    let mut split = split_v1alpha1();
    split["spec"]["backends"][1]["weight"] = json!("lots");
    let message = failure(&review("split.smi-spec.io/v1alpha4", vec![split]));
    assert!(message.contains("trafficsplit shop/web"), "{message}");
    assert!(message.contains("spec.backends[1].weight"), "{message}");
}

#[test]
fn a_malformed_review_gets_a_failure_not_a_panic() {
    for (bad, field) in [
        (json!(null), "request"),
        (json!({"kind": "ConversionReview"}), "request"),
        (
            json!({"request": {"desiredAPIVersion": "split.smi-spec.io/v1alpha4", "objects": []}}),
            "request.uid",
        ),
        (
            json!({"request": {"uid": "u", "objects": []}}),
            "request.desiredAPIVersion",
        ),
        (
            json!({"request": {"uid": "u", "desiredAPIVersion": "v1", "objects": []}}),
            "request.desiredAPIVersion",
        ),
        (
            json!({"request": {"uid": "u", "desiredAPIVersion": "split.smi-spec.io/v1alpha4"}}),
            "request.objects",
        ),
    ] {
        let message = failure(&bad);
        assert!(message.contains(field), "{bad}: {message}");
    }
    let message = failure(&review("split.smi-spec.io/v1alpha4", vec![json!(42)]));
    assert!(message.contains("apiVersion: missing"), "{message}");
    // The uid is echoed even when the review fails.
    let answer = convert_review(&json!({"request": {"uid": "u-1"}}));
    assert_eq!(answer["response"]["uid"], "u-1");
}

#[test]
fn an_empty_batch_succeeds() {
    assert!(converted("split.smi-spec.io/v1alpha4", vec![]).is_empty());
}

// === HTTP routes ===

fn body_of(response: Response<Full<Bytes>>) -> (StatusCode, Vec<u8>) {
    let status = response.status();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bytes = rt
        .block_on(response.into_body().collect())
        .unwrap()
        .to_bytes();
    (status, bytes.to_vec())
}

#[test]
fn routes_answer_by_method_and_path() {
    assert_eq!(Route::of(&Method::POST, "/convert"), Route::Convert);
    assert_eq!(Route::of(&Method::GET, "/healthz"), Route::Health);
    assert_eq!(
        Route::of(&Method::GET, "/convert"),
        Route::MethodNotAllowed("POST")
    );
    assert_eq!(Route::of(&Method::POST, "/other"), Route::NotFound);
    assert_eq!(Route::of(&Method::POST, "/inject"), Route::Inject);
    assert_eq!(
        Route::of(&Method::GET, "/inject"),
        Route::MethodNotAllowed("POST")
    );

    let (status, body) = body_of(Route::Health.respond(None));
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    let (status, _) = body_of(Route::Convert.respond(Some(b"{not json")));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = body_of(Route::MethodNotAllowed("POST").respond(None));
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = body_of(Route::NotFound.respond(None));
    assert_eq!(status, StatusCode::NOT_FOUND);

    let request = serde_json::to_vec(&review(
        "split.smi-spec.io/v1alpha4",
        vec![split_v1alpha1()],
    ))
    .unwrap();
    let (status, body) = body_of(Route::Convert.respond(Some(&request)));
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["result"]["status"], "Success");
}

// === CertReloader ===

/// A test CA and a serving certificate for `127.0.0.1` and `localhost` signed by it.
struct TestPki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    fn new() -> Self {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "webhook test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestPki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes a fresh serving pair with common name `cn` into `dir`.
    fn write_leaf(&self, dir: &Path, cn: &str) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        fs::write(dir.join(CERT_FILE), cert.pem()).unwrap();
        fs::write(dir.join(KEY_FILE), key.serialize_pem()).unwrap();
    }
}

fn common_name(pair: &CertifiedKey) -> String {
    let der = pair.end_entity_cert().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    cn.as_str().unwrap().to_string()
}

/// Moves both files' modification time, as a Secret update would (the tests are faster than
/// the file system's timestamp resolution).
fn touch(dir: &Path, secs: u64) {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs);
    for name in [CERT_FILE, KEY_FILE] {
        let file = fs::File::options()
            .write(true)
            .open(dir.join(name))
            .unwrap();
        file.set_modified(at).unwrap();
    }
}

#[test]
fn the_reloader_picks_up_a_new_pair_and_keeps_the_old_one_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    pki.write_leaf(dir.path(), "first");
    touch(dir.path(), 1);
    let reloader = CertReloader::with_interval(dir.path(), Duration::ZERO).unwrap();
    assert_eq!(common_name(&reloader.current()), "first");

    pki.write_leaf(dir.path(), "second");
    touch(dir.path(), 2);
    assert_eq!(common_name(&reloader.current()), "second");

    // A half-finished rotation: a new certificate with the old key does not load.
    let old_key = fs::read(dir.path().join(KEY_FILE)).unwrap();
    pki.write_leaf(dir.path(), "third");
    fs::write(dir.path().join(KEY_FILE), &old_key).unwrap();
    touch(dir.path(), 3);
    assert_eq!(common_name(&reloader.current()), "second");

    fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
    touch(dir.path(), 4);
    assert_eq!(common_name(&reloader.current()), "second");

    pki.write_leaf(dir.path(), "fourth");
    touch(dir.path(), 5);
    assert_eq!(common_name(&reloader.current()), "fourth");
}

#[test]
fn the_reloader_waits_for_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    pki.write_leaf(dir.path(), "first");
    touch(dir.path(), 1);
    let reloader = CertReloader::with_interval(dir.path(), Duration::from_secs(3600)).unwrap();
    pki.write_leaf(dir.path(), "second");
    touch(dir.path(), 2);
    assert_eq!(common_name(&reloader.current()), "first");
}

#[test]
fn loading_names_the_file_that_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let err = CertReloader::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tls.crt"), "{err}");

    let pki = TestPki::new();
    pki.write_leaf(dir.path(), "x");
    fs::write(dir.path().join(KEY_FILE), "-----BEGIN NOTHING-----\n").unwrap();
    let err = CertReloader::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tls.key"), "{err}");

    let other = tempfile::tempdir().unwrap();
    pki.write_leaf(other.path(), "y");
    pki.write_leaf(dir.path(), "x");
    fs::copy(other.path().join(KEY_FILE), dir.path().join(KEY_FILE)).unwrap();
    let err = CertReloader::load(dir.path()).unwrap_err();
    assert!(matches!(err, WebhookError::Pair { .. }), "{err}");
}

// === serve ===

struct Running {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), WebhookError>>,
    client: tokio_rustls::TlsConnector,
}

async fn start(dir: &Path, pki: &TestPki, alpn: &[&[u8]]) -> Running {
    start_with(dir, pki, alpn, None).await
}

async fn start_with(
    dir: &Path,
    pki: &TestPki,
    alpn: &[&[u8]],
    injector: Option<Arc<Injector>>,
) -> Running {
    pki.write_leaf(dir, "serving");
    let reloader = Arc::new(CertReloader::load(dir).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        reloader,
        injector,
        Apis::default(),
        async {
            let _ = stopped.await;
        },
    ));

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Running {
        addr,
        stop,
        server,
        client: tokio_rustls::TlsConnector::from(Arc::new(config)),
    }
}

impl Running {
    async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        self.client.connect(name, tcp).await.unwrap()
    }

    async fn shut_down(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("server stops after shutdown")
            .unwrap()
            .unwrap();
    }
}

fn convert_request_body() -> Vec<u8> {
    serde_json::to_vec(&review(
        "split.smi-spec.io/v1alpha4",
        vec![split_v1alpha1()],
    ))
    .unwrap()
}

fn check_converted(answer: &Value) {
    assert_eq!(
        answer["response"]["result"]["status"], "Success",
        "{answer:#}"
    );
    let object = &answer["response"]["convertedObjects"][0];
    assert_eq!(object["apiVersion"], "split.smi-spec.io/v1alpha4");
    assert_eq!(object["metadata"], split_v1alpha1()["metadata"]);
    let backends = object["spec"]["backends"].as_array().unwrap();
    assert_eq!(weight(&backends[0]) * 5.0, weight(&backends[1]) * 95.0);
}

#[tokio::test]
async fn serves_conversion_over_tls_with_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let running = start(dir.path(), &pki, &[b"h2", b"http/1.1"]).await;

    // HTTP/2, negotiated with ALPN as the API server does.
    let tls = running.connect().await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::post(format!("https://127.0.0.1:{}/convert", running.addr.port()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(convert_request_body())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    check_converted(&serde_json::from_slice(&body).unwrap());

    let request = Request::get("/healthz")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");

    // HTTP/1.1 written by hand, as the simplest client would.
    let mut tls = running.connect().await;
    let body = convert_request_body();
    let head = format!(
        "POST /convert HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    let (_, json_body) = raw.split_once("\r\n\r\n").unwrap();
    check_converted(&serde_json::from_str(json_body).unwrap());

    // A body that is not JSON.
    let mut tls = running.connect().await;
    tls.write_all(
        b"POST /convert HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&raw)
    );

    running.shut_down().await;
}

#[tokio::test]
async fn rejects_a_body_over_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let running = start(dir.path(), &pki, &[b"http/1.1"]).await;
    let tls = running.connect().await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::post("/convert")
        .header(header::HOST, "127.0.0.1")
        .body(Full::new(Bytes::from(vec![b' '; MAX_BODY_BYTES + 1])))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    drop(sender);
    running.shut_down().await;
}

// === /inject ===

/// Every namespace is enrolled, except `broken`, which cannot be read.
struct EnrolledNamespaces;

impl NamespaceSource for EnrolledNamespaces {
    fn annotations<'a>(
        &'a self,
        namespace: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<Annotations, String>> {
        Box::pin(async move {
            if namespace == "broken" {
                return Err("the API server did not answer".to_owned());
            }
            Ok(Annotations::from([(
                crate::annotations::INJECT.to_owned(),
                "enabled".to_owned(),
            )]))
        })
    }
}

fn admission_body(namespace: &str) -> Vec<u8> {
    serde_json::to_vec(&pod_review("adm-1", namespace, json!({"name": "web-0"}))).unwrap()
}

/// An HTTP/2 connection to the server, as the API server opens one.
async fn h2(running: &Running) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tls = running.connect().await;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

async fn post(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let request = Request::post(format!("https://127.0.0.1{path}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

#[tokio::test]
async fn serves_injection_next_to_conversion_and_a_failed_read_is_a_500() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let (events, mut notes) = event_channel();
    let injector = Injector::new(
        InjectConfig::new("switchyard-system"),
        Box::new(EnrolledNamespaces),
        events,
    );
    let running = start_with(dir.path(), &pki, &[b"h2"], Some(Arc::new(injector))).await;
    let mut sender = h2(&running).await;

    let (status, body) = post(&mut sender, "/inject", admission_body("demo")).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["uid"], "adm-1");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    assert_eq!(notes.recv().await.unwrap().reason, "Injected");

    // The API server applies failurePolicy to a webhook that fails.
    let (status, body) = post(&mut sender, "/inject", admission_body("broken")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "reading namespace broken: the API server did not answer\n"
    );

    // Conversion is still served beside it.
    let (status, body) = post(&mut sender, "/convert", convert_request_body()).await;
    assert_eq!(status, StatusCode::OK);
    check_converted(&serde_json::from_slice(&body).unwrap());
    drop(sender);
    running.shut_down().await;

    // Without an injector, there is no /inject.
    let running = start(dir.path(), &pki, &[b"h2"]).await;
    let mut sender = h2(&running).await;
    let (status, _) = post(&mut sender, "/inject", admission_body("demo")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(sender);
    running.shut_down().await;
}
