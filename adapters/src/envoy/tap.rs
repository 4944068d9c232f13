//! Tap: while the control plane taps a proxy, each of its HTTP connection managers logs
//! requests to the control plane's access-log service (`envoy.access_loggers.http_grpc`, to
//! `envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`), over the channel and with
//! the credentials of its ADS stream. An untapped proxy's configuration has no access log, so
//! tapping costs nothing until someone asks for it.
//!
//! A tapped proxy logs only what its taps can show ([`ProxyTap`]): the log's filter draws on
//! Envoy's `process_ratelimit` token buckets, resources of their own on the same ADS stream.
//! The taps that show every request share one bucket ([`TAP_BUCKET`], their rates added up);
//! each tap that shows only some requests has its match checked first (Envoy's
//! `header_filter`) and then its own bucket. A request no tap can show is never noted, so a
//! tap costs a busy proxy what its sessions can show, not what it serves; and a new rate of
//! the shared bucket changes the bucket only, not the listeners (which Envoy would drain).
//!
//! ```text
//!  compile ─▶ Output ─▶ tap(&mut output, &sink, &tap) ─▶ every Listener's HTTP connection managers
//!                          │   + access_log [filter: or[ bucket TAP_BUCKET,
//!                          │                             and[:method, :authority, :path prefix, bucket TAP_BUCKET-<id>], …]]
//!                          │                                                            ─▶ control plane
//!                          └─▶ + TokenBucket per bucket named (the taps' rates)
//! ```
//!
//! No header is logged beyond the fields every entry has (method, scheme, authority, path, user
//! agent, status) and the response's `grpc-status`: `authorization`, cookies and every other
//! header never leave the proxy. Both data planes get the same configuration; the bundled
//! proxy implements this subset of the logger.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{
            accesslog::v3::{
                AccessLog, AccessLogFilter, AndFilter, ExtensionFilter, HeaderFilter, OrFilter,
                access_log, access_log_filter::FilterSpecifier, extension_filter,
            },
            core::v3::{ApiVersion, GrpcService},
            listener::v3::{Filter, Listener, filter},
            route::v3::{HeaderMatcher, header_matcher::HeaderMatchSpecifier},
        },
        extensions::{
            access_loggers::{
                filters::process_ratelimit::v3::{DynamicTokenBucket, ProcessRateLimitFilter},
                grpc::v3::{CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig},
            },
            filters::network::http_connection_manager::v3::HttpConnectionManager,
        },
        r#type::{
            matcher::v3::{StringMatcher, string_matcher::MatchPattern},
            v3::TokenBucket,
        },
    },
    google::protobuf::UInt32Value,
};
use prost::Message as _;
use switchyard_proxy_config::{MIN_FILL_INTERVAL, TypeUrl};

use super::{
    BootstrapOptions, LISTENER_TYPE_URL, Output, Reference, Resource, TOKEN_BUCKET_TYPE_URL, ads,
    bootstrap::control_plane_grpc, duration, to_any,
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
/// The access-log filter that takes a token per logged request (Envoy's extension name; the
/// one the bundled proxy implements).
pub const RATE_LIMIT_FILTER: &str = switchyard_proxy_config::PROCESS_RATELIMIT;
/// The name of the tap's token bucket resource; one bucket per proxy, shared by every listener.
pub const TAP_BUCKET: &str = "switchyard-tap";

/// Requests a second (at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TapRate(NonZeroU32);

impl TapRate {
    pub const fn new(per_second: NonZeroU32) -> Self {
        TapRate(per_second)
    }

    pub const fn per_second(self) -> u32 {
        self.0.get()
    }

    /// Both rates together (saturating).
    pub const fn plus(self, other: TapRate) -> TapRate {
        TapRate(self.0.saturating_add(other.0.get()))
    }

    /// The bucket that gives exactly this rate, in the shortest fill interval (a multiple of
    /// 50 ms, Envoy's least) that holds a whole number of tokens, up to 1 s; it holds a
    /// second's worth, as the control plane's own bucket per session does.
    fn bucket(self) -> TokenBucket {
        let per_second = u64::from(self.per_second());
        let step = u64::try_from(MIN_FILL_INTERVAL.as_millis())
            .unwrap_or(1000)
            .max(1);
        let interval_ms = (1..=1000 / step)
            .map(|k| k * step)
            .find(|ms| per_second * ms % 1000 == 0)
            .unwrap_or(1000);
        let per_fill = per_second * interval_ms / 1000;
        TokenBucket {
            max_tokens: self.per_second(),
            tokens_per_fill: Some(UInt32Value {
                value: u32::try_from(per_fill).unwrap_or(self.per_second()),
            }),
            fill_interval: Some(duration(Duration::from_millis(interval_ms))),
        }
    }
}

/// What a tapped proxy is asked for: the requests its taps can show, each at most at its
/// tap's rate. Empty ([`ProxyTap::default`]): every request, without a limit (what a proxy was
/// asked for before taps had rates; the control plane never asks for it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyTap {
    /// The rates of the taps that show every request, added up: any request, drawn on
    /// [`TAP_BUCKET`]. A new rate changes that bucket only, never the listeners.
    pub every: Option<TapRate>,
    /// The taps that show only some requests, each on a bucket of its own, so a busy match
    /// never starves a quiet one; a request is drawn on a tap's bucket only when it matches.
    pub matching: Vec<TapMatch>,
}

/// A tap that shows only some requests: those that match every condition given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapMatch {
    /// The tap's bucket is `switchyard-tap-<id>`; unique among a proxy's taps.
    pub id: u64,
    /// `:method`, exact (case-sensitive, as HTTP methods are).
    pub method: Option<String>,
    /// `:authority`, exact.
    pub authority: Option<String>,
    /// `:path` (with its query), prefix.
    pub path_prefix: Option<String>,
    pub rate: TapRate,
}

impl TapMatch {
    /// The name of the tap's own token bucket.
    pub fn bucket(&self) -> String {
        format!("{TAP_BUCKET}-{}", self.id)
    }

    /// `and[header conditions…, the tap's bucket]`: the bucket last, since Envoy's `and`
    /// stops at the first condition that fails and a request that does not match must not
    /// take a token.
    fn filter(&self) -> AccessLogFilter {
        let conditions = [
            (":method", &self.method, false),
            (":authority", &self.authority, false),
            (":path", &self.path_prefix, true),
        ];
        let mut all: Vec<AccessLogFilter> = conditions
            .into_iter()
            .filter_map(|(name, value, prefix)| Some(header_filter(name, value.as_ref()?, prefix)))
            .collect();
        all.push(rate_limit_filter(&self.bucket()));
        combine(all, |filters| {
            FilterSpecifier::AndFilter(AndFilter { filters })
        })
    }
}

impl ProxyTap {
    /// The access log's filter: `None` when empty, else the first of `every`'s bucket and
    /// each match that passes (Envoy's `or` stops there, so no later bucket loses a token).
    fn filter(&self) -> Option<AccessLogFilter> {
        let terms: Vec<AccessLogFilter> = (self.every.map(|_| rate_limit_filter(TAP_BUCKET)))
            .into_iter()
            .chain(self.matching.iter().map(TapMatch::filter))
            .collect();
        (!terms.is_empty()).then(|| {
            combine(terms, |filters| {
                FilterSpecifier::OrFilter(OrFilter { filters })
            })
        })
    }

    /// Every bucket the filter draws on, with its rate.
    fn buckets(&self) -> impl Iterator<Item = (String, TapRate)> + '_ {
        (self.every.map(|r| (TAP_BUCKET.to_owned(), r)))
            .into_iter()
            .chain(self.matching.iter().map(|m| (m.bucket(), m.rate)))
    }
}

/// One filter alone, else `wrap` of them all (Envoy's `and` and `or` take two or more).
fn combine(
    filters: Vec<AccessLogFilter>,
    wrap: fn(Vec<AccessLogFilter>) -> FilterSpecifier,
) -> AccessLogFilter {
    match <[AccessLogFilter; 1]>::try_from(filters) {
        Ok([one]) => one,
        Err(filters) => AccessLogFilter {
            filter_specifier: Some(wrap(filters)),
        },
    }
}

/// A request header condition: `name` equal to `value`, or starting with it.
fn header_filter(name: &str, value: &str, prefix: bool) -> AccessLogFilter {
    let pattern = if prefix {
        MatchPattern::Prefix(value.to_owned())
    } else {
        MatchPattern::Exact(value.to_owned())
    };
    AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::HeaderFilter(HeaderFilter {
            header: Some(HeaderMatcher {
                name: name.to_owned(),
                header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                    match_pattern: Some(pattern),
                    ignore_case: false,
                })),
                ..Default::default()
            }),
        })),
    }
}

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

    fn access_log(&self, filter: Option<AccessLogFilter>) -> AccessLog {
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
            filter,
            config_type: Some(access_log::ConfigType::TypedConfig(to_any(&config))),
        }
    }
}

/// Takes a token of the bucket `bucket` per logged request; the bucket comes over ADS.
fn rate_limit_filter(bucket: &str) -> AccessLogFilter {
    let config = ProcessRateLimitFilter {
        dynamic_config: Some(DynamicTokenBucket {
            resource_name: bucket.to_owned(),
            config_source: Some(ads()),
        }),
    };
    AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::ExtensionFilter(ExtensionFilter {
            name: RATE_LIMIT_FILTER.to_owned(),
            config_type: Some(extension_filter::ConfigType::TypedConfig(to_any(&config))),
        })),
    }
}

/// Adds the tap's access log to every HTTP connection manager of `output`'s listeners, and
/// the token buckets it draws on; the other resources are untouched.
pub fn tap(output: &mut Output<Arc<Resource>>, sink: &TapSink, tap: &ProxyTap) {
    let log = sink.access_log(tap.filter());
    let buckets: Vec<(String, TapRate)> = tap.buckets().collect();
    let references: Vec<Reference> = (buckets.iter())
        .map(|(name, _)| Reference::new(TypeUrl::TokenBucket, name.as_str()))
        .collect();
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
            let all: Vec<Reference> = (r.references.iter().cloned())
                .chain(references.iter().cloned())
                .collect();
            *resource = Arc::new(r.referencing(all));
        }
    }
    // Their type URL sorts after every other the adapter emits, so the output stays sorted
    // once they are.
    let mut buckets = buckets;
    buckets.sort();
    for (name, rate) in buckets {
        output.resources.push(Arc::new(Resource::new(
            TOKEN_BUCKET_TYPE_URL,
            &name,
            to_any(&rate.bucket()),
        )));
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
