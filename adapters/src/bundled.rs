//! The bundled adapter: compiles one proxy's mesh model into the xDS subset `switchyard-proxy`
//! implements, and drops (with a warning naming resource, field and reason) anything outside it.
//!
//! It compiles with the Envoy adapter, so a bundled proxy gets byte for byte what Envoy would
//! get, and then walks every resource field by field against the subset below. A resource
//! with a field outside it is left out of the output and reported in [`Output::warnings`], e.g.
//! `listener inbound|8080: filter_chains[0].filters[1]: envoy.filters.network.foo is not
//! supported by the bundled proxy`; the proxy never receives something it would ignore.
//! Dropping is per resource: what references a dropped resource stays, and the proxy treats
//! the reference as missing (a route to a dropped cluster answers 503, as in Envoy).
//!
//! The subset, which `switchyard-proxy` implements and every field outside of which is refused:
//!
//! - **Resource types**: CDS, EDS, LDS, RDS and SDS, over ADS.
//! - **Clusters**: STATIC (inline `load_assignment`) and EDS over ADS; `connect_timeout`;
//!   `lb_policy` ROUND_ROBIN or LEAST_REQUEST (the proxy balances by power of two choices over
//!   latency either way); `outlier_detection` (consecutive 5xx and gateway failures, enforced
//!   fully or not at all, `interval`, `base_ejection_time`, `max_ejection_percent`);
//!   `HttpProtocolOptions` with `explicit_http_config` (HTTP/1.1 or HTTP/2, default settings);
//!   `transport_socket` and `transport_socket_matches` (string labels).
//! - **Endpoints**: socket addresses with IP literals, `load_balancing_weight`, `health_status`
//!   UNKNOWN or HEALTHY, `envoy.transport_socket_match` metadata.
//! - **Transport sockets**: `raw_buffer`, and `tls` (`UpstreamTlsContext`,
//!   `DownstreamTlsContext`) with one certificate and the validation context over SDS (ADS),
//!   exact URI SAN matchers (upstream only), ALPN, TLS 1.2 to 1.3, `require_client_certificate`.
//! - **Listeners**: a socket address, `tls_inspector` (default settings), filter chains that
//!   match on `transport_protocol` `tls` or `raw_buffer` only.
//! - **Network filters**: one terminal `http_connection_manager`, `tcp_proxy` (`cluster` or
//!   `weighted_clusters`) or `direct_response` without a body (close), with at most one
//!   `envoy.filters.network.rbac` (ALLOW), right before `tcp_proxy`.
//! - **HTTP connection manager**: codec AUTO, RDS over ADS or an inline route configuration,
//!   `normalize_path` unset or true (the proxy normalizes paths before routing and RBAC, with
//!   no switch to turn that off), a `local_reply_config` mapping 403s, and
//!   the HTTP filters `envoy.filters.http.rbac` (ALLOW, under that name) then
//!   `envoy.filters.http.router` (default settings), last.
//! - **Routes**: virtual hosts with domains; matches on `prefix`, `path` or `safe_regex`, header
//!   matchers `string_match` (exact, prefix, suffix, contains, safe_regex) and
//!   `present_match: true`, with `invert_match`; actions to `cluster` or `weighted_clusters`
//!   with `timeout` and `retry_policy` (`retry_on` among [`RETRY_ON`], `num_retries`,
//!   `per_try_timeout`, the `previous_hosts` predicate); `RBACPerRoute` under
//!   `envoy.filters.http.rbac`.
//! - **RBAC**: ALLOW policies; permissions any, and, or, not, `url_path`, `header`,
//!   `destination_port`; principals any, and, or, not, `authenticated` with a `principal_name`.
//! - **Secrets**: `tls_certificate` (chain and key) and `validation_context` (`trusted_ca`), as
//!   inline PEM.
//!
//! Pure observability fields are accepted and may be ignored: `stat_prefix` (listeners, HCM,
//! TCP proxy, routes, RBAC `rules_stat_prefix`/`track_per_rule_stats`), names of filter chains,
//! filters and transport sockets, and an endpoint's `observability_name`. Access logs are not:
//! the proxy writes none, and a configured audit log that silently never appears would
//! mislead, so `access_log` drops its resource like any other unsupported field.
//!
//! [`BundledAdapter`] mirrors [`EnvoyAdapter`]: [`BundledAdapter::compile_shared`] hands out
//! the Envoy adapter's shared `Arc`s unchanged, and remembers each resource's verdict by
//! pointer, so a recompile after a small change checks only what changed. Compile Envoy proxies
//! of the same mesh through [`BundledAdapter::envoy`] to share one cache between both data
//! planes.

mod subset;

#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
};

use crate::{
    envoy::{EnvoyAdapter, EnvoyOptions, Output, Resource},
    model::{MeshSettings, ProxyConfig},
};

/// The `retry_on` conditions `switchyard-proxy` implements.
pub const RETRY_ON: [&str; 5] = subset::RETRY_ON;

/// A resource outside the subset `switchyard-proxy` implements: which one, where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {field}: {reason}")]
pub struct Unsupported {
    /// `cluster`, `cluster load assignment`, `listener`, `route configuration`, `secret`, or
    /// `resource` for an unknown type.
    pub kind: &'static str,
    pub name: String,
    /// Path of the field at fault, in proto field names: `filter_chains[0].filters[1]`.
    pub field: String,
    pub reason: String,
}

/// Checks one resource against the subset `switchyard-proxy` implements.
pub fn check(resource: &Resource) -> Result<(), Unsupported> {
    subset::check(resource)
}

/// Compiles proxies for `switchyard-proxy`, reusing the Envoy adapter's encodings and its own
/// verdicts for resources that did not change since the last call.
///
/// Options are [`EnvoyOptions`]: the bundled proxy binds and reaches its application the same
/// way. Call [`BundledAdapter::evict_unused`] after a round of compiles.
#[derive(Debug, Default)]
pub struct BundledAdapter {
    envoy: EnvoyAdapter,
    /// By the address of a resource compiled before: its verdict (`None` when it passed).
    /// `Weak`, so that this cache never keeps a resource alive on its own (which would also
    /// keep it in every other pointer-keyed cache, such as the xDS server's), while still
    /// pinning the address against reuse until the entry is evicted.
    verdicts: HashMap<usize, (Weak<Resource>, Option<Arc<str>>)>,
}

impl BundledAdapter {
    pub fn new() -> Self {
        BundledAdapter::default()
    }

    /// Compiles one proxy's configuration.
    pub fn compile(
        &mut self,
        proxy: &ProxyConfig,
        mesh: &MeshSettings,
        opts: &EnvoyOptions,
    ) -> Output {
        let shared = self.compile_shared(proxy, mesh, opts);
        Output {
            resources: shared
                .resources
                .into_iter()
                .map(Arc::unwrap_or_clone)
                .collect(),
            warnings: shared.warnings,
        }
    }

    /// Compiles one proxy's configuration as [`EnvoyAdapter::compile_shared`] does, leaving
    /// out every resource outside the subset, with one warning each.
    pub fn compile_shared(
        &mut self,
        proxy: &ProxyConfig,
        mesh: &MeshSettings,
        opts: &EnvoyOptions,
    ) -> Output<Arc<Resource>> {
        let out = self.envoy.compile_shared(proxy, mesh, opts);
        self.filter(out)
    }

    /// Leaves out the resources of `out` that are outside the subset, adding a warning for each.
    pub fn filter(&mut self, out: Output<Arc<Resource>>) -> Output<Arc<Resource>> {
        let Output {
            resources,
            mut warnings,
        } = out;
        let mut kept = Vec::with_capacity(resources.len());
        for r in resources {
            match self.verdict(&r) {
                None => kept.push(r),
                Some(warning) => warnings.push(warning.to_string()),
            }
        }
        Output {
            resources: kept,
            warnings,
        }
    }

    /// The Envoy adapter underneath, for the Envoy proxies of the same mesh: compiling them
    /// through it shares every cached piece with the bundled proxies.
    pub fn envoy(&mut self) -> &mut EnvoyAdapter {
        &mut self.envoy
    }

    /// Drops cached pieces and verdicts nobody else holds any more.
    pub fn evict_unused(&mut self) {
        self.envoy.evict_unused();
        self.verdicts.retain(|_, (r, _)| r.strong_count() > 0);
    }

    /// Number of cached clusters and services (the Envoy adapter's), and of verdicts.
    pub fn cache_len(&self) -> (usize, usize, usize) {
        let (clusters, services) = self.envoy.cache_len();
        (clusters, services, self.verdicts.len())
    }

    fn verdict(&mut self, r: &Arc<Resource>) -> Option<Arc<str>> {
        // While an entry holds its `Weak`, no other allocation can take the address, so an
        // entry under this address is this very resource, which is immutable.
        let key = Arc::as_ptr(r) as usize;
        if let Some((_, verdict)) = self.verdicts.get(&key) {
            return verdict.clone();
        }
        let verdict: Option<Arc<str>> = check(r).err().map(|e| e.to_string().into());
        self.verdicts
            .insert(key, (Arc::downgrade(r), verdict.clone()));
        verdict
    }
}

/// Compiles one proxy without a cache; for tests and one-off use.
pub fn compile(proxy: &ProxyConfig, mesh: &MeshSettings, opts: &EnvoyOptions) -> Output {
    BundledAdapter::new().compile(proxy, mesh, opts)
}
