//! Fixtures of the operator's fuzz targets: what real proxies push (a sidecar's golden metrics
//! flush as Envoy 1.40 sends it, a tapped proxy's access-log entries) and the peers the
//! control plane compiled for the adapter's demo proxies.

#![forbid(unsafe_code)]

use std::collections::HashMap;

use envoy_types::pb::{
    envoy::{
        config::core::v3::{Address, RequestMethod, SocketAddress, address, socket_address},
        data::accesslog::v3::{
            AccessLogCommon, HttpAccessLogEntry, HttpRequestProperties, HttpResponseProperties,
            TlsProperties,
            tls_properties::{
                CertificateProperties,
                certificate_properties::{SubjectAltName, subject_alt_name::San},
            },
        },
        service::metrics::v3::StreamMetricsMessage,
    },
    google::protobuf::{Duration as PbDuration, Timestamp, UInt32Value},
    io::prometheus::client::{
        Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
    },
};
use switchyard::edges::Peers;
use switchyard_adapters::{
    model::ProxyId,
    test_support::{demo_client, demo_server},
};
use switchyard_proxy_config::metrics::{RouteStatName, envoy, latency_buckets_millis};

// === golden metrics ===

/// The clusters of [`metrics_message`]: two outbound Services and the proxy's own application.
pub const CLUSTERS: [&str; 3] = ["demo/web-v1|80", "demo/grpc|9000", "inbound|8080"];

/// The HTTP connection managers of [`metrics_message`].
pub const LISTENERS: [&str; 2] = ["outbound_http", "inbound_8080_mtls"];

/// A label.
pub fn label(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: Some(name.to_owned()),
        value: Some(value.to_owned()),
    }
}

fn family(name: &str, r#type: MetricType, metric: Vec<Metric>) -> MetricFamily {
    MetricFamily {
        name: Some(name.to_owned()),
        r#type: Some(r#type as i32),
        metric,
        ..MetricFamily::default()
    }
}

fn counter(labels: Vec<LabelPair>, value: f64) -> Metric {
    Metric {
        label: labels,
        counter: Some(Counter {
            value: Some(value),
            ..Counter::default()
        }),
        timestamp_ms: Some(1_796_589_273_548),
        ..Metric::default()
    }
}

/// Envoy's histogram over the mesh's bounds (milliseconds), with a few durations in each of
/// the first buckets and a tail past the last bound (`sample_count` above the last bucket).
fn histogram(labels: Vec<LabelPair>, seed: u64) -> Metric {
    let mut cumulative = 0;
    let bucket = latency_buckets_millis()
        .enumerate()
        .map(|(i, bound)| {
            cumulative += (seed + i as u64 * 7) % 5 + if i < 4 { 10 } else { 0 };
            Bucket {
                upper_bound: Some(bound),
                cumulative_count: Some(cumulative),
                ..Bucket::default()
            }
        })
        .collect();
    Metric {
        label: labels,
        histogram: Some(Histogram {
            sample_count: Some(cumulative + 2),
            sample_sum: Some(cumulative as f64 * 4.2),
            bucket,
            ..Histogram::default()
        }),
        timestamp_ms: Some(1_796_589_273_548),
        ..Metric::default()
    }
}

/// The route stat name of [`metrics_message`]'s route series.
pub fn route_stat_name() -> String {
    RouteStatName::new("web.routes", "get_books").to_string()
}

/// One flush of a sidecar as Envoy 1.40 sends it (see `operator/src/telemetry.rs`): every
/// golden family, [`CLUSTERS`] and [`LISTENERS`] busy, one named route; `seed` varies the
/// counts.
pub fn metrics_message(seed: u64) -> StreamMetricsMessage {
    let per_cluster = |f: &dyn Fn(&str, u64) -> Metric| {
        CLUSTERS
            .iter()
            .zip(0..)
            .map(|(c, i)| f(*c, i))
            .collect::<Vec<_>>()
    };
    let classes = |subject: LabelPair, base: u64| {
        (1..=5u64).map(move |class| {
            counter(
                vec![
                    label(envoy::RESPONSE_CODE_CLASS, &class.to_string()),
                    subject.clone(),
                ],
                ((base + class) % 7) as f64,
            )
        })
    };
    let cluster = |c: &str| label(envoy::CLUSTER_NAME, c);
    let route = route_stat_name();
    let mut families = vec![
        family(
            envoy::UPSTREAM_RQ_XX,
            MetricType::Counter,
            CLUSTERS
                .iter()
                .flat_map(|c| classes(cluster(*c), seed))
                .collect(),
        ),
        family(
            envoy::UPSTREAM_RQ_TIME,
            MetricType::Histogram,
            per_cluster(&|c, i| histogram(vec![cluster(c)], seed + i)),
        ),
        family(
            envoy::UPSTREAM_CX_ACTIVE,
            MetricType::Gauge,
            per_cluster(&|c, i| Metric {
                label: vec![cluster(c)],
                gauge: Some(Gauge {
                    value: Some(((seed + i) % 4) as f64),
                }),
                timestamp_ms: Some(1_796_589_273_548),
                ..Metric::default()
            }),
        ),
    ];
    for name in [
        envoy::UPSTREAM_CX_TOTAL,
        envoy::UPSTREAM_CX_RX_BYTES_TOTAL,
        envoy::UPSTREAM_CX_TX_BYTES_TOTAL,
    ] {
        families.push(family(
            name,
            MetricType::Counter,
            per_cluster(&|c, i| counter(vec![cluster(c)], (1 + i * 100 + seed) as f64)),
        ));
    }
    let listener = |l: &str| label(envoy::HTTP_CONN_MANAGER_PREFIX, l);
    families.push(family(
        envoy::DOWNSTREAM_RQ_XX,
        MetricType::Counter,
        LISTENERS
            .iter()
            .flat_map(|l| classes(listener(*l), seed + 3))
            .collect(),
    ));
    families.push(family(
        envoy::DOWNSTREAM_RQ_TIME,
        MetricType::Histogram,
        LISTENERS
            .iter()
            .zip(0..)
            .map(|(l, i)| histogram(vec![listener(*l)], seed + i))
            .collect(),
    ));
    let route_labels = || {
        vec![
            label(envoy::VIRTUAL_HOST, "inbound|8080"),
            label(envoy::ROUTE, &route),
        ]
    };
    families.push(family(
        envoy::ROUTE_UPSTREAM_RQ_XX,
        MetricType::Counter,
        (1..=5u64)
            .map(|class| {
                let mut labels = vec![label(envoy::RESPONSE_CODE_CLASS, &class.to_string())];
                labels.extend(route_labels());
                counter(labels, ((seed + class) % 3) as f64)
            })
            .collect(),
    ));
    families.push(family(
        envoy::ROUTE_UPSTREAM_RQ_TIME,
        MetricType::Histogram,
        vec![histogram(route_labels(), seed)],
    ));
    // A stat the operator does not read, as Envoy sends many.
    families.push(family(
        "cluster.upstream_rq_retry",
        MetricType::Counter,
        per_cluster(&|c, _| counter(vec![cluster(c)], 1.0)),
    ));
    StreamMetricsMessage {
        identifier: None,
        envoy_metrics: families,
    }
}

// === access logs ===

/// Request and response headers that carry credentials: never shown by a tap.
pub const SENSITIVE_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

/// The value the fixtures give [`SENSITIVE_HEADERS`].
pub const CANARY: &str = "Bearer c2VjcmV0LWNhbmFyeQ";

/// `demo/client-0` and `demo/web-v1-0`, the proxies the peers know.
pub fn proxies() -> [ProxyId; 2] {
    [demo_client().proxy, demo_server().proxy]
}

/// What the control plane compiled for [`proxies`].
pub fn peers() -> Peers {
    Peers::new("cluster.local", [&demo_client(), &demo_server()])
}

/// A socket address.
pub fn socket(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..SocketAddress::default()
        })),
    })
}

fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Entries as a tapped Envoy sends them: `demo/web-v1-0`'s inbound request from the client
/// over mTLS, and `demo/client-0`'s outbound HTTP and gRPC requests; credentials in the
/// request and response headers (Envoy logs none by the tap's configuration; a compromised
/// proxy sends what it likes).
pub fn access_log_entries() -> Vec<HttpAccessLogEntry> {
    let entry = |cluster: &str, upstream: Option<Address>, san: Option<&str>, path: &str| {
        HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                downstream_remote_address: socket("10.0.0.9", 41_000),
                upstream_remote_address: upstream,
                upstream_cluster: cluster.to_owned(),
                tls_properties: san.map(|uri| TlsProperties {
                    peer_certificate_properties: Some(CertificateProperties {
                        subject_alt_name: vec![SubjectAltName {
                            san: Some(San::Uri(uri.to_owned())),
                        }],
                        ..CertificateProperties::default()
                    }),
                    ..TlsProperties::default()
                }),
                start_time: Some(Timestamp {
                    seconds: 1_800_000_000,
                    nanos: 250_000_999,
                }),
                time_to_last_downstream_tx_byte: Some(PbDuration {
                    seconds: 0,
                    nanos: 1_500_000,
                }),
                ..AccessLogCommon::default()
            }),
            request: Some(HttpRequestProperties {
                request_method: RequestMethod::Get as i32,
                scheme: "http".to_owned(),
                authority: "web.demo".to_owned(),
                path: path.to_owned(),
                request_body_bytes: 12,
                request_headers: headers(&[
                    ("authorization", CANARY),
                    ("cookie", CANARY),
                    ("x-request-id", "7d1c"),
                ]),
                ..HttpRequestProperties::default()
            }),
            response: Some(HttpResponseProperties {
                response_code: Some(UInt32Value { value: 200 }),
                response_body_bytes: 34,
                response_headers: headers(&[("set-cookie", CANARY)]),
                ..HttpResponseProperties::default()
            }),
            ..HttpAccessLogEntry::default()
        }
    };
    let mut grpc = entry(
        "demo/grpc|9000",
        socket("10.0.0.5", 9000),
        None,
        "/demo.Books/List",
    );
    if let Some(response) = grpc.response.as_mut() {
        response
            .response_trailers
            .insert("grpc-status".to_owned(), "14".to_owned());
    }
    vec![
        entry(
            "inbound|8080",
            socket("127.0.0.1", 8080),
            Some("spiffe://cluster.local/ns/demo/sa/client"),
            "/api/books?page=2",
        ),
        entry("demo/web-v1|80", socket("10.0.0.1", 8080), None, "/healthz"),
        grpc,
    ]
}

/// `entry` without [`SENSITIVE_HEADERS`] (in any case) in its request and response headers and
/// trailers.
pub fn without_sensitive(entry: &HttpAccessLogEntry) -> HttpAccessLogEntry {
    let mut out = entry.clone();
    let strip = |map: &mut HashMap<String, String>| {
        map.retain(|k, _| !SENSITIVE_HEADERS.iter().any(|s| k.eq_ignore_ascii_case(s)));
    };
    if let Some(request) = out.request.as_mut() {
        strip(&mut request.request_headers);
    }
    if let Some(response) = out.response.as_mut() {
        strip(&mut response.response_headers);
        strip(&mut response.response_trailers);
    }
    out
}
