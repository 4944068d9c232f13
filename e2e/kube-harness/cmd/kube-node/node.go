package main

// The node, inside the cluster's namespaces (started by `kube-node init`): it makes the mount
// namespace private, gives the cluster its own /run, /var/lib and /var/log, shadows the kernel
// sysctls the kubelet would change for the whole host, configures the node's network, writes
// every component's configuration, and runs containerd, the API server, the controller-manager,
// the scheduler, the kubelet, kube-proxy and CoreDNS until SIGTERM.
//
//	D/                    the state directory (host path, the same inside)
//	├─ layout.json        addresses (layout.go), written by the host side
//	├─ kubeconfig         admin kubeconfig (system:masters), server https://<node IP>:6443
//	├─ ready              written once the node is Ready (the layout, with the init PID)
//	├─ apiserver/         certificates, tokens, etcd data
//	├─ etc/               containerd.toml, cni/net.d, kubelet.yaml, proxy.yaml, Corefile, resolv.conf
//	├─ logs/<component>.log
//	└─ root/{var-lib,var-log}   bind-mounted on /var/lib and /var/log inside
//
// The kubelet, KCM and scheduler use the admin kubeconfig and the kubelet allows anonymous
// requests (AlwaysAllow) so the API server needs no client certificate for logs and exec: this
// is a test node, reachable only from this machine.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// shadowedSysctls are the host-wide kernel settings the kubelet sets when they differ from
// what it wants (kubelet's setupKernelTunables). Inside the cluster's mount namespace each is a
// file bind-mounted over the /proc/sys entry, so the kubelet reads and writes the file and the
// host keeps its values.
var shadowedSysctls = []string{
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
	"vm/overcommit_memory",
	"vm/panic_on_oom",
}

type node struct {
	dir      string
	layout   layout
	self     string
	sandbox  string
	images   []string
	v        string
	procs    []*exec.Cmd
	exitedCh chan string
}

func runNode(args []string) error {
	fs := flag.NewFlagSet("node", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory")
	index := fs.Int("index", 0, "cluster index")
	sandbox := fs.String("sandbox-image", "", "Pod sandbox image name")
	v := fs.Int("v", 0, "component log verbosity")
	var images multiFlag
	fs.Var(&images, "image", "OCI archive to import")
	_ = fs.Parse(args)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	n := &node{dir: *dir, layout: layoutFor(*index), self: self, sandbox: *sandbox, images: images,
		v: strconv.Itoa(*v), exitedCh: make(chan string, 16)}
	started := time.Now()
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	err = n.bringUp(started)
	if err == nil {
		select {
		case s := <-stop:
			fmt.Printf("kube-node node: %s: stopping\n", s)
		case name := <-n.exitedCh:
			err = fmt.Errorf("%s exited (see %s)", name, n.logPath(name))
		}
	}
	n.stopAll()
	return err
}

func (n *node) bringUp(started time.Time) error {
	for _, d := range []string{"logs", "etc/cni/net.d", "root/var-lib", "root/var-log", "sysctl", "volume-plugins"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := n.setupMounts(); err != nil {
		return fmt.Errorf("mounts: %w", err)
	}
	if err := n.setupCgroups(); err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	if err := n.setupNetwork(); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := n.writeConfig(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if err := n.start("containerd", "containerd", "--config", n.etc("containerd.toml")); err != nil {
		return err
	}
	if err := n.start("apiserver", n.self, "apiserver", "--dir", filepath.Join(n.dir, "apiserver"),
		"--node-ip", n.layout.NodeIP, "--service-cidr", n.layout.ServiceCIDR, "--v", n.v); err != nil {
		return err
	}
	// Images import (mostly gunzip) while the control plane starts; nothing needs them before
	// the first Pod, and `ready` waits for them.
	imported := make(chan error, 1)
	go func() {
		err := n.importImages()
		if err == nil {
			fmt.Printf("kube-node node: %d images imported after %s\n", len(n.images), since(started))
		}
		imported <- err
	}()
	if err := n.waitFile(filepath.Join(n.dir, "apiserver", "ready"), 120*time.Second, "apiserver"); err != nil {
		return err
	}
	if err := os.Link(filepath.Join(n.dir, "apiserver", "kubeconfig"), filepath.Join(n.dir, "kubeconfig")); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fmt.Printf("kube-node node: API server ready after %s\n", since(started))
	kc := filepath.Join(n.dir, "kubeconfig")
	apiDir := filepath.Join(n.dir, "apiserver")
	components := [][]string{
		{"controller-manager", "--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
			"--service-account-private-key-file=" + filepath.Join(apiDir, "sa.key"),
			"--root-ca-file=" + filepath.Join(apiDir, "ca.crt"),
			"--use-service-account-credentials=true",
			"--cluster-cidr=" + n.layout.PodCIDR, "--service-cluster-ip-range=" + n.layout.ServiceCIDR,
			"--flex-volume-plugin-dir=" + filepath.Join(n.dir, "volume-plugins"),
			"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=10257", "--cluster-name=switchyard", "--v=" + n.v},
		{"scheduler", "--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
			"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=10259", "--v=" + n.v},
		{"kubelet", "--config=" + n.etc("kubelet.yaml"), "--kubeconfig=" + kc, "--node-ip=" + n.layout.NodeIP,
			"--hostname-override=" + n.layout.NodeName, "--v=" + n.v},
		{"proxy", "--config=" + n.etc("proxy.yaml"), "--v=" + n.v},
		{"dns", "-conf", n.etc("Corefile")},
	}
	for _, c := range components {
		if err := n.start(c[0], n.self, c...); err != nil {
			return err
		}
	}
	client, err := n.client(kc)
	if err != nil {
		return err
	}
	if err := n.waitNodeReady(client, 120*time.Second); err != nil {
		return err
	}
	fmt.Printf("kube-node node: node Ready after %s\n", since(started))
	if err := n.waitDefaultServiceAccount(client, 60*time.Second); err != nil {
		return err
	}
	if err := n.waitHTTP("http://127.0.0.1:8181/ready", 60*time.Second, "dns"); err != nil {
		return err
	}
	if err := <-imported; err != nil {
		return err
	}
	ready := n.layout
	ready.InitPID = 0
	if l, err := readLayout(filepath.Join(n.dir, "layout.json")); err == nil {
		ready.InitPID = l.InitPID
	}
	if err := ready.write(n.dir, "ready"); err != nil {
		return err
	}
	fmt.Printf("kube-node node: ready after %s\n", since(started))
	return nil
}

func since(t time.Time) string { return time.Since(t).Round(10 * time.Millisecond).String() }

func (n *node) etc(name string) string { return filepath.Join(n.dir, "etc", name) }

func (n *node) logPath(name string) string { return filepath.Join(n.dir, "logs", name+".log") }

// === mounts ===

func (n *node) setupMounts() error {
	// Nothing done here may propagate to the host...
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	// ...and /proc must show this pid namespace (containerd and runc read it).
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	// /sys shows the interfaces of the network namespace that mounted it; keep the host's
	// cgroup hierarchies (the kubelet and runc create the cluster's cgroups there).
	if err := os.MkdirAll("/run", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755"); err != nil {
		return fmt.Errorf("mounting /run: %w", err)
	}
	cgroups := "/run/host-cgroup"
	if err := os.MkdirAll(cgroups, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("/sys/fs/cgroup", cgroups, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("keeping /sys/fs/cgroup: %w", err)
	}
	if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /sys: %w", err)
	}
	if err := unix.Mount(cgroups, "/sys/fs/cgroup", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("restoring /sys/fs/cgroup: %w", err)
	}
	for dst, src := range map[string]string{"/var/lib": "root/var-lib", "/var/log": "root/var-log"} {
		if err := unix.Mount(filepath.Join(n.dir, src), dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mounting %s: %w", dst, err)
		}
	}
	for _, name := range shadowedSysctls {
		target := filepath.Join("/proc/sys", name)
		value, err := os.ReadFile(target)
		if err != nil {
			return err
		}
		file := filepath.Join(n.dir, "sysctl", strings.ReplaceAll(name, "/", "."))
		if err := os.WriteFile(file, value, 0o644); err != nil {
			return err
		}
		if err := unix.Mount(file, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("shadowing %s: %w", target, err)
		}
	}
	// Mount propagation inside the cluster works as on a node (kubelet volumes, runc), in peer
	// groups of this namespace only.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("making / shared: %w", err)
	}
	return nil
}

// setupCgroups creates the kubelet's cgroup root in every hierarchy (the kubelet refuses a root
// that does not exist); cpuset needs its CPUs and memory nodes copied from the parent.
func (n *node) setupCgroups() error {
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hierarchies {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err != nil {
			continue
		}
		dir := filepath.Join(h, n.layout.CgroupRoot)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if value, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), value, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// === network ===

func (n *node) setupNetwork() error {
	// The host side writes once eth0 (the veth's node end) is in this namespace.
	syncPipe := os.NewFile(3, "sync")
	buf := make([]byte, 2)
	if _, err := syncPipe.Read(buf); err != nil {
		return fmt.Errorf("waiting for the host side: %w", err)
	}
	_ = syncPipe.Close()
	if err := unix.Sethostname([]byte(n.layout.NodeName)); err != nil {
		return err
	}
	l := n.layout
	steps := [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", l.NodeIP + "/30", "dev", "eth0"},
		{"link", "set", "eth0", "up"},
	}
	for _, step := range steps {
		if out, err := exec.Command("ip", step...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(step, " "), err, out)
		}
	}
	// Namespaced settings: forwarding between eth0 and the Pods' bridge, and bridged traffic
	// through iptables (kube-proxy's Service NAT between Pods on one bridge).
	for name, value := range map[string]string{
		"net/ipv4/ip_forward":                 "1",
		"net/bridge/bridge-nf-call-iptables":  "1",
		"net/bridge/bridge-nf-call-ip6tables": "1",
	} {
		if err := os.WriteFile(filepath.Join("/proc/sys", name), []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", name, err)
		}
	}
	return nil
}

// === processes ===

func (n *node) start(name, bin string, args ...string) error {
	log, err := os.OpenFile(n.logPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	n.procs = append(n.procs, cmd)
	go func() {
		err := cmd.Wait()
		_ = log.Close()
		n.exitedCh <- fmt.Sprintf("%s (%v)", name, err)
	}()
	return nil
}

// stopAll stops the components in reverse order of start: SIGTERM, then SIGKILL after 5 s.
// Pods are left to the kernel: init's exit kills every process of the pid namespace.
func (n *node) stopAll() {
	for i := len(n.procs) - 1; i >= 0; i-- {
		_ = n.procs[i].Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range n.procs {
		for time.Now().Before(deadline) && p.ProcessState == nil && syscall.Kill(p.Process.Pid, 0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		_ = p.Process.Kill()
	}
}

func (n *node) waitFile(path string, timeout time.Duration, component string) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case name := <-n.exitedCh:
			return fmt.Errorf("%s exited (see %s)", name, n.logPath(strings.Fields(name)[0]))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (see %s)", component, timeout, n.logPath(component))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *node) waitHTTP(url string, timeout time.Duration, component string) error {
	deadline := time.Now().Add(timeout)
	client := http.Client{Timeout: time.Second}
	for {
		if resp, err := client.Get(url); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (see %s)", component, timeout, n.logPath(component))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// importImages waits for containerd and imports every archive into the `k8s.io` namespace
// (the one the CRI plugin, hence the kubelet, uses).
func (n *node) importImages() error {
	sock := "/run/containerd/containerd.sock"
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := exec.Command("ctr", "--address", sock, "version").Run(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not up after 30s (see %s)", n.logPath("containerd"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// One import per archive, at once: each is mostly decompression, on its own core.
	errs := make(chan error, len(n.images))
	for _, image := range n.images {
		go func() {
			out, err := exec.Command("ctr", "--address", sock, "-n", "k8s.io", "images", "import", image).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("importing %s: %v: %s", image, err, out)
			}
			errs <- err
		}()
	}
	var first error
	for range n.images {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (n *node) client(kubeconfig string) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

func (n *node) waitNodeReady(client *kubernetes.Clientset, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if node, err := client.CoreV1().Nodes().Get(ctx, n.layout.NodeName, metav1.GetOptions{}); err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		select {
		case name := <-n.exitedCh:
			return fmt.Errorf("%s exited (see %s)", name, n.logPath(strings.Fields(name)[0]))
		case <-ctx.Done():
			return fmt.Errorf("node %s not Ready after %s (see %s)", n.layout.NodeName, timeout, n.logPath("kubelet"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitDefaultServiceAccount waits for the controller-manager to create `default` in
// `default`: until then ServiceAccount admission rejects every Pod there.
func (n *node) waitDefaultServiceAccount(client *kubernetes.Clientset, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if _, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no default ServiceAccount after %s (see %s)", timeout, n.logPath("controller-manager"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
