package main

// The addresses of cluster number n (1..maxClusters), derived from n alone so that two
// clusters on one host never share an address, a route or an interface name:
//
//	host ── swy<n> 10.201.n.1/30 ══ veth ══ eth0 10.201.n.2/30 ── node netns
//	                                                   │ (API server, kubelet, DNS on 10.201.n.2)
//	                                                   └─ cni0 10.244.n.1/24 ── Pods 10.244.n.x
//	Services: 10.96.n.0/24 (kubernetes = 10.96.n.1), DNAT'd by kube-proxy in the node netns
//
// The host routes only the Pod and Service ranges into the node; the node and its Pods have no
// default route, so nothing they send can leave the machine.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// maxClusters bounds the cluster index (the third octet of every range).
const maxClusters = 250

// nodeName is the Node object's name in every cluster.
const nodeName = "switchyard-node"

type layout struct {
	Index       int    `json:"index"`
	Server      string `json:"server"`
	NodeName    string `json:"node"`
	NodeIP      string `json:"nodeIP"`
	HostIP      string `json:"hostIP"`
	HostLink    string `json:"hostLink"`
	LinkCIDR    string `json:"linkCIDR"`
	PodCIDR     string `json:"podCIDR"`
	PodGateway  string `json:"podGateway"`
	ServiceCIDR string `json:"serviceCIDR"`
	DNSIP       string `json:"dnsIP"`
	ClusterDNS  string `json:"clusterDomain"`
	CgroupRoot  string `json:"cgroupRoot"`
	InitPID     int    `json:"initPID,omitempty"`
}

func layoutFor(n int) layout {
	node := fmt.Sprintf("10.201.%d.2", n)
	return layout{
		Index:       n,
		Server:      fmt.Sprintf("https://%s:6443", node),
		NodeName:    nodeName,
		NodeIP:      node,
		HostIP:      fmt.Sprintf("10.201.%d.1", n),
		HostLink:    fmt.Sprintf("swy%d", n),
		LinkCIDR:    fmt.Sprintf("10.201.%d.0/30", n),
		PodCIDR:     fmt.Sprintf("10.244.%d.0/24", n),
		PodGateway:  fmt.Sprintf("10.244.%d.1", n),
		ServiceCIDR: fmt.Sprintf("10.96.%d.0/24", n),
		// CoreDNS listens on the node's address, as a node-local resolver does; kubelet points
		// every Pod's resolv.conf at it.
		DNSIP:      node,
		ClusterDNS: "cluster.local",
		CgroupRoot: fmt.Sprintf("/switchyard-kube-%d", n),
	}
}

// write stores the layout as dir/name (JSON), atomically.
func (l layout) write(dir, name string) error {
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomically(filepath.Join(dir, name), append(data, '\n'))
}

func readLayout(path string) (layout, error) {
	var l layout
	data, err := os.ReadFile(path)
	if err != nil {
		return l, err
	}
	return l, json.Unmarshal(data, &l)
}
