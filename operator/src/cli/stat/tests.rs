use serde_json::json;

use super::*;

fn args(kind: &str, name: Option<&str>) -> StatArgs {
    StatArgs {
        kind: super::kind(kind).unwrap(),
        name: name.map(str::to_owned),
        namespace: "demo".into(),
        all_namespaces: false,
        window: Duration::from_secs(60),
        admin: None,
        operator_namespace: "switchyard-system".into(),
        kubeconfig: None,
        output: crate::cli::proxy_status::Format::Table,
    }
}

#[test]
fn each_form_asks_for_its_path() {
    let root = "/apis/metrics.smi-spec.io/v1alpha1";
    assert_eq!(
        path(&args("po", None)),
        format!("{root}/namespaces/demo/pods?t=1m0s")
    );
    assert_eq!(
        path(&args("pods", Some("web-0"))),
        format!("{root}/namespaces/demo/pods/web-0?t=1m0s")
    );
    assert_eq!(path(&args("ns", None)), format!("{root}/namespaces?t=1m0s"));
    assert_eq!(
        path(&args("namespace", Some("demo"))),
        format!("{root}/namespaces/demo?t=1m0s")
    );
    let all = StatArgs {
        all_namespaces: true,
        window: Duration::from_secs(10),
        ..args("pods", None)
    };
    assert_eq!(path(&all), format!("{root}/pods?t=10s"));
    assert!(
        super::kind("deployments")
            .unwrap_err()
            .contains("not served yet")
    );
}

#[test]
fn the_table_shows_success_rate_rate_and_percentiles() {
    let item = json!({
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
        "resource": {"kind": "Namespace", "name": "quiet"},
        "window": "1m0s",
        "metrics": [
            {"name": "success_count", "value": "0"},
            {"name": "failure_count", "value": "0"}
        ]
    });
    let table = table(&[item, idle]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec![
                "NAME",
                "SUCCESS",
                "RPS",
                "LATENCY_P50",
                "LATENCY_P90",
                "LATENCY_P99"
            ],
            vec![
                "demo/web-0",
                "90.00%",
                "20.0rps",
                "0.25ms",
                "1.50ms",
                "240ms"
            ],
            vec!["quiet", "-", "0.0rps", "-", "-", "-"],
        ],
        "{table}"
    );
}
