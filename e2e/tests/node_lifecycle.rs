//! A node cluster leaves nothing behind: after a clean teardown the host has the same
//! processes, interfaces, routes, iptables rules, mounts and cgroups as before; after its
//! harness is SIGKILLed, the kernel has removed every process, interface and mount, and the next
//! cluster's reaper removes the rest.
//!
//! Its own test binary, one test: it compares the whole host before and after, so no other
//! cluster may start or stop meanwhile in this process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, process::Command, time::Duration};

use switchyard_e2e::{
    images::node_images,
    kube::{KubeCluster, harness_bin_dir},
};

/// What a cluster could leave on the host, as comparable lines.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    links: BTreeSet<String>,
    routes: BTreeSet<String>,
    iptables: BTreeSet<String>,
    mounts: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    processes: BTreeSet<String>,
    locks: BTreeSet<String>,
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
    let processes = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        // A cluster's programs, whatever their arguments (not, say, a cargo build naming one).
        .filter(|c| {
            let program = c.split(' ').next().unwrap_or_default();
            let name = program.rsplit('/').next().unwrap_or_default();
            [
                "kube-node",
                "containerd",
                "containerd-shim-runc-v2",
                "pause",
                "switchyard-echo",
            ]
            .contains(&name)
        })
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
        processes,
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
    assert!(
        before.cgroups.is_empty(),
        "left after a reap: {:?}",
        before.cgroups
    );

    // A clean stop: the test process's exit closes the harness's standard input.
    let cluster = cluster_with_a_pod();
    let node = cluster.node().unwrap().clone();
    let during = host_state();
    assert!(
        during.links.iter().any(|l| l.contains(&node.host_link)),
        "no {} while the cluster runs: {:?}",
        node.host_link,
        during.links
    );
    assert!(
        !during.cgroups.is_empty(),
        "no cgroups while the cluster runs"
    );
    let status = cluster.stop();
    assert!(status.success(), "kube-node cluster exited with {status}");
    assert_eq!(host_state(), before, "after a clean teardown");

    // A SIGKILL: the kernel ends every process of the cluster (its init dies with the
    // harness) and with them its namespaces, interfaces, routes, rules and mounts.
    let cluster = cluster_with_a_pod();
    cluster.kill();
    // The kernel removes a dead namespace's interfaces asynchronously, after its last process.
    let gone = |s: &HostState| {
        s.processes == before.processes
            && s.links == before.links
            && s.routes == before.routes
            && s.iptables == before.iptables
            && s.mounts == before.mounts
    };
    let mut after_kill = host_state();
    for _ in 0..100 {
        if gone(&after_kill) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        after_kill = host_state();
    }
    assert_eq!(
        after_kill.processes, before.processes,
        "processes after SIGKILL"
    );
    assert_eq!(after_kill.links, before.links, "interfaces after SIGKILL");
    assert_eq!(after_kill.routes, before.routes, "routes after SIGKILL");
    assert_eq!(
        after_kill.iptables, before.iptables,
        "iptables after SIGKILL"
    );
    assert_eq!(after_kill.mounts, before.mounts, "mounts after SIGKILL");
    // What only a live process can remove: the reaper's work.
    assert_ne!(
        after_kill.cgroups, before.cgroups,
        "cgroups vanished by themselves"
    );

    // The next cluster reaps the dead one's cgroups, lock and state directory.
    let cluster = cluster_with_a_pod();
    let status = cluster.stop();
    assert!(status.success(), "kube-node cluster exited with {status}");
    assert_eq!(
        host_state(),
        before,
        "after a reaped SIGKILL and a clean teardown"
    );
}
