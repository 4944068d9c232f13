use switchyard_adapters::model::{AccessMode, MeshSettings, ProxyId, ServiceName};

use super::*;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: demo}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v2, namespace: demo, labels: {kubernetes.io/service-name: web-v2}}
addressType: IPv4
ports: [{name: http, port: 18082}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo}
spec: {containers: [{name: c}]}
"#;

fn split(weight: &str) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: s, namespace: demo}}\nspec:\n  service: web\n  backends: [{{service: web-v2, weight: {weight}}}]\n"
    )
}

fn routed_to_v2(index: &Index) -> bool {
    let cfg = index
        .proxy_config(&ProxyId {
            namespace: "demo".into(),
            pod: "client".into(),
        })
        .unwrap();
    let web = &cfg.outbound[&ServiceName::new("demo", "web")];
    web.ports[0].routes.last().unwrap().backends[0]
        .cluster
        .as_str()
        == "demo/web-v2|80"
}

#[test]
fn edits_apply_and_broken_files_keep_their_last_good_state() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    std::fs::write(dir.path().join("split.yaml"), split("1")).unwrap();
    std::fs::create_dir(dir.path().join(".switchyard")).unwrap();
    std::fs::write(dir.path().join(".switchyard/ignored.yaml"), "not: [yaml").unwrap();

    let mut src = DirSource::new(dir.path());
    let mut index = Index::new(MeshSettings {
        access_mode: AccessMode::Permissive,
        ..Default::default()
    });
    let scan = src.scan().unwrap();
    assert!(scan.changed);
    assert!(scan.reports.is_empty(), "{:?}", scan.reports);
    src.feed(&mut index);
    assert!(routed_to_v2(&index));

    // Nothing changed: nothing to do.
    assert!(!src.scan().unwrap().changed);

    // A broken edit is reported with file:line and changes nothing.
    std::fs::write(
        dir.path().join("split.yaml"),
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: s\n",
    )
    .unwrap();
    let scan = src.scan().unwrap();
    assert!(!scan.changed);
    assert!(
        scan.reports.iter().any(|r| r.contains("split.yaml:")),
        "{:?}",
        scan.reports
    );
    src.feed(&mut index);
    assert!(routed_to_v2(&index), "the last good split stays in force");

    // An invalid (but readable) edit reaches the index, which keeps the last valid version.
    std::fs::write(dir.path().join("split.yaml"), split("-1")).unwrap();
    let scan = src.scan().unwrap();
    assert!(
        scan.reports
            .iter()
            .any(|r| r.contains("spec.backends[0].weight: must be ≥ 0")),
        "{:?}",
        scan.reports
    );
    src.feed(&mut index);
    assert!(routed_to_v2(&index));

    // Deleting the file removes the split.
    std::fs::remove_file(dir.path().join("split.yaml")).unwrap();
    assert!(src.scan().unwrap().changed);
    src.feed(&mut index);
    assert!(!routed_to_v2(&index));
}

#[test]
fn a_duplicate_definition_is_reported_and_the_first_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    std::fs::write(dir.path().join("a-split.yaml"), split("1")).unwrap();
    // The same TrafficSplit again, pointing nowhere: it must not take effect.
    std::fs::write(
        dir.path().join("b-split.yaml"),
        split("1").replace("web-v2", "nope"),
    )
    .unwrap();

    let mut src = DirSource::new(dir.path());
    let mut index = Index::new(MeshSettings {
        access_mode: AccessMode::Permissive,
        ..Default::default()
    });
    let scan = src.scan().unwrap();
    let b = dir.path().join("b-split.yaml");
    let a = dir.path().join("a-split.yaml");
    assert_eq!(
        scan.reports,
        [format!(
            "{}: trafficsplit demo/s: also defined in {}; this definition is ignored",
            b.display(),
            a.display()
        )]
    );
    src.feed(&mut index);
    assert!(routed_to_v2(&index), "the first definition is served");

    // Editing the ignored copy changes nothing either.
    std::fs::write(&b, split("1").replace("web-v2", "other")).unwrap();
    assert_eq!(src.scan().unwrap().reports.len(), 1);
    src.feed(&mut index);
    assert!(routed_to_v2(&index));
}

#[test]
fn a_missing_directory_at_start_is_an_error_named_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = DirSource::new(&missing).scan().unwrap_err();
    assert_eq!(
        err,
        Unreadable {
            path: missing.clone(),
            reason: "No such file or directory".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read: No such file or directory",
            missing.display()
        )
    );
}

/// A socket named like a manifest: no one, root included, can read a manifest from it.
#[cfg(unix)]
fn socket(path: &Path) -> std::os::unix::net::UnixListener {
    std::os::unix::net::UnixListener::bind(path).unwrap()
}

#[cfg(unix)]
#[test]
fn a_file_that_cannot_be_read_at_start_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    let _socket = socket(&dir.path().join("split.yaml"));
    let err = DirSource::new(dir.path()).scan().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read: not a regular file",
            dir.path().join("split.yaml").display()
        )
    );
}

#[cfg(unix)]
#[test]
fn after_start_an_unreadable_path_is_reported_once_and_its_last_good_version_stays() {
    let dir = tempfile::tempdir().unwrap();
    let split_path = dir.path().join("split.yaml");
    std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
    std::fs::write(&split_path, split("1")).unwrap();
    let mut src = DirSource::new(dir.path());
    let mut index = Index::new(MeshSettings {
        access_mode: AccessMode::Permissive,
        ..Default::default()
    });
    assert!(src.scan().unwrap().reports.is_empty());
    src.feed(&mut index);
    assert!(routed_to_v2(&index));

    std::fs::remove_file(&split_path).unwrap();
    let listener = socket(&split_path);
    let scan = src.scan().unwrap();
    assert_eq!(
        scan.reports,
        [format!(
            "{}: cannot read: not a regular file; its last good version stays in force",
            split_path.display()
        )]
    );
    assert!(!scan.changed);
    assert!(src.scan().unwrap().reports.is_empty(), "reported once");
    src.feed(&mut index);
    assert!(routed_to_v2(&index));

    // Readable again: read, and a later failure is reported again.
    drop(listener);
    std::fs::remove_file(&split_path).unwrap();
    std::fs::write(&split_path, split("2")).unwrap();
    let scan = src.scan().unwrap();
    assert!(
        scan.changed && scan.reports.is_empty(),
        "{:?}",
        scan.reports
    );
    std::fs::remove_file(&split_path).unwrap();
    let _listener = socket(&split_path);
    assert_eq!(src.scan().unwrap().reports.len(), 1);

    // The directory itself gone: reported once, and what was read stays.
    let root = dir.path().to_path_buf();
    let moved = tempfile::tempdir().unwrap();
    std::fs::rename(&root, moved.path().join("gone")).unwrap();
    let scan = src.scan().unwrap();
    assert_eq!(
        scan.reports,
        [format!(
            "{}: cannot read: No such file or directory; the files read before stay in force",
            root.display()
        )]
    );
    assert!(src.scan().unwrap().reports.is_empty(), "reported once");
    src.feed(&mut index);
    assert!(routed_to_v2(&index));
    std::fs::rename(moved.path().join("gone"), &root).unwrap();
}

#[test]
fn io_reasons_drop_the_error_number() {
    let e = std::io::Error::from_raw_os_error(13);
    assert_eq!(e.to_string(), "Permission denied (os error 13)");
    assert_eq!(io_reason(&e), "Permission denied");
    assert_eq!(
        io_reason(&std::io::Error::other("not a file")),
        "not a file"
    );
}
