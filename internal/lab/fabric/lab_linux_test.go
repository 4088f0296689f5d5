package fabric_test

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/lab/labtest"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/netnstest"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/randpolicy"
)

// clusterYAML is the upstream e2e model (x/y/z × a/b/c, ports 80 and 81 on TCP, UDP and SCTP)
// with one Service per pod, as the e2e suite creates.
func clusterYAML() string {
	var b strings.Builder
	b.WriteString(randpolicy.Cluster())
	// A host-network pod on the second node: not subject to policy, reachable at its node's
	// address, and a source whose traffic to a local pod is generated in the node itself.
	b.WriteString("---\napiVersion: v1\nkind: Pod\nmetadata: {name: agent, namespace: z, labels: {pod: agent}}\n" +
		"spec: {hostNetwork: true, nodeName: node-2, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 81, protocol: UDP}]}]}\n")
	for _, ns := range randpolicy.Namespaces {
		for _, p := range randpolicy.PodNames {
			var ports []string
			for _, port := range randpolicy.Ports {
				for _, proto := range []string{"TCP", "UDP", "SCTP"} {
					ports = append(ports, fmt.Sprintf("{name: p%d-%s, port: %d, protocol: %s}", port, strings.ToLower(proto), port, proto))
				}
			}
			fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Service\nmetadata: {name: s-%s-%s, namespace: %s}\nspec:\n  selector: {pod: %s}\n  ports: [%s]\n", ns, p, ns, p, strings.Join(ports, ", "))
		}
	}
	return b.String()
}

func newLab(t *testing.T, nodes int, dataplane, manifests string) labtest.Lab {
	return labtest.New(t, nodes, dataplane, manifests)
}

func TestLabWithoutPolicyEverythingConnects(t *testing.T) {
	for _, nodes := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d-nodes", nodes), func(t *testing.T) {
			l := newLab(t, nodes, "iptables", clusterYAML())
			for _, via := range []string{"service", "pod"} {
				probes, err := l.Probe(context.Background(), controller.ProbeRequest{Via: via, Timeout: 2 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				// 9 pods probe the 8 others on 6 ports and the agent on 2; the agent probes 9 on 6.
				if want := 9*8*6 + 9*2 + 9*6; len(probes) != want {
					t.Fatalf("%d probes, want %d", len(probes), want)
				}
				for _, p := range probes {
					if !p.Connected {
						t.Errorf("via %s: %s -> %s %d/%s (%s, via %s): not connected: %s", via, p.From, p.To, p.Port, p.Protocol, p.Target, p.Via, p.Error)
					}
					// Every pod but the host-network agent has a Service of its own.
					if wantVia := map[bool]string{true: "pod", false: via}[p.To == "z/agent"]; p.Via != wantVia {
						t.Errorf("%s -> %s probed via %s, want %s", p.From, p.To, p.Via, wantVia)
					}
				}
			}
		})
	}
}

// TestLabRandomPoliciesMatchEvaluator: for random policy sets, short and long, what the kernel
// lets through (2 nodes, each dataplane) equals the reference evaluator's matrix, probe for probe.
func TestLabRandomPoliciesMatchEvaluator(t *testing.T) {
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) { randomPoliciesMatchEvaluator(t, dp) })
	}
}

func randomPoliciesMatchEvaluator(t *testing.T, dp string) {
	l := newLab(t, 2, dp, clusterYAML())
	ctx := context.Background()
	// apply makes y the lab's policy set; it returns the evaluator, nil when the lab rejects y.
	apply := func(y string) *policy.Evaluator {
		if err := l.Delete(ctx, controller.DeleteRequest{AllPolicies: true}); err != nil && !strings.Contains(err.Error(), "nothing to delete") {
			t.Fatal(err)
		}
		if strings.TrimSpace(y) != "" {
			if err := l.Apply(ctx, y); err != nil {
				t.Logf("policy set rejected: %v", err)
				return nil
			}
		}
		_, rs := l.Snapshot()
		return policy.New(rs)
	}
	for seed := int64(1); seed <= 14; seed++ {
		opts := randpolicy.Options{NetworkPolicies: 4, AdminPolicies: 3, Baseline: true, ClusterPolicies: 3}
		if seed > 8 {
			opts.Pad = 9 // long rule lists: the iptables policy chains' guards
		}
		y := randpolicy.Generate(rand.New(rand.NewSource(seed)), opts)
		ev := apply(y)
		if ev == nil {
			t.Fatalf("seed %d: the lab rejected a generated policy set:\n%s", seed, y)
		}
		want := map[string]bool{}
		for _, cell := range ev.Matrix(nil) {
			want[fmt.Sprintf("%s>%s:%d/%s", cell.From, cell.To, cell.Port, cell.Protocol)] = cell.Allowed
		}
		probes, err := l.Probe(ctx, controller.ProbeRequest{Via: "service", Timeout: 700 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var wrong []string
		var first *controller.Probe
		for i, p := range probes {
			k := fmt.Sprintf("%s>%s:%d/%s", p.From, p.To, p.Port, p.Protocol)
			if want[k] != p.Connected {
				wrong = append(wrong, fmt.Sprintf("%s via %s: kernel connected=%v, evaluator allowed=%v", k, p.Target, p.Connected, want[k]))
				if first == nil {
					first = &probes[i]
				}
			}
		}
		if len(wrong) > 0 {
			if len(wrong) > 10 {
				wrong = wrong[:10]
			}
			// The smallest policy set under which the first disagreement still shows.
			min := randpolicy.Shrink(y, func(c string) bool {
				ev := apply(c)
				if ev == nil {
					return false
				}
				ps, err := l.Probe(ctx, controller.ProbeRequest{From: first.From, To: first.To, Port: first.Port, Protocol: first.Protocol, Via: "service", Timeout: 700 * time.Millisecond})
				if err != nil || len(ps) != 1 {
					t.Fatalf("probe: %v %+v", err, ps)
				}
				for _, cell := range ev.Matrix(nil) {
					if cell.From == first.From && cell.To == first.To && cell.Port == first.Port && cell.Protocol == first.Protocol {
						return cell.Allowed != ps[0].Connected
					}
				}
				return false
			})
			t.Fatalf("seed %d: %d disagreements:\n%s\nsmallest policy set for %s -> %s %d/%s:\n%s", seed, len(wrong),
				strings.Join(wrong, "\n"), first.From, first.To, first.Port, first.Protocol, min)
		}
	}
}

// TestLabEstablishedConnections: an update that does not concern a connection leaves it
// working; an update that denies it breaks it.
func TestLabEstablishedConnections(t *testing.T) {
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) { establishedConnections(t, dp) })
	}
}

func establishedConnections(t *testing.T, dp string) {
	l := newLab(t, 2, dp, clusterYAML())
	ctx := context.Background()
	dst := netip.MustParseAddrPort(randpolicy.PodIP("y", "b") + ":80")
	conn, err := l.Fabric.DialTCP(ctx, "x", "a", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip := labtest.Echo(t, conn)
	if err := roundTrip("before"); err != nil {
		t.Fatal(err)
	}
	unrelated := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: unrelated, namespace: z}
spec: {podSelector: {}, ingress: []}`
	if err := l.Apply(ctx, unrelated); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip("after-unrelated"); err != nil {
		t.Fatalf("connection broken by an unrelated policy: %v", err)
	}
	deny := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-from-x, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]`
	if err := l.Apply(ctx, deny); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip("after-deny"); err == nil {
		t.Fatal("connection still works after policy denied it")
	}
}

// TestLabNewPodGuarded: a pod whose interface exists before its node's agent has programmed it
// (the CNI plugin is faster than the watch) neither sends nor receives anything until it has;
// then it is enforced like every other pod. iptables guards in its rules from the start; eBPF
// attaches a deny program when the agent sees the interface appear (milliseconds after it does:
// the test waits for that, then probes).
func TestLabNewPodGuarded(t *testing.T) {
	for _, dp := range []string{"iptables", "ebpf"} {
		t.Run(dp, func(t *testing.T) { newPodGuarded(t, dp) })
	}
}

func newPodGuarded(t *testing.T, dp string) {
	l := newLab(t, 1, dp, clusterYAML())
	ctx := context.Background()
	c, _ := l.Snapshot()
	next := c.Clone()
	podYAML := "apiVersion: v1\nkind: Pod\nmetadata: {name: new, namespace: x, labels: {pod: new}}\n" +
		"spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}\nstatus: {podIP: 10.244.1.200}\n"
	objs, err := model.Decode(strings.NewReader(podYAML), "test", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	next.Apply(objs[0])
	if err := controller.Place(next, 1); err != nil {
		t.Fatal(err)
	}
	rs, err := compile.Compile(next)
	if err != nil {
		t.Fatal(err)
	}
	// The namespace, veth, route and server of the new pod, behind the agent's back.
	if err := l.Fabric.Ensure(ctx, controller.TopologyOf(next, rs)); err != nil {
		t.Fatal(err)
	}
	if dp == "ebpf" {
		iface := l.Fabric.PodInterface("x", "new")
		for start := time.Now(); !netnstest.TCXAttached(l.Fabric.NodeNetns("node-1"), iface); time.Sleep(time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatal("no guard on the new pod's interface after 10s")
			}
		}
	}
	_, cur := l.Snapshot()
	dstA := netip.AddrPortFrom(cur.PodByKey("x/a").IP(), 80)
	dstNew := netip.AddrPortFrom(netip.MustParseAddr("10.244.1.200"), 80)
	probe := func() (out, in bool) {
		res := l.Fabric.Probe(ctx, []controller.ProbeSpec{
			{FromNamespace: "x", FromName: "new", Dst: dstA, Protocol: "TCP", Timeout: 500 * time.Millisecond},
			{FromNamespace: "x", FromName: "a", Dst: dstNew, Protocol: "TCP", Timeout: 500 * time.Millisecond},
		})
		return res[0].Connected, res[1].Connected
	}
	if out, in := probe(); out || in {
		t.Fatalf("an unprogrammed pod's traffic passed: from it %v, to it %v", out, in)
	}
	if err := l.Apply(ctx, podYAML); err != nil {
		t.Fatal(err)
	}
	if out, in := probe(); !out || !in {
		t.Fatalf("once programmed (no policy selects it), from it %v, to it %v; want both", out, in)
	}
}
