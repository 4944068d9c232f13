package main

// Cluster DNS: CoreDNS (github.com/coredns/coredns as a Go module) with only the plugins a
// cluster's resolver needs. There is deliberately no `forward`: names outside the cluster get
// SERVFAIL instead of a query leaving the machine.

import (
	"os"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// dnsDirectives is the order the plugins above run in, a subsequence of CoreDNS's own.
var dnsDirectives = []string{"bind", "ready", "health", "errors", "log", "loadbalance", "kubernetes"}

// runDNS runs CoreDNS with CoreDNS's own flags (`-conf FILE`).
func runDNS(args []string) error {
	dnsserver.Directives = dnsDirectives
	os.Args = append([]string{"coredns"}, args...)
	coremain.Run()
	return nil
}
