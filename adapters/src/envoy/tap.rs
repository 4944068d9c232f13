//! Tap: while the control plane taps a proxy, each of its HTTP connection managers logs every
//! request to the control plane's access-log service (`envoy.access_loggers.http_grpc`, to
//! `envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`), over the channel and with
//! the credentials of its ADS stream. An untapped proxy's configuration has no access log, so
//! tapping costs nothing until someone asks for it.
//!
//! ```text
//!  compile ─▶ Output ─▶ tap(&mut output, &sink) ─▶ every Listener's HTTP connection managers
//!                                                    + access_log [http_grpc ─▶ control plane]
//! ```
//!
//! No header is logged beyond the fields every entry has (method, scheme, authority, path, user
//! agent, status) and the response's `grpc-status`: `authorization`, cookies and every other
//! header never leave the proxy. Both data planes get the same configuration; the bundled
//! proxy implements this subset of the logger.

use std::{sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{
            accesslog::v3::{AccessLog, access_log},
            core::v3::{ApiVersion, GrpcService},
            listener::v3::{Filter, Listener, filter},
        },
        extensions::{
            access_loggers::grpc::v3::{CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig},
            filters::network::http_connection_manager::v3::HttpConnectionManager,
        },
    },
    google::protobuf::UInt32Value,
};
use prost::Message as _;

use super::{
    BootstrapOptions, LISTENER_TYPE_URL, Output, Resource, bootstrap::control_plane_grpc, duration,
    to_any,
};

/// The access logger's extension name.
pub const ACCESS_LOGGER: &str = "envoy.access_loggers.http_grpc";
/// `log_name`: the control plane takes a stream with this name as tap events.
pub const TAP_LOG_NAME: &str = "switchyard-tap";
/// How long a logged request may wait in the proxy before it is sent (Envoy's default is 1 s;
/// a tap is watched live).
pub const TAP_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// How many bytes of entries the proxy buffers before it sends them at once (Envoy's default).
/// Past the gRPC stream's own buffer (1 MiB), Envoy drops entries rather than grow.
pub const TAP_BUFFER_BYTES: u32 = 16_384;
/// The response headers and trailers logged: the gRPC status only.
pub const TAP_RESPONSE_HEADERS: [&str; 1] = ["grpc-status"];
/// `stat_prefix` of the logger's gRPC client: its stats are `grpc.tap.*`.
pub const TAP_STAT_PREFIX: &str = "tap";

const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";

/// Where a tapped proxy sends its requests: the control plane, as its bootstrap reaches it.
#[derive(Clone, Debug, PartialEq)]
pub struct TapSink {
    service: GrpcService,
}

impl TapSink {
    /// The sink of the proxy whose bootstrap `opts` writes.
    pub fn new(opts: &BootstrapOptions) -> Self {
        TapSink {
            service: control_plane_grpc(opts, TAP_STAT_PREFIX),
        }
    }

    fn access_log(&self) -> AccessLog {
        let config = HttpGrpcAccessLogConfig {
            common_config: Some(CommonGrpcAccessLogConfig {
                log_name: TAP_LOG_NAME.to_owned(),
                grpc_service: Some(self.service.clone()),
                transport_api_version: ApiVersion::V3 as i32,
                buffer_flush_interval: Some(duration(TAP_FLUSH_INTERVAL)),
                buffer_size_bytes: Some(UInt32Value {
                    value: TAP_BUFFER_BYTES,
                }),
                ..Default::default()
            }),
            additional_response_headers_to_log: TAP_RESPONSE_HEADERS.map(str::to_owned).to_vec(),
            additional_response_trailers_to_log: TAP_RESPONSE_HEADERS.map(str::to_owned).to_vec(),
            ..Default::default()
        };
        AccessLog {
            name: ACCESS_LOGGER.to_owned(),
            config_type: Some(access_log::ConfigType::TypedConfig(to_any(&config))),
            ..Default::default()
        }
    }
}

/// Adds the tap's access log to every HTTP connection manager of `output`'s listeners; the
/// other resources are untouched.
pub fn tap(output: &mut Output<Arc<Resource>>, sink: &TapSink) {
    let log = sink.access_log();
    for resource in &mut output.resources {
        if resource.type_url != LISTENER_TYPE_URL {
            continue;
        }
        let Ok(mut listener) = Listener::decode(resource.resource.value.as_slice()) else {
            continue;
        };
        let chains = listener
            .filter_chains
            .iter_mut()
            .chain(listener.default_filter_chain.as_mut());
        let mut tapped = false;
        for filter in chains.flat_map(|c| c.filters.iter_mut()) {
            tapped |= add_log(filter, &log);
        }
        if tapped {
            let mut r = Resource::clone(resource);
            r.resource = to_any(&listener);
            *resource = Arc::new(r);
        }
    }
}

/// Appends `log` to `filter` when it is an HTTP connection manager; whether it was one.
fn add_log(filter: &mut Filter, log: &AccessLog) -> bool {
    if filter.name != HCM_FILTER {
        return false;
    }
    let Some(filter::ConfigType::TypedConfig(any)) = &mut filter.config_type else {
        return false;
    };
    let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
        return false;
    };
    hcm.access_log.push(log.clone());
    any.value = hcm.encode_to_vec();
    true
}
