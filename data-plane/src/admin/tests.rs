use std::{collections::BTreeMap, sync::Arc};

use http::{Method, StatusCode};
use http_body_util::BodyExt;

use super::*;
use crate::config::{
    AccessLog, BucketName, ChainMatch, ChainSelector, DeniedReply, Direction, FilterChain,
    ForwardClientCert, HeaderMatch, HttpManager, ListenerConfig, ListenerFilters, LogFilter,
    NetworkFilter, RouteSource, Runtime, SecretMaterial, StringMatch,
};

fn body(r: Response<Full<Bytes>>) -> (StatusCode, String) {
    let status = r.status();
    let bytes = block_on(r.into_body().collect()).unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// `Full` is ready at once; a throwaway runtime polls it.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn get(state: &State, path: &str) -> (StatusCode, String) {
    body(answer(state, &Registry::default(), &Method::GET, path))
}

#[test]
fn ready_only_with_a_whole_configuration_and_stays_ready_without_the_control_plane() {
    let state = State::default();
    assert_eq!(get(&state, "/live").0, StatusCode::OK);
    let (status, text) = get(&state, "/ready");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        text.contains("waiting for the first configuration"),
        "{text}"
    );

    state.xds.set_connected(true);
    assert!(state.xds.mark_synced());
    let (status, text) = get(&state, "/ready");
    assert_eq!((status, text.as_str()), (StatusCode::OK, "ready\n"));

    state.xds.set_connected(false);
    let (status, text) = get(&state, "/ready");
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("control plane unreachable") && text.contains("last accepted"),
        "{text}"
    );
    let (_, metrics) = get(&state, "/metrics");
    assert!(
        metrics.contains("switchyard_proxy_xds_connected 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_proxy_xds_synced 1\n"),
        "{metrics}"
    );
}

#[test]
fn config_dump_shows_what_runs_and_never_a_private_key() {
    let state = State::default();
    let mut runtime = Runtime::default();
    runtime.listeners.insert(
        "inbound|8080".into(),
        Arc::new(ListenerConfig {
            name: "inbound|8080".into(),
            address: "127.0.1.2:8080".parse().unwrap(),
            ipv4_compat: false,
            direction: Direction::Inbound,
            filters: ListenerFilters::default(),
            selector: ChainSelector::build([&ChainMatch::ANY], None).unwrap(),
            chains: vec![FilterChain {
                name: "mtls".into(),
                matches: ChainMatch::ANY,
                tls: None,
                connection_limit: None,
                filter: NetworkFilter::Http(HttpManager {
                    stat_prefix: "inbound_8080".into(),
                    routes: RouteSource::Rds("inbound|8080".into()),
                    rbac: None,
                    denied: DeniedReply {
                        status: 403,
                        body: "denied by mesh policy\n".into(),
                    },
                    forward_client_cert: ForwardClientCert::Sanitize,
                    timeouts: Default::default(),
                    access_logs: vec![AccessLog {
                        log_name: "switchyard-tap".into(),
                        flush_interval: std::time::Duration::from_millis(200),
                        buffer_bytes: 16_384,
                        request_headers: Vec::new(),
                        response_headers: Vec::new(),
                        response_trailers: Vec::new(),
                        filter: Some(LogFilter::And(vec![
                            LogFilter::Header(HeaderMatch {
                                name: ":path".into(),
                                matcher: StringMatch::Prefix("/a".into()),
                                invert: false,
                            }),
                            LogFilter::Bucket(BucketName("switchyard-tap-7".into())),
                        ])),
                    }],
                }),
            }],
        }),
    );
    runtime.secrets = BTreeMap::from([(
        "spiffe://cluster.local/ns/demo/sa/web".to_owned(),
        Arc::new(SecretMaterial::Certificate {
            chain_pem: "CERT".into(),
            private_key_pem: "THE-PRIVATE-KEY".into(),
        }),
    )]);
    state.publish(runtime);
    let (status, text) = get(&state, "/config_dump");
    assert_eq!(status, StatusCode::OK);
    let dump: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dump["listeners"][0]["address"], "127.0.1.2:8080");
    assert_eq!(
        dump["listeners"][0]["filter_chains"][0]["filter"]["http"]["routes"]["rds"],
        "inbound|8080"
    );
    assert_eq!(
        dump["listeners"][0]["filter_chains"][0]["filter"]["http"]["access_logs"][0]["filter"],
        serde_json::json!({ "and": [
            { "header": { "name": ":path", "match": { "prefix": "/a" }, "invert": false } },
            { "process_ratelimit": "switchyard-tap-7" },
        ] })
    );
    assert_eq!(dump["secrets"][0]["chain_pem"], "CERT");
    assert!(!text.contains("THE-PRIVATE-KEY"));
    assert_eq!(get(&state, "/nope").0, StatusCode::NOT_FOUND);
    let put = answer(&state, &Registry::default(), &Method::PUT, "/live");
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn a_failed_health_check_drains_until_it_is_restored() {
    let state = State::default();
    state.xds.set_connected(true);
    state.xds.mark_synced();
    assert_eq!(get(&state, "/ready").0, StatusCode::OK);
    let post = |path| body(answer(&state, &Registry::default(), &Method::POST, path));
    assert_eq!(post("/healthcheck/fail").0, StatusCode::OK);
    assert!(state.draining());
    let (status, text) = get(&state, "/ready");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("draining"), "{text}");
    assert_eq!(post("/healthcheck/ok").0, StatusCode::OK);
    assert_eq!(get(&state, "/ready").0, StatusCode::OK);
}

#[test]
fn certs_lists_serials_and_spiffe_ids_of_the_held_certificates() {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let id = "spiffe://cluster.local/ns/demo/sa/web";
    params
        .subject_alt_names
        .push(rcgen::SanType::URI(id.try_into().unwrap()));
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0xbc]));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let mut runtime = Runtime::default();
    runtime.secrets.insert(
        id.to_owned(),
        Arc::new(SecretMaterial::Certificate {
            chain_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
        }),
    );
    runtime.secrets.insert(
        "spiffe://cluster.local".to_owned(),
        Arc::new(SecretMaterial::TrustBundle { ca_pem: cert.pem() }),
    );
    let state = State::default();
    state.publish(runtime);
    let (status, text) = get(&state, "/certs");
    assert_eq!(status, StatusCode::OK);
    let certs: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ours = certs["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == id)
        .unwrap();
    assert_eq!(ours["cert_chain"][0]["serial_number"], "0abc");
    assert_eq!(ours["cert_chain"][0]["subject_alt_names"][0]["uri"], id);
    assert!(!text.contains("PRIVATE KEY"));
}

#[test]
fn the_health_port_serves_probes_and_metrics_and_nothing_else() {
    let state = State::default();
    let metrics = Registry::default();
    let health = |method: &Method, path: &str| body(answer_health(&state, &metrics, method, path));
    assert_eq!(health(&Method::GET, "/live").0, StatusCode::OK);
    assert_eq!(
        health(&Method::GET, "/ready").0,
        get(&state, "/ready").0,
        "the same readiness as the admin port"
    );
    assert_eq!(health(&Method::GET, "/metrics").0, StatusCode::OK);
    assert_eq!(health(&Method::HEAD, "/live").0, StatusCode::OK);
    for path in [
        "/config_dump",
        "/certs",
        "/healthcheck/fail",
        "/quitquitquit",
        "/",
    ] {
        assert_eq!(
            health(&Method::GET, path).0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for path in ["/healthcheck/fail", "/ready", "/live"] {
        assert_eq!(
            health(&Method::POST, path).0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert!(
        !state.draining(),
        "nothing on the health port drains the proxy"
    );
}
