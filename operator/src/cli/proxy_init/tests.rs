//! `switchyard proxy-init` without privileges: flags, the dry run, the bootstrap file.

use std::os::unix::fs::PermissionsExt as _;

use clap::Parser as _;

use super::*;
use crate::cli::{Cli, Command as CliCommand};

// === Utils ===

fn parse(args: &[&str]) -> ProxyInitArgs {
    let cli = Cli::try_parse_from(
        ["switchyard", "proxy-init"]
            .into_iter()
            .chain(args.iter().copied()),
    )
    .unwrap();
    match cli.command {
        CliCommand::ProxyInit(a) => a,
        other => panic!("{other:?}"),
    }
}

/// The flags every run needs, with a token in `dir`.
fn required(dir: &Path) -> Vec<String> {
    let token = dir.join("token");
    fs::write(&token, "a-token\n").unwrap();
    let ca = dir.join("xds-ca.crt");
    fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    [
        "--pod",
        "demo/web-0",
        "--pod-ip",
        "10.244.0.7",
        "--token-file",
        &token.to_string_lossy(),
        "--bootstrap-out",
        &dir.join("run/bootstrap.json").to_string_lossy(),
        "--xds-ca-file",
        &ca.to_string_lossy(),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn with(base: &[String], extra: &[&str]) -> ProxyInitArgs {
    let args: Vec<&str> = base
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect();
    parse(&args)
}

// === Tests ===

#[test]
fn defaults_are_the_designs_ports_and_user() {
    let dir = tempfile::tempdir().unwrap();
    let args = with(&required(dir.path()), &[]);
    assert_eq!(args.config().unwrap(), InterceptConfig::default());
    assert_eq!(args.iptables, Mode::Auto);
    assert_eq!(args.bootstrap.xds_port, 15010);
    assert_eq!(args.bootstrap.xds_host, "switchyard.switchyard-system.svc");
}

#[test]
fn the_designs_command_line_parses() {
    let dir = tempfile::tempdir().unwrap();
    let args = with(
        &required(dir.path()),
        &[
            "--proxy-uid",
            "1337",
            "--inbound-port",
            "15006",
            "--outbound-port",
            "15001",
            "--skip-inbound-ports",
            "9090",
            "--skip-outbound-ports",
            "5432,6379",
            "--skip-outbound-cidrs",
            "169.254.169.254/32,fd00::/8",
            "--iptables",
            "legacy",
            "--xds-host",
            "switchyard.mesh.svc",
            "--xds-port",
            "15010",
            "--delta",
        ],
    );
    let config = args.config().unwrap();
    assert_eq!(config.skip_inbound_ports.to_string(), "9090");
    assert_eq!(config.skip_outbound_ports.to_string(), "5432,6379");
    assert_eq!(
        config.skip_outbound_cidrs.to_string(),
        "169.254.169.254/32,fd00::/8"
    );
    assert_eq!(config.proxy_gid, 1337);
    assert_eq!(args.iptables, Mode::Legacy);
    assert!(args.bootstrap.delta);
}

#[test]
fn bad_lists_are_reported_with_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let base = required(dir.path());
    let err = |flag: &str, value: &str| {
        with(&base, &[flag, value])
            .config()
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("--skip-inbound-ports", "80,eighty"),
        "--skip-inbound-ports: \"eighty\" is not a port (1-65535) or a range of ports (8000-8010)"
    );
    assert_eq!(
        err("--skip-outbound-cidrs", "10.0.0.0/8,10.0.0.300"),
        "--skip-outbound-cidrs: \"10.0.0.300\" is not an IP address or a CIDR (10.0.0.0/8, fd00::/8)"
    );
    let bad_mode = Cli::try_parse_from(["switchyard", "proxy-init", "--iptables", "nf"]);
    assert_eq!(bad_mode.unwrap_err().exit_code(), 2);
}

#[test]
fn a_dry_run_prints_the_rules_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let args = with(&required(dir.path()), &["--dry-run", "--iptables", "nft"]);
    let mut out = Vec::new();
    run(&args, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("dry run: nothing is changed\n"), "{out}");
    let v4 = intercept::restore_input(&InterceptConfig::default(), Family::V4, &Saved::default());
    assert!(out.contains(&v4), "{out}");
    assert!(out.contains("would write the bootstrap ("), "{out}");
    assert!(
        !out.contains("a-token"),
        "the token is never printed: {out}"
    );
    assert!(!dir.path().join("run").exists(), "nothing written");
}

#[test]
fn a_dry_run_still_checks_the_pod_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut base = required(dir.path());
    base[1] = "not-a-pod-id".to_owned();
    let err = run(&with(&base, &["--dry-run"]), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("not-a-pod-id"), "{err}");
    let mut base = required(dir.path());
    base[5] = dir
        .path()
        .join("missing-token")
        .to_string_lossy()
        .into_owned();
    let err = run(&with(&base, &["--dry-run"]), &mut Vec::new()).unwrap_err();
    assert!(format!("{err:#}").contains("missing-token"), "{err:#}");
}

#[test]
fn the_bootstrap_is_written_atomically_and_readable_by_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.json");
    fs::write(
        dir.path()
            .join(format!(".bootstrap.json.tmp-{}", std::process::id())),
        "stale",
    )
    .unwrap();
    write_atomically(&path, b"{}\n").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"{}\n");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    write_atomically(&path, b"{\"again\":1}\n").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"{\"again\":1}\n");
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["bootstrap.json"], "no temporary file is left");
    let err = write_atomically(&dir.path().join("no/such/dir/b.json"), b"x").unwrap_err();
    assert!(format!("{err:#}").contains("no/such/dir/b.json"), "{err:#}");
}

#[test]
fn the_bootstrap_is_the_one_switchyard_bootstrap_prints() {
    let dir = tempfile::tempdir().unwrap();
    let args = with(&required(dir.path()), &["--delta"]);
    let mut printed = Vec::new();
    controller::run_bootstrap(&args.bootstrap, &mut printed).unwrap();
    let written = controller::bootstrap(&args.bootstrap, &|_| None).unwrap();
    assert_eq!(printed, written);
    let json: serde_json::Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(json["node"]["id"], "demo/web-0");
}

#[test]
fn the_bootstrap_names_the_token_file_and_holds_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let args = with(&required(dir.path()), &[]);
    let written = controller::bootstrap(&args.bootstrap, &|_| None).unwrap();
    let text = String::from_utf8(written).unwrap();
    assert!(!text.contains("a-token"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let grpc = &json["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"];
    assert_eq!(
        grpc["call_credentials"][0]["from_plugin"]["typed_config"]["secret_data"]["filename"],
        dir.path().join("token").to_string_lossy().as_ref()
    );
    assert_eq!(
        grpc["channel_credentials"]["ssl_credentials"]["root_certs"]["filename"],
        dir.path().join("xds-ca.crt").to_string_lossy().as_ref()
    );

    // The injector passes the CA itself, which goes into the bootstrap (it is public).
    let mut base = required(dir.path());
    base.truncate(base.len() - 2);
    let mut args = with(&base, &[]);
    let err = controller::bootstrap(&args.bootstrap, &|_| None).unwrap_err();
    assert!(err.to_string().contains("SWITCHYARD_XDS_CA"), "{err}");
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    args.bootstrap.xds_ca = Some(pem.to_owned());
    let json: serde_json::Value =
        serde_json::from_slice(&controller::bootstrap(&args.bootstrap, &|_| None).unwrap())
            .unwrap();
    assert_eq!(
        json["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"]["channel_credentials"]
            ["ssl_credentials"]["root_certs"]["inline_string"],
        pem
    );
}

#[test]
fn the_pod_comes_from_the_downward_api_without_pod() {
    let dir = tempfile::tempdir().unwrap();
    let mut base = required(dir.path());
    base.drain(0..2);
    let args = with(&base, &[]);
    assert_eq!(args.bootstrap.pod, None);
    let env = |name: &str| match name {
        "POD_NAMESPACE" => Some("shop".to_owned()),
        "POD_NAME" => Some("cart-7".to_owned()),
        _ => None,
    };
    let json = controller::bootstrap(&args.bootstrap, &env).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["node"]["id"], "shop/cart-7");
    let err = controller::bootstrap(&args.bootstrap, &|_| None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--pod is required (or POD_NAMESPACE and POD_NAME in the environment, from the \
         downward API)"
    );
}

#[test]
fn programs_are_found_in_sbin_too() {
    // `sh` is in every PATH; the sbin fallback is what a container without /usr/sbin in PATH
    // relies on.
    assert!(locate("sh").is_some());
    assert_eq!(locate("switchyard-no-such-program"), None);
}
