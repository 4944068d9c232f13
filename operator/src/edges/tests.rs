use std::{collections::BTreeMap, sync::Arc, time::Duration};

use switchyard_adapters::model::{
    Cluster, ClusterName, ClusterPolicy, Endpoint, Identity, Protocol, ProxyId, ServiceName,
};

use super::{End, Peers, Secured, edges};
use crate::telemetry::{
    Limits, Sample, StatPrefix, StatusClass, Subject, Telemetry, UpstreamCluster, Value,
};

const TRUST: &str = "cluster.local";
const MINUTE: Duration = Duration::from_secs(60);

fn proxy(namespace: &str, pod: &str) -> ProxyId {
    ProxyId {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
    }
}

fn cluster(ns: &str, svc: &str, port: u16, accounts: &[Option<&str>]) -> Arc<Cluster> {
    let service = ServiceName::new(ns, svc);
    let endpoints = accounts
        .iter()
        .enumerate()
        .map(|(i, sa)| Endpoint {
            address: format!("10.0.0.{}:8080", i + 1).parse().unwrap(),
            identity: sa.map(|sa| Identity::new(ns, sa)),
        })
        .collect();
    Arc::new(Cluster {
        name: ClusterName::new(&service, port),
        service,
        port,
        protocol: Protocol::Http,
        endpoints,
        policy: ClusterPolicy::default(),
    })
}

fn clusters(list: &[Arc<Cluster>]) -> Arc<BTreeMap<ClusterName, Arc<Cluster>>> {
    Arc::new(
        list.iter()
            .map(|c| (c.name.clone(), Arc::clone(c)))
            .collect(),
    )
}

fn requests(subject: Subject, class: StatusClass, n: u64) -> Sample {
    Sample {
        subject,
        value: Value::Requests(class, n),
    }
}

fn upstream(name: &str) -> Subject {
    Subject::Upstream(UpstreamCluster::new(name))
}

fn listener(prefix: &str) -> Subject {
    Subject::Listener(StatPrefix::new(prefix))
}

/// `client-0` (account `client`) calls `web` (two meshed endpoints as `web`) and `legacy` (one
/// endpoint outside the mesh); `web-0` served those requests over mTLS and 3 from a caller
/// outside the mesh in plaintext.
fn mesh() -> (Telemetry, Peers) {
    let telemetry = Telemetry::new(Limits::default());
    let client = proxy("demo", "client-0");
    let web = proxy("demo", "web-0");
    telemetry.record(
        &client,
        &[
            requests(upstream("demo/web|80"), StatusClass::Success, 18),
            requests(upstream("demo/web|80"), StatusClass::ServerError, 2),
            requests(upstream("demo/web|8080"), StatusClass::Success, 5),
            requests(upstream("other/legacy|80"), StatusClass::Success, 4),
            // A cluster the proxy no longer has (or never had) is no edge.
            requests(upstream("demo/gone|80"), StatusClass::Success, 9),
            requests(listener("outbound_http"), StatusClass::Success, 36),
        ],
    );
    telemetry.record(
        &web,
        &[
            requests(listener("inbound_8080_mtls"), StatusClass::Success, 23),
            requests(listener("inbound_8080_mtls"), StatusClass::ServerError, 2),
            requests(listener("inbound_8080"), StatusClass::Success, 3),
        ],
    );
    let mut peers = Peers::new(TRUST, []);
    peers.insert(
        client,
        Identity::new("demo", "client"),
        clusters(&[
            cluster("demo", "web", 80, &[Some("web"), Some("web")]),
            cluster("demo", "web", 8080, &[Some("web"), Some("web")]),
            cluster("other", "legacy", 80, &[None]),
        ]),
    );
    peers.insert(web, Identity::new("demo", "web"), clusters(&[]));
    (telemetry, peers)
}

fn pod(ns: &str, name: &str) -> End {
    End::Pod {
        namespace: ns.to_owned(),
        name: name.to_owned(),
    }
}

fn svc(ns: &str, name: &str) -> End {
    End::Service {
        namespace: ns.to_owned(),
        name: name.to_owned(),
    }
}

#[test]
fn edges_name_both_identities_and_whether_they_are_mtls() {
    let (telemetry, peers) = mesh();
    let got = edges(&telemetry.snapshot(MINUTE, |_| true), &peers, None);
    let rows: Vec<_> = got
        .iter()
        .map(|e| {
            (
                e.src.clone(),
                e.dst.clone(),
                e.client_id.as_deref(),
                e.server_ids.clone(),
                e.secured,
                e.success_count,
                e.failure_count,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                pod("demo", "client-0"),
                svc("demo", "web"),
                Some("spiffe://cluster.local/ns/demo/sa/client"),
                vec!["spiffe://cluster.local/ns/demo/sa/web".to_owned()],
                Secured::Mtls,
                // Ports 80 and 8080 are one edge.
                23,
                2,
            ),
            (
                pod("demo", "client-0"),
                svc("other", "legacy"),
                Some("spiffe://cluster.local/ns/demo/sa/client"),
                vec![],
                Secured::ServerUnmeshed,
                4,
                0,
            ),
            (
                End::Unmeshed,
                pod("demo", "web-0"),
                None,
                vec!["spiffe://cluster.local/ns/demo/sa/web".to_owned()],
                Secured::ClientUnmeshed,
                3,
                0,
            ),
        ]
    );
}

#[test]
fn a_cluster_with_some_unmeshed_endpoints_is_partly_secured() {
    let telemetry = Telemetry::new(Limits::default());
    let client = proxy("demo", "client-0");
    telemetry.record(
        &client,
        &[requests(upstream("demo/web|80"), StatusClass::Success, 1)],
    );
    let mut peers = Peers::new(TRUST, []);
    peers.insert(
        client,
        Identity::new("demo", "client"),
        clusters(&[cluster("demo", "web", 80, &[Some("web"), None])]),
    );
    let got = edges(&telemetry.snapshot(MINUTE, |_| true), &peers, None);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].secured, Secured::Partly);
}

#[test]
fn a_namespace_keeps_the_edges_with_an_end_in_it() {
    let (telemetry, peers) = mesh();
    let other = edges(&telemetry.snapshot(MINUTE, |_| true), &peers, Some("other"));
    assert_eq!(
        other.iter().map(|e| &e.dst).collect::<Vec<_>>(),
        [&svc("other", "legacy")]
    );
    assert!(
        edges(
            &telemetry.snapshot(MINUTE, |_| true),
            &peers,
            Some("nowhere")
        )
        .is_empty()
    );
    assert_eq!(
        edges(&telemetry.snapshot(MINUTE, |_| true), &peers, Some("demo")).len(),
        3
    );
}

#[test]
fn a_proxy_the_control_plane_does_not_know_gives_only_its_unmeshed_callers() {
    let (telemetry, _) = mesh();
    let got = edges(
        &telemetry.snapshot(MINUTE, |_| true),
        &Peers::new(TRUST, []),
        None,
    );
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].src, End::Unmeshed);
    assert!(got[0].server_ids.is_empty());
}
