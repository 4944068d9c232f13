use std::time::Duration;

use serde_json::json;

use super::*;

const ROOT: &str = "/apis/metrics.smi-spec.io/v1alpha1";

fn parse(path: &str, query: Option<&str>) -> Result<Request, RequestError> {
    Request::parse(&format!("{ROOT}{path}"), query)
}

#[test]
fn every_path_of_the_spec_parses_to_its_request() {
    let w = DEFAULT_WINDOW;
    assert_eq!(parse("", None), Ok(Request::Discovery));
    assert_eq!(parse("/", None), Ok(Request::Discovery));
    assert_eq!(
        parse("/pods", None),
        Ok(Request::List {
            kind: ResourceKind::Pod,
            namespace: None,
            window: w
        })
    );
    assert_eq!(
        parse("/namespaces/demo", None),
        Ok(Request::Get {
            kind: ResourceKind::Namespace,
            namespace: None,
            name: "demo".into(),
            window: w
        })
    );
    assert_eq!(
        parse("/namespaces/demo/edges", None),
        Ok(Request::Edges {
            kind: ResourceKind::Namespace,
            namespace: None,
            name: "demo".into(),
            window: w
        })
    );
    assert_eq!(
        parse("/namespaces/demo/deployments", None),
        Ok(Request::List {
            kind: ResourceKind::Deployment,
            namespace: Some("demo".into()),
            window: w
        })
    );
    assert_eq!(
        parse("/namespaces/demo/trafficsplits/web-split", Some("t=1m")),
        Ok(Request::Get {
            kind: ResourceKind::TrafficSplit,
            namespace: Some("demo".into()),
            name: "web-split".into(),
            window: Duration::from_secs(60)
        })
    );
    assert_eq!(
        parse("/namespaces/demo/pods/web-0/edges", Some("x=1&t=10s")),
        Ok(Request::Edges {
            kind: ResourceKind::Pod,
            namespace: Some("demo".into()),
            name: "web-0".into(),
            window: Duration::from_secs(10)
        })
    );
}

#[test]
fn unknown_paths_and_resources_are_404_naming_what_is_wrong() {
    let e = parse("/namespaces/demo/configmaps/x", None).unwrap_err();
    assert_eq!(e.status(), 404);
    assert!(e.to_string().contains("\"configmaps\""), "{e}");
    // Namespaces are not namespaced.
    assert_eq!(
        parse("/namespaces/demo/namespaces/x", None)
            .unwrap_err()
            .status(),
        404
    );
    assert_eq!(
        parse("/namespaces/demo/pods/web-0/logs", None)
            .unwrap_err()
            .status(),
        404
    );
    assert!(matches!(
        Request::parse("/apis/metrics.smi-spec.io/v1alpha10/pods", None),
        Err(RequestError::OutsideGroup { .. })
    ));
    let status = parse("/nodes", None).unwrap_err().to_status();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 404);
    assert_eq!(status["reason"], "NotFound");
}

#[test]
fn the_window_is_a_go_duration_up_to_ten_minutes() {
    let window = |t: &str| match parse("/pods", Some(&format!("t={t}"))) {
        Ok(Request::List { window, .. }) => Ok(window),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    assert_eq!(window("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(window("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(window("10m"), Ok(Duration::from_secs(600)));
    assert_eq!(window("1500ms"), Ok(Duration::from_millis(1500)));
    for bad in [
        "",
        "0s",
        "11m",
        "1h",
        "5",
        "m",
        "-1s",
        "1.5s",
        "1d",
        "99999999999999999999h",
    ] {
        let e = window(bad).unwrap_err();
        assert_eq!(e.status(), 400, "{bad:?}: {e}");
        assert!(e.to_string().contains("t="), "{e}");
    }
}

#[test]
fn discovery_lists_each_kind_and_its_edges_with_get_and_list() {
    let d = discovery();
    assert_eq!(d["kind"], "APIResourceList");
    assert_eq!(d["groupVersion"], "metrics.smi-spec.io/v1alpha1");
    let resources = d["resources"].as_array().unwrap();
    let names: Vec<&str> = resources
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    // Every kind, each with its edges; those made of serving Pods with their routes.
    assert_eq!(
        names,
        [
            "namespaces",
            "namespaces/edges",
            "pods",
            "pods/edges",
            "pods/routes",
            "deployments",
            "deployments/edges",
            "deployments/routes",
            "statefulsets",
            "statefulsets/edges",
            "statefulsets/routes",
            "daemonsets",
            "daemonsets/edges",
            "daemonsets/routes",
            "services",
            "services/edges",
            "services/routes",
            "trafficsplits",
            "trafficsplits/edges"
        ]
    );
    let ns = resources
        .iter()
        .find(|r| r["name"] == "namespaces")
        .unwrap();
    assert_eq!(ns["namespaced"], false);
    let edges = resources
        .iter()
        .find(|r| r["name"] == "pods/edges")
        .unwrap();
    assert_eq!(edges["namespaced"], true);
    assert_eq!(edges["kind"], "TrafficMetrics");
    assert_eq!(edges["verbs"], json!(["get", "list"]));
}

#[test]
fn an_item_is_written_as_the_spec_writes_it() {
    let golden = GoldenMetrics {
        success_count: 180,
        failure_count: 20,
        p50: Some(Duration::from_millis(12)),
        p90: Some(Duration::from_micros(40_250)),
        p95: Some(Duration::from_millis(120)),
        p99: Some(Duration::from_secs(2)),
        tcp_open_connections: 3,
    };
    let mut item = TrafficMetrics::new(
        ObjectReference::to(ResourceKind::TrafficSplit, Some("demo"), "web-split"),
        Edge {
            direction: Direction::From,
            side: Side::Client,
            resource: ObjectReference::default(),
        },
        "2026-12-06T21:00:00Z",
        Duration::from_secs(60),
        &golden,
    );
    item.backend = Some(Backend {
        apex: "web".into(),
        name: "web-v2".into(),
        weight: 10,
    });
    let list = TrafficMetricsList::new(
        ObjectReference {
            kind: Some("TrafficSplit".into()),
            namespace: Some("demo".into()),
            name: None,
        },
        vec![item],
    );
    assert_eq!(
        serde_json::to_value(&list).unwrap(),
        json!({
            "apiVersion": "metrics.smi-spec.io/v1alpha1",
            "kind": "TrafficMetricsList",
            "metadata": {},
            "resource": {"kind": "TrafficSplit", "namespace": "demo"},
            "items": [{
                "apiVersion": "metrics.smi-spec.io/v1alpha1",
                "kind": "TrafficMetrics",
                "metadata": {
                    "name": "web-split",
                    "namespace": "demo",
                    "creationTimestamp": "2026-12-06T21:00:00Z",
                    "annotations": {
                        "metrics.switchyard.dev/p95-response-latency": "120m",
                        "metrics.switchyard.dev/tcp-open-connections": "3"
                    }
                },
                "resource": {"kind": "TrafficSplit", "namespace": "demo", "name": "web-split"},
                "edge": {"direction": "from", "side": "client", "resource": {}},
                "backend": {"apex": "web", "name": "web-v2", "weight": 10},
                "timestamp": "2026-12-06T21:00:00Z",
                "window": "1m0s",
                "metrics": [
                    {"name": "p99_response_latency", "unit": "seconds", "value": "2"},
                    {"name": "p90_response_latency", "unit": "seconds", "value": "40250u"},
                    {"name": "p50_response_latency", "unit": "seconds", "value": "12m"},
                    {"name": "success_count", "value": "180"},
                    {"name": "failure_count", "value": "20"}
                ]
            }]
        })
    );
}

#[test]
fn a_percentile_without_measurements_is_left_out() {
    let names: Vec<&str> = GoldenMetrics::default()
        .metrics()
        .iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["success_count", "failure_count"]);
    // The p95 annotation too; the connections are a count, 0.
    assert_eq!(
        serde_json::Value::Object(GoldenMetrics::default().annotations()),
        json!({"metrics.switchyard.dev/tcp-open-connections": "0"})
    );
}

#[test]
fn windows_are_written_as_go_writes_durations() {
    for (d, s) in [
        (Duration::from_secs(30), "30s"),
        (Duration::from_secs(60), "1m0s"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(600), "10m0s"),
        (Duration::from_millis(1500), "1.5s"),
        (Duration::from_millis(500), "500ms"),
        (Duration::from_secs(3661), "1h1m1s"),
    ] {
        assert_eq!(go_format(d), s);
    }
}

#[test]
fn quantities_are_exact_and_shortest() {
    for (d, s) in [
        (Duration::ZERO, "0"),
        (Duration::from_secs(3), "3"),
        (Duration::from_millis(10), "10m"),
        (Duration::from_micros(250), "250u"),
        (Duration::from_nanos(999), "0"),
    ] {
        assert_eq!(seconds_quantity(d), s);
    }
}

// === answer: each kind resolved into its Pods ===

use crate::{
    index::{
        Owner, WorkloadKind, Workloads,
        workloads::{PodEntry, Split, SplitBackend},
    },
    telemetry::{
        Sample, Snapshot, StatPrefix, StatusClass, Subject, Telemetry, UpstreamCluster, Value,
    },
};
use switchyard_adapters::model::{ProxyId, ServiceName};

fn id(ns: &str, pod: &str) -> ProxyId {
    ProxyId {
        namespace: ns.into(),
        pod: pod.into(),
    }
}

fn served(n_ok: u64, n_failed: u64) -> Vec<Sample> {
    let listener = Subject::Listener(StatPrefix::new("inbound_8080"));
    vec![
        Sample {
            subject: listener.clone(),
            value: Value::Requests(StatusClass::Success, n_ok),
        },
        Sample {
            subject: listener,
            value: Value::Requests(StatusClass::ServerError, n_failed),
        },
    ]
}

fn sent(cluster: &str, n_ok: u64) -> Sample {
    Sample {
        subject: Subject::Upstream(UpstreamCluster::new(cluster)),
        value: Value::Requests(StatusClass::Success, n_ok),
    }
}

fn owned(kind: WorkloadKind, name: &str, meshed: bool) -> PodEntry {
    PodEntry {
        owner: Some(Owner {
            kind,
            name: name.into(),
        }),
        meshed,
        ..PodEntry::default()
    }
}

/// demo: Deployment web (web-a, web-b meshed; web-c not), StatefulSet db (db-0), DaemonSet
/// agent (agent-x), a bare Pod lone; Service web behind web-a and web-c; a split of web to
/// web-v1 (90) and web-v2 (10). web-a served 10 (1 failed), web-b 5, db-0 7, lone 100;
/// client-0 (pushed, unknown to the index) sent 30 to web-v1 and 4 to web-v2, lone 2 to web-v2.
fn mesh() -> (Telemetry, Workloads) {
    let t = Telemetry::default();
    t.record(&id("demo", "web-a"), &served(9, 1));
    t.record(&id("demo", "web-b"), &served(5, 0));
    t.record(&id("demo", "db-0"), &served(7, 0));
    t.record(&id("demo", "lone"), &served(100, 0));
    t.record(&id("demo", "lone"), &[sent("demo/web-v2|80", 2)]);
    t.record(
        &id("demo", "client-0"),
        &[sent("demo/web-v1|80", 30), sent("demo/web-v2|80", 4)],
    );
    let mut w = Workloads::default();
    w.insert_pod(
        id("demo", "web-a"),
        owned(WorkloadKind::Deployment, "web", true),
    );
    w.insert_pod(
        id("demo", "web-b"),
        owned(WorkloadKind::Deployment, "web", true),
    );
    w.insert_pod(
        id("demo", "web-c"),
        owned(WorkloadKind::Deployment, "web", false),
    );
    w.insert_pod(
        id("demo", "db-0"),
        owned(WorkloadKind::StatefulSet, "db", true),
    );
    w.insert_pod(
        id("demo", "agent-x"),
        owned(WorkloadKind::DaemonSet, "agent", true),
    );
    // The same name in another namespace is another Deployment.
    w.insert_pod(
        id("other", "web-z"),
        owned(WorkloadKind::Deployment, "web", true),
    );
    w.insert_pod(
        id("demo", "lone"),
        PodEntry {
            owner: None,
            meshed: true,
            ..PodEntry::default()
        },
    );
    w.insert_service(
        ServiceName::new("demo", "web"),
        [id("demo", "web-a"), id("demo", "web-c")],
    );
    w.insert_service(ServiceName::new("demo", "empty"), []);
    w.insert_split(
        "demo",
        "web-split",
        Split {
            apex: "web".into(),
            backends: vec![
                SplitBackend {
                    service: "web-v1".into(),
                    weight: 90,
                },
                SplitBackend {
                    service: "web-v2".into(),
                    weight: 10,
                },
            ],
        },
    );
    (t, w)
}

const TIMESTAMP: &str = "2026-12-06T21:00:00Z";

/// Answers `path` over a minute of `data`.
fn get_over(data: &Snapshot, w: &Workloads, path: &str) -> Result<serde_json::Value, RequestError> {
    answer(
        data,
        w,
        &crate::edges::Peers::default(),
        &parse(path, Some("t=1m"))?,
        TIMESTAMP,
    )
}

/// Answers `path` over the last minute of `t`, every proxy's series (the request's namespace
/// only where [`Request::proxies`] says so).
fn get(t: &Telemetry, w: &Workloads, path: &str) -> Result<serde_json::Value, RequestError> {
    let request = parse(path, Some("t=1m"))?;
    let data = t.snapshot(request.window().unwrap_or_default(), |p| {
        request.proxies().contains(p)
    });
    answer(
        &data,
        w,
        &crate::edges::Peers::default(),
        &request,
        TIMESTAMP,
    )
}

#[test]
fn a_known_object_whose_pods_pushed_nothing_answers_zeros() {
    let (t, w) = mesh();
    // web-c is known to the index and pushed nothing (to any replica): zeros, not 404.
    let item = get(&t, &w, "/namespaces/demo/pods/web-c").unwrap();
    assert_eq!(counts(&item), (0, 0), "{item}");
    let agent = get(&t, &w, "/namespaces/demo/daemonsets/agent").unwrap();
    assert_eq!(counts(&agent), (0, 0), "{agent}");
    let pods = get(&t, &w, "/namespaces/demo/pods").unwrap();
    assert!(
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["resource"]["name"] == "web-c"),
        "{pods}"
    );
}

#[test]
fn a_request_reads_only_the_proxies_it_needs() {
    let p = |path: &str| parse(path, None).unwrap();
    let demo = Proxies::Namespace("demo");
    assert_eq!(p("/namespaces/demo/pods").proxies(), demo);
    assert_eq!(p("/namespaces/demo/deployments/web/edges").proxies(), demo);
    assert_eq!(p("/namespaces/demo/services/web").proxies(), demo);
    assert_eq!(p("/namespaces/demo").proxies(), demo);
    assert_eq!(p("/namespaces/demo/edges").proxies(), demo);
    // A split's callers, and the edges into a namespace, may be anywhere.
    assert_eq!(
        p("/namespaces/demo/trafficsplits/web-split").proxies(),
        Proxies::All
    );
    assert_eq!(p("/namespaces/demo/trafficsplits").proxies(), Proxies::All);
    assert_eq!(p("/pods").proxies(), Proxies::All);
    assert_eq!(p("/namespaces").proxies(), Proxies::All);
    assert_eq!(
        parse("/edges", Some("namespace=demo")).unwrap().proxies(),
        Proxies::All
    );
    assert_eq!(
        parse("/edges", Some("t=10s&namespace=demo")),
        Ok(Request::MeshEdges {
            namespace: Some("demo".into()),
            window: Duration::from_secs(10)
        })
    );
    assert!(Proxies::Namespace("demo").contains(&id("demo", "x")));
    assert!(!Proxies::Namespace("demo").contains(&id("other", "x")));
}

fn latency(sample_micros: &[(u64, u64)]) -> Value {
    let mut l = crate::telemetry::Latency::default();
    for &(micros, n) in sample_micros {
        for _ in 0..n {
            l.observe_micros(micros);
        }
    }
    Value::Latency(l)
}

/// Two replicas' windows, merged, answer exactly as one store that recorded everything: counts,
/// percentiles (from the summed buckets, not either replica's), open connections (the newest
/// gauge), lists, splits and edges, for Pods whose streams stayed on one replica and for Pods
/// whose stream moved from one to the other within the window.
#[test]
fn two_replicas_merged_answer_as_one_store_holding_both() {
    use crate::telemetry::{Limits, Store};
    let (_, w) = mesh();
    let secs = Duration::from_secs;
    let listener = || Subject::Listener(StatPrefix::new("inbound_8080"));
    let sample = |subject: Subject, value: Value| Sample { subject, value };
    // What each replica recorded, and when; `one` records all of it.
    let (mut a, mut b, mut one) = (
        Store::new(Limits::default()),
        Store::new(Limits::default()),
        Store::new(Limits::default()),
    );
    let mut record = |on_a: bool, pod: &str, at: u64, samples: &[Sample]| {
        let store = if on_a { &mut a } else { &mut b };
        store.record(&id("demo", pod), secs(at), samples);
        one.record(&id("demo", pod), secs(at), samples);
    };
    // web-a moved from A to B: 90 fast requests on A, then 10 slow ones and a failure on B.
    record(true, "web-a", 5, &served(90, 0));
    record(
        true,
        "web-a",
        5,
        &[sample(listener(), latency(&[(800, 90)]))],
    );
    record(false, "web-a", 20, &served(10, 1));
    record(
        false,
        "web-a",
        20,
        &[sample(listener(), latency(&[(180_000, 10), (900, 1)]))],
    );
    // Its connections to its application: 7 open on A at 5 s, 3 on B at 20 s (the newer).
    record(true, "web-a", 5, &[gauge("inbound|8080", 7)]);
    record(false, "web-a", 20, &[gauge("inbound|8080", 3)]);
    // The others stayed: web-b and lone on A, db-0 and client-0 on B.
    record(true, "web-b", 8, &served(5, 0));
    record(true, "lone", 8, &served(100, 0));
    record(
        true,
        "lone",
        9,
        &[sent("demo/web-v2|80", 2), gauge("demo/web-v2|80", 2)],
    );
    record(false, "db-0", 12, &served(7, 0));
    record(
        false,
        "client-0",
        12,
        &[
            sent("demo/web-v1|80", 30),
            sent("demo/web-v2|80", 4),
            gauge("demo/web-v1|80", 5),
        ],
    );

    let now = secs(30);
    for path in [
        "/namespaces/demo/pods",
        "/namespaces/demo/pods/web-a",
        "/namespaces/demo/deployments/web",
        "/namespaces/demo/services/web",
        "/namespaces/demo/statefulsets/db",
        "/namespaces/demo/daemonsets/agent",
        "/namespaces/demo/trafficsplits/web-split",
        "/namespaces/demo/pods/client-0/edges",
        "/namespaces/demo/deployments/web/edges",
        "/namespaces/demo",
        "/namespaces",
        "/edges",
    ] {
        let request = parse(path, Some("t=1m")).unwrap();
        let window = request.window().unwrap();
        let proxies = request.proxies();
        let mut merged = a.snapshot(now, window, |p| proxies.contains(p));
        merged
            .merge(b.snapshot(now, window, |p| proxies.contains(p)))
            .unwrap();
        let whole = one.snapshot(now, window, |p| proxies.contains(p));
        assert_eq!(merged, whole, "{path}: the merged series");
        assert_eq!(
            get_over(&merged, &w, path).unwrap(),
            get_over(&whole, &w, path).unwrap(),
            "{path}"
        );
    }

    // And the numbers themselves, from the merge.
    let window = Duration::from_secs(60);
    let mut merged = a.snapshot(now, window, |_| true);
    merged.merge(b.snapshot(now, window, |_| true)).unwrap();
    let web_a = get_over(&merged, &w, "/namespaces/demo/pods/web-a").unwrap();
    assert_eq!(counts(&web_a), (100, 1), "{web_a}");
    assert_eq!(open_connections(&web_a), 3, "{web_a}");
    // 101 durations: 91 under 1 ms, 10 of 180 ms. The p50 is fast; the p99 (rank 100) slow,
    // which neither replica alone says (A has no slow one, B's p50 would be slow).
    let p = |name: &str| {
        seconds(
            web_a["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == name)
                .unwrap()["value"]
                .as_str()
                .unwrap(),
        )
    };
    assert!(
        p("p50_response_latency") <= Duration::from_millis(1),
        "{web_a}"
    );
    let (lower, upper) = bucket_around(Duration::from_millis(180));
    let p99 = p("p99_response_latency");
    assert!(p99 > lower && p99 <= upper, "{p99:?}: {web_a}");
    let web = get_over(&merged, &w, "/namespaces/demo/deployments/web").unwrap();
    assert_eq!(counts(&web), (105, 1), "{web}");
    let split = get_over(&merged, &w, "/namespaces/demo/trafficsplits/web-split").unwrap();
    let per_backend: Vec<(u64, u64)> = split["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(counts)
        .collect();
    assert_eq!(per_backend, [(30, 0), (6, 0)], "{split}");
    let edges = get_over(&merged, &w, "/namespaces/demo/pods/client-0/edges").unwrap();
    let to: Vec<(&str, u64)> = edges["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["edge"]["resource"]["name"].as_str().unwrap(), counts(i).0))
        .collect();
    assert_eq!(to, [("web-v1", 30), ("web-v2", 4)], "{edges}");
}

#[test]
fn a_partial_answer_names_each_missing_replica() {
    let (t, w) = mesh();
    let notes = [
        "replica switchyard-b did not answer: no answer within 2s".to_owned(),
        "replica switchyard-c did not answer: answered 500".to_owned(),
    ];
    for path in [
        "/namespaces/demo/pods",
        "/namespaces/demo/pods/web-a",
        "/edges",
    ] {
        let mut answer = get(&t, &w, path).unwrap();
        let whole = answer.clone();
        mark_partial(&mut answer, &[]);
        assert_eq!(answer, whole, "{path}: nothing missing, nothing marked");
        mark_partial(&mut answer, &notes);
        assert_eq!(
            answer["metadata"]["annotations"][PARTIAL_ANNOTATION],
            "replica switchyard-b did not answer: no answer within 2s; replica switchyard-c did not answer: answered 500",
            "{path}: {answer}"
        );
    }
    // An item keeps its own annotations beside it.
    let mut item = get(&t, &w, "/namespaces/demo/pods/web-a").unwrap();
    mark_partial(&mut item, &notes);
    assert!(
        item["metadata"]["annotations"][TCP_OPEN_CONNECTIONS_ANNOTATION].is_string(),
        "{item}"
    );
}

fn counts(item: &serde_json::Value) -> (u64, u64) {
    let c = |n: &str| -> u64 {
        item["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == n)
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    (c("success_count"), c("failure_count"))
}

fn meshed(item: &serde_json::Value) -> (String, String) {
    let a = &item["metadata"]["annotations"];
    (
        a[MESHED_PODS_ANNOTATION].as_str().unwrap().to_owned(),
        a[PODS_ANNOTATION].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_deployment_is_its_pods_summed_with_its_unmeshed_pods_counted() {
    let (t, w) = mesh();
    let item = get(&t, &w, "/namespaces/demo/deployments/web").unwrap();
    assert_eq!(
        item["resource"],
        json!({"kind": "Deployment", "namespace": "demo", "name": "web"})
    );
    assert_eq!(item["edge"]["side"], "server");
    // web-a and web-b; not other/web-z.
    assert_eq!(counts(&item), (14, 1), "{item}");
    assert_eq!(meshed(&item), ("2".into(), "3".into()));
    let e = get(&t, &w, "/namespaces/demo/deployments/nope").unwrap_err();
    assert_eq!(e.status(), 404);
    assert!(e.to_string().contains("\"nope\""), "{e}");
}

#[test]
fn statefulsets_and_daemonsets_are_their_direct_pods() {
    let (t, w) = mesh();
    let db = get(&t, &w, "/namespaces/demo/statefulsets/db").unwrap();
    assert_eq!(counts(&db), (7, 0));
    assert_eq!(meshed(&db), ("1".into(), "1".into()));
    // Known, meshed, nothing served yet: zeros, not a 404.
    let agent = get(&t, &w, "/namespaces/demo/daemonsets/agent").unwrap();
    assert_eq!(counts(&agent), (0, 0));
    assert_eq!(meshed(&agent), ("1".into(), "1".into()));
    // A kind does not find another's workload of the same name.
    assert_eq!(
        get(&t, &w, "/namespaces/demo/statefulsets/web")
            .unwrap_err()
            .status(),
        404
    );
}

#[test]
fn a_service_is_the_pods_its_endpoints_name() {
    let (t, w) = mesh();
    let web = get(&t, &w, "/namespaces/demo/services/web").unwrap();
    // web-a only: web-b is not behind it, web-c (un-meshed) served nothing measured.
    assert_eq!(counts(&web), (9, 1), "{web}");
    assert_eq!(meshed(&web), ("1".into(), "2".into()));
    let empty = get(&t, &w, "/namespaces/demo/services/empty").unwrap();
    assert_eq!(counts(&empty), (0, 0));
    assert_eq!(meshed(&empty), ("0".into(), "0".into()));
    assert_eq!(
        get(&t, &w, "/namespaces/demo/services/nope")
            .unwrap_err()
            .status(),
        404
    );
}

#[test]
fn lists_have_one_item_per_object_of_the_kind_in_scope() {
    let (t, w) = mesh();
    let names = |path: &str| -> Vec<(String, (u64, u64))> {
        get(&t, &w, path).unwrap()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let r = &i["resource"];
                (
                    format!(
                        "{}/{}",
                        r["namespace"].as_str().unwrap_or("-"),
                        r["name"].as_str().unwrap()
                    ),
                    counts(i),
                )
            })
            .collect()
    };
    assert_eq!(
        names("/namespaces/demo/deployments"),
        [("demo/web".to_owned(), (14, 1))]
    );
    assert_eq!(
        names("/deployments"),
        [
            ("demo/web".to_owned(), (14, 1)),
            ("other/web".to_owned(), (0, 0))
        ]
    );
    assert_eq!(
        names("/namespaces/demo/services"),
        [
            ("demo/empty".to_owned(), (0, 0)),
            ("demo/web".to_owned(), (9, 1))
        ]
    );
    // Pods: those the index knows (un-meshed too) and those that pushed (client-0).
    let pods: Vec<String> = names("/namespaces/demo/pods")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        pods,
        [
            "demo/agent-x",
            "demo/client-0",
            "demo/db-0",
            "demo/lone",
            "demo/web-a",
            "demo/web-b",
            "demo/web-c"
        ]
    );
    assert_eq!(
        names("/namespaces"),
        [
            ("-/demo".to_owned(), (121, 1)),
            ("-/other".to_owned(), (0, 0))
        ]
    );
}

#[test]
fn a_split_has_one_item_per_backend_counted_by_its_callers() {
    let (t, w) = mesh();
    let list = get(&t, &w, "/namespaces/demo/trafficsplits/web-split").unwrap();
    assert_eq!(list["kind"], "TrafficMetricsList");
    let items = list["items"].as_array().unwrap();
    let rows: Vec<(serde_json::Value, (u64, u64))> = items
        .iter()
        .map(|i| (i["backend"].clone(), counts(i)))
        .collect();
    assert_eq!(
        rows,
        [
            (
                json!({"apex": "web", "name": "web-v1", "weight": 90}),
                (30, 0)
            ),
            // client-0's 4 and lone's 2.
            (
                json!({"apex": "web", "name": "web-v2", "weight": 10}),
                (6, 0)
            ),
        ]
    );
    assert_eq!(
        items[0]["edge"],
        json!({"direction": "from", "side": "client", "resource": {}})
    );
    assert_eq!(
        items[0]["resource"],
        json!({"kind": "TrafficSplit", "namespace": "demo", "name": "web-split"})
    );
    // The list of the namespace's splits is the same items.
    let all = get(&t, &w, "/namespaces/demo/trafficsplits").unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    // Its edges: per calling Pod and backend.
    let edges = get(&t, &w, "/namespaces/demo/trafficsplits/web-split/edges").unwrap();
    let per_caller: Vec<(String, String, (u64, u64))> = edges["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["edge"]["resource"]["name"].as_str().unwrap().to_owned(),
                i["backend"]["name"].as_str().unwrap().to_owned(),
                counts(i),
            )
        })
        .collect();
    assert_eq!(
        per_caller,
        [
            ("client-0".to_owned(), "web-v1".to_owned(), (30, 0)),
            ("client-0".to_owned(), "web-v2".to_owned(), (4, 0)),
            ("lone".to_owned(), "web-v2".to_owned(), (2, 0)),
        ]
    );
    assert_eq!(
        get(&t, &w, "/namespaces/demo/trafficsplits/nope")
            .unwrap_err()
            .status(),
        404
    );
}

#[test]
fn a_workloads_edges_are_the_services_its_pods_called() {
    let (t, mut w) = mesh();
    w.insert_pod(
        id("demo", "client-0"),
        owned(WorkloadKind::Deployment, "client", true),
    );
    let edges = get(&t, &w, "/namespaces/demo/deployments/client/edges").unwrap();
    let to: Vec<(String, (u64, u64))> = edges["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["edge"]["direction"], "to");
            assert_eq!(i["edge"]["side"], "client");
            (
                i["edge"]["resource"]["name"].as_str().unwrap().to_owned(),
                counts(i),
            )
        })
        .collect();
    assert_eq!(
        to,
        [
            ("web-v1".to_owned(), (30, 0)),
            ("web-v2".to_owned(), (4, 0))
        ]
    );
    assert_eq!(
        edges["resource"],
        json!({"kind": "Deployment", "namespace": "demo", "name": "client"})
    );
}

#[test]
fn pods_and_namespaces_answer_as_before_without_the_index() {
    let (t, _) = mesh();
    let none = Workloads::default();
    let pod = get(&t, &none, "/namespaces/demo/pods/web-a").unwrap();
    assert_eq!(counts(&pod), (9, 1));
    assert_eq!(meshed(&pod), ("1".into(), "1".into()));
    assert_eq!(
        get(&t, &none, "/namespaces/demo/pods/nope")
            .unwrap_err()
            .status(),
        404
    );
    let ns = get(&t, &none, "/namespaces/demo").unwrap();
    assert_eq!(counts(&ns), (121, 1));
}

// === Switchyard's annotations: p95 and open TCP connections ===

/// A duration annotation (a quantity of seconds) of an item.
fn annotated_latency(item: &serde_json::Value) -> Duration {
    let q = item["metadata"]["annotations"][P95_LATENCY_ANNOTATION]
        .as_str()
        .unwrap_or_else(|| panic!("no p95: {item}"));
    seconds(q)
}

/// A quantity of seconds (`12m`, `250u`, `2`).
fn seconds(q: &str) -> Duration {
    let (n, scale) = match q.chars().last() {
        Some('m') => (&q[..q.len() - 1], 1e-3),
        Some('u') => (&q[..q.len() - 1], 1e-6),
        _ => (q, 1.0),
    };
    Duration::from_secs_f64(n.parse::<f64>().unwrap() * scale)
}

fn open_connections(item: &serde_json::Value) -> u64 {
    item["metadata"]["annotations"][TCP_OPEN_CONNECTIONS_ANNOTATION]
        .as_str()
        .unwrap_or_else(|| panic!("no connections: {item}"))
        .parse()
        .unwrap()
}

/// The bucket of [`LATENCY_BUCKETS_MICROS`] a duration falls in: (lower, upper].
fn bucket_around(d: Duration) -> (Duration, Duration) {
    use switchyard_proxy_config::metrics::LATENCY_BUCKETS_MICROS;
    let micros = u64::try_from(d.as_micros()).unwrap();
    let i = LATENCY_BUCKETS_MICROS.partition_point(|&b| b < micros);
    let lower = i.checked_sub(1).map_or(0, |p| LATENCY_BUCKETS_MICROS[p]);
    (
        Duration::from_micros(lower),
        Duration::from_micros(LATENCY_BUCKETS_MICROS[i]),
    )
}

#[test]
fn the_p95_is_within_the_bucket_of_the_truth_and_not_the_p90() {
    // Three known distributions of 1,000 requests served by web-a; the truth is the 950th
    // duration.
    let distributions: [(&str, Vec<u64>); 3] = [
        // 900 fast, 100 slow: p90 is fast, p95 slow.
        (
            "900 at 3 ms, 100 at 150 ms",
            std::iter::repeat_n(3_000, 900)
                .chain(std::iter::repeat_n(150_000, 100))
                .collect(),
        ),
        ("1 to 1,000 ms", (1..=1_000).map(|ms| ms * 1_000).collect()),
        (
            "every 40th at 2 s, the rest at 700 µs",
            (0..1_000)
                .map(|i| if i % 40 == 0 { 2_000_000 } else { 700 })
                .collect(),
        ),
    ];
    for (what, micros) in distributions {
        let mut sorted = micros.clone();
        sorted.sort_unstable();
        let truth = Duration::from_micros(sorted[949]);
        let mut latency = crate::telemetry::Latency::default();
        for &m in &micros {
            latency.observe_micros(m);
        }
        let t = Telemetry::default();
        let mut samples = served(1_000, 0);
        samples.push(Sample {
            subject: Subject::Listener(StatPrefix::new("inbound_8080")),
            value: Value::Latency(latency),
        });
        t.record(&id("demo", "web-a"), &samples);
        let item = get(&t, &Workloads::default(), "/namespaces/demo/pods/web-a").unwrap();
        let p95 = annotated_latency(&item);
        let (lower, upper) = bucket_around(truth);
        assert!(
            p95 > lower && p95 <= upper,
            "{what}: p95 {p95:?}, truth {truth:?} in ({lower:?}, {upper:?}]: {item}"
        );
    }
    // The first distribution tells the p95 from the p90: the spec's p90 stays fast.
    let t = Telemetry::default();
    let mut latency = crate::telemetry::Latency::default();
    (0..900).for_each(|_| latency.observe_micros(3_000));
    (0..100).for_each(|_| latency.observe_micros(150_000));
    t.record(
        &id("demo", "web-a"),
        &[Sample {
            subject: Subject::Listener(StatPrefix::new("inbound_8080")),
            value: Value::Latency(latency),
        }],
    );
    let item = get(&t, &Workloads::default(), "/namespaces/demo/pods/web-a").unwrap();
    let p90 = item["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "p90_response_latency")
        .unwrap()["value"]
        .clone();
    assert_eq!(p90, "5m", "{item}");
    assert!(
        annotated_latency(&item) > Duration::from_millis(100),
        "{item}"
    );
}

fn gauge(cluster: &str, open: u64) -> Sample {
    Sample {
        subject: Subject::Upstream(UpstreamCluster::new(cluster)),
        value: Value::ConnectionsActive(open),
    }
}

fn opened(cluster: &str, n: u64) -> Sample {
    Sample {
        subject: Subject::Upstream(UpstreamCluster::new(cluster)),
        value: Value::ConnectionsOpened(n),
    }
}

#[test]
fn open_connections_are_each_proxys_latest_gauge_summed() {
    let (t, w) = mesh();
    // web-a: 5 connections opened to its application, 3 open, then 2 (the latest push wins);
    // its inbound cluster's requests are the listener's again and must not count twice.
    t.record(
        &id("demo", "web-a"),
        &[
            opened("inbound|8080", 5),
            gauge("inbound|8080", 3),
            sent("inbound|8080", 9),
        ],
    );
    t.record(&id("demo", "web-a"), &[gauge("inbound|8080", 2)]);
    // web-b: 4 open on two ports; an outbound connection of its own is not what it serves.
    t.record(
        &id("demo", "web-b"),
        &[
            gauge("inbound|8080", 1),
            gauge("inbound|9090", 3),
            gauge("demo/web-v1|80", 6),
        ],
    );
    // client-0 holds 5 to web-v1, lone 2 to web-v2.
    t.record(&id("demo", "client-0"), &[gauge("demo/web-v1|80", 5)]);
    t.record(&id("demo", "lone"), &[gauge("demo/web-v2|80", 2)]);

    let pod = get(&t, &w, "/namespaces/demo/pods/web-a").unwrap();
    assert_eq!(open_connections(&pod), 2, "{pod}");
    assert_eq!(counts(&pod), (9, 1), "{pod}");
    let web = get(&t, &w, "/namespaces/demo/deployments/web").unwrap();
    assert_eq!(open_connections(&web), 2 + 1 + 3, "{web}");
    assert_eq!(counts(&web), (14, 1), "{web}");
    // Known, nothing pushed: 0.
    let agent = get(&t, &w, "/namespaces/demo/daemonsets/agent").unwrap();
    assert_eq!(open_connections(&agent), 0, "{agent}");
    // A split backend: every caller's connections to it (web-b's 6, client-0's 5).
    let split = get(&t, &w, "/namespaces/demo/trafficsplits/web-split").unwrap();
    let per_backend: Vec<u64> = split["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(open_connections)
        .collect();
    assert_eq!(per_backend, [11, 2], "{split}");
    // An edge: the caller's own.
    let edges = get(&t, &w, "/namespaces/demo/pods/client-0/edges").unwrap();
    let to: Vec<(String, u64)> = edges["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["edge"]["resource"]["name"].as_str().unwrap().to_owned(),
                open_connections(i),
            )
        })
        .collect();
    assert_eq!(
        to,
        [("web-v1".to_owned(), 5), ("web-v2".to_owned(), 0)],
        "{edges}"
    );
}

#[test]
fn only_an_inbound_ports_own_cluster_is_the_application() {
    assert!(is_inbound_cluster("inbound|8080"));
    for other in [
        "inbound|",
        "inbound|http",
        "inbound|8080|plaintext",
        "inbound|99999",
        "demo/inbound|80",
        "outbound_tcp|8080",
        "demo/web|80",
    ] {
        assert!(!is_inbound_cluster(other), "{other}");
    }
}

#[test]
fn routes_paths_parse_for_the_kinds_made_of_serving_pods() {
    assert_eq!(
        parse("/namespaces/demo/deployments/web/routes", Some("t=1m")),
        Ok(Request::Routes {
            kind: ResourceKind::Deployment,
            namespace: "demo".into(),
            name: "web".into(),
            window: Duration::from_secs(60)
        })
    );
    for path in [
        "/namespaces/demo/trafficsplits/web-split/routes",
        "/namespaces/demo/namespaces/x/routes",
        "/namespaces/demo/routes",
    ] {
        assert_eq!(parse(path, None).unwrap_err().status(), 404, "{path}");
    }
}

#[test]
fn a_workloads_routes_are_its_pods_named_routes_and_the_default() {
    use switchyard_proxy_config::metrics::RouteStatName;
    let (t, w) = mesh();
    let route = |pod: &str, vhost: &str, name: &str, class: StatusClass, n: u64| {
        t.record(
            &id("demo", pod),
            &[Sample {
                subject: Subject::Route(
                    crate::telemetry::VirtualHost::new(vhost),
                    RouteStatName::new("web-routes", name),
                ),
                value: Value::Requests(class, n),
            }],
        );
    };
    // The inbound clusters count everything that reached the application: web-a 12, web-b 5.
    t.record(
        &id("demo", "web-a"),
        &[
            sent("inbound|8080", 10),
            Sample {
                subject: Subject::Upstream(UpstreamCluster::new("inbound|8080")),
                value: Value::Requests(StatusClass::ServerError, 2),
            },
        ],
    );
    t.record(&id("demo", "web-b"), &[sent("inbound|8080", 5)]);
    route("web-a", "inbound|8080", "books", StatusClass::Success, 6);
    route("web-b", "inbound|8080", "books", StatusClass::Success, 1);
    route(
        "web-a",
        "inbound|8080",
        "errors",
        StatusClass::ServerError,
        2,
    );
    // An outbound virtual host's route is not the Pod's to serve.
    route("web-a", "demo/db|80", "other", StatusClass::Success, 9);
    let list = get(&t, &w, "/namespaces/demo/deployments/web/routes").unwrap();
    assert_eq!(list["kind"], "TrafficMetricsList", "{list}");
    let rows: Vec<(&str, (u64, u64))> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["metadata"]["annotations"][ROUTE_ANNOTATION]
                    .as_str()
                    .unwrap(),
                counts(i),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("web-routes/books", (7, 0)),
            ("web-routes/errors", (0, 2)),
            // 17 reached the application, 9 by a named route.
            (DEFAULT_ROUTE, (8, 0)),
        ],
        "{list}"
    );
    // One Pod's.
    let list = get(&t, &w, "/namespaces/demo/pods/web-b/routes").unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(counts(&items[1]), (4, 0), "{list}");
}

/// The `(route, counts)` rows of a `/routes` list, in its order.
fn route_rows(list: &serde_json::Value) -> Vec<(String, (u64, u64))> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let route = i["metadata"]["annotations"][ROUTE_ANNOTATION]
                .as_str()
                .unwrap()
                .to_owned();
            (route, counts(i))
        })
        .collect()
}

/// [`mesh`] with web-a's proxy configured to count `routes` of `web-routes`.
fn mesh_with_routes(routes: &[&str]) -> (Telemetry, Workloads) {
    use switchyard_proxy_config::metrics::RouteStatName;
    let (t, mut w) = mesh();
    w.insert_pod(
        id("demo", "web-a"),
        PodEntry {
            routes: routes
                .iter()
                .map(|r| RouteStatName::new("web-routes", *r))
                .collect(),
            ..owned(WorkloadKind::Deployment, "web", true)
        },
    );
    (t, w)
}

/// web-a's proxy counted `n` successes on route `web-routes/<name>`.
fn route_traffic(t: &Telemetry, name: &str, n: u64) {
    use switchyard_proxy_config::metrics::RouteStatName;
    t.record(
        &id("demo", "web-a"),
        &[Sample {
            subject: Subject::Route(
                crate::telemetry::VirtualHost::new("inbound|8080"),
                RouteStatName::new("web-routes", name),
            ),
            value: Value::Requests(StatusClass::Success, n),
        }],
    );
}

#[test]
fn a_configured_route_without_traffic_is_listed_with_zeros() {
    let (t, w) = mesh_with_routes(&["books", "idle"]);
    // 5 reached web-a's application, 3 by `books`, none by `idle`.
    t.record(&id("demo", "web-a"), &[sent("inbound|8080", 5)]);
    route_traffic(&t, "books", 3);
    let list = get(&t, &w, "/namespaces/demo/deployments/web/routes").unwrap();
    assert_eq!(
        route_rows(&list),
        [
            ("web-routes/books".to_owned(), (3, 0)),
            ("web-routes/idle".to_owned(), (0, 0)),
            (DEFAULT_ROUTE.to_owned(), (2, 0)),
        ],
        "{list}"
    );
    // An item like a known Pod's without traffic: zero counts, no latency measured, so none
    // written (not a zero, not NaN).
    let idle = &list["items"][1];
    assert_eq!(
        idle["metrics"],
        json!([
            {"name": "success_count", "value": "0"},
            {"name": "failure_count", "value": "0"}
        ]),
        "{idle}"
    );
    assert_eq!(
        idle["metadata"]["annotations"],
        json!({ROUTE_ANNOTATION: "web-routes/idle", TCP_OPEN_CONNECTIONS_ANNOTATION: "0"}),
        "{idle}"
    );
    assert_eq!(idle["edge"], list["items"][0]["edge"], "{list}");
    // With no traffic at all, the configured routes and the default, all zeros; the Pod's
    // own routes are its; web-b's (configured with none) only the default.
    let quiet = Telemetry::default();
    let list = get(&quiet, &w, "/namespaces/demo/pods/web-a/routes").unwrap();
    assert_eq!(
        route_rows(&list),
        [
            ("web-routes/books".to_owned(), (0, 0)),
            ("web-routes/idle".to_owned(), (0, 0)),
            (DEFAULT_ROUTE.to_owned(), (0, 0)),
        ],
        "{list}"
    );
    let list = get(&quiet, &w, "/namespaces/demo/pods/web-b/routes").unwrap();
    assert_eq!(
        route_rows(&list),
        [(DEFAULT_ROUTE.to_owned(), (0, 0))],
        "{list}"
    );
}

#[test]
fn a_route_with_traffic_no_longer_configured_is_still_listed() {
    // web-a counted `gone` in the window, then its TrafficTarget stopped naming it.
    let (t, w) = mesh_with_routes(&["books"]);
    t.record(&id("demo", "web-a"), &[sent("inbound|8080", 4)]);
    route_traffic(&t, "gone", 4);
    let list = get(&t, &w, "/namespaces/demo/deployments/web/routes").unwrap();
    assert_eq!(
        route_rows(&list),
        [
            ("web-routes/books".to_owned(), (0, 0)),
            ("web-routes/gone".to_owned(), (4, 0)),
            (DEFAULT_ROUTE.to_owned(), (0, 0)),
        ],
        "{list}"
    );
}
