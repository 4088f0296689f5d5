package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/dataplane/iptables"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/netnstest"
)

// Scale of the cluster: pods in namespaces, policies spread over them, and how many pods live
// on the node being synced (a busy node).
const (
	scalePods       = 10000
	scaleNamespaces = 100
	scalePolicies   = 1000
	localPods       = 250
	changes         = 50 // single-policy changes timed for the p99
)

// scaleCluster builds the cluster in memory: every namespace runs 20 apps; each policy selects
// one app and allows it from two other apps in its namespace, from a monitoring namespace, and
// from an ipBlock, on a named and a numbered port.
func scaleCluster() *model.Cluster { return sizedCluster(scalePods, scalePolicies, localPods) }

// sizedCluster is scaleCluster with other numbers of pods, policies and local pods.
func sizedCluster(pods, policies, local int) *model.Cluster {
	return clusterOn(pods, policies, local, otherNodes)
}

// otherNodes is how many nodes besides node-0 the pods of sizedCluster run on.
const otherNodes = 40

// clusterOn is sizedCluster on node-0 and nodes others nodes more.
func clusterOn(pods, policies, local, others int) *model.Cluster {
	c := model.NewCluster()
	for n := 0; n < scaleNamespaces; n++ {
		ns := &corev1.Namespace{}
		ns.Name = fmt.Sprintf("ns-%d", n)
		ns.Labels = map[string]string{model.NamespaceNameLabel: ns.Name, "team": fmt.Sprintf("t%d", n%10)}
		c.Namespaces[ns.Name] = ns
	}
	for i := 0; i < pods; i++ {
		p := &corev1.Pod{}
		p.Namespace = fmt.Sprintf("ns-%d", i%scaleNamespaces)
		p.Name = fmt.Sprintf("pod-%d", i)
		p.Labels = map[string]string{"app": fmt.Sprintf("app-%d", (i/scaleNamespaces)%20)}
		p.Spec.NodeName = "node-0"
		if i >= local {
			p.Spec.NodeName = fmt.Sprintf("node-%d", 1+i%others)
		}
		p.Spec.Containers = []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}}
		ip := fmt.Sprintf("10.%d.%d.%d", 100+i/65536, (i/256)%256, i%256)
		p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		c.Pods[p.Namespace+"/"+p.Name] = model.PodFrom(p)
	}
	for i := 0; i < policies; i++ {
		c.NetworkPolicies[fmt.Sprintf("ns-%d/np-%d", i%scaleNamespaces, i)] = scalePolicy(i, 9090)
	}
	return c
}

func scalePolicy(i int, port int32) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	np := &networkingv1.NetworkPolicy{}
	np.Namespace, np.Name = fmt.Sprintf("ns-%d", i%scaleNamespaces), fmt.Sprintf("np-%d", i)
	app := func(k int) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", k%20)}}
	}
	np.Spec.PodSelector = *app(i / scaleNamespaces)
	np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
		From: []networkingv1.NetworkPolicyPeer{
			{PodSelector: app(i/scaleNamespaces + 1)},
			{PodSelector: app(i/scaleNamespaces + 2)},
			{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "t0"}}},
			{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{fmt.Sprintf("192.168.%d.0/24", i%256)}}},
		},
		Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &intstr.IntOrString{Type: intstr.String, StrVal: "http"}}, {Protocol: &tcp, Port: &intstr.IntOrString{IntVal: port}}},
	}}
	return np
}

func node0() dataplane.Node {
	return dataplane.Node{Name: "node-0", Interface: func(p *ir.Pod) (string, bool) {
		if p.Node != "node-0" {
			return "", false
		}
		return fmt.Sprintf("v%010d", p.ID), true
	}}
}

type result struct {
	Name  string  `json:"name"`
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	Runs  int     `json:"runs"`
	Ratio float64 `json:"ratio_to_baseline"`
	Note  string  `json:"note"`
}

func percentiles(d []time.Duration) (float64, float64) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	return ms(d[len(d)/2]), ms(d[(len(d)*99)/100])
}

// TestScaleIPTables measures, in one run: compiling the 10,000-pod, 1,000-policy cluster,
// rendering one node's spec, a full sync into an empty namespace, and single-policy changes
// (compile + render + incremental apply), each against the baseline of syncing the same node
// without any policy. Results go to bench/results/iptables-scale.json. Run by `make bench`.
func TestScaleIPTables(t *testing.T) {
	if os.Getenv("RAMPART_BENCH") == "" {
		t.Skip("set RAMPART_BENCH=1 (make bench) to run the scale benchmark")
	}
	netnstest.RequireRoot(t, "iptables-restore", "ipset")
	ctx := context.Background()
	c := scaleCluster()

	start := time.Now()
	rs, err := compile.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	compileTime := time.Since(start)
	start = time.Now()
	spec, err := iptables.Render(rs, node0())
	if err != nil {
		t.Fatal(err)
	}
	renderTime := time.Since(start)
	rules, members := 0, 0
	for _, ch := range spec.Tables["filter"] {
		rules += len(ch.Rules)
	}
	for _, s := range spec.Sets {
		members += len(s.Entries)
	}

	// Baseline: the same node and pods with no policy, synced into a fresh namespace.
	bare := c.Clone()
	bare.NetworkPolicies = map[string]*networkingv1.NetworkPolicy{}
	bareRS, err := compile.Compile(bare)
	if err != nil {
		t.Fatal(err)
	}
	var base, full []time.Duration
	for i := 0; i < 5; i++ {
		ns := netnstest.New(t, fmt.Sprintf("rb-scale%d", i))
		dp := iptables.New(node0(), iptables.NetnsRunner{Netns: ns})
		start = time.Now()
		if err := dp.Sync(ctx, bareRS); err != nil {
			t.Fatal(err)
		}
		base = append(base, time.Since(start))
		start = time.Now()
		if err := dp.Apply(ctx, spec); err != nil {
			t.Fatal(err)
		}
		full = append(full, time.Since(start))
	}

	// Single-policy changes: compile, render and apply incrementally on a synced node.
	ns := netnstest.New(t, "rb-change")
	dp := iptables.New(node0(), iptables.NetnsRunner{Netns: ns})
	if err := dp.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	var change []time.Duration
	for i := 0; i < changes; i++ {
		k := fmt.Sprintf("ns-%d/np-%d", i%scaleNamespaces, i)
		c.NetworkPolicies[k] = scalePolicy(i, int32(9100+i))
		start = time.Now()
		rs, err := compile.Compile(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := dp.Sync(ctx, rs); err != nil {
			t.Fatal(err)
		}
		change = append(change, time.Since(start))
	}

	b50, b99 := percentiles(base)
	f50, f99 := percentiles(full)
	c50, c99 := percentiles(change)
	results := []result{
		{Name: "baseline: sync of the node without policy", P50ms: b50, P99ms: b99, Runs: len(base), Ratio: 1, Note: fmt.Sprintf("%d local pods", localPods)},
		{Name: "full sync: 10,000 pods, 1,000 policies", P50ms: f50, P99ms: f99, Runs: len(full), Ratio: f50 / b50,
			Note: fmt.Sprintf("%d filter rules, %d ipset members; compile %.0f ms and render %.0f ms before it", rules, members, ms(compileTime), ms(renderTime))},
		{Name: "one policy change: compile + render + incremental apply", P50ms: c50, P99ms: c99, Runs: len(change), Ratio: c50 / b50, Note: "target p99 < 100 ms"},
	}
	b, _ := json.MarshalIndent(results, "", "  ")
	t.Logf("\n%s", b)
	if err := os.WriteFile("results/iptables-scale.json", append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
