package policy

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/rampart-sec/rampart/internal/ir"
)

// Flow is one connection attempt, after Service DNAT: addresses are pod (or external) IPs.
type Flow struct {
	Src      netip.Addr
	Dst      netip.Addr
	Protocol ir.Protocol
	Port     uint16 // destination port
}

func (f Flow) String() string {
	return fmt.Sprintf("%s -> %s %d/%s", f.Src, f.Dst, f.Port, f.Protocol)
}

// Endpoint is what an address in a flow is.
type Endpoint struct {
	IP   netip.Addr
	Pod  *ir.Pod  // the pod with this IP (host-network pods included), if any
	Node *ir.Node // the node with this IP, if any
}

// Describe names the endpoint for humans.
func (e Endpoint) Describe() string {
	switch {
	case e.Pod != nil && e.Pod.HostNetwork:
		return fmt.Sprintf("host-network pod %s (%s)", e.Pod.Key(), e.IP)
	case e.Pod != nil:
		return fmt.Sprintf("pod %s (%s)", e.Pod.Key(), e.IP)
	case e.Node != nil:
		return fmt.Sprintf("node %s (%s)", e.Node.Name, e.IP)
	}
	return e.IP.String() + " (outside the cluster's pods)"
}

// subject returns the pod that policy applies to at this endpoint, or nil: host-network pods,
// nodes and external addresses are not subject to pod policy.
func (e Endpoint) subject() *ir.Pod {
	if e.Pod == nil || e.Pod.HostNetwork {
		return nil
	}
	return e.Pod
}

// Decider says what decided one side of a flow.
type Decider string

const (
	DecidedByRule      Decider = "rule"          // a rule matched (Tier/Policy/Rule say which)
	DecidedIsolated    Decider = "isolated"      // selected by NetworkPolicies, none allowed it
	DecidedDefault     Decider = "default-allow" // no policy decided
	DecidedNotSubject  Decider = "not-a-pod"     // the endpoint is not a pod under policy
	DecidedSelfTraffic Decider = "own-address"   // a pod talking to its own IP
)

// Side is the verdict of one direction.
type Side struct {
	Direction ir.Direction `json:"direction"`
	Subject   string       `json:"subject,omitempty"` // ns/pod the policies select, if any
	Allowed   bool         `json:"allowed"`
	DecidedBy Decider      `json:"decidedBy"`
	Tier      string       `json:"tier,omitempty"`
	Policy    string       `json:"policy,omitempty"` // policy reference, e.g. "NetworkPolicy x/allow-a"
	Rule      int          `json:"rule"`             // rule index in the policy's list; -1 when none
	RuleName  string       `json:"ruleName,omitempty"`
	Action    string       `json:"action,omitempty"`
	Reason    string       `json:"reason"`
	Trace     []Step       `json:"trace"`
	// Decider is the policy whose rule decided (DecidedByRule); Isolating the NetworkPolicies
	// isolating the subject (DecidedIsolated). For callers that need the policies themselves.
	Decider   *ir.Policy   `json:"-"`
	Isolating []*ir.Policy `json:"-"`
}

// Step is one rule (or policy) the evaluator considered.
type Step struct {
	Tier     string `json:"tier"`
	Policy   string `json:"policy"`
	Rule     int    `json:"rule"` // -1: the step is about the policy as a whole
	RuleName string `json:"ruleName,omitempty"`
	Action   string `json:"action,omitempty"`
	Matched  bool   `json:"matched"`
	Detail   string `json:"detail"`
}

// Decision is the verdict for a flow.
type Decision struct {
	Flow    Flow     `json:"-"`
	Src     Endpoint `json:"-"`
	Dst     Endpoint `json:"-"`
	Allowed bool     `json:"allowed"`
	Egress  Side     `json:"egress"`
	Ingress Side     `json:"ingress"`
}

// Evaluator answers flows against one Ruleset. It is safe for concurrent use.
type Evaluator struct {
	rs      *ir.Ruleset
	pods    map[netip.Addr]*ir.Pod
	nodes   map[netip.Addr]*ir.Node
	threats *Threats // decide before policy (WithThreats); nil: none
}

// New indexes rs for evaluation. rs must not change afterwards.
func New(rs *ir.Ruleset) *Evaluator {
	e := &Evaluator{rs: rs, pods: map[netip.Addr]*ir.Pod{}, nodes: map[netip.Addr]*ir.Node{}}
	for i := range rs.Nodes {
		for _, ip := range rs.Nodes[i].IPs {
			e.nodes[ip] = &rs.Nodes[i]
		}
	}
	// Pod networking pods win an address over host-network pods sharing their node's IP.
	for pass := 0; pass < 2; pass++ {
		for i := range rs.Pods {
			p := &rs.Pods[i]
			if p.HostNetwork != (pass == 0) {
				continue
			}
			for _, ip := range p.IPs {
				e.pods[ip] = p
			}
		}
	}
	return e
}

// NewFrom is New sharing prev's address index when rs holds the same pods and nodes as prev's
// Ruleset: the incremental compiler hands unchanged ones over as the same slices, so an agent
// answering each policy change does not index every pod of the cluster again.
func NewFrom(prev *Evaluator, rs *ir.Ruleset) *Evaluator {
	if prev != nil && sameSlice(prev.rs.Pods, rs.Pods) && sameSlice(prev.rs.Nodes, rs.Nodes) {
		return &Evaluator{rs: rs, pods: prev.pods, nodes: prev.nodes}
	}
	return New(rs)
}

func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// Ruleset returns the rules the evaluator answers from.
func (e *Evaluator) Ruleset() *ir.Ruleset { return e.rs }

// Endpoint resolves an address to what it is in the cluster.
func (e *Evaluator) Endpoint(ip netip.Addr) Endpoint {
	ep := Endpoint{IP: ip, Pod: e.pods[ip], Node: e.nodes[ip]}
	if ep.Pod != nil && ep.Pod.HostNetwork && ep.Node == nil {
		ep.Node = e.nodeNamed(ep.Pod.Node)
	}
	return ep
}

// ParseEndpoint turns "namespace/pod" or an IP address into the address policy sees.
func (e *Evaluator) ParseEndpoint(s string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(s); err == nil && ip.Zone() == "" {
		return ip.Unmap(), nil
	}
	p := e.rs.PodByKey(s)
	if p == nil {
		return netip.Addr{}, fmt.Errorf("%q: not an IP address and no pod namespace/name with that name", s)
	}
	if len(p.IPs) == 0 {
		return netip.Addr{}, fmt.Errorf("%q: the pod has no IP (set status.podIP)", s)
	}
	return p.IP(), nil
}

func (e *Evaluator) nodeNamed(name string) *ir.Node {
	for i := range e.rs.Nodes {
		if e.rs.Nodes[i].Name == name {
			return &e.rs.Nodes[i]
		}
	}
	return nil
}

// Verdict decides a flow.
func (e *Evaluator) Verdict(f Flow) Decision {
	d := Decision{Flow: f, Src: e.Endpoint(f.Src), Dst: e.Endpoint(f.Dst)}
	if f.Src == f.Dst {
		self := Side{Allowed: true, DecidedBy: DecidedSelfTraffic, Rule: -1, Reason: "traffic from an address to itself is always allowed"}
		d.Egress, d.Ingress = self, self
		d.Egress.Direction, d.Ingress.Direction = ir.Egress, ir.Ingress
		d.Allowed = true
		return d
	}
	d.Egress = e.side(ir.Egress, d.Src.subject(), d.Src, d.Dst, f)
	d.Ingress = e.side(ir.Ingress, d.Dst.subject(), d.Dst, d.Src, f)
	d.Allowed = d.Egress.Allowed && d.Ingress.Allowed
	e.applyThreats(&d)
	return d
}

// side decides one direction for subject (the pod the policies select, nil if none); peer is
// the other end of the flow.
func (e *Evaluator) side(dir ir.Direction, subject *ir.Pod, self, peer Endpoint, f Flow) Side {
	s := Side{Direction: dir, Rule: -1}
	if subject == nil {
		s.Allowed, s.DecidedBy = true, DecidedNotSubject
		s.Reason = fmt.Sprintf("%s is not a pod under policy, so nothing restricts its %s", self.Describe(), dir)
		return s
	}
	s.Subject = subject.Key()
	refs := e.rs.PoliciesFor(subject.ID, dir)
	tierOf := func(i int) ir.TierKind { return e.rs.Tiers[dir][i].Kind }

	// Admin tier: priority order, first matching rule decides; Pass leaves the tier.
	passed := false
	for _, ref := range refs {
		if tierOf(ref.Tier) != ir.TierAdmin || passed {
			continue
		}
		pol := e.rs.Policy(dir, ref)
		for _, r := range pol.Rules {
			ok, detail := e.ruleMatches(&r, peer.IP, f)
			s.Trace = append(s.Trace, step(pol, &r, ok, detail))
			if !ok {
				continue
			}
			if r.Action == ir.Pass {
				passed = true
				break
			}
			return decided(s, pol, &r, r.Action == ir.Allow, e.because(pol, &r, peer, f))
		}
	}

	// NetworkPolicy tier: selected means isolated; any matching rule of any policy allows.
	var isolating []string
	for _, ref := range refs {
		if tierOf(ref.Tier) != ir.TierNetworkPolicy {
			continue
		}
		pol := e.rs.Policy(dir, ref)
		isolating = append(isolating, pol.Ref())
		s.Isolating = append(s.Isolating, pol)
		if len(pol.Rules) == 0 {
			s.Trace = append(s.Trace, Step{Tier: pol.Tier.String(), Policy: pol.Ref(), Rule: -1,
				Detail: fmt.Sprintf("selects %s and has no %s rules: isolates it, allows nothing", subject.Key(), dir)})
		}
		for _, r := range pol.Rules {
			ok, detail := e.ruleMatches(&r, peer.IP, f)
			s.Trace = append(s.Trace, step(pol, &r, ok, detail))
			if ok {
				return decided(s, pol, &r, true, e.because(pol, &r, peer, f))
			}
		}
	}
	if len(isolating) > 0 {
		s.DecidedBy, s.Tier = DecidedIsolated, ir.TierNetworkPolicy.String()
		s.Reason = fmt.Sprintf("%s is isolated for %s by %s, and no rule allows %s on %d/%s",
			subject.Key(), dir, strings.Join(isolating, ", "), peer.Describe(), f.Port, f.Protocol)
		return s
	}

	// Baseline tier: priority order, first matching rule decides; Pass leaves the tier (for
	// the default).
	var baselinePass *ir.Policy
baseline:
	for _, ref := range refs {
		if tierOf(ref.Tier) != ir.TierBaseline {
			continue
		}
		pol := e.rs.Policy(dir, ref)
		for _, r := range pol.Rules {
			ok, detail := e.ruleMatches(&r, peer.IP, f)
			s.Trace = append(s.Trace, step(pol, &r, ok, detail))
			if !ok {
				continue
			}
			if r.Action == ir.Pass {
				baselinePass = pol
				break baseline
			}
			return decided(s, pol, &r, r.Action == ir.Allow, e.because(pol, &r, peer, f))
		}
	}
	s.Allowed, s.DecidedBy = true, DecidedDefault
	s.Reason = fmt.Sprintf("no policy decides %s of %s for this traffic, so it is allowed by default", dir, subject.Key())
	switch {
	case baselinePass != nil:
		s.Reason = fmt.Sprintf("%s passed this traffic on past the baseline tier, so it is allowed by default", baselinePass.Ref())
	case passed:
		s.Reason = "an admin-tier policy passed this traffic on, and no NetworkPolicy or baseline policy decides it, so it is allowed by default"
	}
	return s
}

func decided(s Side, pol *ir.Policy, r *ir.Rule, allowed bool, reason string) Side {
	s.Allowed, s.DecidedBy, s.Decider, s.Isolating = allowed, DecidedByRule, pol, nil
	s.Tier, s.Policy, s.Rule, s.RuleName, s.Action = pol.Tier.String(), pol.Ref(), r.Index, r.Name, pol.ActionName(r.Action)
	s.Reason = reason
	return s
}

func step(pol *ir.Policy, r *ir.Rule, matched bool, detail string) Step {
	return Step{Tier: pol.Tier.String(), Policy: pol.Ref(), Rule: r.Index, RuleName: r.Name, Action: pol.ActionName(r.Action), Matched: matched, Detail: detail}
}

func (e *Evaluator) because(pol *ir.Policy, r *ir.Rule, peer Endpoint, f Flow) string {
	rule := fmt.Sprintf("%s rule %d", pol.Ref(), r.Index)
	if r.Name != "" {
		rule += fmt.Sprintf(" (%q)", r.Name)
	}
	verb := map[ir.Action]string{ir.Allow: "allows", ir.Deny: "denies", ir.Pass: "passes"}[r.Action]
	dirWord := "from"
	if pol.Direction == ir.Egress {
		dirWord = "to"
	}
	return fmt.Sprintf("%s %s %s %s on %d/%s", rule, verb, pol.Direction, dirWord+" "+peer.Describe(), f.Port, f.Protocol)
}

// ruleMatches reports whether the rule's peers hold peerIP and its ports hold the flow's
// destination, with a sentence saying why or why not.
func (e *Evaluator) ruleMatches(r *ir.Rule, peerIP netip.Addr, f Flow) (bool, string) {
	peerOK, peerWhy := e.peerMatches(r, peerIP)
	if !peerOK {
		return false, peerWhy
	}
	portOK, portWhy := e.portMatches(r.Ports, f)
	if !portOK {
		return false, peerWhy + ", but " + portWhy
	}
	return true, peerWhy + " and " + portWhy
}

func (e *Evaluator) peerMatches(r *ir.Rule, ip netip.Addr) (bool, string) {
	if r.AnyPeer {
		return true, "the rule applies to every peer"
	}
	var descs []string
	for _, p := range r.Peers {
		if e.rs.Sets[p.Set].Contains(ip) {
			return true, fmt.Sprintf("peer %s is in %s", ip, p.Desc)
		}
		descs = append(descs, p.Desc)
	}
	return false, fmt.Sprintf("peer %s is not in %s", ip, strings.Join(descs, "; nor in "))
}

func (e *Evaluator) portMatches(p ir.Ports, f Flow) (bool, string) {
	if p.All {
		return true, "the rule applies to every port"
	}
	var descs []string
	for _, r := range p.Ranges {
		if r.Contains(f.Protocol, f.Port) {
			return true, fmt.Sprintf("%d/%s is in %s", f.Port, f.Protocol, r)
		}
		descs = append(descs, r.String())
	}
	for _, n := range p.Named {
		if e.rs.PortSets[n.Set].Contains(f.Dst, f.Protocol, f.Port) {
			return true, fmt.Sprintf("%d/%s is the destination's port named %q", f.Port, f.Protocol, n.Name)
		}
		d := fmt.Sprintf("port named %q", n.Name)
		if n.Protocol != 0 {
			d += "/" + n.Protocol.String()
		}
		descs = append(descs, d)
	}
	return false, fmt.Sprintf("%d/%s is not among its ports (%s)", f.Port, f.Protocol, strings.Join(descs, ", "))
}

// Allowed memoizes Verdict(f).Allowed over one pass through many connections (a conntrack
// sweep): connections differ in their source ports, which policy does not read, so most
// entries of a busy node share a flow, and a verdict with its explanation costs far more than
// a map lookup. Not safe for concurrent use.
type Allowed struct {
	ev   *Evaluator
	seen map[Flow]bool
}

// NewAllowed returns an empty memo over e.
func (e *Evaluator) NewAllowed() *Allowed { return &Allowed{ev: e, seen: map[Flow]bool{}} }

// Allowed reports whether f is allowed.
func (a *Allowed) Allowed(f Flow) bool {
	ok, seen := a.seen[f]
	if !seen {
		ok = a.ev.Verdict(f).Allowed
		a.seen[f] = ok
	}
	return ok
}
