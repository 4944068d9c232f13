//! The proxy's bootstrap: the same Envoy v3 bootstrap file the control plane writes for Envoy,
//! of which the proxy reads the node, the admin address and the ADS cluster.
//!
//! Reading Envoy's file, rather than a format of its own, is what lets a workload switch data
//! planes without any change to what is deployed next to it.

#[cfg(test)]
mod tests;

use std::{net::SocketAddr, path::Path, time::Duration};

use serde_json::Value;

/// What the proxy needs to start. `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// `node.id`: for logs and the control plane's bookkeeping only.
    pub node_id: String,
    /// `node.cluster`.
    pub node_cluster: String,
    /// `admin.address`: `/ready`, `/live`, `/config_dump`, `/metrics`.
    pub admin: SocketAddr,
    /// The control plane: the one endpoint of the static cluster ADS names.
    pub xds: XdsEndpoint,
    /// The `authorization` value of the ADS stream's initial metadata (`Bearer <token>`).
    pub authorization: Option<String>,
    /// Whether the bootstrap asks for delta ADS (`DELTA_GRPC`); state of the world otherwise.
    pub delta: bool,
    /// The ADS cluster's `connect_timeout`; default 5 s, as Envoy's.
    pub connect_timeout: Duration,
}

/// Where the control plane is: a host (an IP or a DNS name) and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsEndpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("node_id", &self.node_id)
            .field("node_cluster", &self.node_cluster)
            .field("admin", &self.admin)
            .field("xds", &self.xds)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("delta", &self.delta)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
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
        let cluster = service
            .pointer("/envoy_grpc/cluster_name")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                field(
                    &dotted(&format!("{ads}/grpc_services/0/envoy_grpc/cluster_name")),
                    "required (google_grpc is not supported)",
                )
            })?;
        let authorization = service
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
            .map(str::to_owned);

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
        Ok(Bootstrap {
            node_id,
            node_cluster,
            admin,
            xds,
            authorization,
            delta,
            connect_timeout,
        })
    }
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
