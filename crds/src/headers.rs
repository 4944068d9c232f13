//! HTTP header filters, read both as a map and as a list of single-key maps.
//!
//! The SMI prose writes `headers: {user-agent: ".*Android.*"}`, while the upstream CRD schema and
//! Go (un)marshaller use `headers: [{user-agent: ".*Android.*"}]`. Both mean the same: every
//! listed header must match its regex. We read either form, keep the order the author wrote,
//! and always write the list form, which every upstream CRD accepts.

use std::{collections::BTreeMap, fmt};

use schemars::JsonSchema;
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, MapAccess, SeqAccess},
    ser::{SerializeMap, SerializeSeq},
};

/// Header filters in author order: `(header name, value regex)` pairs, ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HttpHeaders(pub Vec<(String, String)>);

impl HttpHeaders {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl Serialize for HttpHeaders {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct One<'a>(&'a str, &'a str);
        impl Serialize for One<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(self.0, self.1)?;
                m.end()
            }
        }
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            seq.serialize_element(&One(k, v))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for HttpHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = HttpHeaders;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of header name to regex, or a list of such maps")
            }

            fn visit_unit<E: de::Error>(self) -> Result<HttpHeaders, E> {
                Ok(HttpHeaders::default())
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HttpHeaders, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(HttpHeaders(out))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HttpHeaders, A::Error> {
                let mut out = Vec::new();
                // Each element is a map; a multi-key element is read as several filters, since
                // that is what the Go unmarshaller does with it.
                while let Some(one) = seq.next_element::<BTreeMap<String, String>>()? {
                    out.extend(one);
                }
                Ok(HttpHeaders(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for HttpHeaders {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HttpHeaders".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // A structural schema cannot say "an array or an object", so the node keeps whatever the
        // author wrote and validation (webhook, operator, `switchyard validate`) checks it.
        schemars::json_schema!({
            "description": "Header filters: header name to value regex, all of which must match. \
                            Written as a list of single-key maps (upstream form) or as one map.",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}
