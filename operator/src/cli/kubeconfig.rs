//! Finding a cluster to talk to, as `kubectl` does: `--kubeconfig`, else the files in
//! `KUBECONFIG` or `~/.kube/config`, else the in-cluster config; when none works, one message
//! saying what was tried and how to point the command at a cluster.

use std::{
    env,
    ffi::OsString,
    io,
    path::{Path, PathBuf},
};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

use super::error_text;
use crate::local::source::io_reason;

#[cfg(test)]
mod tests;

/// The environment variable naming kubeconfig files, a list separated like `PATH`.
const KUBECONFIG: &str = "KUBECONFIG";
/// Set in every container of a Pod: without it there is no in-cluster config.
const SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";

/// No client configuration could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file given with `--kubeconfig` does not make a client configuration.
    #[error("--kubeconfig {}: {reason}", path.display())]
    Given { path: PathBuf, reason: String },
    /// Neither a kubeconfig nor the in-cluster config works.
    #[error("{}", no_cluster_message(.0))]
    NoCluster(Searched),
}

/// What the search for a cluster found, for [`no_cluster_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Searched {
    pub in_cluster: InCluster,
    pub kubeconfig: Found,
}

/// How the in-cluster config failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InCluster {
    /// `KUBERNETES_SERVICE_HOST` is unset: not in a Pod.
    NotInPod,
    /// In a Pod, but its config could not be loaded (e.g. no ServiceAccount token mounted).
    Failed(String),
}

/// How the kubeconfig failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// `KUBECONFIG` is unset and there is no home directory to find `.kube/config` in.
    NoHome,
    /// The file is not there.
    Missing { path: PathBuf, source: Source },
    /// The file is there but cannot be read.
    Unreadable {
        path: PathBuf,
        source: Source,
        reason: String,
    },
    /// The files were read but do not make a client configuration (YAML, context, certificates).
    Invalid { source: Source, reason: String },
}

/// Where the kubeconfig's path came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `KUBECONFIG`, with its value.
    Env(String),
    /// The default, `$HOME/.kube/config`.
    Home(PathBuf),
}

// === impl Searched ===

impl Searched {
    /// What the failures of both ways mean. `kubeconfig_env` is `KUBECONFIG`'s value, `home` the
    /// default kubeconfig path, `in_pod` whether `KUBERNETES_SERVICE_HOST` is set.
    pub fn new(
        kubeconfig_env: Option<OsString>,
        home: Option<PathBuf>,
        kubeconfig: &KubeconfigError,
        in_pod: bool,
        in_cluster: &(dyn std::error::Error + 'static),
    ) -> Self {
        // An empty `KUBECONFIG` is as if unset (kube and kubectl skip empty entries).
        let source =
            match kubeconfig_env.filter(|v| env::split_paths(v).any(|p| p != Path::new(""))) {
                Some(v) => Some(Source::Env(v.to_string_lossy().into_owned())),
                None => home.map(Source::Home),
            };
        let kubeconfig = match (kubeconfig, source) {
            (_, None) | (KubeconfigError::FindPath, _) => Found::NoHome,
            (KubeconfigError::ReadConfig(e, path), Some(source))
                if e.kind() == io::ErrorKind::NotFound =>
            {
                Found::Missing {
                    path: path.clone(),
                    source,
                }
            }
            (KubeconfigError::ReadConfig(e, path), Some(source)) => Found::Unreadable {
                path: path.clone(),
                source,
                reason: io_reason(e),
            },
            (e, Some(source)) => Found::Invalid {
                source,
                reason: error_text(e),
            },
        };
        let in_cluster = if in_pod {
            InCluster::Failed(error_text(in_cluster))
        } else {
            InCluster::NotInPod
        };
        Searched {
            in_cluster,
            kubeconfig,
        }
    }
}

/// `no cluster to talk to: <in-cluster>, and <kubeconfig>; pass --kubeconfig FILE or set
/// KUBECONFIG`, naming the variables and files that were tried.
pub fn no_cluster_message(s: &Searched) -> String {
    let in_cluster = match &s.in_cluster {
        InCluster::NotInPod => format!("not running in a Pod ({SERVICE_HOST} is unset)"),
        InCluster::Failed(reason) => {
            format!("running in a Pod, but its in-cluster config failed ({reason})")
        }
    };
    let from = |source: &Source| match source {
        Source::Env(_) => format!("named by {KUBECONFIG}"),
        Source::Home(_) => format!("{KUBECONFIG} is unset"),
    };
    let kubeconfig = match &s.kubeconfig {
        Found::NoHome => {
            format!("no kubeconfig ({KUBECONFIG} is unset and there is no home directory)")
        }
        Found::Missing { path, source } => {
            format!("no kubeconfig at {} ({})", path.display(), from(source))
        }
        Found::Unreadable {
            path,
            source,
            reason,
        } => format!(
            "kubeconfig {} ({}) cannot be read: {reason}",
            path.display(),
            from(source)
        ),
        Found::Invalid {
            source: Source::Env(value),
            reason,
        } => format!("the kubeconfig {KUBECONFIG}={value} does not work: {reason}"),
        Found::Invalid {
            source: Source::Home(path),
            reason,
        } => format!(
            "the kubeconfig {} ({KUBECONFIG} is unset) does not work: {reason}",
            path.display()
        ),
    };
    format!(
        "no cluster to talk to: {in_cluster}, and {kubeconfig}; pass --kubeconfig FILE or set {KUBECONFIG}"
    )
}

/// The client configuration: from `kubeconfig` when given, else as `kubectl` finds it.
pub async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config, ConfigError> {
    if let Some(path) = kubeconfig {
        let given = |reason: String| ConfigError::Given {
            path: path.to_path_buf(),
            reason,
        };
        let kc = Kubeconfig::read_from(path).map_err(|e| {
            given(match &e {
                KubeconfigError::ReadConfig(io, _) => format!("cannot read: {}", io_reason(io)),
                e => error_text(e),
            })
        })?;
        return kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| given(error_text(&e)));
    }
    // The order of `kube::Config::infer`: a kubeconfig first, then the in-cluster config.
    let mut config = match kube::Config::from_kubeconfig(&KubeConfigOptions::default()).await {
        Ok(config) => config,
        Err(kubeconfig) => match kube::Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => {
                return Err(ConfigError::NoCluster(Searched::new(
                    env::var_os(KUBECONFIG),
                    env::home_dir().map(|h| h.join(".kube").join("config")),
                    &kubeconfig,
                    env::var_os(SERVICE_HOST).is_some(),
                    &in_cluster,
                )));
            }
        },
    };
    config.apply_debug_overrides();
    Ok(config)
}
