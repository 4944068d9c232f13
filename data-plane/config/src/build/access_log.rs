//! Access logs of an HTTP connection manager: `envoy.access_loggers.http_grpc` only, to the
//! control plane over the proxy's ADS channel, unfiltered or filtered (see [`AccessLog`]).
//!
//! A filter is a tree of the `AccessLogFilter` kinds a tap needs ([`LogFilter`]); every other
//! kind is refused where it stands:
//!
//! ```text
//! filter ── or_filter / and_filter ── filters[i] ── or_filter / and_filter ── ...
//!                                          ├─ header_filter.header           (HeaderMatcher)
//!                                          └─ extension_filter               (process_ratelimit)
//!                                               └─ typed_config.dynamic_config.resource_name
//! ```
//!
//! The tree is bounded ([`MAX_LOG_FILTER_DEPTH`], [`MAX_LOG_FILTER_NODES`]) so that neither
//! this translation nor a request's evaluation of it can be made arbitrarily expensive.

use envoy_types::pb::envoy::{
    config::{
        accesslog::v3::{
            AccessLog as PbAccessLog, AccessLogFilter, AndFilter, ExtensionFilter, HeaderFilter,
            OrFilter, access_log, access_log_filter::FilterSpecifier, extension_filter,
        },
        core::v3::{ApiVersion, GrpcService, grpc_service::TargetSpecifier},
    },
    extensions::access_loggers::{
        filters::process_ratelimit::v3::{DynamicTokenBucket, ProcessRateLimitFilter},
        grpc::v3::{CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig},
    },
};

use super::{At, Invalid, decode, duration, is, is_ads, matcher, unsupported};
use crate::{
    AccessLog, BucketName, DEFAULT_ACCESS_LOG_BUFFER_BYTES, DEFAULT_ACCESS_LOG_FLUSH_INTERVAL,
    HeaderMatch, LogFilter, MAX_LOG_FILTER_DEPTH, MAX_LOG_FILTER_NODES,
};

/// The one extension filter of access logs the proxy implements: Envoy's process-wide token
/// bucket.
pub const PROCESS_RATELIMIT: &str = "envoy.access_loggers.extension_filters.process_ratelimit";

/// What the filter kinds the proxy does not implement say.
const OTHER_FILTER: &str = "only extension_filter (process_ratelimit), header_filter, \
                            and_filter and or_filter are supported";

/// The connection manager's `access_log` list.
pub(super) fn access_logs(list: &[PbAccessLog]) -> Result<Vec<AccessLog>, Invalid> {
    list.iter()
        .enumerate()
        .map(|(i, log)| access_log(log).at(format_args!("access_log[{i}]")))
        .collect()
}

fn access_log(log: &PbAccessLog) -> Result<AccessLog, Invalid> {
    let filter = match &log.filter {
        None => None,
        Some(filter) => Some(log_filter(filter, 1, &mut 0).at("filter")?),
    };
    let any = match &log.config_type {
        Some(access_log::ConfigType::TypedConfig(any)) => any,
        None => return Err(unsupported("typed_config", "a typed config is required")),
    };
    if !is::<HttpGrpcAccessLogConfig>(any) {
        return Err(unsupported(
            "typed_config",
            "only envoy.access_loggers.http_grpc (HttpGrpcAccessLogConfig) is supported",
        ));
    }
    only!(log => PbAccessLog { name, filter, config_type } unset {});
    let config: HttpGrpcAccessLogConfig = decode(any).at("typed_config")?;
    let log = http_grpc(&config).at("typed_config")?;
    Ok(AccessLog { filter, ..log })
}

/// One filter of an access log's filter tree, `depth` deep (the top one is 1); `nodes`
/// counts the filters translated so far, across the whole tree.
fn log_filter(
    filter: &AccessLogFilter,
    depth: usize,
    nodes: &mut usize,
) -> Result<LogFilter, Invalid> {
    if depth > MAX_LOG_FILTER_DEPTH {
        return Err(unsupported(
            "",
            format!("nested deeper than MAX_LOG_FILTER_DEPTH ({MAX_LOG_FILTER_DEPTH}) filters"),
        ));
    }
    *nodes += 1;
    if *nodes > MAX_LOG_FILTER_NODES {
        return Err(unsupported(
            "",
            format!(
                "the access log's filter has more than MAX_LOG_FILTER_NODES \
                 ({MAX_LOG_FILTER_NODES}) filters"
            ),
        ));
    }
    let translated = match &filter.filter_specifier {
        Some(FilterSpecifier::ExtensionFilter(extension)) => {
            LogFilter::Bucket(process_ratelimit(extension).at("extension_filter")?)
        }
        Some(FilterSpecifier::HeaderFilter(header)) => {
            LogFilter::Header(header_filter(header).at("header_filter")?)
        }
        Some(FilterSpecifier::AndFilter(and)) => {
            only!(and => AndFilter { filters } unset {});
            LogFilter::And(log_filters(&and.filters, depth, nodes).at("and_filter")?)
        }
        Some(FilterSpecifier::OrFilter(or)) => {
            only!(or => OrFilter { filters } unset {});
            LogFilter::Or(log_filters(&or.filters, depth, nodes).at("or_filter")?)
        }
        // Named one by one, so that a kind envoy-types adds fails to compile until someone
        // classifies it.
        Some(FilterSpecifier::StatusCodeFilter(_)) => {
            return Err(unsupported("status_code_filter", OTHER_FILTER));
        }
        Some(FilterSpecifier::DurationFilter(_)) => {
            return Err(unsupported("duration_filter", OTHER_FILTER));
        }
        Some(FilterSpecifier::NotHealthCheckFilter(_)) => {
            return Err(unsupported("not_health_check_filter", OTHER_FILTER));
        }
        Some(FilterSpecifier::TraceableFilter(_)) => {
            return Err(unsupported("traceable_filter", OTHER_FILTER));
        }
        Some(FilterSpecifier::RuntimeFilter(_)) => {
            return Err(unsupported("runtime_filter", OTHER_FILTER));
        }
        Some(FilterSpecifier::ResponseFlagFilter(_)) => {
            return Err(unsupported("response_flag_filter", OTHER_FILTER));
        }
        Some(FilterSpecifier::GrpcStatusFilter(_)) => {
            return Err(unsupported("grpc_status_filter", OTHER_FILTER));
        }
        Some(FilterSpecifier::MetadataFilter(_)) => {
            return Err(unsupported("metadata_filter", OTHER_FILTER));
        }
        Some(FilterSpecifier::LogTypeFilter(_)) => {
            return Err(unsupported("log_type_filter", OTHER_FILTER));
        }
        // Envoy's validation: the oneof is required.
        None => return Err(unsupported("filter_specifier", "a filter is required")),
    };
    only!(filter => AccessLogFilter { filter_specifier } unset {});
    Ok(translated)
}

/// The `filters` of an `and_filter` or `or_filter` `depth` deep.
fn log_filters(
    filters: &[AccessLogFilter],
    depth: usize,
    nodes: &mut usize,
) -> Result<Vec<LogFilter>, Invalid> {
    if filters.len() < 2 {
        // Envoy's validation: `min_items: 2`.
        return Err(unsupported("filters", "must hold at least 2 filters"));
    }
    filters
        .iter()
        .enumerate()
        .map(|(i, f)| log_filter(f, depth + 1, nodes).at(format_args!("filters[{i}]")))
        .collect()
}

/// A `header_filter`: its `HeaderMatcher`, as a route's.
fn header_filter(filter: &HeaderFilter) -> Result<HeaderMatch, Invalid> {
    let Some(header) = &filter.header else {
        // Envoy's validation: `required`.
        return Err(unsupported("header", "is required"));
    };
    only!(filter => HeaderFilter { header } unset {});
    matcher::header(header).at("header")
}

/// An `extension_filter`, which must be `process_ratelimit` with its bucket over ADS: the
/// bucket's name.
fn process_ratelimit(extension: &ExtensionFilter) -> Result<BucketName, Invalid> {
    let any = match &extension.config_type {
        Some(extension_filter::ConfigType::TypedConfig(any)) => any,
        None => return Err(unsupported("typed_config", "a typed config is required")),
    };
    // Envoy picks an extension by its config's type; the name must agree.
    if extension.name != PROCESS_RATELIMIT || !is::<ProcessRateLimitFilter>(any) {
        return Err(unsupported(
            "",
            "only envoy.access_loggers.extension_filters.process_ratelimit \
             (ProcessRateLimitFilter) is supported",
        ));
    }
    only!(extension => ExtensionFilter { name, config_type } unset {});
    let config: ProcessRateLimitFilter = decode(any).at("typed_config")?;
    let Some(dynamic) = &config.dynamic_config else {
        // Envoy: "`dynamic_config` is required."
        return Err(unsupported("typed_config.dynamic_config", "is required"));
    };
    only!(&config => ProcessRateLimitFilter { dynamic_config } unset {});
    dynamic_bucket(dynamic).at("typed_config.dynamic_config")
}

fn dynamic_bucket(dynamic: &DynamicTokenBucket) -> Result<BucketName, Invalid> {
    if dynamic.resource_name.is_empty() {
        return Err(unsupported("resource_name", "must not be empty"));
    }
    if !is_ads(dynamic.config_source.as_ref()) {
        return Err(unsupported("config_source", "only ADS is supported"));
    }
    only!(dynamic => DynamicTokenBucket { resource_name, config_source } unset {});
    Ok(BucketName(dynamic.resource_name.clone()))
}

fn http_grpc(c: &HttpGrpcAccessLogConfig) -> Result<AccessLog, Invalid> {
    let Some(common) = &c.common_config else {
        return Err(unsupported("common_config", "is required"));
    };
    let mut log = common_config(common).at("common_config")?;
    log.request_headers = header_names(&c.additional_request_headers_to_log)
        .at("additional_request_headers_to_log")?;
    log.response_headers = header_names(&c.additional_response_headers_to_log)
        .at("additional_response_headers_to_log")?;
    log.response_trailers = header_names(&c.additional_response_trailers_to_log)
        .at("additional_response_trailers_to_log")?;
    only!(c => HttpGrpcAccessLogConfig {
        common_config, additional_request_headers_to_log, additional_response_headers_to_log,
        additional_response_trailers_to_log,
    } unset {});
    Ok(log)
}

fn common_config(c: &CommonGrpcAccessLogConfig) -> Result<AccessLog, Invalid> {
    if c.log_name.is_empty() {
        // Envoy's validation: `min_len: 1`.
        return Err(unsupported("log_name", "must not be empty"));
    }
    if c.transport_api_version != ApiVersion::V3 as i32 {
        return Err(unsupported("transport_api_version", "only V3 is supported"));
    }
    match &c.grpc_service {
        Some(service) => grpc_service(service).at("grpc_service")?,
        None => return Err(unsupported("grpc_service", "is required")),
    }
    let flush_interval = match &c.buffer_flush_interval {
        None => DEFAULT_ACCESS_LOG_FLUSH_INTERVAL,
        Some(d) => {
            let d = duration(d).at("buffer_flush_interval")?;
            // Envoy's validation: `gt: {}`.
            if d.is_zero() {
                return Err(unsupported(
                    "buffer_flush_interval",
                    "must be more than zero",
                ));
            }
            d
        }
    };
    let buffer_bytes = c
        .buffer_size_bytes
        .as_ref()
        .map_or(DEFAULT_ACCESS_LOG_BUFFER_BYTES, |v| v.value);
    only!(c => CommonGrpcAccessLogConfig {
        log_name, grpc_service, transport_api_version, buffer_flush_interval, buffer_size_bytes,
    } unset {
        filter_state_objects_to_log, grpc_stream_retry_policy, custom_tags,
    });
    Ok(AccessLog {
        log_name: c.log_name.clone(),
        flush_interval,
        buffer_bytes,
        request_headers: Vec::new(),
        response_headers: Vec::new(),
        response_trailers: Vec::new(),
        filter: None,
    })
}

/// The service the entries go to. The proxy sends them to its control plane over its ADS
/// channel, with the ADS credentials, whatever the target says: it reads no target, so an
/// `envoy_grpc` cluster or a `google_grpc` target with its credentials are taken as they are
/// (the control plane writes the same target as its bootstrap's ADS service). What would be
/// sent besides the entries (metadata, retries) is refused.
fn grpc_service(s: &GrpcService) -> Result<(), Invalid> {
    match &s.target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(_) | TargetSpecifier::GoogleGrpc(_)) => {}
        None => {
            return Err(unsupported(
                "target_specifier",
                "envoy_grpc or google_grpc is required",
            ));
        }
    }
    only!(s => GrpcService { target_specifier } unset {
        timeout, initial_metadata, retry_policy,
    });
    Ok(())
}

/// Header names to log: lower-case, as HTTP/2 and the proxy's header maps have them.
fn header_names(names: &[String]) -> Result<Vec<String>, Invalid> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b':' && !b.is_ascii_uppercase());
            if valid {
                Ok(name.clone())
            } else {
                Err(unsupported(
                    format!("[{i}]"),
                    "must be a lower-case header name (no pseudo-headers)",
                ))
            }
        })
        .collect()
}
