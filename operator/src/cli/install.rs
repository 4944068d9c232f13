//! `switchyard install`: print (or write) everything a cluster needs, for `kubectl apply -f -`.

use std::{io::Write, path::PathBuf, time::SystemTime};

use anyhow::Context as _;
use switchyard_images::Image;

use crate::{
    cli::local::DataPlaneArg,
    install::{
        self, DEFAULT_NAMESPACE, DEFAULT_REPLICAS, FailurePolicy, InstallConfig, Pki,
        WebhookClient, WebhookUrl, pki::Origin,
    },
};

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Namespace the operator runs in (created by the output).
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Registry (and path) of the images, as `make images REGISTRY=...` named them; the
    /// default is the name a locally loaded image has (`ctr images import`, `kind load`).
    #[arg(long, default_value = switchyard_images::DEFAULT_REGISTRY)]
    pub registry: String,
    /// Tag of the images [default: this version].
    #[arg(long, default_value = switchyard_images::DEFAULT_TAG)]
    pub tag: String,
    /// The operator's image, whole [default: REGISTRY/switchyard:TAG].
    #[arg(long)]
    pub image: Option<String>,
    /// Operator replicas; one leads (status, leases), every replica serves xDS and the webhook.
    #[arg(long, default_value_t = DEFAULT_REPLICAS, value_parser = clap::value_parser!(i32).range(0..))]
    pub replicas: i32,
    /// Data plane of workloads whose Pod has no `switchyard.dev/data-plane` annotation.
    #[arg(long, value_enum, default_value = "envoy")]
    pub data_plane: DataPlaneArg,
    /// SPIFFE trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Have the API server call the conversion webhook at this `https://HOST:PORT/convert` URL
    /// instead of through the in-cluster Service (for an operator running outside the cluster);
    /// the injector is called at `https://HOST:PORT/inject`. The serving certificate gets HOST
    /// as a SAN.
    #[arg(long, value_name = "URL", conflicts_with = "no_pki")]
    pub webhook_url: Option<String>,
    /// Keep the CAs and the webhook certificate here and reuse them on the next run, so that
    /// installing again does not rotate the mesh CA. Also what an operator outside the cluster
    /// reads: DIR/ca.crt, DIR/ca.key, DIR/webhook/tls.crt, DIR/webhook/tls.key.
    #[arg(long, value_name = "DIR", conflicts_with = "no_pki")]
    pub pki_dir: Option<PathBuf>,
    /// What the API server does with a new Pod while no operator replica answers the injector:
    /// `Fail` refuses it (nothing that should be meshed starts without its proxy; the operator's
    /// own namespace is exempt, so it can always restart), `Ignore` creates it without a proxy.
    #[arg(long, value_enum, default_value = "Fail", ignore_case = true)]
    pub injector_failure_policy: FailurePolicyArg,
    /// Write one file per part (namespace.yaml, rbac.yaml, ...) into DIR instead of printing.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Leave out the Secrets and the CRDs (whose caBundle needs the certificates): what
    /// `manifests/install/` holds.
    #[arg(long)]
    pub no_pki: bool,
}

/// The values of `--injector-failure-policy`, spelled as in the webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailurePolicyArg {
    #[value(name = "Fail")]
    Fail,
    #[value(name = "Ignore")]
    Ignore,
}

impl From<FailurePolicyArg> for FailurePolicy {
    fn from(p: FailurePolicyArg) -> Self {
        match p {
            FailurePolicyArg::Fail => FailurePolicy::Fail,
            FailurePolicyArg::Ignore => FailurePolicy::Ignore,
        }
    }
}

/// Runs `switchyard install`: the manifests go to `out` (or into `--out`), notes to stderr.
pub fn run(args: &InstallArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let config = config(args)?;
    config.validate()?;
    let pki = if args.no_pki {
        None
    } else {
        Some(pki(args, &config)?)
    };
    let manifests = install::manifests(&config, pki.as_ref())?;
    match &args.out {
        Some(dir) => {
            for path in install::write_dir(dir, &manifests)? {
                writeln!(out, "wrote {}", path.display())?;
            }
        }
        None => {
            let objects: Vec<_> = manifests.iter().flat_map(|m| &m.objects).collect();
            out.write_all(install::to_yaml(objects)?.as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

fn config(args: &InstallArgs) -> anyhow::Result<InstallConfig> {
    let webhook = match &args.webhook_url {
        Some(url) => WebhookClient::Url(WebhookUrl::parse(url)?),
        None => WebhookClient::Service,
    };
    Ok(InstallConfig {
        namespace: args.namespace.clone(),
        image: args
            .image
            .clone()
            .unwrap_or_else(|| Image::Operator.reference(&args.registry, &args.tag)),
        replicas: args.replicas,
        data_plane: args.data_plane.into(),
        trust_domain: args.trust_domain.clone(),
        webhook,
        proxy_image: Image::Proxy.reference(&args.registry, &args.tag),
        envoy_image: Image::Envoy.reference(&args.registry, &args.tag),
        injector_failure_policy: args.injector_failure_policy.into(),
    })
}

fn pki(args: &InstallArgs, config: &InstallConfig) -> anyhow::Result<Pki> {
    let now = SystemTime::now();
    let Some(dir) = &args.pki_dir else {
        eprintln!(
            "note: generated a new mesh CA and webhook certificate; applying this again rotates \
             them (every workload certificate changes). Pass --pki-dir DIR to keep and reuse them."
        );
        return Ok(Pki::generate(&config.pki_config(), now)?);
    };
    let (pki, report) = Pki::load_or_generate(dir, &config.pki_config(), now)
        .with_context(|| format!("pki directory {}", dir.display()))?;
    for (what, origin) in [
        ("mesh CA", &report.mesh_ca),
        ("webhook CA", &report.webhook_ca),
        ("webhook serving certificate", &report.webhook_tls),
    ] {
        match origin {
            Origin::Reused => {}
            Origin::Generated => eprintln!("note: generated a new {what} in {}", dir.display()),
            Origin::Reissued(reason) => {
                eprintln!("note: issued a new {what} in {} ({reason})", dir.display());
            }
        }
    }
    Ok(pki)
}
