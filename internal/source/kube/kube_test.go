package kube

import (
	"context"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
)

func objects() []runtime.Object {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"kubernetes.io/metadata.name": "shop"}}}
	pod := func(name, ip string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: map[string]string{"app": name}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "shop/" + name + ":1", Ports: []corev1.ContainerPort{{ContainerPort: 80, Protocol: corev1.ProtocolTCP}}}}},
			Status:     corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, Phase: corev1.PodRunning},
		}
	}
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-from-web"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}}},
		},
	}
	return []runtime.Object{ns, pod("web", "10.244.0.10"), pod("db", "10.244.0.11"), pod("batch", "10.244.0.12"), np}
}

func anp() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "policy.networking.k8s.io/v1alpha1",
		"kind":       "AdminNetworkPolicy",
		"metadata":   map[string]any{"name": "deny-batch-to-db"},
		"spec": map[string]any{
			"priority": int64(10),
			"subject":  map[string]any{"pods": map[string]any{"namespaceSelector": map[string]any{}, "podSelector": map[string]any{"matchLabels": map[string]any{"app": "web"}}}},
			"egress": []any{map[string]any{"name": "no-batch", "action": "Deny",
				"to": []any{map[string]any{"pods": map[string]any{"namespaceSelector": map[string]any{}, "podSelector": map[string]any{"matchLabels": map[string]any{"app": "batch"}}}}}}},
		},
	}}
}

func listKinds() map[schema.GroupVersionResource]string {
	return map[schema.GroupVersionResource]string{anpGVR: "AdminNetworkPolicyList", banpGVR: "BaselineAdminNetworkPolicyList"}
}

func TestList(t *testing.T) {
	cs := fake.NewSimpleClientset(objects()...)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds(), anp())
	objs, err := List(context.Background(), cs, dyn)
	if err != nil {
		t.Fatal(err)
	}
	checkObjects(t, objs)
}

// checkObjects checks that objs hold what objects() and anp() describe (in namespace shop;
// a real API server adds its own namespaces) and that the evaluator decides as they say.
func checkObjects(t *testing.T, objs []model.Object) {
	t.Helper()
	counts := map[string]int{}
	for _, o := range objs {
		if o.Meta().Namespace == "shop" || o.Kind == model.KindANP || (o.Kind == model.KindNamespace && o.Meta().Name == "shop") {
			counts[o.Kind]++
		}
	}
	want := map[string]int{model.KindNamespace: 1, model.KindPod: 3, model.KindNetworkPolicy: 1, model.KindANP: 1}
	for k, n := range want {
		if counts[k] != n {
			t.Errorf("%s: %d, want %d (all: %v)", k, counts[k], n, counts)
		}
	}
	rs, err := compile.Compile(model.FromObjects(objs))
	if err != nil {
		t.Fatal(err)
	}
	ev := policy.New(rs)
	flow := func(src, dst string) bool {
		return ev.Verdict(policy.Flow{Src: mustIP(src), Dst: mustIP(dst), Protocol: 6, Port: 80}).Allowed
	}
	if !flow("10.244.0.10", "10.244.0.11") {
		t.Error("web -> db denied; the NetworkPolicy allows it")
	}
	if flow("10.244.0.12", "10.244.0.11") {
		t.Error("batch -> db allowed; the NetworkPolicy isolates db")
	}
	if flow("10.244.0.10", "10.244.0.12") {
		t.Error("web -> batch allowed; the AdminNetworkPolicy denies it")
	}
}

func TestListWithoutCRDs(t *testing.T) {
	cs := fake.NewSimpleClientset(objects()...)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds())
	dyn.PrependReactor("list", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: anpGVR.Group, Resource: a.GetResource().Resource}, "")
	})
	objs, err := List(context.Background(), cs, dyn)
	if err != nil {
		t.Fatalf("a cluster without the network-policy-api CRDs: %v", err)
	}
	if len(objs) != 5 {
		t.Errorf("%d objects, want 5", len(objs))
	}
}

func mustIP(s string) netip.Addr { return netip.MustParseAddr(s) }
