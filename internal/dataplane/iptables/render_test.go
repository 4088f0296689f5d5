package iptables

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
)

// cluster builds n pods in namespace x (labels pod=p<i>, role=even/odd) on node n1 plus the
// given policies.
func cluster(t *testing.T, n int, policies string) *ir.Ruleset {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
	for i := 0; i < n; i++ {
		role := []string{"even", "odd"}[i%2]
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p%d, namespace: x, labels: {pod: p%d, role: %s}}\nspec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: %d}]}]}\nstatus: {podIP: 10.0.%d.%d}\n", i, i, role, 8000+i%3, i/250, i%250+1)
	}
	b.WriteString("---\n" + policies)
	objs, err := model.Decode(strings.NewReader(b.String()), "test", model.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := compile.Compile(model.FromObjects(objs))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func allLocal(n int) dataplane.Node {
	return dataplane.Node{Name: "n1", Interface: func(p *ir.Pod) (string, bool) { return "v" + p.Name, true }}
}

const policies = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: even-from-odd, namespace: x}
spec:
  podSelector: {matchLabels: {role: even}}
  ingress: [{from: [{podSelector: {matchLabels: {role: odd}}}, {ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}], ports: [{port: http}, {port: 9000, endPort: 9010, protocol: UDP}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: guard}
spec:
  priority: 1
  subject: {namespaces: {}}
  egress: [{action: Pass, to: [{networks: [10.0.0.0/8]}]}, {action: Deny, to: [{networks: [0.0.0.0/0]}]}]
`

func TestRenderDeterministic(t *testing.T) {
	a, err := Render(cluster(t, 10, policies), allLocal(10))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Render(cluster(t, 10, policies), allLocal(10))
	if a.String() != b.String() {
		t.Fatal("rendering the same ruleset twice differs")
	}
	s := a.String()
	for _, want := range []string{
		"-m set --match-set rampart-", " src -m set --match-set rampart-n", "dst,dst",
		"-p udp -m udp --dport 9000:9010", "0.0.0.0/1", "128.0.0.0/1", "-j DROP", "-g RAMPART-E2-",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("spec lacks %q", want)
		}
	}
}

// TestRuleCountIndependentOfPeers: peers live in ipsets, so growing the selected pods changes
// set members, not the rules of any chain of a given pod.
func TestRuleCountIndependentOfPeers(t *testing.T) {
	count := func(n int) (int, int) {
		spec, err := Render(cluster(t, n, policies), allLocal(n))
		if err != nil {
			t.Fatal(err)
		}
		rules := 0
		for _, c := range spec.Tables["filter"] {
			if strings.Contains(c.Name, "-P-") || strings.Contains(c.Name, hash("x/p0")) {
				rules += len(c.Rules)
			}
		}
		members := 0
		for _, s := range spec.Sets {
			members += len(s.Entries)
		}
		return rules, members
	}
	r10, m10 := count(10)
	r500, m500 := count(500)
	if r10 != r500 {
		t.Errorf("rules for pod p0 and its policies: %d with 10 pods, %d with 500", r10, r500)
	}
	if m500 <= m10 {
		t.Errorf("set members did not grow: %d vs %d", m10, m500)
	}
}

func TestSetNamesStableAcrossMembership(t *testing.T) {
	names := func(n int) string {
		spec, _ := Render(cluster(t, n, policies), allLocal(n))
		var s []string
		for _, set := range spec.Sets {
			s = append(s, set.Name)
		}
		return strings.Join(s, ",")
	}
	if a, b := names(4), names(7); a != b {
		t.Errorf("set names changed with membership: %s vs %s", a, b)
	}
}

// TestRenderBesideKubeProxy: with kube-proxy translating Services, the spec has no NAT of its
// own (two DNATs would fight over the same packets) but the same filter rules.
func TestRenderBesideKubeProxy(t *testing.T) {
	svc := policies + `---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec: {clusterIP: 10.96.0.20, selector: {role: even}, ports: [{port: 80, targetPort: http}]}
`
	own, beside := renderOwnAndBeside(t, svc)
	if !strings.Contains(own.String(), "10.96.0.20/32") {
		t.Fatal("the Service is not translated by default")
	}
	if len(beside.Tables["nat"]) != 0 || strings.Contains(beside.String(), "DNAT") {
		t.Fatalf("beside kube-proxy the spec still translates Services:\n%s", beside)
	}
	for _, j := range beside.Jumps {
		if j.Table == "nat" {
			t.Errorf("jump into nat/%s beside kube-proxy", j.From)
		}
	}
	if fmt.Sprint(own.Tables["filter"]) != fmt.Sprint(beside.Tables["filter"]) {
		t.Error("the filter rules differ beside kube-proxy")
	}
}

// TestRenderMidstreamDrop: a TCP packet that is not a SYN and has no conntrack entry is dropped
// on pod interfaces before any policy decision, in every dispatch chain it can reach.
func TestRenderMidstreamDrop(t *testing.T) {
	node := allLocal(2)
	node.PodInterfacePrefix = "veth"
	spec, err := Render(cluster(t, 2, policies), node)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		ChainPrefix + "FORWARD": {"-i veth+ ", "-o veth+ "},
		ChainPrefix + "INPUT":   {"-i veth+ "},
		ChainPrefix + "OUTPUT":  {"-o veth+ "},
	}
	for _, c := range spec.Tables["filter"] {
		dirs, ok := want[c.Name]
		if !ok {
			continue
		}
		delete(want, c.Name)
		if c.Rules[0] != establishedRule {
			t.Errorf("%s starts with %q, want the established rule", c.Name, c.Rules[0])
		}
		for i, dir := range dirs {
			if r := c.Rules[1+i]; !strings.HasPrefix(r, dir+"-p tcp -m tcp ! --syn -m conntrack --ctstate NEW") || !strings.HasSuffix(r, "-j DROP") {
				t.Errorf("%s rule %d = %q, want the mid-stream drop for %s", c.Name, 1+i, r, dir)
			}
		}
	}
	if len(want) != 0 {
		t.Errorf("chains missing: %v", want)
	}
	if r := midstreamRule("-i", ""); strings.Contains(r, "-i ") {
		t.Errorf("without a prefix the drop is scoped: %q", r)
	}
}

// TestRenderNoEndpoints: where rampart translates Services, a Service port without endpoints
// is refused (REJECT, before policy, in FORWARD and OUTPUT) as kube-proxy refuses it; ports
// with endpoints are not; beside kube-proxy, kube-proxy does it.
func TestRenderNoEndpoints(t *testing.T) {
	svc := policies + `---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: x}
spec: {clusterIP: 10.96.0.30, selector: {role: nothing}, ports: [{name: web, port: 80}, {name: dns, port: 53, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec: {clusterIP: 10.96.0.20, selector: {role: even}, ports: [{port: 80, targetPort: http}]}
`
	own, beside := renderOwnAndBeside(t, svc)
	var rejects []string
	for _, c := range own.Tables["filter"] {
		if c.Name == ChainPrefix+"NO-ENDPOINTS" {
			rejects = c.Rules
		}
	}
	want := []string{
		`-d 10.96.0.30/32 -p tcp -m tcp --dport 80 -m comment --comment "x/empty:web has no endpoints" -j REJECT --reject-with icmp-port-unreachable`,
		`-d 10.96.0.30/32 -p udp -m udp --dport 53 -m comment --comment "x/empty:dns has no endpoints" -j REJECT --reject-with icmp-port-unreachable`,
	}
	if fmt.Sprint(rejects) != fmt.Sprint(want) {
		t.Fatalf("NO-ENDPOINTS rules:\n%s\nwant\n%s", strings.Join(rejects, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range own.Tables["filter"] {
		if (c.Name == ChainPrefix+"FORWARD" || c.Name == ChainPrefix+"OUTPUT") && (len(c.Rules) < 2 || c.Rules[1] != "-j "+ChainPrefix+"NO-ENDPOINTS") {
			t.Errorf("%s does not refuse endpoint-less Services right after the established rule: %v", c.Name, c.Rules)
		}
	}
	if strings.Contains(beside.String(), "NO-ENDPOINTS") {
		t.Error("beside kube-proxy the spec refuses endpoint-less Services itself")
	}
}

// renderOwnAndBeside renders 4 local pods with manifests extra where rampart translates
// Services (own) and beside kube-proxy.
func renderOwnAndBeside(t *testing.T, extra string) (own, beside *Spec) {
	t.Helper()
	own, err := Render(cluster(t, 4, extra), allLocal(4))
	if err != nil {
		t.Fatal(err)
	}
	node := allLocal(4)
	node.KubeProxy = true
	if beside, err = Render(cluster(t, 4, extra), node); err != nil {
		t.Fatal(err)
	}
	return own, beside
}

// TestRenderGuards: a policy of guardMin rules or more is called only for peers in the union of
// its rules' peers; policies with a rule that names no peers or covers every address are called
// unguarded; runs of policies that can be guarded are called through a tree of guarded blocks.
// (TestRenderMatchesEvaluator checks what the guards decide.)
func TestRenderGuards(t *testing.T) {
	long := func(name, extra string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: %s, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: p0}}\n  ingress:\n", name)
		for i := 0; i < guardMin-1; i++ {
			fmt.Fprintf(&b, "  - {from: [{ipBlock: {cidr: 192.0.2.%d/32}}], ports: [{port: 80}]}\n", i)
		}
		b.WriteString("  - " + extra + "\n")
		return b.String()
	}
	rs := cluster(t, 3, long("guarded", "{from: [{podSelector: {matchLabels: {pod: p1}}}, {ipBlock: {cidr: 192.0.2.0/31}}]}")+
		long("any-peer", "{ports: [{port: 81}]}")+long("everything", "{from: [{ipBlock: {cidr: 0.0.0.0/0}}]}"))
	spec, err := Render(rs, allLocal(3))
	if err != nil {
		t.Fatal(err)
	}
	sets := map[string]IPSet{}
	for _, s := range spec.Sets {
		sets[s.Name] = s
	}
	// The call of each policy's chain, by the policy's comment.
	comment, calls := map[string]string{}, map[string][]string{}
	for _, c := range spec.Tables["filter"] {
		if strings.Contains(c.Name, "-P-") {
			comment[c.Name] = c.Rules[0]
		}
		for _, r := range c.Rules {
			if f := strings.Fields(r); f[len(f)-2] == "-j" && strings.Contains(f[len(f)-1], "-P-") {
				calls[f[len(f)-1]] = append(calls[f[len(f)-1]], r)
			}
		}
	}
	for chain, cmt := range comment {
		if len(calls[chain]) != 1 {
			t.Fatalf("%s: calls %q, want one", cmt, calls[chain])
		}
		call := strings.Fields(calls[chain][0])
		if !strings.Contains(cmt, "x/guarded ") {
			if len(call) != 2 {
				t.Errorf("%s is called with a guard: %s", cmt, call)
			}
			continue
		}
		if len(call) != 7 || call[2] != "--match-set" || call[4] != "src" {
			t.Fatalf("%s: call %q, want a guard on the source", cmt, call)
		}
		set, ok := sets[call[3]]
		if !ok || set.Type != "hash:net" {
			t.Fatalf("guard %q: no hash:net set in %v", call, spec.Sets)
		}
		// The peers of every rule, each once: the /32s, the /31 (covering 192.0.2.0/32 too), p1.
		want := []string{"10.0.0.2/32", "192.0.2.0/31"}
		for i := 0; i < guardMin-1; i++ {
			want = append(want, fmt.Sprintf("192.0.2.%d/32", i))
		}
		slices.Sort(want)
		got := slices.Clone(set.Entries)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("guard set %v, want %v", got, want)
		}
	}

	// 100 policies of guardMin rules each: p0's chain makes one guarded call, to a tree of
	// blocks of at most guardFanout calls, the top one guarded by every peer.
	var b strings.Builder
	for p := 0; p < 100; p++ {
		fmt.Fprintf(&b, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np-%02d, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: p0}}\n  ingress:\n", p)
		for r := 0; r < guardMin; r++ {
			fmt.Fprintf(&b, "  - {from: [{ipBlock: {cidr: 172.16.%d.%d/32}}]}\n", p, r)
		}
	}
	if spec, err = Render(cluster(t, 1, b.String()), allLocal(1)); err != nil {
		t.Fatal(err)
	}
	chains := map[string][]string{}
	for _, c := range spec.Tables["filter"] {
		chains[c.Name] = c.Rules
	}
	var top []string
	for _, r := range chains[ChainPrefix+"I-"+hash("x/p0")] {
		if strings.Contains(r, " -j "+ChainPrefix) {
			top = append(top, r)
		}
	}
	if len(top) != 1 || !strings.Contains(top[0], "-m set --match-set "+SetPrefix+"B-") {
		t.Fatalf("p0's calls: %q, want one guarded block", top)
	}
	for _, s := range spec.Sets {
		if f := strings.Fields(top[0]); s.Name == f[3] && len(s.Entries) != 100*guardMin {
			t.Errorf("top guard: %d entries, want %d", len(s.Entries), 100*guardMin)
		}
	}
	var walk func(chain string) int
	walk = func(chain string) int {
		if !strings.Contains(chain, "-B-") {
			return 1
		}
		if n := len(chains[chain]); n > 2*guardFanout-1 {
			t.Errorf("block %s has %d rules", chain, n)
		}
		leaves := 0
		for _, r := range chains[chain] {
			if f := strings.Fields(r); f[len(f)-2] == "-j" && strings.HasPrefix(f[len(f)-1], ChainPrefix) {
				leaves += walk(f[len(f)-1])
			}
		}
		return leaves
	}
	if n := walk(strings.Fields(top[0])[len(strings.Fields(top[0]))-1]); n != 100 {
		t.Errorf("the tree calls %d policies, want 100", n)
	}
}
