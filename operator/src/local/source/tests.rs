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
    let scan = src.scan();
    assert!(scan.changed);
    assert!(scan.reports.is_empty(), "{:?}", scan.reports);
    src.feed(&mut index);
    assert!(routed_to_v2(&index));

    // Nothing changed: nothing to do.
    assert!(!src.scan().changed);

    // A broken edit is reported with file:line and changes nothing.
    std::fs::write(
        dir.path().join("split.yaml"),
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: s\n",
    )
    .unwrap();
    let scan = src.scan();
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
    let scan = src.scan();
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
    assert!(src.scan().changed);
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
    let scan = src.scan();
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
    assert_eq!(src.scan().reports.len(), 1);
    src.feed(&mut index);
    assert!(routed_to_v2(&index));
}
