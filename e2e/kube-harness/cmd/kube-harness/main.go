// Command kube-harness runs a real kube-apiserver (k8s.io/kubernetes as a library) on an
// embedded etcd, on loopback, for Switchyard's end-to-end tests.
//
// It generates a CA and serving certificate, an admin token (group system:masters) and a
// service-account signing key in --dir, starts etcd and the API server on free loopback ports,
// waits for /readyz, writes --dir/kubeconfig and then creates --dir/ready. It stops cleanly on
// SIGTERM/SIGINT, or when its standard input closes (the test process that started it died).
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	genericapiserver "k8s.io/apiserver/pkg/server"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	dir := flag.String("dir", "", "state directory (certificates, etcd data, kubeconfig); required")
	readyTimeout := flag.Duration("ready-timeout", 120*time.Second, "how long to wait for /readyz")
	watchStdin := flag.Bool("exit-on-stdin-eof", false, "shut down when standard input reaches EOF")
	verbosity := flag.Int("v", 0, "kube-apiserver log verbosity")
	flag.Parse()
	if *dir == "" {
		log.Fatal("--dir is required")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		log.Fatal(err)
	}
	if err := run(*dir, *readyTimeout, *watchStdin, *verbosity); err != nil {
		log.Fatal(err)
	}
}

func run(dir string, readyTimeout time.Duration, watchStdin bool, verbosity int) error {
	token, ca, err := writeCredentials(dir)
	if err != nil {
		return err
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdPort, peerPort, apiPort := ports[0], ports[1], ports[2]

	etcd, err := startEtcd(filepath.Join(dir, "etcd"), etcdPort, peerPort)
	if err != nil {
		return err
	}
	defer etcd.Close()

	// Constructed once per process: it installs the process's only signal handler.
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs([]string{
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(etcdPort),
		"--bind-address=127.0.0.1",
		// Without it the server picks the default route's address, and fails on a host without one.
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + dir,
		"--tls-cert-file=" + filepath.Join(dir, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(dir, "apiserver.key"),
		"--client-ca-file=" + filepath.Join(dir, "ca.crt"),
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		// There is no token controller, so the ServiceAccount admission plugin would reject every
		// Pod naming an account whose token Secret does not exist (envtest does the same).
		"--disable-admission-plugins=ServiceAccount",
		"--endpoint-reconciler-type=none",
		// Webhooks named by Service resolve through the Service's EndpointSlices, as in a cluster
		// without kube-proxy: tests publish the operator's loopback address there.
		"--enable-aggregator-routing=true",
		"--profiling=false",
		"--v=" + strconv.Itoa(verbosity),
	})

	go func() {
		if err := waitReady(apiPort, token, ca, readyTimeout); err != nil {
			log.Printf("kube-harness: %v", err)
			genericapiserver.RequestShutdown()
			return
		}
		if err := writeKubeconfig(dir, apiPort, token, ca); err != nil {
			log.Printf("kube-harness: %v", err)
			genericapiserver.RequestShutdown()
			return
		}
		fmt.Printf("kube-harness: ready on https://127.0.0.1:%d (kubeconfig %s)\n", apiPort, filepath.Join(dir, "kubeconfig"))
	}()
	if watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			genericapiserver.RequestShutdown()
		}()
	}
	return cmd.Execute()
}

// writeCredentials writes the CA, the serving certificate and key, the token file and the
// service-account key, and returns the admin token and the CA certificate (PEM).
func writeCredentials(dir string) (string, []byte, error) {
	chain, key, err := certutil.GenerateSelfSignedCertKey("127.0.0.1",
		[]net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost", "kubernetes.default.svc"})
	if err != nil {
		return "", nil, err
	}
	// The helper returns the leaf followed by the CA that signed it.
	_, rest := pem.Decode(chain)
	caBlock, _ := pem.Decode(rest)
	if caBlock == nil {
		return "", nil, fmt.Errorf("generated certificate has no CA block")
	}
	ca := pem.EncodeToMemory(caBlock)
	sa, err := keyutil.MakeEllipticPrivateKeyPEM()
	if err != nil {
		return "", nil, err
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", nil, err
	}
	token := hex.EncodeToString(raw)
	files := map[string][]byte{
		"apiserver.crt": chain,
		"apiserver.key": key,
		"ca.crt":        ca,
		"sa.key":        sa,
		"tokens.csv":    []byte(token + `,admin,admin-uid,"system:masters"` + "\n"),
		"token":         []byte(token),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return "", nil, err
		}
	}
	return token, ca, nil
}

// freePorts asks the kernel for n free loopback ports. They are released before use, so another
// process may take one in between; the test helper retries a failed start once.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func startEtcd(dataDir string, clientPort, peerPort int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dataDir
	// Test data is disposable: skipping fsync makes every write several times faster.
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	client := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(clientPort)}
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(peerPort)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcd not ready after 60s")
	}
}

func waitReady(port int, token string, ca []byte, timeout time.Duration) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return fmt.Errorf("bad CA PEM")
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/readyz", port), nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("status %d: %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("/readyz not ok after %s (last: %s)", timeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func writeKubeconfig(dir string, port int, token string, ca []byte) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:%d
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: e2e
  context:
    cluster: e2e
    user: admin
    namespace: default
current-context: e2e
`, port, base64.StdEncoding.EncodeToString(ca), token)
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path+".tmp", []byte(kc), 0o600); err != nil {
		return err
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return err
	}
	// Written last and atomically: its presence means the kubeconfig is complete and usable.
	if err := os.WriteFile(filepath.Join(dir, "ready.tmp"), []byte(strconv.Itoa(port)), 0o600); err != nil {
		return err
	}
	return os.Rename(filepath.Join(dir, "ready.tmp"), filepath.Join(dir, "ready"))
}
