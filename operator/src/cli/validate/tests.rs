//! Tests of `switchyard validate`, driven through `run` with in-memory stdin and stdout.

use std::path::{Path, PathBuf};

use super::*;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/smi-examples")
}

/// Runs validate over `paths` with `stdin`; returns the report and everything written.
fn validate(paths: &[&Path], stdin: &str) -> (Report, String) {
    let args = Args {
        paths: paths.iter().map(|p| p.to_path_buf()).collect(),
    };
    let mut out = Vec::new();
    let report = run(&args, &mut stdin.as_bytes(), &mut out).unwrap();
    (report, String::from_utf8(out).unwrap())
}

const SPLIT: &str = "\
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata:
  name: web
spec:
  service: web
  backends:
  - service: web-v1
    weight: 90
";

#[test]
fn the_reference_examples_are_valid() {
    let (report, out) = validate(&[&examples()], "");
    assert!(report.is_valid(), "{out}");
    assert_eq!(report.files, 9);
    assert_eq!(
        out.lines().last().unwrap(),
        "read 18 SMI objects (TrafficSplit: 4, TrafficTarget: 4, HTTPRouteGroup: 4, TCPRoute: 4, \
         UDPRoute: 2) from 9 files; 0 errors"
    );
}

#[test]
fn broken_yaml_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, format!("{SPLIT}---\napiVersion: v1\nkind: a: b\n")).unwrap();
    let (report, out) = validate(&[dir.path()], "");
    assert!(!report.is_valid());
    assert_eq!(report.errors, 1);
    assert_eq!(report.objects.get(&Kind::TrafficSplit), Some(&1));
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("{}:12: invalid yaml: ", file.display())),
        "{out}"
    );
    assert!(out.ends_with("from 1 file; 1 error\n"), "{out}");
}

#[test]
fn field_errors_name_the_object_and_field() {
    let (report, out) = validate(
        &[Path::new("-")],
        &SPLIT.replace("weight: 90", "weight: ninety"),
    );
    assert_eq!(report.errors, 1);
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("<stdin>:9: trafficsplit default/web: spec.backends[0].weight: "),
        "{out}"
    );
}

#[test]
fn stdin_is_read_for_a_dash() {
    let (report, out) = validate(&[Path::new("-")], SPLIT);
    assert!(report.is_valid(), "{out}");
    assert_eq!(
        out,
        "read 1 SMI object (TrafficSplit: 1) from 1 file; 0 errors\n"
    );
}

#[test]
fn non_smi_objects_are_passed_over_with_a_note() {
    let text = format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n---\n{SPLIT}");
    let (report, out) = validate(&[Path::new("-")], &text);
    assert!(report.is_valid(), "{out}");
    assert_eq!(report.skipped, 1);
    assert_eq!(
        out,
        "<stdin>:1: note: v1/Service default/web is not an SMI object; skipped\n\
         read 1 SMI object (TrafficSplit: 1) from 1 file, skipped 1 non-SMI object; 0 errors\n"
    );
}

#[test]
fn a_missing_path_is_an_error_and_the_others_are_still_read() {
    let (report, out) = validate(&[Path::new("/nonexistent/x.yaml"), Path::new("-")], SPLIT);
    assert!(!report.is_valid());
    assert_eq!(report.files, 1);
    assert!(
        out.starts_with("/nonexistent/x.yaml: error: no such file or directory\n"),
        "{out}"
    );
}

#[test]
fn findings_are_in_file_then_line_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.yaml"), "kind: X\n---\na: b: c\n").unwrap();
    std::fs::write(
        dir.path().join("a.yml"),
        format!("{SPLIT}---\napiVersion: v1\nkind: Pod\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("ignored.txt"), "not yaml: [").unwrap();
    let (report, out) = validate(&[dir.path()], "");
    let d = dir.path().display();
    let lines: Vec<&str> = out.lines().map(|l| l.split(": ").next().unwrap()).collect();
    assert_eq!(
        lines,
        [
            format!("{d}/a.yml:11"),
            format!("{d}/b.yaml:1"),
            format!("{d}/b.yaml:3"),
            "read 1 SMI object (TrafficSplit".into()
        ]
    );
    assert_eq!((report.files, report.errors, report.skipped), (2, 2, 1));
}

#[test]
fn an_empty_directory_is_noted() {
    let dir = tempfile::tempdir().unwrap();
    let (report, out) = validate(&[dir.path()], "");
    assert!(report.is_valid());
    assert!(out.contains("note: no *.yaml"), "{out}");
    assert!(
        out.ends_with("read 0 SMI objects from 0 files; 0 errors\n"),
        "{out}"
    );
}

#[test]
fn summary_counts_warnings_and_plurals() {
    let report = Report {
        files: 1,
        objects: [(Kind::TcpRoute, 1)].into_iter().collect(),
        skipped: 2,
        errors: 1,
        warnings: 2,
    };
    assert_eq!(
        report.to_string(),
        "read 1 SMI object (TCPRoute: 1) from 1 file, skipped 2 non-SMI objects; 1 error, 2 warnings"
    );
    assert!(!report.is_valid());
    assert!(
        Report {
            warnings: 3,
            ..Report::default()
        }
        .is_valid()
    );
}
