package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// apiServerBinary builds test/apiserver (a real kube-apiserver with an embedded etcd) once per
// source version, into the user's cache: the first build takes a few minutes.
func apiServerBinary(t *testing.T) string {
	t.Helper()
	src, err := filepath.Abs("../../../test/apiserver")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bin := filepath.Join(cache, "rampart", "test-apiserver-"+hex.EncodeToString(h.Sum(nil))[:12])
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.Command("go", "build", "-o", bin+".tmp", ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build test/apiserver: %v\n%s", err, out)
	}
	if err := os.Rename(bin+".tmp", bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// startAPIServer runs the API server and returns its kubeconfig; it is stopped (by PID) when
// the test ends.
func startAPIServer(t *testing.T) string {
	t.Helper()
	bin := apiServerBinary(t)
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "apiserver.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		logf.Close()
	})
	kc := filepath.Join(dir, "kubeconfig")
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, err := os.Stat(kc); err == nil {
			return kc
		}
		select {
		case err := <-exited:
			logf.Seek(0, io.SeekStart)
			b, _ := io.ReadAll(logf)
			t.Fatalf("the API server exited: %v\n%s", err, tail(string(b)))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the API server did not come up in 3 minutes")
		}
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

// installCRDs creates the network-policy-api CRDs (from the module rampart builds against)
// and waits until they are served.
func installCRDs(t *testing.T, ctx context.Context, dyn dynamic.Interface) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/network-policy-api").Output()
	if err != nil {
		t.Fatalf("locate sigs.k8s.io/network-policy-api: %v", err)
	}
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	for _, f := range []string{"policy.networking.k8s.io_adminnetworkpolicies.yaml", "policy.networking.k8s.io_baselineadminnetworkpolicies.yaml"} {
		fh, err := os.Open(filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "experimental", f))
		if err != nil {
			t.Fatal(err)
		}
		var u unstructured.Unstructured
		err = utilyaml.NewYAMLOrJSONDecoder(fh, 4096).Decode(&u.Object)
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(crdGVR).Create(ctx, &u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create CRD %s: %v", f, err)
		}
	}
	for _, gvr := range []schema.GroupVersionResource{anpGVR, banpGVR} {
		deadline := time.Now().Add(time.Minute)
		for {
			_, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not served: %v", gvr.Resource, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// TestLoadFromAPIServer reads a cluster from a real kube-apiserver (with etcd): core objects,
// NetworkPolicies and AdminNetworkPolicies (CRDs installed), and checks the evaluator's
// verdicts on what was read.
func TestLoadFromAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kc := startAPIServer(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	installCRDs(t, ctx, dyn)

	for _, o := range objects() {
		switch o := o.(type) {
		case *corev1.Namespace:
			_, err = cs.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Pod:
			status := o.Status
			var p *corev1.Pod
			p, err = cs.CoreV1().Pods(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			if err == nil { // the kubelet would report the address: write the status
				p.Status = status
				_, err = cs.CoreV1().Pods(o.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			}
		case *networkingv1.NetworkPolicy:
			_, err = cs.NetworkingV1().NetworkPolicies(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dyn.Resource(anpGVR).Create(ctx, anp(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	objs, err := Load(ctx, kc)
	if err != nil {
		t.Fatal(err)
	}
	checkObjects(t, objs)
	// A kubeconfig that points nowhere is an error naming it.
	if _, err := Load(ctx, filepath.Join(t.TempDir(), "missing")); err == nil || !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing kubeconfig: %v", err)
	}
}
