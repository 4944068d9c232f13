//! How the visibility commands reach the control plane: local mode's admin address, or every
//! operator Pod's loopback debug port through a port-forward by the API server (`tap` and
//! `top` read the tap API through the API server instead: see `cli::tap`).
//!
//! ```text
//!  --admin HOST:PORT ──────────────────────────────────▶ one answer
//!  kubeconfig ─▶ API server ─pods/portforward─▶ each operator Pod's 127.0.0.1:9091 ─▶ one answer each
//! ```

use std::{net::SocketAddr, path::PathBuf};

use bytes::Bytes;

use super::{
    controller::client_as,
    proxy_status::{admin_get, operator_pods, pod_get},
};
use crate::install::DEFAULT_NAMESPACE;

#[derive(Clone, Debug, clap::Args)]
pub struct ControlPlaneArgs {
    /// Ask this control plane's admin address directly (`switchyard local --admin-addr`)
    /// instead of a cluster's operator Pods.
    #[arg(long, value_name = "HOST:PORT", env = "SWITCHYARD_ADMIN_ADDR")]
    pub admin: Option<SocketAddr>,
    /// The operator's namespace, in a cluster.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub operator_namespace: String,
    /// A kubeconfig file [default: $KUBECONFIG or ~/.kube/config, else the in-cluster config].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Act as this user in the cluster (impersonation, as `kubectl --as`).
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,
}

/// One control plane's answer: who answered (for messages), the status, the body.
pub type Answer = (String, http::StatusCode, Bytes);

impl ControlPlaneArgs {
    /// The cluster's client: `--kubeconfig`'s (else kubectl's), acting as `--as` when given.
    ///
    /// # Errors
    ///
    /// No cluster configuration (see [`client_as`]).
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_as(self.kubeconfig.as_deref(), self.as_user.as_deref()).await
    }

    /// `GET path` on the admin address, or on every running operator Pod in turn.
    ///
    /// # Errors
    ///
    /// The admin address or an operator Pod does not answer, or no operator Pod runs.
    pub async fn get_each(&self, path: &str) -> anyhow::Result<Vec<Answer>> {
        if let Some(addr) = self.admin {
            let (status, body) = admin_get(addr, path).await?;
            return Ok(vec![(addr.to_string(), status, body)]);
        }
        let client = self.client().await?;
        let ns = &self.operator_namespace;
        let mut all = Vec::new();
        for pod in operator_pods(&client, ns).await? {
            let (status, body) = pod_get(&client, ns, &pod, path).await?;
            all.push((format!("operator Pod {ns}/{pod}"), status, body));
        }
        Ok(all)
    }
}
