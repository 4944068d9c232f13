//! The Envoy bootstrap: node identity, admin, and ADS to the Switchyard control plane over TLS,
//! with the bearer token read from a file on every stream. Everything else arrives over ADS.
//!
//! No credential is written into the bootstrap: Envoy's `/config_dump` shows the bootstrap to
//! anyone who reaches the admin port, and the token opens an ADS stream as this proxy (and so
//! hands out its private key over SDS). `google_grpc` with the `file_based_metadata` call
//! credentials names the token's file instead (Envoy redacts even the file name in
//! `/config_dump`) and re-reads it for every stream, so a rotated projected token applies. gRPC
//! sends call credentials only over a secure channel, which is why the xDS channel is TLS,
//! verified against the CA certificate in [`BootstrapOptions::xds_ca`] (public: it may be
//! written inline).
//!
//! In a Pod the admin interface listens on 127.0.0.1, so only the Pod's own processes reach
//! `/quitquitquit`, `/healthcheck/fail` and the rest; the kubelet's probes and a metrics
//! scraper use the health port ([`BootstrapOptions::health`], 15020): a static listener that
//! forwards `GET /ready` and `/metrics` (as `/stats/prometheus`) to the admin interface, answers
//! `/live` itself, forwards the application's rewritten HTTP probes (`/app-health/...`, see
//! [`AppProbe`]) to the application, and 404s everything else.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde_json::{Value, json};

/// `stat_prefix` of the ADS gRPC client: its stats are `grpc.xds.*`.
pub const XDS_STAT_PREFIX: &str = "xds";
/// `stat_prefix` of the metrics service's gRPC client: `grpc.metrics.*`.
pub const METRICS_STAT_PREFIX: &str = "metrics";

/// Envoy's command-line flags after `-c <bootstrap>`, wherever a sidecar Envoy is started.
///
/// - `--disable-hot-restart`: one Envoy per container, never restarted in place (and no shared
///   memory to set up).
/// - `--drain-strategy immediate`: when a listener's filter chain changes (a port added, a tap
///   started or ended), every connection on the old chain is drained at once rather than one
///   by one over the drain time. A request that still reaches the old chain is not logged by a
///   tap's access log (seen in `e2e/tests/tap.rs`). Route and endpoint changes never drain.
pub const ENVOY_FLAGS: [&str; 3] = ["--disable-hot-restart", "--drain-strategy", "immediate"];
/// Metric families per `StreamMetricsMessage` Envoy sends (its `batch_size`).
pub const METRICS_BATCH_FAMILIES: u32 = 1_000;
/// How often a proxy pushes its golden metrics to the control plane by default: Envoy's own
/// default `stats_flush_interval`.
pub const DEFAULT_METRICS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The static listener that serves the probes and metrics (the health port).
pub const HEALTH_LISTENER: &str = "switchyard-health";
/// The static cluster through which the health listener reaches the admin interface.
pub const ADMIN_CLUSTER: &str = "switchyard-admin";
/// The static clusters through which it reaches the application's probed ports:
/// `switchyard-app-<port>`.
pub const APP_CLUSTER_PREFIX: &str = "switchyard-app-";

/// An application HTTP probe the injector pointed at the health port: the kubelet calls `path`
/// (`/app-health/<container>/<readyz|livez|startupz>`) there, and the proxy forwards it to the
/// application at `<Pod IP>:<port><target>`, past interception (the proxy's own connections
/// are never redirected) and so past mTLS, which the kubelet cannot speak.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AppProbe {
    pub path: String,
    pub port: u16,
    /// The probe's own path, with its query.
    pub target: String,
}

/// The `envoy.grpc_credentials.file_based_metadata` plugin: reads a header value from a file on
/// every call.
pub const FILE_CREDENTIALS: &str = "envoy.grpc_credentials.file_based_metadata";

/// HTTP/2 pings on the ADS connection, so a control plane that vanished without closing the
/// connection is noticed (the same figures the bundled proxy uses).
const KEEPALIVE_TIME_MS: i64 = 20_000;
const KEEPALIVE_TIMEOUT_MS: i64 = 10_000;

/// Envoy's limit on open downstream connections, over all listeners.
const MAX_DOWNSTREAM_CONNECTIONS: u64 = 50_000;

/// Which ADS variant Envoy speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdsApi {
    /// State of the world (`GRPC`).
    #[default]
    StateOfTheWorld,
    /// Incremental (`DELTA_GRPC`).
    Delta,
}

/// What a proxy's bootstrap says. It holds paths, never a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// `node.id`; for logs and the control plane's bookkeeping, never trusted for identity.
    pub node_id: String,
    /// `node.cluster`; Envoy tags its stats with it.
    pub node_cluster: String,
    /// Where the admin interface listens: 127.0.0.1 in a Pod; the Pod's loopback address in
    /// local mode.
    pub bind_ip: IpAddr,
    /// DESIGN §3: 15000.
    pub admin_port: u16,
    /// The health port (`podIP:15020`): `/ready`, `/live`, `/metrics`, the app probes, and
    /// nothing else.
    pub health: Option<SocketAddr>,
    /// The application's HTTP probes, served on the health port (with [`Self::health`] only).
    pub app_probes: Vec<AppProbe>,
    /// Control plane host: an IP or a DNS name (resolved by gRPC).
    pub xds_host: String,
    /// DESIGN §3: 15010.
    pub xds_port: u16,
    /// The name the control plane's certificate must hold, when it is not [`Self::xds_host`]
    /// (a harness that dials a Service's IP while the certificate names the Service).
    pub xds_server_name: Option<String>,
    /// The CA certificate(s) the control plane's serving certificate is verified with.
    pub xds_ca: XdsCa,
    /// A file holding the token sent as `authorization: Bearer <token>` on every ADS stream;
    /// the xDS server derives the proxy's identity from it. Read on every stream, never copied
    /// into the bootstrap.
    pub token_file: PathBuf,
    pub api: XdsApi,
    /// How often the proxy pushes its golden metrics to the control plane's `MetricsService`
    /// (`stats_flush_interval`, over the same channel and credentials as ADS); `None` for no
    /// push. Default [`DEFAULT_METRICS_INTERVAL`].
    pub metrics_interval: Option<std::time::Duration>,
}

impl BootstrapOptions {
    /// Options with the design's defaults: admin on `bind_ip:15000`, state-of-the-world ADS.
    pub fn new(
        node_id: impl Into<String>,
        bind_ip: IpAddr,
        xds_host: impl Into<String>,
        xds_port: u16,
        token_file: impl Into<PathBuf>,
        xds_ca: XdsCa,
    ) -> Self {
        BootstrapOptions {
            node_id: node_id.into(),
            node_cluster: "switchyard".to_owned(),
            bind_ip,
            admin_port: 15000,
            health: None,
            app_probes: Vec::new(),
            xds_host: xds_host.into(),
            xds_port,
            xds_server_name: None,
            xds_ca,
            token_file: token_file.into(),
            api: XdsApi::default(),
            metrics_interval: Some(DEFAULT_METRICS_INTERVAL),
        }
    }
}

/// Where the xDS CA certificate comes from (PEM). A CA certificate is public; only keys and
/// tokens must stay out of the bootstrap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XdsCa {
    /// A file the proxy reads (`root_certs.filename`).
    File(PathBuf),
    /// The PEM itself (`root_certs.inline_string`): what the injector passes to a Pod.
    Pem(String),
}

impl fmt::Display for XdsApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdsApi::StateOfTheWorld => "GRPC",
            XdsApi::Delta => "DELTA_GRPC",
        })
    }
}

/// An Envoy v3 bootstrap (JSON) for one proxy.
pub fn bootstrap(opts: &BootstrapOptions) -> Value {
    let ads = json!({ "ads": {}, "resource_api_version": "V3" });
    let mut bootstrap = json!({
        "node": { "id": opts.node_id, "cluster": opts.node_cluster },
        "admin": {
            "address": socket_address(&opts.bind_ip.to_string(), opts.admin_port),
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": opts.api.to_string(),
                "transport_api_version": "V3",
                // The server learns the node from the first request of a stream; repeating it
                // on every request only costs bytes.
                "set_node_on_first_message_only": true,
                "grpc_services": [grpc_service(opts, XDS_STAT_PREFIX)],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        // A cap far above what a sidecar serves, so that a connection flood exhausts Envoy's
        // limit rather than the pod's memory (and Envoy stops warning that there is none).
        "overload_manager": {
            "resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.\
                              downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
                },
            }],
        },
        "layered_runtime": {
            "layers": [{
                "name": "static",
                "static_layer": {
                    // SMI path and header regexes are user input; Envoy's default RE2 program
                    // size limit (100) rejects moderately long ones, and a rejected regex
                    // NACKs the whole route configuration.
                    "re2.max_program_size.error_level": 1000,
                    "re2.max_program_size.warn_level": 1000,
                },
            }],
        },
    });
    if let Some(interval) = opts.metrics_interval {
        metrics_sink(&mut bootstrap, opts, interval);
    }
    if let Some(health) = opts.health {
        let mut clusters = vec![static_cluster(
            ADMIN_CLUSTER,
            &opts.bind_ip.to_string(),
            opts.admin_port,
        )];
        let ports: std::collections::BTreeSet<u16> =
            opts.app_probes.iter().map(|p| p.port).collect();
        // From 127.0.0.6 (::6), as the inbound proxy reaches the app: interception lets that
        // source through, where the proxy's other connections to its own Pod IP are sent to
        // the inbound proxy (an app calling its own Service).
        let source = super::inbound_source(health.ip());
        clusters.extend(ports.into_iter().map(|port| {
            let mut cluster = static_cluster(
                &format!("{APP_CLUSTER_PREFIX}{port}"),
                &health.ip().to_string(),
                port,
            );
            cluster["upstream_bind_config"] = json!({
                "source_address": { "address": source.to_string(), "port_value": 0 },
            });
            cluster
        }));
        bootstrap["static_resources"] = json!({
            "listeners": [health_listener(health, &opts.app_probes)],
            "clusters": clusters,
        });
    }
    bootstrap
}

/// The health port's listener: `/ready` and `/metrics` from the admin interface, `/live` from
/// the listener itself (it answers while Envoy runs), a 404 for anything else, so nothing that
/// changes state or shows configuration is reachable on it.
fn health_listener(address: SocketAddr, app_probes: &[AppProbe]) -> Value {
    let forward = |path: &str, cluster: &str, rewrite: &str| {
        json!({
            "match": { "path": path, "headers": [read_only()] },
            "route": { "cluster": cluster, "prefix_rewrite": rewrite, "timeout": "10s" },
        })
    };
    let to_admin = |path: &str, rewrite: &str| forward(path, ADMIN_CLUSTER, rewrite);
    let not_found = json!({
        "match": { "prefix": "/" },
        "direct_response": {
            "status": 404,
            "body": {
                "inline_string": "not found; this port serves GET /ready, /live, /metrics \
                                  and the application's probes only\n",
            },
        },
    });
    let answer = |path: &str, status: u16, body: &str| {
        json!({
            "match": { "path": path, "headers": [read_only()] },
            "direct_response": { "status": status, "body": { "inline_string": body } },
        })
    };
    let mut routes = vec![
        to_admin("/ready", "/ready"),
        to_admin("/metrics", "/stats/prometheus"),
        answer("/live", 200, "live\n"),
    ];
    routes.extend(app_probes.iter().map(|p| {
        forward(
            &p.path,
            &format!("{APP_CLUSTER_PREFIX}{}", p.port),
            &p.target,
        )
    }));
    routes.push(not_found);
    json!({
        "name": HEALTH_LISTENER,
        "address": socket_address(&address.ip().to_string(), address.port()),
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.\
                              http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "switchyard_health",
                    "route_config": {
                        "name": HEALTH_LISTENER,
                        "virtual_hosts": [{
                            "name": HEALTH_LISTENER,
                            "domains": ["*"],
                            "routes": routes,
                        }],
                    },
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.\
                                      v3.Router",
                        },
                    }],
                },
            }],
        }],
    })
}

/// `GET` or `HEAD`: what a probe or a scraper sends.
fn read_only() -> Value {
    json!({
        "name": ":method",
        "string_match": { "safe_regex": { "regex": "GET|HEAD" } },
    })
}

/// An upstream of the health listener: the admin interface, or an application port.
fn static_cluster(name: &str, address: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": { "address": socket_address(address, port) },
                }],
            }],
        },
    })
}

/// Golden metrics pushed to the control plane every `interval`: Envoy's
/// `envoy.stat_sinks.metrics_service` with the names and labels
/// `switchyard_proxy_config::metrics::envoy` defines, counters as deltas, histograms as
/// buckets, the request-time histograms with the shared latency buckets. Every stat stays
/// (no `stats_matcher`): `/metrics` keeps Envoy's conventional names for users who scrape it;
/// the control plane reads the golden ones and drops the rest.
fn metrics_sink(bootstrap: &mut Value, opts: &BootstrapOptions, interval: std::time::Duration) {
    bootstrap["stats_sinks"] = json!([{
        "name": "envoy.stat_sinks.metrics_service",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig",
            "transport_api_version": "V3",
            "report_counters_as_deltas": true,
            "emit_tags_as_labels": true,
            "histogram_emit_mode": "HISTOGRAM",
            // Every used stat is sent (one family each); batches keep a large sidecar's flush
            // under the server's 4 MiB message bound.
            "batch_size": METRICS_BATCH_FAMILIES,
            "grpc_service": grpc_service(opts, METRICS_STAT_PREFIX),
        },
    }]);
    bootstrap["stats_flush_interval"] = json!(format!("{}s", interval.as_secs().max(1)));
    let buckets: Vec<f64> = switchyard_proxy_config::metrics::latency_buckets_millis().collect();
    bootstrap["stats_config"] = json!({
        "histogram_bucket_settings": [{
            "match": { "suffix": "_rq_time" },
            "buckets": buckets,
        }],
    });
}

/// The control plane's `GrpcService` (ADS, metrics): `google_grpc` on TLS, the token from its
/// file on every call.
fn grpc_service(opts: &BootstrapOptions, stat_prefix: &str) -> Value {
    let mut args = serde_json::Map::new();
    args.insert(
        "grpc.keepalive_time_ms".into(),
        json!({ "int_value": KEEPALIVE_TIME_MS }),
    );
    args.insert(
        "grpc.keepalive_timeout_ms".into(),
        json!({ "int_value": KEEPALIVE_TIMEOUT_MS }),
    );
    if let Some(name) = &opts.xds_server_name {
        args.insert(
            "grpc.ssl_target_name_override".into(),
            json!({ "string_value": name }),
        );
    }
    let root_certs = match &opts.xds_ca {
        XdsCa::File(file) => json!({ "filename": path(file) }),
        XdsCa::Pem(pem) => json!({ "inline_string": pem }),
    };
    json!({
        "google_grpc": {
            "target_uri": target_uri(&opts.xds_host, opts.xds_port),
            "stat_prefix": stat_prefix,
            "channel_credentials": {
                "ssl_credentials": { "root_certs": root_certs },
            },
            "call_credentials": [{
                "from_plugin": {
                    "name": FILE_CREDENTIALS,
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.config.grpc_credential.v3.\
                                  FileBasedMetadataConfig",
                        "secret_data": { "filename": path(&opts.token_file) },
                        "header_key": "authorization",
                        "header_prefix": "Bearer ",
                    },
                },
            }],
            // The default factory does not know the plugin; this one also builds the TLS
            // channel credentials.
            "credentials_factory_name": FILE_CREDENTIALS,
            "channel_args": { "args": args },
        },
    })
}

/// [`grpc_service`] as a message, for configuration sent over xDS (the tap's access log): the
/// same channel, credentials and arguments, so the proxy reaches the control plane exactly as
/// its ADS stream does. `tests::the_grpc_service_message_is_the_bootstraps` holds the two
/// together.
pub(super) fn control_plane_grpc(
    opts: &BootstrapOptions,
    stat_prefix: &str,
) -> envoy_types::pb::envoy::config::core::v3::GrpcService {
    use envoy_types::pb::{
        envoy::config::{
            core::v3::{
                DataSource, GrpcService, data_source,
                grpc_service::{
                    GoogleGrpc, TargetSpecifier,
                    google_grpc::{
                        CallCredentials, ChannelArgs, ChannelCredentials, SslCredentials,
                        call_credentials::{
                            self, MetadataCredentialsFromPlugin, metadata_credentials_from_plugin,
                        },
                        channel_args::{self, value::ValueSpecifier},
                        channel_credentials,
                    },
                },
            },
            grpc_credential::v3::FileBasedMetadataConfig,
        },
        google::protobuf::Any,
    };
    use prost::Name as _;
    let int = |v| channel_args::Value {
        value_specifier: Some(ValueSpecifier::IntValue(v)),
    };
    let mut args = std::collections::HashMap::from([
        ("grpc.keepalive_time_ms".to_owned(), int(KEEPALIVE_TIME_MS)),
        (
            "grpc.keepalive_timeout_ms".to_owned(),
            int(KEEPALIVE_TIMEOUT_MS),
        ),
    ]);
    if let Some(name) = &opts.xds_server_name {
        args.insert(
            "grpc.ssl_target_name_override".to_owned(),
            channel_args::Value {
                value_specifier: Some(ValueSpecifier::StringValue(name.clone())),
            },
        );
    }
    let root_certs = match &opts.xds_ca {
        XdsCa::File(file) => data_source::Specifier::Filename(path(file)),
        XdsCa::Pem(pem) => data_source::Specifier::InlineString(pem.clone()),
    };
    let token = FileBasedMetadataConfig {
        secret_data: Some(DataSource {
            specifier: Some(data_source::Specifier::Filename(path(&opts.token_file))),
            ..Default::default()
        }),
        header_key: "authorization".to_owned(),
        header_prefix: "Bearer ".to_owned(),
    };
    GrpcService {
        target_specifier: Some(TargetSpecifier::GoogleGrpc(GoogleGrpc {
            target_uri: target_uri(&opts.xds_host, opts.xds_port),
            stat_prefix: stat_prefix.to_owned(),
            channel_credentials: Some(ChannelCredentials {
                credential_specifier: Some(
                    channel_credentials::CredentialSpecifier::SslCredentials(SslCredentials {
                        root_certs: Some(DataSource {
                            specifier: Some(root_certs),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                ),
            }),
            call_credentials: vec![CallCredentials {
                credential_specifier: Some(call_credentials::CredentialSpecifier::FromPlugin(
                    MetadataCredentialsFromPlugin {
                        name: FILE_CREDENTIALS.to_owned(),
                        config_type: Some(
                            metadata_credentials_from_plugin::ConfigType::TypedConfig(Any {
                                type_url: FileBasedMetadataConfig::type_url(),
                                value: prost::Message::encode_to_vec(&token),
                            }),
                        ),
                    },
                )),
            }],
            credentials_factory_name: FILE_CREDENTIALS.to_owned(),
            channel_args: Some(ChannelArgs { args }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A gRPC target: `host:port`, an IPv6 address in brackets.
fn target_uri(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}
