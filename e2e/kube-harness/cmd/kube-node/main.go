// Command kube-node is a whole single-node Kubernetes cluster in one binary, for Switchyard's
// end-to-end tests: every component is the upstream code (k8s.io/kubernetes v1.34 and CoreDNS as
// Go modules), chosen by the first argument, like the old hyperkube.
//
//	kube-node cluster --dir D --image X.tar ...   a cluster in its own namespaces (needs root)
//	kube-node reap                                removes what killed clusters left (cgroups, state)
//	kube-node apiserver --dir D                   API server + etcd only, on loopback
//	kube-node controller-manager|scheduler|kubelet|proxy ARGS   the upstream commands
//	kube-node dns -conf Corefile                  CoreDNS with the plugins a cluster needs
//
// `cluster` is what tests run. It is laid out as
//
//	kube-node cluster            host namespaces: owns the cluster's index, veth and cleanup
//	└─ kube-node init            PID 1 of new pid/mount/net/uts/ipc namespaces: reaps orphans
//	   └─ kube-node node         mounts, network, configuration; starts and stops the rest
//	      ├─ containerd (Debian) ── shims, Pods
//	      ├─ kube-node apiserver (+ etcd)
//	      ├─ kube-node controller-manager, scheduler, kubelet, proxy
//	      └─ kube-node dns
//
// so that whatever happens to the test process, the kernel removes every process, mount,
// interface and iptables rule of the cluster with its namespaces (see cluster.go).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as upstream mains
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client metrics, as upstream mains
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream mains
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
	_ "time/tzdata" // CronJob time zones, as the upstream controller-manager
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kube-node cluster|reap|apiserver|controller-manager|scheduler|kubelet|proxy|dns [flags]")
		os.Exit(2)
	}
	sub, args := os.Args[1], os.Args[2:]
	var err error
	switch sub {
	case "cluster":
		err = runCluster(args)
	case "reap":
		reapStale()
	case "init":
		err = runInit(args)
	case "node":
		err = runNode(args)
	case "apiserver":
		err = runAPIServer(args)
	case "controller-manager":
		os.Exit(runCobra(kcm.NewControllerManagerCommand(), args))
	case "scheduler":
		os.Exit(runCobra(scheduler.NewSchedulerCommand(), args))
	case "kubelet":
		os.Exit(runCobra(kubelet.NewKubeletCommand(context.Background()), args))
	case "proxy":
		os.Exit(runCobra(proxy.NewProxyCommand(), args))
	case "dns":
		err = runDNS(args)
	default:
		err = fmt.Errorf("unknown command %q", sub)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-node %s: %v\n", sub, err)
		os.Exit(1)
	}
}

// runCobra runs an upstream component's command as its own main would.
func runCobra(cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	return cli.Run(cmd)
}
