//! Tests of the manifest loader: document splitting, line numbers, errors and passthrough.

use std::{collections::BTreeMap, path::Path};

use proptest::prelude::*;

use super::*;

const SPLIT_V1ALPHA4: &str = "\
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata:
  name: web
spec:
  service: web
  backends:
  - service: web-v1
    weight: 90
  - service: web-v2
    weight: 10
";

fn load(text: &str) -> Manifest {
    load_str("test.yaml", text)
}

fn lines(m: &Manifest) -> Vec<usize> {
    m.objects.iter().map(|o| o.line).collect()
}

fn only_error(m: &Manifest) -> &LoadError {
    assert_eq!(m.errors.len(), 1, "expected one error, got {:#?}", m.errors);
    &m.errors[0]
}

#[test]
fn multi_document_lines_count_from_the_start_of_the_file() {
    let text = format!(
        "# leading comment\n# another\n{SPLIT_V1ALPHA4}---\n# comment before the object\n\n{SPLIT_V1ALPHA4}--- \n{SPLIT_V1ALPHA4}"
    );
    let m = load(&text);
    assert!(m.errors.is_empty(), "{:#?}", m.errors);
    // 2 comment lines, 11-line object, `---`, comment, blank line, object, `--- `, object.
    assert_eq!(lines(&m), vec![3, 17, 29]);
    assert_eq!(m.objects[1].line_of("spec.backends[1].weight"), 17 + 10);
}

#[test]
fn empty_and_comment_only_documents_are_skipped() {
    let text = format!(
        "---\n# only a comment\n---\n---\n{SPLIT_V1ALPHA4}...\n---\n# trailing comment\n...\n"
    );
    let m = load(&text);
    assert!(m.errors.is_empty(), "{:#?}", m.errors);
    assert!(m.others.is_empty());
    assert_eq!(lines(&m), vec![5]);
    assert!(load("").objects.is_empty() && load("").errors.is_empty());
    assert!(load("# nothing here\n").errors.is_empty());
}

#[test]
fn broken_yaml_is_an_error_at_its_line_and_the_other_documents_still_load() {
    let text = format!(
        "{SPLIT_V1ALPHA4}---\nkind: TrafficSplit\nmetadata: name: x\n---\n{SPLIT_V1ALPHA4}"
    );
    let m = load(&text);
    let e = only_error(&m);
    assert_eq!(e.line, 14, "{e}");
    assert!(e.message.starts_with("invalid yaml: "), "{e}");
    assert_eq!(lines(&m), vec![1, 16]);
}

#[test]
fn unterminated_quote_is_reported_where_it_starts() {
    let m = load(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: \"web\n---\napiVersion: v1\nkind: Pod\n",
    );
    assert_eq!(only_error(&m).line, 4);
    assert_eq!(m.others.len(), 1);
    assert_eq!(m.others[0].kind, "Pod");
}

#[test]
fn lone_carriage_returns_are_line_breaks_everywhere() {
    // Found by fuzzing: YAML (and the parser) counts a lone `\r` as a line break, so the
    // resynchronisation after a broken document must count lines the same way.
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name:\r\r\r    p\n---\nkind: [\n---\n\
                apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n";
    let m = load(text);
    assert_eq!(m.others.iter().map(|o| o.line).collect::<Vec<_>>(), [1, 11]);
    assert!((9..=10).contains(&only_error(&m).line), "{:?}", m.errors);
    assert_eq!(m.others[0].name, "p");
    assert_eq!(m.others[1].line_of("metadata.name"), 14);
}

#[test]
fn an_error_at_the_end_of_the_stream_points_at_the_last_line() {
    assert_eq!(only_error(&load("a: 1\nkind: [\n")).line, 2);
    assert_eq!(only_error(&load("a: 1\nkind: [")).line, 2);
    assert_eq!(only_error(&load("a: 1\r\nkind: [\r\n\r\n")).line, 3);
}

#[test]
fn missing_api_version_or_kind_is_an_error() {
    let m = load("metadata:\n  name: x\n");
    assert_eq!(only_error(&m).message, "missing apiVersion and kind");

    let m = load("# c\napiVersion: split.smi-spec.io/v1alpha4\nmetadata:\n  name: x\n");
    let e = only_error(&m);
    assert_eq!((e.line, e.field.as_deref()), (2, Some("kind")));
    assert_eq!(e.to_string(), "kind: missing");

    let m = load("kind: TrafficSplit\n");
    assert_eq!(only_error(&m).field.as_deref(), Some("apiVersion"));

    let m = load("apiVersion: 3\nkind: Foo\n");
    assert_eq!(
        only_error(&m).to_string(),
        "apiVersion: must be a non-empty string, found a number"
    );
}

#[test]
fn a_document_that_is_not_a_mapping_is_an_error() {
    let m = load("- a\n- b\n");
    assert!(
        only_error(&m).message.contains("found a list"),
        "{:?}",
        m.errors
    );
    let m = load("just text\n");
    assert!(
        only_error(&m).message.contains("found a string"),
        "{:?}",
        m.errors
    );
}

#[test]
fn unknown_version_names_the_served_ones() {
    let text = SPLIT_V1ALPHA4.replace("v1alpha4", "v1alpha9");
    let m = load(&format!("# c\n{text}"));
    let e = only_error(&m);
    assert_eq!(e.line, 2);
    assert_eq!(e.field.as_deref(), Some("apiVersion"));
    assert_eq!(
        e.to_string(),
        "trafficsplit default/web: apiVersion: unknown version \"split.smi-spec.io/v1alpha9\" \
         (served: v1alpha1, v1alpha2, v1alpha3, v1alpha4)"
    );
}

#[test]
fn a_bare_smi_group_names_no_version() {
    let m = load("apiVersion: split.smi-spec.io\nkind: TrafficSplit\nmetadata:\n  name: a\n");
    let e = only_error(&m);
    assert!(e.message.contains("names no version"), "{e}");
    assert_eq!(e.object.as_ref().map(|o| o.name.as_str()), Some("a"));
}

#[test]
fn unknown_kind_in_an_smi_group_is_an_error_with_a_hint() {
    let m = load("apiVersion: split.smi-spec.io/v1alpha4\nkind: Trafficsplit\n");
    let e = only_error(&m);
    assert_eq!((e.line, e.field.as_deref()), (2, Some("kind")));
    assert!(e.message.ends_with("did you mean TrafficSplit?"), "{e}");

    let m = load("apiVersion: split.smi-spec.io/v1alpha4\nkind: TCPRoute\n");
    assert!(
        only_error(&m)
            .message
            .ends_with("TCPRoute is in specs.smi-spec.io"),
        "{:?}",
        m.errors
    );
}

#[test]
fn non_smi_objects_are_passed_through() {
    let text = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  ports:
  - port: 80
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  labels:
    kubernetes.io/service-name: web
endpoints:
- addresses: [10.0.0.1]
";
    let m = load(text);
    assert!(m.errors.is_empty() && m.objects.is_empty(), "{m:#?}");
    let [svc, eps] = &m.others[..] else {
        panic!("{:#?}", m.others)
    };
    assert_eq!(svc.to_string(), "v1/Service shop/web");
    assert_eq!(svc.line, 1);
    assert_eq!(svc.value["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc.line_of("spec.ports[0].port"), 8);
    assert_eq!(
        eps.to_string(),
        "discovery.k8s.io/v1/EndpointSlice default/web-abc"
    );
    assert_eq!(eps.line, 10);
    // Label keys hold dots and slashes; they are matched as whole keys.
    assert_eq!(
        eps.line_of("metadata.labels.kubernetes.io/service-name"),
        15
    );
    assert_eq!(eps.value["endpoints"][0]["addresses"][0], "10.0.0.1");
}

#[test]
fn field_errors_name_the_path_and_its_line() {
    let text = SPLIT_V1ALPHA4.replace("weight: 10", "weight: ten");
    let m = load(&text);
    let e = only_error(&m);
    assert_eq!(e.field.as_deref(), Some("spec.backends[1].weight"));
    assert_eq!(e.line, 11);
    assert_eq!(
        e.object.as_ref().map(ToString::to_string).as_deref(),
        Some("trafficsplit default/web")
    );
}

#[test]
fn missing_required_field_points_at_the_enclosing_element() {
    let text = SPLIT_V1ALPHA4.replace("  - service: web-v2\n    weight: 10\n", "  - weight: 10\n");
    let m = load(&text);
    let e = only_error(&m);
    assert_eq!(e.field.as_deref(), Some("spec.backends[1]"));
    assert_eq!(e.line, 10);
    assert!(e.message.contains("service"), "{e}");
}

#[test]
fn v1alpha1_quantity_weight_that_is_not_a_quantity_is_a_field_error() {
    let text = "\
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata:
  name: canary
  namespace: shop
spec:
  service: web
  backends:
  - service: web-v1
    weight: 500m
  - service: web-v2
    weight: abc
";
    let m = load(text);
    let e = only_error(&m);
    assert_eq!(e.field.as_deref(), Some("spec.backends[1].weight"));
    assert_eq!(e.line, 12);
    assert!(
        e.to_string()
            .starts_with("trafficsplit shop/canary: spec.backends[1].weight: "),
        "{e}"
    );
    assert!(e.message.contains("abc"), "{e}");

    let ok = load(&text.replace("abc", "\"1\""));
    assert!(ok.errors.is_empty(), "{:#?}", ok.errors);
    assert!(matches!(
        ok.objects[0].object,
        VersionedObject::TrafficSplitV1alpha1(_)
    ));
}

#[test]
fn headers_load_as_a_map_and_as_a_list() {
    let list = "\
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: routes
spec:
  matches:
  - name: firefox
    headers:
    - user-agent: .*Firefox.*
    - cookie: type=insider
";
    let map = list.replace(
        "    - user-agent: .*Firefox.*\n    - cookie:",
        "      user-agent: .*Firefox.*\n      cookie:",
    );
    for text in [list, map.as_str()] {
        let m = load(text);
        assert!(m.errors.is_empty(), "{text}\n{:#?}", m.errors);
        let doc = &m.objects[0];
        let crate::SmiObject::HttpRouteGroup(g) = doc.object.clone().into_canonical() else {
            panic!("not a route group")
        };
        let headers: Vec<_> = g.matches[0].headers.iter().collect();
        assert_eq!(
            headers,
            [("user-agent", ".*Firefox.*"), ("cookie", "type=insider")]
        );
        // Either path shape finds the header in either form.
        assert_eq!(doc.line_of("spec.matches[0].headers[1]"), 10, "{text}");
        assert_eq!(doc.line_of("spec.matches[0].headers.cookie"), 10, "{text}");
    }
}

#[test]
fn namespace_defaults_to_default() {
    let m = load(SPLIT_V1ALPHA4);
    assert_eq!(
        m.objects[0].object_ref().to_string(),
        "trafficsplit default/web"
    );
    let m = load("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n");
    assert_eq!(m.others[0].namespace, "default");
}

#[test]
fn a_nameless_smi_object_is_an_error() {
    let m = load(&SPLIT_V1ALPHA4.replace("  name: web\n", "  labels: {}\n"));
    let e = only_error(&m);
    assert_eq!((e.line, e.field.as_deref()), (3, Some("metadata.name")));
    assert!(m.objects.is_empty());
}

#[test]
fn invalid_utf8_is_an_error_at_its_line() {
    let mut bytes = SPLIT_V1ALPHA4.as_bytes().to_vec();
    bytes.extend_from_slice(b"# bad: \xff\xfe\n");
    let m = load_bytes("bad.yaml", &bytes);
    let e = only_error(&m);
    assert_eq!(e.line, 12);
    assert!(e.message.contains("UTF-8"), "{e}");
    assert!(m.objects.is_empty());

    let m = load_bytes("utf16.yaml", b"\xff\xfea\x00:\x00");
    assert!(only_error(&m).message.contains("UTF-16"), "{:?}", m.errors);
}

#[test]
fn a_byte_order_mark_and_crlf_line_ends_are_accepted() {
    let text = format!("\u{feff}{}", SPLIT_V1ALPHA4.replace('\n', "\r\n"));
    let m = load(&text);
    assert!(m.errors.is_empty(), "{:#?}", m.errors);
    assert_eq!(m.objects[0].line_of("spec.backends[1].weight"), 11);
}

#[test]
fn json_files_load_with_lines() {
    let text = "{\n\t\"apiVersion\": \"split.smi-spec.io/v1alpha2\",\n\t\"kind\": \"TrafficSplit\",\n\t\"metadata\": {\"name\": \"j\"},\n\t\"spec\": {\n\t\t\"service\": \"web\",\n\t\t\"backends\": [\n\t\t\t{\"service\": \"a\", \"weight\": \"x\"}\n\t\t]\n\t}\n}\n";
    let m = load_str("x.json", text);
    let e = only_error(&m);
    assert_eq!(
        (e.line, e.field.as_deref()),
        (8, Some("spec.backends[0].weight"))
    );
}

#[test]
fn duplicate_keys_are_an_error() {
    let m = load("apiVersion: v1\nkind: Pod\nkind: Service\n");
    let e = only_error(&m);
    assert_eq!(e.line, 3);
    assert_eq!(e.message, "duplicate key \"kind\"");
}

#[test]
fn anchors_aliases_and_merge_keys_expand() {
    let text = "\
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata:
  name: web
spec:
  service: web
  backends:
  - &base
    service: web-v1
    weight: 1
  - <<: *base
    service: web-v2
";
    let m = load(text);
    assert!(m.errors.is_empty(), "{:#?}", m.errors);
    let v = m.objects[0].object.to_json();
    assert_eq!(
        v["spec"]["backends"][1],
        serde_json::json!({"service": "web-v2", "weight": 1})
    );
}

#[test]
fn alias_bombs_and_deep_nesting_are_errors_not_crashes() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let m = load(&bomb);
    assert!(
        only_error(&m).message.contains("too many nodes"),
        "{:?}",
        m.errors
    );

    // yaml-rust2 has a depth limit of its own; either limit makes this an error.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let m = load(&deep);
    let e = &only_error(&m).message;
    assert!(
        e.contains("nesting") || e.contains("recursion limit"),
        "{e}"
    );
    let deep = format!("a: {}{}", "[".repeat(200), "]".repeat(200));
    assert!(only_error(&load(&deep)).message.contains("nesting"));

    let deep_alias = (1..200).fold(String::from("a0: &a0 [x]\n"), |mut s, i| {
        s.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        s
    });
    assert!(only_error(&load(&deep_alias)).message.contains("nesting"));
}

#[test]
fn lists_are_read_item_by_item() {
    let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: web
- apiVersion: split.smi-spec.io/v1alpha4
  kind: TrafficSplit
  metadata:
    name: web
  spec:
    service: web
    backends: []
";
    let m = load(text);
    assert!(m.errors.is_empty(), "{:#?}", m.errors);
    assert_eq!(m.others[0].line, 4);
    assert_eq!(lines(&m), vec![8]);
}

#[test]
fn every_reference_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/smi-examples");
    let files = find_files(&dir).unwrap();
    assert_eq!(files.len(), 9, "{files:?}");
    let mut counts = BTreeMap::new();
    for f in &files {
        let m = load_file(f).unwrap();
        assert!(m.errors.is_empty(), "{}: {:#?}", f.display(), m.errors);
        assert!(m.others.is_empty());
        for o in &m.objects {
            *counts.entry(o.object.kind().as_str()).or_insert(0) += 1;
        }
    }
    let expected = [
        ("HTTPRouteGroup", 4),
        ("TCPRoute", 4),
        ("TrafficSplit", 4),
        ("TrafficTarget", 4),
        ("UDPRoute", 2),
    ];
    assert_eq!(counts, BTreeMap::from(expected));
}

#[test]
fn problems_are_placed_on_the_line_of_their_field() {
    let m = load(SPLIT_V1ALPHA4);
    let doc = &m.objects[0];
    assert_eq!(doc.line_of("spec.backends[1].weight"), 11);
    assert_eq!(doc.line_of("spec.backends[0]"), 8);
    // A field that is not written falls back to the nearest written parent, then the object.
    assert_eq!(doc.line_of("spec.backends[0].nothing"), 8);
    assert_eq!(doc.line_of("spec.backends[7].weight"), 7);
    assert_eq!(doc.line_of("status.conditions"), 1);
    assert_eq!(doc.line_of(""), 1);
    for p in m.problems() {
        assert_eq!(p.source, "test.yaml");
        assert_eq!(p.line, doc.line_of(&p.item.field));
    }
}

#[test]
fn display_forms() {
    let e = LoadError {
        line: 3,
        object: None,
        field: None,
        message: "invalid yaml: x".into(),
    };
    let located = Located {
        source: "a.yaml".into(),
        line: 3,
        item: &e,
    };
    assert_eq!(located.to_string(), "a.yaml:3: invalid yaml: x");
    let m = load(&SPLIT_V1ALPHA4.replace("weight: 10", "weight: ten"));
    let errors: Vec<String> = m.located_errors().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("test.yaml:11: trafficsplit default/web: spec.backends[1].weight: "),
        "{errors:?}"
    );
}

#[test]
fn find_files_walks_directories_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("b/c")).unwrap();
    for f in [
        "z.yaml",
        "a.yml",
        "notes.txt",
        "b/c/x.json",
        "b/m.YAML",
        "b/skip.md",
    ] {
        std::fs::write(root.join(f), "").unwrap();
    }
    let found: Vec<_> = find_files(root)
        .unwrap()
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert_eq!(found, ["a.yml", "b/c/x.json", "b/m.YAML", "z.yaml"]);
    // A file is taken whatever its name; a missing path is an I/O error.
    assert_eq!(find_files(&root.join("notes.txt")).unwrap().len(), 1);
    assert!(find_files(&root.join("nope")).is_err());
}

#[cfg(unix)]
#[test]
fn find_files_survives_symlink_loops() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    std::fs::write(dir.path().join("d/a.yaml"), "").unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("d/loop")).unwrap();
    assert_eq!(find_files(dir.path()).unwrap().len(), 1);
}

#[test]
fn scalars_resolve_like_yaml_1_2() {
    let m = load(
        "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: 0x1F\n  b: 1e3\n  c: yes\n  d: ~\n  e: \"7\"\n  f: -12\n  g: .inf\n  h: 18446744073709551615\n  i: !!str 5\n  j: 1.\n",
    );
    let d = &m.others[0].value["data"];
    assert_eq!(d["a"], 31);
    assert_eq!(d["b"], 1000.0);
    assert_eq!(d["c"], "yes");
    assert!(d["d"].is_null());
    assert_eq!(d["e"], "7");
    assert_eq!(d["f"], -12);
    assert_eq!(d["g"], ".inf");
    assert_eq!(d["h"], u64::MAX);
    assert_eq!(d["i"], "5");
    assert_eq!(d["j"], 1.0);
}

proptest! {
    #[test]
    fn load_never_panics(text in "(?s).{0,400}") {
        let m = load(&text);
        let lines = 1 + yaml::count_breaks(text.as_bytes());
        prop_assert!(m.errors.iter().all(|e| (1..=lines).contains(&e.line)), "{:?}", m.errors);
        prop_assert!(m.problems().iter().all(|p| (1..=lines).contains(&p.line)));
    }

    #[test]
    fn load_never_panics_on_yamlish_text(
        parts in prop::collection::vec(
            prop::sample::select(vec![
                "---\n", "...\n", "apiVersion: split.smi-spec.io/v1alpha4\n", "kind: TrafficSplit\n",
                "metadata:\n", "  name: a\n", "spec:\n", "  backends:\n", "  - service: b\n",
                "    weight: x\n", "- ", "[", "]", "{", "}", "&a ", "*a", "<<: *a\n", "\"", "'", ": ",
                "\n", "  ", "# c\n", "\t", "|\n", ">-\n", "%YAML 1.2\n", "!!str ", "? ",
            ]),
            0..60,
        )
    ) {
        let text: String = parts.concat();
        let m = load(&text);
        let _ = m.problems();
        let lines = 1 + yaml::count_breaks(text.as_bytes());
        for e in &m.errors {
            prop_assert!(e.line >= 1 && e.line <= lines, "{e:?} in {text:?}");
        }
        for o in &m.objects {
            for p in validate(&o.object) {
                prop_assert!(o.line_of(&p.field) <= lines);
            }
        }
    }
}
