use std::{ffi::OsString, io, path::PathBuf};

use kube::config::KubeconfigError;

use super::*;

fn home() -> Option<PathBuf> {
    Some(PathBuf::from("/home/ada/.kube/config"))
}

fn not_found(path: &str) -> KubeconfigError {
    KubeconfigError::ReadConfig(io::Error::from_raw_os_error(2), path.into())
}

/// What `kube::Config::incluster` says outside a Pod.
#[derive(Debug, thiserror::Error)]
#[error("failed to read an incluster environment variable: environment variable not found")]
struct NoEnv;

#[test]
fn no_kubeconfig_outside_a_pod_names_the_default_path_and_both_variables() {
    let s = Searched::new(
        None,
        home(),
        &not_found("/home/ada/.kube/config"),
        false,
        &NoEnv,
    );
    assert_eq!(
        no_cluster_message(&s),
        "no cluster to talk to: not running in a Pod (KUBERNETES_SERVICE_HOST is unset), and no \
         kubeconfig at /home/ada/.kube/config (KUBECONFIG is unset); pass --kubeconfig FILE or \
         set KUBECONFIG"
    );
}

#[test]
fn an_unreadable_kubeconfig_from_the_variable_names_the_file_and_why() {
    let s = Searched::new(
        Some(OsString::from("/etc/k/a.yaml:/etc/k/b.yaml")),
        home(),
        &KubeconfigError::ReadConfig(io::Error::from_raw_os_error(13), "/etc/k/b.yaml".into()),
        false,
        &NoEnv,
    );
    assert_eq!(
        s.kubeconfig,
        Found::Unreadable {
            path: "/etc/k/b.yaml".into(),
            source: Source::Env("/etc/k/a.yaml:/etc/k/b.yaml".into()),
            reason: "Permission denied".into(),
        }
    );
    assert_eq!(
        no_cluster_message(&s),
        "no cluster to talk to: not running in a Pod (KUBERNETES_SERVICE_HOST is unset), and \
         kubeconfig /etc/k/b.yaml (named by KUBECONFIG) cannot be read: Permission denied; pass \
         --kubeconfig FILE or set KUBECONFIG"
    );
}

#[test]
fn a_missing_file_named_by_the_variable_says_so() {
    let s = Searched::new(
        Some(OsString::from("/nope.yaml")),
        home(),
        &not_found("/nope.yaml"),
        false,
        &NoEnv,
    );
    assert!(
        no_cluster_message(&s)
            .contains("and no kubeconfig at /nope.yaml (named by KUBECONFIG); pass"),
        "{}",
        no_cluster_message(&s)
    );
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let s = Searched::new(
        Some(OsString::from(":")),
        home(),
        &not_found("/home/ada/.kube/config"),
        false,
        &NoEnv,
    );
    assert_eq!(
        s.kubeconfig,
        Found::Missing {
            path: "/home/ada/.kube/config".into(),
            source: Source::Home("/home/ada/.kube/config".into()),
        }
    );
}

#[test]
fn without_a_home_directory_or_variable_there_is_nowhere_to_look() {
    let s = Searched::new(None, None, &KubeconfigError::FindPath, false, &NoEnv);
    assert_eq!(s.kubeconfig, Found::NoHome);
    assert!(
        no_cluster_message(&s).contains(
            "and no kubeconfig (KUBECONFIG is unset and there is no home directory); pass"
        )
    );
}

#[test]
fn an_invalid_kubeconfig_and_a_failed_in_cluster_config_give_each_reason_once() {
    /// An in-cluster failure whose message repeats its source's, as kube's do.
    #[derive(Debug, thiserror::Error)]
    #[error("failed to read token: {0}")]
    struct Token(#[source] io::Error);

    let s = Searched::new(
        None,
        home(),
        &KubeconfigError::CurrentContextNotSet,
        true,
        &Token(io::Error::from_raw_os_error(2)),
    );
    let message = no_cluster_message(&s);
    assert_eq!(
        message,
        "no cluster to talk to: running in a Pod, but its in-cluster config failed (failed to \
         read token: No such file or directory (os error 2)), and the kubeconfig \
         /home/ada/.kube/config (KUBECONFIG is unset) does not work: failed to determine current \
         context; pass --kubeconfig FILE or set KUBECONFIG"
    );
    assert_eq!(message.matches("No such file").count(), 1);
}

#[test]
fn the_message_is_the_whole_error() {
    let err = ConfigError::NoCluster(Searched::new(
        None,
        home(),
        &KubeconfigError::FindPath,
        false,
        &NoEnv,
    ));
    let err = anyhow::Error::from(err);
    assert_eq!(crate::cli::error_text(err.as_ref()), err.to_string());
    assert!(err.to_string().starts_with("no cluster to talk to: "));
}
