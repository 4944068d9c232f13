//! Tests for the generated CRDs.
//!
//! `SWITCHYARD_BLESS=1 cargo test -p switchyard-crds crdgen` rewrites `manifests/crds/` instead
//! of failing when it is out of date (what `make crds` does through the CLI).
//!
//! The upstream CRDs and examples are read from `../shared/reference/` beside the project root,
//! the fixtures every checkout has next to it.

use std::{
    collections::BTreeSet,
    env, fs,
    path::{Path, PathBuf},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;

// === fixtures ===

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds")
}

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read fixtures in {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    files
}

/// The non-empty documents of a multi-document YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn schema_of<'a>(crd: &'a CustomResourceDefinition, version: &str) -> Option<&'a JSONSchemaProps> {
    crd.spec
        .versions
        .iter()
        .find(|v| v.name == version)?
        .schema
        .as_ref()?
        .open_api_v3_schema
        .as_ref()
}

fn schema(value: Value) -> JSONSchemaProps {
    serde_json::from_value(value).unwrap()
}

fn child(path: &str, name: &str) -> String {
    if path == "." {
        format!(".{name}")
    } else {
        format!("{path}.{name}")
    }
}

fn items(s: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match s.items.as_ref()? {
        JSONSchemaPropsOrArray::Schema(i) => Some(i),
        JSONSchemaPropsOrArray::Schemas(_) => None,
    }
}

fn additional(s: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match s.additional_properties.as_ref()? {
        JSONSchemaPropsOrBool::Schema(a) => Some(a),
        JSONSchemaPropsOrBool::Bool(_) => None,
    }
}

fn int_or_string(s: &JSONSchemaProps) -> bool {
    s.x_kubernetes_int_or_string == Some(true)
}

fn preserves(s: &JSONSchemaProps) -> bool {
    s.x_kubernetes_preserve_unknown_fields == Some(true)
}

/// A node that accepts and keeps any value.
fn accepts_anything(s: &JSONSchemaProps) -> bool {
    preserves(s) && s.type_.is_none() && !int_or_string(s)
}

/// The JSON Schema (draft 4) equivalent of an OpenAPI v3 CRD schema node, as the API server
/// validates it: `x-kubernetes-int-or-string` is an integer or a string, an untyped
/// `x-kubernetes-preserve-unknown-fields` node is anything, `nullable` admits `null`, and
/// `format` is dropped (the API server ignores numeric formats and ours has no string ones
/// in validated objects).
fn to_json_schema(s: &JSONSchemaProps) -> Value {
    let mut out = serde_json::Map::new();
    let nullable = s.nullable == Some(true);
    if int_or_string(s) {
        let mut any = vec![json!({"type": "integer"}), json!({"type": "string"})];
        if nullable {
            any.push(json!({"type": "null"}));
        }
        out.insert("anyOf".into(), Value::Array(any));
    } else if let Some(t) = &s.type_ {
        out.insert(
            "type".into(),
            if nullable {
                json!([t, "null"])
            } else {
                json!(t)
            },
        );
    }
    if let Some(props) = &s.properties {
        let props = props
            .iter()
            .map(|(k, v)| (k.clone(), to_json_schema(v)))
            .collect();
        out.insert("properties".into(), Value::Object(props));
    }
    if let Some(required) = s.required.as_ref().filter(|r| !r.is_empty()) {
        out.insert("required".into(), json!(required));
    }
    match &s.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(a)) => {
            out.insert("additionalProperties".into(), to_json_schema(a));
        }
        Some(JSONSchemaPropsOrBool::Bool(b)) => {
            out.insert("additionalProperties".into(), json!(b));
        }
        None => {}
    }
    if let Some(i) = items(s) {
        out.insert("items".into(), to_json_schema(i));
    }
    if let Some(e) = &s.enum_ {
        let mut values: Vec<Value> = e.iter().map(|v| v.0.clone()).collect();
        if nullable {
            values.push(Value::Null);
        }
        out.insert("enum".into(), Value::Array(values));
    }
    let numbers = [
        ("minimum", s.minimum),
        ("maximum", s.maximum),
        ("multipleOf", s.multiple_of),
    ];
    for (k, v) in numbers {
        if let Some(v) = v {
            out.insert(k.into(), json!(v));
        }
    }
    let counts = [
        ("minLength", s.min_length),
        ("maxLength", s.max_length),
        ("minItems", s.min_items),
        ("maxItems", s.max_items),
        ("minProperties", s.min_properties),
        ("maxProperties", s.max_properties),
    ];
    for (k, v) in counts {
        if let Some(v) = v {
            out.insert(k.into(), json!(v));
        }
    }
    let flags = [
        ("exclusiveMinimum", s.exclusive_minimum),
        ("exclusiveMaximum", s.exclusive_maximum),
        ("uniqueItems", s.unique_items),
    ];
    for (k, v) in flags {
        if let Some(v) = v {
            out.insert(k.into(), json!(v));
        }
    }
    if let Some(p) = &s.pattern {
        out.insert("pattern".into(), json!(p));
    }
    if !int_or_string(s) {
        for (k, j) in [
            ("allOf", &s.all_of),
            ("anyOf", &s.any_of),
            ("oneOf", &s.one_of),
        ] {
            if let Some(j) = j {
                out.insert(
                    k.into(),
                    Value::Array(j.iter().map(to_json_schema).collect()),
                );
            }
        }
    }
    if let Some(n) = &s.not {
        out.insert("not".into(), to_json_schema(n));
    }
    Value::Object(out)
}

fn has_type(s: &JSONSchemaProps, v: &Value) -> bool {
    if int_or_string(s) {
        return v.is_string() || v.is_i64() || v.is_u64();
    }
    match s.type_.as_deref() {
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        _ => true,
    }
}

// === structural schemas ===

const TYPES: [&str; 6] = ["object", "array", "string", "integer", "number", "boolean"];

/// Violations of the Kubernetes structural-schema rules, each as `<path>: <what>`. Stricter than
/// the API server in one way: logical junctors are only accepted in the `anyOf` form of
/// `x-kubernetes-int-or-string`, since nothing we generate needs more.
fn structural_violations(root: &JSONSchemaProps) -> Vec<String> {
    let mut out = Vec::new();
    if root.type_.as_deref() != Some("object") {
        out.push(".: the root must be type object".to_string());
    }
    if root.nullable == Some(true) {
        out.push(".: the root must not be nullable".to_string());
    }
    let props = root.properties.clone().unwrap_or_default();
    for field in ["apiVersion", "kind"] {
        if props
            .get(field)
            .is_some_and(|s| s.type_.as_deref() != Some("string"))
        {
            out.push(format!(".{field}: must be type string if declared"));
        }
    }
    if let Some(meta) = props.get("metadata") {
        metadata_violations(meta, &mut out);
    }
    node_violations(root, ".", &mut out);
    out
}

/// The API server only lets a CRD constrain `metadata.name` and `metadata.generateName`.
fn metadata_violations(meta: &JSONSchemaProps, out: &mut Vec<String>) {
    let value = serde_json::to_value(meta).unwrap();
    for key in value.as_object().into_iter().flat_map(|m| m.keys()) {
        if !["type", "properties", "description"].contains(&key.as_str()) {
            out.push(format!(
                ".metadata: {key} is not allowed; only name and generateName may be constrained"
            ));
        }
    }
    if meta.type_.as_deref() != Some("object") {
        out.push(".metadata: must be type object".to_string());
    }
    for (name, s) in meta.properties.iter().flatten() {
        if !["name", "generateName"].contains(&name.as_str()) {
            out.push(format!(
                ".metadata.{name}: only name and generateName may be constrained"
            ));
        }
        if s.type_.as_deref() != Some("string") || s.default.is_some() {
            out.push(format!(
                ".metadata.{name}: must be a string without a default"
            ));
        }
    }
}

fn node_violations(s: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
    let mut say = |what: String| out.push(format!("{path}: {what}"));
    let forbidden = [
        ("$ref", s.ref_path.is_some()),
        ("$schema", s.schema.is_some()),
        ("id", s.id.is_some()),
        ("definitions", s.definitions.is_some()),
        ("dependencies", s.dependencies.is_some()),
        ("patternProperties", s.pattern_properties.is_some()),
        ("additionalItems", s.additional_items.is_some()),
        ("uniqueItems: true", s.unique_items == Some(true)),
    ];
    for (keyword, present) in forbidden {
        if present {
            say(format!("{keyword} is not allowed in a CRD schema"));
        }
    }
    if s.x_kubernetes_int_or_string == Some(false) {
        say("x-kubernetes-int-or-string must be true or absent".into());
    }
    if s.x_kubernetes_preserve_unknown_fields == Some(false) {
        say("x-kubernetes-preserve-unknown-fields must be true or absent".into());
    }
    match s.type_.as_deref() {
        None if !(int_or_string(s) || preserves(s)) => say("has no type".into()),
        Some(t) if int_or_string(s) => say(format!("x-kubernetes-int-or-string with type {t}")),
        Some(t) if !TYPES.contains(&t) => say(format!("unknown type {t:?}")),
        _ => {}
    }
    if s.nullable == Some(true) && s.type_.is_none() && !int_or_string(s) {
        say("nullable without a type".into());
    }
    for (name, junctor) in [
        ("allOf", &s.all_of),
        ("anyOf", &s.any_of),
        ("oneOf", &s.one_of),
    ] {
        let Some(junctor) = junctor else { continue };
        let int_or_string_form = int_or_string(s)
            && name == "anyOf"
            && junctor.len() == 2
            && [("integer", &junctor[0]), ("string", &junctor[1])]
                .iter()
                .all(|(t, j)| {
                    **j == JSONSchemaProps {
                        type_: Some(t.to_string()),
                        ..JSONSchemaProps::default()
                    }
                });
        if !int_or_string_form {
            say(format!("{name} outside the int-or-string form"));
        }
    }
    if s.not.is_some() {
        say("not is not used by our types".into());
    }
    let object = s.type_.as_deref() == Some("object");
    match &s.additional_properties {
        Some(JSONSchemaPropsOrBool::Bool(b)) => {
            say(format!("additionalProperties: {b} (must be a schema)"));
        }
        Some(JSONSchemaPropsOrBool::Schema(_)) if s.properties.is_some() => {
            say("both properties and additionalProperties".into());
        }
        _ => {}
    }
    if (s.properties.is_some() || s.additional_properties.is_some()) && !object {
        say("properties on a node that is not type object".into());
    }
    let declared = s.properties.clone().unwrap_or_default();
    for r in s.required.iter().flatten() {
        if !declared.contains_key(r) {
            say(format!("requires undeclared field {r:?}"));
        }
    }
    let array = s.type_.as_deref() == Some("array");
    match &s.items {
        None if array => say("array without items".into()),
        Some(JSONSchemaPropsOrArray::Schemas(_)) => say("items is a list of schemas".into()),
        Some(_) if !array => say("items on a node that is not type array".into()),
        _ => {}
    }
    if let Some(f) = &s.format
        && !KUBE_FORMATS.contains(&f.as_str())
    {
        say(format!("format {f:?} is unknown to the API server"));
    }
    for v in s.enum_.iter().flatten() {
        if !has_type(s, &v.0) {
            say(format!("enum value {} does not match the type", v.0));
        }
    }
    if let Some(d) = &s.default {
        let valid = jsonschema::draft4::new(&to_json_schema(s))
            .unwrap()
            .is_valid(&d.0);
        if !valid {
            say(format!(
                "default {} does not validate against its own schema",
                d.0
            ));
        }
    }
    match s.x_kubernetes_list_type.as_deref() {
        None | Some("atomic" | "set") => {}
        Some("map")
            if s.x_kubernetes_list_map_keys
                .as_ref()
                .is_some_and(|k| !k.is_empty()) => {}
        Some(other) => say(format!(
            "x-kubernetes-list-type {other:?} without usable map keys"
        )),
    }
    if s.x_kubernetes_list_type.is_some() && !array {
        say("x-kubernetes-list-type on a node that is not an array".into());
    }
    if s.x_kubernetes_map_type.is_some() && !object {
        say("x-kubernetes-map-type on a node that is not an object".into());
    }
    if s.x_kubernetes_embedded_resource == Some(true) && !object {
        say("x-kubernetes-embedded-resource on a node that is not an object".into());
    }

    for (name, p) in s.properties.iter().flatten() {
        node_violations(p, &child(path, name), out);
    }
    if let Some(a) = additional(s) {
        node_violations(a, &child(path, "*"), out);
    }
    if let Some(i) = items(s) {
        node_violations(i, &format!("{path}[*]"), out);
    }
}

#[test]
fn every_schema_is_structural() {
    let mut problems = Vec::new();
    for crd in crds() {
        for v in &crd.spec.versions {
            let Some(s) = schema_of(&crd, &v.name) else {
                problems.push(format!("{} {}: no schema", crd.spec.names.kind, v.name));
                continue;
            };
            for p in structural_violations(s) {
                problems.push(format!("{} {}: {p}", crd.spec.names.kind, v.name));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "non-structural CRD schemas:\n{}",
        problems.join("\n")
    );
}

#[test]
fn structural_check_catches_violations() {
    let bad = schema(json!({
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
            "spec": {
                "type": "object",
                "required": ["ghost"],
                "properties": {
                    "ref": {"$ref": "#/definitions/x"},
                    "untyped": {"description": "no type"},
                    "both": {
                        "type": "object",
                        "properties": {"a": {"type": "string"}},
                        "additionalProperties": {"type": "string"},
                    },
                    "list": {"type": "array"},
                    "tuple": {"type": "array", "items": [{"type": "string"}]},
                    "choice": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    "nulled": {"nullable": true, "x-kubernetes-preserve-unknown-fields": true},
                    "port": {"type": "integer", "format": "uint16"},
                    "mode": {"type": "string", "enum": ["a", 1]},
                    "count": {"type": "integer", "default": "many"},
                    "ios": {"x-kubernetes-int-or-string": true, "type": "string"},
                    "set": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
                },
            },
        },
    }));
    let found = structural_violations(&bad);
    let expected = [
        ".metadata.labels: only name and generateName may be constrained",
        ".metadata.labels: must be a string without a default",
        ".spec: requires undeclared field \"ghost\"",
        ".spec.ref: $ref is not allowed",
        ".spec.ref: has no type",
        ".spec.untyped: has no type",
        ".spec.both: both properties and additionalProperties",
        ".spec.list: array without items",
        ".spec.tuple: items is a list of schemas",
        ".spec.choice: anyOf outside the int-or-string form",
        ".spec.choice: has no type",
        ".spec.nulled: nullable without a type",
        ".spec.port: format \"uint16\" is unknown",
        ".spec.mode: enum value 1 does not match",
        ".spec.count: default \"many\" does not validate",
        ".spec.ios: x-kubernetes-int-or-string with type string",
        ".spec.set: uniqueItems: true is not allowed",
    ];
    for e in expected {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "missed {e:?}; found:\n{}",
            found.join("\n")
        );
    }
    assert_eq!(
        found.len(),
        expected.len(),
        "unexpected extra findings:\n{}",
        found.join("\n")
    );

    let good = schema(json!({
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "w": {
                "x-kubernetes-int-or-string": true,
                "anyOf": [{"type": "integer"}, {"type": "string"}],
            },
            "anything": {"x-kubernetes-preserve-unknown-fields": true},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "ports": {"type": "array", "items": {"type": "integer", "format": "int32"}, "default": []},
        },
    }));
    assert_eq!(structural_violations(&good), Vec::<String>::new());
}

// === CRD shape ===

#[test]
fn one_multi_version_crd_per_kind() {
    let all = crds();
    assert_eq!(all.len(), Kind::ALL.len());
    for (kind, crd) in Kind::ALL.into_iter().zip(&all) {
        let name = crd_name(kind);
        assert_eq!(crd.metadata.name.as_deref(), Some(name.as_str()));
        assert_eq!(crd.spec.group, kind.group());
        assert_eq!(crd.spec.scope, "Namespaced");
        let names = &crd.spec.names;
        assert_eq!(names.kind, kind.as_str());
        assert_eq!(names.plural, kind.plural());
        assert_eq!(
            names.singular.as_deref(),
            Some(kind.as_str().to_ascii_lowercase().as_str())
        );
        assert_eq!(
            names.list_kind.as_deref(),
            Some(format!("{}List", kind.as_str()).as_str())
        );
        assert_eq!(
            names.short_names.as_deref(),
            Some(&[kind.short_name().to_string()][..])
        );
        assert!(
            names.categories.iter().flatten().any(|c| c == "smi"),
            "{name}: not in category smi"
        );

        let versions: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(versions, kind.versions(), "{name}");
        let storage: Vec<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(
            storage,
            [kind.storage_version()],
            "{name}: exactly one storage version"
        );
        assert_eq!(
            versions.last(),
            Some(&kind.storage_version()),
            "{name}: storage is the latest"
        );
        for v in &crd.spec.versions {
            assert!(v.served, "{name} {}: not served", v.name);
            let sub = v.subresources.as_ref();
            assert!(
                sub.is_some_and(|s| s.status.is_some()),
                "{name} {}: no status subresource",
                v.name
            );
            assert!(
                sub.is_some_and(|s| s.scale.is_none()),
                "{name} {}: unexpected scale",
                v.name
            );
            assert!(v.deprecated.is_none(), "{name} {}: deprecated", v.name);
        }

        let conversion = crd.spec.conversion.as_ref().unwrap();
        assert_eq!(
            conversion.strategy, "None",
            "{name}: the installer, not crdgen, sets Webhook"
        );
        assert!(conversion.webhook.is_none());

        // Each type's own derive must agree with `Kind`, or the merged CRD would silently mix
        // resources.
        for single in version_crds(kind) {
            assert_eq!(single.spec.group, kind.group());
            assert_eq!(single.spec.scope, "Namespaced");
            assert_eq!(single.spec.names.kind, kind.as_str());
            assert_eq!(single.spec.names.plural, kind.plural());
            assert_eq!(
                single.spec.names.short_names,
                Some(vec![kind.short_name().to_string()])
            );
        }
    }
    let short: Vec<&str> = all
        .iter()
        .flat_map(|c| c.spec.names.short_names.iter().flatten())
        .map(String::as_str)
        .collect();
    assert_eq!(short, ["ts", "tt", "htr", "tr", "ur"]);
}

/// The schema node a printer column's JSONPath (`.spec.backends[*].weight`) reads.
fn resolve<'a>(mut s: &'a JSONSchemaProps, json_path: &str) -> Option<&'a JSONSchemaProps> {
    for segment in json_path.strip_prefix('.')?.split('.') {
        let (name, rest) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
        s = s.properties.as_ref()?.get(name)?;
        for _ in 0..rest.matches("[*]").count() {
            s = items(s)?;
        }
    }
    Some(s)
}

#[test]
fn printer_columns_show_declared_fields() {
    for crd in crds() {
        let kind = Kind::from_group_kind(&crd.spec.group, &crd.spec.names.kind).unwrap();
        for v in &crd.spec.versions {
            let columns = v.additional_printer_columns.clone().unwrap_or_default();
            let expected: Vec<(&str, &str)> = match (kind, v.name.as_str()) {
                (Kind::TrafficSplit, _) => vec![
                    ("Service", ".spec.service"),
                    ("Backends", ".spec.backends[*].service"),
                    ("Weights", ".spec.backends[*].weight"),
                ],
                (Kind::TrafficTarget, "v1alpha1") => vec![("Destination", ".destination.name")],
                (Kind::TrafficTarget, _) => vec![("Destination", ".spec.destination.name")],
                _ => vec![],
            };
            for (name, path) in expected {
                assert!(
                    columns
                        .iter()
                        .any(|c| c.name == name && c.json_path == path),
                    "{kind} {}: no column {name} = {path}; have {columns:?}",
                    v.name
                );
            }
            let schema = schema_of(&crd, &v.name).unwrap();
            for c in &columns {
                if c.json_path.starts_with(".metadata.") {
                    continue;
                }
                let node = resolve(schema, &c.json_path);
                assert!(
                    node.is_some_and(|n| n.type_.as_deref() != Some("object")),
                    "{kind} {}: column {} reads {}, which the schema does not declare as a value",
                    v.name,
                    c.name,
                    c.json_path
                );
            }
        }
    }
}

// === rendered files ===

#[test]
fn render_is_deterministic_and_reads_back() {
    let files = render();
    assert_eq!(files, render());
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "trafficsplits.split.smi-spec.io.yaml",
            "traffictargets.access.smi-spec.io.yaml",
            "httproutegroups.specs.smi-spec.io.yaml",
            "tcproutes.specs.smi-spec.io.yaml",
            "udproutes.specs.smi-spec.io.yaml",
        ]
    );
    for ((name, yaml), crd) in files.iter().zip(crds()) {
        assert_eq!(
            yaml.lines().next(),
            Some("# Generated by `switchyard crds`; do not edit.")
        );
        let back: CustomResourceDefinition = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(
            back, crd,
            "{name} does not read back as the CRD it was rendered from"
        );
    }
}

#[test]
fn write_all_and_check_all_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("crds");
    let mut all: Vec<String> = Kind::ALL.into_iter().map(file_name).collect();
    let paths = {
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(
            check_all(&dir),
            Err(sorted),
            "a missing directory drifts in every file"
        );
        write_all(&dir).unwrap()
    };
    assert_eq!(paths, all.iter().map(|n| dir.join(n)).collect::<Vec<_>>());
    assert_eq!(check_all(&dir), Ok(()));

    let ts = dir.join(file_name(Kind::TrafficSplit));
    let rendered = fs::read_to_string(&ts).unwrap();
    fs::write(&ts, rendered.replace("served: true", "served: false")).unwrap();
    assert_eq!(check_all(&dir), Err(vec![file_name(Kind::TrafficSplit)]));

    // A generated file for a kind we no longer emit is drift and gets removed; a hand-written
    // file beside them is neither.
    let stale = "trafficmetrics.metrics.smi-spec.io.yaml";
    fs::write(
        dir.join(stale),
        format!("{HEADER}kind: CustomResourceDefinition\n"),
    )
    .unwrap();
    fs::write(dir.join("kustomization.yaml"), "resources: []\n").unwrap();
    all = vec![stale.to_string(), file_name(Kind::TrafficSplit)];
    assert_eq!(check_all(&dir), Err(all));
    write_all(&dir).unwrap();
    assert_eq!(check_all(&dir), Ok(()));
    assert!(!dir.join(stale).exists());
    assert!(dir.join("kustomization.yaml").exists());

    fs::write(&ts, rendered.replace('\n', "\r\n")).unwrap();
    assert_eq!(check_all(&dir), Ok(()), "a CRLF checkout is not drift");
}

/// `manifests/crds/` matches the types. Set `SWITCHYARD_BLESS=1` to rewrite it instead.
#[test]
fn checked_in_manifests_are_up_to_date() {
    let dir = manifests_dir();
    if env::var("SWITCHYARD_BLESS").as_deref() == Ok("1") {
        write_all(&dir).unwrap();
    }
    if let Err(drifted) = check_all(&dir) {
        panic!(
            "{} is out of date with the Rust types: {}\nrun `make crds` (or \
             `SWITCHYARD_BLESS=1 cargo test -p switchyard-crds crdgen`) and commit the result",
            dir.display(),
            drifted.join(", ")
        );
    }
}

// === acceptance of the reference examples ===

/// Fields of `value` the API server would drop because `s` does not declare them.
fn pruned_fields(value: &Value, s: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
    if int_or_string(s) {
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                // The API server keeps and checks these itself.
                if path == "." && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) {
                    continue;
                }
                let at = child(path, k);
                if let Some(p) = s.properties.as_ref().and_then(|p| p.get(k)) {
                    pruned_fields(v, p, &at, out);
                } else if let Some(a) = additional(s) {
                    pruned_fields(v, a, &at, out);
                } else if !preserves(s) {
                    out.push(format!(
                        "{at}: not declared, so the API server would drop it"
                    ));
                }
            }
        }
        Value::Array(values) => {
            if let Some(i) = items(s) {
                for (n, v) in values.iter().enumerate() {
                    pruned_fields(v, i, &format!("{path}[{n}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Why the API server would reject or alter `doc` under our CRDs; empty when it stores it as is.
fn acceptance_problems(crds: &[CustomResourceDefinition], doc: &Value) -> Vec<String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let Some((group, version)) = api_version.split_once('/') else {
        return vec![format!("apiVersion {api_version:?} has no group")];
    };
    let Some(crd) = crds
        .iter()
        .find(|c| c.spec.group == group && c.spec.names.kind == kind)
    else {
        return vec![format!("no CRD for {kind} in {group}")];
    };
    let Some(schema) = schema_of(crd, version) else {
        return vec![format!("{kind} {version} is not served")];
    };
    let validator = jsonschema::draft4::new(&to_json_schema(schema)).unwrap();
    let mut out: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    pruned_fields(doc, schema, ".", &mut out);
    out
}

#[test]
fn reference_examples_are_accepted_unchanged() {
    let dir = reference_dir().join("smi-examples");
    let crds = crds();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for file in yaml_files(&dir) {
        let docs = documents(&file);
        assert!(!docs.is_empty(), "{}: no documents", file.display());
        for (i, doc) in docs.iter().enumerate() {
            let at = format!("{}[{i}]", file.file_name().unwrap().to_string_lossy());
            problems.extend(
                acceptance_problems(&crds, doc)
                    .into_iter()
                    .map(|p| format!("{at}: {p}")),
            );
            seen.insert(format!(
                "{} {}",
                doc["apiVersion"].as_str().unwrap(),
                doc["kind"].as_str().unwrap()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "examples our CRDs reject or prune:\n{}",
        problems.join("\n")
    );
    // Guards against the fixtures thinning out and this test silently covering less.
    for expected in [
        "split.smi-spec.io/v1alpha1 TrafficSplit",
        "split.smi-spec.io/v1alpha2 TrafficSplit",
        "split.smi-spec.io/v1alpha4 TrafficSplit",
        "access.smi-spec.io/v1alpha1 TrafficTarget",
        "access.smi-spec.io/v1alpha3 TrafficTarget",
        "specs.smi-spec.io/v1alpha1 HTTPRouteGroup",
        "specs.smi-spec.io/v1alpha4 HTTPRouteGroup",
        "specs.smi-spec.io/v1alpha4 TCPRoute",
        "specs.smi-spec.io/v1alpha4 UDPRoute",
    ] {
        assert!(
            seen.contains(expected),
            "no example of {expected}; saw {seen:?}"
        );
    }
}

#[test]
fn acceptance_check_catches_bad_objects() {
    let crds = crds();
    let rejected = [
        (
            "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata: {name: a}\n\
             spec: {service: web, backends: [{service: v1, weight: 50%}]}",
            "/spec/backends/0/weight",
        ),
        (
            "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: a}\n\
             spec: {service: web, backends: [], backend: []}",
            ".spec.backend: not declared",
        ),
        (
            "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: a}\n\
             spec: {destination: {kind: ServiceAccount}}",
            "\"name\" is a required property",
        ),
        (
            "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: a}\n\
             spec: {matches: [{name: m, methods: [FETCH]}]}",
            "FETCH",
        ),
        (
            "apiVersion: access.smi-spec.io/v1alpha1\nkind: TrafficTarget\nmetadata: {name: a}\n\
             spec: {destination: {kind: ServiceAccount, name: b}}",
            ".spec: not declared",
        ),
        (
            "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {name: a}\n\
             spec: {matches: {ports: [70000]}}",
            "70000",
        ),
        (
            "apiVersion: split.smi-spec.io/v1alpha5\nkind: TrafficSplit\nmetadata: {name: a}\n",
            "not served",
        ),
    ];
    for (yaml, needle) in rejected {
        let doc: Value = serde_yaml::from_str(yaml).unwrap();
        let problems = acceptance_problems(&crds, &doc);
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "expected a problem mentioning {needle:?} for\n{yaml}\ngot {problems:?}"
        );
    }

    // Beyond upstream on purpose: header maps (the prose form), quantities as v1alpha1
    // weights, and a TCPRoute without `ports` (all ports).
    let accepted = [
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: a}\n\
         spec: {matches: [{name: m, headers: {user-agent: '.*Firefox.*'}}]}",
        "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {name: a}\n\
         spec: {service: web, backends: [{service: v1, weight: 500m}, {service: v2, weight: 95}]}",
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {name: a}\n\
         spec: {matches: {}}",
    ];
    for yaml in accepted {
        let doc: Value = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(
            acceptance_problems(&crds, &doc),
            Vec::<String>::new(),
            "{yaml}"
        );
    }
}

// === superset of the upstream CRDs ===

/// Where our schemas deliberately reject what an upstream CRD accepts, as
/// `(path, finding, reason)`; it applies to every kind and version where the finding occurs.
const DELIBERATE_TIGHTENINGS: &[(&str, &str, &str)] = &[
    (
        ".",
        "requires spec; upstream does not",
        "an object without `spec` cannot be read as the typed resource; one such object would \
         fail a typed list or watch of the whole kind, so the API server rejects it instead",
    ),
    (
        ".destination.port",
        "type integer; upstream number",
        "a port is a whole number (Go `int`); `80.5` would be stored and then fail to parse",
    ),
    (
        ".destination.port",
        "minimum 0; upstream none",
        "a port fits in 16 bits",
    ),
    (
        ".destination.port",
        "maximum 65535; upstream none",
        "a port fits in 16 bits",
    ),
    (
        ".spec.destination.port",
        "type integer; upstream number",
        "a port is a whole number (Go `int`); `80.5` would be stored and then fail to parse",
    ),
    (
        ".spec.destination.port",
        "minimum 0; upstream none",
        "a port fits in 16 bits",
    ),
    (
        ".spec.destination.port",
        "maximum 65535; upstream none",
        "a port fits in 16 bits",
    ),
    (
        ".spec.matches.ports[*]",
        "minimum 0; upstream none",
        "a port fits in 16 bits",
    ),
    (
        ".spec.matches.ports[*]",
        "maximum 65535; upstream none",
        "a port fits in 16 bits",
    ),
];

/// How `ours` accepts less than `up`, as `(path, finding)`. Types may widen (`integer` to
/// `number`, anything to an untyped preserve-unknown-fields node, integer or string to
/// int-or-string) but never narrow; `required` may only shrink; enums only grow; bounds only
/// loosen; every field upstream declares is declared (or preserved) so nothing is pruned.
/// Numeric `format`s are ignored: the API server does not enforce them.
fn narrowings(
    up: &JSONSchemaProps,
    ours: &JSONSchemaProps,
    path: &str,
    out: &mut Vec<(String, String)>,
) {
    let mut say = |what: String| out.push((path.to_string(), what));
    if accepts_anything(ours) {
        return;
    }
    let shape = |s: &JSONSchemaProps| {
        if int_or_string(s) {
            "int-or-string".to_string()
        } else {
            s.type_.clone().unwrap_or_else(|| "any".into())
        }
    };
    let (up_shape, our_shape) = (shape(up), shape(ours));
    let widened = up_shape == our_shape
        || (up_shape == "integer" && our_shape == "number")
        || (our_shape == "int-or-string" && (up_shape == "integer" || up_shape == "string"));
    if !widened {
        say(format!("type {our_shape}; upstream {up_shape}"));
    }
    if preserves(up) && !preserves(ours) {
        say("prunes unknown fields; upstream keeps them".into());
    }
    if up.nullable == Some(true) && ours.nullable != Some(true) {
        say("rejects null; upstream accepts it".into());
    }
    if let Some(ours_enum) = &ours.enum_ {
        match &up.enum_ {
            None => say("has an enum; upstream none".into()),
            Some(up_enum) => {
                for v in up_enum.iter().filter(|v| !ours_enum.contains(v)) {
                    say(format!("enum lacks {}", v.0));
                }
            }
        }
    }
    // Bounds may only loosen: lower ones may not rise, upper ones may not fall.
    let count = |v: Option<i64>| v.map(|v| v as f64);
    let bounds = [
        ("minimum", ours.minimum, up.minimum, true),
        (
            "minLength",
            count(ours.min_length),
            count(up.min_length),
            true,
        ),
        ("minItems", count(ours.min_items), count(up.min_items), true),
        (
            "minProperties",
            count(ours.min_properties),
            count(up.min_properties),
            true,
        ),
        ("maximum", ours.maximum, up.maximum, false),
        (
            "maxLength",
            count(ours.max_length),
            count(up.max_length),
            false,
        ),
        (
            "maxItems",
            count(ours.max_items),
            count(up.max_items),
            false,
        ),
        (
            "maxProperties",
            count(ours.max_properties),
            count(up.max_properties),
            false,
        ),
    ];
    for (name, o, u, lower) in bounds {
        let Some(o) = o else { continue };
        match u {
            None => say(format!("{name} {o}; upstream none")),
            Some(u) if (lower && o > u) || (!lower && o < u) => {
                say(format!("{name} {o}; upstream {u}"));
            }
            Some(_) => {}
        }
    }
    // Constraints without an order may only repeat upstream's.
    let added = [
        (
            "exclusiveMinimum",
            ours.exclusive_minimum == Some(true) && up.exclusive_minimum != Some(true),
        ),
        (
            "exclusiveMaximum",
            ours.exclusive_maximum == Some(true) && up.exclusive_maximum != Some(true),
        ),
        (
            "uniqueItems",
            ours.unique_items == Some(true) && up.unique_items != Some(true),
        ),
        (
            "pattern",
            ours.pattern.is_some() && ours.pattern != up.pattern,
        ),
        (
            "multipleOf",
            ours.multiple_of.is_some() && ours.multiple_of != up.multiple_of,
        ),
        (
            "CEL rules",
            ours.x_kubernetes_validations.is_some()
                && ours.x_kubernetes_validations != up.x_kubernetes_validations,
        ),
        (
            "string format",
            our_shape == "string" && ours.format.is_some() && ours.format != up.format,
        ),
    ];
    for (name, added) in added {
        if added {
            say(format!("{name} not in upstream"));
        }
    }
    let up_required = up.required.clone().unwrap_or_default();
    for r in ours
        .required
        .iter()
        .flatten()
        .filter(|r| !up_required.contains(r))
    {
        say(format!("requires {r}; upstream does not"));
    }

    for (name, u) in up.properties.iter().flatten() {
        let at = child(path, name);
        match (
            ours.properties.as_ref().and_then(|p| p.get(name)),
            additional(ours),
        ) {
            (Some(o), _) | (None, Some(o)) => narrowings(u, o, &at, out),
            (None, None) if preserves(ours) => {}
            (None, None) => out.push((at, "missing; upstream declares it".into())),
        }
    }
    if let Some(u) = additional(up) {
        match additional(ours) {
            Some(o) => narrowings(u, o, &child(path, "*"), out),
            None if preserves(ours) => {}
            None => out.push((path.to_string(), "prunes keys; upstream allows any".into())),
        }
    }
    if let Some(u) = items(up) {
        match items(ours) {
            Some(o) => narrowings(u, o, &format!("{path}[*]"), out),
            None => out.push((path.to_string(), "has no item schema; upstream does".into())),
        }
    }
}

#[test]
fn superset_check_catches_narrowing() {
    let up = schema(json!({
        "type": "object",
        "required": ["a"],
        "properties": {
            "a": {"type": "number"},
            "b": {"type": "string", "enum": ["x", "y"]},
            "c": {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "string"}}},
            "d": {"type": "integer"},
            "e": {"type": "string", "nullable": true},
            "w": {"x-kubernetes-int-or-string": true},
        },
    }));
    let ours = schema(json!({
        "type": "object",
        "required": ["a", "b"],
        "properties": {
            "a": {"type": "integer", "maximum": 10.0},
            "b": {"type": "string", "enum": ["x"]},
            "c": {"type": "array", "items": {"type": "object"}},
            "e": {"type": "string"},
            "w": {"type": "string"},
        },
    }));
    let mut found = Vec::new();
    narrowings(&up, &ours, ".", &mut found);
    let found: BTreeSet<String> = found
        .into_iter()
        .map(|(p, w)| format!("{p}: {w}"))
        .collect();
    let expected: BTreeSet<String> = [
        ".: requires b; upstream does not",
        ".a: type integer; upstream number",
        ".a: maximum 10; upstream none",
        ".b: enum lacks \"y\"",
        ".c[*]: prunes keys; upstream allows any",
        ".d: missing; upstream declares it",
        ".e: rejects null; upstream accepts it",
        ".w: type string; upstream int-or-string",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(found, expected);

    // Widening is fine: number for integer, an untyped preserve node for anything, no enum.
    let wider = schema(json!({
        "type": "object",
        "properties": {
            "a": {"type": "number"},
            "b": {"type": "string"},
            "c": {"x-kubernetes-preserve-unknown-fields": true},
            "d": {"type": "number"},
            "e": {"type": "string", "nullable": true},
            "w": {"x-kubernetes-int-or-string": true, "nullable": true},
        },
    }));
    let mut found = Vec::new();
    narrowings(&up, &wider, ".", &mut found);
    assert_eq!(found, Vec::new());
}

#[test]
fn our_schemas_accept_everything_upstream_accepts() {
    let dir = reference_dir().join("smi-crds");
    let files: Vec<PathBuf> = [dir.clone(), dir.join("linkerd-smi"), dir.join("osm")]
        .iter()
        .flat_map(|d| yaml_files(d))
        .collect();
    let ours = crds();
    let mut findings = BTreeSet::new();
    let mut compared = BTreeSet::new();
    for file in &files {
        for doc in documents(file) {
            let up: CustomResourceDefinition = serde_json::from_value(doc).unwrap();
            let label = format!(
                "{} ({})",
                up.metadata.name.clone().unwrap_or_default(),
                file.display()
            );
            let Some(our) = ours.iter().find(|c| c.metadata.name == up.metadata.name) else {
                findings.insert((label, ".".to_string(), "no CRD of that name".to_string()));
                continue;
            };
            let n = (&up.spec.names, &our.spec.names);
            if n.0.kind != n.1.kind || n.0.plural != n.1.plural || up.spec.scope != our.spec.scope {
                findings.insert((
                    label.clone(),
                    ".".into(),
                    "kind, plural or scope differ".into(),
                ));
            }
            for s in n.0.short_names.iter().flatten() {
                if !n.1.short_names.iter().flatten().any(|o| o == s) {
                    findings.insert((label.clone(), ".".into(), format!("lacks short name {s}")));
                }
            }
            for v in &up.spec.versions {
                let at = format!("{} {}", up.spec.names.kind, v.name);
                let Some(o) = schema_of(our, &v.name) else {
                    findings.insert((at, ".".into(), "version not served".into()));
                    continue;
                };
                let u = v
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .unwrap();
                let mut found = Vec::new();
                narrowings(u, o, ".", &mut found);
                findings.extend(found.into_iter().map(|(p, w)| (at.clone(), p, w)));
                compared.insert(at);
            }
        }
    }

    let mut used = BTreeSet::new();
    let unexpected: Vec<String> = findings
        .iter()
        .filter(|(_, path, what)| {
            match DELIBERATE_TIGHTENINGS
                .iter()
                .position(|(p, w, _)| p == path && w == what)
            {
                Some(i) => {
                    used.insert(i);
                    false
                }
                None => true,
            }
        })
        .map(|(at, path, what)| format!("{at} {path}: {what}"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "our CRDs reject or prune objects the upstream CRDs accept:\n{}",
        unexpected.join("\n")
    );
    let stale: Vec<_> = DELIBERATE_TIGHTENINGS
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .map(|(_, t)| t)
        .collect();
    assert!(
        stale.is_empty(),
        "listed as deliberate but no longer found; remove: {stale:?}"
    );

    let expected: BTreeSet<String> = [
        "TrafficSplit v1alpha1",
        "TrafficSplit v1alpha2",
        "TrafficSplit v1alpha3",
        "TrafficSplit v1alpha4",
        "TrafficTarget v1alpha1",
        "TrafficTarget v1alpha2",
        "TrafficTarget v1alpha3",
        "HTTPRouteGroup v1alpha1",
        "HTTPRouteGroup v1alpha2",
        "HTTPRouteGroup v1alpha3",
        "HTTPRouteGroup v1alpha4",
        "TCPRoute v1alpha4",
        "UDPRoute v1alpha4",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(compared, expected, "upstream versions compared");
}
