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
    // Only what is answered: the kinds the index resolves come later.
    assert_eq!(
        names,
        ["namespaces", "namespaces/edges", "pods", "pods/edges"]
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
        p99: Some(Duration::from_secs(2)),
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
                    "creationTimestamp": "2026-12-06T21:00:00Z"
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
