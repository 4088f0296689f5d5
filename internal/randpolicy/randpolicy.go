// Package randpolicy generates random but valid clusters and policies (NetworkPolicy,
// AdminNetworkPolicy, BaselineAdminNetworkPolicy) as Kubernetes YAML, for property tests and for
// differential tests that compare a dataplane's kernel verdicts with the reference evaluator.
// Output is deterministic for a given seed, so any failure can be replayed.
package randpolicy

import (
	"fmt"
	"math/rand"
	"strings"
)

// Namespaces and pods of the generated cluster: the upstream e2e model, x/y/z × a/b/c.
var (
	Namespaces = []string{"x", "y", "z"}
	PodNames   = []string{"a", "b", "c"}
)

// Ports every pod serves, on TCP, UDP and SCTP, with upstream-style names (serve-80-tcp).
var Ports = []int{80, 81}

// PodIP returns the fixed address of pod ns/name.
func PodIP(ns, name string) string {
	return fmt.Sprintf("10.244.%d.%d", 1+indexOf(Namespaces, ns), 10+indexOf(PodNames, name))
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// Cluster returns the base cluster: namespaces labelled ns=<name>, pods labelled pod=<name>,
// each declaring every port on every protocol (named serve-<port>-<proto>), with fixed IPs.
// Pod "c" in namespace "z" also declares a port named "web" on 81/TCP, so named ports resolve
// differently per pod.
func Cluster() string {
	var docs []string
	for _, ns := range Namespaces {
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels: {ns: %s}", ns, ns))
	}
	for _, ns := range Namespaces {
		for _, p := range PodNames {
			var ports []string
			for _, port := range Ports {
				for _, proto := range []string{"TCP", "UDP", "SCTP"} {
					ports = append(ports, fmt.Sprintf("{name: serve-%d-%s, containerPort: %d, protocol: %s}", port, strings.ToLower(proto), port, proto))
				}
			}
			web := 80
			if ns == "z" && p == "c" {
				web = 81
			}
			ports = append(ports, fmt.Sprintf("{name: web, containerPort: %d, protocol: TCP}", web))
			docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n  labels: {pod: %s}\nspec:\n  containers:\n  - name: c\n    ports: [%s]\nstatus:\n  podIP: %s",
				p, ns, p, strings.Join(ports, ", "), PodIP(ns, p)))
		}
	}
	return strings.Join(docs, "\n---\n") + "\n"
}

// Options bound what Generate produces.
type Options struct {
	NetworkPolicies int // at most this many
	AdminPolicies   int // at most this many
	Baseline        bool
	ClusterPolicies int // ClusterNetworkPolicies (either tier), at most this many
	// Pad puts this many rules that match no lab address before each generated rule list:
	// long policies, as dataplanes that treat them differently (the iptables chain guards) see.
	Pad int
}

// Generate returns random valid policies as multi-document YAML.
func Generate(r *rand.Rand, o Options) string {
	g := gen{r: r, pad: o.Pad}
	var docs []string
	for i := 0; i < r.Intn(o.NetworkPolicies+1); i++ {
		docs = append(docs, g.networkPolicy(i))
	}
	for i := 0; i < r.Intn(o.AdminPolicies+1); i++ {
		docs = append(docs, g.adminPolicy(i))
	}
	if o.Baseline && r.Intn(2) == 0 {
		docs = append(docs, g.baseline())
	}
	for i := 0; i < r.Intn(o.ClusterPolicies+1); i++ {
		docs = append(docs, g.clusterPolicy(i))
	}
	return strings.Join(docs, "\n---\n") + "\n"
}

type gen struct {
	r   *rand.Rand
	pad int
}

func (g gen) pick(list []string) string { return list[g.r.Intn(len(list))] }

func (g gen) podSelector() string {
	switch g.r.Intn(4) {
	case 0:
		return "{}"
	case 1:
		return fmt.Sprintf("{matchExpressions: [{key: pod, operator: NotIn, values: [%s]}]}", g.pick(PodNames))
	default:
		return fmt.Sprintf("{matchLabels: {pod: %s}}", g.pick(PodNames))
	}
}

func (g gen) nsSelector() string {
	switch g.r.Intn(4) {
	case 0:
		return "{}"
	case 1:
		return fmt.Sprintf("{matchExpressions: [{key: ns, operator: In, values: [%s, %s]}]}", g.pick(Namespaces), g.pick(Namespaces))
	case 2:
		return fmt.Sprintf("{matchLabels: {kubernetes.io/metadata.name: %s}}", g.pick(Namespaces))
	default:
		return fmt.Sprintf("{matchLabels: {ns: %s}}", g.pick(Namespaces))
	}
}

func (g gen) ipBlock() string {
	ns, p := g.pick(Namespaces), g.pick(PodNames)
	ip := PodIP(ns, p)
	switch g.r.Intn(3) {
	case 0:
		return fmt.Sprintf("{ipBlock: {cidr: %s/32}}", ip)
	case 1:
		return fmt.Sprintf("{ipBlock: {cidr: 10.244.0.0/16, except: [%s/32]}}", ip)
	default:
		o := strings.Split(ip, ".")
		return fmt.Sprintf("{ipBlock: {cidr: 0.0.0.0/0, except: [10.244.%s.0/24]}}", o[2])
	}
}

func (g gen) npPeer() string {
	switch g.r.Intn(4) {
	case 0:
		return "{podSelector: " + g.podSelector() + "}"
	case 1:
		return "{namespaceSelector: " + g.nsSelector() + "}"
	case 2:
		return "{namespaceSelector: " + g.nsSelector() + ", podSelector: " + g.podSelector() + "}"
	default:
		return g.ipBlock()
	}
}

func (g gen) npPort() string {
	protos := []string{"TCP", "UDP", "SCTP"}
	switch g.r.Intn(5) {
	case 0:
		return fmt.Sprintf("{protocol: %s}", g.pick(protos))
	case 1:
		return "{port: 80, endPort: 81}"
	case 2:
		return fmt.Sprintf("{port: %s}", g.pick([]string{"serve-81-tcp", "web", "serve-80-udp"}))
	case 3:
		return fmt.Sprintf("{port: %s, protocol: UDP}", g.pick([]string{"serve-80-udp", "serve-81-tcp"}))
	default:
		return fmt.Sprintf("{port: %d, protocol: %s}", Ports[g.r.Intn(len(Ports))], g.pick(protos))
	}
}

// padded puts g.pad rules made from format (with their index) before a non-empty list's rules.
func (g gen) padded(list, format string) string {
	if g.pad == 0 || list == "[]" {
		// An empty list stays empty: rules in it would make a NetworkPolicy without
		// policyTypes isolate that direction.
		return list
	}
	pads := make([]string, g.pad)
	for i := range pads {
		pads[i] = fmt.Sprintf(format, i)
	}
	return "[" + strings.Join(pads, ", ") + ", " + list[1:]
}

func (g gen) list(n int, f func() string) string {
	items := make([]string, n)
	for i := range items {
		items[i] = f()
	}
	return "[" + strings.Join(items, ", ") + "]"
}

func (g gen) npRule(peersKey string) string {
	var parts []string
	if g.r.Intn(4) != 0 {
		parts = append(parts, peersKey+": "+g.list(1+g.r.Intn(2), g.npPeer))
	}
	if g.r.Intn(3) != 0 {
		parts = append(parts, "ports: "+g.list(1+g.r.Intn(2), g.npPort))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func (g gen) networkPolicy(i int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np-%d, namespace: %s}\nspec:\n  podSelector: %s\n", i, g.pick(Namespaces), g.podSelector())
	types := g.pick([]string{"", "[Ingress]", "[Egress]", "[Ingress, Egress]"})
	if types != "" {
		fmt.Fprintf(&b, "  policyTypes: %s\n", types)
	}
	if g.r.Intn(4) != 0 {
		fmt.Fprintf(&b, "  ingress: %s\n", g.padded(g.list(g.r.Intn(3), func() string { return g.npRule("from") }), "{from: [{ipBlock: {cidr: 198.51.100.%d/32}}]}"))
	}
	if g.r.Intn(3) == 0 {
		fmt.Fprintf(&b, "  egress: %s\n", g.padded(g.list(g.r.Intn(3), func() string { return g.npRule("to") }), "{to: [{ipBlock: {cidr: 198.51.100.%d/32}}]}"))
	}
	return strings.TrimRight(b.String(), "\n")
}

func (g gen) subject() string {
	if g.r.Intn(2) == 0 {
		return "{namespaces: " + g.nsSelector() + "}"
	}
	return "{pods: {namespaceSelector: " + g.nsSelector() + ", podSelector: " + g.podSelector() + "}}"
}

func (g gen) adminPeer(egress bool) string {
	n := 2
	if egress {
		n = 3
	}
	switch g.r.Intn(n) {
	case 0:
		return "{namespaces: " + g.nsSelector() + "}"
	case 1:
		return "{pods: {namespaceSelector: " + g.nsSelector() + ", podSelector: " + g.podSelector() + "}}"
	default:
		ns, p := g.pick(Namespaces), g.pick(PodNames)
		return fmt.Sprintf("{networks: [%s/32, 10.244.%d.0/24]}", PodIP(ns, p), 1+g.r.Intn(3))
	}
}

func (g gen) adminPort(named bool) string {
	protos := []string{"TCP", "UDP", "SCTP"}
	n := 2
	if named {
		n = 3
	}
	switch g.r.Intn(n) {
	case 0:
		return fmt.Sprintf("{portNumber: {port: %d, protocol: %s}}", Ports[g.r.Intn(len(Ports))], g.pick(protos))
	case 1:
		return fmt.Sprintf("{portRange: {start: 80, end: 81, protocol: %s}}", g.pick(protos))
	default:
		return fmt.Sprintf("{namedPort: %s}", g.pick([]string{"web", "serve-80-udp", "serve-81-sctp"}))
	}
}

// cnpProtocol is a ClusterNetworkPolicy protocols entry (a port, an inclusive range, or a
// named port where the peers allow one).
func (g gen) cnpProtocol(named bool) string {
	proto := g.pick([]string{"tcp", "udp", "sctp"})
	n := 2
	if named {
		n = 3
	}
	switch g.r.Intn(n) {
	case 0:
		return fmt.Sprintf("{%s: {destinationPort: {number: %d}}}", proto, Ports[g.r.Intn(len(Ports))])
	case 1:
		return fmt.Sprintf("{%s: {destinationPort: {range: {start: 80, end: 81}}}}", proto)
	default:
		return fmt.Sprintf("{destinationNamedPort: %s}", g.pick([]string{"web", "serve-80-udp", "serve-81-sctp"}))
	}
}

func (g gen) adminRule(egress bool, actions []string) string {
	peersKey := "from"
	if egress {
		peersKey = "to"
	}
	peers := g.list(1+g.r.Intn(2), func() string { return g.adminPeer(egress) })
	rule := fmt.Sprintf("{action: %s, %s: %s", g.pick(actions), peersKey, peers)
	if g.r.Intn(2) == 0 {
		// Named ports cannot be combined with networks peers.
		named := !strings.Contains(peers, "networks")
		if actions[0] == "Accept" { // a ClusterNetworkPolicy: protocols, not ports
			rule += ", protocols: " + g.list(1+g.r.Intn(2), func() string { return g.cnpProtocol(named) })
		} else {
			rule += ", ports: " + g.list(1+g.r.Intn(2), func() string { return g.adminPort(named) })
		}
	}
	return rule + "}"
}

func (g gen) adminRules(b *strings.Builder, actions []string) {
	if g.r.Intn(3) != 0 {
		fmt.Fprintf(b, "  ingress: %s\n", g.padded(g.list(1+g.r.Intn(3), func() string { return g.adminRule(false, actions) }),
			"{action: Deny, from: [{namespaces: {matchLabels: {pad: p%d}}}]}"))
	}
	if g.r.Intn(2) == 0 {
		fmt.Fprintf(b, "  egress: %s\n", g.padded(g.list(1+g.r.Intn(3), func() string { return g.adminRule(true, actions) }),
			"{action: Deny, to: [{networks: [198.51.100.%d/32]}]}"))
	}
}

func (g gen) adminPolicy(i int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: anp-%d}\nspec:\n  priority: %d\n  subject: %s\n", i, g.r.Intn(5), g.subject())
	g.adminRules(&b, []string{"Allow", "Deny", "Pass"})
	return strings.TrimRight(b.String(), "\n")
}

func (g gen) baseline() string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: default}\nspec:\n  subject: %s\n", g.subject())
	g.adminRules(&b, []string{"Allow", "Deny"})
	return strings.TrimRight(b.String(), "\n")
}

func (g gen) clusterPolicy(i int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: cnp-%d}\nspec:\n  tier: %s\n  priority: %d\n  subject: %s\n",
		i, g.pick([]string{"Admin", "Baseline"}), g.r.Intn(5), g.subject())
	g.adminRules(&b, []string{"Accept", "Deny", "Pass"})
	return strings.TrimRight(b.String(), "\n")
}
