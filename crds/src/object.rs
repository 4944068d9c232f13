//! Objects of any SMI kind and version: reading a document by its `apiVersion` and `kind`, and
//! converting between versions through the canonical form.

use serde::Serialize;

use crate::{
    ConversionError, Kind, ObjectRef,
    access::{self, TrafficTarget},
    specs::{self, HttpRouteGroup, TcpRoute, UdpRoute},
    split::{self, TrafficSplit},
};

/// A canonical (version-free) SMI object.
#[derive(Clone, Debug, PartialEq)]
pub enum SmiObject {
    TrafficSplit(TrafficSplit),
    TrafficTarget(TrafficTarget),
    HttpRouteGroup(HttpRouteGroup),
    TcpRoute(TcpRoute),
    UdpRoute(UdpRoute),
}

/// An SMI object exactly as written in one served version.
#[derive(Clone, Debug, PartialEq)]
pub enum VersionedObject {
    TrafficSplitV1alpha1(split::v1alpha1::TrafficSplit),
    TrafficSplitV1alpha2(split::v1alpha2::TrafficSplit),
    TrafficSplitV1alpha3(split::v1alpha3::TrafficSplit),
    TrafficSplitV1alpha4(split::v1alpha4::TrafficSplit),
    TrafficTargetV1alpha1(access::v1alpha1::TrafficTarget),
    TrafficTargetV1alpha2(access::v1alpha2::TrafficTarget),
    TrafficTargetV1alpha3(access::v1alpha3::TrafficTarget),
    HttpRouteGroupV1alpha1(specs::v1alpha1::HttpRouteGroup),
    HttpRouteGroupV1alpha2(specs::v1alpha2::HttpRouteGroup),
    HttpRouteGroupV1alpha3(specs::v1alpha3::HttpRouteGroup),
    HttpRouteGroupV1alpha4(specs::v1alpha4::HttpRouteGroup),
    TcpRouteV1alpha1(specs::v1alpha1::TcpRoute),
    TcpRouteV1alpha2(specs::v1alpha2::TcpRoute),
    TcpRouteV1alpha3(specs::v1alpha3::TcpRoute),
    TcpRouteV1alpha4(specs::v1alpha4::TcpRoute),
    UdpRouteV1alpha4(specs::v1alpha4::UdpRoute),
}

/// Why a document could not be read as an SMI object.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{kind}: unknown version {api_version:?} (served: {served})")]
    UnknownVersion {
        kind: Kind,
        api_version: String,
        served: String,
    },
    /// A field failed to deserialize; `path` is the field path (`spec.backends[1].weight`).
    #[error("{path}: {message}")]
    Field {
        path: String,
        message: String,
        line: Option<usize>,
    },
}

/// Applies `$body` to the inner value of every `VersionedObject` variant.
macro_rules! each_version {
    ($obj:expr, $v:ident => $body:expr) => {
        match $obj {
            VersionedObject::TrafficSplitV1alpha1($v) => $body,
            VersionedObject::TrafficSplitV1alpha2($v) => $body,
            VersionedObject::TrafficSplitV1alpha3($v) => $body,
            VersionedObject::TrafficSplitV1alpha4($v) => $body,
            VersionedObject::TrafficTargetV1alpha1($v) => $body,
            VersionedObject::TrafficTargetV1alpha2($v) => $body,
            VersionedObject::TrafficTargetV1alpha3($v) => $body,
            VersionedObject::HttpRouteGroupV1alpha1($v) => $body,
            VersionedObject::HttpRouteGroupV1alpha2($v) => $body,
            VersionedObject::HttpRouteGroupV1alpha3($v) => $body,
            VersionedObject::HttpRouteGroupV1alpha4($v) => $body,
            VersionedObject::TcpRouteV1alpha1($v) => $body,
            VersionedObject::TcpRouteV1alpha2($v) => $body,
            VersionedObject::TcpRouteV1alpha3($v) => $body,
            VersionedObject::TcpRouteV1alpha4($v) => $body,
            VersionedObject::UdpRouteV1alpha4($v) => $body,
        }
    };
}

// === impl VersionedObject ===

impl VersionedObject {
    /// Reads one document of a known SMI kind in the version its `apiVersion` names.
    pub fn from_deserializer<'de, D>(kind: Kind, version: &str, d: D) -> Result<Self, ReadError>
    where
        D: serde::Deserializer<'de>,
        D::Error: Into<Box<dyn std::error::Error>>,
    {
        use VersionedObject as V;
        fn read<'de, T: serde::Deserialize<'de>, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<T, ReadError>
        where
            D::Error: Into<Box<dyn std::error::Error>>,
        {
            serde_path_to_error::deserialize(d).map_err(|e| {
                let path = e.path().to_string();
                let inner: Box<dyn std::error::Error> = e.into_inner().into();
                ReadError::Field {
                    path,
                    message: inner.to_string(),
                    line: None,
                }
            })
        }
        Ok(match (kind, version) {
            (Kind::TrafficSplit, "v1alpha1") => V::TrafficSplitV1alpha1(read(d)?),
            (Kind::TrafficSplit, "v1alpha2") => V::TrafficSplitV1alpha2(read(d)?),
            (Kind::TrafficSplit, "v1alpha3") => V::TrafficSplitV1alpha3(read(d)?),
            (Kind::TrafficSplit, "v1alpha4") => V::TrafficSplitV1alpha4(read(d)?),
            (Kind::TrafficTarget, "v1alpha1") => V::TrafficTargetV1alpha1(read(d)?),
            (Kind::TrafficTarget, "v1alpha2") => V::TrafficTargetV1alpha2(read(d)?),
            (Kind::TrafficTarget, "v1alpha3") => V::TrafficTargetV1alpha3(read(d)?),
            (Kind::HttpRouteGroup, "v1alpha1") => V::HttpRouteGroupV1alpha1(read(d)?),
            (Kind::HttpRouteGroup, "v1alpha2") => V::HttpRouteGroupV1alpha2(read(d)?),
            (Kind::HttpRouteGroup, "v1alpha3") => V::HttpRouteGroupV1alpha3(read(d)?),
            (Kind::HttpRouteGroup, "v1alpha4") => V::HttpRouteGroupV1alpha4(read(d)?),
            (Kind::TcpRoute, "v1alpha1") => V::TcpRouteV1alpha1(read(d)?),
            (Kind::TcpRoute, "v1alpha2") => V::TcpRouteV1alpha2(read(d)?),
            (Kind::TcpRoute, "v1alpha3") => V::TcpRouteV1alpha3(read(d)?),
            (Kind::TcpRoute, "v1alpha4") => V::TcpRouteV1alpha4(read(d)?),
            (Kind::UdpRoute, "v1alpha4") => V::UdpRouteV1alpha4(read(d)?),
            (kind, v) => {
                return Err(ReadError::UnknownVersion {
                    kind,
                    api_version: format!("{}/{v}", kind.group()),
                    served: kind.versions().join(", "),
                });
            }
        })
    }

    /// Reads an object from JSON (as a conversion webhook or the API server hands it over).
    pub fn from_json(
        kind: Kind,
        version: &str,
        value: serde_json::Value,
    ) -> Result<Self, ReadError> {
        Self::from_deserializer(kind, version, value)
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::TrafficSplitV1alpha1(_)
            | Self::TrafficSplitV1alpha2(_)
            | Self::TrafficSplitV1alpha3(_)
            | Self::TrafficSplitV1alpha4(_) => Kind::TrafficSplit,
            Self::TrafficTargetV1alpha1(_)
            | Self::TrafficTargetV1alpha2(_)
            | Self::TrafficTargetV1alpha3(_) => Kind::TrafficTarget,
            Self::HttpRouteGroupV1alpha1(_)
            | Self::HttpRouteGroupV1alpha2(_)
            | Self::HttpRouteGroupV1alpha3(_)
            | Self::HttpRouteGroupV1alpha4(_) => Kind::HttpRouteGroup,
            Self::TcpRouteV1alpha1(_)
            | Self::TcpRouteV1alpha2(_)
            | Self::TcpRouteV1alpha3(_)
            | Self::TcpRouteV1alpha4(_) => Kind::TcpRoute,
            Self::UdpRouteV1alpha4(_) => Kind::UdpRoute,
        }
    }

    pub fn version(&self) -> &'static str {
        match self {
            Self::TrafficSplitV1alpha1(_)
            | Self::TrafficTargetV1alpha1(_)
            | Self::HttpRouteGroupV1alpha1(_)
            | Self::TcpRouteV1alpha1(_) => "v1alpha1",
            Self::TrafficSplitV1alpha2(_)
            | Self::TrafficTargetV1alpha2(_)
            | Self::HttpRouteGroupV1alpha2(_)
            | Self::TcpRouteV1alpha2(_) => "v1alpha2",
            Self::TrafficSplitV1alpha3(_)
            | Self::TrafficTargetV1alpha3(_)
            | Self::HttpRouteGroupV1alpha3(_)
            | Self::TcpRouteV1alpha3(_) => "v1alpha3",
            Self::TrafficSplitV1alpha4(_)
            | Self::HttpRouteGroupV1alpha4(_)
            | Self::TcpRouteV1alpha4(_)
            | Self::UdpRouteV1alpha4(_) => "v1alpha4",
        }
    }

    pub fn object_ref(&self) -> ObjectRef {
        each_version!(self, o => ObjectRef::from_meta(self.kind(), &o.metadata))
    }

    /// The object as JSON in its own version, with `apiVersion` and `kind` set.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = each_version!(self, o => to_value(o));
        if let Some(map) = v.as_object_mut() {
            map.insert(
                "apiVersion".into(),
                format!("{}/{}", self.kind().group(), self.version()).into(),
            );
            map.insert("kind".into(), self.kind().as_str().into());
        }
        v
    }

    /// Converts into the version-free form. Never fails: every version fits in it.
    pub fn into_canonical(self) -> SmiObject {
        use VersionedObject as V;
        match self {
            V::TrafficSplitV1alpha1(o) => SmiObject::TrafficSplit(o.into()),
            V::TrafficSplitV1alpha2(o) => SmiObject::TrafficSplit(o.into()),
            V::TrafficSplitV1alpha3(o) => SmiObject::TrafficSplit(o.into()),
            V::TrafficSplitV1alpha4(o) => SmiObject::TrafficSplit(o.into()),
            V::TrafficTargetV1alpha1(o) => SmiObject::TrafficTarget(o.into()),
            V::TrafficTargetV1alpha2(o) => SmiObject::TrafficTarget(o.into()),
            V::TrafficTargetV1alpha3(o) => SmiObject::TrafficTarget(o.into()),
            V::HttpRouteGroupV1alpha1(o) => SmiObject::HttpRouteGroup(o.into()),
            V::HttpRouteGroupV1alpha2(o) => SmiObject::HttpRouteGroup(o.into()),
            V::HttpRouteGroupV1alpha3(o) => SmiObject::HttpRouteGroup(o.into()),
            V::HttpRouteGroupV1alpha4(o) => SmiObject::HttpRouteGroup(o.into()),
            V::TcpRouteV1alpha1(o) => SmiObject::TcpRoute(o.into()),
            V::TcpRouteV1alpha2(o) => SmiObject::TcpRoute(o.into()),
            V::TcpRouteV1alpha3(o) => SmiObject::TcpRoute(o.into()),
            V::TcpRouteV1alpha4(o) => SmiObject::TcpRoute(o.into()),
            V::UdpRouteV1alpha4(o) => SmiObject::UdpRoute(o.into()),
        }
    }
}

fn to_value<T: Serialize>(o: &T) -> serde_json::Value {
    // Serialising plain data structs to a JSON value cannot fail: no maps with non-string keys.
    serde_json::to_value(o).unwrap_or(serde_json::Value::Null)
}

// === impl SmiObject ===

impl SmiObject {
    pub fn kind(&self) -> Kind {
        match self {
            SmiObject::TrafficSplit(_) => Kind::TrafficSplit,
            SmiObject::TrafficTarget(_) => Kind::TrafficTarget,
            SmiObject::HttpRouteGroup(_) => Kind::HttpRouteGroup,
            SmiObject::TcpRoute(_) => Kind::TcpRoute,
            SmiObject::UdpRoute(_) => Kind::UdpRoute,
        }
    }

    pub fn metadata(&self) -> &kube::core::ObjectMeta {
        match self {
            SmiObject::TrafficSplit(o) => &o.metadata,
            SmiObject::TrafficTarget(o) => &o.metadata,
            SmiObject::HttpRouteGroup(o) => &o.metadata,
            SmiObject::TcpRoute(o) => &o.metadata,
            SmiObject::UdpRoute(o) => &o.metadata,
        }
    }

    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::from_meta(self.kind(), self.metadata())
    }

    /// Converts into `version` of the same kind, or says which field that version cannot hold.
    pub fn to_version(&self, version: &str) -> Result<VersionedObject, ConversionError> {
        use VersionedObject as V;
        let unknown = || ConversionError {
            object: self.object_ref(),
            version: "(unknown)",
            field: "apiVersion".into(),
            reason: format!("{} is not served for {}", version, self.kind().as_str()),
        };
        Ok(match (self.clone(), version) {
            (SmiObject::TrafficSplit(o), "v1alpha1") => V::TrafficSplitV1alpha1(o.try_into()?),
            (SmiObject::TrafficSplit(o), "v1alpha2") => V::TrafficSplitV1alpha2(o.try_into()?),
            (SmiObject::TrafficSplit(o), "v1alpha3") => V::TrafficSplitV1alpha3(o.try_into()?),
            (SmiObject::TrafficSplit(o), "v1alpha4") => V::TrafficSplitV1alpha4(o.try_into()?),
            (SmiObject::TrafficTarget(o), "v1alpha1") => V::TrafficTargetV1alpha1(o.try_into()?),
            (SmiObject::TrafficTarget(o), "v1alpha2") => V::TrafficTargetV1alpha2(o.try_into()?),
            (SmiObject::TrafficTarget(o), "v1alpha3") => V::TrafficTargetV1alpha3(o.try_into()?),
            (SmiObject::HttpRouteGroup(o), "v1alpha1") => V::HttpRouteGroupV1alpha1(o.into()),
            (SmiObject::HttpRouteGroup(o), "v1alpha2") => V::HttpRouteGroupV1alpha2(o.into()),
            (SmiObject::HttpRouteGroup(o), "v1alpha3") => V::HttpRouteGroupV1alpha3(o.into()),
            (SmiObject::HttpRouteGroup(o), "v1alpha4") => V::HttpRouteGroupV1alpha4(o.into()),
            (SmiObject::TcpRoute(o), "v1alpha1") => V::TcpRouteV1alpha1(o.try_into()?),
            (SmiObject::TcpRoute(o), "v1alpha2") => V::TcpRouteV1alpha2(o.try_into()?),
            (SmiObject::TcpRoute(o), "v1alpha3") => V::TcpRouteV1alpha3(o.try_into()?),
            (SmiObject::TcpRoute(o), "v1alpha4") => V::TcpRouteV1alpha4(o.into()),
            (SmiObject::UdpRoute(o), "v1alpha4") => V::UdpRouteV1alpha4(o.into()),
            _ => return Err(unknown()),
        })
    }
}
