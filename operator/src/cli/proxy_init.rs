//! `switchyard proxy-init`, the injected init container: installs the redirect rules of
//! [`crate::intercept`] in the Pod's network namespace with the iptables programs, then writes
//! the proxy's bootstrap.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

use super::controller::{self, BootstrapArgs};
use crate::intercept::{
    self, Backend, CidrList, Family, InterceptConfig, Mode, PortList, Probe, Saved, Tool,
};

/// Where iptables programs are looked for after `$PATH`: Debian installs them in /usr/sbin,
/// which a container's `PATH` often lacks.
const SBIN_DIRS: &[&str] = &["/usr/sbin", "/sbin"];

/// How long `iptables-legacy-restore` waits for the xtables lock, in seconds. The lock is the
/// init container's own (`/run` is an emptyDir), so a wait means a stuck earlier run.
const XTABLES_WAIT_SECS: &str = "10";

#[derive(Debug, clap::Args)]
pub struct ProxyInitArgs {
    /// The proxy's UID: its connections are never redirected.
    #[arg(long, default_value_t = intercept::PROXY_UID)]
    pub proxy_uid: u32,
    /// The proxy's GID, also never redirected [default: the UID].
    #[arg(long)]
    pub proxy_gid: Option<u32>,
    /// The inbound proxy's port, where TCP arriving at the Pod goes.
    #[arg(long, default_value_t = intercept::INBOUND_PORT)]
    pub inbound_port: u16,
    /// The outbound proxy's port, where the Pod's outgoing TCP goes.
    #[arg(long, default_value_t = intercept::OUTBOUND_PORT)]
    pub outbound_port: u16,
    /// Inbound ports let through to the app: `80,443,8000-8010`.
    #[arg(long, default_value = "", value_name = "PORTS")]
    pub skip_inbound_ports: String,
    /// Outbound ports that bypass the proxy: `5432,6379`.
    #[arg(long, default_value = "", value_name = "PORTS")]
    pub skip_outbound_ports: String,
    /// Outbound networks that bypass the proxy, IPv4 and IPv6: `10.0.0.0/8,fd00::/8`.
    #[arg(long, default_value = "", value_name = "CIDRS")]
    pub skip_outbound_cidrs: String,
    /// The iptables backend: `auto` (the one whose tables already hold rules here, else nft,
    /// else legacy), `nft` or `legacy`.
    #[arg(long, default_value_t = Mode::Auto, value_name = "auto|nft|legacy")]
    pub iptables: Mode,
    /// Print the rules and the bootstrap's size, and change nothing (needs no privilege).
    #[arg(long)]
    pub dry_run: bool,
    /// Where to write the proxy's bootstrap (atomically, mode 0644).
    #[arg(long, value_name = "FILE")]
    pub bootstrap_out: PathBuf,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

/// The iptables programs of the chosen backend.
struct Iptables {
    backend: Backend,
}

// === impl ProxyInitArgs ===

impl ProxyInitArgs {
    /// The interception configuration, with the lists parsed (errors name the flag).
    pub fn config(&self) -> anyhow::Result<InterceptConfig> {
        Ok(InterceptConfig {
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid.unwrap_or(self.proxy_uid),
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            // Never redirected, like the inbound and outbound ports, so the kubelet's probes
            // reach it; the admin port listens on 127.0.0.1 and is not skipped.
            health_port: self.bootstrap.health_port,
            skip_inbound_ports: PortList::parse("--skip-inbound-ports", &self.skip_inbound_ports)?,
            skip_outbound_ports: PortList::parse(
                "--skip-outbound-ports",
                &self.skip_outbound_ports,
            )?,
            skip_outbound_cidrs: CidrList::parse(
                "--skip-outbound-cidrs",
                &self.skip_outbound_cidrs,
            )?,
        })
    }
}

/// Installs the rules for every address family the Pod has, prints what the `nat` tables hold
/// afterwards, and writes the bootstrap. Everything is checked (lists, Pod, token) before
/// anything changes.
pub fn run(args: &ProxyInitArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let config = args.config()?;
    let bootstrap = controller::bootstrap(&args.bootstrap, &|name| std::env::var(name).ok())?;
    let mut families = vec![Family::V4];
    match intercept::ipv6_absent(
        fs::read_to_string("/proc/net/if_inet6").ok().as_deref(),
        fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
            .ok()
            .as_deref(),
    ) {
        None => families.push(Family::V6),
        Some(why) => writeln!(out, "IPv6: skipped: {why}")?,
    }

    if args.dry_run {
        writeln!(out, "dry run: nothing is changed")?;
        for family in &families {
            out.write_all(
                intercept::restore_input(&config, *family, &Saved::default()).as_bytes(),
            )?;
        }
        writeln!(
            out,
            "would write the bootstrap ({} bytes) to {}",
            bootstrap.len(),
            args.bootstrap_out.display()
        )?;
        return Ok(());
    }

    let iptables = Iptables::choose(args.iptables, out)?;
    for family in families {
        let before = iptables.save(family)?;
        let input = intercept::restore_input(&config, family, &Saved::parse(&before));
        iptables.restore(family, &input)?;
        let after = iptables.save(family)?;
        intercept::check_installed(&config, family, &Saved::parse(&after))?;
        writeln!(
            out,
            "{family}: {} -t nat:",
            iptables.backend.program(family, Tool::Save)
        )?;
        out.write_all(after.as_bytes())?;
    }
    write_atomically(&args.bootstrap_out, &bootstrap)?;
    writeln!(out, "wrote {}", args.bootstrap_out.display())?;
    Ok(())
}

// === impl Iptables ===

impl Iptables {
    /// The backend for `mode`, printing which and why.
    fn choose(mode: Mode, out: &mut dyn Write) -> anyhow::Result<Self> {
        let probe = |backend: Backend| -> Probe {
            let program = backend.program(Family::V4, Tool::Save);
            let Some(path) = locate(&program) else {
                return Probe::Missing;
            };
            if mode != Mode::Auto {
                return Probe::Saved(String::new());
            }
            // Without `-t`, legacy lists only the tables that exist: looking loads nothing.
            match output(&path, &[], None) {
                Ok(text) => Probe::Saved(text),
                Err(e) => Probe::Failed(e),
            }
        };
        let choice =
            intercept::backend::choose(mode, &probe(Backend::Nft), &probe(Backend::Legacy))?;
        writeln!(out, "iptables: {} ({})", choice.backend, choice.reason)?;
        Ok(Iptables {
            backend: choice.backend,
        })
    }

    fn program(&self, family: Family, tool: Tool) -> anyhow::Result<PathBuf> {
        let name = self.backend.program(family, tool);
        locate(&name)
            .with_context(|| format!("{name}: not found in $PATH, {}", SBIN_DIRS.join(", ")))
    }

    /// `iptables-save -t nat`.
    fn save(&self, family: Family) -> anyhow::Result<String> {
        let program = self.program(family, Tool::Save)?;
        output(&program, &["-t", "nat"], None).map_err(anyhow::Error::msg)
    }

    /// `iptables-restore --noflush -w`, `input` on standard input.
    fn restore(&self, family: Family, input: &str) -> anyhow::Result<()> {
        let program = self.program(family, Tool::Restore)?;
        output(
            &program,
            &["--noflush", "-w", XTABLES_WAIT_SECS],
            Some(input),
        )
        .map(drop)
        .map_err(|e| anyhow::anyhow!("{e}\ninput was:\n{input}"))
    }
}

/// `name` in `$PATH`, else in [`SBIN_DIRS`].
fn locate(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `program` and returns its standard output; the error says what ran and what it said.
fn output(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let ran = format!("{} {}", program.display(), args.join(" "));
    let ran = ran.trim_end();
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{ran}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{ran}: writing its input: {e}"))?;
    }
    let done = child
        .wait_with_output()
        .map_err(|e| format!("{ran}: {e}"))?;
    if done.status.success() {
        Ok(String::from_utf8_lossy(&done.stdout).into_owned())
    } else {
        Err(format!(
            "{ran}: {}: {}",
            done.status,
            String::from_utf8_lossy(&done.stderr).trim()
        ))
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so the
/// proxy never reads half a file; mode 0644 whatever the umask, so the proxy's UID can read it.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("--bootstrap-out {}: names no file", path.display()))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // A re-run (a new container, same PID, same emptyDir) overwrites a leftover of a crash.
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests;
