//! How the visibility commands reach the control plane: local mode's admin address, or the
//! aggregated APIs through the API server with the user's own credentials (`stat` and `edges`
//! read the Traffic Metrics API, `tap` and `top` the tap API: see `cli::tap`), whichever
//! operator replica answers, as `kubectl get --raw` does. (`proxy-status` and `proxy-config`
//! still port-forward to each operator Pod's loopback debug port: see `cli::proxy_status`.)
//!
//! ```text
//!  --admin HOST:PORT ──────────────────────────────────────────▶ one answer
//!  kubeconfig (--as) ─▶ API server (RBAC) ─▶ one operator replica ─▶ one answer, every replica's merged
//! ```

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::BodyExt;

use super::{controller::client_as, proxy_status::admin_get};
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

/// How long the API server may take to answer (it waits up to 2 s for each replica).
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl ControlPlaneArgs {
    /// The cluster's client: `--kubeconfig`'s (else kubectl's), acting as `--as` when given.
    ///
    /// # Errors
    ///
    /// No cluster configuration (see `client_as`).
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_as(self.kubeconfig.as_deref(), self.as_user.as_deref()).await
    }

    /// `GET path` on the admin address, or through the API server: who answered (for
    /// messages), the status and the body.
    ///
    /// # Errors
    ///
    /// The admin address or the API server does not answer.
    pub async fn get(&self, path: &str) -> anyhow::Result<(String, http::StatusCode, Bytes)> {
        if let Some(addr) = self.admin {
            let (status, body) = admin_get(addr, path).await?;
            return Ok((addr.to_string(), status, body));
        }
        let client = self.client().await?;
        let request = http::Request::get(path)
            .body(kube::client::Body::empty())
            .context("the request")?;
        let asked = async {
            let response = client.send(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, asked)
            .await
            .map_err(|_| anyhow::anyhow!("no answer in {TIMEOUT:?}"))?
            .with_context(|| format!("asking the API server for {path}"))?;
        Ok(("the API server".to_owned(), status, body))
    }
}
