//! Tests of the tap API: paths and their RBAC attributes, the operator's own authorization,
//! and a tap through one replica that shows another's proxies.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus;
use switchyard_adapters::model::ProxyId;
use tokio::net::TcpListener;

use super::*;
use crate::{
    controller::{
        metrics_api::tests::{Ca, Served, front_proxy_of, open, user_headers},
        replica::tests::FixedPeers,
    },
    tap::TapEvent,
    webhook::{self, CertReloader},
};

fn target(pod: Option<&str>) -> Target {
    Target {
        namespace: "demo".into(),
        pod: pod.map(str::to_owned),
    }
}

fn alice() -> ProxiedUser {
    ProxiedUser {
        name: "alice".into(),
        uid: Some("4d0ab7e2-5c1f-4d7a-9a51-7e0f2f6f1c11".into()),
        groups: vec!["devs".into(), "system:authenticated".into()],
        extra: BTreeMap::from([("scopes".to_owned(), vec!["a".to_owned()])]),
    }
}

// === paths ===

#[test]
fn paths_name_a_pod_or_a_namespace_under_watch() {
    let base = "/apis/tap.switchyard.dev/v1alpha1";
    assert_eq!(ApiRequest::parse(base), ApiRequest::Discovery);
    assert_eq!(
        ApiRequest::parse(&format!("{base}/")),
        ApiRequest::Discovery
    );
    assert_eq!(
        ApiRequest::parse(&format!("{base}/watch/namespaces/demo/pods/web-0/tap")),
        ApiRequest::Tap(target(Some("web-0")))
    );
    assert_eq!(
        ApiRequest::parse(&format!("{base}/watch/namespaces/demo/tap")),
        ApiRequest::Tap(target(None))
    );
    assert_eq!(
        ApiRequest::parse(&format!("{base}/watch/namespaces/de%6Do/tap")),
        ApiRequest::Tap(target(None))
    );
    for other in [
        // Without `watch/` the API server would time the request out: not served.
        format!("{base}/namespaces/demo/pods/web-0/tap"),
        format!("{base}/watch/namespaces/demo/pods/web-0"),
        format!("{base}/watch/namespaces/demo/services/web/tap"),
        "/apis/tap.switchyard.dev/v2/watch/namespaces/demo/tap".to_owned(),
    ] {
        assert_eq!(ApiRequest::parse(&other), ApiRequest::NotFound, "{other}");
    }
    assert!(is_tap_path(base));
    assert!(is_tap_path(REPLICA_TAP_PATH));
    assert!(!is_tap_path("/apis/tap.switchyard.devx"));
    assert!(!is_tap_path("/apis/metrics.smi-spec.io/v1alpha1"));
    assert!(!is_tap_path("/replica/tapx"));
}

#[test]
fn attributes_are_what_kube_apiserver_reads_from_the_path() {
    // RequestInfoFactory: /watch/namespaces/demo/pods/web-0/tap is verb watch, resource pods,
    // subresource tap, name web-0; /watch/namespaces/demo/tap is resource tap.
    let pod = target(Some("web-0")).attributes();
    assert_eq!(pod.group.as_deref(), Some("tap.switchyard.dev"));
    assert_eq!(pod.version.as_deref(), Some("v1alpha1"));
    assert_eq!(pod.verb.as_deref(), Some("watch"));
    assert_eq!(pod.namespace.as_deref(), Some("demo"));
    assert_eq!(pod.resource.as_deref(), Some("pods"));
    assert_eq!(pod.subresource.as_deref(), Some("tap"));
    assert_eq!(pod.name.as_deref(), Some("web-0"));
    let ns = target(None).attributes();
    assert_eq!(ns.resource.as_deref(), Some("tap"));
    assert_eq!(ns.subresource, None);
    assert_eq!(ns.name, None);
    assert_eq!(ns.namespace.as_deref(), Some("demo"));

    let review = access_review(&alice(), &target(Some("web-0")));
    assert_eq!(review.spec.user.as_deref(), Some("alice"));
    assert_eq!(review.spec.uid, alice().uid);
    assert_eq!(
        review.spec.groups,
        Some(vec!["devs".into(), "system:authenticated".into()])
    );
    assert_eq!(review.spec.extra, Some(alice().extra));
    assert_eq!(review.spec.resource_attributes, Some(pod));
}

#[test]
fn the_query_narrows_the_target_but_never_names_another() {
    let f = target(Some("web-0"))
        .filter(Some("method=get&path=%2Fapi&max_rps=5"))
        .unwrap();
    assert_eq!(f.namespace, "demo");
    assert_eq!(f.pod.as_deref(), Some("web-0"));
    assert_eq!(f.method.as_deref(), Some("GET"));
    assert_eq!(f.path_prefix.as_deref(), Some("/api"));
    assert_eq!(f.max_rps, 5);
    assert_eq!(target(None).filter(None).unwrap().pod, None);
    for query in ["namespace=other", "pod=db-0", "max_rps=0", "nope=1"] {
        assert!(target(None).filter(Some(query)).is_err(), "{query}");
    }
    // What a replica asks its peers reads back as the same filter.
    assert_eq!(TapFilter::parse(Some(&f.query())).unwrap(), f);
}

// === the operator's own authorization ===

#[test]
fn a_review_allows_only_when_allowed_and_not_denied() {
    let status = |allowed, denied, reason: Option<&str>| SubjectAccessReviewStatus {
        allowed,
        denied,
        reason: reason.map(str::to_owned),
        evaluation_error: None,
    };
    assert_eq!(
        Decision::of(Ok(status(true, None, None))),
        Decision::Allowed
    );
    assert_eq!(
        Decision::of(Ok(status(true, Some(true), Some("webhook says no")))),
        Decision::Denied(Some("webhook says no".into()))
    );
    assert_eq!(
        Decision::of(Ok(status(false, None, Some("")))),
        Decision::Denied(None)
    );
    assert_eq!(
        Decision::of(Err("timed out".into())),
        Decision::Failed("timed out".into())
    );
}

#[test]
fn a_refusal_names_the_user_and_the_resource() {
    assert_eq!(Decision::Allowed.refusal(&alice(), &target(None)), None);
    let (code, status) = Decision::Denied(None)
        .refusal(&alice(), &target(Some("web-0")))
        .unwrap();
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 403);
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        r#"pods.tap.switchyard.dev "web-0" is forbidden: User "alice" cannot watch resource "pods/tap" in API group "tap.switchyard.dev" in the namespace "demo""#
    );
    let (_, status) = Decision::Denied(Some("no binding".into()))
        .refusal(&alice(), &target(None))
        .unwrap();
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains(r#"User "alice" cannot watch resource "tap""#)
            && message.ends_with(": no binding"),
        "{message}"
    );
    let (code, status) = Decision::Failed("timed out".into())
        .refusal(&alice(), &target(None))
        .unwrap();
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(status["message"].as_str().unwrap().contains("timed out"));
}

// === over TLS, on the webhook server ===

/// An authorizer that answers every review with `allowed` and records what it was asked.
#[derive(Debug)]
struct FakeAuthorizer {
    allowed: bool,
    asked: Mutex<Vec<SubjectAccessReview>>,
}

impl Authorizer for FakeAuthorizer {
    fn review(
        &self,
        review: SubjectAccessReview,
    ) -> BoxFuture<'_, Result<SubjectAccessReviewStatus, String>> {
        self.asked.lock().unwrap().push(review);
        let allowed = self.allowed;
        Box::pin(async move {
            Ok(SubjectAccessReviewStatus {
                allowed,
                ..SubjectAccessReviewStatus::default()
            })
        })
    }
}

/// One replica: a webhook server with the tap API over its own Hub.
struct Replica {
    addr: std::net::SocketAddr,
    hub: Arc<Hub>,
    peers: Arc<FixedPeers>,
    authorizer: Arc<FakeAuthorizer>,
    _served: Served,
}

impl Replica {
    async fn start(dir: &std::path::Path, front_ca: &Ca, allowed: bool) -> Self {
        let hub = Arc::new(Hub::default());
        let peers = Arc::new(FixedPeers::default());
        let authorizer = Arc::new(FakeAuthorizer {
            allowed,
            asked: Mutex::default(),
        });
        let tls = Arc::new(CertReloader::load(dir).unwrap());
        let api = TapApi::new(
            front_proxy_of(front_ca),
            hub.clone(),
            authorizer.clone(),
            peers.clone(),
            tls.clone(),
        );
        let served = Served::start(
            tls,
            webhook::Apis {
                metrics: None,
                tap: Some(Arc::new(api)),
            },
        )
        .await;
        Replica {
            addr: served.addr,
            hub,
            peers,
            authorizer,
            _served: served,
        }
    }
}

async fn whole(body: hyper::body::Incoming) -> serde_json::Value {
    let bytes = body.collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
}

/// The first event a tap stream shows within 10 s.
async fn first_event(body: &mut hyper::body::Incoming) -> TapEvent {
    let mut lines = crate::tap::stream::Lines::default();
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.unwrap().into_data() else {
                continue;
            };
            if let Some(line) = lines.push(&data).unwrap().into_iter().next() {
                return serde_json::from_slice(&line).unwrap();
            }
        }
        panic!("the tap stream ended without an event");
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an event within 10 s")
}

fn request(proxy: &ProxyId, path: &str) -> TapEvent {
    TapEvent {
        proxy: proxy.to_string(),
        ..crate::tap::tests::event("GET", path)
    }
}

/// Publishes `event` from `proxy` to `hub` every 100 ms until a session there selects it and
/// takes it (the peer's session opens a moment after the tap starts).
fn keep_publishing(hub: Arc<Hub>, proxy: ProxyId, event: TapEvent) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if hub.selects(&proxy) {
                hub.publish(&proxy, std::slice::from_ref(&event), Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

const POD_TAP: &str = "/apis/tap.switchyard.dev/v1alpha1/watch/namespaces/demo/pods/web-0/tap";

#[tokio::test]
async fn a_user_the_operator_does_not_authorize_is_refused_with_403() {
    let serving = Ca::new("webhook CA");
    let front_ca = Ca::new("front-proxy-ca");
    let dir = tempfile::tempdir().unwrap();
    serving.write_serving(dir.path());
    // The API server let the request through (its RBAC), but the operator's own review denies.
    let replica = Replica::start(dir.path(), &front_ca, false).await;
    let (status, body) = open(
        replica.addr,
        &serving.pem,
        Some(front_ca.client("front-proxy-client")),
        POD_TAP,
        &user_headers(),
    )
    .await;
    // Checked before reading: an allowed tap's body never ends.
    assert_eq!(status, StatusCode::FORBIDDEN);
    let body = whole(body).await;
    assert_eq!(body["reason"], "Forbidden");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(r#"User "alice""#) && message.contains(r#""pods/tap""#),
        "{message}"
    );
    // Refused before a session opened: nothing tapped.
    assert_eq!(replica.hub.sessions(), 0);
    let asked = replica.authorizer.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].spec.user.as_deref(), Some("alice"));
    assert_eq!(
        asked[0].spec.resource_attributes,
        Some(target(Some("web-0")).attributes())
    );
}

#[tokio::test]
async fn a_tap_through_one_replica_shows_the_other_replicas_proxies() {
    let serving = Ca::new("webhook CA");
    let front_ca = Ca::new("front-proxy-ca");
    let dir = tempfile::tempdir().unwrap();
    serving.write_serving(dir.path());
    // Both replicas mount the same certificate, as the Deployment's Pods do.
    let a = Replica::start(dir.path(), &front_ca, true).await;
    let b = Replica::start(dir.path(), &front_ca, true).await;
    *a.peers.0.lock().unwrap() = vec![Peer {
        name: "b".into(),
        addr: b.addr,
    }];
    let web = ProxyId {
        namespace: "demo".into(),
        pod: "web-0".into(),
    };
    // web-0's access-log stream landed on replica b.
    let publisher = keep_publishing(b.hub.clone(), web.clone(), request(&web, "/on-b"));
    let (status, mut body) = open(
        a.addr,
        &serving.pem,
        Some(front_ca.client("front-proxy-client")),
        &format!("{POD_TAP}?method=GET"),
        &user_headers(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let event = first_event(&mut body).await;
    assert_eq!(event.path, "/on-b");
    assert_eq!(event.proxy, "demo/web-0");
    // b served it from a session of its own for the same filter, and a from its own too.
    assert_eq!(a.hub.sessions(), 1);
    assert_eq!(b.hub.sessions(), 1);
    publisher.abort();
    // The tap's end closes both.
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.hub.sessions() + b.hub.sessions() > 0 {
        assert!(Instant::now() < deadline, "sessions left open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_replica_that_fails_is_skipped_and_the_tap_goes_on() {
    let serving = Ca::new("webhook CA");
    let front_ca = Ca::new("front-proxy-ca");
    let dir = tempfile::tempdir().unwrap();
    serving.write_serving(dir.path());
    let a = Replica::start(dir.path(), &front_ca, true).await;
    // Nothing listens there.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    *a.peers.0.lock().unwrap() = vec![Peer {
        name: "gone".into(),
        addr: gone_addr,
    }];
    let web = ProxyId {
        namespace: "demo".into(),
        pod: "web-0".into(),
    };
    let publisher = keep_publishing(a.hub.clone(), web.clone(), request(&web, "/on-a"));
    let (status, mut body) = open(
        a.addr,
        &serving.pem,
        Some(front_ca.client("front-proxy-client")),
        POD_TAP,
        &user_headers(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first_event(&mut body).await.path, "/on-a");
    publisher.abort();
}

#[tokio::test]
async fn the_replica_path_serves_only_the_replicas_own_certificate() {
    let serving = Ca::new("webhook CA");
    let front_ca = Ca::new("front-proxy-ca");
    let dir = tempfile::tempdir().unwrap();
    serving.write_serving(dir.path());
    let a = Replica::start(dir.path(), &front_ca, true).await;
    let path = format!("{REPLICA_TAP_PATH}?namespace=demo&pod=web-0");
    let own = (
        std::fs::read_to_string(dir.path().join(webhook::CERT_FILE)).unwrap(),
        std::fs::read_to_string(dir.path().join(webhook::KEY_FILE)).unwrap(),
    );
    // Another certificate of the same CA, the front proxy's, and none: 401.
    let other = tempfile::tempdir().unwrap();
    serving.write_serving(other.path());
    let other_pair = (
        std::fs::read_to_string(other.path().join(webhook::CERT_FILE)).unwrap(),
        std::fs::read_to_string(other.path().join(webhook::KEY_FILE)).unwrap(),
    );
    for client in [
        None,
        Some(other_pair),
        Some(front_ca.client("front-proxy-client")),
    ] {
        let (status, body) = open(a.addr, &serving.pem, client, &path, &user_headers()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(whole(body).await["code"], 401);
        assert_eq!(a.hub.sessions(), 0);
    }
    // The served certificate: this replica's own Hub, no SubjectAccessReview (the replica
    // that received the tap made it).
    let (status, _body) = open(a.addr, &serving.pem, Some(own), &path, &HeaderMap::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(a.hub.sessions(), 1);
    assert!(a.authorizer.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn discovery_lists_the_pod_and_namespace_taps_for_the_front_proxy_only() {
    let serving = Ca::new("webhook CA");
    let front_ca = Ca::new("front-proxy-ca");
    let dir = tempfile::tempdir().unwrap();
    serving.write_serving(dir.path());
    let a = Replica::start(dir.path(), &front_ca, true).await;
    let (status, body) = open(
        a.addr,
        &serving.pem,
        Some(front_ca.client("front-proxy-client")),
        "/apis/tap.switchyard.dev/v1alpha1",
        &user_headers(),
    )
    .await;
    let body = whole(body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["kind"], "APIResourceList");
    assert_eq!(body["groupVersion"], "tap.switchyard.dev/v1alpha1");
    let names: Vec<&str> = body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pods/tap", "tap"]);
    assert!(
        body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["verbs"] == serde_json::json!(["watch"]))
    );
    // Not the front proxy: 401, and no tap.
    let (status, _) = open(a.addr, &serving.pem, None, POD_TAP, &user_headers()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.hub.sessions(), 0);
}
