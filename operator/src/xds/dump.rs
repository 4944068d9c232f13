//! What one proxy runs, as the admin port's `GET /proxies/{proxy}/config` answers it and
//! `switchyard proxy-config` reads it: per xDS type the version the proxy acknowledged last and
//! its resources as redacted proto3 JSON, plus a rejected version and the proxy's reason. The
//! same JSON for both data planes, since both are served the same xDS.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{TypeSync, TypeUrl, render::render_redacted, status::LiveConfig};

#[cfg(test)]
mod tests;

/// The rendered resources of one answer stop at 16 MiB of JSON; the rest of each type is
/// counted in [`TypeDump::omitted`] instead (ask for one type at a time to see them).
pub const MAX_DUMP_BYTES: usize = 16 * 1024 * 1024;

/// One proxy's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigDump {
    /// `<namespace>/<pod>`, or a workload name in local mode.
    pub proxy: String,
    /// The node ID the proxy sent.
    pub node: String,
    /// `envoy 1.40.0`, `switchyard-proxy 0.1.0`.
    pub data_plane: String,
    /// `sotw` or `delta`.
    pub protocol: String,
    /// The types asked for, by short name (`CDS`, `EDS`, `LDS`, `RDS`, `SDS`).
    pub types: BTreeMap<String, TypeDump>,
}

/// One type of a [`ConfigDump`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypeDump {
    /// Where the type stands, as `switchyard proxy-status` shows it.
    #[serde(flatten)]
    pub sync: TypeSync,
    /// The version the proxy acknowledged last (16 hex digits; for SotW the `version_info` it
    /// ACKed); `None` before its first ACK.
    pub version: Option<String>,
    /// What the proxy runs: proto3 JSON with `@type`, in name order, sensitive fields redacted.
    pub resources: Vec<Value>,
    /// The version the proxy rejected since, and why; it keeps running `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nacked: Option<Nacked>,
    /// Resources left out to stay under [`MAX_DUMP_BYTES`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: usize,
}

/// A rejected version and the proxy's reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nacked {
    pub version: String,
    pub message: String,
}

/// Which types to show: `all`, or one short name (`cds`, `EDS`, …; any case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeFilter {
    All,
    Only(TypeUrl),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown xds type {0:?}: expected cds, eds, lds, rds, sds, tbds or all")]
pub struct UnknownType(pub String);

fn is_zero(n: &usize) -> bool {
    *n == 0
}

// === impl TypeFilter ===

impl TypeFilter {
    pub fn parse(s: &str) -> Result<Self, UnknownType> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(TypeFilter::All);
        }
        TypeUrl::ALL
            .into_iter()
            .find(|t| t.short_name().eq_ignore_ascii_case(s))
            .map(TypeFilter::Only)
            .ok_or_else(|| UnknownType(s.to_owned()))
    }

    fn covers(self, t: TypeUrl) -> bool {
        match self {
            TypeFilter::All => true,
            TypeFilter::Only(only) => only == t,
        }
    }

    /// The query parameter's value (`cds`, …, `all`).
    pub fn as_str(self) -> &'static str {
        match self {
            TypeFilter::All => "all",
            TypeFilter::Only(TypeUrl::Cluster) => "cds",
            TypeFilter::Only(TypeUrl::ClusterLoadAssignment) => "eds",
            TypeFilter::Only(TypeUrl::Listener) => "lds",
            TypeFilter::Only(TypeUrl::RouteConfiguration) => "rds",
            TypeFilter::Only(TypeUrl::Secret) => "sds",
            TypeFilter::Only(TypeUrl::TokenBucket) => "tbds",
        }
    }
}

// === impl ConfigDump ===

impl ConfigDump {
    /// Renders what `live` says the proxy runs, for the types `filter` lets through, within
    /// `max_bytes` of rendered resources.
    pub fn of(live: &LiveConfig, filter: TypeFilter, max_bytes: usize) -> Self {
        let status = &live.status;
        let mut budget = max_bytes;
        let mut types = BTreeMap::new();
        for t in TypeUrl::ALL.into_iter().filter(|t| filter.covers(*t)) {
            let acked = &live.types[t.index()];
            let applied = acked.applied.as_deref();
            let mut resources = Vec::new();
            let mut omitted = 0;
            for r in applied.into_iter().flat_map(|a| a.iter()) {
                if omitted > 0 {
                    omitted += 1;
                    continue;
                }
                let json = render_redacted(r.any());
                // Measured as printed compactly; the pretty CLI output is larger.
                let size = serde_json::to_vec(&json).map_or(0, |b| b.len());
                if size > budget {
                    omitted += 1;
                    continue;
                }
                budget -= size;
                resources.push(json);
            }
            let sync = status
                .types
                .get(t.short_name())
                .cloned()
                .unwrap_or(TypeSync::NotRequested);
            types.insert(
                t.short_name().to_owned(),
                TypeDump {
                    sync,
                    version: applied.map(|a| a.version().to_string()),
                    resources,
                    nacked: acked.rejected.as_ref().map(|r| Nacked {
                        version: r.version.to_string(),
                        message: r.message.clone(),
                    }),
                    omitted,
                },
            );
        }
        ConfigDump {
            proxy: status.proxy.clone(),
            node: status.node.clone(),
            data_plane: status.data_plane.clone(),
            protocol: status.protocol.clone(),
            types,
        }
    }
}
