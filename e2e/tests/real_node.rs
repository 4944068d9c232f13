//! The real single-node cluster the Kubernetes suites stand on (`kube-node cluster`: API
//! server, controller-manager, scheduler, kubelet with containerd and CNI, kube-proxy in
//! iptables mode, CoreDNS), with the project's own images: Pods run, Deployments roll out,
//! Services balance, names resolve, `kubectl logs` and `exec` work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, time::Instant};

use serde_json::Value;
use switchyard_e2e::{
    images::node_images,
    kube::node_cluster,
    kube_mesh::{echo_deployment, service_yaml},
};

/// `switchyard-echo get … -o json` run in Pod `ns/pod`: responses by body.
fn get_from_pod(ns: &str, pod: &str, url: &str, count: u32) -> BTreeMap<String, u64> {
    let cluster = node_cluster();
    let count = count.to_string();
    let out = cluster.kubectl_ok(&[
        "exec",
        pod,
        "-n",
        ns,
        "--",
        "switchyard-echo",
        "get",
        url,
        "--count",
        &count,
        "--new-connection",
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["errors"], 0, "{url} from {pod}: {v}");
    v["by_body"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

#[test]
fn the_node_runs_a_deployment_whose_service_answers_by_dns_name_from_both_replicas() {
    let cluster = node_cluster();
    let node = cluster.node().expect("a node cluster");
    println!("node {} Ready in {:?}", node.name, cluster.started_in());
    let nodes = cluster.get_json(&["nodes"]);
    let ready = nodes["items"][0]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "node not Ready: {nodes}");

    let ns = cluster.namespace("node");
    let applied = Instant::now();
    cluster.apply_yaml(&ns, &echo_deployment("web", 2, &[]));
    cluster.apply_yaml(&ns, &service_yaml("web", "web"));
    cluster.wait_deployment_available(&ns, "web", std::time::Duration::from_secs(60));
    let endpoints = cluster.wait_ready_endpoints(&ns, "web", 2, std::time::Duration::from_secs(30));
    println!(
        "2-replica Deployment available with ready endpoints {endpoints:?} in {:?}",
        applied.elapsed()
    );
    // Both replicas, written by the EndpointSlice controller, are Pod IPs of the Pod network.
    let pods = cluster.get_json(&["pods", "-n", &ns, "-l", "app=web"]);
    let names: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{pods}");

    // A client in another Pod reaches the Service by every name a Pod may use, and
    // kube-proxy spreads new connections over both replicas.
    cluster.apply_yaml(
        &ns,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: client}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: {}, args: [sleep]}}\n",
            node_images().echo
        ),
    );
    cluster.wait_pod_running(&ns, "client", std::time::Duration::from_secs(60));
    for url in [
        "http://web/".to_owned(),
        format!("http://web.{ns}/"),
        format!("http://web.{ns}.svc.cluster.local/"),
    ] {
        let seen = get_from_pod(&ns, "client", &url, 20);
        assert_eq!(seen.values().sum::<u64>(), 20, "{url}: {seen:?}");
        for name in &names {
            assert!(
                seen.contains_key(name),
                "{url} never reached {name}: {seen:?}"
            );
        }
        println!("{url}: {seen:?}");
    }
    // Each replica's own address answers too, and the apiserver proxies logs from the kubelet.
    let logs = cluster.kubectl_ok(&["logs", "-n", &ns, &names[0]]);
    assert!(
        logs.contains("GET /"),
        "no request in {}'s log: {logs}",
        names[0]
    );

    let rss = cluster.component_rss_kib();
    let total: u64 = rss.iter().map(|(_, kib)| kib).sum();
    for (name, kib) in &rss {
        println!("{name}: {} MiB RSS", kib / 1024);
    }
    assert!(
        rss.iter().any(|(n, _)| n == "kube-node kubelet"),
        "no kubelet among {rss:?}"
    );
    assert!(total < 3 * 1024 * 1024, "the cluster uses {total} KiB");
}

#[test]
fn names_outside_the_cluster_do_not_resolve_and_nothing_routes_off_the_machine() {
    let cluster = node_cluster();
    let ns = cluster.namespace("dns");
    cluster.apply_yaml(
        &ns,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: client}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: {}, args: [sleep]}}\n",
            node_images().echo
        ),
    );
    cluster.wait_pod_running(&ns, "client", std::time::Duration::from_secs(60));
    let out = cluster
        .kubectl()
        .args([
            "exec",
            "client",
            "-n",
            &ns,
            "--",
            "switchyard-echo",
            "get",
            "http://example.com/",
            "--timeout",
            "3s",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "example.com answered");
    // An address outside the machine has no route from a Pod at all.
    let out = cluster
        .kubectl()
        .args([
            "exec",
            "client",
            "-n",
            &ns,
            "--",
            "switchyard-echo",
            "get",
            "http://198.51.100.1/",
            "--timeout",
            "3s",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "198.51.100.1 (TEST-NET-2) answered: {text}"
    );
    assert!(text.contains("ERR"), "{text}");
}
