package main

// The configuration files of the node's components, from the cluster's layout. Paths under
// /run, /var/lib and /var/log are the cluster's own (node.go mounts them).

import (
	"fmt"
	"os"
	"path/filepath"
)

func (n *node) writeConfig() error {
	l := n.layout
	kc := filepath.Join(n.dir, "kubeconfig")
	files := map[string]string{
		"containerd.toml": fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
# No btrfs/zfs/devmapper/aufs here; "opt" would install into the host's /opt.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  # Without CAP_SYS_RESOURCE (CI VMs) runc cannot lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
    max_conf_num = 1
`, n.sandbox, filepath.Join(n.dir, "etc/cni/net.d")),

		// The Pods' bridge. No masquerade and no default route: a Pod reaches other Pods, the
		// Services and the node (and, through it, the host end of the veth), nothing else.
		"cni/net.d/10-switchyard.conflist": fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "switchyard",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": %q}, {"dst": %q}]
      }
    }
  ]
}
`, l.PodCIDR, l.PodGateway, l.ServiceCIDR, l.LinkCIDR),

		"kubelet.yaml": fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: %q
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: %q
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
clusterDNS: [%q]
clusterDomain: %q
resolvConf: %q
failSwapOn: false
failCgroupV1: false
volumePluginDir: %q
# The images are imported, never pulled: garbage collection must never remove them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1%%"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
serializeImagePulls: false
`, l.CgroupRoot, l.NodeIP, l.DNSIP, l.ClusterDNS, n.etc("resolv.conf"), filepath.Join(n.dir, "volume-plugins")),

		"proxy.yaml": fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %q
mode: iptables
clusterCIDR: %q
hostnameOverride: %q
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [%q]
iptables:
  localhostNodePorts: false
# Zero: leave the host's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, kc, l.PodCIDR, l.NodeName, l.NodeIP+"/32"),

		// Only the cluster's zones: a name outside them is REFUSED at once instead of leaving
		// the machine (there is no forward).
		"Corefile": fmt.Sprintf(`%[2]s:53 in-addr.arpa:53 ip6.arpa:53 {
    bind %[1]s
    errors
    health 127.0.0.1:8080
    ready 127.0.0.1:8181
    kubernetes %[2]s in-addr.arpa ip6.arpa {
        kubeconfig %[3]s
        pods insecure
        ttl 5
    }
    loadbalance
}
`, l.DNSIP, l.ClusterDNS, kc),

		// For hostNetwork Pods and dnsPolicy: Default.
		"resolv.conf": fmt.Sprintf("nameserver %s\nsearch %s\n", l.DNSIP, l.ClusterDNS),
	}
	for name, content := range files {
		path := n.etc(name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}
