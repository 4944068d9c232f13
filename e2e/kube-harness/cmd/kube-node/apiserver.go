package main

// The API server: a real kube-apiserver (k8s.io/kubernetes as a library) on an embedded etcd.
//
// Two modes share this code:
//   - API-server-only (`kube-node apiserver --dir D`): loopback, free ports, no node; the suites
//     that need no kubelet use it because it starts in ~4 s and builds nothing else.
//   - node mode (`--node-ip`, run by `kube-node node` inside a cluster's namespaces): fixed ports
//     on the node's address, ServiceAccount admission and the lease endpoint reconciler on, so
//     that Pods reach it through the `kubernetes` Service.
//
// It generates a CA and serving certificate, an admin token (group system:masters) and a
// service-account signing key in --dir, starts etcd and the API server, waits for /readyz,
// writes --dir/kubeconfig and then creates --dir/ready. It stops cleanly on SIGTERM/SIGINT, or
// when its standard input closes (with --exit-on-stdin-eof).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
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

// apiserverConfig is where and how the API server listens.
type apiserverConfig struct {
	dir string
	// bindIP is the address the API server serves on (and advertises): 127.0.0.1 without a
	// node, the node's address with one.
	bindIP net.IP
	// port is the API server's port; 0 picks a free one (API-server-only mode, where several
	// test processes share the host's loopback).
	port int
	// serviceCIDR is the Service ClusterIP range; its first address is the `kubernetes` Service.
	serviceCIDR *net.IPNet
	// node turns on what a cluster with a kubelet and controller-manager needs.
	node bool
}

func runAPIServer(args []string) error {
	fs := flag.NewFlagSet("apiserver", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory (certificates, etcd data, kubeconfig); required")
	nodeIP := fs.String("node-ip", "", "serve on this address, port --port, as a cluster's API server (default: loopback, free ports, no node)")
	port := fs.Int("port", 6443, "API server port with --node-ip")
	serviceCIDR := fs.String("service-cidr", "10.96.0.0/16", "Service ClusterIP range")
	readyTimeout := fs.Duration("ready-timeout", 120*time.Second, "how long to wait for /readyz")
	watchStdin := fs.Bool("exit-on-stdin-eof", false, "shut down when standard input reaches EOF")
	verbosity := fs.Int("v", 0, "kube-apiserver log verbosity")
	_ = fs.Parse(args)
	if *dir == "" {
		return fmt.Errorf("--dir is required")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	_, cidr, err := net.ParseCIDR(*serviceCIDR)
	if err != nil {
		return fmt.Errorf("--service-cidr: %w", err)
	}
	cfg := apiserverConfig{dir: *dir, bindIP: net.IPv4(127, 0, 0, 1), serviceCIDR: cidr}
	if *nodeIP != "" {
		cfg.bindIP = net.ParseIP(*nodeIP)
		if cfg.bindIP == nil {
			return fmt.Errorf("--node-ip %q: not an IP address", *nodeIP)
		}
		cfg.port, cfg.node = *port, true
	}
	return cfg.run(*readyTimeout, *watchStdin, *verbosity)
}

func (c apiserverConfig) run(readyTimeout time.Duration, watchStdin bool, verbosity int) error {
	kubernetesIP := firstIP(c.serviceCIDR)
	token, ca, err := writeCredentials(c.dir, []net.IP{c.bindIP, kubernetesIP, net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	etcdPort, peerPort, apiPort := 2379, 2380, c.port
	if !c.node {
		ports, err := freePorts(3)
		if err != nil {
			return err
		}
		etcdPort, peerPort, apiPort = ports[0], ports[1], ports[2]
	}

	etcd, err := startEtcd(filepath.Join(c.dir, "etcd"), etcdPort, peerPort)
	if err != nil {
		return err
	}
	defer etcd.Close()

	bind := c.bindIP.String()
	args := []string{
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(etcdPort),
		"--bind-address=" + bind,
		// Without it the server picks the default route's address, and fails on a host without one.
		"--advertise-address=" + bind,
		"--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + c.dir,
		"--tls-cert-file=" + filepath.Join(c.dir, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(c.dir, "apiserver.key"),
		"--client-ca-file=" + filepath.Join(c.dir, "ca.crt"),
		"--token-auth-file=" + filepath.Join(c.dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(c.dir, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(c.dir, "sa.key"),
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=" + c.serviceCIDR.String(),
		"--allow-privileged=true",
		// Webhooks and aggregated APIs named by Service resolve through the Service's
		// EndpointSlices: the API server dials the Pod (or, without a node, a test's loopback
		// address) directly instead of the ClusterIP.
		"--enable-aggregator-routing=true",
		// The aggregation layer's credentials, as kubeadm sets them: the API server proxies
		// to aggregated APIs with the front-proxy client certificate and the user in these
		// headers, and publishes the CA and header names in kube-system's
		// extension-apiserver-authentication ConfigMap for those servers to check.
		"--requestheader-client-ca-file=" + filepath.Join(c.dir, "front-proxy-ca.crt"),
		"--requestheader-allowed-names=" + frontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		// The user's UID too (RemoteRequestHeaderUID, on by default since 1.33): the operator
		// passes it on in its SubjectAccessReview.
		"--requestheader-uid-headers=X-Remote-Uid",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + filepath.Join(c.dir, "front-proxy-client.crt"),
		"--proxy-client-key-file=" + filepath.Join(c.dir, "front-proxy-client.key"),
		"--profiling=false",
		"--v=" + strconv.Itoa(verbosity),
	}
	if c.node {
		args = append(args,
			// The kubelet's serving address, for logs, exec and port-forward.
			"--kubelet-preferred-address-types=InternalIP",
			// The `kubernetes` Service's endpoint is this server, kept by a lease.
			"--endpoint-reconciler-type=lease",
		)
	} else {
		args = append(args,
			// There is no token controller, so the ServiceAccount admission plugin would
			// reject every Pod naming an account whose token Secret does not exist (envtest
			// does the same).
			"--disable-admission-plugins=ServiceAccount",
			"--endpoint-reconciler-type=none",
		)
	}
	// Constructed once per process: it installs the process's only signal handler.
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(args)

	server := fmt.Sprintf("https://%s", net.JoinHostPort(bind, strconv.Itoa(apiPort)))
	go func() {
		if err := waitReady(server, token, ca, readyTimeout); err != nil {
			log.Printf("kube-node apiserver: %v", err)
			genericapiserver.RequestShutdown()
			return
		}
		if err := writeKubeconfig(c.dir, server, token, ca); err != nil {
			log.Printf("kube-node apiserver: %v", err)
			genericapiserver.RequestShutdown()
			return
		}
		fmt.Printf("kube-node apiserver: ready on %s (kubeconfig %s)\n", server, filepath.Join(c.dir, "kubeconfig"))
	}()
	if watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			genericapiserver.RequestShutdown()
		}()
	}
	return cmd.Execute()
}

// firstIP is the first host address of a range: the `kubernetes` Service's ClusterIP.
func firstIP(cidr *net.IPNet) net.IP {
	ip := make(net.IP, len(cidr.IP))
	copy(ip, cidr.IP)
	ip[len(ip)-1]++
	return ip
}

// frontProxyClientName is the common name of the API server's client certificate towards
// aggregated APIs, and the one name they accept (kubeadm's).
const frontProxyClientName = "front-proxy-client"

// writeCredentials writes the CA, the serving certificate (for ips and the `kubernetes`
// Service's names) and key, the token file, the service-account key, and the front-proxy CA
// with its client certificate, and returns the admin token and the CA certificate (PEM).
func writeCredentials(dir string, ips []net.IP) (string, []byte, error) {
	chain, key, err := certutil.GenerateSelfSignedCertKey(ips[0].String(), ips,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
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
	frontCA, frontCert, frontKey, err := frontProxyCredentials()
	if err != nil {
		return "", nil, err
	}
	files := map[string][]byte{
		"front-proxy-ca.crt":     frontCA,
		"front-proxy-client.crt": frontCert,
		"front-proxy-client.key": frontKey,
		"apiserver.crt":          chain,
		"apiserver.key":          key,
		"ca.crt":                 ca,
		"sa.key":                 sa,
		"tokens.csv":             []byte(token + `,admin,admin-uid,"system:masters"` + "\n"),
		"token":                  []byte(token),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return "", nil, err
		}
	}
	return token, ca, nil
}

// frontProxyCredentials generates the front-proxy CA, a client certificate it signs for
// frontProxyClientName (client auth only), and that certificate's key, all PEM. The CA is
// separate from the cluster CA, as in kubeadm: a certificate the cluster CA signs for a user
// must not pass as the aggregator.
func frontProxyCredentials() (caPEM, certPEM, keyPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	ca, err := certutil.NewSelfSignedCACert(certutil.Config{CommonName: "front-proxy-ca"}, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	template := x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: frontProxyClientName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	return caPEM, certPEM, keyPEM, nil
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

func waitReady(server, token string, ca []byte, timeout time.Duration) error {
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
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+"/readyz", nil)
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

func writeKubeconfig(dir, server, token string, ca []byte) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
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
`, server, base64.StdEncoding.EncodeToString(ca), token)
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path+".tmp", []byte(kc), 0o600); err != nil {
		return err
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return err
	}
	// Written last and atomically: its presence means the kubeconfig is complete and usable.
	// The port stays its content for the API-server-only mode's readers.
	_, port, _ := net.SplitHostPort(server[len("https://"):])
	return writeAtomically(filepath.Join(dir, "ready"), []byte(port))
}

func writeAtomically(path string, data []byte) error {
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}
