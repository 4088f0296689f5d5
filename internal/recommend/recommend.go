// Package recommend proposes least-privilege NetworkPolicies from observed traffic: given the
// cluster's objects and the flow records of its allowed connections, it writes one policy per
// workload that talked (selected by the workload's stable labels, never pod names or
// addresses), allowing exactly the observed peers and ports, and a default deny per namespace
// it covers. It checks its own output with the reference evaluator: every observed flow must
// stay allowed.
package recommend

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
)

// Options shape a recommendation.
type Options struct {
	// Namespaces limits the namespaces covered (a default deny and the policies of their
	// workloads); empty: every namespace with pods.
	Namespaces []string
	// Since drops records last seen before it (zero: keep all).
	Since time.Time
	// PrefixV4 and PrefixV6 aggregate addresses outside the cluster's pods into ipBlocks of
	// these lengths (defaults 24 and 64), narrowed where a block would hold a pod's address.
	PrefixV4, PrefixV6 int
	// Enforce leaves out the rampart.io/staged annotation (staged by default).
	Enforce bool
}

// Result is a recommendation.
type Result struct {
	Policies []*networkingv1.NetworkPolicy
	// Flows counts the distinct allowed flows (by addresses, port and protocol) the policies
	// were built from; Ignored the
	// records left out (denied, older than Since, or unresolvable), by reason.
	Flows   int
	Ignored map[string]int
	// Warnings say where the policies are wider than the observations (shared labels,
	// aggregated addresses) or where an observed flow would not stay allowed.
	Warnings []string
}

// Names of the policies every covered namespace gets.
const (
	DefaultDenyName = "rampart-default-deny"
	AllowDNSName    = "rampart-allow-dns"
	DNSIngressName  = "rampart-dns-ingress"
	ManagedByLabel  = "app.kubernetes.io/managed-by"
)

// The label CoreDNS and kube-dns deployments put on the cluster DNS pods.
const dnsLabelKey, dnsLabelValue = "k8s-app", "kube-dns"

// systemNamespaces are covered only when named (--namespace): the control plane's add-ons
// talk along paths a short observation misses, and a default deny there breaks the cluster.
var systemNamespaces = map[string]bool{"kube-system": true, "kube-public": true, "kube-node-lease": true}

// conn is one observed allowed flow, resolved against the cluster.
type conn struct {
	src, dst peer
	port     uint16
	proto    corev1.Protocol
}

// peer is one end of a flow: a workload's pod, or an address outside the cluster's pods.
type peer struct {
	w    *workload  // nil: an address
	pod  *model.Pod // the pod, when w is set
	addr netip.Addr
	node bool // the address is a node's (or a host-network pod's)
}

// recommender holds the cluster's workloads and addresses while building.
type recommender struct {
	c        *model.Cluster
	opts     Options
	covered  map[string]bool
	byPod    map[*model.Pod]*workload
	byNS     map[string][]*workload
	podIP    map[netip.Addr]*model.Pod // pod networking pods
	nodeIP   map[netip.Addr]bool
	podCIDRs []netip.Prefix
	dnsNS    map[string]bool // namespaces running cluster DNS pods
	warnings []string
}

// Recommend builds least-privilege policies for c from the records of its traffic.
func Recommend(c *model.Cluster, records []flow.Record, opts Options) (Result, error) {
	if opts.PrefixV4 == 0 {
		opts.PrefixV4 = 24
	}
	if opts.PrefixV6 == 0 {
		opts.PrefixV6 = 64
	}
	if opts.PrefixV4 < 8 || opts.PrefixV4 > 32 {
		return Result{}, fmt.Errorf("IPv4 prefix length %d: want 8 to 32", opts.PrefixV4)
	}
	if opts.PrefixV6 < 16 || opts.PrefixV6 > 128 {
		return Result{}, fmt.Errorf("IPv6 prefix length %d: want 16 to 128", opts.PrefixV6)
	}
	r := &recommender{c: c, opts: opts, covered: map[string]bool{}, byPod: map[*model.Pod]*workload{},
		byNS: map[string][]*workload{}, podIP: map[netip.Addr]*model.Pod{}, nodeIP: map[netip.Addr]bool{}, dnsNS: map[string]bool{}}
	for _, ns := range opts.Namespaces {
		if _, ok := c.Namespaces[ns]; !ok {
			return Result{}, fmt.Errorf("namespace %q: not in the cluster", ns)
		}
		r.covered[ns] = true
	}
	r.index()
	res := Result{Ignored: map[string]int{}}
	conns := r.resolve(records, res.Ignored)
	res.Flows = len(conns)
	res.Policies = r.build(conns)
	if err := r.verify(conns, res.Policies); err != nil {
		return Result{}, err
	}
	res.Warnings = r.warnings
	return res, nil
}

// warn records a warning once.
func (r *recommender) warn(s string) {
	if !slices.Contains(r.warnings, s) {
		r.warnings = append(r.warnings, s)
	}
}

// index groups every namespace's pods into workloads and collects the cluster's addresses.
func (r *recommender) index() {
	nsPods := map[string][]*model.Pod{}
	for _, k := range model.SortedKeys(r.c.Pods) {
		p := r.c.Pods[k]
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, a := range podAddrs(p) {
			if p.Spec.HostNetwork {
				r.nodeIP[a] = true
			} else {
				r.podIP[a] = p
			}
		}
		if !p.Spec.HostNetwork {
			nsPods[p.Namespace] = append(nsPods[p.Namespace], p)
			if p.Labels[dnsLabelKey] == dnsLabelValue {
				r.dnsNS[p.Namespace] = true
			}
		}
	}
	for _, n := range r.c.Nodes {
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				r.nodeIP[ip.Unmap()] = true
			}
		}
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, s := range cidrs {
			if p, err := netip.ParsePrefix(s); err == nil {
				r.podCIDRs = append(r.podCIDRs, p.Masked())
			}
		}
	}
	for _, ns := range model.SortedKeys(nsPods) {
		if len(r.opts.Namespaces) == 0 && !systemNamespaces[ns] {
			r.covered[ns] = true
		}
		ws := workloads(ns, nsPods[ns], r.warn)
		r.byNS[ns] = ws
		for _, w := range ws {
			for _, p := range w.pods {
				r.byPod[p] = w
			}
		}
	}
}

func podAddrs(p *model.Pod) []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	add := func(s string) {
		if ip, err := netip.ParseAddr(s); err == nil && !seen[ip.Unmap()] {
			seen[ip.Unmap()] = true
			out = append(out, ip.Unmap())
		}
	}
	add(p.Status.PodIP)
	for _, a := range p.Status.PodIPs {
		add(a.IP)
	}
	return out
}

// resolve turns the allowed records into distinct flows between workloads and addresses.
func (r *recommender) resolve(records []flow.Record, ignored map[string]int) []conn {
	seen := map[string]bool{}
	var out []conn
	for _, rec := range records {
		if rec.Verdict != flow.Allowed {
			ignored["denied"]++
			continue
		}
		if !r.opts.Since.IsZero() && recordTime(rec).Before(r.opts.Since) {
			ignored["before --since"]++
			continue
		}
		proto, ok := protocol(rec.Protocol)
		if !ok || rec.Destination.Port == 0 {
			ignored["no protocol or port"]++
			continue
		}
		src, okS := r.peerOf(rec.Source)
		dst, okD := r.peerOf(rec.Destination)
		if !okS || !okD {
			ignored["unresolvable address"]++
			continue
		}
		if src.w == nil && dst.w == nil {
			ignored["no pod at either end"]++
			continue
		}
		// Distinct by addresses: the policies are built per workload, and checked per flow.
		k := fmt.Sprintf("%s|%s|%d|%s", src.addr, dst.addr, rec.Destination.Port, proto)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, conn{src: src, dst: dst, port: rec.Destination.Port, proto: proto})
	}
	return out
}

func recordTime(rec flow.Record) time.Time {
	if !rec.LastSeen.IsZero() {
		return rec.LastSeen
	}
	return rec.Time
}

func protocol(s string) (corev1.Protocol, bool) {
	switch strings.ToUpper(s) {
	case "TCP":
		return corev1.ProtocolTCP, true
	case "UDP":
		return corev1.ProtocolUDP, true
	case "SCTP":
		return corev1.ProtocolSCTP, true
	}
	return "", false
}

// peerOf resolves a record's endpoint: its pod by name where the cluster still has it at that
// address, else by address.
func (r *recommender) peerOf(e flow.Endpoint) (peer, bool) {
	ip, err := netip.ParseAddr(e.IP)
	if err != nil {
		return peer{}, false
	}
	ip = ip.Unmap()
	if e.Pod != "" {
		if p := r.c.Pods[e.Namespace+"/"+e.Pod]; p != nil && r.podIP[ip] == p {
			return peer{w: r.byPod[p], pod: p, addr: ip}, true
		}
	}
	if p := r.podIP[ip]; p != nil && r.byPod[p] != nil {
		return peer{w: r.byPod[p], pod: p, addr: ip}, true
	}
	return peer{addr: ip, node: r.nodeIP[ip]}, true
}

// ruleKey is one peer of one rule, before rules are merged by their port sets.
type rulePeer struct {
	key  string
	peer networkingv1.NetworkPolicyPeer
}

// build writes the policies: per covered namespace a default deny (and DNS where the cluster
// runs it), per workload that talked one policy with its observed ingress and egress.
func (r *recommender) build(conns []conn) []*networkingv1.NetworkPolicy {
	type sides struct {
		in, out map[string]*portSet // by peer key
		peers   map[string]networkingv1.NetworkPolicyPeer
	}
	by := map[*workload]*sides{}
	get := func(w *workload) *sides {
		s := by[w]
		if s == nil {
			s = &sides{in: map[string]*portSet{}, out: map[string]*portSet{}, peers: map[string]networkingv1.NetworkPolicyPeer{}}
			by[w] = s
		}
		return s
	}
	for _, c := range conns {
		if c.dst.w != nil && r.covered[c.dst.w.ns] {
			rp := r.peerFor(c.src, c.dst.w.ns)
			s := get(c.dst.w)
			s.peers[rp.key] = rp.peer
			addPort(s.in, rp.key, r.portFor(c.dst, c.port, c.proto))
		}
		if c.src.w != nil && r.covered[c.src.w.ns] {
			rp := r.peerFor(c.dst, c.src.w.ns)
			s := get(c.src.w)
			s.peers[rp.key] = rp.peer
			addPort(s.out, rp.key, r.portFor(c.dst, c.port, c.proto))
		}
	}
	var out []*networkingv1.NetworkPolicy
	dns := r.dnsPeers()
	for _, ns := range model.SortedKeys(r.byNS) {
		if !r.covered[ns] {
			continue
		}
		out = append(out, r.policy(ns, DefaultDenyName, metav1.LabelSelector{}, nil, nil))
		if len(dns) > 0 {
			p := r.policy(ns, AllowDNSName, metav1.LabelSelector{}, nil, []networkingv1.NetworkPolicyEgressRule{{To: dns, Ports: dnsPorts()}})
			p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			out = append(out, p)
		}
		if r.dnsNS[ns] {
			// The namespace serving DNS keeps answering every pod, as its clients keep asking.
			p := r.policy(ns, DNSIngressName, dnsSelector(), []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}, Ports: dnsPorts()}}, nil)
			p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
			out = append(out, p)
		}
		used := map[string]bool{DefaultDenyName: true, AllowDNSName: true, DNSIngressName: true}
		for _, w := range r.byNS[ns] {
			s := by[w]
			if s == nil {
				continue
			}
			var ingress []networkingv1.NetworkPolicyIngressRule
			for _, g := range mergeRules(s.in, s.peers) {
				ingress = append(ingress, networkingv1.NetworkPolicyIngressRule{From: g.peers, Ports: g.ports})
			}
			var egress []networkingv1.NetworkPolicyEgressRule
			for _, g := range mergeRules(s.out, s.peers) {
				egress = append(egress, networkingv1.NetworkPolicyEgressRule{To: g.peers, Ports: g.ports})
			}
			name := "rampart-" + dnsLabel(w.name)
			for i := 2; used[name]; i++ {
				name = fmt.Sprintf("rampart-%s-%d", dnsLabel(w.name), i)
			}
			used[name] = true
			out = append(out, r.policy(ns, name, w.sel, ingress, egress))
		}
	}
	return out
}

func (r *recommender) policy(ns, name string, sel metav1.LabelSelector, in []networkingv1.NetworkPolicyIngressRule, out []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{ManagedByLabel: "rampart"}},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: sel,
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     in,
			Egress:      out,
		},
	}
	if !r.opts.Enforce {
		p.Annotations = map[string]string{model.StagedAnnotation: "true"}
	}
	return p
}

// peerFor is the NetworkPolicy peer standing for p in a policy of namespace ns.
func (r *recommender) peerFor(p peer, ns string) rulePeer {
	if p.w != nil {
		np := networkingv1.NetworkPolicyPeer{PodSelector: p.w.sel.DeepCopy()}
		if p.w.ns != ns {
			np.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: p.w.ns}}
		}
		return rulePeer{key: "w:" + p.w.key(), peer: np}
	}
	pfx := r.block(p)
	return rulePeer{key: "b:" + pfx.String(), peer: networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: pfx.String()}}}
}

// block is the ipBlock for an address outside the cluster's pods: a node's address exactly,
// another address aggregated to the configured prefix, narrowed until the block holds no pod
// address or pod CIDR (which would let pods in by address).
func (r *recommender) block(p peer) netip.Prefix {
	bits := r.opts.PrefixV4
	if p.addr.Is6() {
		bits = r.opts.PrefixV6
	}
	if p.node {
		bits = p.addr.BitLen()
	}
	for ; bits < p.addr.BitLen(); bits++ {
		pfx, _ := p.addr.Prefix(bits)
		if !r.holdsPods(pfx) {
			break
		}
	}
	pfx, _ := p.addr.Prefix(bits)
	if !p.node && bits > r.prefixFor(p.addr) {
		r.warn(fmt.Sprintf("address %s: aggregated to %s only, since a wider block would hold pod addresses", p.addr, pfx))
	}
	return pfx
}

func (r *recommender) prefixFor(a netip.Addr) int {
	if a.Is6() {
		return r.opts.PrefixV6
	}
	return r.opts.PrefixV4
}

func (r *recommender) holdsPods(pfx netip.Prefix) bool {
	for _, c := range r.podCIDRs {
		if c.Overlaps(pfx) {
			return true
		}
	}
	for a := range r.podIP {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// portFor is the rule port for a connection to dst's port: the name every pod of dst's
// workload declares for it, else the number.
func (r *recommender) portFor(dst peer, port uint16, proto corev1.Protocol) networkingv1.NetworkPolicyPort {
	pr := proto
	np := networkingv1.NetworkPolicyPort{Protocol: &pr, Port: ptr(intstr.FromInt32(int32(port)))}
	if dst.w == nil {
		return np
	}
	name := ""
	for i, p := range dst.w.pods {
		n := declaredName(p, port, proto)
		if n == "" || (i > 0 && n != name) {
			return np
		}
		name = n
	}
	np.Port = ptr(intstr.FromString(name))
	return np
}

func declaredName(p *model.Pod, port uint16, proto corev1.Protocol) string {
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			pr := cp.Protocol
			if pr == "" {
				pr = corev1.ProtocolTCP
			}
			if cp.ContainerPort == int32(port) && pr == proto {
				return cp.Name
			}
		}
	}
	return ""
}

func ptr[T any](v T) *T { return &v }

// portSet collects a peer's ports, deduplicated.
type portSet struct {
	keys  map[string]bool
	ports []networkingv1.NetworkPolicyPort
}

func addPort(m map[string]*portSet, peer string, p networkingv1.NetworkPolicyPort) {
	s := m[peer]
	if s == nil {
		s = &portSet{keys: map[string]bool{}}
		m[peer] = s
	}
	k := string(*p.Protocol) + "/" + p.Port.String()
	if !s.keys[k] {
		s.keys[k] = true
		s.ports = append(s.ports, p)
	}
}

func (s *portSet) key() string {
	keys := model.SortedKeys(s.keys)
	return strings.Join(keys, ",")
}

type ruleGroup struct {
	peers []networkingv1.NetworkPolicyPeer
	ports []networkingv1.NetworkPolicyPort
}

// mergeRules makes one rule per distinct port set, listing every peer observed on exactly
// those ports (a rule allows each of its peers on each of its ports, so only peers with equal
// port sets can share one without allowing more than was seen).
func mergeRules(bySet map[string]*portSet, peers map[string]networkingv1.NetworkPolicyPeer) []ruleGroup {
	idx := map[string]int{}
	var out []ruleGroup
	for _, pk := range model.SortedKeys(bySet) {
		s := bySet[pk]
		k := s.key()
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			ports := append([]networkingv1.NetworkPolicyPort(nil), s.ports...)
			sort.Slice(ports, func(a, b int) bool {
				return string(*ports[a].Protocol)+ports[a].Port.String() < string(*ports[b].Protocol)+ports[b].Port.String()
			})
			out = append(out, ruleGroup{ports: ports})
		}
		out[i].peers = append(out[i].peers, peers[pk])
	}
	return out
}

// dnsPeers are the cluster DNS pods (k8s-app: kube-dns, by the convention CoreDNS and
// kube-dns deployments share), as peers: every covered namespace keeps DNS even if no lookup
// was observed (resolvers cache, and records may miss a UDP exchange).
func (r *recommender) dnsPeers() []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for _, ns := range model.SortedKeys(r.dnsNS) {
		sel := dnsSelector()
		out = append(out, networkingv1.NetworkPolicyPeer{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}},
			PodSelector:       &sel,
		})
	}
	return out
}

func dnsSelector() metav1.LabelSelector {
	return metav1.LabelSelector{MatchLabels: map[string]string{dnsLabelKey: dnsLabelValue}}
}

func dnsPorts() []networkingv1.NetworkPolicyPort {
	return []networkingv1.NetworkPolicyPort{
		{Protocol: ptr(corev1.ProtocolUDP), Port: ptr(intstr.FromInt32(53))},
		{Protocol: ptr(corev1.ProtocolTCP), Port: ptr(intstr.FromInt32(53))},
	}
}

// verify evaluates every observed flow with the policies enforced beside the cluster's own. A
// flow they would deny (an admin policy added since it was observed, say) is a warning: the
// other policies decide it, and enforcing the recommendation would not change that.
func (r *recommender) verify(conns []conn, pols []*networkingv1.NetworkPolicy) error {
	after := r.c.Clone()
	for _, p := range pols {
		q := p.DeepCopy()
		delete(q.Annotations, model.StagedAnnotation)
		after.NetworkPolicies[q.Namespace+"/"+q.Name] = q
	}
	rs, err := compile.Compile(after)
	if err != nil {
		return fmt.Errorf("the recommended policies do not compile: %w", err)
	}
	ev := policy.New(rs)
	var broken []string
	for _, c := range conns {
		proto, _ := ir.ParseProtocol(string(c.proto))
		d := ev.Verdict(policy.Flow{Src: c.src.addr, Dst: c.dst.addr, Protocol: proto, Port: c.port})
		if !d.Allowed {
			broken = append(broken, fmt.Sprintf("%s -> %s %d/%s", d.Src.Describe(), d.Dst.Describe(), c.port, c.proto))
		}
	}
	for _, b := range broken {
		r.warn("observed flow denied with the recommendation enforced, by the cluster's other policies: " + b)
	}
	return nil
}
