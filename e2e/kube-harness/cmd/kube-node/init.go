package main

// PID 1 of a cluster's namespaces. Orphans (containerd's shims daemonize) are re-parented to
// it, so it reaps every child; it runs `kube-node node` as its only direct child, forwards
// SIGTERM/SIGINT to it, and exits with its status. When it exits the kernel kills everything
// left in the pid namespace, Pods included.

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

func runInit(args []string) error {
	if os.Getpid() != 1 {
		return fmt.Errorf("init must be PID 1 of a new pid namespace (run `kube-node cluster`)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	node := exec.Command(self, append([]string{"node"}, args...)...)
	node.Stdin, node.Stdout, node.Stderr = os.Stdin, os.Stdout, os.Stderr
	// fd 3: the host side's "network is ready" pipe.
	node.ExtraFiles = []*os.File{os.NewFile(3, "sync")}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	if err := node.Start(); err != nil {
		return err
	}
	go func() {
		for s := range signals {
			_ = node.Process.Signal(s)
		}
	}()
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait: %w", err)
		}
		if pid == node.Process.Pid {
			if status.Exited() {
				os.Exit(status.ExitStatus())
			}
			os.Exit(128 + int(status.Signal()))
		}
	}
}
