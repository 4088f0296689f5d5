// Command apiserver runs a real Kubernetes API server for integration tests: an embedded etcd
// and kube-apiserver (built from the k8s.io/kubernetes and go.etcd.io/etcd/server/v3 modules),
// both on loopback, with a bearer token for a cluster admin. It writes DIR/kubeconfig once the
// API server answers, and runs until killed. Started again on the same DIR, it keeps its
// ports, certificates and etcd data: clients reconnect to the same address and find their
// objects (tests of agents that outlive an API server restart).
//
//	apiserver DIR
//
// It is its own module so that rampart's go.mod does not carry k8s.io/kubernetes.
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

const token = "rampart-test-admin"

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: apiserver DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	if err := run(dir); err != nil {
		fmt.Fprintln(os.Stderr, "apiserver:", err)
		os.Exit(1)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ports returns the etcd client, etcd peer and API server ports: those of an earlier run on
// dir, or free ones (recorded for the next run).
func ports(dir string) ([3]int, error) {
	var p [3]int
	file := filepath.Join(dir, "ports")
	if b, err := os.ReadFile(file); err == nil {
		if _, err := fmt.Sscanf(string(b), "%d %d %d", &p[0], &p[1], &p[2]); err == nil {
			return p, nil
		}
	}
	for i := range p {
		port, err := freePort()
		if err != nil {
			return p, err
		}
		p[i] = port
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, err
	}
	return p, os.WriteFile(file, []byte(fmt.Sprintf("%d %d %d\n", p[0], p[1], p[2])), 0o600)
}

func run(dir string) error {
	p, err := ports(dir)
	if err != nil {
		return err
	}
	etcdPort, peerPort, port := p[0], p[1], p[2]
	_ = os.Remove(filepath.Join(dir, "kubeconfig"))
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.LogLevel = "error"
	client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", etcdPort))
	peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		return fmt.Errorf("etcd did not become ready")
	}

	// Service-account signing key and the admin's token.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	keyFile := filepath.Join(dir, "sa.key")
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		return err
	}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return err
	}
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs([]string{
		"--etcd-servers=" + client.String(),
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--token-auth-file=" + tokens,
		"--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + keyFile,
		"--service-account-signing-key-file=" + keyFile,
		"--service-cluster-ip-range=10.96.0.0/16",
		// No controller-manager creates default service accounts.
		"--disable-admission-plugins=ServiceAccount",
		"--enable-priority-and-fairness=false",
	})
	go func() {
		if err := waitReady(port); err != nil {
			fmt.Fprintln(os.Stderr, "apiserver:", err)
			os.Exit(1)
		}
		kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %s}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, port, token)
		tmp := filepath.Join(dir, "kubeconfig.tmp")
		if err := os.WriteFile(tmp, []byte(kc), 0o600); err == nil {
			os.Rename(tmp, filepath.Join(dir, "kubeconfig"))
		}
	}()
	if code := cli.Run(cmd); code != 0 {
		return fmt.Errorf("kube-apiserver exited with %d", code)
	}
	return nil
}

// waitReady polls /readyz until the API server is up.
func waitReady(port int) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("https://127.0.0.1:%d/readyz", port), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver did not become ready")
}
