//! The command line: argument definitions and the glue that runs each subcommand.

use std::{
    fs,
    io::{Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

pub mod check;
pub mod control_plane;
pub mod controller;
pub mod edges;
pub mod inject;
pub mod install;
pub mod kubeconfig;
pub mod local;
pub mod proxy_config;
pub mod proxy_init;
pub mod proxy_status;
pub mod stat;
pub mod tap;
pub mod top;
pub mod validate;

#[cfg(test)]
mod tests;

/// Switchyard: an SMI service mesh over pluggable data planes.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check SMI manifests: load every document, validate every SMI object, report all problems.
    Validate(validate::Args),
    /// Print the SMI CustomResourceDefinitions, or write one file per CRD into a directory.
    Crds(CrdsArgs),
    /// Run the control plane on a directory of manifests (no cluster needed), serving xDS.
    Local(local::LocalArgs),
    /// Print the xDS resources one proxy would get from a directory of manifests, as JSON.
    Compile(local::CompileArgs),
    /// Run the controller in a cluster: watch SMI objects, serve xDS, write status.
    Controller(Box<controller::ControllerArgs>),
    /// Add the Switchyard proxy to the Pod templates of manifests (Pods, Deployments, Jobs, …),
    /// as the injection webhook would, and print them; a template annotated
    /// `switchyard.dev/inject: disabled` is left alone. Reports on stderr.
    Inject(inject::InjectCliArgs),
    /// Print a proxy's bootstrap for a cluster (node, xDS address, ServiceAccount token).
    Bootstrap(controller::BootstrapArgs),
    /// Set up a Pod's traffic interception (nat redirect rules, iptables-nft or -legacy) and
    /// write its proxy's bootstrap: the command of the init container the injector adds.
    ProxyInit(proxy_init::ProxyInitArgs),
    /// Print everything a cluster needs (CRDs with the conversion webhook, namespace, RBAC,
    /// Deployment, Service, secrets), for `switchyard install | kubectl apply -f -`.
    Install(install::InstallArgs),
    /// List the proxies connected to the control plane, with their data plane and, per xDS
    /// type, whether each runs the latest configuration (SYNCED), has not acknowledged it yet
    /// (STALE) or rejected it (NACKED, with the reason; exit status 1).
    ProxyStatus(proxy_status::ProxyStatusArgs),
    /// Show what one proxy runs, per xDS type: the version it acknowledged last and each
    /// resource (name and summary, or all of it as JSON with -o json), secrets redacted, and
    /// a rejected version with the proxy's reason (exit status 1).
    ProxyConfig(proxy_config::ProxyConfigArgs),
    /// Show what each Pod (or namespace) served over a window, from the golden metrics the
    /// proxies push: success rate, requests per second, latency percentiles.
    Stat(stat::StatArgs),
    /// Show who talks to whom over a window: client and server, their namespaces, whether the
    /// edge is mTLS, and (-o wide) both SPIFFE identities.
    Edges(edges::EdgesArgs),
    /// Watch live requests through the proxies of a namespace or one Pod: direction, source
    /// and destination with identities, method, authority, path, status, latency, bytes. No
    /// header is ever captured.
    Tap(tap::TapArgs),
    /// Watch the selected proxies' requests for a while (10s), then show the busiest paths:
    /// source, destination, method, path, count, best, worst and last latency, success rate.
    Top(top::TopArgs),
    /// Check an install: CRDs established, the operator Deployment ready, the webhook Service
    /// with ready endpoints, an operator holding the Lease, the conversion webhook answering;
    /// says how to fix each failure (exit status 1 when one fails).
    Check(check::CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Directory to write the CRD files into; without it, every CRD is printed to stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// How a command ended, as the process exit status reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The input was read but is not valid (exit status 1).
    Invalid,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Invalid => 1,
        }
    }
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> Self {
        ExitCode::from(o.code())
    }
}

/// Runs a parsed command line. Output goes to `out` and `-` reads `stdin`, so tests can drive
/// every command without a process.
pub fn run(cli: Cli, stdin: &mut dyn Read, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Validate(args) => {
            let report = validate::run(&args, stdin, out).context("writing the report")?;
            Ok(if report.is_valid() {
                Outcome::Success
            } else {
                Outcome::Invalid
            })
        }
        Command::Crds(args) => {
            crds(&args, out)?;
            Ok(Outcome::Success)
        }
        Command::Local(args) => {
            local::run_local(args, out)?;
            Ok(Outcome::Success)
        }
        Command::Controller(args) => {
            controller::run_controller(*args)?;
            Ok(Outcome::Success)
        }
        Command::ProxyStatus(args) => Ok(if proxy_status::run(&args, out)? {
            Outcome::Success
        } else {
            Outcome::Invalid
        }),
        Command::Stat(args) => {
            stat::run(&args, out)?;
            Ok(Outcome::Success)
        }
        Command::Edges(args) => {
            edges::run(&args, out)?;
            Ok(Outcome::Success)
        }
        Command::Tap(args) => {
            tap::run(&args, out)?;
            Ok(Outcome::Success)
        }
        Command::Top(args) => {
            top::run(&args, out)?;
            Ok(Outcome::Success)
        }
        Command::ProxyConfig(args) => Ok(if proxy_config::run(&args, out)? {
            Outcome::Success
        } else {
            Outcome::Invalid
        }),
        Command::Check(args) => Ok(if check::run(&args, out)? {
            Outcome::Success
        } else {
            Outcome::Invalid
        }),
        Command::Install(args) => {
            install::run(&args, out)?;
            Ok(Outcome::Success)
        }
        Command::Inject(args) => {
            let report = inject::run(&args, stdin, out, &mut std::io::stderr().lock())
                .context("writing the manifests")?;
            Ok(if report.errors == 0 {
                Outcome::Success
            } else {
                Outcome::Invalid
            })
        }
        Command::Bootstrap(args) => {
            controller::run_bootstrap(&args, out)?;
            Ok(Outcome::Success)
        }
        Command::ProxyInit(args) => {
            proxy_init::run(&args, out)?;
            Ok(Outcome::Success)
        }
        Command::Compile(args) => {
            let clean = local::run_compile(args, out)?;
            Ok(if clean {
                Outcome::Success
            } else {
                Outcome::Invalid
            })
        }
    }
}

/// An error and its causes, `a: b: c`, leaving out a cause whose text is already in the message
/// (many errors repeat their source's text in their own), so that each reason is said once.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    for e in std::iter::successors(Some(e), |e| e.source()) {
        let this = e.to_string();
        if text.contains(&this) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&this);
    }
    text
}

fn crds(args: &CrdsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    use switchyard_crds::crdgen;
    match &args.out {
        Some(dir) => {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let written = crdgen::write_all(dir)
                .with_context(|| format!("writing CRDs into {}", dir.display()))?;
            for path in written {
                writeln!(out, "wrote {}", path.display())?;
            }
        }
        None => {
            for (i, (_, yaml)) in crdgen::render().iter().enumerate() {
                if i > 0 {
                    writeln!(out, "---")?;
                }
                let yaml = yaml.strip_prefix("---\n").unwrap_or(yaml);
                write!(out, "{yaml}")?;
                if !yaml.ends_with('\n') {
                    writeln!(out)?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}
