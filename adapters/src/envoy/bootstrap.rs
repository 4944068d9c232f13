//! The Envoy bootstrap: node identity, admin, and ADS to the Switchyard control plane with a
//! bearer token. Everything else arrives over ADS.

use std::{fmt, net::IpAddr, time::Duration};

use serde_json::{Value, json};

/// Name of the static cluster that reaches the control plane.
pub const XDS_CLUSTER: &str = "xds";

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

/// What a proxy's bootstrap says. `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// `node.id`; for logs and the control plane's bookkeeping, never trusted for identity.
    pub node_id: String,
    /// `node.cluster`; Envoy tags its stats with it.
    pub node_cluster: String,
    /// Where the admin interface listens (the pod IP; a loopback in local mode).
    pub bind_ip: IpAddr,
    /// DESIGN §3: 15000.
    pub admin_port: u16,
    /// Control plane host: an IP (STATIC cluster) or a DNS name (STRICT_DNS).
    pub xds_host: String,
    /// DESIGN §3: 15010.
    pub xds_port: u16,
    /// Sent as `authorization: Bearer <token>` on the ADS stream; the xDS server derives the
    /// proxy's identity from it.
    pub token: String,
    pub api: XdsApi,
    pub connect_timeout: Duration,
}

impl BootstrapOptions {
    /// Options with the design's defaults: admin on `bind_ip:15000`, state-of-the-world ADS.
    pub fn new(
        node_id: impl Into<String>,
        bind_ip: IpAddr,
        xds_host: impl Into<String>,
        xds_port: u16,
        token: impl Into<String>,
    ) -> Self {
        BootstrapOptions {
            node_id: node_id.into(),
            node_cluster: "switchyard".to_owned(),
            bind_ip,
            admin_port: 15000,
            xds_host: xds_host.into(),
            xds_port,
            token: token.into(),
            api: XdsApi::default(),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for BootstrapOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapOptions")
            .field("node_id", &self.node_id)
            .field("node_cluster", &self.node_cluster)
            .field("bind_ip", &self.bind_ip)
            .field("admin_port", &self.admin_port)
            .field("xds_host", &self.xds_host)
            .field("xds_port", &self.xds_port)
            .field("token", &"<redacted>")
            .field("api", &self.api)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// An Envoy v3 bootstrap (JSON) for one proxy.
pub fn bootstrap(opts: &BootstrapOptions) -> Value {
    let ads = json!({ "ads": {}, "resource_api_version": "V3" });
    let api_type = match opts.api {
        XdsApi::StateOfTheWorld => "GRPC",
        XdsApi::Delta => "DELTA_GRPC",
    };
    let xds_type = if opts.xds_host.parse::<IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    json!({
        "node": { "id": opts.node_id, "cluster": opts.node_cluster },
        "admin": {
            "address": socket_address(&opts.bind_ip.to_string(), opts.admin_port),
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                // The server learns the node from the first request of a stream; repeating it
                // on every request only costs bytes.
                "set_node_on_first_message_only": true,
                "grpc_services": [{
                    "envoy_grpc": { "cluster_name": XDS_CLUSTER },
                    "initial_metadata": [
                        { "key": "authorization", "value": format!("Bearer {}", opts.token) },
                    ],
                }],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": [{
                "name": XDS_CLUSTER,
                "type": xds_type,
                "connect_timeout": json_duration(opts.connect_timeout),
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        // gRPC needs HTTP/2; the control plane speaks h2c.
                        "explicit_http_config": { "http2_protocol_options": {} },
                    },
                },
                // Notices a control plane that vanished without closing the connection.
                "upstream_connection_options": { "tcp_keepalive": {} },
                "load_assignment": {
                    "cluster_name": XDS_CLUSTER,
                    "endpoints": [{
                        "lb_endpoints": [{
                            "endpoint": {
                                "address": socket_address(&opts.xds_host, opts.xds_port),
                            },
                        }],
                    }],
                },
            }],
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
    })
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}

/// A protobuf JSON duration: seconds with up to nine decimals and an `s`.
fn json_duration(d: Duration) -> String {
    match d.subsec_nanos() {
        0 => format!("{}s", d.as_secs()),
        nanos => format!("{}.{nanos:09}s", d.as_secs()),
    }
}
