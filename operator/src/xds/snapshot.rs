//! Per-proxy xDS snapshots: resources by type and name, versioned by content hash.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    sync::Arc,
};

use envoy_types::pb::google::protobuf::Any;
use switchyard_adapters::envoy::{self, Reference};
/// The resource types served over ADS; `ALL` is the push order.
pub use switchyard_proxy_config::TypeUrl;

#[cfg(test)]
mod tests;

/// An xDS version: a 64-bit content hash, written as 16 hex digits.
///
/// Content hashes (rather than counters) make versions stable across operator restarts, so a
/// reconnecting proxy that already holds a resource is not sent it again.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(u64);

/// One named resource with its version, shareable between the snapshots of many proxies.
pub struct VersionedResource {
    type_url: TypeUrl,
    name: Arc<str>,
    version: Version,
    any: Any,
    /// The resources this one names, as the adapter stated them (see
    /// [`envoy::Resource::references`]): the delta "fresh CLA for an updated cluster" rule and
    /// the consistency check read them without decoding the resource.
    references: Box<[Reference]>,
}

/// The resources of one type in a snapshot.
#[derive(Clone, Debug)]
pub struct Resources {
    version: Version,
    by_name: BTreeMap<Arc<str>, Arc<VersionedResource>>,
}

/// Everything one proxy is served, per type. Immutable; streams share it through an `Arc`.
#[derive(Clone, Debug)]
pub struct Snapshot {
    types: [Resources; TypeUrl::ALL.len()],
}

/// Collects resources and rejects duplicates.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    types: [BTreeMap<Arc<str>, Arc<VersionedResource>>; TypeUrl::ALL.len()],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("duplicate {type_url} resource {name:?}")]
    DuplicateName { type_url: TypeUrl, name: String },

    #[error("{type_url} resource {name:?} carries a {actual:?} payload")]
    TypeMismatch {
        type_url: TypeUrl,
        name: String,
        actual: String,
    },

    #[error("{type_url} resource has an empty name")]
    EmptyName { type_url: TypeUrl },

    #[error("resource {name:?} has unsupported type {type_url:?}")]
    UnsupportedType { name: String, type_url: String },
}

/// A reference between resources that does not resolve, or a resource nothing references.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Inconsistency {
    #[error("cluster {cluster:?} needs endpoints {name:?}, which the snapshot lacks")]
    MissingEndpoints { cluster: String, name: String },

    #[error("listener {listener:?} needs route configuration {name:?}, which the snapshot lacks")]
    MissingRoutes { listener: String, name: String },

    #[error("endpoints {name:?} are not used by any cluster")]
    UnusedEndpoints { name: String },

    #[error("route configuration {name:?} is not used by any listener")]
    UnusedRoutes { name: String },

    #[error("{owner} needs secret {name:?}, which the snapshot lacks")]
    MissingSecret {
        /// `cluster "<name>"` or `listener "<name>"`.
        owner: String,
        name: String,
    },

    /// A tapped listener's access log draws on a bucket that is not there: Envoy would keep
    /// the listener warming.
    #[error("listener {listener:?} needs token bucket {name:?}, which the snapshot lacks")]
    MissingTokenBucket { listener: String, name: String },
}

/// Packs a message into an `Any` with its canonical type URL.
pub fn to_any<M: prost::Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

// === impl Version ===

impl Version {
    /// Parses a version this server wrote; anything else (another server's version) is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Version)
    }

    fn of_resource(any: &Any) -> Self {
        let mut h = Fnv::new();
        h.write_str(&any.type_url);
        h.write(&any.value);
        Version(h.finish())
    }

    /// The version of a set of resources: a hash over their names and versions, in the order
    /// given (callers iterate in name order, so equal sets hash equally).
    pub(crate) fn combine<'a>(entries: impl IntoIterator<Item = (&'a str, Version)>) -> Self {
        let mut h = Fnv::new();
        for (name, version) in entries {
            h.write_str(name);
            h.write(&version.0.to_le_bytes());
        }
        Version(h.finish())
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({self})")
    }
}

/// FNV-1a, 64 bit: stable across Rust releases and processes (unlike `DefaultHasher`), and
/// needs no dependency. It is used for change detection, not security.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Length-prefixed, so that `("ab", "c")` and `("a", "bc")` differ.
    fn write_str(&mut self, s: &str) {
        self.write(&(s.len() as u64).to_le_bytes());
        self.write(s.as_bytes());
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

// === impl VersionedResource ===

impl VersionedResource {
    /// Hashes the resource once; share the `Arc` between proxies that get the same resource.
    /// `references` are the resources it names (any order).
    pub fn new(
        type_url: TypeUrl,
        name: impl Into<String>,
        any: Any,
        references: Vec<Reference>,
    ) -> Result<Arc<Self>, SnapshotError> {
        let name = name.into();
        if name.is_empty() {
            return Err(SnapshotError::EmptyName { type_url });
        }
        if any.type_url != type_url.type_url() {
            return Err(SnapshotError::TypeMismatch {
                type_url,
                name,
                actual: any.type_url,
            });
        }
        Ok(Arc::new(VersionedResource {
            type_url,
            name: name.into(),
            version: Version::of_resource(&any),
            any,
            references: references.into(),
        }))
    }

    pub fn type_url(&self) -> TypeUrl {
        self.type_url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn any(&self) -> &Any {
        &self.any
    }

    /// The names of the resources of type `of` this one names: a cluster's endpoints (EDS), a
    /// listener's route configurations (RDS), either's secrets (SDS).
    pub fn references(&self, of: TypeUrl) -> impl Iterator<Item = &Arc<str>> {
        self.references
            .iter()
            .filter(move |r| r.type_url == of)
            .map(|r| &r.name)
    }
}

impl fmt::Debug for VersionedResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionedResource")
            .field("type_url", &self.type_url)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("bytes", &self.any.value.len())
            .finish()
    }
}

// === impl Resources ===

impl Resources {
    fn new(by_name: BTreeMap<Arc<str>, Arc<VersionedResource>>) -> Self {
        let version = Version::combine(by_name.iter().map(|(n, r)| (&**n, r.version)));
        Resources { version, by_name }
    }

    /// Hash over the names and versions of every resource of this type.
    pub fn version(&self) -> Version {
        self.version
    }

    pub fn get(&self, name: &str) -> Option<&Arc<VersionedResource>> {
        self.by_name.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// In name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<VersionedResource>> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

// === impl Snapshot ===

impl Snapshot {
    pub fn builder() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    pub fn empty() -> Self {
        SnapshotBuilder::default().build()
    }

    /// Builds a snapshot from `(type, name, payload)` entries that name no other resource;
    /// duplicate names are an error.
    pub fn new(
        entries: impl IntoIterator<Item = (TypeUrl, String, Any)>,
    ) -> Result<Self, SnapshotError> {
        let mut builder = SnapshotBuilder::default();
        for (type_url, name, any) in entries {
            builder.add(type_url, name, any)?;
        }
        Ok(builder.build())
    }

    pub fn resources(&self, type_url: TypeUrl) -> &Resources {
        &self.types[type_url.index()]
    }

    pub fn version(&self, type_url: TypeUrl) -> Version {
        self.resources(type_url).version
    }

    pub fn get(&self, type_url: TypeUrl, name: &str) -> Option<&Arc<VersionedResource>> {
        self.resources(type_url).get(name)
    }

    /// Compares the per-type versions, which cover every name and resource version.
    pub fn same_content(&self, other: &Snapshot) -> bool {
        TypeUrl::ALL
            .into_iter()
            .all(|t| self.version(t) == other.version(t))
    }

    /// Checks that every EDS name a cluster needs, every RDS name and token bucket a listener
    /// needs and every secret either needs is in the snapshot, and that every CLA and route configuration is
    /// used (go-control-plane's `Consistent()`). Callers decide whether a problem should block
    /// publishing.
    pub fn inconsistencies(&self) -> Vec<Inconsistency> {
        let mut problems = Vec::new();
        let checks = [
            (TypeUrl::Cluster, TypeUrl::ClusterLoadAssignment),
            (TypeUrl::Listener, TypeUrl::RouteConfiguration),
        ];
        for (parent, child) in checks {
            let children = self.resources(child);
            let mut used = BTreeSet::new();
            for resource in self.resources(parent).iter() {
                for name in resource.references(child) {
                    used.insert(&**name);
                    if children.contains(name) {
                        continue;
                    }
                    let (owner, name) = (resource.name().to_string(), name.to_string());
                    problems.push(match parent {
                        TypeUrl::Cluster => Inconsistency::MissingEndpoints {
                            cluster: owner,
                            name,
                        },
                        _ => Inconsistency::MissingRoutes {
                            listener: owner,
                            name,
                        },
                    });
                }
            }
            for resource in children.iter().filter(|r| !used.contains(r.name())) {
                let name = resource.name().to_string();
                problems.push(match child {
                    TypeUrl::ClusterLoadAssignment => Inconsistency::UnusedEndpoints { name },
                    _ => Inconsistency::UnusedRoutes { name },
                });
            }
        }
        let secrets = self.resources(TypeUrl::Secret);
        for (parent, kind) in [
            (TypeUrl::Cluster, "cluster"),
            (TypeUrl::Listener, "listener"),
        ] {
            for resource in self.resources(parent).iter() {
                for name in resource.references(TypeUrl::Secret) {
                    if !secrets.contains(name) {
                        problems.push(Inconsistency::MissingSecret {
                            owner: format!("{kind} {:?}", resource.name()),
                            name: name.to_string(),
                        });
                    }
                }
            }
        }
        let buckets = self.resources(TypeUrl::TokenBucket);
        for listener in self.resources(TypeUrl::Listener).iter() {
            for name in listener.references(TypeUrl::TokenBucket) {
                if !buckets.contains(name) {
                    problems.push(Inconsistency::MissingTokenBucket {
                        listener: listener.name().to_string(),
                        name: name.to_string(),
                    });
                }
            }
        }
        problems
    }
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.same_content(other)
    }
}

impl Eq for Snapshot {}

// === impl SnapshotBuilder ===

impl SnapshotBuilder {
    /// Adds a resource that names no other (a secret).
    pub fn add(
        &mut self,
        type_url: TypeUrl,
        name: impl Into<String>,
        any: Any,
    ) -> Result<&mut Self, SnapshotError> {
        self.add_shared(VersionedResource::new(type_url, name, any, Vec::new())?)
    }

    /// Adds a resource that names no other, its type taken from the payload's type URL.
    pub fn add_any(
        &mut self,
        name: impl Into<String>,
        any: Any,
    ) -> Result<&mut Self, SnapshotError> {
        let name = name.into();
        let Some(type_url) = TypeUrl::from_type_url(&any.type_url) else {
            return Err(SnapshotError::UnsupportedType {
                name,
                type_url: any.type_url,
            });
        };
        self.add(type_url, name, any)
    }

    /// Adds a resource built once and shared with other proxies' snapshots.
    pub fn add_shared(
        &mut self,
        resource: Arc<VersionedResource>,
    ) -> Result<&mut Self, SnapshotError> {
        let by_name = &mut self.types[resource.type_url.index()];
        if by_name.contains_key(&resource.name) {
            return Err(SnapshotError::DuplicateName {
                type_url: resource.type_url,
                name: resource.name.to_string(),
            });
        }
        by_name.insert(resource.name.clone(), resource);
        Ok(self)
    }

    pub fn build(self) -> Snapshot {
        Snapshot {
            types: self.types.map(Resources::new),
        }
    }
}

/// Adapter resources turned into versioned (hashed) xDS resources once each. Keyed by the
/// adapter's `Arc`, which stays the same while a resource is unchanged, so a recompute hashes
/// only what changed and every proxy's snapshot shares the unchanged ones.
#[derive(Debug, Default)]
pub struct SharedVersions(HashMap<usize, (Arc<envoy::Resource>, Arc<VersionedResource>)>);

impl SharedVersions {
    pub fn get(
        &mut self,
        r: &Arc<envoy::Resource>,
    ) -> Result<Arc<VersionedResource>, SnapshotError> {
        // Holding the `Arc` keeps its address from being reused while it is a key.
        let key = Arc::as_ptr(r) as usize;
        if let Some((held, v)) = self.0.get(&key)
            && Arc::ptr_eq(held, r)
        {
            return Ok(v.clone());
        }
        let type_url =
            TypeUrl::from_type_url(r.type_url).ok_or_else(|| SnapshotError::UnsupportedType {
                name: r.name.clone(),
                type_url: r.type_url.to_string(),
            })?;
        let v = VersionedResource::new(
            type_url,
            r.name.clone(),
            r.resource.clone(),
            r.references.clone(),
        )?;
        self.0.insert(key, (r.clone(), v.clone()));
        Ok(v)
    }

    /// Forgets resources nobody else holds any more.
    pub fn evict_unused(&mut self) {
        self.0.retain(|_, (r, _)| Arc::strong_count(r) > 1);
    }
}
