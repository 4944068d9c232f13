//! Network namespaces of a test's own (`ip netns add`), deleted when dropped, and threads that
//! enter one, optionally as another user, so that the sockets they open live there.

use std::ffi::OsStr;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::thread::{Gid, LinkNameSpaceType, Uid};

/// The Pod's address on its `eth0` in [`Netns::pod_and_world`].
pub const POD_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// The world's address on its `eth0`: the Pod's default gateway.
pub const WORLD_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The UID (and GID) the proxy runs as in a Pod, which `proxy-init`'s redirect rules exempt (its
/// default, 1337).
pub const PROXY_UID: u32 = 1337;
/// Any other user, for the app in a Pod.
pub const APP_UID: u32 = 1000;

/// A named network namespace with `lo` up; `ip netns del` when dropped (the kernel frees it,
/// with its interfaces and rules, once no socket or process holds it).
#[derive(Debug)]
pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    /// Creates `name` (replacing a namespace of that name a crashed earlier run left).
    ///
    /// # Panics
    ///
    /// Without root or `ip` (iproute2), saying so.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let added = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap_or_else(|e| panic!("ip netns add {name}: {e} (needs iproute2)"));
        assert!(
            added.status.success(),
            "ip netns add {name} (needs root): {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let file = File::open(Path::new("/run/netns").join(&name))
            .unwrap_or_else(|e| panic!("/run/netns/{name}: {e}"));
        let ns = Netns { name, file };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A Pod's namespace and the world around it, `sy-pod-<pid>-<tag>` and
    /// `sy-world-<pid>-<tag>` (`tag` keeps parallel tests apart): one veth pair, an `eth0` up
    /// in each, at [`POD_V4`]/24 and [`WORLD_V4`]/24; the Pod's IPv4 default route is the
    /// world.
    ///
    /// # Panics
    ///
    /// As [`Netns::new`] and [`Netns::ip`].
    pub fn pod_and_world(tag: &str) -> (Netns, Netns) {
        let id = std::process::id();
        let pod = Netns::new(format!("sy-pod-{id}-{tag}"));
        let world = Netns::new(format!("sy-world-{id}-{tag}"));
        pod.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            world.name(),
        ]);
        for (ns, v4) in [(&pod, POD_V4), (&world, WORLD_V4)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
            ns.ip(&["link", "set", "eth0", "up"]);
        }
        pod.ip(&["route", "add", "default", "via", &WORLD_V4.to_string()]);
        (pod, world)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that names it, for `--with-ns network:<path>` and the like.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> <args>`.
    ///
    /// # Panics
    ///
    /// When it fails.
    pub fn ip(&self, args: &[&str]) {
        let output = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip: {e}"));
        assert!(
            output.status.success(),
            "ip -n {} {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `ip netns exec <ns> <program>`, to add arguments to.
    pub fn exec(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it opens live here.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.enter_with(None, f)
    }

    /// [`Netns::enter`] as `uid` and `gid` (no supplementary groups): the sockets it opens are
    /// theirs, as iptables' `owner` match sees it. Only that thread changes user: the kernel
    /// keeps credentials per thread, and the raw `setresuid` does not broadcast as libc's does.
    pub fn enter_as<T: Send>(&self, uid: u32, gid: u32, f: impl FnOnce() -> T + Send) -> T {
        self.enter_with(Some((uid, gid)), f)
    }

    fn enter_with<T: Send>(&self, user: Option<(u32, u32)>, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                rustix::thread::move_into_link_name_space(
                    self.file.as_fd(),
                    Some(LinkNameSpaceType::Network),
                )
                .unwrap_or_else(|e| panic!("setns into {}: {e}", self.name));
                if let Some((uid, gid)) = user {
                    // The group first: once the UID is not root, it cannot change.
                    let gid = Gid::from_raw(gid);
                    rustix::thread::set_thread_groups(&[])
                        .unwrap_or_else(|e| panic!("setgroups: {e}"));
                    rustix::thread::set_thread_res_gid(gid, gid, gid)
                        .unwrap_or_else(|e| panic!("setresgid: {e}"));
                    let uid = Uid::from_raw(uid);
                    rustix::thread::set_thread_res_uid(uid, uid, uid)
                        .unwrap_or_else(|e| panic!("setresuid: {e}"));
                }
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
