use clap::Parser as _;
use serde::Deserialize as _;

use super::*;
use crate::cli::{Cli, Command};
use crate::json_lookup::named;

/// `switchyard inject ARGS` on `stdin`: (report, stdout, stderr).
const XDS_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// `switchyard inject ARGS --xds-ca-file <a CA>` on `stdin`.
fn inject(args: &[&str], stdin: &str) -> (Report, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("xds-ca.crt");
    fs::write(&ca, XDS_CA).unwrap();
    let ca = ca.to_str().unwrap();
    let with_ca: Vec<&str> = args.iter().copied().chain(["--xds-ca-file", ca]).collect();
    inject_as_given(&with_ca, stdin)
}

fn inject_as_given(args: &[&str], stdin: &str) -> (Report, String, String) {
    let cli = Cli::try_parse_from(["switchyard", "inject"].iter().chain(args)).unwrap();
    let Command::Inject(args) = cli.command else {
        panic!("not inject")
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let report = run(&args, &mut stdin.as_bytes(), &mut out, &mut err).unwrap();
    (
        report,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn the_xds_ca_goes_to_switchyard_init_and_its_absence_is_warned_about() {
    let (report, out, _) = inject(&["-f", "-"], MIXED);
    assert_eq!(report.injected, 1);
    let docs = docs(&out);
    let init = docs
        .iter()
        .find_map(|d| d["spec"]["template"]["spec"]["initContainers"].get(0))
        .unwrap();
    let ca = named(&init["env"], "SWITCHYARD_XDS_CA");
    assert_eq!(ca["value"], XDS_CA);

    let (report, _, err) = inject_as_given(&["-f", "-"], MIXED);
    assert_eq!(report.injected, 1);
    assert!(err.starts_with("warning: no --xds-ca-file"), "{err}");
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .collect()
}

fn init_names(template: &Value) -> Vec<&str> {
    template["spec"]["initContainers"]
        .as_array()
        .map(|cs| cs.iter().map(|c| c["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

const MIXED: &str = "\
# a Service, kept as written
apiVersion: v1
kind: Service
metadata: {name: web}   # trailing comment
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers: [{name: app, image: app:1}]
---
# only a comment: an empty document
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: '@daily'
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {switchyard.dev/inject: disabled}
        spec:
          restartPolicy: Never
          containers: [{name: c, image: c:1}]
";

#[test]
fn workloads_are_injected_and_everything_else_is_printed_as_written() {
    let (report, out, err) = inject(&["-f", "-"], MIXED);
    assert_eq!(
        report,
        Report {
            injected: 1,
            skipped: 1,
            errors: 0
        }
    );
    assert_eq!(
        err,
        "<stdin>:7: deployment demo/web: injected (envoy)\n\
         <stdin>:20: cronjob nightly: not injected: the pod is annotated \
         switchyard.dev/inject=disabled\n\
         injected 1 of 2 pod templates\n"
    );
    // The Service and the CronJob byte for byte, comments included.
    assert!(out.starts_with(
        "# a Service, kept as written\napiVersion: v1\nkind: Service\n\
         metadata: {name: web}   # trailing comment\nspec: {ports: [{port: 80}]}\n---\n"
    ));
    assert!(
        out.ends_with("          containers: [{name: c, image: c:1}]\n"),
        "{out}"
    );
    let objects = docs(&out);
    assert_eq!(objects.len(), 3);
    let template = &objects[1]["spec"]["template"];
    assert_eq!(
        init_names(template),
        ["switchyard-init", "switchyard-proxy"]
    );
    assert_eq!(
        template["metadata"]["annotations"]["switchyard.dev/data-plane"],
        "envoy"
    );
    assert_eq!(template["metadata"]["labels"]["app"], "web");
    assert!(init_names(&objects[2]["spec"]["jobTemplate"]["spec"]["template"]).is_empty());

    // Again on its own output: nothing more to do, and the same text.
    let (report, again, err) = inject(&["-f", "-"], &out);
    assert_eq!(report.injected, 0);
    assert!(
        err.contains("not injected: the pod already has a Switchyard proxy"),
        "{err}"
    );
    assert_eq!(docs(&again), objects);
}

#[test]
fn every_kind_with_a_pod_template_is_injected_where_its_template_is() {
    let template = "{metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}";
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{containers: [{{name: c, image: i}}]}}\n\
         ---\napiVersion: v1\nkind: ReplicationController\nmetadata: {{name: rc}}\nspec: {{template: {template}}}\n\
         ---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: ss}}\nspec: {{template: {template}}}\n\
         ---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: ds}}\nspec: {{template: {template}}}\n\
         ---\napiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: rs}}\nspec: {{template: {template}}}\n\
         ---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: j}}\nspec: {{template: {template}}}\n\
         ---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: cj}}\n\
         spec: {{schedule: '@daily', jobTemplate: {{spec: {{template: {template}}}}}}}\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm}}\ndata: {{a: b}}\n"
    );
    let (report, out, _) = inject(&["-f", "-", "--data-plane", "bundled"], &yaml);
    assert_eq!(report.injected, 7);
    let objects = docs(&out);
    assert_eq!(init_names(&objects[0]).len(), 2, "pod");
    for o in &objects[1..6] {
        assert_eq!(init_names(&o["spec"]["template"]).len(), 2, "{}", o["kind"]);
    }
    let cron = &objects[6]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(init_names(cron), ["switchyard-init", "switchyard-proxy"]);
    assert_eq!(
        cron["metadata"]["annotations"]["switchyard.dev/data-plane"],
        "bundled"
    );
    assert_eq!(
        objects[7],
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "b"},
        })
    );
}

#[test]
fn a_list_stays_a_list_with_its_workloads_injected() {
    let yaml = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"},
   "spec": {"template": {"metadata": {"annotations": {"switchyard.dev/data-plane": "bundled"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}}}},
  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}
]}"#;
    let (report, out, err) = inject(&["-f", "-"], yaml);
    assert_eq!(report.injected, 1, "{err}");
    let list = &docs(&out)[0];
    assert_eq!(list["kind"], "List");
    let template = &list["items"][0]["spec"]["template"];
    assert_eq!(init_names(template).len(), 2);
    assert!(
        template["spec"]["initContainers"][1]["image"]
            .as_str()
            .unwrap()
            .contains("switchyard-proxy")
    );
    assert_eq!(list["items"][1]["kind"], "ConfigMap");
}

#[test]
fn errors_name_file_and_line_and_nothing_is_printed() {
    let yaml = "\
apiVersion: v1
kind: Service
metadata: {name: web}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  template:
    metadata:
      annotations:
        switchyard.dev/inject: 'yes'
    spec:
      containers: [{name: app, image: app:1}]
";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yaml");
    fs::write(&path, yaml).unwrap();
    let file = path.to_str().unwrap();
    let (report, out, err) = inject(&["-f", file], "");
    assert_eq!(report.errors, 1);
    assert_eq!(out, "", "nothing is printed when anything is wrong");
    assert_eq!(
        err.lines().next().unwrap(),
        format!(
            r#"{file}:12: deployment demo/web: spec.template.metadata.annotations["switchyard.dev/inject"]: "yes" is not enabled or disabled"#
        )
    );
    assert!(
        err.ends_with("injected 0 of 0 pod templates; 1 error, nothing printed\n"),
        "{err}"
    );

    let (report, out, err) = inject(
        &["-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p\n",
    );
    assert_eq!((report.errors, out.as_str()), (1, ""));
    assert!(err.starts_with("<stdin>:"), "{err}");
    let (report, _, err) = inject(&["-f", "-"], "a: 1\n---\n- just\n- a list\n");
    assert_eq!(report.errors, 2, "{err}");
    assert!(err.starts_with(
        "<stdin>:1: expected a Kubernetes object (a mapping with apiVersion and kind)\n"
    ));
    let (report, _, err) = inject(
        &["-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    metadata: {}\n",
    );
    assert_eq!(report.errors, 1);
    // The nearest written field: `template:`.
    assert!(
        err.contains("<stdin>:5: deployment d: spec.template.spec: missing"),
        "{err}"
    );
    let (report, _, err) = inject(&["-f", "/nonexistent/x.yaml"], "");
    assert_eq!(report.errors, 1);
    assert!(err.starts_with("/nonexistent/x.yaml: error: "), "{err}");
}

#[test]
fn exempt_namespaces_and_host_network_are_reported_and_left_alone() {
    let yaml = "\
apiVersion: v1
kind: Pod
metadata: {name: dns, namespace: kube-system}
spec: {containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: agent}
spec: {hostNetwork: true, containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: op, namespace: mesh}
spec: {containers: [{name: c, image: i}]}
";
    let (report, out, err) = inject(&["-f", "-", "--operator-namespace", "mesh"], yaml);
    assert_eq!((report.injected, report.skipped), (0, 3), "{err}");
    assert_eq!(out, yaml);
    assert!(err.contains("<stdin>:1: pod kube-system/dns: not injected: namespace kube-system"));
    assert!(err.contains("<stdin>:6: pod agent: not injected: the pod uses the host's network"));
    assert!(err.contains("<stdin>:11: pod mesh/op: not injected: namespace mesh runs"));
}

#[test]
fn documents_split_at_marker_lines_and_keep_their_lines() {
    let docs = documents("a: 1\n---\n\n# c\nb: 2\n--- {c: 3}\n---\n...\n");
    assert_eq!(
        docs,
        [
            Document {
                line: 1,
                text: "a: 1\n".into()
            },
            Document {
                line: 3,
                text: "\n# c\nb: 2\n".into()
            },
            Document {
                line: 6,
                text: "    {c: 3}\n".into()
            },
        ]
    );
    assert_eq!(
        field_path(r#"metadata.annotations["a.b/c"]"#),
        "metadata.annotations.a.b/c"
    );
}
