use super::*;

#[test]
fn readyz_waits_for_the_first_sync_and_metrics_render_every_family() {
    let admin = Admin {
        metrics: Arc::new(ControllerMetrics::default()),
        xds: Arc::new(XdsMetrics::default()),
        proxies: Some(Arc::default()),
        telemetry: None,
        peers: None,
        workloads: None,
        taps: None,
    };
    assert_eq!(route(&admin, true, "/healthz").status(), StatusCode::OK);
    let proxies = route(&admin, true, PROXIES_PATH);
    assert_eq!(
        (
            proxies.status(),
            proxies.headers()[hyper::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
        ),
        (StatusCode::OK, "application/json")
    );
    assert_eq!(
        route(&admin, true, "/readyz").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    admin.metrics.set_synced();
    assert_eq!(route(&admin, true, "/readyz").status(), StatusCode::OK);
    assert_eq!(
        route(&admin, false, "/readyz").status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(route(&admin, true, "/nope").status(), StatusCode::NOT_FOUND);

    admin.metrics.reconciled(Duration::from_millis(3));
    admin.metrics.reconciled(Duration::from_secs(2));
    admin.metrics.watch_restarted("pod");
    admin.metrics.decode_failed("trafficsplit");
    admin.metrics.status_written(true);
    admin.metrics.set_leader(true);
    let text = admin.metrics.render(&admin.xds);
    for line in [
        "switchyard_reconciles_total 2",
        "switchyard_reconcile_duration_seconds_bucket{le=\"0.005\"} 1",
        "switchyard_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
        "switchyard_reconcile_duration_seconds_count 2",
        "switchyard_watch_restarts_total{kind=\"pod\"} 1",
        "switchyard_decode_errors_total{kind=\"trafficsplit\"} 1",
        "switchyard_status_writes_total{result=\"ok\"} 1",
        "switchyard_leader 1",
        "switchyard_xds_connected_proxies 0",
        "switchyard_xds_config_pushes_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

fn body(resp: Response<Full<Bytes>>) -> String {
    use http_body_util::BodyExt as _;
    let bytes = futures_util::FutureExt::now_or_never(resp.into_body().collect())
        .unwrap()
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn a_proxys_config_is_found_by_its_encoded_name_and_an_unknown_one_is_named() {
    let admin = Admin {
        metrics: Arc::new(ControllerMetrics::default()),
        xds: Arc::new(XdsMetrics::default()),
        proxies: Some(Arc::default()),
        telemetry: None,
        peers: None,
        workloads: None,
        taps: None,
    };
    let node = envoy_types::pb::envoy::config::core::v3::Node {
        id: "web-0".into(),
        ..Default::default()
    };
    let _stream = admin.proxies.as_ref().unwrap().open(
        &crate::xds::ProxyKey::from("demo/web-0"),
        &node,
        "delta",
    );
    let path = config_path("demo/web-0", TypeFilter::All);
    assert_eq!(path, "/proxies/demo%2Fweb-0/config?type=all");
    for (path, query) in [
        ("/proxies/demo%2Fweb-0/config", Some("type=all")),
        ("/proxies/demo/web-0/config", None),
        ("/proxies/demo%2fweb-0/config", Some("type=cds")),
    ] {
        let resp = answer(&admin, true, path, query);
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let dump: ConfigDump = serde_json::from_str(&body(resp)).unwrap();
        assert_eq!(
            (dump.proxy.as_str(), dump.protocol.as_str()),
            ("demo/web-0", "delta")
        );
    }

    let missing = answer(&admin, true, "/proxies/demo%2Fnope/config", None);
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(body(missing).contains("\"demo/nope\""));
    let bad = answer(
        &admin,
        true,
        "/proxies/demo%2Fweb-0/config",
        Some("type=xds"),
    );
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(body(bad).contains("\"xds\""));
    assert_eq!(
        answer(&admin, true, "/proxies//config", None).status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        answer(&admin, false, "/proxies/demo%2Fweb-0/config", None).status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

/// The admin port other Pods reach (the controller's `:9090`) tells them nothing about the
/// mesh's proxies: no list, no configuration, though one is connected; probes and metrics
/// still answer there.
#[test]
fn the_port_other_pods_reach_serves_no_proxy_list_and_no_configuration() {
    let statuses: Arc<ProxyStatuses> = Arc::default();
    let node = envoy_types::pb::envoy::config::core::v3::Node {
        id: "web-0".into(),
        ..Default::default()
    };
    let _stream = statuses.open(&crate::xds::ProxyKey::from("demo/web-0"), &node, "delta");
    let public = Admin {
        metrics: Arc::new(ControllerMetrics::default()),
        xds: Arc::new(XdsMetrics::default()),
        proxies: None,
        telemetry: None,
        peers: None,
        workloads: None,
        taps: None,
    };
    let debug = Admin {
        proxies: Some(statuses),
        telemetry: Some(Arc::default()),
        peers: Some(crate::edges::SharedPeers::default()),
        ..public.clone()
    };
    // The traffic metrics and the edges, which name identities, only where telemetry is given
    // (local mode's admin address).
    let edges = "/apis/metrics.smi-spec.io/v1alpha1/edges";
    for path in ["/apis/metrics.smi-spec.io/v1alpha1/", edges] {
        assert_eq!(
            answer(&public, true, path, None).status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
        assert_eq!(
            answer(&debug, true, path, Some("t=10m")).status(),
            StatusCode::OK,
            "{path}"
        );
    }
    assert_eq!(
        answer(&debug, true, edges, Some("t=1h")).status(),
        StatusCode::BAD_REQUEST
    );
    for path in [PROXIES_PATH, "/proxies/demo%2Fweb-0/config"] {
        assert_eq!(
            answer(&public, true, path, None).status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
        assert_eq!(
            answer(&debug, true, path, None).status(),
            StatusCode::OK,
            "{path}"
        );
    }
    assert_eq!(
        answer(&public, true, "/metrics", None).status(),
        StatusCode::OK
    );
}

/// The Traffic Metrics API reads the index's view the admin port is given: a Deployment it
/// names is answered, and a new view is seen by the next request.
#[test]
fn workloads_are_resolved_through_the_view_the_admin_port_is_given() {
    use crate::index::{Owner, WorkloadKind, Workloads, workloads::PodEntry};
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(Workloads::default()));
    let admin = Admin {
        metrics: Arc::new(ControllerMetrics::default()),
        xds: Arc::new(XdsMetrics::default()),
        proxies: None,
        telemetry: Some(Arc::default()),
        peers: None,
        workloads: Some(rx),
        taps: None,
    };
    let path = "/apis/metrics.smi-spec.io/v1alpha1/namespaces/demo/deployments/web";
    assert_eq!(
        answer(&admin, true, path, None).status(),
        StatusCode::NOT_FOUND
    );
    let mut view = Workloads::default();
    view.insert_pod(
        switchyard_adapters::model::ProxyId {
            namespace: "demo".into(),
            pod: "web-0".into(),
        },
        PodEntry {
            owner: Some(Owner {
                kind: WorkloadKind::Deployment,
                name: "web".into(),
            }),
            meshed: false,
            ..PodEntry::default()
        },
    );
    tx.send_replace(Arc::new(view));
    let resp = answer(&admin, true, path, None);
    assert_eq!(resp.status(), StatusCode::OK);
    let item: serde_json::Value = serde_json::from_str(&body(resp)).unwrap();
    assert_eq!(
        item["metadata"]["annotations"]["metrics.switchyard.dev/pods"], "1",
        "{item}"
    );
}
