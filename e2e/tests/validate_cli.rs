//! `switchyard validate` as a real process: exit codes, report lines, stdin, passthrough notes;
//! and how other commands fail at start: `local` on a path it cannot read, `check` and
//! `controller` without a cluster.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the failure report"
)]

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use switchyard_e2e::switchyard_bin;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn switchyard(args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(switchyard_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Writing may fail if the process exits without reading stdin; its output says why.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs `cmd` with no stdin to its end; the test fails if it is still running after `limit`.
fn run_within(cmd: &mut Command, limit: Duration) -> Run {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

const SPLIT: &str = "\
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata:
  name: web
  namespace: shop
spec:
  service: web
  backends:
  - service: web-v1
    weight: 90
  - service: web-v2
    weight: 10
";

#[test]
fn the_reference_examples_are_valid() {
    let examples =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/smi-examples");
    let run = switchyard(&["validate", "-f", examples.to_str().unwrap()], "");
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    // 9 files: TrafficSplit in 01–04; HTTPRouteGroup in 04, 05, 07, 09; TCPRoute in 05, 06 and
    // twice in 08; UDPRoute in 06 and 08; TrafficTarget twice in 05, in 06 and 09.
    assert_eq!(
        run.stdout,
        "read 18 SMI objects (TrafficSplit: 4, TrafficTarget: 4, HTTPRouteGroup: 4, TCPRoute: 4, \
         UDPRoute: 2) from 9 files; 0 errors\n"
    );
}

#[test]
fn broken_yaml_exits_1_and_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.yaml"), SPLIT).unwrap();
    let broken = dir.path().join("sub/broken.yml");
    std::fs::create_dir(broken.parent().unwrap()).unwrap();
    std::fs::write(
        &broken,
        format!("# comment\n{SPLIT}---\nkind: TrafficSplit\nmetadata: name: x\n"),
    )
    .unwrap();
    let run = switchyard(&["validate", "-f", dir.path().to_str().unwrap()], "");
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let expected = format!("{}:16: invalid yaml: ", broken.display());
    assert!(
        run.stdout.lines().any(|l| l.starts_with(&expected)),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .ends_with("read 2 SMI objects (TrafficSplit: 2) from 2 files; 1 error\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn field_errors_exit_1_with_object_and_field() {
    let run = switchyard(
        &["validate", "--filename", "-"],
        &SPLIT.replace("weight: 10", "weight: ten"),
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let first = run.stdout.lines().next().unwrap();
    assert!(
        first.starts_with("<stdin>:12: trafficsplit shop/web: spec.backends[1].weight: "),
        "{first}"
    );
}

#[test]
fn stdin_is_read_for_a_dash() {
    let run = switchyard(&["validate", "-f", "-"], SPLIT);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "read 1 SMI object (TrafficSplit: 1) from 1 file; 0 errors\n"
    );
}

#[test]
fn a_service_is_passed_over_with_a_note() {
    let text = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n---\n{SPLIT}"
    );
    let run = switchyard(&["validate", "-f", "-"], &text);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "<stdin>:1: note: v1/Service default/web is not an SMI object; skipped\n\
         read 1 SMI object (TrafficSplit: 1) from 1 file, skipped 1 non-SMI object; 0 errors\n"
    );
}

#[test]
fn a_missing_path_exits_1() {
    let run = switchyard(&["validate", "-f", "/nonexistent/manifests"], "");
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout
            .starts_with("/nonexistent/manifests: error: no such file or directory\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn usage_errors_exit_2() {
    let run = switchyard(&["validate"], "");
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--filename"), "{}", run.stderr);
}

#[test]
fn local_on_a_missing_directory_exits_1_at_once_saying_so_once() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("nope");
    let run = run_within(
        Command::new(switchyard_bin())
            .args(["local", "--xds-addr", "127.0.0.1:0"])
            .arg(&dir),
        Duration::from_secs(5),
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr,
        format!(
            "error: {}: cannot read: No such file or directory\n",
            dir.display()
        )
    );
    assert_eq!(run.stdout, "", "nothing is served");
    assert!(!dir.exists(), "no state directory is made");
}

#[cfg(unix)]
#[test]
fn local_with_a_file_it_cannot_read_at_start_exits_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-split.yaml"), SPLIT).unwrap();
    // A socket named like a manifest: unreadable whoever runs the test, root included.
    let socket = dir.path().join("b.yaml");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let run = run_within(
        Command::new(switchyard_bin())
            .args(["local", "--xds-addr", "127.0.0.1:0"])
            .arg(dir.path()),
        Duration::from_secs(5),
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr,
        format!(
            "error: {}: cannot read: not a regular file\n",
            socket.display()
        )
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn commands_that_need_a_cluster_say_once_what_was_tried_without_one() {
    let home = tempfile::tempdir().unwrap();
    let expected = format!(
        "error: no cluster to talk to: not running in a Pod (KUBERNETES_SERVICE_HOST is unset), \
         and no kubeconfig at {}/.kube/config (KUBECONFIG is unset); pass --kubeconfig FILE or \
         set KUBECONFIG\n",
        home.path().display()
    );
    for command in ["check", "controller"] {
        let run = run_within(
            Command::new(switchyard_bin())
                .arg(command)
                .env("HOME", home.path())
                .env_remove("KUBECONFIG")
                .env_remove("KUBERNETES_SERVICE_HOST")
                .env_remove("KUBERNETES_SERVICE_PORT"),
            Duration::from_secs(10),
        );
        assert_eq!(run.code, Some(1), "{command}: {}{}", run.stdout, run.stderr);
        assert_eq!(run.stderr, expected, "{command}");
        assert_eq!(run.stdout, "", "{command}");
    }
}
