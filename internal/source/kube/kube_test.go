package kube

import (
	"context"
	"net/netip"
	"reflect"
	"testing"

	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	anpv1alpha1 "sigs.k8s.io/network-policy-api/apis/v1alpha1"
	npfake "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned/fake"

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

func anp() *anpv1alpha1.AdminNetworkPolicy {
	all := metav1.LabelSelector{}
	return &anpv1alpha1.AdminNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-batch-to-db"},
		Spec: anpv1alpha1.AdminNetworkPolicySpec{
			Priority: 10,
			Subject:  anpv1alpha1.AdminNetworkPolicySubject{Pods: &anpv1alpha1.NamespacedPod{NamespaceSelector: all, PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
			Egress: []anpv1alpha1.AdminNetworkPolicyEgressRule{{Name: "no-batch", Action: anpv1alpha1.AdminNetworkPolicyRuleActionDeny,
				To: []anpv1alpha1.AdminNetworkPolicyEgressPeer{{Pods: &anpv1alpha1.NamespacedPod{NamespaceSelector: all, PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "batch"}}}}}}},
		},
	}
}

// fakeSource is a Source over fake clientsets holding objects() and, with crds, anp() (and the
// network-policy-api resources in discovery).
func fakeSource(t *testing.T, crds bool) (*Source, *fake.Clientset, *npfake.Clientset) {
	t.Helper()
	cs := fake.NewSimpleClientset(objects()...)
	np := npfake.NewSimpleClientset()
	served(cs)
	if crds {
		if _, err := np.PolicyV1alpha1().AdminNetworkPolicies().Create(context.Background(), anp(), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return newSource(clientsetAPI(cs, np), Options{CRDPoll: 20 * time.Millisecond, HealthPoll: time.Hour}), cs, np
}

// served makes the fake discovery list the network-policy-api resources.
func served(cs *fake.Clientset) {
	cs.Fake.Resources = append(cs.Fake.Resources, &metav1.APIResourceList{
		GroupVersion: anpv1alpha1.GroupVersion.String(),
		APIResources: []metav1.APIResource{{Name: "adminnetworkpolicies"}, {Name: "baselineadminnetworkpolicies"}},
	})
}

func TestSourceFromFakes(t *testing.T) {
	s, _, _ := fakeSource(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Once(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	checkCluster(t, c)
}

// checkCluster checks that c holds what objects() and anp() describe (in namespace shop;
// a real API server adds its own namespaces) and that the evaluator decides as they say.
func checkCluster(t *testing.T, c *model.Cluster) {
	t.Helper()
	counts := map[string]int{model.KindNamespace: 0, model.KindANP: len(c.ANPs)}
	if _, ok := c.Namespaces["shop"]; ok {
		counts[model.KindNamespace] = 1
	}
	for k := range c.Pods {
		if strings.HasPrefix(k, "shop/") {
			counts[model.KindPod]++
		}
	}
	for k := range c.NetworkPolicies {
		if strings.HasPrefix(k, "shop/") {
			counts[model.KindNetworkPolicy]++
		}
	}
	want := map[string]int{model.KindNamespace: 1, model.KindPod: 3, model.KindNetworkPolicy: 1, model.KindANP: 1}
	for k, n := range want {
		if counts[k] != n {
			t.Errorf("%s: %d, want %d (all: %v)", k, counts[k], n, counts)
		}
	}
	for _, p := range c.Pods {
		if p.ManagedFields != nil {
			t.Errorf("pod %s/%s keeps its managedFields", p.Namespace, p.Name)
		}
	}
	rs, err := compile.Compile(c)
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

// A cluster without the CRDs syncs without admin policies, and picks them up once the
// resources are served.
func TestSourceCRDsAppearLater(t *testing.T) {
	s, cs, np := fakeSource(t, false)
	var crds atomic.Bool // discovery answers "not found" until set
	cs.PrependReactor("get", "resource", func(k8stesting.Action) (bool, runtime.Object, error) {
		if crds.Load() {
			return false, nil, nil
		}
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: "policy.networking.k8s.io"}, "")
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	changed := s.Subscribe(ctx)
	go func() { _ = s.Run(ctx) }()
	select {
	case <-s.Synced():
	case <-ctx.Done():
		t.Fatal("no sync without the CRDs")
	}
	c, rev := s.Snapshot()
	if len(c.ANPs) != 0 || len(c.Pods) != 3 {
		t.Fatalf("without CRDs: %d ANPs, %d pods", len(c.ANPs), len(c.Pods))
	}
	if _, err := np.PolicyV1alpha1().AdminNetworkPolicies().Create(ctx, anp(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	crds.Store(true)
	for {
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatal("the admin policy never arrived")
		}
		c, r := s.Snapshot()
		if len(c.ANPs) == 1 {
			if r <= rev {
				t.Errorf("revision %d after the CRDs appeared, was %d", r, rev)
			}
			checkCluster(t, c)
			return
		}
	}
}

// Changes after the first sync reach subscribers and snapshots; a deletion too.
func TestSourceFollowsChanges(t *testing.T) {
	s, cs, _ := fakeSource(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	changed := s.Subscribe(ctx)
	go func() { _ = s.Run(ctx) }()
	<-s.Synced()
	wait := func(cond func(c *model.Cluster) bool) {
		t.Helper()
		for {
			if c, _ := s.Snapshot(); cond(c) {
				return
			}
			select {
			case <-changed:
			case <-ctx.Done():
				t.Fatal("change never seen")
			}
		}
	}
	before, _ := s.Snapshot()
	if err := cs.NetworkingV1().NetworkPolicies("shop").Delete(ctx, "db-from-web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait(func(c *model.Cluster) bool { return len(c.NetworkPolicies) == 0 })
	// A kind without events is handed over as the same map; the changed kind is a new one.
	after, _ := s.Snapshot()
	if reflect.ValueOf(after.Pods).UnsafePointer() != reflect.ValueOf(before.Pods).UnsafePointer() {
		t.Fatal("the pods were copied again although none changed")
	}
	if len(before.NetworkPolicies) == 0 {
		t.Fatal("the earlier snapshot lost its NetworkPolicy: snapshots must not share a changed kind's map")
	}
	p, _ := cs.CoreV1().Pods("shop").Get(ctx, "web", metav1.GetOptions{})
	p.Labels["tier"] = "front"
	if _, err := cs.CoreV1().Pods("shop").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait(func(c *model.Cluster) bool { return c.Pods["shop/web"].Labels["tier"] == "front" })
}

func mustIP(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestSlimPod(t *testing.T) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{corev1.LastAppliedConfigAnnotation: "{...}", "k8s.v1.cni.cncf.io/network-status": "[...]", model.QuarantineAnnotation: "true"}},
		Spec: corev1.PodSpec{NodeName: "n1", Volumes: []corev1.Volume{{Name: "v"}},
			InitContainers: []corev1.Container{{Name: "init", Image: "init:1"}},
			Containers: []corev1.Container{{Name: "c", Image: "web:1", Env: []corev1.EnvVar{{Name: "SECRET", Value: "x"}},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionFalse, Message: "probe failed"}}},
	}
	o, err := stripManagedFields(p)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := o.(*model.Pod)
	if !ok {
		t.Fatalf("the informers would cache a %T, want *model.Pod", o)
	}
	want := &model.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: map[string]string{"app": "web"}, Annotations: map[string]string{model.QuarantineAnnotation: "true"}},
		Spec: model.PodSpec{NodeName: "n1", InitContainers: []model.Container{{Name: "init", Image: "init:1"}},
			Containers: []model.Container{{Name: "c", Image: "web:1", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}}}}},
		Status: model.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}},
	}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Fatalf("slim pod:\n got %+v\nwant %+v", got, want)
	}
	// The transform may see its own output again (client-go does not promise otherwise).
	if again, _ := stripManagedFields(got); !equality.Semantic.DeepEqual(again, want) {
		t.Fatalf("transformed twice:\n got %+v\nwant %+v", again, want)
	}
}
