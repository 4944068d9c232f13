//! The proxy's bootstrap: the same Envoy v3 bootstrap file the control plane writes for Envoy,
//! of which the proxy reads the node, the admin address, the ADS cluster, and the metrics
//! service sink (`stats_sinks`, `stats_flush_interval`).
//!
//! Reading Envoy's file, rather than a format of its own, is what lets a workload switch data
//! planes without any change to what is deployed next to it.

#[cfg(test)]
mod tests;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

/// The static listener of the bootstrap that serves the probes and metrics (the health port).
pub const HEALTH_LISTENER: &str = "switchyard-health";
/// The static cluster of the admin interface, whose routes the proxy answers itself.
const ADMIN_CLUSTER: &str = "switchyard-admin";

/// The `google_grpc` call credentials plugin that reads a header value from a file per call.
const FILE_CREDENTIALS: &str = "envoy.grpc_credentials.file_based_metadata";

/// The one stat sink the proxy implements.
pub const METRICS_SERVICE_SINK: &str = "envoy.stat_sinks.metrics_service";
const METRICS_SERVICE_CONFIG: &str =
    "type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig";

/// The shortest and longest `stats_flush_interval`: Envoy takes 1 ms to 5 min; below 1 s a
/// sidecar would spend more on flushing than it tells.
pub const MIN_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(300);

/// What the proxy needs to start. `Debug` leaves an inline credential out.
#[derive(Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// `node.id`: for logs and the control plane's bookkeeping only.
    pub node_id: String,
    /// `node.cluster`.
    pub node_cluster: String,
    /// `admin.address`: `/ready`, `/live`, `/config_dump`, `/metrics`, and the endpoints that
    /// change state (`/healthcheck/fail`). 127.0.0.1 in a Pod.
    pub admin: SocketAddr,
    /// The address of the static listener [`HEALTH_LISTENER`], where only `/ready`, `/live`
    /// and `/metrics` are served (the kubelet's probes, a scraper).
    pub health: Option<SocketAddr>,
    /// The health listener's other routes: the application's rewritten HTTP probes, forwarded
    /// to the application.
    pub health_forwards: Vec<HealthForward>,
    /// The control plane: `google_grpc`'s `target_uri`, or the one endpoint of the static
    /// cluster `envoy_grpc` names.
    pub xds: XdsEndpoint,
    /// TLS to the control plane (`google_grpc`'s `ssl_credentials`); h2c without.
    pub xds_tls: Option<XdsTls>,
    /// What the ADS stream's `authorization` header carries.
    pub credential: Option<Credential>,
    /// Whether the bootstrap asks for delta ADS (`DELTA_GRPC`); state of the world otherwise.
    pub delta: bool,
    /// The ADS cluster's `connect_timeout` (`envoy_grpc`); default 5 s, as Envoy's.
    pub connect_timeout: Duration,
    /// The `envoy.stat_sinks.metrics_service` sink, when `stats_sinks` has it: the golden
    /// stats are pushed to the control plane ([`crate::metrics_push`]).
    pub metrics_sink: Option<MetricsSink>,
}

/// The metrics service sink: to the ADS service (the one the proxy can reach), counters as
/// increases, tags as labels, histograms as histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsSink {
    /// `stats_flush_interval`: how often the stats are sent; default 5 s (Envoy's), within
    /// [`MIN_FLUSH_INTERVAL`] and [`MAX_FLUSH_INTERVAL`].
    pub flush_interval: Duration,
    /// `batch_size`: the most metric families in one message; `None` for no limit (Envoy's
    /// default). Families of a flush beyond it go in the next flush ([`crate::metrics_push`]).
    pub batch_size: Option<usize>,
}

/// A route of the health listener to a static cluster other than the admin interface: `GET
/// path` is answered by `GET target` at `upstream`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthForward {
    pub path: String,
    pub upstream: SocketAddr,
    /// The cluster's `upstream_bind_config` source address (127.0.0.6 in a Pod).
    pub source: Option<std::net::IpAddr>,
    pub target: String,
}

/// Where the control plane is: a host (an IP or a DNS name) and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsEndpoint {
    pub host: String,
    pub port: u16,
}

/// How the control plane's certificate is verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsTls {
    /// PEM CA certificates (`root_certs`).
    pub roots: DataSource,
    /// The name the certificate must hold: `grpc.ssl_target_name_override`, else the host.
    pub server_name: String,
}

/// An Envoy `DataSource`: a file, or the text itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    File(PathBuf),
    Inline(String),
}

/// The ADS stream's `authorization` value.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Written in the bootstrap (`envoy_grpc` `initial_metadata`): hand-written bootstraps only;
    /// the control plane never writes one.
    Inline(String),
    /// `file_based_metadata`: `prefix` and the file's content, read again for every stream so
    /// that a rotated token applies.
    File { path: PathBuf, prefix: String },
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("node_id", &self.node_id)
            .field("node_cluster", &self.node_cluster)
            .field("admin", &self.admin)
            .field("health", &self.health)
            .field("health_forwards", &self.health_forwards)
            .field("xds", &self.xds)
            .field("xds_tls", &self.xds_tls)
            .field("credential", &self.credential)
            .field("delta", &self.delta)
            .field("connect_timeout", &self.connect_timeout)
            .field("metrics_sink", &self.metrics_sink)
            .finish()
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Inline(_) => f.write_str("Inline(<redacted>)"),
            Credential::File { path, prefix } => f
                .debug_struct("File")
                .field("path", path)
                .field("prefix", prefix)
                .finish(),
        }
    }
}

impl Credential {
    /// The header value now: for a file, its content (surrounding whitespace trimmed) after the
    /// prefix.
    pub fn authorization(&self) -> std::io::Result<String> {
        match self {
            Credential::Inline(value) => Ok(value.clone()),
            Credential::File { path, prefix } => {
                let token = std::fs::read_to_string(path)?;
                Ok(format!("{prefix}{}", token.trim()))
            }
        }
    }
}

impl DataSource {
    /// The bytes: the file's content, or the inline text.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            DataSource::File(path) => std::fs::read(path),
            DataSource::Inline(text) => Ok(text.as_bytes().to_vec()),
        }
    }
}

/// A bootstrap the proxy cannot use, naming the JSON field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
}

fn field(field: &str, reason: impl Into<String>) -> Error {
    Error::Field {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl Bootstrap {
    /// Reads a bootstrap file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&value)
    }

    /// Reads the subset of an Envoy v3 bootstrap the proxy uses. Fields outside it are ignored
    /// (they tune Envoy); a field the proxy needs but cannot understand is an error.
    pub fn from_json(v: &Value) -> Result<Self, Error> {
        let node_id = str_at(v, "/node/id")?.to_owned();
        let node_cluster = v
            .pointer("/node/cluster")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let admin = socket_address(v, "/admin/address")?;
        let admin = admin_addr(&admin.host, admin.port)?;

        let ads = "/dynamic_resources/ads_config";
        let delta = match str_at(v, &format!("{ads}/api_type"))? {
            "GRPC" => false,
            "DELTA_GRPC" => true,
            other => {
                return Err(field(
                    &dotted(&format!("{ads}/api_type")),
                    format!("{other:?} is not supported; use GRPC or DELTA_GRPC"),
                ));
            }
        };
        let services = v
            .pointer(&format!("{ads}/grpc_services"))
            .and_then(Value::as_array)
            .filter(|s| s.len() == 1)
            .ok_or_else(|| {
                field(
                    &dotted(&format!("{ads}/grpc_services")),
                    "must hold one service",
                )
            })?;
        let service = &services[0];
        let at = format!("{ads}/grpc_services/0");
        let (xds, xds_tls, credential, connect_timeout) =
            match (service.get("google_grpc"), service.get("envoy_grpc")) {
                (Some(google), _) => {
                    let (xds, tls, credential) = google_grpc(google, &format!("{at}/google_grpc"))?;
                    (xds, tls, credential, Duration::from_secs(5))
                }
                (None, Some(_)) => {
                    let (xds, timeout) = envoy_grpc(v, service, &at)?;
                    (xds, None, initial_metadata(service), timeout)
                }
                (None, None) => {
                    return Err(field(&dotted(&at), "needs google_grpc or envoy_grpc"));
                }
            };
        let (health, health_forwards) = health_listener(v)?;
        let metrics_sink = metrics_sink(v, service)?;
        Ok(Bootstrap {
            node_id,
            node_cluster,
            admin,
            health,
            health_forwards,
            xds,
            xds_tls,
            credential,
            delta,
            connect_timeout,
            metrics_sink,
        })
    }
}

/// `stats_sinks` and `stats_flush_interval`: nothing, or the one sink the proxy implements,
/// configured as it implements it. Anything else is refused, naming the field, rather than
/// half done.
fn metrics_sink(v: &Value, ads_service: &Value) -> Result<Option<MetricsSink>, Error> {
    let flush_interval = match v.get("stats_flush_interval") {
        None => crate::metrics_push::DEFAULT_FLUSH_INTERVAL,
        Some(interval) => interval
            .as_str()
            .and_then(parse_duration)
            .filter(|d| (MIN_FLUSH_INTERVAL..=MAX_FLUSH_INTERVAL).contains(d))
            .ok_or_else(|| {
                field(
                    "stats_flush_interval",
                    format!(
                        "a duration from {}s to {}s, such as \"5s\"",
                        MIN_FLUSH_INTERVAL.as_secs(),
                        MAX_FLUSH_INTERVAL.as_secs()
                    ),
                )
            })?,
    };
    let sinks = match v.get("stats_sinks") {
        None => return Ok(None),
        Some(Value::Array(sinks)) => sinks,
        Some(_) => return Err(field("stats_sinks", "must be a list")),
    };
    let sink = match sinks.as_slice() {
        [] => return Ok(None),
        [sink] => sink,
        _ => {
            return Err(field(
                "stats_sinks",
                format!("only one sink, {METRICS_SERVICE_SINK}, is supported"),
            ));
        }
    };
    let at = "stats_sinks[0]";
    only_keys(sink, at, &["name", "typed_config"])?;
    if sink.get("name").and_then(Value::as_str) != Some(METRICS_SERVICE_SINK) {
        return Err(field(
            &format!("{at}.name"),
            format!("only {METRICS_SERVICE_SINK} is supported"),
        ));
    }
    let at = format!("{at}.typed_config");
    let config = sink
        .get("typed_config")
        .ok_or_else(|| field(&at, "required"))?;
    only_keys(
        config,
        &at,
        &[
            "@type",
            "grpc_service",
            "transport_api_version",
            "report_counters_as_deltas",
            "emit_tags_as_labels",
            "histogram_emit_mode",
            "batch_size",
        ],
    )?;
    let batch_size = match config.get("batch_size") {
        None => None,
        Some(n) => match n.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(0) => None,
            Some(n) => Some(n),
            None => return Err(field(&format!("{at}.batch_size"), "must be a whole number")),
        },
    };
    let expect = |key: &str, value: Value, reason: &str| {
        if config.get(key) == Some(&value) {
            Ok(())
        } else {
            Err(field(&format!("{at}.{key}"), reason))
        }
    };
    expect(
        "@type",
        Value::from(METRICS_SERVICE_CONFIG),
        &format!("must be {METRICS_SERVICE_CONFIG}"),
    )?;
    expect("transport_api_version", Value::from("V3"), "must be V3")?;
    expect(
        "report_counters_as_deltas",
        Value::from(true),
        "must be true: counters are sent as increases",
    )?;
    expect(
        "emit_tags_as_labels",
        Value::from(true),
        "must be true: stats are named without their tags, which are labels",
    )?;
    expect(
        "histogram_emit_mode",
        Value::from("HISTOGRAM"),
        "must be HISTOGRAM",
    )?;
    let at = format!("{at}.grpc_service");
    let service = config
        .get("grpc_service")
        .ok_or_else(|| field(&at, "required"))?;
    // The proxy dials only the control plane: the sink must name the ADS service.
    let same = match (service.get("envoy_grpc"), service.get("google_grpc")) {
        (Some(envoy), None) => {
            only_keys(service, &at, &["envoy_grpc"])?;
            only_keys(envoy, &format!("{at}.envoy_grpc"), &["cluster_name"])?;
            let cluster = envoy.get("cluster_name");
            cluster.is_some() && cluster == ads_service.pointer("/envoy_grpc/cluster_name")
        }
        (None, Some(google)) => {
            only_keys(service, &at, &["google_grpc"])?;
            // Its stats' prefix may differ; the channel must be the same.
            let channel = |g: &Value| {
                let mut g = g.clone();
                if let Some(g) = g.as_object_mut() {
                    g.remove("stat_prefix");
                }
                g
            };
            ads_service
                .get("google_grpc")
                .is_some_and(|ads| channel(ads) == channel(google))
        }
        _ => false,
    };
    if !same {
        return Err(field(
            &at,
            "must be the ADS service's (envoy_grpc naming its cluster, or the same google_grpc): \
             the proxy sends metrics only to the control plane",
        ));
    }
    Ok(Some(MetricsSink {
        flush_interval,
        batch_size,
    }))
}

/// Refuses a key of an object outside `known`, naming it.
fn only_keys(v: &Value, at: &str, known: &[&str]) -> Result<(), Error> {
    let Some(object) = v.as_object() else {
        return Err(field(at, "must be an object"));
    };
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(field(&format!("{at}.{key}"), "not supported")),
        None => Ok(()),
    }
}

/// The address of the static listener named [`HEALTH_LISTENER`], if the bootstrap has one,
/// and its routes to static clusters other than the admin interface.
fn health_listener(v: &Value) -> Result<(Option<SocketAddr>, Vec<HealthForward>), Error> {
    let listeners = v
        .pointer("/static_resources/listeners")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate();
    for (i, listener) in listeners {
        if listener.get("name").and_then(Value::as_str) != Some(HEALTH_LISTENER) {
            continue;
        }
        let at = format!("static_resources.listeners[{i}]");
        let address = socket_address(listener, "/address").map_err(|e| match e {
            Error::Field { reason, .. } => field(&format!("{at}.address"), reason),
            other => other,
        })?;
        let ip = address
            .host
            .parse()
            .map_err(|_| field(&format!("{at}.address"), "must be an IP address"))?;
        let routes = listener
            .pointer("/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let mut forwards = Vec::new();
        for route in routes {
            let (Some(path), Some(cluster)) = (
                route.pointer("/match/path").and_then(Value::as_str),
                route.pointer("/route/cluster").and_then(Value::as_str),
            ) else {
                continue;
            };
            if cluster == ADMIN_CLUSTER {
                continue;
            }
            let target = route
                .pointer("/route/prefix_rewrite")
                .and_then(Value::as_str)
                .unwrap_or(path);
            let (upstream, source) = static_cluster_address(v, cluster)?;
            forwards.push(HealthForward {
                path: path.to_owned(),
                upstream,
                source,
                target: target.to_owned(),
            });
        }
        return Ok((Some(SocketAddr::new(ip, address.port)), forwards));
    }
    Ok((None, Vec::new()))
}

/// The one endpoint of static cluster `name`, which must be an IP address, and the source
/// address its `upstream_bind_config` names.
fn static_cluster_address(
    v: &Value,
    name: &str,
) -> Result<(SocketAddr, Option<std::net::IpAddr>), Error> {
    let clusters = v
        .pointer("/static_resources/clusters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let cluster = clusters
        .into_iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        .ok_or_else(|| {
            field(
                "static_resources.clusters",
                format!("no cluster {name:?}, which the health listener names"),
            )
        })?;
    let endpoint = cluster
        .pointer("/load_assignment/endpoints/0/lb_endpoints/0")
        .ok_or_else(|| field(&format!("cluster {name}"), "needs one endpoint"))?;
    let address = socket_address(endpoint, "/endpoint/address")?;
    let ip = address
        .host
        .parse()
        .map_err(|_| field(&format!("cluster {name}"), "must be an IP address"))?;
    let source = cluster
        .pointer("/upstream_bind_config/source_address/address")
        .and_then(Value::as_str)
        .map(|s| {
            s.parse().map_err(|_| {
                field(
                    &format!("cluster {name}.upstream_bind_config"),
                    "must be an IP address",
                )
            })
        })
        .transpose()?;
    Ok((SocketAddr::new(ip, address.port), source))
}

/// `google_grpc`: the target, TLS from `ssl_credentials`, the token from the
/// `file_based_metadata` call credentials (or an `access_token`).
fn google_grpc(
    g: &Value,
    at: &str,
) -> Result<(XdsEndpoint, Option<XdsTls>, Option<Credential>), Error> {
    let target = str_at(g, "/target_uri").map_err(|_| {
        field(
            &format!("{}.target_uri", dotted(at)),
            "required string (host:port)",
        )
    })?;
    let xds = parse_target(target).ok_or_else(|| {
        field(
            &format!("{}.target_uri", dotted(at)),
            format!("{target:?} is not host:port"),
        )
    })?;
    let tls = match g.pointer("/channel_credentials/ssl_credentials") {
        None => None,
        Some(ssl) => {
            let roots_at = format!(
                "{}.channel_credentials.ssl_credentials.root_certs",
                dotted(at)
            );
            let roots = ssl
                .get("root_certs")
                .and_then(data_source)
                .ok_or_else(|| field(&roots_at, "required: a filename or inline_string"))?;
            let server_name = g
                .pointer("/channel_args/args/grpc.ssl_target_name_override/string_value")
                .and_then(Value::as_str)
                .unwrap_or(&xds.host)
                .to_owned();
            Some(XdsTls { roots, server_name })
        }
    };
    let credentials = g
        .get("call_credentials")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let mut credential = None;
    for (i, c) in credentials.enumerate() {
        if let Some(token) = c.get("access_token").and_then(Value::as_str) {
            credential = Some(Credential::Inline(format!("Bearer {token}")));
        } else if let Some(plugin) = c.get("from_plugin") {
            let plugin_at = format!("{}.call_credentials[{i}].from_plugin", dotted(at));
            if plugin.get("name").and_then(Value::as_str) != Some(FILE_CREDENTIALS) {
                return Err(field(
                    &format!("{plugin_at}.name"),
                    format!("only {FILE_CREDENTIALS} is supported"),
                ));
            }
            let config = plugin.get("typed_config").unwrap_or(&Value::Null);
            let key = config
                .get("header_key")
                .and_then(Value::as_str)
                .unwrap_or("authorization");
            if !key.eq_ignore_ascii_case("authorization") {
                return Err(field(
                    &format!("{plugin_at}.typed_config.header_key"),
                    "only authorization is supported",
                ));
            }
            let prefix = config
                .get("header_prefix")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            credential = Some(match config.get("secret_data").and_then(data_source) {
                Some(DataSource::File(path)) => Credential::File { path, prefix },
                Some(DataSource::Inline(token)) => {
                    Credential::Inline(format!("{prefix}{}", token.trim()))
                }
                None => {
                    return Err(field(
                        &format!("{plugin_at}.typed_config.secret_data"),
                        "required: a filename or inline_string",
                    ));
                }
            });
        }
    }
    Ok((xds, tls, credential))
}

/// `envoy_grpc`: the one endpoint of the static cluster it names, and that cluster's
/// `connect_timeout`.
fn envoy_grpc(v: &Value, service: &Value, at: &str) -> Result<(XdsEndpoint, Duration), Error> {
    let cluster = service
        .pointer("/envoy_grpc/cluster_name")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            field(
                &format!("{}.envoy_grpc.cluster_name", dotted(at)),
                "required",
            )
        })?;
    let clusters = v
        .pointer("/static_resources/clusters")
        .and_then(Value::as_array)
        .ok_or_else(|| field("static_resources.clusters", "required"))?;
    let (index, xds_cluster) = clusters
        .iter()
        .enumerate()
        .find(|(_, c)| c.get("name").and_then(Value::as_str) == Some(cluster))
        .ok_or_else(|| {
            field(
                "static_resources.clusters",
                format!("no cluster {cluster:?}, which ADS names"),
            )
        })?;
    let at = format!("/static_resources/clusters/{index}");
    let endpoints = xds_cluster
        .pointer("/load_assignment/endpoints/0/lb_endpoints")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            field(
                &format!("static_resources.clusters[{index}].load_assignment"),
                "needs one endpoint",
            )
        })?;
    let xds = socket_address(&endpoints[0], "/endpoint/address").map_err(|e| match e {
        Error::Field { field: f, reason } => Error::Field {
            field: format!(
                "{}.load_assignment.endpoints[0].lb_endpoints[0].{f}",
                dotted(&at)
            ),
            reason,
        },
        other => other,
    })?;
    let connect_timeout = match xds_cluster.get("connect_timeout") {
        None => Duration::from_secs(5),
        Some(t) => t.as_str().and_then(parse_duration).ok_or_else(|| {
            field(
                &format!("{}.connect_timeout", dotted(&at)),
                "a duration such as \"1s\" or \"0.250s\"",
            )
        })?,
    };
    Ok((xds, connect_timeout))
}

/// The `authorization` entry of `envoy_grpc`'s `initial_metadata`.
fn initial_metadata(service: &Value) -> Option<Credential> {
    service
        .get("initial_metadata")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|m| {
            m.get("key")
                .and_then(Value::as_str)
                .is_some_and(|k| k.eq_ignore_ascii_case("authorization"))
        })
        .and_then(|m| m.get("value").and_then(Value::as_str))
        .map(|v| Credential::Inline(v.to_owned()))
}

/// An Envoy `DataSource` of a file or inline text.
fn data_source(v: &Value) -> Option<DataSource> {
    if let Some(path) = v.get("filename").and_then(Value::as_str) {
        return Some(DataSource::File(PathBuf::from(path)));
    }
    v.get("inline_string")
        .and_then(Value::as_str)
        .map(|s| DataSource::Inline(s.to_owned()))
}

/// A gRPC target `host:port`, `[v6]:port`, optionally `dns:///`-prefixed.
fn parse_target(target: &str) -> Option<XdsEndpoint> {
    let target = target.strip_prefix("dns:///").unwrap_or(target);
    let (host, port) = target.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(())?;
    Some(XdsEndpoint {
        host: host.to_owned(),
        port: port.parse().ok()?,
    })
}

/// A JSON pointer as a dotted field path for messages: `/a/0/b` → `a[0].b`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Result<&'a str, Error> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| field(&dotted(pointer), "required string"))
}

fn socket_address(v: &Value, pointer: &str) -> Result<XdsEndpoint, Error> {
    let host = str_at(v, &format!("{pointer}/socket_address/address"))?.to_owned();
    let port_at = format!("{pointer}/socket_address/port_value");
    let port = v
        .pointer(&port_at)
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| field(&dotted(&port_at), "required port number"))?;
    Ok(XdsEndpoint { host, port })
}

fn admin_addr(host: &str, port: u16) -> Result<SocketAddr, Error> {
    let ip = host.parse().map_err(|_| {
        field(
            "admin.address.socket_address.address",
            "must be an IP address",
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// A protobuf JSON duration: seconds with optional decimals and an `s`.
fn parse_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}
