package kube

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	npclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"

	"github.com/rampart-sec/rampart/deploy"
	"github.com/rampart-sec/rampart/internal/lab/apiserver"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/threat"
)

// startAPIServer runs a real kube-apiserver (with etcd) on dir, stopped when the test ends.
func startAPIServer(t *testing.T, dir string) (*apiserver.Server, *rest.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	srv, err := apiserver.Start(ctx, dir, apiserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	cfg, err := clientcmd.BuildConfigFromFlags("", srv.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return srv, cfg
}

func createObjects(t *testing.T, ctx context.Context, cs kubernetes.Interface) {
	t.Helper()
	for _, o := range objects() {
		var err error
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
}

// TestAPIServer runs the informer source against a real kube-apiserver: a cluster without the
// network-policy-api CRDs syncs, the admin policies arrive once the CRDs are installed, Load
// (the CLI's path) reads the same, changes are followed, and an API server restart is
// survived: the source reports the outage and sees changes made after the server returned.
// deploy/ passes the server's dry run.
func TestAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	srv, cfg := startAPIServer(t, dir)
	cs := kubernetes.NewForConfigOrDie(cfg)
	np := npclient.NewForConfigOrDie(cfg)
	createObjects(t, ctx, cs)

	// The agent's own client (restAPI), not a clientset.
	s, err := NewFromConfig(cfg, Options{CRDPoll: 100 * time.Millisecond, HealthPoll: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	changed := s.Subscribe(ctx)
	go func() { _ = s.Run(ctx) }()
	select {
	case <-s.Synced():
	case <-ctx.Done():
		t.Fatal("no sync")
	}
	wait := func(what string, cond func(c *model.Cluster) bool) {
		t.Helper()
		for {
			if c, _ := s.Snapshot(); cond(c) {
				return
			}
			select {
			case <-changed:
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: not seen in 30s", what)
			}
		}
	}
	if c, _ := s.Snapshot(); len(c.Pods) != 3 || len(c.ANPs) != 0 {
		t.Fatalf("before the CRDs: %d pods, %d ANPs", len(c.Pods), len(c.ANPs))
	}

	if err := apiserver.InstallCRDs(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := np.PolicyV1alpha1().AdminNetworkPolicies().Create(ctx, anp(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("the AdminNetworkPolicy", func(c *model.Cluster) bool { return len(c.ANPs) == 1 })
	c, _ := s.Snapshot()
	checkCluster(t, c)
	// ClusterNetworkPolicy: watched once its CRD is served, written through either version.
	cnp := &cnpv1alpha2.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "cnp"}, Spec: cnpv1alpha2.ClusterNetworkPolicySpec{
		Tier: cnpv1alpha2.BaselineTier, Priority: 3, Subject: cnpv1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{}},
		Ingress: []cnpv1alpha2.ClusterNetworkPolicyIngressRule{{Action: cnpv1alpha2.ClusterNetworkPolicyRuleActionDeny,
			From: []cnpv1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{}}}}}}}
	if _, err := np.PolicyV1alpha2().ClusterNetworkPolicies().Create(ctx, cnp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("the ClusterNetworkPolicy", func(c *model.Cluster) bool {
		return c.CNPs["cnp"] != nil && c.CNPs["cnp"].Spec.Tier == cnpv1alpha2.BaselineTier
	})

	// A gap becomes a Warning Event on the policy object.
	events := NewEvents(s, "rampart-agent", "n1")
	events.Gap(model.Gap{Kind: model.KindCNP, Name: "cnp", Field: "spec.egress[0].to[0].domainNames", Msg: "not enforced"})
	waitEvent := func(ns, what string, match func(e corev1.Event) bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs.Items {
				if match(e) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no Event %s: %v", what, evs.Items)
			}
		}
	}
	waitEvent(metav1.NamespaceDefault, EventReasonNotEnforced+" on ClusterNetworkPolicy cnp", func(e corev1.Event) bool {
		return e.Reason == EventReasonNotEnforced && e.InvolvedObject.Kind == model.KindCNP && e.InvolvedObject.Name == "cnp" &&
			e.Type == "Warning" && strings.Contains(e.Message, "domainNames")
	})
	// A threat-defense alert becomes a Warning Event on the pod it affects.
	events.Alert(threat.Alert{Type: threat.TypePortScan, Source: threat.Party{Namespace: "other", Pod: "scanner"},
		Target: threat.Party{Namespace: "shop", Pod: "web"}, Response: "alert", Message: "vertical port scan"})
	waitEvent("shop", "PortScan on pod shop/web", func(e corev1.Event) bool {
		return e.Reason == "PortScan" && e.InvolvedObject.Kind == model.KindPod && e.InvolvedObject.Namespace == "shop" &&
			e.InvolvedObject.Name == "web" && e.Type == "Warning" && strings.Contains(e.Message, "vertical port scan (response: alert)")
	})
	events.Stop()

	lc, unenforced, err := Load(ctx, srv.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	checkCluster(t, lc)
	if len(lc.CNPs) != 1 || len(unenforced) != 0 {
		t.Errorf("Load: %d ClusterNetworkPolicies, unenforced kinds %v; want 1 and none", len(lc.CNPs), unenforced)
	}
	if _, _, err := Load(ctx, filepath.Join(t.TempDir(), "missing")); err == nil || !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing kubeconfig: %v", err)
	}

	// deploy/ is accepted by the server: its Namespace is created (a dry-run namespace would
	// not hold the rest), then every other object passes a server-side dry run.
	for i, f := range deploy.Resources {
		b, err := deploy.Files.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := apiserver.Create(ctx, cfg, b, i > 0); err != nil {
			t.Errorf("deploy/%s: %v", f, err)
		}
	}

	// The API server goes away: the source says so and keeps the last state.
	srv.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for s.Status().Connected {
		if time.Now().After(deadline) {
			t.Fatal("the source still reports a connection 30s after the server stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c, _ := s.Snapshot(); len(c.ANPs) != 1 || len(c.Pods) != 3 {
		t.Fatalf("state lost while disconnected: %d pods, %d ANPs", len(c.Pods), len(c.ANPs))
	}
	// It comes back (same address, same etcd): a change made right after is seen.
	_, cfg = startAPIServer(t, dir)
	cs2 := kubernetes.NewForConfigOrDie(cfg)
	var lastErr error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if lastErr = cs2.NetworkingV1().NetworkPolicies("shop").Delete(ctx, "db-from-web", metav1.DeleteOptions{}); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatal(lastErr)
	}
	wait("the deletion after the restart", func(c *model.Cluster) bool { return len(c.NetworkPolicies) == 0 })
	deadline = time.Now().Add(30 * time.Second)
	for !s.Status().Connected {
		if time.Now().After(deadline) {
			t.Fatal("the source does not report the connection back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const ciliumCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: ciliumnetworkpolicies.cilium.io}
spec:
  group: cilium.io
  scope: Namespaced
  names: {kind: CiliumNetworkPolicy, plural: ciliumnetworkpolicies, singular: ciliumnetworkpolicy, listKind: CiliumNetworkPolicyList}
  versions:
  - name: v2
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`

// No silent gaps in a cluster: objects of a policy kind rampart does not enforce (here a
// CiliumNetworkPolicy, its CRD installed after the agent started) are found, named and posted
// as Warning Events on themselves.
func TestAPIServerUnenforcedKinds(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, cfg := startAPIServer(t, t.TempDir())
	cs := kubernetes.NewForConfigOrDie(cfg)
	createObjects(t, ctx, cs)
	s, err := NewFromConfig(cfg, Options{UnenforcedPoll: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	changed := s.Subscribe(ctx)
	go func() { _ = s.Run(ctx) }()
	<-s.Synced()
	if g := s.Gaps(); len(g) != 0 {
		t.Fatalf("gaps before any unenforced kind: %v", g)
	}
	if err := apiserver.Create(ctx, cfg, []byte(ciliumCRD), false); err != nil {
		t.Fatal(err)
	}
	obj := []byte("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: l7, namespace: shop}\nspec: {endpointSelector: {}}\n")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		err := apiserver.Create(ctx, cfg, obj, false)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("create the CiliumNetworkPolicy: %v", err)
		}
	}
	want := "cilium.io/v2 CiliumNetworkPolicy shop/l7: rampart does not enforce this policy kind"
	for deadline := time.Now().Add(30 * time.Second); ; {
		g := s.Gaps()
		if len(g) == 1 && strings.HasPrefix(g[0].String(), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gaps %v, want %q", g, want)
		}
		select {
		case <-changed:
		case <-time.After(time.Second):
		}
	}
	if kinds, err := UnenforcedKinds(ctx, s); err != nil || len(kinds) != 1 || kinds[0] != "cilium.io/v2 CiliumNetworkPolicy" {
		t.Errorf("UnenforcedKinds = %v, %v", kinds, err)
	}
	events := NewEvents(s, "rampart-agent", "n1")
	defer events.Stop()
	events.Gap(s.Gaps()[0])
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		evs, err := cs.CoreV1().Events("shop").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range evs.Items {
			found = found || e.Reason == EventReasonNotEnforced && e.InvolvedObject.Kind == "CiliumNetworkPolicy" &&
				e.InvolvedObject.APIVersion == "cilium.io/v2" && e.InvolvedObject.Name == "l7"
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no PolicyNotEnforced Event on shop/l7: %v", evs.Items)
		}
	}
	// Deleted, it is no gap any more.
	md := s.md.Resource(schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumnetworkpolicies"})
	if err := md.Namespace("shop").Delete(ctx, "l7", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); len(s.Gaps()) != 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gaps after the deletion: %v", s.Gaps())
		}
	}
}
