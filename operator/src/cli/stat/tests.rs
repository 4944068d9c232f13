use serde_json::json;

use super::*;

fn args(kind: &str, name: Option<&str>) -> StatArgs {
    StatArgs {
        kind: super::shown(kind).unwrap(),
        name: name.map(str::to_owned),
        namespace: "demo".into(),
        all_namespaces: false,
        window: Duration::from_secs(60),
        control_plane: crate::cli::control_plane::ControlPlaneArgs {
            admin: None,
            operator_namespace: "switchyard-system".to_owned(),
            kubeconfig: None,
            as_user: None,
        },
        output: crate::cli::proxy_status::Format::Table,
    }
}

#[test]
fn each_form_asks_for_its_path() {
    let root = "/apis/metrics.smi-spec.io/v1alpha1";
    assert_eq!(
        path(&args("po", None)).unwrap(),
        format!("{root}/namespaces/demo/pods?t=1m0s")
    );
    assert_eq!(
        path(&args("pods", Some("web-0"))).unwrap(),
        format!("{root}/namespaces/demo/pods/web-0?t=1m0s")
    );
    assert_eq!(
        path(&args("ns", None)).unwrap(),
        format!("{root}/namespaces?t=1m0s")
    );
    assert_eq!(
        path(&args("namespace", Some("demo"))).unwrap(),
        format!("{root}/namespaces/demo?t=1m0s")
    );
    let all = StatArgs {
        all_namespaces: true,
        window: Duration::from_secs(10),
        ..args("pods", None)
    };
    assert_eq!(path(&all).unwrap(), format!("{root}/pods?t=10s"));
    // kubectl's short names and singulars.
    for (words, plural) in [
        (["deploy", "deployment", "deployments"], "deployments"),
        (["sts", "statefulset", "statefulsets"], "statefulsets"),
        (["ds", "daemonset", "daemonsets"], "daemonsets"),
        (["svc", "service", "services"], "services"),
        (["ts", "trafficsplit", "trafficsplits"], "trafficsplits"),
    ] {
        for word in words {
            assert_eq!(
                path(&args(word, Some("x"))).unwrap(),
                format!("{root}/namespaces/demo/{plural}/x?t=1m0s"),
                "{word}"
            );
        }
    }
    assert!(super::kind("rs").unwrap_err().contains("deployments"));
}

#[test]
fn the_table_shows_success_rate_rate_and_percentiles() {
    let item = json!({
        "metadata": {"annotations": {
            "metrics.switchyard.dev/pods": "3",
            "metrics.switchyard.dev/meshed-pods": "2",
            "metrics.switchyard.dev/p95-response-latency": "120m",
            "metrics.switchyard.dev/tcp-open-connections": "7"
        }},
        "resource": {"kind": "Pod", "namespace": "demo", "name": "web-0"},
        "window": "10s",
        "metrics": [
            {"name": "p99_response_latency", "unit": "seconds", "value": "240m"},
            {"name": "p90_response_latency", "unit": "seconds", "value": "1500u"},
            {"name": "p50_response_latency", "unit": "seconds", "value": "250u"},
            {"name": "success_count", "value": "180"},
            {"name": "failure_count", "value": "20"}
        ]
    });
    let idle = json!({
        "metadata": {"annotations": {"metrics.switchyard.dev/tcp-open-connections": "0"}},
        "resource": {"kind": "Namespace", "name": "quiet"},
        "window": "1m0s",
        "metrics": [
            {"name": "success_count", "value": "0"},
            {"name": "failure_count", "value": "0"}
        ]
    });
    let table = table(ResourceKind::Pod, &[item, idle]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec![
                "NAME",
                "MESHED",
                "SUCCESS",
                "RPS",
                "LATENCY_P50",
                "LATENCY_P95",
                "LATENCY_P99",
                "TCP_CONN"
            ],
            // p95 from the annotation, not the spec's p90 (1.50ms).
            vec![
                "demo/web-0",
                "2/3",
                "90.00%",
                "20.0rps",
                "0.25ms",
                "120ms",
                "240ms",
                "7"
            ],
            vec!["quiet", "-", "-", "0.0rps", "-", "-", "-", "0"],
        ],
        "{table}"
    );
}

#[test]
fn a_split_has_a_row_per_backend_with_apex_backend_and_weight() {
    let item = |backend: &str, weight: u32, ok: u64| {
        json!({
            "metadata": {"annotations": {
                "metrics.switchyard.dev/p95-response-latency": "4m",
                "metrics.switchyard.dev/tcp-open-connections": weight.to_string()
            }},
            "resource": {"kind": "TrafficSplit", "namespace": "demo", "name": "web-split"},
            "backend": {"apex": "web", "name": backend, "weight": weight},
            "window": "1m0s",
            "metrics": [
                {"name": "p50_response_latency", "unit": "seconds", "value": "2m"},
                {"name": "success_count", "value": ok.to_string()},
                {"name": "failure_count", "value": "0"}
            ]
        })
    };
    let table = table(
        ResourceKind::TrafficSplit,
        &[item("web-v1", 90, 60), item("web-v2", 10, 0)],
    );
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec![
                "NAME",
                "APEX",
                "BACKEND",
                "WEIGHT",
                "SUCCESS",
                "RPS",
                "LATENCY_P50",
                "LATENCY_P95",
                "LATENCY_P99",
                "TCP_CONN"
            ],
            vec![
                "demo/web-split",
                "web",
                "web-v1",
                "90",
                "100.00%",
                "1.0rps",
                "2ms",
                "4ms",
                "-",
                "90"
            ],
            vec![
                "demo/web-split",
                "web",
                "web-v2",
                "10",
                "-",
                "0.0rps",
                "2ms",
                "4ms",
                "-",
                "10"
            ],
        ],
        "{table}"
    );
}

#[test]
fn a_table_from_a_control_plane_without_the_annotations_shows_dashes() {
    let item = json!({
        "resource": {"kind": "Pod", "namespace": "demo", "name": "web-0"},
        "window": "1m0s",
        "metrics": [
            {"name": "p90_response_latency", "unit": "seconds", "value": "3m"},
            {"name": "success_count", "value": "60"},
            {"name": "failure_count", "value": "0"}
        ]
    });
    let table = table(ResourceKind::Pod, &[item]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    // No p95 (the spec's p90 is not shown in its place), no connection count.
    assert_eq!(
        row,
        ["demo/web-0", "-", "100.00%", "1.0rps", "-", "-", "-", "-"],
        "{table}"
    );
}

#[test]
fn an_answer_missing_a_replica_is_read_with_its_note() {
    let list = json!({
        "kind": "TrafficMetricsList",
        "metadata": {"annotations": {
            "metrics.switchyard.dev/partial": "replica switchyard-b did not answer: timed out"
        }},
        "items": [{"resource": {"kind": "Pod", "namespace": "demo", "name": "web-0"}}]
    });
    let (rows, partial) = items("x", http::StatusCode::OK, list.to_string().as_bytes()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        partial.as_deref(),
        Some("replica switchyard-b did not answer: timed out")
    );
    let item = json!({"kind": "TrafficMetrics", "metadata": {}});
    let (rows, partial) = items("x", http::StatusCode::OK, item.to_string().as_bytes()).unwrap();
    assert_eq!((rows.len(), partial), (1, None));
    let status = json!({"kind": "Status", "message": "deployments \"x\" is not known"});
    let err = items(
        "x",
        http::StatusCode::NOT_FOUND,
        status.to_string().as_bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("is not known"), "{err}");
}

#[test]
fn routes_of_one_object_ask_for_its_routes_path() {
    let root = "/apis/metrics.smi-spec.io/v1alpha1";
    for (word, name, plural) in [
        ("routes", "deploy/web", "deployments"),
        ("route", "po/web-0", "pods"),
        ("rt", "svc/web", "services"),
        ("routes", "statefulset/db", "statefulsets"),
    ] {
        let (_, object) = name.split_once('/').unwrap();
        assert_eq!(
            path(&args(word, Some(name))).unwrap(),
            format!("{root}/namespaces/demo/{plural}/{object}/routes?t=1m0s"),
            "{word} {name}"
        );
    }
    // One object, of a kind whose Pods serve.
    for bad in [
        None,
        Some("web"),
        Some("ns/demo"),
        Some("ts/web-split"),
        Some("deploy/"),
    ] {
        let err = path(&args("routes", bad)).unwrap_err().to_string();
        assert!(err.contains("stat routes"), "{bad:?}: {err}");
    }
}

#[test]
fn the_routes_table_has_a_row_per_route_and_the_default() {
    let item = |route: &str, ok: u64, failed: u64, p50: &str| {
        json!({
            "metadata": {"annotations": {
                "metrics.switchyard.dev/route": route,
                "metrics.switchyard.dev/p95-response-latency": "200m",
                "metrics.switchyard.dev/tcp-open-connections": "0"
            }},
            "resource": {"kind": "Deployment", "namespace": "demo", "name": "web"},
            "window": "1m0s",
            "metrics": [
                {"name": "p99_response_latency", "unit": "seconds", "value": "240m"},
                {"name": "p50_response_latency", "unit": "seconds", "value": p50},
                {"name": "success_count", "value": ok.to_string()},
                {"name": "failure_count", "value": failed.to_string()}
            ]
        })
    };
    let table = routes_table(&[
        item("web-routes/books", 30, 0, "175m"),
        item("web-routes/errors", 0, 12, "1500u"),
        // A configured route nothing took: zero counts and no latency, as the API writes it.
        json!({
            "metadata": {"annotations": {
                "metrics.switchyard.dev/route": "web-routes/idle",
                "metrics.switchyard.dev/tcp-open-connections": "0"
            }},
            "resource": {"kind": "Deployment", "namespace": "demo", "name": "web"},
            "window": "1m0s",
            "metrics": [
                {"name": "success_count", "value": "0"},
                {"name": "failure_count", "value": "0"}
            ]
        }),
        item("[DEFAULT]", 6, 0, "250u"),
    ]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec![
                "ROUTE",
                "SUCCESS",
                "RPS",
                "LATENCY_P50",
                "LATENCY_P95",
                "LATENCY_P99"
            ],
            vec![
                "web-routes/books",
                "100.00%",
                "0.5rps",
                "175ms",
                "200ms",
                "240ms"
            ],
            vec![
                "web-routes/errors",
                "0.00%",
                "0.2rps",
                "1.50ms",
                "200ms",
                "240ms"
            ],
            vec!["web-routes/idle", "-", "0.0rps", "-", "-", "-"],
            vec!["[DEFAULT]", "100.00%", "0.1rps", "0.25ms", "200ms", "240ms"],
        ],
        "{table}"
    );
}
