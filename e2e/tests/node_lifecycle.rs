//! A node cluster leaves nothing behind: after a clean teardown the host has none of its
//! processes, interfaces, routes, cgroups or locks, and the same iptables rules and mounts as
//! before; after its harness is SIGKILLed, the kernel has removed every process, interface and
//! mount, and the next cluster's reaper removes the rest.
//!
//! Other clusters may run on the machine meanwhile (another test binary): what belongs to a
//! cluster is told apart by its index (its interface `swy<n>`, cgroups `switchyard-kube-<n>`,
//! lock `<n>.lock`) and its pid namespace; the host's own iptables rules and mounts, which no
//! cluster touches, are compared whole.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, process::Command, time::Duration};

use switchyard_e2e::{
    images::node_images,
    kube::{KubeCluster, Node, harness_bin_dir},
};

/// What is on the host, as comparable lines.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    links: BTreeSet<String>,
    routes: BTreeSet<String>,
    iptables: BTreeSet<String>,
    mounts: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    locks: BTreeSet<String>,
}

/// What of it belongs to one cluster, plus the host-wide state no cluster may change.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    links: BTreeSet<String>,
    routes: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    locks: BTreeSet<String>,
    processes: BTreeSet<u32>,
    iptables: BTreeSet<String>,
    mounts: BTreeSet<String>,
}

/// A cluster's identity on the host, taken while it runs.
struct Tracked {
    index: u8,
    link: String,
    /// `pid:[inode]` of its pid namespace.
    pid_ns: String,
}

impl Tracked {
    fn of(node: &Node) -> Tracked {
        Tracked {
            index: node.index,
            link: node.host_link.clone(),
            pid_ns: std::fs::read_link(format!("/proc/{}/ns/pid", node.init_pid))
                .unwrap()
                .display()
                .to_string(),
        }
    }

    fn footprint(&self, s: &HostState) -> Footprint {
        let cgroup = format!("switchyard-kube-{}", self.index);
        let processes = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let cgroups =
                    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                ns == self.pid_ns || cgroups.contains(&format!("/{cgroup}/"))
            })
            .collect();
        Footprint {
            links: s
                .links
                .iter()
                .filter(|l| {
                    l.split(':')
                        .nth(1)
                        .is_some_and(|n| n.trim().split('@').next() == Some(self.link.as_str()))
                })
                .cloned()
                .collect(),
            routes: s
                .routes
                .iter()
                .filter(|r| {
                    r.contains(&format!("dev {} ", self.link))
                        || r.ends_with(&format!("dev {}", self.link))
                })
                .cloned()
                .collect(),
            cgroups: s
                .cgroups
                .iter()
                .filter(|c| c.ends_with(&cgroup))
                .cloned()
                .collect(),
            locks: s
                .locks
                .iter()
                .filter(|l| **l == format!("{}.lock", self.index))
                .cloned()
                .collect(),
            processes,
            iptables: s.iptables.clone(),
            mounts: s.mounts.clone(),
        }
    }
}

fn lines(program: &str, args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(program).args(args).output();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            // Counters and the save time change on their own.
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                l.split_once(" [")
                    .filter(|_| l.starts_with(':'))
                    .map_or(l, |(chain, _)| chain)
                    .to_owned()
            })
            .collect(),
        Err(e) => panic!("{program}: {e}"),
    }
}

fn host_state() -> HostState {
    let cgroups = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .flat_map(|h| std::fs::read_dir(h.path()).into_iter().flatten().flatten())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.contains("switchyard-kube"))
        .collect();
    let locks = std::fs::read_dir("/run/switchyard-kube")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    HostState {
        links: lines("ip", &["-o", "link", "show"])
            .into_iter()
            // The link line carries its interface's counters and altnames; names suffice.
            .map(|l| l.split(':').take(2).collect::<Vec<_>>().join(":"))
            .collect(),
        routes: lines("ip", &["route", "show", "table", "all"]),
        iptables: lines("iptables-save", &[])
            .into_iter()
            .chain(lines("ip6tables-save", &[]))
            .collect(),
        mounts: std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect(),
        cgroups,
        locks,
    }
}

/// Starts a cluster, runs a Pod in it (so that containerd, a shim, a sandbox, a veth and
/// volumes exist), and returns it.
fn cluster_with_a_pod() -> KubeCluster {
    let cluster = KubeCluster::start_node();
    let ns = "lifecycle";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    cluster.apply_yaml(
        ns,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  terminationGracePeriodSeconds: 30\n  containers:\n  - {{name: c, image: {}, args: [serve]}}\n",
            node_images().echo
        ),
    );
    cluster.wait_pod_running(ns, "p", Duration::from_secs(60));
    cluster
}

/// Waits until `ok` holds for the footprint (the kernel removes a dead namespace's processes and
/// interfaces asynchronously), and returns the last footprint.
fn settle(tracked: &Tracked, ok: impl Fn(&Footprint) -> bool) -> Footprint {
    let mut f = tracked.footprint(&host_state());
    for _ in 0..150 {
        if ok(&f) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        f = tracked.footprint(&host_state());
    }
    f
}

#[test]
fn a_node_cluster_leaves_the_host_as_it_found_it_even_when_its_harness_is_killed() {
    // Images are built before the first snapshot: they are files, not host state. What an
    // earlier, killed run left behind is reaped first.
    node_images();
    let reaped = Command::new(harness_bin_dir().join("kube-node"))
        .arg("reap")
        .status()
        .unwrap();
    assert!(reaped.success(), "kube-node reap: {reaped}");
    let before = host_state();

    // A clean stop: the test process's exit closes the harness's standard input.
    let cluster = cluster_with_a_pod();
    let tracked = Tracked::of(cluster.node().unwrap());
    let during = tracked.footprint(&host_state());
    assert_eq!(
        during.links.len(),
        1,
        "{} while it runs: {:?}",
        tracked.link,
        during.links
    );
    assert!(
        during.routes.len() >= 2,
        "routes while it runs: {:?}",
        during.routes
    );
    assert!(!during.cgroups.is_empty(), "no cgroups while it runs");
    assert_eq!(during.locks.len(), 1, "no lock while it runs");
    assert!(
        during.processes.len() >= 8,
        "processes while it runs: {:?}",
        during.processes
    );
    let empty = |f: &Footprint| {
        f.links.is_empty()
            && f.routes.is_empty()
            && f.cgroups.is_empty()
            && f.locks.is_empty()
            && f.processes.is_empty()
            && f.iptables == before.iptables
            && f.mounts == before.mounts
    };
    let status = cluster.stop();
    assert!(status.success(), "kube-node cluster exited with {status}");
    let after = settle(&tracked, empty);
    assert!(empty(&after), "after a clean teardown: {after:?}");

    // A SIGKILL: the kernel ends every process of the cluster (its init dies with the
    // harness) and with them its namespaces, interfaces, routes, rules and mounts.
    let cluster = cluster_with_a_pod();
    let killed = Tracked::of(cluster.node().unwrap());
    cluster.kill();
    let kernel_done = |f: &Footprint| {
        f.processes.is_empty()
            && f.links.is_empty()
            && f.routes.is_empty()
            && f.iptables == before.iptables
            && f.mounts == before.mounts
    };
    let after_kill = settle(&killed, kernel_done);
    assert!(kernel_done(&after_kill), "after SIGKILL: {after_kill:?}");
    // What only a live process can remove: the reaper's work.
    assert!(
        !after_kill.cgroups.is_empty(),
        "cgroups vanished by themselves"
    );
    assert!(!after_kill.locks.is_empty(), "the lock vanished by itself");

    // The next cluster reaps the dead one's cgroups, lock and state directory.
    let cluster = cluster_with_a_pod();
    let next = Tracked::of(cluster.node().unwrap());
    let status = cluster.stop();
    assert!(status.success(), "kube-node cluster exited with {status}");
    for t in [&killed, &next] {
        let f = settle(t, empty);
        assert!(
            empty(&f),
            "cluster {} after a reap and a clean teardown: {f:?}",
            t.index
        );
    }
}
