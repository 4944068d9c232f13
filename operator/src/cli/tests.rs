//! Tests of argument parsing and the subcommand glue.

use std::path::Path;

use clap::{CommandFactory, Parser, error::ErrorKind};
use switchyard_adapters::model::DataPlane;

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("switchyard").chain(args.iter().copied()))
}

#[test]
fn the_command_line_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn validate_takes_paths_after_f_or_filename() {
    let paths = |args: &[&str]| match parse(args).unwrap().command {
        Command::Validate(a) => a.paths,
        other => panic!("{other:?}"),
    };
    let expected: Vec<PathBuf> = ["a.yaml", "dir", "-"].iter().map(PathBuf::from).collect();
    assert_eq!(paths(&["validate", "-f", "a.yaml", "dir", "-"]), expected);
    assert_eq!(
        paths(&["validate", "-f", "a.yaml", "--filename", "dir", "-f", "-"]),
        expected
    );
    assert_eq!(
        paths(&["validate", "--filename=a.yaml", "-fdir", "-f-"]),
        expected
    );
}

#[test]
fn usage_errors_exit_with_status_2() {
    for args in [
        &["validate"][..],
        &["validate", "-f"],
        &["nope"],
        &[],
        &["crds", "--bogus"],
    ] {
        let e = parse(args).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
    }
    assert_eq!(
        parse(&["--help"]).unwrap_err().kind(),
        ErrorKind::DisplayHelp
    );
}

#[test]
fn validate_outcome_follows_the_report() {
    let run_on = |stdin: &str| {
        let cli = parse(&["validate", "-f", "-"]).unwrap();
        let mut out = Vec::new();
        run(cli, &mut stdin.as_bytes(), &mut out).unwrap()
    };
    assert_eq!(
        run_on("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n"),
        Outcome::Success
    );
    assert_eq!(run_on("kind: [\n"), Outcome::Invalid);
    assert_eq!(Outcome::Invalid.code(), 1);
}

#[test]
fn crds_writes_files_into_the_out_directory() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("nested/crds");
    let cli = parse(&["crds", "--out", target.to_str().unwrap()]).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        run(cli, &mut std::io::empty(), &mut out).unwrap(),
        Outcome::Success
    );
    let out = String::from_utf8(out).unwrap();
    for line in out.lines() {
        let path = line.strip_prefix("wrote ").unwrap();
        assert!(Path::new(path).is_file(), "{path}");
    }
    assert!(target.is_dir());
}

#[test]
fn crds_without_out_prints_every_crd_as_one_stream() {
    let cli = parse(&["crds"]).unwrap();
    let mut out = Vec::new();
    run(cli, &mut std::io::empty(), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    let rendered = switchyard_crds::crdgen::render();
    assert_eq!(
        out.matches("\n---\n").count() + usize::from(out.starts_with("---\n")),
        rendered.len().saturating_sub(1)
    );
    // Whatever is printed is one valid multi-document stream.
    let m = switchyard_crds::manifest::load_str("crds", &out);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    assert_eq!(m.others.len(), rendered.len());
}

#[test]
fn compile_prints_the_proxy_resources_as_proto_json() {
    let canary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/canary");
    let cli = parse(&[
        "compile",
        "-f",
        canary.to_str().unwrap(),
        "--proxy",
        "demo/client-0",
    ])
    .unwrap();
    let mut out = Vec::new();
    assert_eq!(
        run(cli, &mut std::io::empty(), &mut out).unwrap(),
        Outcome::Success
    );
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["proxy"], "demo/client-0");
    assert_eq!(doc["warnings"], serde_json::json!([]));
    let resources = doc["resources"].as_array().unwrap();
    for r in resources {
        // Each body is the decoded message, tagged like an Any in Envoy's /config_dump.
        assert_eq!(r["resource"]["@type"], r["typeUrl"], "{r:#}");
        assert!(r["resource"].get("error").is_none(), "{r:#}");
    }
    let listener = resources
        .iter()
        .find(|r| {
            r["name"] == "outbound_http" && r["typeUrl"].as_str().unwrap().ends_with("Listener")
        })
        .unwrap();
    assert_eq!(
        listener["resource"]["address"]["socketAddress"],
        serde_json::json!({ "address": "127.0.1.1", "portValue": 15001 })
    );
}

#[test]
fn data_plane_flag_defaults_to_envoy() {
    let mesh = |args: &[&str]| match parse(args).unwrap().command {
        Command::Compile(a) => a.mesh,
        other => panic!("{other:?}"),
    };
    let base = ["compile", "-f", "dir", "--proxy", "demo/client-0"];
    assert_eq!(mesh(&base).settings().data_plane, DataPlane::Envoy);
    let bundled: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--data-plane", "bundled"])
        .collect();
    assert_eq!(mesh(&bundled).settings().data_plane, DataPlane::Bundled);
    let bad: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--data-plane", "nginx"])
        .collect();
    assert_eq!(parse(&bad).unwrap_err().kind(), ErrorKind::InvalidValue);
    match parse(&["local", "dir", "--data-plane", "bundled"])
        .unwrap()
        .command
    {
        Command::Local(a) => assert_eq!(a.mesh.settings().data_plane, DataPlane::Bundled),
        other => panic!("{other:?}"),
    }
}

#[test]
fn listener_policy_flags_default_to_the_models_defaults() {
    use switchyard_adapters::model::ListenerPolicy;
    let policy = |extra: &[&str]| {
        let args: Vec<&str> = ["compile", "-f", "dir", "--proxy", "demo/client-0"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        match parse(&args).unwrap().command {
            Command::Compile(a) => a.mesh.settings().listener_policy,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(policy(&[]), ListenerPolicy::default());
    let set = policy(&[
        "--request-headers-timeout",
        "2s",
        "--http-idle-timeout",
        "0s",
        "--stream-idle-timeout",
        "1m",
        "--tcp-idle-timeout",
        "3s",
        "--max-connections",
        "0",
    ]);
    assert_eq!(
        set,
        ListenerPolicy {
            request_headers_timeout: std::time::Duration::from_secs(2),
            http_idle_timeout: std::time::Duration::ZERO,
            stream_idle_timeout: std::time::Duration::from_secs(60),
            tcp_idle_timeout: std::time::Duration::from_secs(3),
            max_connections: None,
        }
    );
    assert_eq!(
        policy(&["--max-connections", "7"]).max_connections,
        std::num::NonZeroU32::new(7)
    );
    // The help shows the defaults in the units they were chosen in.
    let mut cli = Cli::command();
    let help = cli
        .find_subcommand_mut("compile")
        .unwrap()
        .render_long_help()
        .to_string();
    for default in [
        "[default: 10s]",
        "[default: 5m]",
        "[default: 1h]",
        "[default: 4096]",
    ] {
        assert!(help.contains(default), "{default} in {help}");
    }
}

/// `switchyard compile` on the canary example, with extra arguments, as JSON.
fn compile_canary(pod: &str, extra: &[&str], annotate: Option<&str>) -> serde_json::Value {
    let canary = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/canary");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&canary).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let mut text = std::fs::read_to_string(&path).unwrap();
        if let Some(value) = annotate {
            let plain = "metadata: {name: client-0, namespace: demo, labels: {app: client}}";
            text = text.replace(
                plain,
                &format!(
                    "metadata: {{name: client-0, namespace: demo, labels: {{app: client}}, \
                     annotations: {{switchyard.dev/data-plane: {value}}}}}"
                ),
            );
        }
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let mut args = vec![
        "compile",
        "-f",
        dir.path().to_str().unwrap(),
        "--proxy",
        pod,
    ];
    args.extend_from_slice(extra);
    let mut out = Vec::new();
    assert_eq!(
        run(parse(&args).unwrap(), &mut std::io::empty(), &mut out).unwrap(),
        Outcome::Success
    );
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn compile_names_the_data_plane_from_the_flag_or_the_annotation() {
    let envoy = compile_canary("demo/client-0", &[], None);
    assert_eq!(envoy["dataPlane"], "envoy");
    let flag = compile_canary("demo/client-0", &["--data-plane", "bundled"], None);
    assert_eq!(flag["dataPlane"], "bundled");
    // The canary mesh is inside the bundled subset: the same resources, no warnings.
    assert_eq!(flag["resources"], envoy["resources"]);
    assert_eq!(flag["warnings"], serde_json::json!([]));

    let annotated = compile_canary("demo/client-0", &[], Some("bundled"));
    assert_eq!(annotated["dataPlane"], "bundled");
    let overridden = compile_canary("demo/client-0", &["--data-plane", "bundled"], Some("envoy"));
    assert_eq!(overridden["dataPlane"], "envoy");
}

#[test]
fn compile_reports_an_invalid_data_plane_annotation() {
    let doc = compile_canary(
        "demo/client-0",
        &["--data-plane", "bundled"],
        Some("proxyless"),
    );
    assert_eq!(doc["dataPlane"], "bundled", "the mesh setting applies");
    assert_eq!(
        doc["warnings"],
        serde_json::json!([
            "pod demo/client-0: metadata.annotations[\"switchyard.dev/data-plane\"]: \
             \"proxyless\" is not a data plane (envoy or bundled); the mesh setting (bundled) \
             applies"
        ])
    );
}

#[test]
fn error_text_says_each_cause_once() {
    // Like kube's `ReadConfig`: the message repeats its source's text.
    #[derive(Debug, thiserror::Error)]
    #[error("failed to read kubeconfig: {0}")]
    struct Read(#[source] std::io::Error);

    let e = anyhow::Error::from(Read(std::io::Error::from_raw_os_error(2))).context("reading");
    assert_eq!(format!("{e:#}").matches("No such file").count(), 2);
    assert_eq!(
        error_text(e.as_ref()),
        "reading: failed to read kubeconfig: No such file or directory (os error 2)"
    );
    // Causes with text of their own are kept.
    let e = anyhow::anyhow!("inner").context("outer");
    assert_eq!(error_text(e.as_ref()), "outer: inner");
}

#[test]
fn the_controller_injects_the_images_and_control_plane_its_flags_name() {
    let inject = |args: &[&str]| match parse(args).unwrap().command {
        Command::Controller(a) => a
            .inject
            .config(&a.namespace, DataPlane::Bundled, "aud")
            .unwrap(),
        other => panic!("{other:?}"),
    };
    let version = env!("CARGO_PKG_VERSION");
    let defaults = inject(&["controller", "--namespace", "mesh"]);
    assert_eq!(
        defaults.images.init,
        format!("localhost/switchyard:{version}")
    );
    assert_eq!(
        defaults.images.bundled,
        format!("localhost/switchyard-proxy:{version}")
    );
    assert_eq!(
        defaults.images.envoy,
        format!("localhost/switchyard-envoy:{version}")
    );
    assert_eq!(defaults.xds_host, "switchyard.mesh.svc");
    assert_eq!(defaults.xds_port, 15010);
    assert_eq!(defaults.operator_namespace, "mesh");
    assert_eq!(defaults.default_data_plane, DataPlane::Bundled);
    assert_eq!(defaults.audience, "aud");

    let set = inject(&[
        "controller",
        "--proxy-image",
        "r/p:1",
        "--envoy-image",
        "r/e:1",
        "--init-image",
        "r/i:1",
        "--xds-host",
        "xds.example",
        "--xds-port",
        "18000",
    ]);
    assert_eq!(
        (
            set.images.bundled.as_str(),
            set.images.envoy.as_str(),
            set.images.init.as_str()
        ),
        ("r/p:1", "r/e:1", "r/i:1")
    );
    assert_eq!(
        (set.xds_host.as_str(), set.xds_port),
        ("xds.example", 18000)
    );
}

#[test]
fn tap_in_a_cluster_reads_the_tap_api_as_the_user_given() {
    let Command::Tap(args) = parse(&[
        "tap",
        "pod/web-0",
        "-n",
        "demo",
        "--method",
        "get",
        "--path",
        "/a b",
        "--max-rps",
        "5",
        "--as",
        "someone",
    ])
    .unwrap()
    .command
    else {
        panic!("not tap");
    };
    assert_eq!(
        args.select.control_plane.as_user.as_deref(),
        Some("someone")
    );
    let filter = args.select.filter().unwrap();
    assert_eq!(
        tap::api_path(&filter),
        "/apis/tap.switchyard.dev/v1alpha1/watch/namespaces/demo/pods/web-0/tap?max_rps=5&method=get&path=%2Fa%20b"
    );
    // Local mode keeps the admin path, with the same filter.
    assert_eq!(
        tap::path(&filter),
        "/tap?namespace=demo&max_rps=5&pod=web%2D0&method=get&path=%2Fa%20b"
    );
    let Command::Tap(args) = parse(&["tap", "-n", "demo"]).unwrap().command else {
        panic!("not tap");
    };
    assert_eq!(
        tap::api_path(&args.select.filter().unwrap()),
        "/apis/tap.switchyard.dev/v1alpha1/watch/namespaces/demo/tap?max_rps=100"
    );
    let Command::Tap(args) = parse(&["tap", "svc/web"]).unwrap().command else {
        panic!("not tap");
    };
    assert!(args.select.filter().is_err());
}
