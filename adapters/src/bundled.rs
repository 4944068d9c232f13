//! The bundled adapter: compiles one proxy's mesh model into the xDS subset `switchyard-proxy`
//! implements, and drops (with a warning naming resource, field and reason) anything outside it.
//!
//! It compiles with the Envoy adapter, so a bundled proxy gets byte for byte what Envoy would
//! get, and then runs every resource through the proxy's own translation
//! (`switchyard-proxy-config`), which is where the subset is defined, once: it destructures
//! every message naming all of its fields, so a field envoy-types adds fails to compile there
//! until it is classified. A resource the translation refuses is left out of the output and
//! reported in [`Output::warnings`] with the translation's own error, e.g. `listener
//! inbound|8080: filter_chains[0].filters[0].typed_config.codec_type: only AUTO is supported`;
//! the proxy never receives something it would NACK or ignore. Dropping is per resource: what
//! references a dropped resource stays, and the proxy treats the reference as missing (a route
//! to a dropped cluster answers 503, as in Envoy).
//!
//! [`BundledAdapter`] mirrors [`EnvoyAdapter`]: [`BundledAdapter::compile_shared`] hands out
//! the Envoy adapter's shared `Arc`s unchanged, and remembers each resource's verdict by
//! pointer, so a recompile after a small change checks only what changed. Compile Envoy proxies
//! of the same mesh through [`BundledAdapter::envoy`] to share one cache between both data
//! planes.

#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
};

pub use switchyard_proxy_config::RETRY_ON;
use switchyard_proxy_config::TypeUrl;

use crate::{
    envoy::{EnvoyAdapter, EnvoyOptions, Output, Resource},
    model::{MeshSettings, ProxyConfig},
};

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

/// Checks one resource against the subset `switchyard-proxy` implements, by translating it as
/// the proxy would.
pub fn check(resource: &Resource) -> Result<(), Unsupported> {
    let Some(ty) = TypeUrl::from_type_url(resource.type_url) else {
        return Err(Unsupported {
            kind: "resource",
            name: resource.name.clone(),
            field: "type_url".to_owned(),
            reason: format!(
                "{} is not a type the bundled proxy subscribes to",
                resource.type_url
            ),
        });
    };
    match switchyard_proxy_config::translate(ty, &resource.name, &resource.resource) {
        Ok(_) => Ok(()),
        Err(invalid) => Err(Unsupported {
            kind: ty.noun(),
            name: resource.name.clone(),
            field: match invalid.field() {
                "" => "resource".to_owned(),
                field => field.to_owned(),
            },
            reason: invalid.problem().to_string(),
        }),
    }
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
