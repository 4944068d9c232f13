use super::*;

#[test]
fn readyz_waits_for_the_first_sync_and_metrics_render_every_family() {
    let admin = Admin {
        metrics: Arc::new(ControllerMetrics::default()),
        xds: Arc::new(XdsMetrics::default()),
        proxies: Arc::default(),
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
