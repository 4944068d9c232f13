//! Which iptables backend to drive, nf_tables (`iptables-nft`) or the legacy x_tables
//! (`iptables-legacy`), decided from what each one's `iptables-save` shows in the Pod's network
//! namespace.
//!
//! Both can hold rules at once and the kernel runs both, but a Pod's rules belong with the ones
//! already there (a CNI plugin, or a node whose kubelet left `KUBE-IPTABLES-HINT`), and some
//! kernels (RHEL 8/9) have no legacy tables at all. `auto` therefore prefers, in order: a backend
//! whose tables hold kubelet's hint chains; a backend whose tables hold any rules; nft; legacy,
//! nft first at every step (as Istio's and Azure's detection do).

use std::fmt;
use std::str::FromStr;

use super::Family;
use super::save::Saved;

/// Chains kubelet creates in the backend the node uses (in the `mangle` table).
pub const HINT_CHAINS: &[&str] = &["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"];

/// An iptables backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backend {
    /// nf_tables through `iptables-nft` (Debian's `xtables-nft-multi`).
    Nft,
    /// x_tables through `iptables-legacy` (`xtables-legacy-multi`).
    Legacy,
}

/// `--iptables`: detect the backend, or use the one given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    #[default]
    Auto,
    Nft,
    Legacy,
}

/// One of the programs of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tool {
    Save,
    Restore,
}

/// What the edge learned about one backend in the Pod's network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Its programs are not installed.
    Missing,
    /// `iptables-<backend>-save` ran and failed, e.g. a kernel without legacy tables.
    Failed(String),
    /// `iptables-<backend>-save` printed this.
    Saved(String),
}

/// The backend to use, and why, in words for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub backend: Backend,
    pub reason: String,
}

/// No backend can be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The backend `--iptables` names is not installed.
    #[error("--iptables {0}: {program} is not installed", program = .0.program(Family::V4, Tool::Restore))]
    ForcedMissing(Backend),
    /// Neither backend works here.
    #[error("no usable iptables: nft: {nft}; legacy: {legacy}")]
    NoneUsable { nft: String, legacy: String },
}

// === impl Backend ===

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }

    /// The program's name, as Debian's `iptables` package installs it (`ip6tables-nft-restore`).
    pub fn program(self, family: Family, tool: Tool) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let tool = match tool {
            Tool::Save => "-save",
            Tool::Restore => "-restore",
        };
        format!("{base}-{}{tool}", self.name())
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Mode ===

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Mode::Auto),
            "nft" => Ok(Mode::Nft),
            "legacy" => Ok(Mode::Legacy),
            other => Err(format!("{other:?} is not auto, nft or legacy")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Nft => "nft",
            Mode::Legacy => "legacy",
        })
    }
}

// === impl Probe ===

impl Probe {
    fn saved(&self) -> Option<Saved> {
        match self {
            Probe::Saved(text) => Some(Saved::parse(text)),
            Probe::Missing | Probe::Failed(_) => None,
        }
    }

    fn why_unusable(&self) -> String {
        match self {
            Probe::Missing => "not installed".to_owned(),
            Probe::Failed(e) => e.clone(),
            Probe::Saved(_) => "usable".to_owned(),
        }
    }
}

/// Picks the backend for `mode`. A forced mode only needs its backend installed (`nft` and
/// `legacy` are probed as `Missing` or not); `auto` reads both probes.
pub fn choose(mode: Mode, nft: &Probe, legacy: &Probe) -> Result<Choice, BackendError> {
    let forced = |backend: Backend, probe: &Probe| {
        if *probe == Probe::Missing {
            Err(BackendError::ForcedMissing(backend))
        } else {
            Ok(Choice {
                backend,
                reason: "--iptables says so".to_owned(),
            })
        }
    };
    match mode {
        Mode::Nft => return forced(Backend::Nft, nft),
        Mode::Legacy => return forced(Backend::Legacy, legacy),
        Mode::Auto => {}
    }
    let candidates = [
        (Backend::Nft, nft.saved()),
        (Backend::Legacy, legacy.saved()),
    ];
    let usable = || {
        candidates
            .iter()
            .filter_map(|(b, saved)| saved.as_ref().map(|s| (*b, s)))
    };
    if let Some((backend, saved)) =
        usable().find(|(_, s)| HINT_CHAINS.iter().any(|c| s.has_chain(c)))
    {
        let hint = HINT_CHAINS
            .iter()
            .find(|c| saved.has_chain(c))
            .copied()
            .unwrap_or_default();
        return Ok(Choice {
            backend,
            reason: format!("its tables hold kubelet's {hint} chain"),
        });
    }
    if let Some((backend, saved)) = usable().find(|(_, s)| s.installed() > 0) {
        return Ok(Choice {
            backend,
            reason: format!(
                "its tables already hold {} rules and chains in this network namespace",
                saved.installed()
            ),
        });
    }
    match usable().next() {
        Some((Backend::Nft, _)) => Ok(Choice {
            backend: Backend::Nft,
            reason: "no rules in either backend; nft is the default".to_owned(),
        }),
        Some((Backend::Legacy, _)) => Ok(Choice {
            backend: Backend::Legacy,
            reason: format!(
                "no rules in either backend; nft is unusable: {}",
                nft.why_unusable()
            ),
        }),
        None => Err(BackendError::NoneUsable {
            nft: nft.why_unusable(),
            legacy: legacy.why_unusable(),
        }),
    }
}
