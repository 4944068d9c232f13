package main

// The host side of a cluster: picks a free cluster index, starts `kube-node init` in new
// pid, mount, network, UTS and IPC namespaces, connects the node's network namespace to the host
// with a veth pair, waits until the node is Ready, and tears everything down when its standard
// input closes (the test process died, however it died) or on SIGTERM/SIGINT.
//
// What lives where, and who removes it:
//   - every process of the cluster (components, containerd, shims, Pods) is in the new pid
//     namespace: when its init exits, the kernel kills all of them;
//   - every mount (containerd's snapshots, Pods' volumes, netns bind mounts, the shadowed
//     sysctls) is in the new mount namespace and disappears with it;
//   - every interface, route and iptables rule of the node and its Pods is in the node's
//     network namespace or a Pod's; the host end of the veth (and the host routes through it)
//     goes when the node namespace goes;
//   - what the kernel does not remove: the cgroups kubelet and runc create under
//     /sys/fs/cgroup/*/switchyard-kube-<n>, the state directory, and the index lock. This process
//     removes them at teardown; a later `cluster` run reaps them when this one was SIGKILLed.
//
// The index lock /run/switchyard-kube/<n>.lock is held (flock) for the cluster's life; a lock
// file nobody holds belongs to a dead cluster, which the reaper cleans before taking an index.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const lockDir = "/run/switchyard-kube"

// stateMarker marks a directory as a cluster's state directory: the reaper removes only those.
const stateMarker = ".switchyard-kube-state"

func runCluster(args []string) error {
	fs := flag.NewFlagSet("cluster", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory (created; removed at teardown unless it holds a file named `keep`); required")
	var images multiFlag
	fs.Var(&images, "image", "OCI image archive to import into the node's containerd (repeatable)")
	sandbox := fs.String("sandbox-image", "", "the Pod sandbox (pause) image's name, imported with --image; required")
	readyTimeout := fs.Duration("ready-timeout", 180*time.Second, "how long the node may take to become Ready")
	watchStdin := fs.Bool("exit-on-stdin-eof", false, "tear down when standard input reaches EOF")
	verbosity := fs.Int("v", 0, "log verbosity of the Kubernetes components")
	_ = fs.Parse(args)
	if *dir == "" || *sandbox == "" {
		return fmt.Errorf("--dir and --sandbox-image are required")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("a cluster needs root (namespaces, mounts, cgroups, iptables)")
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(abs, stateMarker), nil, 0o600); err != nil {
		return err
	}
	reapStale()
	lock, n, err := allocateIndex(abs)
	if err != nil {
		return err
	}
	l := layoutFor(n)
	c := &cluster{dir: abs, layout: l, lock: lock}
	defer c.teardown()

	nodeArgs := []string{"--dir", abs, "--index", strconv.Itoa(n), "--sandbox-image", *sandbox, "--v", strconv.Itoa(*verbosity)}
	for _, image := range images {
		path, err := filepath.Abs(image)
		if err != nil {
			return err
		}
		nodeArgs = append(nodeArgs, "--image", path)
	}
	if err := c.start(nodeArgs); err != nil {
		return err
	}
	if err := c.waitReady(*readyTimeout); err != nil {
		return err
	}
	fmt.Printf("kube-node cluster: node %s Ready; API server %s (kubeconfig %s)\n", l.NodeName, l.Server, filepath.Join(abs, "kubeconfig"))

	stop := make(chan string, 2)
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() { stop <- "signal " + (<-signals).String() }()
	if *watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- "standard input closed"
		}()
	}
	select {
	case why := <-stop:
		fmt.Printf("kube-node cluster: stopping (%s)\n", why)
		return nil
	case err := <-c.exited:
		return fmt.Errorf("the node exited: %v", err)
	}
}

type cluster struct {
	dir    string
	layout layout
	lock   *os.File
	init   *exec.Cmd
	exited chan error
}

// start runs `kube-node init` in new namespaces and wires its network namespace to the host.
func (c *cluster) start(nodeArgs []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer syncR.Close()
	defer syncW.Close()
	c.init = exec.Command(self, append([]string{"init"}, nodeArgs...)...)
	c.init.Stdout, c.init.Stderr = os.Stdout, os.Stderr
	c.init.ExtraFiles = []*os.File{syncR}
	c.init.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		// If this process dies without tearing down (SIGKILL), init dies too, and with it
		// every process of the cluster. Pdeathsig follows the thread that started the child:
		// keep it.
		Pdeathsig: syscall.SIGKILL,
	}
	runtime.LockOSThread()
	if err := c.init.Start(); err != nil {
		return fmt.Errorf("starting the node's namespaces: %w", err)
	}
	c.exited = make(chan error, 1)
	go func() { c.exited <- c.init.Wait() }()
	l := c.layout
	l.InitPID = c.init.Process.Pid
	if err := l.write(c.dir, "layout.json"); err != nil {
		return err
	}
	pid := strconv.Itoa(c.init.Process.Pid)
	steps := [][]string{
		{"link", "add", l.HostLink, "type", "veth", "peer", "name", "eth0", "netns", pid},
		{"addr", "add", l.HostIP + "/30", "dev", l.HostLink},
		{"link", "set", l.HostLink, "up"},
		{"route", "add", l.PodCIDR, "via", l.NodeIP, "dev", l.HostLink},
		{"route", "add", l.ServiceCIDR, "via", l.NodeIP, "dev", l.HostLink},
	}
	for _, step := range steps {
		if out, err := exec.Command("ip", step...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(step, " "), err, out)
		}
	}
	_, err = syncW.Write([]byte("go"))
	return err
}

func (c *cluster) waitReady(timeout time.Duration) error {
	deadline := time.After(timeout)
	ready := filepath.Join(c.dir, "ready")
	for {
		if _, err := os.Stat(ready); err == nil {
			return nil
		}
		select {
		case err := <-c.exited:
			return fmt.Errorf("the node exited before it was Ready: %v (logs in %s)", err, filepath.Join(c.dir, "logs"))
		case <-deadline:
			return fmt.Errorf("the node was not Ready after %s (logs in %s)", timeout, filepath.Join(c.dir, "logs"))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// teardown stops the node (SIGTERM, then SIGKILL after 20 s), then removes what the kernel
// does not: cgroups, the state directory (unless it holds `keep`), the index lock.
func (c *cluster) teardown() {
	if c.init != nil && c.init.Process != nil {
		_ = c.init.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(20 * time.Second):
			_ = c.init.Process.Kill()
			<-c.exited
		}
	}
	cleanupIndex(c.layout.Index, c.dir)
	releaseIndex(c.lock, c.layout.Index)
}

// === the index ===

// allocateIndex takes the lowest free cluster index and holds its lock; the lock file names
// the state directory, for the reaper.
func allocateIndex(dir string) (*os.File, int, error) {
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, 0, err
	}
	for n := 1; n <= maxClusters; n++ {
		f, ok, err := tryLock(lockPath(n))
		if err != nil {
			return nil, 0, err
		}
		if !ok {
			continue
		}
		// A lock left by a dead cluster whose reaping failed: its addresses may still be in
		// use, so skip the index.
		if old, _ := io.ReadAll(f); len(old) > 0 {
			_ = f.Close()
			continue
		}
		if _, err := f.WriteString(dir); err != nil {
			_ = f.Close()
			return nil, 0, err
		}
		return f, n, nil
	}
	return nil, 0, fmt.Errorf("no free cluster index in 1..%d (see %s)", maxClusters, lockDir)
}

func lockPath(n int) string { return filepath.Join(lockDir, strconv.Itoa(n)+".lock") }

// tryLock opens and flocks path without waiting. It retries when the file it locked was
// unlinked meanwhile (a reaper or a teardown released that index): a lock on an unlinked file
// protects nothing.
func tryLock(path string) (*os.File, bool, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, false, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			_ = f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, false, nil
			}
			return nil, false, err
		}
		var held, named unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &named) == nil && held.Ino == named.Ino {
			return f, true, nil
		}
		_ = f.Close()
	}
}

func releaseIndex(f *os.File, n int) {
	if f == nil {
		return
	}
	// Unlinked while still held, so that nobody can lock the old file after this.
	_ = os.Remove(lockPath(n))
	_ = f.Close()
}

// reapStale cleans up after clusters whose `cluster` process died without tearing down.
func reapStale() {
	entries, err := os.ReadDir(lockDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		n, err := strconv.Atoi(strings.TrimSuffix(name, ".lock"))
		if err != nil || !strings.HasSuffix(name, ".lock") {
			continue
		}
		f, ok, err := tryLock(lockPath(n))
		if err != nil || !ok {
			continue
		}
		dir, _ := io.ReadAll(f)
		fmt.Fprintf(os.Stderr, "kube-node cluster: reaping stale cluster %d (%s)\n", n, dir)
		if cleanupIndex(n, string(dir)) {
			releaseIndex(f, n)
		} else {
			_ = f.Close()
		}
	}
}

// cleanupIndex removes what a cluster leaves after its namespaces are gone; true when nothing
// is left.
func cleanupIndex(n int, dir string) bool {
	l := layoutFor(n)
	// Gone with the node's namespace, unless a process outside the pid namespace held it.
	if err := exec.Command("ip", "link", "show", l.HostLink).Run(); err == nil {
		_ = exec.Command("ip", "link", "del", l.HostLink).Run()
	}
	clean := removeCgroups(l.CgroupRoot)
	if dir != "" {
		if _, err := os.Stat(filepath.Join(dir, stateMarker)); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "keep")); err == nil {
				fmt.Fprintf(os.Stderr, "kube-node cluster: keeping %s\n", dir)
			} else if err := os.RemoveAll(dir); err != nil {
				fmt.Fprintf(os.Stderr, "kube-node cluster: removing %s: %v\n", dir, err)
			}
		}
	}
	return clean
}

// removeCgroups removes root and its descendants in every cgroup v1 hierarchy (and the v2
// one), killing any process still in them; true when none is left after 15 s.
func removeCgroups(root string) bool {
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := 0
		for _, h := range hierarchies {
			left += removeTree(filepath.Join(h, root))
		}
		if left == 0 {
			return true
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "kube-node cluster: %d cgroups under %s could not be removed\n", left, root)
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeTree kills the processes of a cgroup directory tree and removes it bottom-up; it
// returns how many directories are left.
func removeTree(dir string) int {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	left := 0
	for _, e := range entries {
		if e.IsDir() {
			left += removeTree(filepath.Join(dir, e.Name()))
		}
	}
	if procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
		for _, line := range strings.Fields(string(procs)) {
			if pid, err := strconv.Atoi(line); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		left++
	}
	return left
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
