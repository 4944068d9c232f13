//! xDS resources as the proto3 JSON that Envoy's `/config_dump` shows (`@type`, camelCase
//! fields, nested `Any`s expanded), for `switchyard compile` and `switchyard proxy-config`; the
//! latter with every field the protos mark `(udpa.annotations.sensitive)` (a private key, a
//! password, a session ticket key) replaced by `"[redacted]"`, as Envoy's own dump does.

use std::{collections::HashSet, sync::OnceLock};

use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, SerializeOptions};
use serde_json::Value;

#[cfg(test)]
mod tests;

/// What a sensitive field shows instead of its value.
pub const REDACTED: &str = "[redacted]";

/// The field option that marks secret material in Envoy's protos.
const SENSITIVE: &str = "udpa.annotations.sensitive";

/// A resource as proto3 JSON. A type outside the descriptor set that `build.rs` compiles, or
/// bytes that do not decode, come out as an object with an `error`.
pub fn render_resource(any: &Any) -> Value {
    render(any).unwrap_or_else(|error| failed(any, error))
}

/// [`render_resource`] with every sensitive field redacted. Fails closed: when the descriptors
/// do not say which fields are sensitive, or a nested type is unknown, the resource comes out as
/// an `error` object, never unredacted.
pub fn render_redacted(any: &Any) -> Value {
    let redacted = render(any).and_then(|mut json| {
        let (pool, sensitive) = (descriptors()?, sensitive_fields()?);
        let descriptor = message_of(pool, &any.type_url).ok_or("unknown type")?;
        redact(&mut json, &descriptor, pool, sensitive);
        Ok(json)
    });
    redacted.unwrap_or_else(|error| failed(any, error))
}

fn failed(any: &Any, error: impl Into<String>) -> Value {
    serde_json::json!({
        "@type": any.type_url,
        "error": error.into(),
        "bytes": any.value.len(),
    })
}

fn render(any: &Any) -> Result<Value, String> {
    let pool = descriptors().map_err(|e| format!("bad descriptor set: {e}"))?;
    let descriptor = message_of(pool, &any.type_url).ok_or("unknown type")?;
    let message = DynamicMessage::decode(descriptor, any.value.as_slice())
        .map_err(|e| format!("cannot decode: {e}"))?;
    // Nested Anys are only looked up here, so a type missing from the set fails the whole
    // resource; the tests keep every type the adapter emits in the set.
    match message.serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new()) {
        Ok(Value::Object(mut fields)) => {
            fields.insert("@type".to_owned(), any.type_url.clone().into());
            Ok(fields.into())
        }
        Ok(other) => Ok(other),
        Err(e) => Err(format!("cannot print: {e}")),
    }
}

fn message_of(pool: &DescriptorPool, type_url: &str) -> Option<MessageDescriptor> {
    pool.get_message_by_name(type_url.rsplit('/').next().unwrap_or_default())
}

/// Replaces the sensitive fields of `json`, a `message` as proto3 JSON, walking into nested
/// messages, lists, maps and expanded `Any`s.
fn redact(
    json: &mut Value,
    message: &MessageDescriptor,
    pool: &DescriptorPool,
    sensitive: &HashSet<String>,
) {
    let Value::Object(fields) = json else {
        return;
    };
    if message.full_name() == "google.protobuf.Any" {
        let inner = fields
            .get("@type")
            .and_then(Value::as_str)
            .and_then(|t| message_of(pool, t));
        if let Some(inner) = inner {
            redact(json, &inner, pool, sensitive);
        }
        return;
    }
    for field in message.fields() {
        let Some(value) = fields.get_mut(field.json_name()) else {
            continue;
        };
        if sensitive.contains(field.full_name()) {
            *value = REDACTED.into();
            continue;
        }
        let Kind::Message(inner) = field.kind() else {
            continue;
        };
        if field.is_map() {
            let Kind::Message(values) = inner.map_entry_value_field().kind() else {
                continue;
            };
            if let Value::Object(entries) = value {
                for v in entries.values_mut() {
                    redact(v, &values, pool, sensitive);
                }
            }
        } else if let Value::Array(items) = value {
            for item in items {
                redact(item, &inner, pool, sensitive);
            }
        } else {
            redact(value, &inner, pool, sensitive);
        }
    }
}

/// The descriptors of every type the renderers know, decoded on first use.
fn descriptors() -> Result<&'static DescriptorPool, &'static str> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(
            include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin")).as_slice(),
        )
        .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(String::as_str)
}

/// The full names of every field marked sensitive, found once.
fn sensitive_fields() -> Result<&'static HashSet<String>, &'static str> {
    static FIELDS: OnceLock<Result<HashSet<String>, String>> = OnceLock::new();
    FIELDS
        .get_or_init(|| {
            let pool = descriptors().map_err(str::to_owned)?;
            let Some(sensitive) = pool.get_extension_by_name(SENSITIVE) else {
                return Err(format!("the descriptor set lacks {SENSITIVE}"));
            };
            Ok(pool
                .all_messages()
                .flat_map(|m| m.fields().collect::<Vec<_>>())
                .filter(|f| f.options().get_extension(&sensitive).as_bool() == Some(true))
                .map(|f| f.full_name().to_owned())
                .collect())
        })
        .as_ref()
        .map_err(String::as_str)
}
