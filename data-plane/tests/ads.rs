//! The ADS edge of the proxy against an in-process fake control plane: a good configuration is
//! ACKed and served; malformed responses are NACKed (code 3, naming resource and field) while
//! the last good configuration keeps serving; a dropped stream is reopened, offering the held
//! versions, and the configuration serves all along (static stability).

// Helpers outside `#[test]` functions are test code too: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster,
            listener::v3::{Filter, Listener, filter},
            route::v3::{RouteConfiguration, route_match},
        },
        extensions::filters::http::router::v3::Router,
        service::discovery::v3::{
            DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
            Resource as WireResource,
            aggregated_discovery_service_server::{
                AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
            },
        },
        r#type::matcher::v3::RegexMatcher,
    },
    google::protobuf::Any,
};
use prost::{Message, Name};
use switchyard_adapters::{
    envoy::{self as adapter, BootstrapOptions, EnvoyOptions, XdsApi, XdsCa},
    model::{MeshSettings, Protocol, ProxyConfig},
    test_support,
};
use switchyard_proxy::{
    ads::Ads,
    bootstrap::Bootstrap,
    config::{NetworkFilter, PathMatch, Runtime},
    state::State,
    xds::TypeUrl,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// How long any one expected event may take.
const PATIENCE: Duration = Duration::from_secs(10);
const TOKEN: &str = "test-token";
const NODE: &str = "demo/client-0";
const LISTENER: &str = "outbound_http";
const ROUTE: &str = "outbound_http";
const CLUSTER: &str = "demo/web|80";

// === the fake control plane ===

/// One stream the fake control plane accepted: what the proxy sends, and where to answer.
struct Stream {
    /// The `authorization` metadata the stream was opened with.
    authorization: Option<String>,
    requests: Streaming<DeltaDiscoveryRequest>,
    responses: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
}

struct FakeAds {
    streams: mpsc::UnboundedSender<Stream>,
    /// While false, a new stream is handed to the test but its response headers are held
    /// back, so the proxy's side of it is not open yet.
    open: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeAds {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "this control plane speaks delta ADS only",
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (tx, rx) = mpsc::channel(16);
        let stream = Stream {
            authorization,
            requests: request.into_inner(),
            responses: tx,
        };
        if self.streams.send(stream).is_err() {
            return Err(Status::unavailable("the test is over"));
        }
        let mut open = self.open.clone();
        if open.wait_for(|open| *open).await.is_err() {
            return Err(Status::unavailable("the test is over"));
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A fake control plane on `127.0.0.1:0`: its address, the streams it accepts, and the gate
/// of new streams (open at first).
async fn start_control_plane() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Stream>,
    watch::Sender<bool>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (streams, accepted) = mpsc::unbounded_channel();
    let (gate, open) = watch::channel(true);
    let server = tonic::transport::Server::builder()
        .add_service(AggregatedDiscoveryServiceServer::new(FakeAds {
            streams,
            open,
        }))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    (addr, accepted, gate)
}

async fn next_stream(accepted: &mut mpsc::UnboundedReceiver<Stream>) -> Stream {
    tokio::time::timeout(PATIENCE, accepted.recv())
        .await
        .expect("no ADS stream within the patience")
        .expect("the fake control plane stopped")
}

impl Stream {
    async fn next_request(&mut self) -> DeltaDiscoveryRequest {
        tokio::time::timeout(PATIENCE, self.requests.message())
            .await
            .expect("no request within the patience")
            .expect("the stream failed")
            .expect("the proxy closed the stream")
    }

    async fn send(&self, response: DeltaDiscoveryResponse) {
        self.responses.send(Ok(response)).await.unwrap();
    }

    /// Reads requests up to the answer to `nonce`; returns the subscription changes before it
    /// (by type URL) and the answer.
    async fn answer_to(
        &mut self,
        nonce: &str,
    ) -> (Vec<DeltaDiscoveryRequest>, DeltaDiscoveryRequest) {
        let mut before = Vec::new();
        loop {
            let request = self.next_request().await;
            if request.response_nonce == nonce {
                return (before, request);
            }
            assert!(
                request.response_nonce.is_empty(),
                "an answer to another nonce: {request:?}"
            );
            before.push(request);
        }
    }

    /// Sends a response and expects its ACK; returns the subscription changes it caused.
    async fn expect_ack(&mut self, response: DeltaDiscoveryResponse) -> Vec<DeltaDiscoveryRequest> {
        let nonce = response.nonce.clone();
        let type_url = response.type_url.clone();
        self.send(response).await;
        let (before, ack) = self.answer_to(&nonce).await;
        assert_eq!(ack.type_url, type_url);
        assert!(ack.error_detail.is_none(), "NACK: {:?}", ack.error_detail);
        before
    }

    /// Sends a response and expects its NACK; returns the NACK's message.
    async fn expect_nack(&mut self, response: DeltaDiscoveryResponse) -> String {
        let nonce = response.nonce.clone();
        let type_url = response.type_url.clone();
        self.send(response).await;
        let (before, nack) = self.answer_to(&nonce).await;
        assert!(
            before.is_empty(),
            "a rejected response changed subscriptions: {before:?}"
        );
        assert_eq!(nack.type_url, type_url);
        let status = nack.error_detail.expect("an ACK where a NACK was due");
        assert_eq!(status.code, 3, "INVALID_ARGUMENT: {status:?}");
        status.message
    }
}

// === helpers ===

/// Polls `check` until it holds, for up to the patience.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `demo/client-0`, which reaches `web:80` (one HTTP route to one cluster).
fn proxy(endpoints: &[&str]) -> ProxyConfig {
    let web = test_support::plain_service(
        "demo",
        "web",
        Some(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))),
        80,
        Protocol::Http,
    );
    let endpoints = endpoints
        .iter()
        .map(|a| test_support::endpoint(a, None))
        .collect();
    let cluster = test_support::cluster("demo", "web", 80, Protocol::Http, endpoints);
    test_support::proxy("demo", "client-0", "client", [web], [cluster], vec![])
}

/// The adapter's resources of one type, as `(name, Any)`.
fn compiled(proxy: &ProxyConfig, ty: TypeUrl) -> Vec<(String, Any)> {
    let out = adapter::compile(proxy, &MeshSettings::default(), &EnvoyOptions::default());
    out.resources
        .into_iter()
        .filter(|r| r.type_url == ty.type_url())
        .map(|r| (r.name, r.resource))
        .collect()
}

fn response(
    ty: TypeUrl,
    nonce: &str,
    version: &str,
    resources: Vec<(String, Any)>,
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: ty.type_url().to_owned(),
        nonce: nonce.to_owned(),
        resources: resources
            .into_iter()
            .map(|(name, resource)| WireResource {
                name,
                version: version.to_owned(),
                resource: Some(resource),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// The one resource of a type the adapter emits, decoded.
fn only<M: Message + Default>(proxy: &ProxyConfig, ty: TypeUrl, name: &str) -> M {
    let all = compiled(proxy, ty);
    let [(found, resource)] = all.as_slice() else {
        panic!("{ty}: {all:?}");
    };
    assert_eq!(found, name);
    M::decode(resource.value.as_slice()).unwrap()
}

/// The state of the good configuration: the listener serves HTTP on RDS `outbound_http`, whose
/// first route is a prefix route, and the cluster has `endpoints` endpoints.
fn serves_good_config(rt: &Runtime, endpoints: usize) -> bool {
    let http_listener = rt.listeners.get(LISTENER).is_some_and(|l| {
        !l.chains.is_empty()
            && l.chains
                .iter()
                .all(|c| matches!(c.filter, NetworkFilter::Http(_)))
    });
    let prefix_route = rt.routes.get(ROUTE).is_some_and(|t| {
        t.virtual_hosts
            .first()
            .and_then(|v| v.routes.first())
            .is_some_and(|r| matches!(r.matcher.path, PathMatch::Prefix(_)))
    });
    let cluster = rt
        .clusters
        .get(CLUSTER)
        .is_some_and(|c| c.endpoints.len() == endpoints);
    http_listener && prefix_route && cluster && rt.clusters.len() == 1
}

fn versions(request: &DeltaDiscoveryRequest) -> BTreeMap<&str, &str> {
    request
        .initial_resource_versions
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

// === the test ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_keep_the_last_configuration_and_a_new_stream_offers_it() {
    let (addr, mut accepted, gate) = start_control_plane().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let mut options = BootstrapOptions::new(
        NODE,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        addr.ip().to_string(),
        addr.port(),
        &token_file,
        XdsCa::File(dir.path().join("ca.crt")),
    );
    options.api = XdsApi::Delta;
    let mut bootstrap = Bootstrap::from_json(&adapter::bootstrap(&options)).unwrap();
    // This control plane is h2c (the TLS edge has tests of its own in the operator and e2e).
    bootstrap.xds_tls = None;
    let state = Arc::new(State::default());
    let ads = tokio::spawn(Ads::new(bootstrap, state.clone()).run());

    // --- A good configuration is ACKed and served. ---
    let mut s1 = next_stream(&mut accepted).await;
    assert_eq!(s1.authorization.as_deref(), Some("Bearer test-token"));
    let cds = s1.next_request().await;
    assert_eq!(cds.type_url, TypeUrl::Cluster.type_url());
    assert_eq!(cds.node.as_ref().map(|n| n.id.as_str()), Some(NODE));
    assert_eq!(cds.resource_names_subscribe, ["*"]);
    assert!(cds.initial_resource_versions.is_empty());
    let lds = s1.next_request().await;
    assert_eq!(lds.type_url, TypeUrl::Listener.type_url());
    assert_eq!(lds.resource_names_subscribe, ["*"]);

    let good = proxy(&["10.0.0.1:8080"]);
    let subs = s1
        .expect_ack(response(
            TypeUrl::Cluster,
            "c1",
            "1",
            compiled(&good, TypeUrl::Cluster),
        ))
        .await;
    let [eds_sub] = subs.as_slice() else {
        panic!("{subs:?}")
    };
    assert_eq!(eds_sub.type_url, TypeUrl::ClusterLoadAssignment.type_url());
    let eds_names = eds_sub.resource_names_subscribe.clone();
    let endpoints = compiled(&good, TypeUrl::ClusterLoadAssignment);
    assert_eq!(
        eds_names,
        endpoints.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    );
    s1.expect_ack(response(
        TypeUrl::ClusterLoadAssignment,
        "e1",
        "1",
        endpoints,
    ))
    .await;
    let subs = s1
        .expect_ack(response(
            TypeUrl::Listener,
            "l1",
            "1",
            compiled(&good, TypeUrl::Listener),
        ))
        .await;
    let [rds_sub] = subs.as_slice() else {
        panic!("{subs:?}")
    };
    assert_eq!(rds_sub.type_url, TypeUrl::RouteConfiguration.type_url());
    assert_eq!(rds_sub.resource_names_subscribe, [ROUTE]);
    s1.expect_ack(response(
        TypeUrl::RouteConfiguration,
        "r1",
        "1",
        compiled(&good, TypeUrl::RouteConfiguration),
    ))
    .await;

    eventually("the good configuration is served", || {
        serves_good_config(&state.runtime(), 1)
    })
    .await;
    assert!(state.xds.connected() && state.xds.synced());
    assert_eq!(state.xds.accepted(), 4);
    assert_eq!(state.xds.rejected(), 0);
    assert_eq!(state.xds.streams(), 1);

    // --- Malformed responses are NACKed; the last good configuration stays. ---
    // A resource whose bytes do not decode (a length-delimited field running past the end).
    let undecodable = Any {
        type_url: Cluster::type_url(),
        value: vec![0x0a, 0xff, 0x01, b'x'],
    };
    let message = s1
        .expect_nack(response(
            TypeUrl::Cluster,
            "c2",
            "2",
            vec![("demo/bad|80".to_owned(), undecodable)],
        ))
        .await;
    assert!(
        message.starts_with("cluster demo/bad|80: resource: cannot decode"),
        "{message}"
    );
    eventually("the first NACK is counted", || state.xds.rejected() == 1).await;
    assert!(serves_good_config(&state.runtime(), 1));

    // The listener, with a filter the proxy does not have: an HTTP router as network filter.
    let mut listener: Listener = only(&good, TypeUrl::Listener, LISTENER);
    listener.filter_chains[0].filters = vec![Filter {
        name: "envoy.filters.http.router".to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&Router::default()))),
    }];
    let message = s1
        .expect_nack(response(
            TypeUrl::Listener,
            "l2",
            "2",
            vec![(LISTENER.to_owned(), any(&listener))],
        ))
        .await;
    assert!(
        message.starts_with("listener outbound_http: filter_chains[0].filters[0].typed_config: "),
        "{message}"
    );
    eventually("the second NACK is counted", || state.xds.rejected() == 2).await;
    assert!(serves_good_config(&state.runtime(), 1));

    // The route configuration, with a regex that does not compile.
    let mut routes: RouteConfiguration = only(&good, TypeUrl::RouteConfiguration, ROUTE);
    let first = &mut routes.virtual_hosts[0].routes[0];
    first.r#match.as_mut().unwrap().path_specifier =
        Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: "/a[".to_owned(),
            ..Default::default()
        }));
    let message = s1
        .expect_nack(response(
            TypeUrl::RouteConfiguration,
            "r2",
            "2",
            vec![(ROUTE.to_owned(), any(&routes))],
        ))
        .await;
    assert_eq!(
        message,
        "route configuration outbound_http: virtual_hosts[0].routes[0].match.safe_regex.regex: \
         not a valid regular expression"
    );
    eventually("the third NACK is counted", || state.xds.rejected() == 3).await;
    assert!(serves_good_config(&state.runtime(), 1));
    assert_eq!(state.xds.last_error().as_deref(), Some(message.as_str()));
    assert!(!ads.is_finished(), "the ADS task ended");

    // The stream still works: a good update (a second endpoint) is ACKed and served.
    let grown = proxy(&["10.0.0.1:8080", "10.0.0.2:8080"]);
    s1.expect_ack(response(
        TypeUrl::ClusterLoadAssignment,
        "e2",
        "2",
        compiled(&grown, TypeUrl::ClusterLoadAssignment),
    ))
    .await;
    eventually("the second endpoint is served", || {
        serves_good_config(&state.runtime(), 2)
    })
    .await;
    assert_eq!(state.xds.accepted(), 5);
    assert_eq!(state.xds.rejected(), 3);

    // --- The control plane drops the stream; the proxy keeps serving and comes back. ---
    gate.send_replace(false);
    drop(s1);
    eventually("the proxy notices the stream is gone", || {
        !state.xds.connected()
    })
    .await;
    assert!(state.xds.disconnected_since().is_some());
    let mut s2 = next_stream(&mut accepted).await;
    assert_eq!(s2.authorization.as_deref(), Some("Bearer test-token"));
    // The new stream offers what is held: the accepted versions, never a rejected one.
    let expected: [(TypeUrl, Vec<String>, BTreeMap<&str, &str>); 4] = [
        (
            TypeUrl::Cluster,
            vec!["*".to_owned()],
            BTreeMap::from([(CLUSTER, "1")]),
        ),
        (
            TypeUrl::ClusterLoadAssignment,
            eds_names.clone(),
            eds_names.iter().map(|n| (n.as_str(), "2")).collect(),
        ),
        (
            TypeUrl::Listener,
            vec!["*".to_owned()],
            BTreeMap::from([(LISTENER, "1")]),
        ),
        (
            TypeUrl::RouteConfiguration,
            vec![ROUTE.to_owned()],
            BTreeMap::from([(ROUTE, "1")]),
        ),
    ];
    for (i, (ty, names, held)) in expected.iter().enumerate() {
        let request = s2.next_request().await;
        assert_eq!(request.type_url, ty.type_url(), "request {i}");
        assert_eq!(&request.resource_names_subscribe, names, "{ty}");
        assert_eq!(&versions(&request), held, "{ty}");
        assert!(request.response_nonce.is_empty(), "{ty}");
        assert_eq!(
            request.node.is_some(),
            i == 0,
            "{ty}: only the first carries the node"
        );
    }
    // Until the control plane answers, the proxy is disconnected and serves what it had.
    assert!(!state.xds.connected());
    assert!(serves_good_config(&state.runtime(), 2));
    assert!(
        state.xds.synced(),
        "readiness survives the control plane's absence"
    );

    gate.send_replace(true);
    eventually("the proxy is connected again", || state.xds.connected()).await;
    assert_eq!(state.xds.streams(), 2);
    assert!(state.xds.disconnected_since().is_none());
    assert!(serves_good_config(&state.runtime(), 2));

    // Nothing changed, so the control plane may answer with nothing new; an empty response
    // for the held type is ACKed and keeps everything.
    s2.expect_ack(response(TypeUrl::Cluster, "c3", "1", vec![]))
        .await;
    assert!(serves_good_config(&state.runtime(), 2));
    ads.abort();
}
