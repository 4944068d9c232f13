//! End to end over real gRPC: a tonic server on 127.0.0.1:0 and a tonic ADS client.

use std::net::SocketAddr;

use envoy_types::pb::envoy::service::{
    discovery::v3::{
        DeltaDiscoveryRequest,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
    metrics::v3::{
        StreamMetricsMessage, metrics_service_client::MetricsServiceClient,
        stream_metrics_message::Identifier,
    },
};
use switchyard_adapters::model::ProxyId;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, transport::Channel};

use super::*;
use crate::xds::{
    auth::StaticTokens,
    fixtures::{
        cla, cluster, delta_request, listener, nack, request, resource_name, route, snapshot,
    },
    snapshot::TypeUrl::{self, Cluster as CDS, ClusterLoadAssignment as EDS},
    snapshot::TypeUrl::{Listener as LDS, RouteConfiguration as RDS},
    store::ProxyKey,
};

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

fn mesh(cluster_rev: i64, listener_port: u32, route_rev: &str) -> Arc<Snapshot> {
    snapshot(vec![
        (CDS, "a", cluster("a", 1)),
        (CDS, "b", cluster("b", cluster_rev)),
        (EDS, "a", cla("a", 80)),
        (EDS, "b", cla("b", 80)),
        (LDS, "l", listener("l", "r", listener_port)),
        (RDS, "r", route("r", route_rev)),
    ])
}

struct Running {
    addr: SocketAddr,
    metrics: Arc<XdsMetrics>,
    statuses: Arc<ProxyStatuses>,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<Result<(), ServeError>>,
}

async fn start(store: SnapshotStore) -> Running {
    start_with(store, XdsConfig::default()).await
}

async fn start_with(store: SnapshotStore, config: XdsConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let auth = StaticTokens::new()
        .with("t1", ProxyKey::from("default/web-0"))
        .with("t2", ProxyKey::from("default/late-0"));
    let server = XdsServer::new(store, Arc::new(auth), config);
    let metrics = server.metrics();
    let statuses = server.statuses();
    let (shutdown, signal) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_listener(listener, server, async {
        let _ = signal.await;
    }));
    Running {
        addr,
        metrics,
        statuses,
        shutdown,
        server,
    }
}

async fn client(addr: SocketAddr) -> AggregatedDiscoveryServiceClient<Channel> {
    AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    /// Opens a stream; the first request goes out before the server answers the call.
    async fn open(addr: SocketAddr, token: &str, first: DiscoveryRequest) -> Result<Sotw, Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let response = client(addr)
            .await
            .stream_aggregated_resources(with_token(ReceiverStream::new(rx), token))
            .await?;
        Ok(Sotw {
            tx,
            rx: response.into_inner(),
        })
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("a healthy stream")
            .expect("an open stream")
    }

    async fn quiet(&mut self) -> bool {
        tokio::time::timeout(QUIET, self.rx.message())
            .await
            .is_err()
    }

    async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.unwrap();
    }

    async fn ack(&self, r: &DiscoveryResponse, names: &[&str]) {
        let t = TypeUrl::from_type_url(&r.type_url).unwrap();
        self.send(request(t, names, &r.version_info, &r.nonce))
            .await;
    }
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources.iter().map(resource_name).collect()
}

#[tokio::test]
async fn sotw_over_grpc() {
    let store = SnapshotStore::new();
    let key = ProxyKey::from("default/web-0");
    store.set(key.clone(), mesh(1, 15001, "1"));
    let running = start(store.clone()).await;

    // A bad token is refused before anything is served.
    let refused = Sotw::open(running.addr, "nope", request(CDS, &[], "", "")).await;
    assert_eq!(refused.err().map(|s| s.code()), Some(Code::Unauthenticated));
    assert_eq!(running.metrics.snapshot().auth_failures, 1);

    let mut stream = Sotw::open(running.addr, "t1", request(CDS, &[], "", ""))
        .await
        .unwrap();
    let r = stream.recv().await;
    assert_eq!(
        (r.type_url.as_str(), names(&r)),
        (CDS.type_url(), vec!["a".into(), "b".into()])
    );
    stream.ack(&r, &[]).await;
    stream.send(request(LDS, &[], "", "")).await;
    let r = stream.recv().await;
    assert_eq!(names(&r), ["l"]);
    stream.ack(&r, &[]).await;
    stream.send(request(RDS, &["r"], "", "")).await;
    let r = stream.recv().await;
    assert_eq!(names(&r), ["r"]);
    stream.ack(&r, &["r"]).await;
    assert!(stream.quiet().await, "ACKs are not answered");

    // Only the changed type is pushed.
    assert!(store.set(key.clone(), mesh(1, 15001, "2")));
    let r = stream.recv().await;
    assert_eq!(r.type_url, RDS.type_url());
    stream.ack(&r, &["r"]).await;
    assert!(stream.quiet().await);

    // A burst of edits becomes one push, of the last one.
    for port in 20_000..20_010 {
        assert!(store.set(key.clone(), mesh(1, port, "2")));
    }
    let r = stream.recv().await;
    assert_eq!(r.type_url, LDS.type_url());
    assert_eq!(
        r.version_info,
        mesh(1, 20_009, "2").version(LDS).to_string()
    );
    stream.ack(&r, &[]).await;
    assert!(stream.quiet().await, "one push for ten edits");

    let metrics = running.metrics.snapshot();
    assert_eq!(metrics.connected_streams, 1);
    assert_eq!(metrics.pushes, 5);
    assert_eq!(metrics.nacks, 0);

    // A node that changes mid-stream ends the stream.
    let mut impostor = request(CDS, &[], "", "");
    impostor.node.as_mut().unwrap().id = "web-1".to_string();
    stream.send(impostor).await;
    let status = tokio::time::timeout(WAIT, stream.rx.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // Shutdown ends the open streams instead of waiting for them.
    let mut open = Sotw::open(running.addr, "t1", request(CDS, &[], "", ""))
        .await
        .unwrap();
    open.recv().await;
    running.shutdown.send(()).unwrap();
    tokio::time::timeout(WAIT, running.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(running.metrics.snapshot().connected_streams, 0);
}

#[tokio::test]
async fn an_unknown_proxy_waits_for_its_snapshot() {
    let store = SnapshotStore::new();
    let running = start(store.clone()).await;
    let mut stream = Sotw::open(running.addr, "t2", request(CDS, &[], "", ""))
        .await
        .unwrap();
    assert!(stream.quiet().await);
    store.set(ProxyKey::from("default/late-0"), mesh(1, 1, "1"));
    let r = stream.recv().await;
    assert_eq!(names(&r), ["a", "b"]);
}

#[tokio::test]
async fn delta_over_grpc() {
    let store = SnapshotStore::new();
    let key = ProxyKey::from("default/web-0");
    store.set(key.clone(), mesh(1, 15001, "1"));
    let running = start(store.clone()).await;

    let (tx, rx) = mpsc::channel(16);
    tx.send(delta_request(CDS, &[], &[], "")).await.unwrap();
    let refused = client(running.addr)
        .await
        .delta_aggregated_resources(with_token(ReceiverStream::new(rx), "nope"))
        .await;
    assert_eq!(refused.err().map(|s| s.code()), Some(Code::Unauthenticated));

    let (tx, rx) = mpsc::channel(16);
    tx.send(delta_request(CDS, &[], &[], "")).await.unwrap();
    let mut responses = client(running.addr)
        .await
        .delta_aggregated_resources(with_token(ReceiverStream::new(rx), "t1"))
        .await
        .unwrap()
        .into_inner();
    let mut recv = async || {
        tokio::time::timeout(WAIT, responses.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    let r = recv().await;
    let names: Vec<_> = r.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    tx.send(delta_request(CDS, &[], &[], &r.nonce))
        .await
        .unwrap();

    // Only the changed cluster comes back.
    assert!(store.set(key.clone(), mesh(2, 15001, "1")));
    let r = recv().await;
    let names: Vec<_> = r.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!((r.type_url.as_str(), names), (CDS.type_url(), vec!["b"]));

    // A NACK is counted and not answered with the same clusters.
    let nack = DeltaDiscoveryRequest {
        error_detail: Some(crate::xds::fixtures::rejected()),
        ..delta_request(CDS, &[], &[], &r.nonce)
    };
    tx.send(nack).await.unwrap();
    assert!(
        tokio::time::timeout(QUIET, responses.message())
            .await
            .is_err()
    );
    assert_eq!(running.metrics.snapshot().nacks, 1);
}

#[tokio::test]
async fn a_proxy_gets_only_its_own_secrets_and_other_requests_are_counted() {
    use envoy_types::pb::{
        envoy::extensions::transport_sockets::tls::v3::Secret, google::protobuf::Any,
    };
    use prost::Message;

    let own = "spiffe://cluster.local/ns/default/sa/web";
    let other = "spiffe://cluster.local/ns/default/sa/db";
    let secret = |name: &str| Any {
        type_url: TypeUrl::Secret.type_url().to_string(),
        value: Secret {
            name: name.to_string(),
            ..Default::default()
        }
        .encode_to_vec(),
    };
    let snap = Snapshot::new([(TypeUrl::Secret, own.to_string(), secret(own))]).unwrap();
    let store = SnapshotStore::new();
    store.set(ProxyKey::from("default/web-0"), Arc::new(snap));
    let running = start(store).await;
    let mut stream = Sotw::open(
        running.addr,
        "t1",
        request(TypeUrl::Secret, &[own, other, "*"], "", ""),
    )
    .await
    .unwrap();
    let r = stream.recv().await;
    assert_eq!(names(&r), [own], "another identity's secret is never sent");
    // The wildcard asks for what is the proxy's own: not a refusal.
    assert_eq!(running.metrics.snapshot().secrets_refused, 1);
    // Asking again is refused again, but counted (and logged) once per stream.
    stream
        .send(request(
            TypeUrl::Secret,
            &[own, other],
            &r.version_info,
            &r.nonce,
        ))
        .await;
    assert!(stream.quiet().await);
    assert_eq!(running.metrics.snapshot().secrets_refused, 1);
}

/// A stream that has sent nothing yet, with `token`: how the server answers the call.
async fn open_silent(
    addr: SocketAddr,
    token: &str,
) -> (
    mpsc::Sender<DiscoveryRequest>,
    Result<Streaming<DiscoveryResponse>, Status>,
) {
    let (tx, rx) = mpsc::channel(1);
    let answer = client(addr)
        .await
        .stream_aggregated_resources(with_token(ReceiverStream::new(rx), token))
        .await
        .map(Response::into_inner);
    (tx, answer)
}

#[tokio::test]
async fn an_unknown_token_is_refused_before_any_message_is_read() {
    let running = start(SnapshotStore::new()).await;
    // The client sends no message at all: the server must not wait for (and buffer) one to
    // refuse the credentials. It used to read the first request first (10 s timeout).
    let asked = std::time::Instant::now();
    let (_tx, answer) = tokio::time::timeout(WAIT, open_silent(running.addr, "stolen"))
        .await
        .expect("refused without waiting for a message");
    let status = answer.expect_err("an unknown token is refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(running.metrics.snapshot().auth_failures, 1);
}

#[tokio::test]
async fn streams_beyond_the_cap_are_refused_and_a_closed_one_frees_its_slot() {
    let store = SnapshotStore::new();
    store.set(ProxyKey::from("default/web-0"), mesh(1, 80, "1"));
    let config = XdsConfig {
        max_streams: 2,
        ..XdsConfig::default()
    };
    let running = start_with(store, config).await;
    let mut first = Sotw::open(running.addr, "t1", request(CDS, &[], "", ""))
        .await
        .unwrap();
    first.recv().await;
    let mut second = Sotw::open(running.addr, "t1", request(CDS, &[], "", ""))
        .await
        .unwrap();
    second.recv().await;
    let third = Sotw::open(running.addr, "t1", request(CDS, &[], "", "")).await;
    let status = third.err().expect("a third stream is over the cap");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Sotw::open(running.addr, "t1", request(CDS, &[], "", "")).await {
            Ok(mut again) => {
                again.recv().await;
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot was never freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}

/// `switchyard proxy-status`'s source: a stream's types go from not requested to stale (sent),
/// synced (ACKed) and NACKed with the proxy's reason; the entry goes with the stream.
#[tokio::test]
async fn each_stream_reports_where_each_type_stands() {
    let store = SnapshotStore::new();
    let key = ProxyKey::from("default/web-0");
    store.set(key.clone(), mesh(1, 15001, "1"));
    let running = start(store.clone()).await;
    let types = |running: &Running| types(running);
    let mut stream = Sotw::open(running.addr, "t1", request(CDS, &[], "", ""))
        .await
        .unwrap();
    let r = stream.recv().await;
    eventually(&running, "CDS", TypeSync::Stale).await;
    assert!(
        types(&running)
            .iter()
            .filter(|(n, _)| n != "CDS")
            .all(|(_, s)| *s == TypeSync::NotRequested)
    );
    stream.ack(&r, &[]).await;
    eventually(&running, "CDS", TypeSync::Synced).await;

    stream.send(request(LDS, &[], "", "")).await;
    let r = stream.recv().await;
    let t = TypeUrl::from_type_url(&r.type_url).unwrap();
    stream.send(nack(request(t, &[], "", &r.nonce))).await;
    eventually(
        &running,
        "LDS",
        TypeSync::Nacked {
            message: "bad config".into(),
        },
    )
    .await;
    // A newer version that is accepted clears the NACK.
    assert!(store.set(key.clone(), mesh(1, 15002, "1")));
    let r = stream.recv().await;
    assert_eq!(r.type_url, LDS.type_url());
    eventually(&running, "LDS", TypeSync::Stale).await;
    stream.ack(&r, &[]).await;
    eventually(&running, "LDS", TypeSync::Synced).await;

    drop(stream);
    let deadline = std::time::Instant::now() + WAIT;
    while !running.statuses.list().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed stream is still listed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The one stream's types, checking which stream it is.
fn types(running: &Running) -> Vec<(String, TypeSync)> {
    let all = running.statuses.list();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        (
            all[0].proxy.as_str(),
            all[0].node.as_str(),
            all[0].protocol.as_str()
        ),
        ("default/web-0", "web-0", "sotw")
    );
    all[0].types.clone().into_iter().collect()
}

/// Waits until type `t` of the one stream is `want`.
async fn eventually(running: &Running, t: &str, want: TypeSync) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = types(running);
        if now.iter().any(|(n, s)| n == t && *s == want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{t} never {want:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One `cluster.upstream_rq_xx` counter, as Envoy sends it: `n` 2xx answers of `cluster`.
fn golden_message(node: Option<&str>, cluster: &str, n: f64) -> StreamMetricsMessage {
    use envoy_types::pb::io::prometheus::client::{
        Counter, LabelPair, Metric, MetricFamily, MetricType,
    };
    let label = |name: &str, value: &str| LabelPair {
        name: Some(name.to_owned()),
        value: Some(value.to_owned()),
    };
    StreamMetricsMessage {
        identifier: node.map(|id| Identifier {
            node: Some(Node {
                id: id.to_owned(),
                ..Node::default()
            }),
        }),
        envoy_metrics: vec![MetricFamily {
            name: Some(switchyard_proxy_config::metrics::envoy::UPSTREAM_RQ_XX.to_owned()),
            r#type: Some(MetricType::Counter as i32),
            metric: vec![Metric {
                label: vec![
                    label(
                        switchyard_proxy_config::metrics::envoy::RESPONSE_CODE_CLASS,
                        "2",
                    ),
                    label(
                        switchyard_proxy_config::metrics::envoy::CLUSTER_NAME,
                        cluster,
                    ),
                ],
                counter: Some(Counter {
                    value: Some(n),
                    ..Counter::default()
                }),
                ..Metric::default()
            }],
            ..MetricFamily::default()
        }],
    }
}

#[tokio::test]
async fn metrics_streams_are_authenticated_as_ads_streams_and_recorded_under_their_proxy() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let auth = StaticTokens::new().with("t1", ProxyKey::from("default/web-0"));
    let server = XdsServer::new(
        SnapshotStore::default(),
        Arc::new(auth),
        XdsConfig::default(),
    );
    let telemetry = server.telemetry();
    let (shutdown, signal) = oneshot::channel::<()>();
    let serving = tokio::spawn(serve_listener(listener, server, async {
        let _ = signal.await;
    }));
    let mut client = MetricsServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let web = ProxyId {
        namespace: "default".into(),
        pod: "web-0".into(),
    };
    let twos = |telemetry: &Telemetry, proxy: &ProxyId| {
        telemetry
            .snapshot(Duration::from_secs(60), |_| true)
            .query([proxy], |_| true)
            .requests[1]
    };
    let recorded = |telemetry: &Telemetry| -> Vec<ProxyId> {
        let snapshot = telemetry.snapshot(Duration::from_secs(60), |_| true);
        snapshot.proxies().cloned().collect()
    };

    // Without a token, or with an unknown one: refused, nothing recorded.
    let messages = || {
        tokio_stream::iter(vec![golden_message(
            Some("default/web-0"),
            "default/api|80",
            3.0,
        )])
    };
    let refused = client.stream_metrics(messages()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = client
        .stream_metrics(with_token(messages(), "forged"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // A first message without the node is refused.
    let refused = client
        .stream_metrics(with_token(
            tokio_stream::iter(vec![golden_message(None, "default/api|80", 1.0)]),
            "t1",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(recorded(&telemetry).is_empty());

    // web-0's token claiming another node: recorded as web-0, what the token proves.
    let claims_other = tokio_stream::iter(vec![
        golden_message(Some("default/other-0"), "default/api|80", 3.0),
        golden_message(None, "default/api|80", 2.0),
    ]);
    client
        .stream_metrics(with_token(claims_other, "t1"))
        .await
        .unwrap();
    assert_eq!(recorded(&telemetry), std::slice::from_ref(&web));
    assert_eq!(twos(&telemetry, &web), 5);

    let _ = shutdown.send(());
    serving.await.unwrap().unwrap();
}
